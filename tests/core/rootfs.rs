//! `rootfs/` through the core (`Fs` and `Store` over an in-memory registry that can lie and
//! stall), on images made here with the tar crate: what each operation fetches, what a wrong
//! diff_id fails, and what the kernel is told of hard links, xattrs, devices and FIFOs.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use regfs::digest::{Algorithm, Digest};
use regfs::error::Result;
use regfs::fs::{Attr, Fs, FsConfig, Xattr};
use regfs::layout::FileKind;
use regfs::media;
use regfs::testkit::core::{
    self as kit, Bare, Builder, Core, GZIP, PLAIN, ZSTD, add_gzip_layer, cat_as_fuse, fs_on, gzip, noise,
    put_gzip_image, put_image, read_all, sha256,
};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::fixtures::layers::{Compression, compress};
use regfs::testkit::paths::Paths;

/// One tar entry to write.
#[derive(Clone)]
struct E {
    name: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    target: String,
    dev: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

fn entry(name: &str, kind: tar::EntryType) -> E {
    let mode = if kind == tar::EntryType::Directory { 0o755 } else { 0o644 };
    E {
        name: name.into(),
        kind,
        data: Vec::new(),
        mode,
        uid: 0,
        gid: 0,
        target: String::new(),
        dev: (0, 0),
        xattrs: Vec::new(),
    }
}

fn file(name: &str, data: &[u8]) -> E {
    E { data: data.to_vec(), ..entry(name, tar::EntryType::Regular) }
}

fn dir(name: &str) -> E {
    entry(name, tar::EntryType::Directory)
}

fn hardlink(name: &str, target: &str) -> E {
    E { target: target.into(), ..entry(name, tar::EntryType::Link) }
}

fn symlink(name: &str, target: &str) -> E {
    E { target: target.into(), mode: 0o777, ..entry(name, tar::EntryType::Symlink) }
}

fn whiteout(path: &str) -> E {
    let (parent, base) = path.rsplit_once('/').unwrap_or(("", path));
    let name = if parent.is_empty() { format!(".wh.{base}") } else { format!("{parent}/.wh.{base}") };
    file(&name, b"")
}

fn device(name: &str, kind: tar::EntryType, major: u32, minor: u32) -> E {
    E { dev: (major, minor), ..entry(name, kind) }
}

impl E {
    fn mode(self, mode: u32) -> E {
        E { mode, ..self }
    }
    fn owner(self, uid: u64, gid: u64) -> E {
        E { uid, gid, ..self }
    }
    fn xattr(mut self, name: &str, value: &[u8]) -> E {
        self.xattrs.push((name.into(), value.to_vec()));
        self
    }
}

/// A tar of `entries` in order (xattrs as PAX `SCHILY.xattr.*`), ended by the EOA.
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let keys: Vec<(String, &[u8])> =
                e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice())).collect();
            b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v))).expect("pax");
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_path(&e.name).expect("name");
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(1_700_000_000);
        h.set_size(e.data.len() as u64);
        if !e.target.is_empty() {
            h.set_link_name(&e.target).expect("link name");
        }
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).expect("major");
            h.set_device_minor(e.dev.1).expect("minor");
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).expect("append");
    }
    b.into_inner().expect("tar")
}

fn layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => GZIP,
        Compression::Zstd => ZSTD,
        Compression::Plain => PLAIN,
    }
}

/// An image pushed to the fake registry.
struct Image {
    manifest: Digest,
    /// Layer blobs, bottom first.
    blobs: Vec<Digest>,
    config: Digest,
}

/// Push an OCI image of `layers` (bottom first) as `repo:tag`; `diff_ids` (if given) replace the
/// true ones in the config.
fn push(
    fake: &Faulty<Fake>,
    repo: &str,
    tag: &str,
    layers: &[(Vec<E>, Compression)],
    diff_ids: Option<Vec<String>>,
) -> Image {
    let mut blobs = Vec::new();
    let mut ids = Vec::new();
    for (entries, c) in layers {
        let raw = tar_of(entries);
        ids.push(sha256(&raw).to_string());
        let blob = compress(&raw, *c).expect("compress");
        blobs.push((fake.add_blob(&blob), blob.len(), layer_media_type(*c)));
    }
    let ids = diff_ids.unwrap_or(ids);
    let (manifest, cfg) = put_image(fake, repo, tag, &blobs, &ids);
    let blobs = blobs.into_iter().map(|(d, _, _)| d).collect();
    Image { manifest, blobs, config: cfg }
}

/// Regular files under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() { files_under(&e.path()) } else { 1 }
        })
        .sum()
}

/// Layers given as decoded tars, indexed by the real parser and builder, with no registry
/// download or decode behind them: the merge and the layout over real tar bytes.
struct Tars {
    layers: Vec<(Arc<regfs::views::index::LayerIndex>, Arc<std::fs::File>)>,
}

impl Tars {
    fn new(tars: &[Vec<u8>]) -> Tars {
        use std::io::Write;
        let layers = tars
            .iter()
            .map(|t| {
                let limits = (regfs::views::tar::TarLimits::default(), regfs::views::index::IndexLimits::default());
                let index = regfs::views::index::build_all(&t[..], limits.0, limits.1).expect("index");
                let mut file = tempfile::tempfile().expect("tmp");
                file.write_all(t).expect("write");
                (Arc::new(index), Arc::new(file))
            })
            .collect();
        Tars { layers }
    }
}

