//! The command line. Every option is documented in `doc/CONFIGURATION.md` too.
//!
//! `mount(8)` runs regfs as `regfs SOURCE MOUNTPOINT -o LIST` (through mount.fuse3), so
//! [`expand_mount_options`] rewrites each `-o` list into the long options before clap parses:
//! one grammar, with `-o` a second spelling of it rather than a second set of options.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::fs::FsConfig;
use crate::fuse::MountConfig;
use crate::limits;
use crate::platform::Platform;
use crate::registry::credentials::Login;
use crate::registry::foreign::UrlRules;
use crate::registry::http::{Options, Progress, RetryPolicy};
use crate::store::{self, StoreConfig};
use crate::views::ViewsConfig;

#[derive(Debug, Parser)]
#[command(
    name = "regfs",
    version,
    about = "Mount a container registry as a read-only directory; every byte served is checked against its digest.",
    after_help = "Layout: MOUNT/<repo>/tags/<tag> -> ../manifests/<digest>, MOUNT/<repo>/manifests/<digest>/ \
(manifest.json, config.json, layers/, rootfs/; in an index one link per platform and `current`, the one for --platform), \
MOUNT/<repo>/blobs/<digest>.\n\
Unmount with `umount MOUNTPOINT` (root), `fusermount3 -u MOUNTPOINT`, or Ctrl-C / SIGTERM in --foreground.\n\
Logs: RUST_LOG=debug for more; in the background they go to --log-file.\n\
Mount options: -o name[=value],... (as mount(8) and /etc/fstab pass them) stands for the long options above \
without their -- (-o ro,cache_dir=/var/cache/regfs,tag_ttl=30,allow_other,nonempty); ro, rw, nodev, nosuid, \
noexec, nofail, _netdev, defaults, x-* and the other generic mount options are ignored (regfs is read-only). \
`mount -t fuse.regfs REGISTRY DIR` runs regfs with a default PATH: install it in /usr/local/bin or /usr/bin."
)]
pub struct Cli {
    /// The registry: host[:port] (https, or http on loopback) or a full http:// or https:// URL.
    pub registry: String,

    /// An existing empty directory to mount on (not already a mount point).
    pub mountpoint: PathBuf,

    /// Stay in the foreground and log to stderr (default: return once mounted, serve in the background).
    #[arg(short, long)]
    pub foreground: bool,

    /// Where verified blobs are kept; must be yours and writable by no one else [default: $XDG_CACHE_HOME/regfs, else ~/.cache/regfs].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Most disk the blob cache may use (e.g. 500M, 10G); least recently used blobs go first.
    #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,

    /// Memory for the indexes of decoded layers (what rootfs/ is listed from); past it the least recently used are read back from the cache when needed (e.g. 64M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_memory)]
    pub index_memory: usize,

    /// Entries one layer may have for rootfs/ to show it (implied directories included); a layer with more is EFBIG in rootfs/, its layers/<n>.tar still served.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_LAYER_ENTRIES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 26))]
    pub layer_entries: usize,

