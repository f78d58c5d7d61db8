//! Mount conventions: regfs mounted by the real `mount` command (util-linux), through
//! Debian's `mount.fuse3` (package fuse3), as `/etc/fstab` and systemd mount it.
//!
//! What the ground says (util-linux 2.38, fuse3 3.14): `mount` runs `/sbin/mount.fuse` with
//! `PATH` and `HOME` removed from the environment; mount.fuse3 sets `HOME=/root` and runs
//! `/bin/sh -c "'regfs' 'SOURCE' 'MOUNTPOINT' '-o' 'OPTIONS,dev,suid'"`, so `regfs` is found on
//! the shell's default PATH only, whatever PATH the caller had. Each test therefore runs in a
//! mount namespace of its own (`unshare --mount --propagation private`) where `/usr/local/bin`,
//! the documented install location, is a directory holding `regfs` (a link to the binary under
//! test): the host's `/usr/local/bin` is left alone, and the mounts made there are seen only
//! inside, so each check runs in the namespace's script, which prints `label key value` lines
//! for the test to judge.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::s;
use crate::common::{images, shared};

/// The shell functions every script gets: `$T` is the test's tempdir, `/usr/local/bin` holds the
/// regfs under test, `run_mount` runs `mount` with an environment as bare as a boot's, and
/// `check LABEL MOUNTPOINT` prints what the mount serves (read as `$reader`, if set) and
/// whether `umount` (or `$unmount`) ends regfs.
const PRELUDE: &str = r#"
set -u
say() { printf '%s\n' "$*"; }
mounts=""
# A failing check leaves no mount (and so no regfs) behind in the namespace.
trap 'for m in $mounts; do mountpoint -q "$m" && umount -l "$m"; done' EXIT
trap 'exit 124' TERM INT
run_mount() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$T" mount "$@"; }
check() {
    label=$1 mnt=$2
    mounts="$mounts $mnt"
    say "$label mounted $(${reader:-} mountpoint -q "$mnt" && echo yes || echo no)"
    say "$label digest sha256:$(${reader:-} cat "$mnt/$LAYER" | sha256sum | cut -d' ' -f1)"
    say "$label fstype $(awk -v m="$mnt" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' /proc/self/mountinfo)"
    pid=$(pgrep -f "regfs [^ ]+ $mnt( |\$)")
    say "$label pids $(echo $pid | wc -w)"
    ${unmount:-umount} "$mnt"
    say "$label umount $?"
    for _ in $(seq 500); do
        { [ -d "/proc/$pid" ] && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null; } || break
        sleep 0.02
    done
    say "$label exited $({ [ -d "/proc/$pid" ] && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null; } && echo no || echo yes)"
    say "$label mounted-after $(${reader:-} mountpoint -q "$mnt" && echo yes || echo no)"
}
mount --bind "$T/bin" /usr/local/bin || exit 97
"#;

struct Run {
    lines: HashMap<String, String>,
    out: Output,
    tmp: tempfile::TempDir,
}

impl Run {
    /// The value printed for `label key`, with the whole output and regfs's logs on a miss.
    fn get(&self, label: &str, key: &str) -> &str {
        self.lines
            .get(&format!("{label} {key}"))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {label} {key}\n{self}"))
    }

