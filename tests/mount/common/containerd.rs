//! A second oracle for `rootfs/`: what a real containerd (Debian's `containerd`, 1.6) makes of
//! an image. The test starts its own containerd on a private root, state and socket in a temp
//! dir (no CRI, no other snapshotter than overlayfs and native), pulls the image from the test
//! registry with `ctr images pull --plain-http` (containerd's unpacker applies each layer with
//! `archive.Apply`; overlayfs, the default snapshotter, applies each into its own upper
//! directory), then `ctr images mount`s the image's rootfs read-only and walks it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running containerd; stopped (and its state removed) on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    sock: PathBuf,
    child: Option<Child>,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        // ctr's progress bars go to stdout; its error is the last line of stderr.
        let err = String::from_utf8_lossy(&o.stderr);
        Err(format!("{what}: {}", err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed")))
    }
}

impl Containerd {
    /// Start one and wait until it answers `ctr version`.
    pub fn start() -> Result<Containerd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path();
        let sock = p.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
             \"io.containerd.snapshotter.v1.aufs\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = p.join("root").display(),
            state = p.join("state").display(),
            sock = sock.display(),
        );
        std::fs::write(p.join("config.toml"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(p.join("containerd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(p.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        crate::common::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("starting containerd: {e}"))?;
        let c = Containerd { dir, sock, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.ctr(&["version"]).is_err() {
            if Instant::now() > deadline {
                return Err(format!("containerd did not start: {}", c.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(c)
    }

    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock).args(["--namespace", "regfs"]).args(args);
        run(&mut cmd, &format!("ctr {}", args.join(" ")))
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Pull `repo:tag` from the registry at `registry_url` (plain http) and unpack it; then call
    /// `f` on its rootfs, mounted read-only, and unmount it. containerd's error when the pull or
    /// the unpack fails (an image whose layers it cannot apply).
    pub fn with_rootfs<R>(
        &self,
        registry_url: &str,
        repo: &str,
        tag: &str,
        f: impl FnOnce(&Path) -> R,
    ) -> Result<R, String> {
        let host = registry_url.trim_start_matches("http://");
        let image = format!("{host}/{repo}:{tag}");
        self.ctr(&["images", "pull", "--plain-http", &image])?;
        let target = self.dir.path().join("mnt").join(repo.replace('/', "_"));
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let t = target.to_string_lossy().into_owned();
        self.ctr(&["images", "mount", &image, &t])?;
        let r = f(&target);
        self.ctr(&["images", "unmount", &t])?;
        Ok(r)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
