//! Running an image from `rootfs/` (README "Run an image without pulling"): the README's
//! commands, run as written (`MOUNT` and `/tmp/ctr` replaced by the test's), on cold mounts of
//! `run/busybox:v1` (Debian's static busybox, `testkit::fixtures::busybox`), each executing the
//! image's own binaries through the mount: chroot (default mode and `--open`), `unshare --root`,
//! overlayfs with `rootfs/` as `lowerdir`, `podman run --rootfs DIR:O`, `systemd-nspawn
//! --read-only`; and a dynamically linked program of the image, whose libraries `ld.so` maps
//! from the mount. A runtime that is not installed fails its test: CI
//! installs them all (scripts/lib.sh REGFS_PACKAGES).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::common::s;
use crate::common::{Mount, Registry, start_forever, stdout};
use serde_json::Value;

struct Shared {
    registry: Registry,
    busybox: Value,
}

/// A registry holding `run/busybox:v1` only.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        start_forever(|| {
            let registry = Registry::start(None);
            let busybox = regfs::testkit::fixtures::push_busybox(&registry.url)
                .unwrap_or_else(|e| panic!("pushing run/busybox failed: {e}"));
            Shared { registry, busybox }
        })
    })
}

/// Fails (never skips) when `tool` is not on PATH.
fn need(tool: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    assert!(found, "{tool} is not installed: scripts/lib.sh REGFS_PACKAGES lists it (scripts/test installs it)");
}

/// The lines of the shell block of the README's "Run an image without pulling" section.
fn readme_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let start = readme.find("\n## Run an image without pulling").expect("README has a \"## Run an image\" section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let block = section.split("```sh\n").nth(1).expect("a ```sh block");
    let block = &block[..block.find("```").expect("the block ends")];
    block.lines().map(str::to_string).collect()
}

/// The README line that starts with `prefix` (exactly one does).
fn readme_line(prefix: &str) -> String {
    let lines: Vec<String> = readme_lines().into_iter().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "README lines starting with {prefix:?}: {lines:?}");
    lines[0].clone()
}

/// The README's `ROOT=MOUNT/...` line for mount `m`: the assignment, and the path it names.
fn readme_root(m: &Mount) -> (String, PathBuf) {
    let line = readme_line("ROOT=");
    let value = line.trim_start_matches("ROOT=").split_whitespace().next().expect("ROOT=value").to_string();
    let rel = value.strip_prefix("MOUNT/").unwrap_or_else(|| panic!("ROOT is not under MOUNT: {line}"));
    let root = m.path(rel);
    (format!("ROOT={}", root.display()), root)
}

/// Run `script` in bash with `$T` set to `tmp`; in a mount namespace of its own when `private`
/// (what it mounts goes away with it, on failure too).
fn bash(script: &str, tmp: &Path, private: bool) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("120");
    if private {
        cmd.args(["unshare", "--mount", "--propagation", "private"]);
    }
    cmd.args(["bash", "-c", script]).env("T", tmp).stdin(Stdio::null());
    crate::common::die_with_parent(&mut cmd);
    cmd.output().expect("timeout bash")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", show(&o));
    stdout(&o)
}

/// Run `line` (a README command) after the README's ROOT line for `m`.
fn readme_run(m: &Mount, line: &str) -> Output {
    let (root_line, _) = readme_root(m);
    bash(&format!("set -u\n{root_line}\n{line}"), m.dir.path(), false)
}

fn os_release() -> String {
    s(&shared().busybox["os_release"]).trim_end().to_string()
}

/// `sha256sum` of the host's `/bin/busybox` (the bytes the image was built from).
fn host_busybox_sum() -> String {
    crate::common::sha256sum(Path::new("/bin/busybox")).trim_start_matches("sha256:").to_string()
}

