//! The command line. Every option is documented in `doc/CONFIGURATION.md` too.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::fs::FsConfig;
use crate::fuse::MountConfig;
use crate::registry::credentials::Login;
use crate::registry::foreign::UrlRules;
use crate::registry::http::{Options, Progress, RetryPolicy};
use crate::store::{self, StoreConfig};

#[derive(Debug, Parser)]
#[command(
    name = "regfs",
    version,
    about = "Mount a container registry as a read-only directory; every byte served is checked against its digest.",
    after_help = "Layout: MOUNT/<repo>/tags/<tag> -> ../manifests/<digest>, MOUNT/<repo>/manifests/<digest>/ \
(manifest.json, config.json, layers/, one link per platform of an index), MOUNT/<repo>/blobs/<digest>.\n\
Unmount with `umount MOUNTPOINT` (root), `fusermount3 -u MOUNTPOINT`, or Ctrl-C / SIGTERM in --foreground.\n\
Logs: RUST_LOG=debug for more; in the background they go to --log-file."
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

    /// Seconds a tag list, the catalog or a tag's digest is trusted before asking again.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub tag_ttl: u64,

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

    /// Serve every read through regfs instead of letting the kernel read verified cache files directly (FUSE passthrough).
    #[arg(long)]
    pub no_passthrough: bool,

    /// Threads reading requests from the kernel (operations that wait on the network get threads of their own).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub fuse_threads: usize,
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
            ..StoreConfig::default()
        }
    }

    /// The core's configuration: `--tag-ttl`, the rest default.
    pub fn fs_config(&self) -> FsConfig {
        FsConfig { tag_ttl: Duration::from_secs(self.tag_ttl), ..FsConfig::default() }
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

    /// The mount's configuration: `--fuse-threads`, `--allow-other`, `--no-passthrough`.
    pub fn mount_config(&self) -> MountConfig {
        MountConfig {
            fuse_threads: self.fuse_threads,
            allow_other: self.allow_other,
            passthrough: !self.no_passthrough,
            ..MountConfig::default()
        }
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

    /// What the command line builds when no option is given is each layer's own default.
    #[test]
    fn the_defaults_of_the_command_line_are_each_layers_default() {
        let c = Cli::try_parse_from(["regfs", "localhost:5000", "/mnt"]).expect("test input is valid");
        assert_eq!(c.store_config(), StoreConfig::default());
        assert_eq!(c.fs_config(), FsConfig::default());
        assert_eq!(c.mount_config(), MountConfig::default());
        assert_eq!(c.http_options(None, Vec::new()), Options::default());
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
