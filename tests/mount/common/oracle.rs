//! The oracle for `rootfs/`: what umoci 0.4.7 (Debian) unpacks from the same image.
//!
//! `skopeo copy docker://HOST/repo:ref oci:DIR:tag` (index platforms by their digest; schema1 is
//! converted by skopeo, which computes the diff_ids; zstd layers are recompressed to gzip on the
//! way, because umoci 0.4.7 refuses `tar+zstd`: "blob is not correct mediatype"), then
//! `umoci raw unpack --image DIR:tag ROOTFS` as root, so owners, devices and
//! `security.capability` are applied. `raw unpack` writes the rootfs only: the runtime
//! `config.json` that `umoci unpack` generates needs an `os` schema1 configs lack.
//! umoci checks every layer's diff_id (a mismatch fails the unpack).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// An unpacked image: `rootfs` lives as long as this value.
pub struct Unpacked {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
    /// When the unpack started (seconds since the epoch): directory mtimes at or after it were
    /// stamped by umoci, not taken from the image.
    pub started: i64,
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("{what}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Unpack `repo` at `reference` (a tag, or `sha256:…`) from the registry at `registry_url` with
/// umoci; umoci's (or skopeo's) error when it refuses the image.
pub fn umoci(registry_url: &str, repo: &str, reference: &str) -> Result<Unpacked, String> {
    let host = registry_url.trim_start_matches("http://");
    let sep = if reference.contains(':') { "@" } else { ":" };
    let src = format!("docker://{host}/{repo}{sep}{reference}");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false"]).arg(&src), "skopeo inspect")?;
    let mut copy = Command::new("skopeo");
    copy.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if raw.contains("zstd") {
        copy.args(["--dest-compress", "--dest-compress-format=gzip"]);
    }
    let image = format!("{}:img", dir.path().join("oci").display());
    run(copy.arg(&src).arg(format!("oci:{image}")), &format!("skopeo copy {src}"))?;
    let rootfs = dir.path().join("rootfs");
    let started = now();
    run(
        Command::new("umoci").args(["raw", "unpack", "--image"]).arg(&image).arg(&rootfs),
        &format!("umoci raw unpack {repo}{sep}{reference}"),
    )?;
    Ok(Unpacked { dir, rootfs, started })
}