/// The README's chroot runs the image's shell on a cold mount, by default (no open: the kernel
/// maps the binary from its page cache of the FUSE file) and with `--open`; the binary's bytes
/// are the image's, the top layer's link and whiteout apply, a write is EROFS and the image's
/// `/dev/null` cannot be opened (the mount is nodev).
#[test]
fn chroot_runs_the_image_s_busybox_on_a_cold_mount_by_default_and_with_open() {
    need("chroot");
    let sh = shared();
    let applets = sh.busybox["applets"].as_array().expect("applets").len();
    for mode in [&[][..], &["--open"][..]] {
        let m = Mount::start(&sh.registry.url, mode);
        let started = Instant::now();
        let out = ok(readme_run(&m, &readme_line("chroot \"$ROOT\"")));
        eprintln!("{mode:?}: cold chroot of the README's command: {:.3} s", started.elapsed().as_secs_f64());
        assert_eq!(out, os_release(), "{mode:?}");
        let (_, root) = readme_root(&m);
        let inside = |cmd: &str| bash(&format!("chroot '{}' {cmd}", root.display()), m.dir.path(), false);
        let sum = ok(inside("/bin/sha256sum /bin/busybox"));
        assert_eq!(sum.split_whitespace().next(), Some(host_busybox_sum().as_str()), "{mode:?}");
        assert_eq!(ok(inside("/bin/sh -c 'ls /bin | wc -l'")), (applets + 2).to_string(), "{mode:?}");
        let top = ok(inside("/usr/bin/env sh -c 'cat /etc/motd; test -e /etc/gone || echo gone'"));
        assert_eq!(top, format!("{}gone", s(&sh.busybox["motd"])), "{mode:?}");
        let write = inside("/bin/sh -c 'echo x > /tmp/x'");
        assert!(!write.status.success(), "{mode:?}: {}", show(&write));
        assert!(String::from_utf8_lossy(&write.stderr).contains("Read-only file system"), "{}", show(&write));
        let dev = inside("/bin/sh -c ': > /dev/null'");
        assert!(!dev.status.success(), "{mode:?}: {}", show(&dev));
        assert!(String::from_utf8_lossy(&dev.stderr).contains("Permission denied"), "{}", show(&dev));
    }
}

/// A dynamically linked program of the image (GNU `cat`, its loader and libc in a layer of their
/// own) runs in the chroot: the kernel maps `ld.so` from the mount and `ld.so` maps libc from it
/// with mmap(2), cold, by default and with `--open`; what it reads is the image's.
#[test]
fn chroot_runs_a_dynamically_linked_program_whose_libraries_are_mapped_from_the_mount() {
    need("chroot");
    let sh = shared();
    let dynamic = &sh.busybox["dynamic"];
    assert!(dynamic["needs"].as_array().is_some_and(|n| n.len() >= 2), "{dynamic}");
    let version = ok(bash(&format!("{} --version | head -1", s(&dynamic["from"])), Path::new("/"), false));
    for mode in [&[][..], &["--open"][..]] {
        let m = Mount::start(&sh.registry.url, mode);
        let (_, root) = readme_root(&m);
        let started = Instant::now();
        let program = format!("/{}", s(&dynamic["program"]));
        let out = ok(bash(
            &format!(
                "chroot '{}' {program} --version | head -1; chroot '{}' {program} /etc/os-release",
                root.display(),
                root.display()
            ),
            m.dir.path(),
            false,
        ));
        eprintln!("{mode:?}: cold chroot of a dynamically linked program: {:.3} s", started.elapsed().as_secs_f64());
        assert_eq!(out, format!("{version}\n{}", os_release()), "{mode:?}");
        // its maps, read in a proc of its own: the loader and libc are files of the root
        let maps = ok(bash(
            &format!("unshare --mount --pid --fork --mount-proc --root='{}' {program} /proc/self/maps", root.display()),
            m.dir.path(),
            false,
        ));
        for lib in dynamic["needs"].as_array().expect("needs") {
            assert!(maps.lines().any(|l| l.ends_with(&format!(" {}", s(lib)))), "{mode:?}: {lib} not mapped:\n{maps}");
        }
    }
}

/// The README's `unshare --mount --pid --fork --mount-proc --root` runs the image's shell as
/// pid 1 of its own namespace, `ps` reading the proc it mounted; the proc mount stays in that
/// namespace.
#[test]
fn unshare_runs_the_image_as_pid_1_with_its_own_proc() {
    need("unshare");
    let m = Mount::start(&shared().registry.url, &[]);
    let out = ok(readme_run(&m, &readme_line("unshare ")));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"pid 1"), "{out}");
    assert!(lines.get(1).is_some_and(|l| l.trim_start().starts_with("PID")), "{out}");
    assert!(lines.iter().any(|l| l.trim_start().starts_with("1 root")), "ps shows the shell as pid 1:\n{out}");
    let (_, root) = readme_root(&m);
    assert_eq!(std::fs::read_dir(root.join("proc")).expect("rootfs/proc").count(), 0);
}

