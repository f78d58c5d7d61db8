//! `--no-open` (the default) on real mounts of a real registry: the kernel sends no OPEN or
//! RELEASE of files (`FUSE_NO_OPEN_SUPPORT`), and reads come by inode with handle 0. Every byte
//! read is what a mount with `--open` reads; `.regfs/status` still shows the status as of each `cat`,
//! whole; and an error found when the content is first needed (a decoded layer that does not
//! match its diff_id) is the read's EIO, the open having succeeded.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::front::{Behavior, Fault, Front};
use crate::common::tree::{self, Compare, Kind};
use crate::common::{Mount, images, shared};
use crate::common::{s, sha256_of, status_json};

/// Every file of every image's `rootfs/`, a blob and decoded layers (never decoded before: their
/// size shows 0 until read) read through a `--no-open` mount are what a mount with `--open` reads
/// (the blob also what its digest says), cold and warm.
/// fuser's log of the warm reads shows no OPEN, RELEASE or FLUSH of files at all.
#[test]
fn no_open_reads_every_file_the_same_and_sends_no_open_or_release() {
    let sh = shared();
    let plain = Mount::start(&sh.registry.url, &["--open"]);
    let cache = tempfile::tempdir().expect("cache");
    let log = cache.path().with_extension("log");
    let cache_arg = cache.path().to_string_lossy().into_owned();
    let env = [("RUST_LOG", Path::new("regfs=debug,fuser=debug")), ("HOME", cache.path())];
    let args = ["--cache-dir", &cache_arg, "--no-open"];
    let m = Mount::start_env(&sh.registry.url, &args, &env, cache.path().to_path_buf(), log);
    // First, before anything decodes them: a blob and every decoded layer.
    let img = images(&sh.fixtures, "oci-manifest").into_iter().find(|i| i["repo"] == "demo/oci").expect("demo/oci");
    let blob = s(&img["layers"][0]["digest"]);
    let read = std::fs::read(m.path(&format!("demo/oci/blobs/{blob}"))).expect("the blob");
    assert_eq!(sha256_of(&read), blob, "the blob read by inode");
    let mut decoded = 0;
    for (n, l) in img["layers"].as_array().expect("layers").iter().enumerate() {
        let mt = s(&l["media_type"]);
        if !(mt.ends_with("gzip") || mt.ends_with("zstd")) {
            continue; // its blob is its `<n>.tar`
        }
        let layer = format!("demo/oci/tags/v1/layers/{n}.tar");
        // Never decoded by this mount: its size says 0 until the kernel's getattr before the
        // read opens it.
        assert_eq!(std::fs::metadata(m.path(&layer)).expect("stat").len(), 0, "{layer}: decoded already");
        let want = std::fs::read(plain.path(&layer)).expect("the decoded layer, plainly");
        assert_eq!(sha256_of(&std::fs::read(m.path(&layer)).expect(&layer)), sha256_of(&want), "{layer}");
        decoded += 1;
    }
    assert_eq!(decoded, 2, "demo/oci has a gzip and a zstd layer");

    let mut roots = Vec::new();
    for kind in ["oci-manifest", "docker-schema2"] {
        for img in images(&sh.fixtures, kind) {
            let (repo, digest) = (s(&img["repo"]), s(&img["digest"]));
            if !repo.starts_with("broken/") {
                roots.push(format!("{repo}/manifests/{digest}/rootfs"));
            }
        }
    }
    assert!(roots.len() >= 2, "the fixtures have images to read");
    let mut compared = 0;
    for root in &roots {
        let want = tree::walk(&plain.path(root)).expect("rootfs/ with --open");
        assert!(want.values().any(|n| n.kind == Kind::File), "{root}: no files");
        for when in ["cold", "warm"] {
            let got = tree::walk(&m.path(root)).unwrap_or_else(|e| panic!("{root}: {when}, with --no-open: {e}"));
            assert_eq!(
                tree::compare(&got, &want, &Compare::default()),
                Vec::<String>::new(),
                "{root}: {when}, with --no-open"
            );
        }
        compared += want.len();
    }
    eprintln!("{compared} paths compared");

    // Warm: the same reads again send no OPEN, RELEASE or FLUSH of files.
    let before = m.log().len();
    for root in &roots {
        let o = m.sh(&format!("cd {root} && find . -type f | xargs cat > /dev/null"));
        assert!(o.status.success(), "{root}: {}", String::from_utf8_lossy(&o.stderr));
    }
    std::thread::sleep(Duration::from_millis(300));
    let warm = m.log().get(before..).unwrap_or_default().to_string();
    let count = |op: &str| warm.lines().filter(|l| l.contains("fuser::request") && l.contains(op)).count();
    assert_eq!(count(" OPEN "), 0, "an OPEN reached regfs:\n{warm}");
    assert_eq!(count(" RELEASE "), 0, "a RELEASE reached regfs:\n{warm}");
    assert_eq!(count(" FLUSH "), 0, "a FLUSH reached regfs:\n{warm}");
    assert!(count(" OPENDIR ") > 0, "directories still open:\n{warm}");
    let log = m.log();
    assert!(log.contains("(--no-open): reads are by inode"), "the kernel did not take FUSE_NO_OPEN_SUPPORT:\n{log}");
    assert!(!log.contains("FUSE passthrough on"), "passthrough asked with --no-open:\n{log}");
}