impl regfs::layout::ImageLayers for Tars {
    fn index(&self, _: &str, _: &Digest, n: usize) -> Result<Arc<regfs::views::index::LayerIndex>> {
        Ok(Arc::clone(&self.layers[n].0))
    }

    fn decoded(&self, _: &str, _: &Digest, n: usize) -> Result<regfs::store::Content> {
        Ok(regfs::store::Content::File(Arc::clone(&self.layers[n].1)))
    }
}

/// The rootfs tests' trees, over real tars but without views: hard links, xattrs, devices,
/// whiteouts and file bytes as the tar parser, the index and the merge give them.
#[test]
fn real_tars_through_the_merge_and_the_layout() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00";
    let layers = vec![
        (
            vec![
                dir("bin"),
                file("bin/dash", b"#!dash\n").mode(0o755),
                hardlink("bin/sh", "bin/dash"),
                hardlink("bin/gone", "bin/dash"),
                file("bin/ping", b"ping").mode(0o4755).xattr("security.capability", cap).xattr("user.note", b"hi"),
                dir("dev"),
                device("dev/null", tar::EntryType::Char, 1, 3).mode(0o666),
                device("dev/sda1", tar::EntryType::Block, 8, 1).mode(0o660).owner(0, 6),
                device("dev/initctl", tar::EntryType::Fifo, 0, 0).mode(0o600),
                file("etc/passwd", b"root\n"),
                file("usr/lib/big", &noise(300_000, 1)),
            ],
            Compression::Plain,
        ),
        (
            vec![
                dir("usr"),
                dir("usr/bin"),
                hardlink("usr/bin/dash", "bin/dash"),
                dir("bin"),
                whiteout("bin/gone"),
                whiteout("etc/passwd"),
            ],
            Compression::Plain,
        ),
    ];
    let img = push(&fake, "r", "v1", &layers, None);
    let tars: Vec<Vec<u8>> = layers.iter().map(|(e, _)| tar_of(e)).collect();
    let Bare { fake, store, cache } = Builder::over(fake).bare();
    let fs = Arc::new(Fs::with_images(Arc::clone(&store), FsConfig::default(), Arc::new(Tars::new(&tars))));
    let c = Core { fake, store, fs, cache };
    let root = format!("r/manifests/{}/rootfs", img.manifest);

    let names = ["bin/dash", "bin/sh", "usr/bin/dash"].map(|p| c.walk(&format!("{root}/{p}")).expect(p));
    for a in &names {
        assert_eq!((a.ino, a.nlink, a.mode, a.kind), (names[0].ino, 3, 0o755, FileKind::File), "{a:?}");
    }
    assert_eq!(c.walk(&format!("{root}/bin/gone")).expect_err("whited out").errno(), libc::ENOENT);
    assert_eq!(c.cat(&format!("{root}/usr/bin/dash")).expect("dash"), b"#!dash\n");
    assert_eq!(c.cat(&format!("{root}/usr/lib/big")).expect("big"), noise(300_000, 1));
    assert_eq!(c.ls(&root).expect("ls"), ["bin", "dev", "etc", "usr"]);
    assert_eq!(c.ls(&format!("{root}/etc")).expect("ls etc"), Vec::<String>::new());
    assert_eq!(c.ls(&format!("{root}/bin")).expect("ls bin"), ["dash", "ping", "sh"]);

    let ping = c.walk(&format!("{root}/bin/ping")).expect("ping");
    assert_eq!(ping.mode, 0o4755);
    assert_eq!(c.fs.getxattr(ping.ino, OsStr::new("security.capability"), 64).expect("cap"), Xattr::Data(cap.to_vec()));
    assert_eq!(c.fs.listxattr(ping.ino, 256).expect("list"), Xattr::Data(b"security.capability\0user.note\0".to_vec()));

    let null = c.walk(&format!("{root}/dev/null")).expect("null");
    assert_eq!((null.kind, null.mode, u64::from(null.rdev)), (FileKind::CharDevice, 0o666, libc::makedev(1, 3)));
    let sda = c.walk(&format!("{root}/dev/sda1")).expect("sda1");
    assert_eq!((sda.kind, sda.gid, u64::from(sda.rdev)), (FileKind::BlockDevice, Some(6), libc::makedev(8, 1)));
    assert_eq!(c.walk(&format!("{root}/dev/initctl")).expect("fifo").kind, FileKind::Fifo);
    assert_eq!(c.fake.blob_gets(), 0, "no layer was fetched: the tars were given");
}

/// Three layers: a base with a large file, a middle one, a top one naming its parents.
fn three_layers() -> Vec<(Vec<E>, Compression)> {
    vec![
        (
            vec![dir("etc"), file("etc/passwd", b"root:x:0:0\n"), file("usr/lib/big", &noise(300_000, 1))],
            Compression::Gzip,
        ),
        (vec![dir("usr"), dir("usr/bin"), file("usr/bin/tool", b"middle\n")], Compression::Zstd),
        (vec![dir("top"), file("top/only-here.txt", b"only here\n")], Compression::Plain),
    ]
}