/// The README's overlay lines: overlayfs takes `rootfs/` as `lowerdir`; the image's shell runs in
/// it, a write and a copy-up (reading the lower file through regfs) land in `upperdir`, a
/// deletion is a whiteout there, and `rootfs/` is as it was and still read-only. With the
/// README's `nodev,nosuid` the image's `/dev/null` is refused and its setuid-root `id` runs as
/// the caller; an overlay without them opens the device and runs `id` as euid 0 (it does not
/// inherit the FUSE mount's `nodev,nosuid`, as the README says).
#[test]
fn overlayfs_with_rootfs_as_lowerdir_takes_writes_in_upperdir_and_rootfs_stays_read_only() {
    need("mount");
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root_line, root) = readme_root(&m);
    let ctr = |l: String| l.replace("/tmp/ctr", "$T");
    let merged = "$T/merged";
    let script = format!(
        r#"set -u
{root_line}
{mkdir}
{mount} || exit 90
{chroot} > "$T/out.readme" 2>&1; echo $? > "$T/rc.readme"
chroot --userspec=65534:65534 {merged} /{suid} > "$T/out.nosuid" 2>&1; echo $? > "$T/rc.nosuid"
chroot {merged} /bin/sh -c 'echo more >> /etc/motd && rm /etc/passwd && cat /etc/motd && ls /etc' > "$T/out.edit" 2>&1; echo $? > "$T/rc.edit"
chroot {merged} /bin/sh -c ': > /dev/null' > "$T/out.nodev" 2>&1; echo $? > "$T/rc.nodev"
{umount} || exit 91
mkdir "$T/u2" "$T/w2" "$T/m2"
mount -t overlay overlay -o lowerdir="$ROOT",upperdir="$T/u2",workdir="$T/w2" "$T/m2" || exit 92
chroot "$T/m2" /bin/sh -c ': > /dev/null && echo opened' > "$T/out.dev" 2>&1; echo $? > "$T/rc.dev"
chroot --userspec=65534:65534 "$T/m2" /{suid} > "$T/out.suid" 2>&1; echo $? > "$T/rc.suid"
umount "$T/m2"
"#,
        mkdir = ctr(readme_line("mkdir ")),
        mount = ctr(readme_line("mount -t overlay")),
        chroot = ctr(readme_line("chroot /tmp/ctr/merged")),
        umount = ctr(readme_line("umount ")),
        suid = s(&sh.busybox["suid"]),
    );
    let run = bash(&script, tmp.path(), true);
    let t = tmp.path();
    let read = |name: &str| std::fs::read_to_string(t.join(name)).unwrap_or_default().trim_end().to_string();
    assert!(run.status.success(), "{}\nlog:\n{}", show(&run), m.log());
    assert_eq!((read("rc.readme"), read("out.readme")), ("0".into(), "hello".into()));
    assert_eq!(std::fs::read_to_string(t.join("upper/tmp/note")).expect("upper/tmp/note"), "hello\n");
    let motd = s(&sh.busybox["motd"]);
    assert_eq!(read("rc.edit"), "0", "{}", read("out.edit"));
    assert_eq!(read("out.edit"), format!("{motd}more\ngroup\nmotd\nos-release"));
    assert_eq!(std::fs::read_to_string(t.join("upper/etc/motd")).expect("copied up"), format!("{motd}more\n"));
    let wh = std::fs::symlink_metadata(t.join("upper/etc/passwd")).expect("a whiteout in upperdir");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert_ne!(read("rc.nodev"), "0", "{}", read("out.nodev"));
    assert!(read("out.nodev").contains("Permission denied"), "{}", read("out.nodev"));
    assert_eq!((read("rc.dev"), read("out.dev")), ("0".into(), "opened".into()));
    // the image's setuid-root `id`, run as nobody: setuid only where the overlay lacks nosuid
    assert_eq!(read("rc.nosuid"), "0", "{}", read("out.nosuid"));
    assert!(read("out.nosuid").starts_with("uid=65534(nobody)"), "{}", read("out.nosuid"));
    assert!(!read("out.nosuid").contains("euid="), "{}", read("out.nosuid"));
    assert_eq!(read("rc.suid"), "0", "{}", read("out.suid"));
    assert!(read("out.suid").contains(" euid=0(root) "), "{}", read("out.suid"));
    // rootfs/ as it was, and read-only
    assert!(!root.join("tmp/note").exists());
    assert_eq!(std::fs::read_to_string(root.join("etc/motd")).expect("rootfs/etc/motd"), motd);
    assert!(root.join("etc/passwd").exists());
    let err = std::fs::write(root.join("tmp/x"), "x").expect_err("rootfs/ is read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

/// What the README says podman needs where it runs without CAP_SYS_RESOURCE and with hybrid
/// cgroups (this machine), spelled as the README spells it.
const PODMAN_RUNTIME: &str = "--runtime runc";
const PODMAN_LIMITS: &str = "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024";

/// The README's podman line with the README's two additions.
fn podman_line() -> String {
    let line = readme_line("podman run ");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md");
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for add in [PODMAN_RUNTIME, PODMAN_LIMITS] {
        assert!(flat.contains(&format!("`{add}`")), "the README does not say to add `{add}`");
    }
    line.replacen("podman run ", &format!("podman {PODMAN_RUNTIME} run {PODMAN_LIMITS} "), 1)
}

/// The README's `podman run --rootfs "$ROOT":O` runs the image's shell over an overlay of its
/// own: the container can write, `rootfs/` is untouched.
#[test]
fn podman_runs_the_image_from_rootfs_with_an_overlay() {
    need("podman");
    need("runc");
    let m = Mount::start(&shared().registry.url, &[]);
    let line = podman_line();
    assert_eq!(ok(readme_run(&m, &line)), os_release(), "{line}");
    let write = line.replace("'cat /etc/os-release'", "'echo written > /etc/new && cat /etc/new'");
    assert_ne!(write, line, "the README's podman line runs `cat /etc/os-release`");
    assert_eq!(ok(readme_run(&m, &write)), "written");
    let (_, root) = readme_root(&m);
    assert!(!root.join("etc/new").exists());
}

/// The README's `systemd-nspawn --read-only -D "$ROOT"` runs the image's shell as pid 1 of a
/// container on the read-only tree: a write outside nspawn's own tmpfs mounts is EROFS.
#[test]
fn systemd_nspawn_runs_the_image_read_only() {
    need("systemd-nspawn");
    let m = Mount::start(&shared().registry.url, &[]);
    let line = readme_line("systemd-nspawn ");
    assert_eq!(ok(readme_run(&m, &line)), os_release(), "{line}");
    let more = line.replace("'cat /etc/os-release'", "'echo $$; echo x > /etc/x'");
    assert_ne!(more, line, "the README's nspawn line runs `cat /etc/os-release`");
    let o = readme_run(&m, &more);
    assert!(!o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "1", "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only file system"), "{}", show(&o));
}

