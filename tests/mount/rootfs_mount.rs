//! `rootfs/` through a real mount of a real registry: the tree the kernel shows (names, kinds,
//! modes, sizes, bytes) equals what GNU tar extracts from the same layers, applied bottom to
//! top, for gzip, zstd and plain layers: by default (no open), and with `--open`, with and without
//! passthrough.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::common::s;
use crate::common::{Mount, images, sh_in, shared, stdout};

/// Every path under `root` with its kind, mode, size and content hash, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("ls {}: {e}", dir.display())) {
        let p = e.expect("entry").path();
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let rel = p.strip_prefix(root).expect("under root").display().to_string();
        let what = if m.is_dir() {
            walk(root, &p, out);
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).expect("readlink").display())
        } else {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            format!("{} bytes {}", m.len(), regfs::digest::Digest::of(regfs::digest::Algorithm::Sha256, &bytes))
        };
        out.push(format!("{rel} {:o} {what}", m.mode() & 0o7777));
    }
}

#[test]
fn a_mounted_rootfs_is_what_gnu_tar_extracts_from_its_layers() {
    let sh = shared();
    for args in [&["--open"][..], &["--open", "--no-passthrough"][..], &[][..]] {
        let m = Mount::start(&sh.registry.url, args);
        let mut checked = 0;
        for kind in ["oci-manifest", "docker-schema2"] {
            for img in images(&sh.fixtures, kind) {
                let (repo, digest) = (s(&img["repo"]), s(&img["digest"]));
                if repo.starts_with("broken/") {
                    continue;
                }
                let dir = m.path(&format!("{repo}/manifests/{digest}"));
                let want = tempfile::tempdir().expect("extract");
                let n = img["layers"].as_array().expect("layers").len();
                for i in 0..n {
                    // The blob as stored (GNU tar decompresses gzip and zstd itself): the longest
                    // of `<i>.tar*` (`<i>.tar` alone is an uncompressed layer's blob).
                    let layer = std::fs::read_dir(dir.join("layers"))
                        .expect("layers")
                        .map(|e| e.expect("entry").path())
                        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&format!("{i}.tar"))))
                        .max_by_key(|p| p.as_os_str().len())
                        .expect("a layer file");
                    let o = sh_in(want.path(), &format!("tar -xf {} --no-same-owner", layer.display()));
                    assert!(
                        o.status.success(),
                        "{repo}: tar -xf {}: {}",
                        layer.display(),
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                let got = tree(&dir.join("rootfs"));
                assert!(!got.is_empty(), "{repo}: an empty rootfs");
                assert_eq!(got, tree(want.path()), "{repo} {args:?}");
                checked += 1;
            }
        }
        assert!(checked >= 2, "the fixtures have images to compare");
        let root = std::fs::metadata(m.path("demo/oci/tags/v1/rootfs")).expect("stat rootfs");
        assert_eq!((root.mode() & 0o7777, root.uid(), root.gid()), (0o755, 0, 0), "rootfs/ is 0755 root:root");
        let listing = stdout(&m.sh("ls -ln demo/oci/tags/v1/rootfs/regfs-fixture"));
        assert!(listing.lines().skip(1).all(|l| l.starts_with("-rw-r--r-- 1 0 0 ")), "{listing}");
    }
}

/// A mount of `registry` (with `--open` if `open`) whose log has every request fuser saw and
/// every one regfs handed to a thread, after the cache directory to keep while it is mounted
/// (bound first, so dropped last).
fn logging_every_request(registry: &str, open: bool) -> (tempfile::TempDir, Mount) {
    let cache = tempfile::tempdir().expect("cache");
    let log = cache.path().with_extension("log");
    let cache_arg = cache.path().to_string_lossy().into_owned();
    let env = [("RUST_LOG", Path::new("regfs=debug,fuser=debug")), ("HOME", cache.path())];
    let mut args = vec!["--cache-dir", &cache_arg];
    if open {
        args.push("--open");
    }
    let m = Mount::start_env(registry, &args, &env, cache.path().to_path_buf(), log);
    (cache, m)
}