    /// Each check of `label` passed: mounted, the layer's bytes hash to its digest, the kernel
    /// shows a `fuse.regfs` mount, one regfs serves it and `umount` ends that process.
    fn assert_served_and_unmounted(&self, label: &str, digest: &str) {
        assert_eq!(self.get(label, "mounted"), "yes", "{self}");
        assert_eq!(self.get(label, "digest"), digest, "{self}");
        assert_eq!(self.get(label, "fstype"), "fuse.regfs", "{self}");
        assert_eq!(self.get(label, "pids"), "1", "{self}");
        assert_eq!(self.get(label, "umount"), "0", "{self}");
        assert_eq!(self.get(label, "exited"), "yes", "{self}");
        assert_eq!(self.get(label, "mounted-after"), "no", "{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "status {:?}", self.out.status)?;
        writeln!(f, "stdout:\n{}", String::from_utf8_lossy(&self.out.stdout))?;
        writeln!(f, "stderr:\n{}", String::from_utf8_lossy(&self.out.stderr))?;
        for entry in std::fs::read_dir(self.tmp.path()).into_iter().flatten().flatten() {
            let log = entry.path().join("regfs.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                writeln!(f, "{}:\n{text}", log.display())?;
            }
        }
        Ok(())
    }
}

/// Run `script` (after [`PRELUDE`]) in a mount namespace of its own where `/usr/local/bin/regfs`
/// is the binary under test. `$T` is a fresh tempdir holding empty directories `m1`..`m4`
/// (mountpoints) and `c0`..`c4` (caches); `$REG` is the registry as `host:port`, `$LAYER` a
/// layer's path under the mount.
fn in_namespace(script: &str, layer: &str) -> Run {
    let sh = shared();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("bin")).expect("bin/");
    std::os::unix::fs::symlink(crate::common::regfs_bin(), tmp.path().join("bin/regfs")).expect("bin/regfs");
    for d in ["m1", "m2", "m3", "m4", "c0", "c1", "c2", "c3", "c4"] {
        std::fs::create_dir(tmp.path().join(d)).expect("a directory in the tempdir");
    }
    let registry = sh.registry.url.trim_start_matches("http://");
    let mut cmd = Command::new("timeout");
    cmd.args(["180", "unshare", "--mount", "--propagation", "private", "bash", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .env("T", tmp.path())
        .env("REG", registry)
        .env("LAYER", layer)
        .stdin(Stdio::null());
    crate::common::die_with_parent(&mut cmd);
    let out = cmd.output().expect("timeout unshare bash");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (label, key) = (parts.next()?, parts.next()?);
            Some((format!("{label} {key}"), parts.next().unwrap_or("").to_string()))
        })
        .collect();
    let run = Run { lines, out, tmp };
    assert_ne!(run.out.status.code(), Some(97), "bind-mounting over /usr/local/bin in a new namespace failed\n{run}");
    run
}

/// A layer of the fixtures (path under the mount, digest).
fn a_layer() -> (String, String) {
    let img = images(&shared().fixtures, "docker-schema2")[0];
    (format!("{}/tags/{}/layers/0.tar.gz", s(&img["repo"]), s(&img["tag"])), s(&img["layers"][0]["digest"]).into())
}