    /// Memory one layer's index may take (records and names, about 110 bytes an entry); a layer needing more is EFBIG in rootfs/ (e.g. 128M; at most 1G).
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = parse_index_size)]
    pub layer_index_size: usize,

    /// Layers an image may have for rootfs/ to merge them; an image with more shows rootfs/ as EFBIG.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_ROOTFS_LAYERS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 16))]
    pub rootfs_layers: usize,

    /// Files of rootfs/ put in the kernel's page cache ahead of a walk that reads a tree in listing order (find | xargs cat, tar, grep -r), per window; 0 reads nothing ahead.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=4096))]
    pub read_ahead_files: usize,

    /// Layers whose manifest names a TOC (eStargz, zstd:chunked): on, rootfs/ reads their files by chunks, each verified against the TOC the manifest names, without the rest of the layer; off, every layer is read whole and verified by its diff_id first. layers/<n>.tar is always read whole.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub lazy: bool,

    /// With --lazy on: once a layer is read by chunks, also fetch it whole in the background, verify it by its diff_id and check its TOC against it; a TOC that disagrees makes the layer's files EIO (costs the whole layer's bytes).
    #[arg(long)]
    pub lazy_verify: bool,

    /// Range requests at once for a blob over 64 MiB (by its descriptor's size), in 16 MiB pieces: faster where each connection is slow (a far registry, a CDN that throttles connections); 1 downloads every blob as one stream, which is faster on a fast local registry.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub parallel_ranges: usize,

    /// Seconds a tag list, the catalog or a tag's digest is trusted before asking again.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub tag_ttl: u64,

    /// The platform (os/arch[/variant], e.g. linux/arm64) whose image each index's `current` link names, chosen with docker's fallbacks [default: this machine's].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = Platform::parse)]
    pub platform: Option<Platform>,

    /// Log in as this user (the password is read from stdin with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from the first line of stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// The one auth file (docker config.json or containers auth.json) to take credentials from [default: REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json, ~/.dockercfg].
    #[arg(long, value_name = "PATH")]
    pub auth_file: Option<PathBuf>,

    /// Seconds a credential helper (docker-credential-NAME) may take before it is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub helper_timeout: u64,

    /// Also trust the certificate authorities in this PEM file (a registry behind an internal CA).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// A mirror or pull-through cache to read from before the registry (repeatable, tried in order; URL or host[:port]); tags are resolved there too unless --mirror-digest-only. Without it, the mirrors of registries.conf, else of containerd's hosts.toml.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,

    /// Ask the --mirror mirrors for content by digest only: tags are resolved at the registry.
    #[arg(long)]
    pub mirror_digest_only: bool,

    /// Ignore the mirrors of registries.conf (CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, /etc/containers/registries.conf and their registries.conf.d) and of containerd's hosts.toml.
    #[arg(long)]
    pub no_mirror_config: bool,

    /// containerd's hosts directory: mirrors from DIR/<host[:port]>/hosts.toml (else DIR/_default/hosts.toml) when registries.conf gives none [default: /etc/containerd/certs.d].
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,

    // signature policy
    /// Enforce the signature policy of containers' policy.json ($HOME/.config/containers/policy.json, else /etc/containers/policy.json): the content of a manifest the policy refuses is EACCES (doc/CONFIGURATION.md "Signature policy").
    #[arg(long)]
    pub signature_policy: bool,

    /// Enforce this policy.json (implies --signature-policy).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// containers' registries.d: where use-sigstore-attachments is read [default: $HOME/.config/containers/registries.d if it exists, else /etc/containers/registries.d].
    #[arg(long = "registries-d", value_name = "DIR")]
    pub registries_d: Option<PathBuf>,

    // foreign layers
    /// Fetch a layer the registry lacks from the `urls` its descriptor lists when every one of them
    /// matches one of these regular expressions and no --layer-url-deny (repeatable; e.g. '^https://host/') [default: no URL is used].
    #[arg(long, value_name = "RE", value_parser = parse_pattern)]
    pub layer_url_allow: Vec<String>,

    /// Never fetch a layer from its `urls` when one of them matches this regular expression (repeatable).
    #[arg(long, value_name = "RE", value_parser = parse_pattern)]
    pub layer_url_deny: Vec<String>,

    /// Let users other than the one mounting read the mount (needs user_allow_other in /etc/fuse.conf for non-root).
    #[arg(long)]
    pub allow_other: bool,

    /// Seconds any one network step (connect, headers, each read of a body) may take before it is retried.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u64,

    /// How many times a failed request (429, 5xx, reset, timeout) is retried before the read fails with EIO.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub retries: u32,

    /// A body (blob, manifest, tag list, token) moving slower than this many bytes a second over
    /// --min-speed-time is abandoned and resumed or retried, like a timeout (e.g. 1K; 0: no limit).
    #[arg(long, value_name = "BYTES", default_value = "1K", value_parser = parse_size)]
    pub min_speed: u64,

    /// The window, in seconds, over which --min-speed is measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub min_speed_time: u64,

    /// Where the background process logs, opened as given [default: regfs.log in the cache directory, never through a link].
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// With --open, serve every read through regfs instead of letting the kernel read verified cache files directly (FUSE passthrough); without --open there is no passthrough anyway.
    #[arg(long)]
    pub no_passthrough: bool,

    /// Have the kernel send an open and a release of each file, as most FUSE filesystems do: needed for FUSE passthrough of verified blobs, and errors show at open; each warm read of a file then costs two round trips more (the default is --no-open).
    #[arg(long, conflicts_with = "no_open")]
    pub open: bool,

    /// The default: the kernel sends no open and release of files (FUSE_NO_OPEN_SUPPORT), so a warm read of a file is served from the page cache with no round trip to regfs; no passthrough, and errors show at read. Accepted to say so explicitly.
    #[arg(long)]
    pub no_open: bool,

    /// Threads reading requests from the kernel (operations that wait on the network get threads of their own).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub fuse_threads: usize,

    /// Mount on a directory that has entries, hiding them while mounted (without it, regfs refuses a non-empty MOUNTPOINT, as fusermount does; -o nonempty).
    #[arg(long)]
    pub nonempty: bool,
}