/// What the kernel asks of regfs for files read again and again through a tag (a warm
/// `find rootfs -type f | xargs cat`): no FLUSH at each close (`FOPEN_NOFLUSH`), no READLINK of
/// the tag (the kernel keeps the link's target: `FUSE_CACHE_SYMLINKS`), and the OPEN (the layer
/// at hand) waits for no thread of its own. By default (no open) the kernel sends no OPEN and no
/// READ at all: the pages are kept; with `--open`, one OPEN per file. Counted from fuser's log
/// of every request and regfs's log of every request it hands to a thread.
#[test]
fn warm_reads_through_a_tag_cost_no_flush_and_no_thread() {
    let sh = shared();
    for open in [false, true] {
        let (_cache, m) = logging_every_request(&sh.registry.url, open);
        let files = stdout(&m.sh("find demo/oci/tags/v1/rootfs/regfs-fixture -type f | sort | head -3"));
        let files: Vec<&str> = files.lines().collect();
        assert!(!files.is_empty(), "the fixture's rootfs has files");
        let cat = format!("cat {} > /dev/null", files.join(" "));
        assert!(m.sh(&cat).status.success(), "the first (cold) read");
        // The cold read's RELEASEs come after its closes returned: let them land before counting.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let before = m.log().len();
        for _ in 0..3 {
            assert!(m.sh(&cat).status.success(), "a warm read");
        }
        std::thread::sleep(std::time::Duration::from_millis(300)); // RELEASE is sent after close returns
        let warm = m.log().get(before..).unwrap_or_default().to_string();
        let count = |op: &str| warm.lines().filter(|l| l.contains("fuser::request") && l.contains(op)).count();
        let opens = if open { 3 * files.len() } else { 0 };
        assert_eq!(count(" OPEN "), opens, "open: {open}, warm OPENs (the log shows requests):\n{warm}");
        assert_eq!(count(" RELEASE "), opens, "open: {open}, warm RELEASEs:\n{warm}");
        if !open {
            assert_eq!(count(" READ "), 0, "warm reads with no open reached regfs:\n{warm}");
        }
        assert_eq!(count(" READLINK"), 0, "a path walk read the tag's link again:\n{warm}");
        assert_eq!(count(" FLUSH "), 0, "a close of a read-only file sent FLUSH:\n{warm}");
        let threads: Vec<&str> = warm.lines().filter(|l| l.contains("on a thread of its own")).collect();
        assert!(threads.is_empty(), "warm requests waited for threads of their own: {threads:#?}");
    }
}

/// A warm `find` of a rootfs (what `find rootfs -type f | xargs cat` starts with): its
/// directories are immutable, so their listings are kept and opened inline, and the kernel
/// keeps what it read of them (`FOPEN_CACHE_DIR`): a second walk sends no READDIR and hands
/// no request to a thread, and finds the same paths.
#[test]
fn a_warm_walk_of_a_rootfs_reads_no_directory_twice_and_waits_for_no_thread() {
    let sh = shared();
    let cache = tempfile::tempdir().expect("cache");
    let log = cache.path().with_extension("log");
    let cache_arg = cache.path().to_string_lossy().into_owned();
    let env = [("RUST_LOG", Path::new("regfs=debug,fuser=debug")), ("HOME", cache.path())];
    let m = Mount::start_env(&sh.registry.url, &["--cache-dir", &cache_arg], &env, cache.path().to_path_buf(), log);
    // From outside the mount, as the benchmark does: `find` opens its starting directory too.
    let find = format!("find {} | sort", m.path("demo/oci/tags/v1/rootfs").display());
    let outside = tempfile::tempdir().expect("a directory outside the mount");
    let cold = stdout(&sh_in(outside.path(), &find));
    assert!(cold.lines().count() > 3, "a rootfs with directories and files: {cold}");
    let before = m.log().len();
    assert_eq!(stdout(&sh_in(outside.path(), &find)), cold, "the second walk found other paths");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let warm = m.log().get(before..).unwrap_or_default().to_string();
    let count = |op: &str| warm.lines().filter(|l| l.contains("fuser::request") && l.contains(op)).count();
    assert!(count(" OPENDIR ") > 0, "the walk opens directories (the log shows requests):\n{warm}");
    assert_eq!(count(" READDIR "), 0, "a directory already read was read again:\n{warm}");
    let threads: Vec<&str> = warm.lines().filter(|l| l.contains("on a thread of its own")).collect();
    assert!(threads.is_empty(), "warm requests waited for threads of their own: {threads:#?}");
}