#[test]
fn reading_a_top_layer_file_fetches_nothing_of_the_base() {
    let c = Core::new(Faulty::new(Fake::default()));
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/top/only-here.txt")).expect("cat"), b"only here\n");
    assert_eq!(c.fake.gets_of(&img.blobs[2]), 1, "the top layer, once: {:?}", c.fake.calls());
    assert_eq!((c.fake.gets_of(&img.blobs[0]), c.fake.gets_of(&img.blobs[1])), (0, 0), "{:?}", c.fake.calls());
    assert_eq!(c.fake.gets_of(&img.config), 1, "the config, for the diff_ids");
}

#[test]
fn listing_rootfs_fetches_every_layer_once() {
    let c = Core::new(Faulty::new(Fake::default()));
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.ls(&root).expect("ls"), ["etc", "top", "usr"]);
    assert_eq!(c.ls(&format!("{root}/usr")).expect("ls usr"), ["bin", "lib"]);
    assert_eq!(c.cat(&format!("{root}/usr/lib/big")).expect("big"), noise(300_000, 1));
    assert_eq!(c.cat(&format!("{root}/usr/bin/tool")).expect("tool"), b"middle\n");
    assert_eq!(c.ls(&root).expect("ls again"), ["etc", "top", "usr"]);
    for (i, b) in img.blobs.iter().enumerate() {
        assert_eq!(c.fake.gets_of(b), 1, "layer {i} fetched once: {:?}", c.fake.calls());
    }
    assert_eq!(c.fake.gets_of(&img.config), 1);
}

