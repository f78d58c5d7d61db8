//! The cache directory is regfs's own: links planted in the cache directory are never
//! followed, a file there that is not a regular file is never served, and a cache root that
//! someone else owns or can write is refused. Real regfs binary, real registry, real mounts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::tree;
use crate::common::{Mount, UnmountOnDrop, images, is_mounted, sha256sum, shared};

/// Everything about a victim that regfs must not change: each path under it (itself included,
/// links not followed) as `tree::walk` sees it: kind, mode, owner, mtime, content or link target.
fn snapshot(root: &Path) -> tree::Tree {
    tree::walk(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

/// A victim directory with a file in it, and a victim file, both owned by the test.
fn victims(base: &Path) -> (PathBuf, PathBuf) {
    let dir = base.join("victim-dir");
    std::fs::create_dir(&dir).expect("victim dir");
    std::fs::write(dir.join("precious"), b"do not delete").expect("victim entry");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = base.join("victim-file");
    std::fs::write(&file, b"do not truncate\n").expect("victim file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (dir, file)
}

/// Run regfs in its background mode (the mode that opens `regfs.log` in the cache directory).
fn regfs_background(url: &str, mountpoint: &Path, cache: &Path) -> Output {
    Command::new(crate::common::regfs_bin())
        .arg(url)
        .arg(mountpoint)
        .arg("--cache-dir")
        .arg(cache)
        .env("HOME", cache)
        .env("RUST_LOG", "regfs=debug")
        .output()
        .expect("regfs")
}

fn unmount_and_wait(mountpoint: &Path, cache: &Path) {
    assert!(Command::new("umount").arg(mountpoint).status().expect("umount").success());
    // The background process lets go of the cache (its lock) once the mount is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("pgrep").arg("-f").arg(format!("--cache-dir {}", cache.display())).output();
        if out.map(|o| o.stdout.is_empty()).unwrap_or(true) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "regfs did not exit after umount");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn layer() -> (String, &'static str) {
    let img = images(&shared().fixtures, "docker-schema2")[0];
    (img["layers"][0]["digest"].as_str().expect("digest").to_string(), "demo/docker/tags/v1/layers/0.tar.gz")
}

#[test]
fn links_planted_for_tmp_lock_and_the_log_are_not_followed() {
    let sh = shared();
    let base = tempfile::tempdir().expect("base");
    let (victim_dir, victim_file) = victims(base.path());
    let victim_log = base.path().join("victim-log");
    std::fs::write(&victim_log, b"not a log\n").expect("victim log");
    let cache = base.path().join("cache");
    std::fs::create_dir(&cache).expect("cache");
    std::os::unix::fs::symlink(&victim_dir, cache.join("tmp")).expect("plant tmp");
    std::os::unix::fs::symlink(&victim_file, cache.join("lock")).expect("plant lock");
    std::os::unix::fs::symlink(&victim_log, cache.join("regfs.log")).expect("plant regfs.log");
    let before = [snapshot(&victim_dir), snapshot(&victim_file), snapshot(&victim_log)];

    let mnt = tempfile::tempdir().expect("mountpoint");
    let out = regfs_background(&sh.registry.url, mnt.path(), &cache);
    let _guard = UnmountOnDrop(mnt.path().to_path_buf());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (digest, file) = layer();
    assert_eq!(sha256sum(&mnt.path().join(file)), digest);
    unmount_and_wait(mnt.path(), &cache);

    assert_eq!(before, [snapshot(&victim_dir), snapshot(&victim_file), snapshot(&victim_log)], "a victim changed");
    // regfs repaired its own directory: real ones where the links were.
    for (name, dir) in [("tmp", true), ("lock", false), ("regfs.log", false)] {
        let meta = std::fs::symlink_metadata(cache.join(name)).expect(name);
        assert!(if dir { meta.is_dir() } else { meta.is_file() }, "{name}: {:?}", meta.file_type());
    }
    let log = std::fs::read_to_string(cache.join("regfs.log")).expect("log");
    assert!(log.contains("mounted on"), "{log}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("regfs.log") && err.contains("symbolic link"), "no word about the planted log link: {err}");
}

#[test]
fn a_link_planted_for_the_blob_directory_is_not_followed() {
    let sh = shared();
    let base = tempfile::tempdir().expect("base");
    let (victim_dir, _) = victims(base.path());
    let (digest, file) = layer();
    let hex = digest.trim_start_matches("sha256:");
    // A file named as the layer, with other bytes: re-hashed, it would be deleted and replaced.
    std::fs::write(victim_dir.join(hex), b"not the layer").expect("victim blob");
    let cache = base.path().join("cache");
    std::fs::create_dir_all(cache.join("blobs")).expect("cache");
    std::os::unix::fs::symlink(&victim_dir, cache.join("blobs/sha256")).expect("plant blobs/sha256");
    let before = snapshot(&victim_dir);

    let mut m = Mount::start_with_cache(&sh.registry.url, &[], cache.clone(), None);
    assert_eq!(sha256sum(&m.path(file)), digest);
    m.unmount();

    assert_eq!(before, snapshot(&victim_dir), "the victim directory changed");
    assert!(std::fs::symlink_metadata(cache.join("blobs/sha256")).expect("blobs/sha256").is_dir());
    assert_eq!(sha256sum(&cache.join("blobs/sha256").join(hex)), digest, "the verified blob is in the cache");
}

#[test]
fn a_cached_blob_that_is_a_link_or_not_a_regular_file_is_never_served() {
    let sh = shared();
    let base = tempfile::tempdir().expect("base");
    let img = images(&sh.fixtures, "docker-schema2")[0];
    let layers: Vec<(String, String)> = (0..3)
        .map(|i| {
            let l = &img["layers"][i];
            let ext = ext_of(l["media_type"].as_str().expect("media type"));
            (l["digest"].as_str().expect("digest").to_string(), format!("demo/docker/tags/v1/layers/{i}.{ext}"))
        })
        .collect();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let cache = base.path().join("cache");
    let dir = cache.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("cache");
    // Layer 0's name links to a file outside that holds its very bytes (so it hashes right).
    let right = base.path().join("right-bytes");
    std::fs::copy(sh.registry.blob_path(&layers[0].0), &right).expect("copy layer 0");
    std::os::unix::fs::symlink(&right, dir.join(hex(&layers[0].0))).expect("plant layer 0");
    // Layer 1's name links to a file that holds something else.
    let wrong = base.path().join("wrong-bytes");
    std::fs::write(&wrong, b"something else\n").expect("wrong");
    std::os::unix::fs::symlink(&wrong, dir.join(hex(&layers[1].0))).expect("plant layer 1");
    // Layer 2's name is a FIFO: it must neither be served nor hang regfs.
    assert!(Command::new("mkfifo").arg(dir.join(hex(&layers[2].0))).status().expect("mkfifo").success());
    let before = [snapshot(&right), snapshot(&wrong)];

    let mut m = Mount::start_with_cache(&sh.registry.url, &[], cache.clone(), None);
    // The same, planted while regfs runs (after its start-up sweep of the cache): a link to the
    // right bytes of another layer, which regfs has not verified yet.
    let oci = images(&sh.fixtures, "oci-manifest")[0];
    let late = oci["layers"][0]["digest"].as_str().expect("digest").to_string();
    let late_right = base.path().join("late-right-bytes");
    std::fs::copy(sh.registry.blob_path(&late), &late_right).expect("copy");
    std::os::unix::fs::symlink(&late_right, dir.join(hex(&late))).expect("plant while running");
    let late_before = snapshot(&late_right);
    let mut layers = layers;
    layers.push((late.clone(), format!("{}/blobs/{late}", oci["repo"].as_str().expect("repo"))));
    for (digest, file) in &layers {
        assert_eq!(sha256sum(&m.path(file)), *digest, "{file}");
    }
    m.unmount();

    assert_eq!(before, [snapshot(&right), snapshot(&wrong)], "a victim changed");
    assert_eq!(late_before, snapshot(&late_right), "a victim changed");
    for (digest, _) in &layers {
        let meta = std::fs::symlink_metadata(dir.join(hex(digest))).expect("cached");
        assert!(meta.is_file(), "{digest} is still a {:?} in the cache", meta.file_type());
        assert_eq!(sha256sum(&dir.join(hex(digest))), *digest);
    }
}

#[test]
fn a_cache_root_that_others_can_write_or_another_user_owns_is_refused() {
    let sh = shared();
    let base = tempfile::tempdir().expect("base");
    let refused = |cache: &Path, what: &str| {
        let mnt = tempfile::tempdir().expect("mountpoint");
        let _guard = UnmountOnDrop(mnt.path().to_path_buf());
        for fg in [false, true] {
            let mut cmd = Command::new(crate::common::regfs_bin());
            cmd.arg(&sh.registry.url).arg(mnt.path()).arg("--cache-dir").arg(cache).env("HOME", base.path());
            if fg {
                cmd.arg("--foreground");
            }
            let out = cmd.output().expect("regfs");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: regfs accepted the cache directory");
            assert!(!is_mounted(mnt.path()), "{what}");
            assert!(err.contains(&cache.display().to_string()) && err.contains(what), "{what}: {err}");
        }
        // Nothing was created in it.
        let entries: Vec<_> = std::fs::read_dir(cache).expect("cache").collect();
        assert!(entries.is_empty(), "{what}: regfs wrote into {}: {entries:?}", cache.display());
    };

    let open = base.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refused(&open, "writable by others");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    refused(&open, "writable by others");

    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).expect("dir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown nobody");
    refused(&theirs, "owned by");

    // A link someone else planted where the cache root should be (think of /tmp).
    let mine = base.path().join("mine");
    std::fs::create_dir(&mine).expect("dir");
    let planted = base.path().join("planted");
    std::os::unix::fs::symlink(&mine, &planted).expect("link");
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).expect("lchown nobody");
    refused(&planted, "owned by");
}

fn ext_of(media_type: &str) -> &'static str {
    if media_type.ends_with("gzip") {
        "tar.gz"
    } else if media_type.ends_with("zstd") {
        "tar.zst"
    } else {
        "tar"
    }
}

/// The cache root is checked on the terminal, before regfs detaches; the background process
/// must use that very directory, not whatever its path names once the registry has answered.
/// Here the path is moved to another directory of the user's, whose `tmp/` holds a file, while
/// the registry is slow to answer the first request.
#[test]
fn the_cache_directory_checked_before_detaching_is_the_one_used() {
    use crate::common::front::{Behavior, Fault, Front, STALL};
    let sh = shared();
    let mut stall = Fault::status("/v2/", STALL, 1);
    stall.delay = std::time::Duration::from_secs(3);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![stall], ..Behavior::default() });
    let base = tempfile::tempdir().expect("base");
    let (cache, moved, other) =
        (base.path().join("cache"), base.path().join("cache.checked"), base.path().join("other"));
    for d in [&cache, &other, &other.join("tmp")] {
        std::fs::create_dir(d).expect("dir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    std::fs::write(other.join("tmp/precious"), b"keep me").expect("precious");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let _guard = UnmountOnDrop(mnt.path().to_path_buf());
    let run = {
        let (url, mnt, cache) = (front.url.clone(), mnt.path().to_path_buf(), cache.clone());
        std::thread::spawn(move || regfs_background(&url, &mnt, &cache))
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::fs::rename(&cache, &moved).expect("move the checked directory away");
    std::fs::rename(&other, &cache).expect("put the other in its place");
    let out = run.join().expect("regfs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let precious = std::fs::read(cache.join("tmp/precious"));
    let used_checked = moved.join("lock").exists();
    unmount_and_wait(mnt.path(), &cache);
    assert_eq!(precious.ok().as_deref(), Some(&b"keep me"[..]), "the other directory's tmp/ was emptied");
    assert!(used_checked, "regfs did not use the directory it checked");
    assert!(!cache.join("lock").exists(), "regfs took the other directory for its cache");
}