/// `lgetxattr(path, name)`: the value, or the errno.
fn xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the length given.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// A layer holding overlayfs's own metadata as xattrs (`trusted.overlay.opaque` on `etc/`,
/// `trusted.overlay.metacopy` on `etc/meta`) does not steer an overlay built over `rootfs/`:
/// regfs shows no `trusted.overlay.*` xattr (ENODATA; other xattrs stay), so stacked over the
/// busybox image as `lowerdir=H:B` its `etc/meta` reads as the image's bytes (a metacopy file
/// would be EPERM, "refusing to follow metacopy origin") and `etc/` still shows busybox's files
/// (an opaque `etc/` would hide them).
#[test]
fn overlayfs_metadata_in_a_layer_does_not_steer_an_overlay_over_rootfs() {
    need("mount");
    let sh = shared();
    let ox = &sh.busybox["overlay_xattrs"];
    let m = Mount::start(&sh.registry.url, &[]);
    let high = m.path(&format!("{}/tags/{}/rootfs", s(&ox["repo"]), s(&ox["tag"])));
    let (_, low) = readme_root(&m);
    let meta = high.join(s(&ox["metacopy"]));
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = format!(
        r#"set -u
mkdir "$T/upper" "$T/work" "$T/merged"
mount -t overlay overlay -o lowerdir='{high}':'{low}',upperdir="$T/upper",workdir="$T/work",nodev,nosuid "$T/merged" || exit 90
chroot "$T/merged" /bin/cat /etc/meta > "$T/out.meta" 2>&1; echo $? > "$T/rc.meta"
chroot "$T/merged" /bin/ls /etc > "$T/out.ls" 2>&1; echo $? > "$T/rc.ls"
umount "$T/merged"
"#,
        high = high.display(),
        low = low.display(),
    );
    let run = bash(&script, tmp.path(), true);
    assert!(run.status.success(), "{}", show(&run));
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default();
    assert_eq!((read("rc.meta").trim(), read("out.meta")), ("0", s(&ox["meta"]).to_string()));
    assert_eq!(read("rc.ls").trim(), "0", "{}", read("out.ls"));
    let listing = read("out.ls");
    let names: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(names, ["group", "meta", "motd", "os-release", "passwd"]);
    assert_eq!(xattr(&meta, "user.regfs"), Ok(b"kept".to_vec()));
    assert_eq!(xattr(&meta, "trusted.overlay.metacopy"), Err(libc::ENODATA));
    assert_eq!(xattr(&high.join(s(&ox["opaque"])), "trusted.overlay.opaque"), Err(libc::ENODATA));
}