/// A size of memory (`64M`), at least 1 byte.
fn parse_memory(s: &str) -> Result<usize, String> {
    match usize::try_from(parse_size(s)?) {
        Ok(0) => Err(format!("{s:?}: must be more than 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is too large")),
    }
}

/// A layer index's size: at most 1 GiB (spans in an index are 32-bit).
fn parse_index_size(s: &str) -> Result<usize, String> {
    let n = parse_memory(s)?;
    if n > 1 << 30 {
        return Err(format!("{s:?}: an index may take at most 1G"));
    }
    Ok(n)
}

/// `10G`, `512M`, `64K`, `1T`, or plain bytes; binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size such as 10G"))?;
    let (fraction, unit) = match unit.strip_prefix('.') {
        Some(rest) => rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())),
        None => ("", unit),
    };
    let shift = unit_shift(unit).ok_or_else(|| format!("{s:?}: unknown unit (use K, M, G or T)"))?;
    if s[num.len()..].starts_with('.') {
        return Err(decimal_advice(s, num, fraction, shift));
    }
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// A `--layer-url-allow`/`--layer-url-deny` pattern: a regular expression that compiles.
fn parse_pattern(s: &str) -> Result<String, String> {
    regex::Regex::new(s).map(|_| s.to_string()).map_err(|e| format!("{s:?} is not a regular expression: {e}"))
}

fn unit_shift(unit: &str) -> Option<u32> {
    match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => Some(0),
        "K" => Some(10),
        "M" => Some(20),
        "G" => Some(30),
        "T" => Some(40),
        _ => None,
    }
}

/// The refusal of `1.5G`: say that the decimal is the problem, and how to write the same size
/// as a whole number of a smaller unit when there is one.
fn decimal_advice(s: &str, whole: &str, fraction: &str, shift: u32) -> String {
    let refusal = format!("{s:?}: decimals are not accepted");
    let digits = format!("{whole}{fraction}");
    let (Ok(scaled), Some(ten)) = (digits.parse::<u128>(), 10u128.checked_pow(fraction.len() as u32)) else {
        return format!("{refusal}; write a whole number of K, M, G or T");
    };
    // bytes = scaled * 2^shift / 10^len(fraction): the largest smaller unit that holds it whole.
    for (lower, name) in [(30, "G"), (20, "M"), (10, "K"), (0, "")] {
        let Some(numerator) = (lower < shift).then(|| scaled.checked_mul(1 << (shift - lower))).flatten() else {
            continue;
        };
        if numerator % ten == 0 {
            return format!("{refusal}; write {}{name}", numerator / ten);
        }
    }
    format!("{refusal}; write a whole number of K, M, G or T")
}