#[test]
fn a_wrong_diff_id_is_eio_for_files_that_need_that_layer_only() {
    let c = Core::new(Faulty::new(Fake::default()));
    let layers = three_layers();
    let mut ids: Vec<String> =
        layers.iter().map(|(e, _)| Digest::of(Algorithm::Sha256, &tar_of(e)).to_string()).collect();
    ids[0] = Digest::of(Algorithm::Sha256, b"not the base").to_string();
    let img = push(&c.fake, "r", "v1", &layers, Some(ids));
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/top/only-here.txt")).expect("top-only file"), b"only here\n");
    assert_eq!(c.ls(&root).expect_err("the root needs the base").errno(), libc::EIO);
    assert_eq!(c.cat(&format!("{root}/etc/passwd")).expect_err("a base file").errno(), libc::EIO);
    // Nothing of the bad layer is kept (the good ones may be): refused again, not served.
    c.ls(&root).expect_err("again");
    let good: Vec<String> =
        layers[1..].iter().map(|(e, _)| Digest::of(Algorithm::Sha256, &tar_of(e)).hex().to_string()).collect();
    let names = |sub: &str| -> Vec<String> {
        std::fs::read_dir(c.cache.path().join(sub))
            .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let (decoded, indexes) = (names("decoded/sha256"), names("index/sha256"));
    assert!(decoded.iter().all(|n| good.contains(n)), "only good layers may be kept: {decoded:?}");
    assert!(indexes.iter().all(|n| good.contains(n)), "only good layers' indexes may be kept: {indexes:?}");
    assert!(!indexes.is_empty(), "the top layer's index is kept (so the names above are the cache's)");
    assert_eq!(files_under(&c.cache.path().join("tmp")), 0, "no half-written decode left");
}

#[test]
fn hardlinked_names_share_an_inode_and_nlink() {
    let c = Core::new(Faulty::new(Fake::default()));
    let layers = vec![
        (
            vec![
                dir("bin"),
                file("bin/dash", b"#!dash\n").mode(0o755),
                hardlink("bin/sh", "bin/dash"),
                hardlink("bin/gone", "bin/dash"),
            ],
            Compression::Gzip,
        ),
        (
            vec![dir("usr"), dir("usr/bin"), hardlink("usr/bin/dash", "bin/dash"), dir("bin"), whiteout("bin/gone")],
            Compression::Gzip,
        ),
    ];
    let img = push(&c.fake, "r", "v1", &layers, None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let names = ["bin/dash", "bin/sh", "usr/bin/dash"].map(|p| c.walk(&format!("{root}/{p}")).expect(p));
    for a in &names {
        assert_eq!((a.ino, a.nlink, a.mode, a.kind), (names[0].ino, 3, 0o755, FileKind::File), "{a:?}");
    }
    assert_eq!(c.walk(&format!("{root}/bin/gone")).expect_err("whited out").errno(), libc::ENOENT);
    assert_eq!(c.cat(&format!("{root}/usr/bin/dash")).expect("through the upper name"), b"#!dash\n");
}

/// An entry under a symlink of its own layer is read where the link points (its header checked
/// at open against its name as written); one under a lower layer's link stays literal; one whose
/// parent loops is left out, and the rest of its layer reads.
#[test]
fn entries_under_a_same_layer_symlink_read_where_it_points() {
    let c = Core::new(Faulty::new(Fake::default()));
    let layers = vec![
        (vec![dir("etc"), file("etc/hosts", b"127.0.0.1 localhost\n"), symlink("up", "/etc")], Compression::Gzip),
        (
            vec![
                symlink("ln", "/etc"),
                file("ln/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                hardlink("h", "ln/passwd"),
                file("up/y", b"literal\n"),
                symlink("loop1", "loop2"),
                symlink("loop2", "loop1"),
                file("loop1/f", b"never\n"),
                file("after", b"after\n"),
            ],
            Compression::Gzip,
        ),
    ];
    let img = push(&c.fake, "r", "v1", &layers, None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let at = |p: &str| format!("{root}/{p}");
    assert_eq!(c.cat(&at("etc/passwd")).expect("through the link"), b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(c.ls(&at("etc")).expect("etc"), ["hosts", "passwd"]);
    assert_eq!(c.walk(&at("ln")).expect("ln").kind, FileKind::Symlink, "the link stays a link");
    let (passwd, h) = (c.walk(&at("etc/passwd")).expect("passwd"), c.walk(&at("h")).expect("h"));
    assert_eq!((h.ino, h.nlink), (passwd.ino, 2), "a hard link through the link is the same inode");
    assert_eq!(c.cat(&at("h")).expect("h"), b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(c.walk(&at("up")).expect("up").kind, FileKind::Directory, "a lower layer's link is not followed");
    assert_eq!(c.cat(&at("up/y")).expect("up/y"), b"literal\n");
    assert_eq!(c.walk(&at("loop1")).expect("loop1").kind, FileKind::Symlink);
    assert_eq!(c.cat(&at("after")).expect("the rest of the layer"), b"after\n");
    assert_eq!(c.ls(&root).expect("rootfs"), ["after", "etc", "h", "ln", "loop1", "loop2", "up"]);
}

#[test]
fn getxattr_shows_security_capability_and_user_xattrs() {
    let c = Core::new(Faulty::new(Fake::default()));
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let layers = vec![(
        vec![
            dir("bin"),
            file("bin/ping", b"ping").mode(0o4755).xattr("security.capability", cap).xattr("user.note", b"hi"),
        ],
        Compression::Gzip,
    )];
    let img = push(&c.fake, "r", "v1", &layers, None);
    let ping = c.walk(&format!("r/manifests/{}/rootfs/bin/ping", img.manifest)).expect("ping");
    assert_eq!(ping.mode, 0o4755, "setuid shown");
    assert_eq!(
        c.fs.getxattr(ping.ino, OsStr::new("security.capability"), 0).expect("size"),
        Xattr::Size(cap.len() as u32)
    );
    assert_eq!(c.fs.getxattr(ping.ino, OsStr::new("security.capability"), 64).expect("cap"), Xattr::Data(cap.to_vec()));
    assert_eq!(c.fs.getxattr(ping.ino, OsStr::new("user.note"), 64).expect("user"), Xattr::Data(b"hi".to_vec()));
    assert_eq!(c.fs.getxattr(ping.ino, OsStr::new("user.note"), 1).expect_err("small").errno(), libc::ERANGE);
    assert_eq!(c.fs.getxattr(ping.ino, OsStr::new("user.none"), 64).expect_err("absent").errno(), libc::ENODATA);
    assert_eq!(c.fs.listxattr(ping.ino, 256).expect("list"), Xattr::Data(b"security.capability\0user.note\0".to_vec()));
}

#[test]
fn devices_and_fifos_show_rdev_and_kind() {
    let c = Core::new(Faulty::new(Fake::default()));
    let layers = vec![(
        vec![
            dir("dev"),
            device("dev/null", tar::EntryType::Char, 1, 3).mode(0o666),
            device("dev/sda1", tar::EntryType::Block, 8, 1).mode(0o660).owner(0, 6),
            device("dev/initctl", tar::EntryType::Fifo, 0, 0).mode(0o600),
        ],
        Compression::Gzip,
    )];
    let img = push(&c.fake, "r", "v1", &layers, None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let null = c.walk(&format!("{root}/dev/null")).expect("null");
    assert_eq!((null.kind, null.mode, u64::from(null.rdev)), (FileKind::CharDevice, 0o666, libc::makedev(1, 3)));
    let sda = c.walk(&format!("{root}/dev/sda1")).expect("sda1");
    assert_eq!((sda.kind, sda.gid, u64::from(sda.rdev)), (FileKind::BlockDevice, Some(6), libc::makedev(8, 1)));
    let fifo = c.walk(&format!("{root}/dev/initctl")).expect("fifo");
    assert_eq!((fifo.kind, fifo.mode, fifo.rdev), (FileKind::Fifo, 0o600, 0));
    assert_eq!(c.ls(&format!("{root}/dev")).expect("ls dev"), ["initctl", "null", "sda1"]);
}

/// A reader killed while it waits for a layer another reader is decoding leaves at once (its
/// worker's wait ends within 100 ms of the requester leaving), while the decode goes on.
#[test]
fn a_killed_reader_waiting_on_a_layer_decode_leaves_at_once() {
    let c = Core::new(Faulty::new(Fake::default()));
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let path = format!("r/manifests/{}/rootfs/top/only-here.txt", img.manifest);
    c.walk(&format!("r/manifests/{}", img.manifest)).expect("manifest");
    // Every read of a body takes 1 s: the top layer's download and decode take seconds, so the
    // first reader is still waiting when the second is killed, however fast the machine is
    // (200 ms was not enough on a quiet one).
    c.fake.slow_reads(Duration::from_millis(1000));
    let first = {
        let (fs, path) = (Arc::clone(&c.fs), path.clone());
        std::thread::spawn(move || {
            let mut ino = fs.root_ino();
            for part in path.split('/') {
                ino = fs.lookup(ino, OsStr::new(part)).expect("first reader").ino;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let left = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (fs, path, left) = (Arc::clone(&c.fs), path.clone(), Arc::clone(&left));
        std::thread::spawn(move || {
            regfs::store::flight::for_requester(left, || {
                let mut ino = fs.root_ino();
                for part in path.split('/') {
                    ino = fs.lookup(ino, OsStr::new(part))?.ino;
                }
                Ok::<u64, regfs::error::Error>(ino)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    left.store(true, Ordering::SeqCst);
    let answer = waiter.join().expect("waiter");
    let waited = killed.elapsed();
    assert!(!first.is_finished(), "the decode must still be going for this test to mean anything");
    assert_eq!(answer.expect_err("it left").errno(), libc::EINTR);
    assert!(waited < Duration::from_millis(500), "left {waited:?} after being killed");
    first.join().expect("the first reader gets its file");
}

#[test]
fn rootfs_through_an_index_platform_link() {
    let c = Core::new(Faulty::new(Fake::default()));
    let amd = push(&c.fake, "r", "amd", &[(vec![file("arch", b"amd64\n")], Compression::Gzip)], None);
    let arm = push(&c.fake, "r", "arm", &[(vec![file("arch", b"arm64\n")], Compression::Zstd)], None);
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": amd.manifest.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": arm.manifest.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    });
    let body = serde_json::to_vec(&index).expect("index");
    let idx = c.fake.put_manifest("r", Some("multi"), media::OCI_INDEX, &body, Algorithm::Sha256);
    for (platform, want) in [("linux-amd64", b"amd64\n"), ("linux-arm64", b"arm64\n")] {
        let link = c.walk(&format!("r/manifests/{idx}/{platform}")).expect(platform);
        let target = c.fs.readlink(link.ino).expect("readlink");
        let child = target.strip_prefix("../").expect("a sibling manifest");
        assert_eq!(c.cat(&format!("r/manifests/{child}/rootfs/arch")).expect("arch"), want, "{platform}");
    }
}

/// `--rootfs-layers`: an image with more layers shows `rootfs/` as `EFBIG` (and fetches no
/// layer for it); one within the bound is merged.
#[test]
fn an_image_with_more_layers_than_rootfs_layers_is_efbig() {
    let views = regfs::views::ViewsConfig { rootfs_layers: 2, ..Default::default() };
    let c = Core::builder(Faulty::new(Fake::default())).fs_config(FsConfig { views, ..FsConfig::default() }).build();
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.ls(&root).expect_err("three layers, two allowed").errno(), libc::EFBIG);
    assert!(img.blobs.iter().all(|b| c.fake.gets_of(b) == 0), "no layer fetched");
    let two = push(&c.fake, "r", "v2", &three_layers()[1..], None);
    assert!(!c.ls(&format!("r/manifests/{}/rootfs", two.manifest)).expect("two layers").is_empty());
}

/// A layer at hand for `rootfs/` is the one its own image names: a hostile manifest M that names
/// an honest image N's blob with another image A's diff_id (already in the cache: M never has
/// to serve a byte) does not make N's files, verified against N's own diff_id, open inline
/// (`open_now`, what FUSE does first) on A's bytes.
#[test]
fn a_hostile_manifest_cannot_make_an_honest_image_serve_another_layer_s_bytes() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    // Same shape (root, etc, etc/<file>), so that the entry ids agree.
    let secret = b"A's secret: hunter2 hunter2 hunter2\n";
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let (blob_a, size_a, diff_a) = add_gzip_layer(&fake, &kit::tar_of(&[("etc/secret", secret)]));
    let (blob_n, size_n, diff_n) = add_gzip_layer(&fake, &kit::tar_of(&[("etc/passwd", passwd)]));
    let a = put_gzip_image(&fake, "a", "v1", &[(blob_a, size_a)], std::slice::from_ref(&diff_a));
    let n = put_gzip_image(&fake, "n", "v1", &[(blob_n.clone(), size_n)], &[diff_n]);
    // The hostile one: N's blob, A's diff_id.
    let m = put_gzip_image(&fake, "m", "v1", &[(blob_n, size_n)], &[diff_a]);
    let fs = fs_on(&fake, cache.path());

    let f = fs.walk(&format!("a/manifests/{a}/rootfs/etc/secret")).expect("A's file");
    assert_eq!(cat_as_fuse(&fs, f.ino).expect("cat A"), secret);
    // Browsing the hostile image (it shows A's layer, from the cache: content-addressed).
    let f = fs.walk(&format!("m/manifests/{m}/rootfs/etc/secret")).expect("M's file");
    let _ = cat_as_fuse(&fs, f.ino);
    // The honest image N, verified against its own diff_id.
    let f = fs.walk(&format!("n/manifests/{n}/rootfs/etc/passwd")).expect("N's file");
    assert_eq!(f.size, passwd.len() as u64);
    let got = cat_as_fuse(&fs, f.ino);
    assert_eq!(
        got.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).ok(),
        Some(String::from_utf8_lossy(passwd).into_owned()),
        "N's etc/passwd must be N's bytes (got {got:?})"
    );
}

/// Write an index of `lying` (a tar of the same length) for `diff_id` into `cache`'s `index/`,
/// as an earlier run would have left it altered: a valid trailer, the right diff_id.
fn plant_index(cache: &Path, diff_id: &Digest, lying: &[u8]) {
    let limits = (regfs::views::tar::TarLimits::default(), regfs::views::index::IndexLimits::default());
    let index = regfs::views::index::build_all(lying, limits.0, limits.1).expect("lying index");
    let bytes = regfs::views::index::encode(&index, diff_id);
    let path = cache.join("index").join("sha256").join(diff_id.hex());
    assert!(path.exists(), "the first run kept an index at {}", path.display());
    std::fs::write(&path, bytes).expect("plant the index");
}

/// One image of the layer `honest`; a first run reads `file` of its rootfs (`want`) and so
/// persists the layer's index; then the index of `lying` (same diff_id, valid trailer) is
/// planted in its place, and a second run (a new `Fs` on the same cache) looks `file` up
/// again (it must not use that index).
fn read_then_plant_index(
    fake: &Arc<Faulty<Fake>>,
    cache: &Path,
    honest: &[u8],
    lying: &[u8],
    file: &str,
    want: &[u8],
) -> (Arc<Fs>, Attr) {
    let (blob, size, diff) = add_gzip_layer(fake, honest);
    let d = put_gzip_image(fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let path = format!("r/manifests/{d}/rootfs/{file}");
    {
        let fs = fs_on(fake, cache);
        let f = fs.walk(&path).expect(file);
        assert_eq!(cat_as_fuse(&fs, f.ino).expect("first run"), want);
    }
    plant_index(cache, &diff, lying);
    let fs = fs_on(fake, cache);
    let f = fs.walk(&path).expect("the file, from the planted index");
    (fs, f)
}

/// An index an earlier run left in the cache is not used (the index is built again from the
/// verified tar), and a refused open leaves nothing at hand: an altered index planted between
/// runs, whose entry disagrees with the tar's headers, serves no other file's bytes, inline or
/// not. The header check at open stays, tested by `layout::rootfs`'s unit tests.
#[test]
fn an_altered_index_planted_between_runs_serves_no_other_file_s_bytes_inline() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let passwd: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
    let shadow: &[u8] = b"root:$6$SECRET$HASHHASHHASHHA\n";
    assert_eq!(passwd.len(), shadow.len());
    let honest = kit::tar_of(&[("etc/passwd", passwd), ("etc/shadow", shadow)]);
    // Same names, same lengths, other order: passwd's offsets are shadow's in the honest tar.
    let lying = kit::tar_of(&[("etc/shadow", shadow), ("etc/passwd", passwd)]);
    assert_eq!(honest.len(), lying.len());
    let (fs, f) = read_then_plant_index(&fake, cache.path(), &honest, &lying, "etc/passwd", passwd);
    let first = cat_as_fuse(&fs, f.ino);
    assert_eq!(first.as_ref().ok().map(Vec::as_slice), Some(passwd), "the planted index is not used: {first:?}");
    let again = cat_as_fuse(&fs, f.ino);
    assert_eq!(again.as_ref().ok().map(Vec::as_slice), Some(passwd), "inline, still passwd's bytes: {again:?}");
}

/// An altered index that points `etc/passwd` at the data of `opt/passwd` (the same last
/// component) is not used: an index an earlier run left is not trusted, and the header check
/// at open compares the whole name. `etc/passwd` is its own bytes.
#[test]
fn an_altered_index_pointing_at_a_same_named_file_elsewhere_is_not_used() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let real: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
    let other: &[u8] = b"evil:x:0:0:evil:/root:/bin/sh\n";
    let honest = kit::tar_of(&[("etc/passwd", real), ("opt/passwd", other)]);
    let lying = kit::tar_of(&[("opt/passwd", other), ("etc/passwd", real)]);
    assert_eq!(honest.len(), lying.len());
    let (fs, f) = read_then_plant_index(&fake, cache.path(), &honest, &lying, "etc/passwd", real);
    let opened = fs.open_file(f.ino).and_then(|o| read_all(&fs, o.fh));
    assert_eq!(opened.as_ref().ok().map(Vec::as_slice), Some(real), "etc/passwd's own bytes: {opened:?}");
}

/// One layer's index, counting how often the merge asks for it.
struct Counted {
    index: Arc<regfs::views::index::LayerIndex>,
    asked: std::sync::atomic::AtomicUsize,
}

impl regfs::views::merge::LayerSource for Counted {
    fn len(&self) -> usize {
        1
    }
    fn index(&self, _: usize) -> Result<Arc<regfs::views::index::LayerIndex>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Arc::clone(&self.index))
    }
}

/// `st_nlink` of a hard-linked inode does not cost one lookup per link: were it recomputed on
/// every `getattr` by looking up every name of the inode, `ls -l` of a directory of K links to
/// one file would cost O(K²) lookups (a layer of 100,000 hard links, a 50 MB tar that gzips to
/// a few MB, within the index's 1,048,576 entries, would hold a FUSE thread for hours). Shown
/// by counting index look-ups per `nlink` (they do not grow with the number of links) and
/// timing one stat.
#[test]
fn stat_of_a_name_of_a_much_linked_file_does_not_cost_one_lookup_per_link() {
    use regfs::views::merge::{Found, Merge};
    const K: usize = 20_000;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("bin/busybox").expect("name");
    h.set_mode(0o755);
    h.set_size(4);
    h.set_cksum();
    b.append(&h, &b"\x7fELF"[..]).expect("append");
    for i in 0..K {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_path(format!("bin/l{i:06}")).expect("name");
        h.set_link_name("bin/busybox").expect("link");
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).expect("append");
    }
    let raw = b.into_inner().expect("tar");
    let limits = (regfs::views::tar::TarLimits::default(), regfs::views::index::IndexLimits::default());
    let index = regfs::views::index::build_all(&raw[..], limits.0, limits.1).expect("index");
    let src = Counted { index: Arc::new(index), asked: Default::default() };
    let m = Merge::new(&src);
    let Some(Found::Inode(inode)) = m.lookup("bin/l000001").expect("lookup") else { panic!("a file") };
    let before = src.asked.load(std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let nlink = m.nlink(inode).expect("nlink");
    let took = started.elapsed();
    let asked = src.asked.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(nlink as usize, K + 1);
    eprintln!("one stat of one of {K} links: {asked} index look-ups, {took:?}; ls -l of the directory: {K} times that");
    assert!(
        asked <= 8,
        "one stat asked the layer's index {asked} times ({took:?}): O(links) per stat, O(links²) per ls -l"
    );
}

/// What `listxattr` shows is what `getxattr` finds: xattr names from PAX keys with a NUL
/// (`SCHILY.xattr.user.a<NUL>security.capability`) or empty (`SCHILY.xattr.`) are not listed
/// as names that do not exist.
#[test]
fn every_name_listxattr_shows_is_one_getxattr_finds() {
    use regfs::fs::Xattr;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let mut b = tar::Builder::new(Vec::new());
    let pax: [(&str, &[u8]); 2] =
        [("SCHILY.xattr.user.a\0security.capability", b"\x01\x00\x00\x02"), ("SCHILY.xattr.", b"v")];
    b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v))).expect("pax");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("bin/ping").expect("name");
    h.set_mode(0o755);
    h.set_size(2);
    h.set_cksum();
    b.append(&h, &b"hi"[..]).expect("append");
    let raw = b.into_inner().expect("tar");
    let (blob, size, diff) = add_gzip_layer(&fake, &raw);
    let d = put_gzip_image(&fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let fs = fs_on(&fake, cache.path());
    let f = fs.walk(&format!("r/manifests/{d}/rootfs/bin/ping")).expect("ping");
    let Xattr::Data(list) = fs.listxattr(f.ino, 4096).expect("listxattr") else { panic!("data") };
    let names: Vec<&[u8]> = list.split(|&c| c == 0).collect();
    let names = &names[..names.len().saturating_sub(1)];
    for name in names {
        let n = OsStr::new(std::str::from_utf8(name).expect("utf-8"));
        let got = fs.getxattr(f.ino, n, 4096);
        assert!(!name.is_empty() && got.is_ok(), "listxattr shows {:?}, getxattr: {got:?} (list {list:?})", n);
    }
}

/// A name with a NUL byte (a PAX `path` may hold one) is left out like a name that is not UTF-8:
/// `readdir` never hands the kernel a name that every C program reads cut at the NUL (`ls`
/// would show `passwd`, a name that looks up nothing or another entry, beside the real one).
#[test]
fn a_name_with_a_nul_byte_is_left_out() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"etc/passwd\0evil"[..])]).expect("pax");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("placeholder").expect("name");
    h.set_mode(0o644);
    h.set_size(5);
    h.set_cksum();
    b.append(&h, &b"evil\n"[..]).expect("append");
    let raw = b.into_inner().expect("tar");
    let (blob, size, diff) = add_gzip_layer(&fake, &raw);
    let d = put_gzip_image(&fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let fs = fs_on(&fake, cache.path());
    // Left out, the entry implies nothing either: no `etc` at all is as right as an `etc`
    // without the name.
    let root = fs.walk(&format!("r/manifests/{d}/rootfs")).expect("rootfs");
    let top: Vec<String> = fs.readdir(root.ino).expect("ls rootfs").into_iter().map(|e| e.name).collect();
    let names: Vec<String> = match fs.walk(&format!("r/manifests/{d}/rootfs/etc")) {
        Ok(etc) => fs.readdir(etc.ino).expect("ls etc").into_iter().map(|e| e.name).collect(),
        Err(e) => {
            assert_eq!(e.errno(), libc::ENOENT, "{e}");
            top.clone()
        }
    };
    assert!(names.iter().chain(&top).all(|n| !n.contains('\0')), "a name with a NUL is listed: {names:?}");
}

/// An index is trusted only as built by this run from the verified tar: everything `rootfs/`
/// shows but a regular file's bytes comes from the index alone (symlink targets, modes,
/// owners, xattrs such as `security.capability`, device numbers, which names are hard links),
/// so an index a local user planted between runs must not make `cp -a`/`rsync` of `rootfs/`
/// copy `bin/sh -> /tmp` and a setuid `bin/tool`.
#[test]
fn a_planted_index_does_not_change_symlink_targets_or_modes() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = tar_of(&[symlink("bin/sh", "dash"), file("bin/tool", b"tool\n").mode(0o755)]);
    let lying = tar_of(&[symlink("bin/sh", "/tmp"), file("bin/tool", b"tool\n").mode(0o4755)]);
    assert_eq!(honest.len(), lying.len());
    let (fs, tool) = read_then_plant_index(&fake, cache.path(), &honest, &lying, "bin/tool", b"tool\n");
    let tag = fs.walk("r/tags/v1").expect("tag");
    let link = fs.readlink(tag.ino).expect("tag link");
    let manifest = link.rsplit('/').next().expect("a digest");
    let sh = fs.walk(&format!("r/manifests/{manifest}/rootfs/bin/sh")).expect("bin/sh");
    let target = fs.readlink(sh.ino);
    assert_eq!(
        (tool.mode & 0o7777, target.ok()),
        (0o755, Some("dash".to_string())),
        "bin/tool's mode and bin/sh's target are the verified tar's"
    );
}

/// A hostile manifest pairing an honest blob with a diff_id fails alone (SEMANTICS): indexes
/// kept in memory are keyed by what kind of key they are under, so a hostile OCI manifest
/// naming an honest schema1 image's gzip blob B as an uncompressed `tar` layer with diff_id B
/// (it passes the diff_id check, the blob is B, and fails to parse: gzip bytes are no tar)
/// does not file a failure under the schema1 layer's key (its blob digest, `Target::From`),
/// which would leave the honest image's `rootfs/` `EIO` for the run.
#[test]
fn a_hostile_plain_layer_on_a_schema1_blob_does_not_fail_the_schema1_image() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = kit::tar_of(&[("etc/motd", b"hello\n")]);
    let gz = gzip(&honest);
    let blob = fake.add_blob(&gz);
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": blob.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let m = fake.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    // The hostile image: the same blob, as an uncompressed layer whose diff_id is the blob's digest.
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [blob.to_string()]},
    }))
    .expect("config");
    let cfg = fake.add_blob(&config);
    let evil = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob.to_string(), "size": gz.len()}],
    });
    let e = fake.put_manifest(
        "evil",
        Some("v1"),
        media::OCI_MANIFEST,
        &serde_json::to_vec(&evil).expect("json"),
        Algorithm::Sha256,
    );
    let fs = fs_on(&fake, cache.path());
    // Browsing the hostile image first: its rootfs has no index (a gzip is no tar).
    let hostile = fs.walk(&format!("evil/manifests/{e}/rootfs/etc"));
    assert!(hostile.is_err(), "the hostile layer is no tar: {hostile:?}");
    // The honest schema1 image, verified by its blobSum.
    let got = fs.walk(&format!("r/manifests/{m}/rootfs/etc/motd")).and_then(|f| cat_as_fuse(&fs, f.ino));
    assert_eq!(got.as_ref().ok().map(Vec::as_slice), Some(&b"hello\n"[..]), "the schema1 image fails: {got:?}");
}