/// The first read of every file after a `find` (what `grep -r`, `tar -c`, `rsync` or a scanner
/// meets once the layers are decoded): the `find` listed every directory with its entries'
/// attributes (READDIRPLUS), so the kernel sends no LOOKUP of a file, and no READLINK of the tag
/// it walks through (it keeps the link), only the READs; and with the layers' indexes in memory
/// and their decoded tars verified, no READ waits for a thread of its own. By absolute paths
/// through the tag, as the benchmark's row does. Counted from fuser's log of every request and
/// regfs's log of every request it hands to a thread. The numbers `ls -i` reads from a listing
/// are those `stat` gives (a listing with attributes hands out the inodes it names).
#[test]
fn the_first_read_of_every_file_after_a_find_waits_for_no_thread() {
    let sh = shared();
    for open in [false, true] {
        let (_cache, m) = logging_every_request(&sh.registry.url, open);
        let rootfs = m.path("demo/oci/tags/v1/rootfs");
        let outside = tempfile::tempdir().expect("a directory outside the mount");
        let walked = stdout(&sh_in(outside.path(), &format!("find {} | wc -l", rootfs.display())));
        assert!(walked.trim().parse::<usize>().is_ok_and(|n| n > 3), "a rootfs with files: {walked}");
        let before = m.log().len();
        let read = format!("find {} -type f -print0 | xargs -0 sha256sum | wc -l", rootfs.display());
        let files = stdout(&sh_in(outside.path(), &read));
        assert!(files.trim().parse::<usize>().is_ok_and(|n| n > 0), "files read: {files}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let first = m.log().get(before..).unwrap_or_default().to_string();
        let count = |op: &str| first.lines().filter(|l| l.contains("fuser::request") && l.contains(op)).count();
        assert_eq!(count(" LOOKUP "), 0, "open: {open}, the first read looked files up:\n{first}");
        assert_eq!(count(" READLINK"), 0, "open: {open}, the first read read the tag's link:\n{first}");
        assert!(count(" READ ") > 0, "open: {open}, the first read reads:\n{first}");
        let dir = rootfs.join("regfs-fixture");
        let mut listed = 0;
        for entry in std::fs::read_dir(&dir).expect("list a rootfs directory") {
            let entry = entry.expect("an entry");
            let stat = std::fs::symlink_metadata(entry.path()).expect("stat an entry");
            assert_eq!(std::os::unix::fs::DirEntryExt::ino(&entry), stat.ino(), "open: {open}, {:?}", entry.path());
            listed += 1;
        }
        assert!(listed > 0, "{} lists nothing", dir.display());
        let threads: Vec<&str> = first.lines().filter(|l| l.contains("on a thread of its own")).collect();
        assert!(threads.is_empty(), "open: {open}, first reads waited for threads of their own: {threads:#?}");
    }
}

/// Reading ahead across a walk (`--read-ahead-files`, 32 by default): after a `find` of the
/// Debian image's rootfs, the first `find -type f | xargs sha256sum` sends fewer READs (the
/// next files of the walk are put in the kernel's page cache before they are asked for) than a
/// mount reading nothing ahead, which sends at least one per file; and every sum is the same on
/// both. Counted from fuser's log of every request. How many fewer depends on how fast regfs
/// puts them there against how fast the reader reads (a release build on an idle machine: about
/// one READ for seven files, `scripts/bench`); a debug build under load still saves a tenth.
#[test]
fn the_first_walk_of_a_tree_reads_ahead_the_same_bytes_with_few_reads() {
    let sh = shared();
    let distro =
        regfs::testkit::fixtures::push_distro(&sh.registry.url).unwrap_or_else(|e| panic!("distro image: {e}"));
    let repo = distro["repo"].as_str().expect("repo");
    let walk = |ahead: &str| {
        let cache = tempfile::tempdir().expect("cache");
        let log = cache.path().with_extension("log");
        let cache_arg = cache.path().to_string_lossy().into_owned();
        let env = [("RUST_LOG", Path::new("fuser=debug")), ("HOME", cache.path())];
        let args = ["--cache-dir", &cache_arg, "--read-ahead-files", ahead];
        let m = Mount::start_env(&sh.registry.url, &args, &env, cache.path().to_path_buf(), log);
        let rootfs = m.path(&format!("{repo}/tags/v1/rootfs"));
        let outside = tempfile::tempdir().expect("a directory outside the mount");
        assert!(sh_in(outside.path(), &format!("find {} > /dev/null", rootfs.display())).status.success());
        let before = m.log().len();
        let read = format!("cd {} && find . -type f -print0 | xargs -0 sha256sum", rootfs.display());
        let sums = stdout(&sh_in(outside.path(), &read));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let reads = m
            .log()
            .get(before..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("fuser::request") && l.contains(" READ "))
            .count();
        (sums, reads)
    };
    let (sums, reads) = walk("32");
    let (plain, plain_reads) = walk("0");
    let files = plain.lines().count();
    assert!(files >= 4000, "{files} files summed");
    assert_eq!(sums, plain, "reading ahead served other bytes");
    assert!(plain_reads >= files, "{plain_reads} READs for {files} files without reading ahead");
    assert!(reads * 10 < plain_reads * 9, "{reads} READs with reading ahead, {plain_reads} without");
}

/// Unmounting while a walk reads a tree and the read-ahead thread puts its next files in the
/// page cache (the first `find -type f | xargs cat` of the Debian image, cut once a window was
/// put there): the readers see errors or the bytes, regfs exits cleanly within seconds, and it
/// logs no panic.
#[test]
fn unmounting_in_the_middle_of_a_walk_read_ahead_exits_cleanly() {
    let sh = shared();
    let distro =
        regfs::testkit::fixtures::push_distro(&sh.registry.url).unwrap_or_else(|e| panic!("distro image: {e}"));
    let repo = distro["repo"].as_str().expect("repo");
    let cache = tempfile::tempdir().expect("cache");
    let log = cache.path().with_extension("log");
    let env = [("RUST_LOG", Path::new("regfs::fs::ahead=trace")), ("HOME", cache.path())];
    let mut m = Mount::start_env(&sh.registry.url, &[], &env, cache.path().to_path_buf(), log);
    let rootfs = m.path(&format!("{repo}/tags/v1/rootfs"));
    let outside = tempfile::tempdir().expect("a directory outside the mount");
    assert!(sh_in(outside.path(), &format!("find {} > /dev/null", rootfs.display())).status.success());
    let walk = format!("find {} -type f -print0 | xargs -0 cat > /dev/null 2>&1", rootfs.display());
    let mut readers = std::process::Command::new("sh")
        .args(["-c", &walk])
        .current_dir(outside.path())
        .process_group(0)
        .spawn()
        .expect("the walk");
    // Cut the walk once something has been read ahead (however loaded the machine is).
    let read_ahead = |log: &str| log.lines().any(|l| l.contains("read ahead after inode") && !l.contains(": 0 files"));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !read_ahead(&m.log()) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(readers.try_wait().ok().flatten(), None, "the walk ended before it was cut: nothing cut");
    let lazy = std::process::Command::new("umount").arg("-l").arg(m.dir.path()).status().expect("umount -l");
    assert!(lazy.success());
    // SAFETY: kill(2) of the process group this test started; no memory is touched.
    unsafe { libc::kill(-(readers.id() as i32), libc::SIGKILL) };
    let _ = readers.wait();
    let status = m.wait_exit(std::time::Duration::from_secs(10));
    let log = m.log();
    assert!(status.is_some_and(|s| s.success()), "regfs after an unmount mid-walk: {status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let stored = log.lines().filter(|l| l.contains("read ahead after inode") && !l.contains(": 0 files")).count();
    assert!(stored > 0, "nothing was read ahead before the unmount: the test cut nothing\n{log}");
}

/// With the layers' indexes out of memory (`--index-memory` far below one index), a listing of
/// a `rootfs/` directory has no attributes at hand for its entries: a file of it mapped before
/// the listing still reads its bytes after (a bare size of 0 told to its inode would cut its
/// pages, and the mapping would fault with SIGBUS).
#[test]
fn a_mapped_rootfs_file_reads_the_same_after_its_directory_is_listed_without_indexes() {
    let m = Mount::start(&shared().registry.url, &["--index-memory", "1K"]);
    let script = r#"
import mmap, os, sys
d = sys.argv[1]
name = sys.argv[2]
with open(os.path.join(d, name), "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    before = bytes(m[:])
    os.listdir(d)
    after = bytes(m[:])
    print(len(before), before == after)
"#;
    let files = stdout(&m.sh("find demo/oci/tags/v1/rootfs/regfs-fixture -maxdepth 1 -type f -size +0 | head -1"));
    let name =
        Path::new(files.trim()).file_name().expect("a non-empty file in regfs-fixture").to_string_lossy().into_owned();
    // A fresh mount: the directory is listed for the first time after the mapping.
    drop(m);
    let m = Mount::start(&shared().registry.url, &["--index-memory", "1K"]);
    let dir = m.path("demo/oci/tags/v1/rootfs/regfs-fixture");
    let out = std::process::Command::new("python3")
        .args(["-c", script, &dir.to_string_lossy(), &name])
        .output()
        .expect("python3");
    assert!(out.status.success(), "the mapping of {name} after listing its directory: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).trim().ends_with("True"), "{out:?}");
}
