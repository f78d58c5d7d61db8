//! `regfs REGISTRY MOUNTPOINT`: parse options, detach (unless --foreground; `daemon.rs`), mount,
//! serve.

use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use regfs::cli::Cli;
use regfs::daemon::{
    Detached, check_empty, check_mountpoint, detach, init_logging, raise_nofile_limit, unmount_on_signals,
};
use regfs::fs::{Fs, FsConfig};
use regfs::fuse::FuseAdapter;
use regfs::policy::{Attachments, Gate, Policy, Setup};
use regfs::registry::credentials::{self, Credentials, Login, Secret};
use regfs::registry::foreign::{Foreign, UrlRules};
use regfs::registry::http::{HttpClient, RetryPolicy};
use regfs::registry::mirror_config::{self, ConfEnv};
use regfs::registry::mirrors::{self, Mirror, MirrorConfig, MirrorGroup, MirrorSpec, Mirrored};
use regfs::registry::{Client as _, endpoint};
use regfs::store::Store;
use regfs::store::dir::CacheDir;

fn main() -> ExitCode {
    let raised = raise_nofile_limit();
    // `-o name[=value],...` (as mount(8) runs a helper) becomes regfs's own options first.
    let expanded = match regfs::cli::expand_mount_options(std::env::args_os()) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("regfs: {msg}");
            return ExitCode::from(2);
        }
    };
    let mut cli = Cli::parse_from(&expanded.args);
    // Paths are made absolute now: the background process leaves the caller's directory.
    let mount_lock = match absolute_paths(&mut cli) {
        Ok(lock) => lock,
        Err(msg) => {
            eprintln!("regfs: {msg}");
            return ExitCode::from(2);
        }
    };
    // Everything that can be wrong with the command line is found before detaching, so the user
    // sees it on the terminal.
    let prepared = match prepare(&cli) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("regfs: {msg}");
            return ExitCode::from(2);
        }
    };
    let ready = if cli.foreground {
        init_logging(None);
        None
    } else {
        match detach(&cli, &prepared.cache) {
            Ok(Detached::Parent(code)) => return code,
            Ok(Detached::Child(ready)) => Some(ready),
            Err(msg) => {
                eprintln!("regfs: {msg}");
                return ExitCode::FAILURE;
            }
        }
    };
    for note in &expanded.notes {
        log::info!("{note}");
    }
    match serve(&cli, prepared, ready, raised, mount_lock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            log::error!("{msg}");
            eprintln!("regfs: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Make the paths absolute and check the mountpoint; the lock on the mountpoint, held until
/// this process has mounted there (see [`lock_mountpoint`]).
fn absolute_paths(cli: &mut Cli) -> Result<Option<OwnedFd>, String> {
    cli.mountpoint =
        std::fs::canonicalize(&cli.mountpoint).map_err(|e| format!("{}: {e}", cli.mountpoint.display()))?;
    if !cli.mountpoint.is_dir() {
        return Err(format!("{}: not a directory", cli.mountpoint.display()));
    }
    let lock = lock_mountpoint(&cli.mountpoint, cli.mount_config().lock_wait);
    check_mountpoint(&cli.mountpoint)?;
    if !cli.nonempty {
        check_empty(&cli.mountpoint)?;
    }
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    cli.cache_dir = Some(absolute(&cli.cache_dir())?);
    if let Some(f) = &cli.log_file {
        cli.log_file = Some(absolute(f)?);
    }
    if let Some(f) = &cli.auth_file {
        cli.auth_file = Some(absolute(f)?);
    }
    if let Some(f) = &cli.ca_cert {
        cli.ca_cert = Some(absolute(f)?);
    }
    if let Some(d) = &cli.hosts_dir {
        cli.hosts_dir = Some(absolute(d)?);
    }
    Ok(lock)
}

/// An exclusive `flock` on the mountpoint directory, taken before it is checked and held until
/// this process has mounted there (or failed). Two regfs started at once on one directory would
/// otherwise both find it unmounted and stack two mounts: the second now waits for the first
/// and then finds its mount (`two_regfs_racing_for_one_fresh_mountpoint_do_not_stack`). Once a
/// mount covers the directory, opening the path reaches the mount's root instead, so the lock
/// is no longer there to wait for. Anyone who can read the directory can lock it too, so the
/// wait is bounded (`wait`: `MountConfig::lock_wait`, 60 s): past it regfs goes on without the
/// lock, as it would where the directory cannot be opened for reading (`None`).
fn lock_mountpoint(mountpoint: &Path, wait: Duration) -> Option<OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(mountpoint, flags, Mode::empty()).ok()?;
    let started = std::time::Instant::now();
    loop {
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Some(fd),
            Err(rustix::io::Errno::WOULDBLOCK) if started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                eprintln!(
                    "regfs: {}: still locked by another process after {} s; going on without waiting",
                    mountpoint.display(),
                    wait.as_secs()
                );
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Mirrors for the repositories under `repos` ("": all); `blocked` refuses them.
struct PreparedGroup {
    repos: String,
    blocked: bool,
    /// Each with its credentials and the CA certificates (PEM) hosts.toml names for it.
    mirrors: Vec<(MirrorSpec, Option<Login>, Vec<u8>)>,
}

struct Prepared {
    url: reqwest::Url,
    login: Option<Login>,
    /// The mirrors by repositories, in order, each with the credentials of its own host.
    mirrors: Vec<PreparedGroup>,
    ca_certs: Vec<u8>,
    /// Opened (and checked) now, so that a cache directory regfs will not use is reported on
    /// the terminal; the store uses this very directory after detaching, whatever the path
    /// names by then (`the_cache_directory_checked_before_detaching_is_the_one_used`).
    cache: CacheDir,
    /// `--layer-url-allow`, `--layer-url-deny`.
    url_rules: UrlRules,
    /// The signature policy and registries.d, read (keys and all) before mounting.
    policy: Option<(Policy, Attachments)>,
}

fn prepare(cli: &Cli) -> Result<Prepared, String> {
    let url = endpoint::parse(&cli.registry).map_err(|e| e.tell())?;
    let host = mirrors::host_of(&url);
    let env = credentials::Env::from_process();
    let timeout = Duration::from_secs(cli.helper_timeout.max(1));
    let lookup = |host: &str| {
        credentials::lookup(host, cli.auth_file.as_deref(), &env, timeout).map_err(|e| {
            if cli.auth_file.is_some() {
                format!("--auth-file {}", e.tell())
            } else {
                format!("credentials: {}", e.tell())
            }
        })
    };
    let login = if let Some(username) = &cli.username {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            return Err("--password-stdin: stdin gave an empty password".into());
        }
        Some(Login::fixed(Secret::Basic(Credentials { username: username.clone(), password })))
    } else {
        // Helpers run now, before detaching: what goes wrong is said on the terminal.
        lookup(&host)?
    };
    // A mirror gets the credentials of its own host, never the registry's.
    let mut mirrors = Vec::new();
    for (repos, blocked, specs) in mirror_groups(cli, &host)? {
        let mut group = PreparedGroup { repos, blocked, mirrors: Vec::new() };
        for spec in specs {
            let login = lookup(&spec.host())?;
            let mut ca = Vec::new();
            for f in &spec.ca {
                ca.extend(std::fs::read(f).map_err(|e| format!("CA of mirror {}: {}: {e}", spec.url, f.display()))?);
                ca.push(b'\n');
            }
            group.mirrors.push((spec, login, ca));
        }
        mirrors.push(group);
    }
    let ca_certs = match &cli.ca_cert {
        Some(f) => std::fs::read(f).map_err(|e| format!("--ca-cert {}: {e}", f.display()))?,
        None => Vec::new(),
    };
    let mut cache = CacheDir::open_root(&cli.cache_dir()).map_err(|e| format!("--cache-dir: {}", e.tell()))?;
    // Taken now, before detaching: a second regfs on this directory is refused on its own
    // terminal, and writes nothing into the log of the one that has it.
    cache.lock().map_err(|e| format!("--cache-dir: {}", e.tell()))?;
    let url_rules = cli.url_rules().map_err(|e| e.tell())?;
    let policy = signature_policy(cli)?;
    Ok(Prepared { url, login, mirrors, ca_certs, cache, url_rules, policy })
}

/// The policy to enforce and where attachments are read, read now (keys too): a bad file is
/// an error on the terminal, before anything is mounted.
fn signature_policy(cli: &Cli) -> Result<Option<(Policy, Attachments)>, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let Some(file) = cli.policy_file(home.as_deref()) else {
        if cli.registries_d.is_some() {
            log::warn!("--registries-d without --policy or --signature-policy: no signature is checked");
        }
        return Ok(None);
    };
    let policy = Policy::load(&file).map_err(|e| format!("signature policy: {e}"))?;
    let dir = cli.registries_d_dir(home.as_deref());
    let attachments = Attachments::load(&dir).map_err(|e| format!("registries.d: {e}"))?;
    Ok(Some((policy, attachments)))
}

/// The mirrors to read from, by repositories, in order: `--mirror` as given if any; else those
/// registries.conf gives the registry `host` (unless `--no-mirror-config`).
type Groups = Vec<(String, bool, Vec<MirrorSpec>)>;
fn mirror_groups(cli: &Cli, host: &str) -> Result<Groups, String> {
    if !cli.mirrors.is_empty() {
        let specs: Result<Vec<MirrorSpec>, String> =
            cli.mirrors.iter().map(|m| MirrorSpec::parse(m, !cli.mirror_digest_only).map_err(|e| e.tell())).collect();
        return Ok(vec![(String::new(), false, specs?)]);
    }
    if cli.no_mirror_config {
        return Ok(Vec::new());
    }
    // registries.conf names Docker Hub docker.io.
    let host = if host == "registry-1.docker.io" { "docker.io" } else { host };
    let files = mirror_config::registries_conf_files(&ConfEnv::from_process());
    let plan = mirror_config::plan(&files, host).map_err(|e| format!("registries.conf: {}", e.tell()))?;
    let mut groups = Vec::new();
    for g in plan.groups {
        if g.repos.is_empty() && g.blocked {
            return Err(format!("{host} is blocked in {} (blocked = true)", g.from.display()));
        }
        if !g.mirrors.is_empty() || g.blocked {
            log::info!("{}: {} mirror(s) for {host}/{}", g.from.display(), g.mirrors.len(), g.repos);
        }
        groups.push((g.repos, g.blocked, g.mirrors));
    }
    if groups.iter().any(|(_, blocked, mirrors)| *blocked || !mirrors.is_empty()) {
        return Ok(groups);
    }
    // Else containerd's hosts.toml.
    let dir = cli.hosts_dir.clone().unwrap_or_else(|| "/etc/containerd/certs.d".into());
    match mirror_config::hosts_toml(&dir, host).map_err(|e| format!("--hosts-dir: {}", e.tell()))? {
        Some((file, specs)) => {
            log::info!("{}: {} mirror(s) for {host}", file.display(), specs.len());
            Ok(vec![(String::new(), false, specs)])
        }
        None => Ok(Vec::new()),
    }
}

fn serve(
    cli: &Cli,
    prepared: Prepared,
    ready: Option<std::fs::File>,
    raised: std::io::Result<u64>,
    mount_lock: Option<OwnedFd>,
) -> Result<(), String> {
    let report = |ready: Option<std::fs::File>, msg: &str| {
        if let Some(mut r) = ready {
            let _ = r.write_all(msg.as_bytes());
        }
    };
    let result = (|| {
        if let Some(login) = &prepared.login {
            log::info!("credentials for {} from {}", prepared.url, login.from());
        }
        let mut groups = Vec::new();
        for group in prepared.mirrors {
            let mut mirrors = Vec::new();
            for (spec, login, ca) in group.mirrors {
                // One attempt per mirror: the registry behind it is the retry (`registry/mirrors.rs`).
                let mut options = cli.http_options(login, [prepared.ca_certs.as_slice(), &ca].concat());
                options.retry = RetryPolicy { retries: 0, ..options.retry };
                let client =
                    HttpClient::new(spec.url.clone(), options).map_err(|e| format!("mirror {}: {e}", spec.url))?;
                let asks = if spec.resolve { "tags and digests" } else { "digests only" };
                log::info!("mirror {} for /{} ({asks})", spec.url, group.repos);
                mirrors.push(Mirror {
                    name: spec.url.to_string(),
                    client: Box::new(client),
                    resolve: spec.resolve,
                    path: spec.path,
                });
            }
            groups.push(MirrorGroup { repos: group.repos, blocked: group.blocked, mirrors });
        }
        let options = cli.http_options(prepared.login, prepared.ca_certs);
        let foreign = Foreign::new(prepared.url_rules, &options).map_err(|e| e.to_string())?;
        let client = HttpClient::new(prepared.url.clone(), options).map_err(|e| e.to_string())?;
        client.ping().map_err(|e| format!("{}: {}", prepared.url, e.tell()))?;
        let client: Arc<dyn regfs::registry::Client> = if groups.is_empty() {
            Arc::new(client)
        } else {
            Arc::new(Mirrored::grouped(Box::new(client), groups, MirrorConfig::default()))
        };
        let store = Store::in_dir(client, prepared.cache, &cli.store_config()).map_err(|e| e.to_string())?;
        let store = Arc::new(store.with_foreign(foreign));
        let mut fs_config = FsConfig { docker_hub: endpoint::is_docker_hub(&prepared.url), ..cli.fs_config() };
        let core = match prepared.policy {
            None => Fs::new(Arc::clone(&store), fs_config),
            Some((policy, attachments)) => {
                // References name Docker Hub docker.io, as policies and signatures do.
                let host = if endpoint::is_docker_hub(&prepared.url) {
                    "docker.io".to_string()
                } else {
                    mirrors::host_of(&prepared.url)
                };
                log::info!(
                    "signature policy {} enforced for {host} (registries.d: {} file(s))",
                    policy.file.display(),
                    attachments.files.len()
                );
                // A verdict may change: the kernel keeps a manifest's names no longer than the gate
                // keeps a verdict (a third of tag_ttl; `policy`'s "The cache").
                fs_config.immutable_ttl = fs_config.immutable_ttl.min(fs_config.tag_ttl / 3);
                let gate = Gate::new(Arc::clone(&store), Setup { policy: Some(policy), attachments, host });
                Fs::gated(Arc::clone(&store), fs_config, Arc::new(gate))
            }
        };
        let core = Arc::new(core);
        let mount = cli.mount_config();
        let config = mount.session(&cli.mount_source(&prepared.url));
        let adapter = FuseAdapter::new(core, mount);
        let canceller = adapter.canceller();
        let ahead = adapter.read_ahead();
        fuser::Session::new(adapter, &cli.mountpoint, &config)
            .map(|session| {
                ahead.attach(session.notifier());
                (session, store, canceller)
            })
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (a mount by a user other than root needs /dev/fuse open to that user and fusermount3, from the fuse3 package)"
                } else {
                    ""
                };
                format!("mounting {} on {}: {e}{hint}", prepared.url, cli.mountpoint.display())
            })
    })();
    // Mounted (or failed): a second regfs waiting on the mountpoint may look now.
    drop(mount_lock);
    let (mut session, store, canceller) = match result {
        Ok(s) => s,
        Err(msg) => {
            report(ready, &msg);
            return Err(msg);
        }
    };
    match raised {
        Ok(n) => log::debug!("open file limit: {n} descriptors"),
        Err(e) => log::warn!("could not raise the open file limit to its hard limit: {e}"),
    }
    unmount_on_signals(session.unmount_callable(), canceller.clone(), &cli.mountpoint)?;
    canceller.watch_mount(&cli.mountpoint);
    log::info!("regfs: {} mounted on {}", prepared.url, cli.mountpoint.display());
    report(ready, "ok");
    let served = session.run().map_err(|e| format!("serving {}: {e}", cli.mountpoint.display()));
    // Unmounted by someone else (`umount`): downloads still running stop too.
    canceller.cancel();
    served?;
    log::info!("regfs: {} unmounted; {}", cli.mountpoint.display(), store.summary());
    Ok(())
}