impl Cli {
    /// `--cache-dir`, else [`store::default_cache_dir`].
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(store::default_cache_dir)
    }

    /// The store's configuration: the options that say where and how much, the rest default.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            cache_dir: self.cache_dir(),
            cache_size: self.cache_size,
            tag_ttl: Duration::from_secs(self.tag_ttl),
            download: crate::store::download::DownloadConfig {
                ranges_at_once: self.parallel_ranges,
                ..crate::store::download::DownloadConfig::default()
            },
            ..StoreConfig::default()
        }
    }

    /// The core's configuration: `--tag-ttl`, `--platform`, `--read-ahead-files`, and the views' bounds (`--index-memory`,
    /// `--layer-entries`, `--layer-index-size`, `--rootfs-layers`); the rest default.
    /// The policy file to enforce, if any: `--policy`, else with `--signature-policy` the
    /// user's `~/.config/containers/policy.json` if it exists, else `/etc/containers/policy.json`
    /// (containers/image's order).
    pub fn policy_file(&self, home: Option<&std::path::Path>) -> Option<PathBuf> {
        if let Some(p) = &self.policy {
            return Some(p.clone());
        }
        if !self.signature_policy {
            return None;
        }
        let user = home.map(|h| h.join(".config/containers/policy.json")).filter(|p| p.exists());
        Some(user.unwrap_or_else(|| PathBuf::from("/etc/containers/policy.json")))
    }

    /// The registries.d directory: `--registries-d`, else the user's if it exists, else the
    /// system's.
    pub fn registries_d_dir(&self, home: Option<&std::path::Path>) -> PathBuf {
        if let Some(d) = &self.registries_d {
            return d.clone();
        }
        let user = home.map(|h| h.join(".config/containers/registries.d")).filter(|p| p.is_dir());
        user.unwrap_or_else(|| PathBuf::from("/etc/containers/registries.d"))
    }

    pub fn fs_config(&self) -> FsConfig {
        let views = ViewsConfig {
            index_memory: self.index_memory,
            layer_entries: self.layer_entries,
            layer_index_size: self.layer_index_size,
            rootfs_layers: self.rootfs_layers,
            lazy: crate::views::lazy::LazyConfig {
                enabled: self.lazy,
                verify_whole: self.lazy_verify,
                ..Default::default()
            },
            ..ViewsConfig::default()
        };
        let mut config = FsConfig {
            tag_ttl: Duration::from_secs(self.tag_ttl),
            views,
            ahead_files: self.read_ahead_files,
            ..FsConfig::default()
        };
        if let Some(p) = &self.platform {
            config.platform = p.clone();
        }
        config
    }

    /// The transport's configuration: `--retries`, `--timeout`, `--min-speed`, `--min-speed-time`
    /// (the two durations at least a second), with the credentials and the CA certificates (PEM)
    /// read from the options that name them.
    pub fn http_options(&self, login: Option<Login>, ca_certs: Vec<u8>) -> Options {
        Options {
            login,
            retry: RetryPolicy { retries: self.retries, ..RetryPolicy::default() },
            timeout: Duration::from_secs(self.timeout.max(1)),
            progress: Progress { min_speed: self.min_speed, window: Duration::from_secs(self.min_speed_time.max(1)) },
            ca_certs,
            ..Options::default()
        }
    }

    /// Which layer URLs may be fetched: `--layer-url-allow`, `--layer-url-deny`.
    pub fn url_rules(&self) -> crate::error::Result<UrlRules> {
        UrlRules::new(&self.layer_url_allow, &self.layer_url_deny)
    }

    /// The mount's configuration: `--fuse-threads`, `--allow-other`, `--no-passthrough`,
    /// `--open` (without it, `--no-open`: see `src/fuse.rs`, "No open, no release").
    pub fn mount_config(&self) -> MountConfig {
        MountConfig {
            fuse_threads: self.fuse_threads,
            allow_other: self.allow_other,
            passthrough: !self.no_passthrough,
            no_open: !self.open,
            ..MountConfig::default()
        }
    }
}

// `-o` mount options, as mount(8) runs a helper.

/// The command line with its `-o` lists expanded, and what to log about them once logging runs.
#[derive(Debug)]
pub struct Expanded {
    pub args: Vec<OsString>,
    pub notes: Vec<String>,
}

/// The generic mount options mount(8) and mount.fuse3 hand to a helper (fstab's `defaults`
/// arrives as `rw`; mount.fuse3 appends `dev,suid`), plus `x-*`: accepted and ignored, since
/// regfs always mounts `ro,nodev,nosuid` with `default_permissions`.
const GENERIC_MOUNT_OPTIONS: &[&str] = &[
    "ro",
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "defaults",
    "async",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "diratime",
    "nodiratime",
    "default_permissions",
];

/// Long options `-o` does not carry: the login (a password has no place in `/etc/fstab` or the
/// process list, and stdin is not the user's under mount), `--foreground` (mount waits for its
/// helper to return), and clap's own.
fn refuse_by_mount_option(long: &str) -> Option<String> {
    let secret = ["password", "passwd", "secret", "token"].iter().any(|w| long.contains(w));
    if secret || long == "username" {
        return Some(
            "-o cannot carry a login (a password would be readable in /etc/fstab and the process list); \
             put the credentials in an auth file (--auth-file, -o auth_file=PATH) or a credential helper"
                .into(),
        );
    }
    if long == "foreground" {
        return Some(
            "mount waits for regfs to return, so a mount by mount(8) cannot stay in the foreground (-f)".into(),
        );
    }
    None
}

