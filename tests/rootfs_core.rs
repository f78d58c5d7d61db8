//! `rootfs/` through the core (`Fs` and `Store` over an in-memory registry that can lie and
//! stall), on images made here with the tar crate: what each operation fetches, what a wrong
//! diff_id fails, and what the kernel is told of hard links, xattrs, devices and FIFOs.

use regfs::testkit::paths::Paths;
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
use regfs::store::{Store, StoreConfig};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;

#[derive(Clone, Copy, Debug)]
enum Compression {
    Gzip,
    Zstd,
    Plain,
}

fn compress(raw: &[u8], c: Compression) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    match c {
        Compression::Plain => Ok(raw.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw)?;
            e.finish()
        }
        Compression::Zstd => zstd::encode_all(raw, 3),
    }
}

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
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Plain => "application/vnd.oci.image.layer.v1.tar",
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
    let mut descs = Vec::new();
    let mut ids = Vec::new();
    for (entries, c) in layers {
        let raw = tar_of(entries);
        ids.push(Digest::of(Algorithm::Sha256, &raw).to_string());
        let blob = compress(&raw, *c).expect("compress");
        let d = fake.add_blob(&blob);
        descs.push(serde_json::json!({"mediaType": layer_media_type(*c), "digest": d.to_string(), "size": blob.len()}));
        blobs.push(d);
    }
    let ids = diff_ids.unwrap_or(ids);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .expect("config");
    let cfg = fake.add_blob(&config);
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
        "layers": descs,
    });
    let body = serde_json::to_vec(&m).expect("manifest");
    let manifest = fake.put_manifest(repo, Some(tag), media::OCI_MANIFEST, &body, Algorithm::Sha256);
    Image { manifest, blobs, config: cfg }
}

struct Core {
    fake: Arc<Faulty<Fake>>,
    fs: Arc<Fs>,
    cache: tempfile::TempDir,
}

fn core(fake: Faulty<Fake>) -> Core {
    core_with(fake, FsConfig::default())
}

fn core_with(fake: Faulty<Fake>, fs_config: FsConfig) -> Core {
    let fake = Arc::new(fake);
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), cache_size: 1 << 30, ..StoreConfig::default() };
    let store = Store::new(fake.clone(), &config).expect("store");
    Core { fake, fs: Arc::new(Fs::new(Arc::new(store), fs_config)), cache }
}

impl Core {
    fn walk(&self, path: &str) -> Result<Attr> {
        self.fs.walk(path)
    }

    fn cat(&self, path: &str) -> Result<Vec<u8>> {
        self.fs.cat(path)
    }

    fn ls(&self, path: &str) -> Result<Vec<String>> {
        self.fs.ls(path)
    }

    /// GETs of blob `d` so far.
    fn gets_of(&self, d: &Digest) -> usize {
        let d = d.to_string();
        self.fake.calls().iter().filter(|c| c.starts_with("GET blob") && c.contains(&d)).count()
    }
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
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let store = Store::new(fake.clone(), &config).expect("store");
    let fs = Arc::new(Fs::with_images(Arc::new(store), FsConfig::default(), Arc::new(Tars::new(&tars))));
    let c = Core { fake, fs, cache };
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

fn noise(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
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
    let c = core(Faulty::new(Fake::default()));
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/top/only-here.txt")).expect("cat"), b"only here\n");
    assert_eq!(c.gets_of(&img.blobs[2]), 1, "the top layer, once: {:?}", c.fake.calls());
    assert_eq!((c.gets_of(&img.blobs[0]), c.gets_of(&img.blobs[1])), (0, 0), "{:?}", c.fake.calls());
    assert_eq!(c.gets_of(&img.config), 1, "the config, for the diff_ids");
}

#[test]
fn listing_rootfs_fetches_every_layer_once() {
    let c = core(Faulty::new(Fake::default()));
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.ls(&root).expect("ls"), ["etc", "top", "usr"]);
    assert_eq!(c.ls(&format!("{root}/usr")).expect("ls usr"), ["bin", "lib"]);
    assert_eq!(c.cat(&format!("{root}/usr/lib/big")).expect("big"), noise(300_000, 1));
    assert_eq!(c.cat(&format!("{root}/usr/bin/tool")).expect("tool"), b"middle\n");
    assert_eq!(c.ls(&root).expect("ls again"), ["etc", "top", "usr"]);
    for (i, b) in img.blobs.iter().enumerate() {
        assert_eq!(c.gets_of(b), 1, "layer {i} fetched once: {:?}", c.fake.calls());
    }
    assert_eq!(c.gets_of(&img.config), 1);
}

#[test]
fn a_wrong_diff_id_is_eio_for_files_that_need_that_layer_only() {
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core(Faulty::new(Fake::default()));
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
    let c = core_with(Faulty::new(Fake::default()), FsConfig { views, ..FsConfig::default() });
    let img = push(&c.fake, "r", "v1", &three_layers(), None);
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.ls(&root).expect_err("three layers, two allowed").errno(), libc::EFBIG);
    assert!(img.blobs.iter().all(|b| c.gets_of(b) == 0), "no layer fetched");
    let two = push(&c.fake, "r", "v2", &three_layers()[1..], None);
    assert!(!c.ls(&format!("r/manifests/{}/rootfs", two.manifest)).expect("two layers").is_empty());
}