/// Reading ahead across a walk of a merged tree hands back each file's own bytes, as its reads
/// give them: a hard link's (the inode of its target), an empty file's, the upper layer's for a
/// file it replaced; never a file whited out or hidden below an opaque directory. A reader that
/// reads every file in walk order meets every window.
#[test]
fn reading_ahead_a_merged_tree_hands_back_only_each_files_own_bytes() {
    let c = Core::new(Faulty::new(Fake::default()));
    let layers = vec![
        (
            vec![
                dir("a"),
                file("a/f0", &noise(3000, 1)),
                file("a/empty", b""),
                hardlink("a/h", "a/f0"),
                file("a/old", b"old bytes"),
                file("a/gone", b"gone"),
                dir("a/op"),
                file("a/op/x", b"lower x"),
                file("a/tail", &noise(2000, 2)),
            ],
            Compression::Gzip,
        ),
        (
            vec![
                dir("a"),
                file("a/old", b"the upper layer's longer bytes"),
                whiteout("a/gone"),
                dir("a/op"),
                file("a/op/.wh..wh..opq", b""),
                file("a/op/y", b"upper y"),
                file("a/z", &noise(500, 3)),
            ],
            Compression::Gzip,
        ),
    ];
    let img = push(&c.fake, "r", "v1", &layers, None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let mut walk = Vec::new();
    kit::walk_listed(&c.fs, c.walk(&root).expect("rootfs").ino, &root, &mut walk);
    let names: Vec<&str> = walk.iter().map(|(p, _)| p.strip_prefix(&format!("{root}/")).unwrap_or(p)).collect();
    for hidden in ["a/gone", "a/op/x"] {
        assert!(!names.contains(&hidden), "{hidden} listed: {names:?}");
    }
    let mut handed = 0;
    for (_, ino) in &walk {
        for (held, data) in c.fs.read_ahead_of(*ino) {
            let (path, _) = walk.iter().find(|(_, i)| *i == held).expect("an inode of the walk");
            assert_eq!(data, c.cat(path).expect("cat"), "{path}: handed back other bytes than it reads");
            handed += 1;
        }
    }
    assert!(handed >= 4, "{handed} files handed back in a walk of {names:?}");
}