/// An image whose top layer does not verify (its config names a wrong diff_id) runs nothing:
/// exec of its shell, which the unverified layer must be consulted for, is EIO, by default and
/// with `--open`, and the verified image of the same layers runs.
#[test]
fn an_image_whose_layer_does_not_verify_runs_nothing_and_exec_is_eio() {
    need("chroot");
    let sh = shared();
    for mode in [&[][..], &["--open"][..]] {
        let m = Mount::start(&sh.registry.url, mode);
        let bad = m.path(&format!("run/busybox/tags/{}/rootfs", s(&sh.busybox["bad_diff_id_tag"])));
        let o = bash(&format!("chroot '{}' /bin/sh -c 'echo ran'", bad.display()), m.dir.path(), false);
        assert!(!o.status.success() && o.stdout.is_empty(), "{mode:?}: {}", show(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("Input/output error"), "{mode:?}: {}", show(&o));
        let (_, good) = readme_root(&m);
        assert_eq!(ok(bash(&format!("chroot '{}' /bin/sh -c 'echo ran'", good.display()), m.dir.path(), false)), "ran");
    }
}

/// The image's setuid-root `id` shows mode 4755 and runs as its caller: the mount is nosuid. A
/// process of another user than the one who mounted (here `chroot --userspec` nobody) is refused
/// (EACCES, FUSE's rule) unless the mount has `--allow-other`.
#[test]
fn setuid_files_show_their_mode_and_run_as_the_caller_and_other_users_need_allow_other() {
    need("chroot");
    let sh = shared();
    let suid = s(&sh.busybox["suid"]);
    let as_nobody = |m: &Mount| {
        let (_, root) = readme_root(m);
        bash(&format!("chroot --userspec=65534:65534 '{}' /{suid}", root.display()), m.dir.path(), false)
    };
    let m = Mount::start(&sh.registry.url, &[]);
    let (_, root) = readme_root(&m);
    assert_eq!(std::fs::metadata(root.join(suid)).expect("suid-id").mode() & 0o7777, 0o4755);
    let refused = as_nobody(&m);
    assert!(!refused.status.success(), "{}", show(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"), "{}", show(&refused));
    let m = Mount::start(&sh.registry.url, &["--allow-other"]);
    let id = ok(as_nobody(&m));
    assert!(id.starts_with("uid=65534(nobody) ") && !id.contains("euid="), "the mount is nosuid: {id}");
}

/// An overlay over `tags/<tag>/rootfs` keeps the image it was mounted on when the tag moves:
/// the kernel resolved the link once, to `manifests/sha256:<hex>/rootfs`. Here the tag moves to
/// the image of the same layers whose config names a wrong diff_id, whose files are EIO.
#[test]
fn an_overlay_keeps_the_image_it_was_mounted_on_when_its_tag_moves() {
    need("curl");
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &["--tag-ttl", "1"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = &sh.registry.url;
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let retag = |from: &str| {
        format!(
            "curl -sf -H 'Accept: {accept}' {url}/v2/run/busybox/manifests/{from} | curl -sf -X PUT -H 'Content-Type: {accept}' --data-binary @- {url}/v2/run/busybox/manifests/moving"
        )
    };
    let tag = m.path("run/busybox/tags/moving");
    let script = format!(
        r#"set -u
{to_v1} || exit 90
mkdir "$T/upper" "$T/work" "$T/merged"
mount -t overlay overlay -o lowerdir='{tag}/rootfs',upperdir="$T/upper",workdir="$T/work",nodev,nosuid "$T/merged" || exit 91
readlink '{tag}' > "$T/before"
{to_bad} || exit 92
sleep 2
readlink '{tag}' > "$T/after"
chroot "$T/merged" /bin/cat /etc/os-release > "$T/out.merged" 2>&1; echo $? > "$T/rc.merged"
cat '{tag}/rootfs/etc/os-release' > "$T/out.tag" 2>&1; echo $? > "$T/rc.tag"
umount "$T/merged"
"#,
        to_v1 = retag("v1"),
        to_bad = retag(s(&sh.busybox["bad_diff_id_tag"])),
        tag = tag.display(),
    );
    let run = bash(&script, tmp.path(), true);
    assert!(run.status.success(), "{}", show(&run));
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default().trim_end().to_string();
    assert_ne!(read("before"), read("after"), "the tag moved");
    assert_eq!((read("rc.merged"), read("out.merged")), ("0".to_string(), os_release()));
    assert_ne!(read("rc.tag"), "0", "{}", read("out.tag"));
    assert!(read("out.tag").contains("Input/output error"), "{}", read("out.tag"));
}