/// The job in flight for `digest`, if the status shows one: its bytes done.
fn done(status: &serde_json::Value, digest: &str) -> Option<u64> {
    status["in_flight"].as_array()?.iter().find(|j| j["digest"] == digest)?["done"].as_u64()
}

/// With `--no-open` the kernel keeps every file's pages and sends no open: `.regfs/status` is a
/// new inode at each lookup, rendered then. Two `cat`s during a trickled download show
/// different bytes done, each `status.json` parses, and the text is whole (its size what `cat`
/// reads), over many reads of both.
#[test]
fn no_open_status_shows_each_cat_the_status_then() {
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "docker-schema2")[0];
    let digest = s(&img["layers"][2]["digest"]).to_string();
    let path = "demo/docker/tags/v1/layers/2.tar.gz";
    let trickle = Fault::trickle(&format!("/blobs/{digest}"), 16 << 10, Duration::from_millis(25), 1);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![trickle], ..Behavior::default() });
    let m = Mount::start(&front.url, &["--no-open"]);
    // Some file first, so that the first open (the one answered ENOSYS) is behind us.
    assert!(std::fs::read(m.path(".regfs/status")).is_ok_and(|b| !b.is_empty()));

    std::fs::metadata(m.path(path)).expect("stat");
    let mut cat = Command::new("cat").arg(m.path(path)).stdout(Stdio::null()).spawn().expect("cat");
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(d) = done(&status_json(&m), &digest).filter(|&d| d > 0) {
            break d;
        }
        assert!(Instant::now() < deadline, "the download never showed: {}", status_json(&m));
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let second = done(&status_json(&m), &digest).expect("still in flight 300 ms later");
    assert!(second > first, "the same progress 300 ms later: {first} then {second}");
    for _ in 0..20 {
        status_json(&m);
        let text = std::fs::read_to_string(m.path(".regfs/status")).expect("status");
        assert!(text.starts_with("regfs status") && text.ends_with('\n') && text.contains("Errors:"), "{text}");
        let mut f = std::fs::File::open(m.path(".regfs/status")).expect("open");
        let size = f.metadata().expect("fstat").len();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes.len() as u64, size, "a rendering read other than whole");
    }
    assert!(cat.wait().expect("cat").success());
    let after = status_json(&m);
    assert_eq!(done(&after, &digest), None, "a finished download is still shown: {after}");
}

/// A layer whose decoded stream is not its diff_id: with `--no-open` the open succeeds (the
/// kernel sends none) and the read is EIO, every time; its blob, valid by its digest, reads.
#[test]
fn no_open_a_wrong_diff_id_is_eio_at_read() {
    let sh = shared();
    let case = &sh.fixtures["diffid"];
    let m = Mount::start(&sh.registry.url, &["--no-open"]);
    let dir = m.path(&format!("{}/tags/{}/layers", s(&case["repo"]), s(&case["tag"])));
    for _ in 0..2 {
        let mut f = std::fs::File::open(dir.join("0.tar")).expect("the open succeeds: the kernel sends none");
        let e = f.read_to_end(&mut Vec::new()).expect_err("a layer whose diff_id is wrong");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }
    let blob = std::fs::read(dir.join("0.tar.gz")).expect("the blob");
    assert_eq!(sha256_of(&blob), s(&case["layer"]));
    let status = status_json(&m);
    let last = status["errors"]["last"].as_array().expect("last errors");
    assert!(
        last.iter().any(|e| e["errno"] == "EIO" && e["op"].as_str().is_some_and(|op| op.starts_with("read"))),
        "{status}"
    );
}

/// With `--no-open`, a listing of `.regfs/` with attributes names the status files, and a
/// `cat` right after it (within the kernel's clock tick, when an entry of TTL 0 is still
/// trusted) may go to the inode the listing named: every read is the whole status all the same.
#[test]
fn no_open_a_status_file_read_right_after_its_listing_is_whole() {
    let m = Mount::start(&shared().registry.url, &["--no-open"]);
    assert!(std::fs::read(m.path(".regfs/status")).is_ok_and(|b| !b.is_empty()));
    let script = r#"
import os, sys
d = sys.argv[1]
bad = []
for i in range(300):
    names = os.listdir(d)
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            b = f.read()
        if not b:
            bad.append((i, n))
print(len(bad), bad[:5])
"#;
    let out =
        Command::new("python3").args(["-c", script, &m.path(".regfs").to_string_lossy()]).output().expect("python3");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("0 "), "status files read empty right after a listing: {line}");
}