/// `mount -t fuse.regfs`, an `/etc/fstab` line and `mount -t fuse regfs#REG` each run regfs
/// through mount.fuse3 with `-o` options; regfs returns once the mount is live (mount waits
/// for its helper), serves verified bytes, and `umount` ends it. The binary is found in
/// `/usr/local/bin` though the caller's PATH does not name it: mount runs helpers with a
/// default PATH, which holds `/usr/local/bin`.
#[test]
fn mount_with_fstab_syntax_runs_regfs_through_mount_fuse3() {
    let default_path = Command::new("env").args(["-i", "/bin/sh", "-c", "echo $PATH"]).output().expect("env -i sh");
    let default_path = String::from_utf8_lossy(&default_path.stdout).trim().to_string();
    assert!(default_path.split(':').any(|d| d == "/usr/local/bin"), "{default_path}");
    let (layer, digest) = a_layer();
    let run = in_namespace(
        r#"
run_mount -t fuse.regfs "$REG" "$T/m1" -o "ro,cache_dir=$T/c1,tag_ttl=5,allow_other"
say "type rc $?"
check type "$T/m1"

printf '%s %s fuse.regfs ro,cache_dir=%s,nofail,_netdev 0 0\n' "$REG" "$T/m2" "$T/c2" > "$T/fstab"
run_mount -T "$T/fstab" "$T/m2"
say "fstab rc $?"
# `mount -a` again finds it mounted (the source and type it shows are the line's) and leaves it.
out=$(run_mount -T "$T/fstab" -a 2>&1)
say "fstab again-rc $?"
say "fstab again-says $out"
check fstab "$T/m2"

run_mount -t fuse "regfs#$REG" "$T/m3" -o "cache_dir=$T/c3,x-systemd.automount"
say "source rc $?"
check source "$T/m3"

# regfs on the caller's PATH only is not found: mount does not pass PATH on.
mount --bind "$T/c0" /usr/local/bin
if env -i /bin/sh -c 'command -v regfs' >/dev/null; then
    say "notfound elsewhere $(env -i /bin/sh -c 'command -v regfs')"
else
    out=$(env -i PATH="$T/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME="$T" mount -t fuse.regfs "$REG" "$T/m4" -o "cache_dir=$T/c4" 2>&1)
    say "notfound rc $?"
    say "notfound says $out"
    say "notfound mounted $(mountpoint -q "$T/m4" && echo yes || echo no)"
    mountpoint -q "$T/m4" && umount "$T/m4"
fi
"#,
        &layer,
    );
    for label in ["type", "fstab", "source"] {
        assert_eq!(run.get(label, "rc"), "0", "{label}: mount failed\n{run}");
        run.assert_served_and_unmounted(label, &digest);
    }
    assert_eq!(run.get("fstab", "again-rc"), "0", "mount -a mounted the fstab line again\n{run}");
    // The other way round: a regfs on PATH but not on the default PATH is not found (unless
    // one is installed on this machine in a directory of the default PATH, named here).
    if let Some(other) = run.lines.get("notfound elsewhere") {
        eprintln!("a regfs is installed at {other}: the not-found case is not checked");
    } else {
        assert_ne!(run.get("notfound", "rc"), "0", "{run}");
        assert!(run.get("notfound", "says").contains("regfs: not found"), "{run}");
        assert_eq!(run.get("notfound", "mounted"), "no", "{run}");
    }
}

/// A `-o` option regfs refuses fails the `mount` command with regfs's message, and mounts nothing.
#[test]
fn a_refused_mount_option_fails_mount_with_regfs_s_message() {
    let (layer, _) = a_layer();
    let run = in_namespace(
        r#"
out=$(run_mount -t fuse.regfs "$REG" "$T/m1" -o "ro,cache_dir=$T/c1,password=hunter2" 2>&1)
say "secret rc $?"
say "secret says $out"
say "secret mounted $(mountpoint -q "$T/m1" && echo yes || echo no)"
"#,
        &layer,
    );
    assert_ne!(run.get("secret", "rc"), "0", "{run}");
    let says = run.get("secret", "says");
    assert!(says.contains("-o password") && !says.contains("hunter2"), "{run}");
    assert_eq!(run.get("secret", "mounted"), "no", "{run}");
}

/// The fenced blocks of the README's "Mount at boot" section: the systemd unit (the one with
/// `[Mount]`) and the fstab line.
fn readme_mount_examples() -> (String, String) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let start = readme.find("\n## Mount at boot").expect("README has a \"## Mount at boot\" section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let blocks: Vec<&str> = section.split("```").skip(1).step_by(2).collect();
    let unit = blocks.iter().find(|b| b.contains("[Mount]")).expect("a systemd unit block with [Mount]");
    let fstab = blocks.iter().find(|b| b.contains("fuse.regfs") && !b.contains("[Mount]")).expect("an fstab block");
    (unit.to_string(), fstab.to_string())
}

/// `cache_dir=...` of a README option list pointed at the test's own cache (`$T/<cache>`).
fn with_test_cache(options: &str, cache: &str) -> String {
    assert!(
        options.split(',').any(|o| o.starts_with("cache_dir=")),
        "the README's options name a cache_dir: {options}"
    );
    let items: Vec<String> = options
        .split(',')
        .map(|o| if o.starts_with("cache_dir=") { format!("cache_dir=$T/{cache}") } else { o.to_string() })
        .collect();
    items.join(",")
}

/// The README's systemd unit and fstab line, run by the real `mount` as systemd and `mount -a`
/// would (their registry and paths replaced by the test's): each mounts, serves verified bytes,
/// and `umount` ends regfs. The unit's file name is the one systemd requires for its `Where=`,
/// and it waits for the network.
#[test]
fn the_systemd_unit_in_the_readme_mounts_with_the_real_mount_command() {
    let (unit, fstab) = readme_mount_examples();
    let keys: HashMap<&str, &str> = unit.lines().filter_map(|l| l.split_once('=')).collect();
    let key = |k: &str| *keys.get(k).unwrap_or_else(|| panic!("the unit has no {k}=:\n{unit}"));
    let (what, r#where, kind, options) = (key("What"), key("Where"), key("Type"), key("Options"));
    assert_eq!(kind, "fuse.regfs", "{unit}");
    assert!(!what.is_empty() && r#where.starts_with('/'), "{unit}");
    // systemd takes a mount unit only under the name of its escaped Where=.
    let name = format!("{}.mount", r#where.trim_matches('/').replace('/', "-"));
    assert!(unit.contains(&format!("/etc/systemd/system/{name}")), "the unit is not named {name}:\n{unit}");
    for k in ["After", "Wants"] {
        assert!(
            key(k).split_whitespace().any(|t| t == "network-online.target"),
            "{k}= without network-online:\n{unit}"
        );
    }
    let line = fstab.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).expect("an fstab line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[2], "fuse.regfs", "{line}");
    let (layer, digest) = a_layer();
    let script = format!(
        r#"
run_mount -t '{kind}' "$REG" "$T/m1" -o "{unit_options}"
say "unit rc $?"
check unit "$T/m1"

printf '%s %s %s %s %s %s\n' "$REG" "$T/m2" '{fstype}' "{fstab_options}" '{dump}' '{pass}' > "$T/fstab"
run_mount -T "$T/fstab" -a
say "fstab rc $?"
check fstab "$T/m2"
"#,
        unit_options = with_test_cache(options, "c1"),
        fstype = fields[2],
        fstab_options = with_test_cache(fields[3], "c2"),
        dump = fields[4],
        pass = fields[5],
    );
    let run = in_namespace(&script, &layer);
    for label in ["unit", "fstab"] {
        assert_eq!(run.get(label, "rc"), "0", "{label}: mount failed\n{run}");
        run.assert_served_and_unmounted(label, &digest);
    }
}

/// A user other than root mounts through fusermount3 (where `/dev/fuse` is open to all, as on a
/// standard Debian system: here a node of its own in the namespace) and unmounts with
/// `fusermount3 -u`; that mount too is of type `fuse.regfs`.
#[test]
fn a_user_other_than_root_mounts_through_fusermount3_and_the_mount_is_fuse_regfs() {
    let (layer, digest) = a_layer();
    let run = in_namespace(
        r#"
mknod "$T/fuse" c 10 229 && chmod 666 "$T/fuse" && mount --bind "$T/fuse" /dev/fuse || exit 96
# Podman run as root leaves /run/containers root's and 0700: the user's implied auth file,
# /run/containers/<uid>/auth.json, cannot even be looked at. That is no credential, not an error.
mkdir -p /run/containers && mkdir "$T/rc" && chmod 700 "$T/rc" && mount --bind "$T/rc" /run/containers || exit 95
# The user needs to reach the binary, the mountpoint and the cache.
mkdir "$T/user" && cp /usr/local/bin/regfs "$T/user/regfs" && chmod 755 "$T" "$T/user" "$T/user/regfs"
chown 65534:65534 "$T/m1" "$T/c1"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin HOME="$T/c1" "$@"; }
( cd / && as_nobody "$T/user/regfs" "$REG" "$T/m1" --cache-dir "$T/c1" )
say "user rc $?"
# Without allow_other only the user who mounted may look inside, root included.
reader=as_nobody unmount="as_nobody fusermount3 -u"
check user "$T/m1"
"#,
        &layer,
    );
    assert_ne!(run.out.status.code(), Some(96), "making a /dev/fuse open to all failed\n{run}");
    assert_ne!(run.out.status.code(), Some(95), "making /run/containers root's own failed\n{run}");
    assert_eq!(run.get("user", "rc"), "0", "{run}");
    run.assert_served_and_unmounted("user", &digest);
}