/// Rewrite each `-o name[=value],...` (also `-oLIST`) of `argv` into regfs's own options before
/// clap sees them: `name=value` becomes `--name=value` and a bare `name` becomes `--name`, where
/// `--name` is a long option of [`Cli`] (`_` may stand for `-`); a value in `"…"` may hold
/// commas. The generic mount options ([`GENERIC_MOUNT_OPTIONS`], `x-*`) are dropped (`rw` with a
/// note: regfs is read-only). An unknown name, a value where none is taken or none where one is,
/// and the login options are refused; a message names the option, never its value. Everything
/// after `--` is left as it is.
pub fn expand_mount_options(argv: impl IntoIterator<Item = OsString>) -> Result<Expanded, String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut out = Expanded { args: Vec::new(), notes: Vec::new() };
    let mut argv = argv.into_iter();
    out.args.extend(argv.next());
    while let Some(arg) = argv.next() {
        let bytes = arg.as_bytes();
        let list = if bytes == b"--" {
            out.args.push(arg);
            out.args.extend(argv.by_ref());
            break;
        } else if bytes == b"-o" {
            argv.next().ok_or("-o needs a list of options (-o name[=value],...)")?.into_vec()
        } else if let Some(rest) = bytes.strip_prefix(b"-o") {
            rest.to_vec()
        } else {
            out.args.push(arg);
            continue;
        };
        for item in split_mount_options(&list)? {
            let (name, value) = match item.iter().position(|&b| b == b'=') {
                Some(at) => (String::from_utf8_lossy(&item[..at]).into_owned(), Some(&item[at + 1..])),
                None => (String::from_utf8_lossy(&item).into_owned(), None),
            };
            if GENERIC_MOUNT_OPTIONS.contains(&name.as_str()) || name.starts_with("x-") {
                if name == "rw" {
                    out.notes.push("-o rw: regfs is read-only; mounted read-only".into());
                }
                continue;
            }
            let long = name.replace('_', "-");
            if let Some(why) = refuse_by_mount_option(&long) {
                return Err(format!("-o {name}: {why}"));
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()) && !matches!(long.as_str(), "help" | "version"))
                .ok_or_else(|| {
                    format!(
                        "unknown mount option {name:?}: -o takes regfs's long options without their -- \
                         (cache_dir=DIR, tag_ttl=SECONDS, allow_other, nonempty, ...; see regfs --help) and the \
                         generic ones (ro, nodev, nosuid, noexec, nofail, _netdev, defaults, x-*, ...)"
                    )
                })?;
            let mut expanded = format!("--{long}").into_bytes();
            match (arg.get_action().takes_values(), value.filter(|v| !v.is_empty())) {
                (true, Some(v)) => {
                    expanded.push(b'=');
                    expanded.extend_from_slice(v);
                }
                (true, None) => return Err(format!("-o {name} needs a value ({name}=...)")),
                (false, Some(_)) => return Err(format!("-o {name} takes no value")),
                (false, None) => {}
            }
            out.args.push(OsString::from_vec(expanded));
        }
    }
    Ok(out)
}

impl Cli {
    /// The mount's source in the mount table: the registry as given (`127.0.0.1:5000`,
    /// `https://r.example/`), so `mount -a` finds an fstab line's mount by its source and
    /// leaves it be; `regfs:<host>` where the text given holds a character a mount option list
    /// or the mount table would mangle (`,`, a space, a query) or is over 255 bytes.
    pub fn mount_source(&self, url: &reqwest::Url) -> String {
        let given = &self.registry;
        let safe = |c: char| c.is_ascii_alphanumeric() || ".-_:/[]".contains(c);
        if !given.is_empty() && given.len() <= 255 && given.chars().all(safe) {
            given.clone()
        } else {
            format!("regfs:{}", url.host_str().unwrap_or("registry"))
        }
    }
}

/// Split a `-o` list at the commas outside `"…"`, dropping the quotes and empty items.
fn split_mount_options(list: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let (mut items, mut item, mut quoted) = (Vec::new(), Vec::new(), false);
    for &b in list {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => items.push(std::mem::take(&mut item)),
            _ => item.push(b),
        }
    }
    if quoted {
        return Err("-o: a value's opening \" has no closing \" (unterminated quote)".into());
    }
    items.push(item);
    items.retain(|i| !i.is_empty());
    Ok(items)
}

