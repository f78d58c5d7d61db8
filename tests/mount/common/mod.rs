//! The harness of the mount tests: a real registry, real mounts, real HTTP, and the oracles
//! they are checked against (`oracle`: umoci; `containerd`; `tree`: the walker and comparison of
//! file trees).

pub use regfs::testkit::front;
pub mod containerd;
pub mod oracle;
pub mod registry;
pub mod tree;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use registry::Registry;

/// Children die with the test process (not with the thread that started them: see `shared`).
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl in the child before exec, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

pub struct Shared {
    pub registry: Registry,
    pub fixtures: serde_json::Value,
}

/// One registry with the fixtures pushed, for every test of a test binary. It is started from
/// a thread that never ends, because PR_SET_PDEATHSIG fires when the starting *thread* exits.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        start_forever(|| {
            let registry = Registry::start(None);
            let fixtures = registry.push_fixtures(None);
            registry.corrupt_blob(fixtures["corrupt"]["layer"].as_str().expect("corrupt layer"));
            Shared { registry, fixtures }
        })
    })
}

/// Run `f` on a thread that then parks forever, and return its result.
pub fn start_forever<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("the starter thread failed")
}

/// A real regfs mount, in the foreground, killed and unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    _cache_dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: PathBuf,
}

pub fn regfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_regfs")
}

impl Mount {
    pub fn start(registry: &str, args: &[&str]) -> Mount {
        let cache = tempfile::tempdir().expect("cache");
        let cache_path = cache.path().to_path_buf();
        Mount::launch_in(registry, args, cache_path, Some(cache), None)
    }

    /// A mount on a cache directory the test chooses (to restart on it), reading `stdin`.
    pub fn start_with_cache(registry: &str, args: &[&str], cache: PathBuf, stdin: Option<&str>) -> Mount {
        Mount::launch_in(registry, args, cache, None, stdin)
    }

    /// A mount that logs in as `user`, the password given on stdin.
    pub fn start_as(registry: &str, user: &str, password: &str, cache: PathBuf) -> Mount {
        let input = format!("{password}\n");
        Mount::start_with_cache(registry, &["--username", user, "--password-stdin"], cache, Some(&input))
    }

    fn launch_in(
        registry: &str,
        args: &[&str],
        cache: PathBuf,
        keep: Option<tempfile::TempDir>,
        stdin: Option<&str>,
    ) -> Mount {
        let log = cache.with_extension("log");
        let mut cache_args = vec!["--cache-dir".to_string(), cache.to_string_lossy().into_owned()];
        cache_args.extend(args.iter().map(|a| a.to_string()));
        let env = [("HOME".to_string(), cache.to_string_lossy().into_owned())]; // no stray ~/.docker
        Mount::launch(registry, &cache_args, &env, stdin, cache, log, keep, ".tmp")
    }

    /// A mount on a directory whose name starts with `prefix` (spaces, newlines and all).
    pub fn start_named(registry: &str, args: &[&str], prefix: &str) -> Mount {
        let cache = tempfile::tempdir().expect("cache");
        let cache_path = cache.path().to_path_buf();
        let log = cache_path.with_extension("log");
        let mut all = vec!["--cache-dir".to_string(), cache_path.to_string_lossy().into_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        let env = [("HOME".to_string(), cache_path.to_string_lossy().into_owned())];
        Mount::launch(registry, &all, &env, None, cache_path, log, Some(cache), prefix)
    }

    /// Mount with exactly these arguments and extra environment (no `--cache-dir` added), for
    /// tests of the defaults; `cache` is where the test expects regfs to put its cache.
    pub fn start_env(registry: &str, args: &[&str], env: &[(&str, &Path)], cache: PathBuf, log: PathBuf) -> Mount {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned())).collect();
        Mount::launch(registry, &args, &env, None, cache, log, None, ".tmp")
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        registry: &str,
        args: &[String],
        env: &[(String, String)],
        stdin: Option<&str>,
        cache: PathBuf,
        log: PathBuf,
        keep: Option<tempfile::TempDir>,
        prefix: &str,
    ) -> Mount {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("mountpoint");
        let logf = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(regfs_bin());
        cmd.arg(registry)
            .arg(dir.path())
            .arg("--foreground")
            .args(args)
            .env("RUST_LOG", "regfs=debug")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(logf)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawning regfs");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = pipe.write_all(input.as_bytes());
        }
        let m = Mount { dir, cache, _cache_dir: keep, child: Some(child), log };
        m.wait_mounted();
        m
    }

    pub fn wait_mounted(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !is_mounted(self.dir.path()) {
            assert!(Instant::now() < deadline, "regfs did not mount:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a shell command inside the mount.
    pub fn sh(&self, cmd: &str) -> Output {
        sh_in(self.dir.path(), cmd)
    }

    /// Unmount and wait for the process; its exit status.
    pub fn unmount(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("umount").arg(self.dir.path()).stderr(Stdio::null()).status();
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit by itself (after a signal); its status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Unmounts a mount made in background mode when dropped, so a failing test leaves none behind.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    regfs::mountinfo::is_mount_point(path).unwrap_or(false)
}

pub fn sh_in(dir: &Path, cmd: &str) -> Output {
    Command::new("bash").arg("-c").arg(cmd).current_dir(dir).output().expect("bash")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_string()
}

/// `sha256sum` of a file, as `sha256:<hex>` (an oracle independent of regfs's own hashing).
pub fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(o.status.success(), "sha256sum {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    format!("sha256:{}", String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or(""))
}

/// The manifest as skopeo (an independent client) gets it.
pub fn skopeo_raw(registry_url: &str, repo: &str, reference: &str) -> Vec<u8> {
    let host = registry_url.trim_start_matches("http://");
    let sep = if reference.contains(':') { "@" } else { ":" };
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/{repo}{sep}{reference}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo inspect {repo}{sep}{reference}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// The fixture images of one kind.
pub fn images<'a>(fixtures: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    fixtures["images"].as_array().expect("images").iter().filter(|i| i["kind"] == kind).collect()
}

/// A string of the fixtures' JSON (a panic naming the value if it is not one).
pub fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The names in `dir`, sorted.
pub fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `sha256:<hex>` of `bytes`, hashed here (for bytes the test holds; `sha256sum` for files).
pub fn sha256_of(bytes: &[u8]) -> String {
    regfs::digest::Digest::of(regfs::digest::Algorithm::Sha256, bytes).to_string()
}

/// `MOUNT/.regfs/status.json`, parsed.
pub fn status_json(m: &Mount) -> serde_json::Value {
    let bytes = std::fs::read(m.path(".regfs/status.json")).expect("reading status.json");
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("status.json: {e}: {}", String::from_utf8_lossy(&bytes)))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 if the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