/// `on` or `off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn decimal_sizes_say_decimals_are_the_problem() {
        let err = parse_size("1.5G").expect_err("decimals are refused");
        assert!(err.contains("decimals are not accepted") && err.contains("1536M"), "{err}");
        let err = parse_size("0.5k").expect_err("decimals are refused");
        assert!(err.contains("decimals are not accepted") && err.contains("512"), "{err}");
        // A decimal that is no whole number of the unit below: the advice is in bytes.
        let err = parse_size("1.0001M").expect_err("decimals are refused");
        assert!(err.contains("decimals are not accepted"), "{err}");
    }

    #[test]
    fn layer_url_patterns_are_regular_expressions_checked_on_the_command_line() {
        let c = Cli::try_parse_from([
            "regfs",
            "r",
            "/m",
            "--layer-url-allow",
            "^https://a/",
            "--layer-url-allow",
            "^https://b/",
            "--layer-url-deny",
            "secret",
        ])
        .expect("valid patterns");
        assert_eq!(c.layer_url_allow, ["^https://a/", "^https://b/"]);
        let rules = c.url_rules().expect("valid patterns");
        assert!(rules.check(&["https://b/x".into()]).is_ok());
        assert!(rules.check(&["https://b/secret".into()]).is_err());
        let err = Cli::try_parse_from(["regfs", "r", "/m", "--layer-url-allow", "(unclosed"]).expect_err("bad regex");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("(unclosed"), "{err}");
        let err = Cli::try_parse_from(["regfs", "r", "/m", "--layer-url-deny", "[z-a]"]).expect_err("bad regex");
        assert!(err.to_string().contains("[z-a]"), "{err}");
        // By default no URL is allowed.
        let c = Cli::try_parse_from(["regfs", "r", "/m"]).expect("valid");
        assert!(!c.url_rules().expect("no patterns").allows_any());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["regfs", "localhost:5000", "/mnt"]).expect("test input is valid");
        assert_eq!((c.tag_ttl, c.cache_size, c.foreground), (60, 10 << 30, false));
        assert!(Cli::try_parse_from(["regfs", "r", "/m", "--username", "u"]).is_err());
    }

    /// The views' bounds come from their options, in the core's configuration.
    #[test]
    fn the_views_bounds_are_options() {
        use crate::views::ViewsConfig;
        let args = ["regfs", "r", "/m", "--index-memory", "16M", "--layer-entries", "1000"];
        let c = Cli::try_parse_from(args.iter().chain(&["--layer-index-size", "8M", "--rootfs-layers", "4"]))
            .expect("test input is valid");
        let want = ViewsConfig {
            index_memory: 16 << 20,
            layer_entries: 1000,
            layer_index_size: 8 << 20,
            rootfs_layers: 4,
            ..ViewsConfig::default()
        };
        assert_eq!(c.fs_config().views, want);
        assert!(Cli::try_parse_from(["regfs", "r", "/m", "--layer-entries", "0"]).is_err(), "a bound of 0 is refused");
        assert_eq!(c.fs_config().ahead_files, 32, "reading ahead by default");
        let off = Cli::try_parse_from(["regfs", "r", "/m", "--read-ahead-files", "0"]).expect("0 is off");
        assert_eq!(off.fs_config().ahead_files, 0);
        assert!(c.fs_config().views.lazy.enabled, "lazy layers are read by chunks by default");
        let whole = Cli::try_parse_from(["regfs", "r", "/m", "--lazy", "off"]).expect("--lazy off");
        assert!(!whole.fs_config().views.lazy.enabled);
        assert!(!c.fs_config().views.lazy.verify_whole, "no background download by default");
        let verify = Cli::try_parse_from(["regfs", "r", "/m", "--lazy-verify"]).expect("--lazy-verify");
        assert!(verify.fs_config().views.lazy.verify_whole);
        assert!(Cli::try_parse_from(["regfs", "r", "/m", "--lazy", "maybe"]).is_err());
        let one = Cli::try_parse_from(["regfs", "r", "/m", "--parallel-ranges", "1"]).expect("--parallel-ranges 1");
        assert_eq!(one.store_config().download.ranges_at_once, 1);
        assert!(Cli::try_parse_from(["regfs", "r", "/m", "--parallel-ranges", "0"]).is_err());
    }

    #[test]
    fn platform_is_parsed_normalised_and_refused_with_the_form_to_write() {
        let c = Cli::try_parse_from(["regfs", "r", "/m", "--platform", "linux/aarch64"]).expect("a platform");
        assert_eq!(c.fs_config().platform.to_string(), "linux/arm64");
        let err = Cli::try_parse_from(["regfs", "r", "/m", "--platform", "arm64"]).expect_err("no OS").to_string();
        assert!(err.contains("os/arch[/variant]"), "{err}");
    }

    /// What the command line builds when no option is given is each layer's own default.
    #[test]
    fn the_defaults_of_the_command_line_are_each_layers_default() {
        let c = Cli::try_parse_from(["regfs", "localhost:5000", "/mnt"]).expect("test input is valid");
        assert_eq!(c.store_config(), StoreConfig::default());
        assert_eq!(c.fs_config(), FsConfig::default());
        assert_eq!(c.mount_config(), MountConfig::default());
        assert_eq!(c.http_options(None, Vec::new()), Options::default());
    }

    /// No open is the default and `--no-open` says so; `--open` turns it off, and the two
    /// together are refused rather than one silently winning.
    #[test]
    fn open_turns_off_the_default_no_open() {
        let parse = |extra: &[&str]| {
            let args = ["regfs", "r", "/m"].iter().chain(extra).copied().collect::<Vec<_>>();
            Cli::try_parse_from(args).map(|c| c.mount_config().no_open)
        };
        assert!(parse(&[]).expect("valid"));
        assert!(parse(&["--no-open"]).expect("valid"));
        assert!(!parse(&["--open"]).expect("valid"));
        assert!(parse(&["--open", "--no-open"]).is_err());
        let via_o = expand(&["regfs", "r", "/m", "-o", "open"]).expect("valid");
        assert_eq!(strings(&via_o), ["regfs", "r", "/m", "--open"]);
    }

    // `-o` mount options.

    fn expand(args: &[&str]) -> Result<Expanded, String> {
        expand_mount_options(args.iter().map(std::ffi::OsString::from))
    }

    fn strings(e: &Expanded) -> Vec<String> {
        e.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// What mount.fuse3 runs (`regfs SRC MNT -o opts`) becomes the command line's own options:
    /// `name=value` → `--name=value` (`_` for `-`), a bare name → `--name`; the generic mount
    /// options are dropped; quoted values keep their commas; secrets, `--foreground` and unknown
    /// names are refused, naming the option but never a value.
    #[test]
    fn mount_options_become_command_line_options() {
        let table: &[(&[&str], &[&str])] = &[
            (
                &["regfs", "r:5000", "/m", "-o", "ro,cache_dir=/x,tag_ttl=5,allow_other,dev,suid"],
                &["regfs", "r:5000", "/m", "--cache-dir=/x", "--tag-ttl=5", "--allow-other"],
            ),
            (
                &["regfs", "-o", "x-systemd.automount,_netdev,nofail,noauto,defaults,rw", "r", "/m"],
                &["regfs", "r", "/m"],
            ),
            (&["regfs", "r", "/m", "-ocache-size=2G,nonempty"], &["regfs", "r", "/m", "--cache-size=2G", "--nonempty"]),
            (
                &["regfs", "r", "/m", "-o", "cache_dir=\"/a,b\",no_passthrough,no_open"],
                &["regfs", "r", "/m", "--cache-dir=/a,b", "--no-passthrough", "--no-open"],
            ),
            (&["regfs", "r", "/m", "-o", "ro", "-o", "timeout=3"], &["regfs", "r", "/m", "--timeout=3"]),
            (&["regfs", "r", "/m", "--tag-ttl", "5"], &["regfs", "r", "/m", "--tag-ttl", "5"]),
            // After `--`, nothing is an option.
            (&["regfs", "--", "r", "-o"], &["regfs", "--", "r", "-o"]),
        ];
        for (given, want) in table {
            let got = expand(given).unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(strings(&got), *want, "{given:?}");
        }
        // What the expansion gives, clap takes.
        let got = expand(&["regfs", "r:5000", "/m", "-o", "ro,cache_dir=/x,tag_ttl=5,allow_other,nonempty,dev,suid"])
            .expect("valid");
        let cli = Cli::try_parse_from(&got.args).expect("clap takes the expansion");
        assert_eq!(cli.cache_dir.as_deref(), Some(std::path::Path::new("/x")));
        assert_eq!((cli.tag_ttl, cli.allow_other, cli.nonempty, cli.foreground), (5, true, true, false));
        // `rw` is accepted, and said: regfs is read-only.
        let got = expand(&["regfs", "r", "/m", "-o", "rw,dev,suid"]).expect("rw is accepted");
        assert_eq!(strings(&got), ["regfs", "r", "/m"]);
        assert!(got.notes.iter().any(|n| n.contains("rw") && n.contains("read-only")), "{:?}", got.notes);

        let refused: &[(&[&str], &[&str], &str)] = &[
            (&["regfs", "r", "/m", "-o", "password=hunter2"], &["password", "--auth-file"], "hunter2"),
            (&["regfs", "r", "/m", "-o", "ro,registry_password=s3cr3t"], &["registry_password"], "s3cr3t"),
            (&["regfs", "r", "/m", "-o", "token=abc123"], &["token"], "abc123"),
            (&["regfs", "r", "/m", "-o", "username=alice"], &["username", "--auth-file"], "alice"),
            (&["regfs", "r", "/m", "-o", "password_stdin"], &["password_stdin"], "@"),
            (&["regfs", "r", "/m", "-o", "foreground"], &["foreground", "-f"], "@"),
            (&["regfs", "r", "/m", "-o", "colour=blue"], &["unknown mount option", "colour"], "blue"),
            (&["regfs", "r", "/m", "-o", "fsname=x"], &["unknown mount option", "fsname"], "@"),
            (&["regfs", "r", "/m", "-o", "allow_other=yes"], &["allow_other", "takes no value"], "@"),
            (&["regfs", "r", "/m", "-o", "cache_dir"], &["cache_dir", "needs a value"], "@"),
            (&["regfs", "r", "/m", "-o", "cache_dir="], &["cache_dir", "needs a value"], "@"),
            (&["regfs", "r", "/m", "-o", "cache_dir=\"/a"], &["unterminated"], "@"),
            (&["regfs", "r", "/m", "-o"], &["-o", "needs"], "@"),
            (&["regfs", "r", "/m", "-o", "help"], &["unknown mount option", "help"], "@"),
        ];
        for (given, says, never) in refused {
            let err = match expand(given) {
                Ok(e) => panic!("{given:?} was accepted: {:?}", strings(&e)),
                Err(err) => err,
            };
            for s in *says {
                assert!(err.contains(s), "{given:?}: {err:?} does not say {s:?}");
            }
            assert!(!err.contains(never), "{given:?}: {err:?} echoes {never:?}");
        }
    }

    /// The mount's source is the registry as given, so `mount -a` and findmnt match it with
    /// the fstab line; where that would not survive a mount option list, `regfs:<host>`.
    #[test]
    fn the_mount_source_is_the_registry_as_given_when_it_can_be() {
        let source = |given: &str| {
            let cli = Cli::try_parse_from(["regfs", given, "/m"]).expect("valid");
            let url = crate::registry::endpoint::parse(given).expect("a valid registry");
            cli.mount_source(&url)
        };
        for given in ["127.0.0.1:5000", "localhost:5000", "ghcr.io", "https://registry.example.com:8443/", "[::1]:5000"]
        {
            assert_eq!(source(given), given);
        }
        assert_eq!(source("https://r.example/x?a,b=c"), "regfs:r.example");
        assert_eq!(source("r.example/a b"), "regfs:r.example");
        assert_eq!(source(&format!("{}.example", "a".repeat(300))), format!("regfs:{}.example", "a".repeat(300)));
    }

    /// doc/CONFIGURATION.md lists every option of the command line and every environment variable
    /// regfs's own code reads (the ones its libraries read are listed there by hand): a new option
    /// or variable without its line fails here.
    #[test]
    fn every_option_and_environment_variable_is_documented() {
        use clap::CommandFactory;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("doc/CONFIGURATION.md")).expect("doc/CONFIGURATION.md is readable");
        let mut missing = Vec::new();
        for arg in Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                if long != "help" && long != "version" && !doc.contains(&format!("--{long}")) {
                    missing.push(format!("option --{long}"));
                }
            }
        }
        let mut files = vec![root.join("src")];
        let mut seen = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                // The test kit and the test-only binaries are not regfs.
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name == "testkit" || name == "bin" {
                    continue;
                }
                for entry in std::fs::read_dir(&path).expect("src/ is readable") {
                    files.push(entry.expect("src/ is readable").path());
                }
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            for marker in ["var_os(\"", "var(\""] {
                for (at, _) in text.match_indices(marker) {
                    let rest = &text[at + marker.len()..];
                    let name = &rest[..rest.find('"').unwrap_or(0)];
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    {
                        continue;
                    }
                    seen += 1;
                    if !doc.contains(&format!("`{name}`")) {
                        missing.push(format!("environment variable {name} ({})", path.display()));
                    }
                }
            }
        }
        assert!(seen >= 5, "the scan found the variables regfs reads ({seen})");
        for by_hand in ["RUST_LOG", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "PATH"] {
            if !doc.contains(&format!("`{by_hand}`")) {
                missing.push(format!("environment variable {by_hand} (read by a library)"));
            }
        }
        assert!(missing.is_empty(), "doc/CONFIGURATION.md does not mention: {missing:#?}");
    }
}
