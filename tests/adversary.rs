//! Adversary review of `layers/<n>.tar` and `rootfs/` (branch adv-views): each test shows a hole
//! found on main and is `#[ignore]`d until it is fixed, so the suite stays green.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use regfs::digest::{Algorithm, Digest};
use regfs::error::Result;
use regfs::fs::{Attr, Fs, FsConfig};
use regfs::media;
use regfs::store::{Store, StoreConfig};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// A tar of regular files `(name, data)` in order (ustar, ended by the EOA).
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).expect("name");
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).expect("gzip");
    e.finish().expect("gzip")
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Put an OCI image whose layers are `(blob digest, blob size)` (gzip) and whose config says
/// `diff_ids`, as `repo:tag`.
fn put_image(fake: &Faulty<Fake>, repo: &str, tag: &str, layers: &[(Digest, usize)], diff_ids: &[Digest]) -> Digest {
    let ids: Vec<String> = diff_ids.iter().map(Digest::to_string).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .expect("config");
    let cfg = fake.add_blob(&config);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, size)| serde_json::json!({"mediaType": GZ, "digest": d.to_string(), "size": size}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
        "layers": descs,
    });
    let body = serde_json::to_vec(&m).expect("manifest");
    fake.put_manifest(repo, Some(tag), media::OCI_MANIFEST, &body, Algorithm::Sha256)
}

/// A gzip layer of `raw` added to the registry: (blob digest, blob size, diff_id).
fn add_layer(fake: &Faulty<Fake>, raw: &[u8]) -> (Digest, usize, Digest) {
    let blob = gzip(raw);
    (fake.add_blob(&blob), blob.len(), Digest::of(Algorithm::Sha256, raw))
}

fn fs_on(fake: &Arc<Faulty<Fake>>, cache: &Path) -> Fs {
    let config = StoreConfig { cache_dir: cache.to_path_buf(), cache_size: 1 << 30, ..StoreConfig::default() };
    let store = Store::new(fake.clone(), &config).expect("store");
    Fs::new(Arc::new(store), FsConfig::default())
}

fn walk(fs: &Fs, path: &str) -> Result<Attr> {
    fs.walk(path)
}

fn read_all(fs: &Fs, fh: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(fh, out.len() as u64, 4096)?;
        if chunk.is_empty() {
            break;
        }
        out.extend(chunk);
    }
    fs.release(fh);
    Ok(out)
}

/// `cat` the way the kernel reaches regfs: FUSE's `open` tries `open_now` first (a layer at
/// hand), and only then `open_file`.
fn cat_as_fuse(fs: &Fs, ino: u64) -> Result<Vec<u8>> {
    let fh = match fs.open_now(ino) {
        Some(opened) => opened?.fh,
        None => fs.open_file(ino)?.fh,
    };
    read_all(fs, fh)
}

/// HOLE: `rootfs/`'s table of layers at hand is keyed by the layer's *blob* digest, but holds
/// the index and decoded tar of the *diff_id* the manifest that opened it named. A hostile
/// manifest M that names an honest image N's blob with another image A's diff_id (already in
/// the cache: M never has to serve a byte) files A's index and tar under N's blob; N's files,
/// verified against N's own diff_id, then open inline (`open_now`, what FUSE does first) on
/// A's bytes.
#[test]
fn a_hostile_manifest_cannot_make_an_honest_image_serve_another_layer_s_bytes() {
    let _serial = serial();
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    // Same shape (root, etc, etc/<file>), so that the entry ids agree.
    let secret = b"A's secret: hunter2 hunter2 hunter2\n";
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let (blob_a, size_a, diff_a) = add_layer(&fake, &tar_of(&[("etc/secret", secret)]));
    let (blob_n, size_n, diff_n) = add_layer(&fake, &tar_of(&[("etc/passwd", passwd)]));
    let a = put_image(&fake, "a", "v1", &[(blob_a, size_a)], std::slice::from_ref(&diff_a));
    let n = put_image(&fake, "n", "v1", &[(blob_n.clone(), size_n)], &[diff_n]);
    // The hostile one: N's blob, A's diff_id.
    let m = put_image(&fake, "m", "v1", &[(blob_n, size_n)], &[diff_a]);
    let fs = fs_on(&fake, cache.path());

    let f = walk(&fs, &format!("a/manifests/{a}/rootfs/etc/secret")).expect("A's file");
    assert_eq!(cat_as_fuse(&fs, f.ino).expect("cat A"), secret);
    // Browsing the hostile image (it shows A's layer, from the cache: content-addressed).
    let f = walk(&fs, &format!("m/manifests/{m}/rootfs/etc/secret")).expect("M's file");
    let _ = cat_as_fuse(&fs, f.ino);
    // The honest image N, verified against its own diff_id.
    let f = walk(&fs, &format!("n/manifests/{n}/rootfs/etc/passwd")).expect("N's file");
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
) -> (Fs, Attr) {
    let (blob, size, diff) = add_layer(fake, honest);
    let d = put_image(fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let path = format!("r/manifests/{d}/rootfs/{file}");
    {
        let fs = fs_on(fake, cache);
        let f = walk(&fs, &path).expect(file);
        assert_eq!(cat_as_fuse(&fs, f.ino).expect("first run"), want);
    }
    plant_index(cache, &diff, lying);
    let fs = fs_on(fake, cache);
    let f = walk(&fs, &path).expect("the file, from the planted index");
    (fs, f)
}

/// Was a HOLE: SEMANTICS promised that an open re-parses the entry's headers, so an index read
/// back from disk (trusted on its checksum) that disagrees is `EIO`; but the refused open had
/// already filed the layer as "at hand", and the next open (FUSE tries `open_now` first) took
/// the inline path and served the other file's bytes (fixed: a refused open leaves nothing at
/// hand). Since then an index an earlier run left is not used at all (the index is built again
/// from the verified tar), so both opens serve the file's own bytes. The header check at open
/// stays, tested by `layout::rootfs`'s unit tests.
#[test]
fn an_altered_index_planted_between_runs_serves_no_other_file_s_bytes_inline() {
    let _serial = serial();
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let passwd: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
    let shadow: &[u8] = b"root:$6$SECRET$HASHHASHHASHHA\n";
    assert_eq!(passwd.len(), shadow.len());
    let honest = tar_of(&[("etc/passwd", passwd), ("etc/shadow", shadow)]);
    // Same names, same lengths, other order: passwd's offsets are shadow's in the honest tar.
    let lying = tar_of(&[("etc/shadow", shadow), ("etc/passwd", passwd)]);
    assert_eq!(honest.len(), lying.len());
    let (fs, f) = read_then_plant_index(&fake, cache.path(), &honest, &lying, "etc/passwd", passwd);
    let first = cat_as_fuse(&fs, f.ino);
    assert_eq!(first.as_ref().ok().map(Vec::as_slice), Some(passwd), "the planted index is not used: {first:?}");
    let again = cat_as_fuse(&fs, f.ino);
    assert_eq!(again.as_ref().ok().map(Vec::as_slice), Some(passwd), "inline, still passwd's bytes: {again:?}");
}

/// Was a HOLE: the header check at open compared only the *last component* of the name, so an
/// altered index (trusted on its checksum) that pointed `etc/passwd` at the data of
/// `opt/passwd` passed it (fixed: the whole name is compared). Since then an index an earlier
/// run left is not used at all: `etc/passwd` is its own bytes.
#[test]
fn an_altered_index_pointing_at_a_same_named_file_elsewhere_is_not_used() {
    let _serial = serial();
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let real: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n";
    let other: &[u8] = b"evil:x:0:0:evil:/root:/bin/sh\n";
    let honest = tar_of(&[("etc/passwd", real), ("opt/passwd", other)]);
    let lying = tar_of(&[("opt/passwd", other), ("etc/passwd", real)]);
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

/// HOLE (CPU): `st_nlink` of a hard-linked inode is recomputed on every `getattr` by looking up
/// every name of the inode (`Merge::nlink`), so one stat costs O(links) and `ls -l` of a
/// directory of K links to one file costs O(K²) lookups. A layer of 100,000 hard links (a
/// 50 MB tar that gzips to a few MB; the index allows 1,048,576 entries) makes `ls -l` run
/// for hours on a FUSE thread. Shown by counting index look-ups per `nlink` (it should not
/// grow with the number of links) and timing one stat.
#[test]
fn stat_of_a_name_of_a_much_linked_file_does_not_cost_one_lookup_per_link() {
    let _serial = serial();
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

/// HOLE (cache integrity, schema1): after a restart a schema1 layer's decoded file is checked
/// only against the diff_id its own `index/` file records, and that file is trusted on an
/// unkeyed sha256 trailer. Nothing ties the pair to the blob's digest, the one thing verified:
/// a decoded file and an index planted together in the cache between runs are served as the
/// layer (a blob altered the same way is hashed again and replaced, SEMANTICS' rule for
/// `blobs/`).
#[test]
fn a_planted_schema1_decoded_file_and_index_are_not_served() {
    let _serial = serial();
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = tar_of(&[("etc/motd", b"hello\n")]);
    let evil = tar_of(&[("etc/motd", b"pwned\n")]);
    let blob = fake.add_blob(&gzip(&honest));
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": blob.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let m = fake.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let path = format!("r/manifests/{m}/rootfs/etc/motd");
    {
        let fs = fs_on(&fake, cache.path());
        let f = walk(&fs, &path).expect("motd");
        assert_eq!(cat_as_fuse(&fs, f.ino).expect("first run"), b"hello\n");
    }
    let decoded = cache.path().join("decoded-from/sha256").join(blob.hex());
    let index = cache.path().join("index/sha256").join(blob.hex());
    assert!(decoded.exists() && index.exists(), "the first run kept both");
    std::fs::write(&decoded, &evil).expect("plant the decoded file");
    let limits = (regfs::views::tar::TarLimits::default(), regfs::views::index::IndexLimits::default());
    let built = regfs::views::index::build_all(&evil[..], limits.0, limits.1).expect("index");
    let bytes = regfs::views::index::encode(&built, &Digest::of(Algorithm::Sha256, &evil));
    std::fs::write(&index, bytes).expect("plant the index");
    let fs = fs_on(&fake, cache.path());
    let f = walk(&fs, &path).expect("motd");
    let got =
        cat_as_fuse(&fs, f.ino).and_then(|b| String::from_utf8(b).map_err(|e| regfs::error::Error::Io(e.to_string())));
    assert_eq!(got.ok().as_deref(), Some("hello\n"), "the planted layer was served");
}

/// HOLE (low): xattr names are taken from PAX keys as any UTF-8, NUL and empty included, and
/// `listxattr` joins them with NULs: `SCHILY.xattr.user.a<NUL>security.capability` lists a
/// `security.capability` (and `user.a`) that `getxattr` then says does not exist, and
/// `SCHILY.xattr.` lists an empty name. What a name-list shows should be what `getxattr` finds.
#[test]
fn every_name_listxattr_shows_is_one_getxattr_finds() {
    let _serial = serial();
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
    let (blob, size, diff) = add_layer(&fake, &raw);
    let d = put_image(&fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let fs = fs_on(&fake, cache.path());
    let f = walk(&fs, &format!("r/manifests/{d}/rootfs/bin/ping")).expect("ping");
    let Xattr::Data(list) = fs.listxattr(f.ino, 4096).expect("listxattr") else { panic!("data") };
    let names: Vec<&[u8]> = list.split(|&c| c == 0).collect();
    let names = &names[..names.len().saturating_sub(1)];
    for name in names {
        let n = OsStr::new(std::str::from_utf8(name).expect("utf-8"));
        let got = fs.getxattr(f.ino, n, 4096);
        assert!(!name.is_empty() && got.is_ok(), "listxattr shows {:?}, getxattr: {got:?} (list {list:?})", n);
    }
}

/// Live heap bytes of this test binary (every test in it shares the count).
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: allocated by `alloc` with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Tests of this binary run one at a time: the live-heap count is the binary's, so another
/// test allocating meanwhile (the 20,000-link tar) would count against the memory bound.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn live() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// HOLE (memory): indexes in memory are bounded by `ViewsConfig::index_memory` (64 MiB) in the views'
/// LRU, but `rootfs/`'s table of layers at hand keeps up to `READY_LAYERS` (64) of them, each up
/// to `MAX_INDEX_BYTES` (128 MiB), whatever they weigh: a hostile image of layers whose indexes
/// are big (64 KiB xattrs per entry, long symlink targets) pins them all once one file of each
/// has been opened (8 GiB at the bounds). Here 5 layers of 32 MiB of index each: opening one
/// file of each, once all are indexed, reads the evicted indexes back from disk and keeps them
/// (live heap counted by this binary's allocator).
#[test]
fn indexes_held_for_inline_opens_stay_within_the_index_memory_bound() {
    let _serial = serial();
    const LAYERS: usize = 5;
    const PER_LAYER: usize = 500;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let mut layers = Vec::new();
    let mut ids = Vec::new();
    for l in 0..LAYERS {
        let mut b = tar::Builder::new(Vec::new());
        let value = vec![b'a' + l as u8; 65_000];
        for i in 0..PER_LAYER {
            b.append_pax_extensions([("SCHILY.xattr.user.big", value.as_slice())]).expect("pax");
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path(format!("l{l}/f{i}")).expect("name");
            h.set_mode(0o644);
            h.set_size(1);
            h.set_cksum();
            b.append(&h, &b"x"[..]).expect("append");
        }
        let raw = b.into_inner().expect("tar");
        let (blob, size, diff) = add_layer(&fake, &raw);
        layers.push((blob, size));
        ids.push(diff);
    }
    let d = put_image(&fake, "r", "v1", &layers, &ids);
    let fs = fs_on(&fake, cache.path());
    // Every layer indexed first (the views' LRU keeps what its bound allows, the rest on disk).
    let files: Vec<Attr> =
        (0..LAYERS).map(|l| walk(&fs, &format!("r/manifests/{d}/rootfs/l{l}/f0")).expect("file")).collect();
    let before = live();
    // Then one file of each opened: nothing more than a descriptor per layer need stay.
    for f in &files {
        assert_eq!(cat_as_fuse(&fs, f.ino).expect("cat"), b"x");
    }
    let held = live();
    eprintln!(
        "live heap: {} MiB once all are indexed, {} MiB after one open in each of {LAYERS} layers",
        before >> 20,
        held >> 20
    );
    let bound = regfs::views::ViewsConfig::default().index_memory + (40 << 20);
    assert!(held <= bound, "{} MiB live for indexes bounded at 64 MiB: evicted ones pinned", held >> 20);
}

/// HOLE (low): a PAX `path` may hold a NUL byte, and the index keeps it: `readdir` then hands
/// the kernel a name that every C program reads cut at the NUL, so `ls` shows `passwd` (a
/// name that looks up nothing, or another entry) beside the real one. Names with NUL should be
/// left out like names that are not UTF-8.
#[test]
fn a_name_with_a_nul_byte_is_left_out() {
    let _serial = serial();
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
    let (blob, size, diff) = add_layer(&fake, &raw);
    let d = put_image(&fake, "r", "v1", &[(blob, size)], std::slice::from_ref(&diff));
    let fs = fs_on(&fake, cache.path());
    // Left out, the entry implies nothing either: no `etc` at all is as right as an `etc`
    // without the name.
    let root = walk(&fs, &format!("r/manifests/{d}/rootfs")).expect("rootfs");
    let top: Vec<String> = fs.readdir(root.ino).expect("ls rootfs").into_iter().map(|e| e.name).collect();
    let names: Vec<String> = match walk(&fs, &format!("r/manifests/{d}/rootfs/etc")) {
        Ok(etc) => fs.readdir(etc.ino).expect("ls etc").into_iter().map(|e| e.name).collect(),
        Err(e) => {
            assert_eq!(e.errno(), libc::ENOENT, "{e}");
            top.clone()
        }
    };
    assert!(names.iter().chain(&top).all(|n| !n.contains('\0')), "a name with a NUL is listed: {names:?}");
}

/// A tar of `(name, kind, target or data, mode)` entries, ustar.
fn tar_with(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, mode) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_path(name).expect("name");
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name(std::str::from_utf8(data).expect("target")).expect("link");
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).expect("append");
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
    }
    b.into_inner().expect("tar")
}

/// Was a HOLE (cache integrity, metadata): an index read back from `index/` was trusted on its
/// own sha256 trailer and the diff_id it records, and an open re-parses a regular file's
/// headers (so its bytes cannot be swapped). But everything else `rootfs/` shows comes from the
/// index alone: symlink targets (`readlink`), modes (setuid), owners, xattrs
/// (`security.capability`), device numbers, which names are hard links. A local user who
/// planted an index between runs made `cp -a`/`rsync` of `rootfs/` copy `bin/sh -> /tmp` and a
/// setuid `bin/tool`. Now an index is trusted only as built by this run from the verified tar.
#[test]
fn a_planted_index_does_not_change_symlink_targets_or_modes() {
    let _serial = serial();
    use tar::EntryType::{Regular, Symlink};
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = tar_with(&[("bin/sh", Symlink, b"dash", 0o777), ("bin/tool", Regular, b"tool\n", 0o755)]);
    let lying = tar_with(&[("bin/sh", Symlink, b"/tmp", 0o777), ("bin/tool", Regular, b"tool\n", 0o4755)]);
    assert_eq!(honest.len(), lying.len());
    let (fs, tool) = read_then_plant_index(&fake, cache.path(), &honest, &lying, "bin/tool", b"tool\n");
    let tag = walk(&fs, "r/tags/v1").expect("tag");
    let link = fs.readlink(tag.ino).expect("tag link");
    let manifest = link.rsplit('/').next().expect("a digest");
    let sh = walk(&fs, &format!("r/manifests/{manifest}/rootfs/bin/sh")).expect("bin/sh");
    let target = fs.readlink(sh.ino);
    assert_eq!(
        (tool.mode & 0o7777, target.ok()),
        (0o755, Some("dash".to_string())),
        "bin/tool's mode and bin/sh's target are the verified tar's"
    );
}

// ---- adv-final: foreign layers (`registry/foreign.rs`) ----

use regfs::registry::foreign::{Foreign, UrlRules};

fn url_rules(allow: &[&str], deny: &[&str]) -> UrlRules {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    UrlRules::new(&s(allow), &s(deny)).expect("patterns")
}

/// The patterns are matched against the URL as the manifest wrote it, but the URL fetched is
/// the WHATWG parser's serialisation of it, which drops tabs and newlines anywhere and
/// resolves `.`/`..` segments. So a manifest can name a URL a `--layer-url-deny` pattern
/// refuses, written so the raw text slips past the pattern (Go's parser, the seed's, refuses
/// control characters outright).
#[test]
fn a_denied_url_cannot_be_smuggled_past_the_deny_pattern() {
    let rules = url_rules(&["^https?://foo/"], &["^https?://foo/nope"]);
    assert!(rules.check(&["http://foo/nope".into()]).is_err(), "the plain URL is denied");
    for sneaky in ["http://foo/no\tpe", "http://foo/n\nope", "http://foo/x/../nope", "http://foo/./nope"] {
        match rules.check(&[sneaky.to_string()]) {
            Err(_) => {}
            Ok(fetched) => panic!("{sneaky:?} passes the rules and regfs would fetch {}", fetched[0]),
        }
    }
}

/// The seed's own allow pattern (`^https?://foo`) passes `http://foo@evil.example/`; regfs then
/// strips the `user@` and fetches from evil.example. A URL with a userinfo is never needed by
/// regfs (it never sends one), so refusing it costs nothing and closes the classic bypass.
#[test]
fn an_allow_pattern_naming_a_host_does_not_let_another_host_through_a_userinfo() {
    let rules = url_rules(&["^https?://foo"], &[]);
    if let Ok(fetched) = rules.check(&["http://foo@evil.example/layer".into()]) {
        panic!("allowed, and fetched from host {:?}", fetched[0].host_str());
    }
}

/// One HTTP/1.1 answer per connection from `answer(path)`, on 127.0.0.1; the paths asked.
fn http_server(answer: impl Fn(&str) -> String + Send + 'static) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            seen.lock().expect("lock").push(path.clone());
            let _ = conn.write_all(answer(&path).as_bytes());
        }
    });
    (base, asked)
}

/// `--layer-url-deny` (and allow) are checked on the manifest's URL only: a redirect from an
/// allowed host is followed anywhere http(s), denied hosts included (SSRF to what the operator
/// denied, e.g. an internal network, through any open redirector on an allowed host).
#[test]
fn a_foreign_layer_redirect_to_a_denied_url_is_not_followed() {
    let (denied, denied_asked) =
        http_server(|_| "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsecr".into());
    let target = format!("{denied}/internal/metadata");
    let (allowed, _) = http_server(move |_| {
        format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    });
    let deny = format!("^{}", regex::escape(&denied));
    let rules = url_rules(&[&format!("^{}", regex::escape(&allowed))], &[&deny]);
    let urls = rules.check(&[format!("{allowed}/layer")]).expect("the manifest's URL is allowed");
    let foreign = Foreign::new(rules, &regfs::registry::http::Options::default()).expect("client");
    let got = foreign.get(&urls[0], 0);
    let asked = denied_asked.lock().expect("lock").clone();
    assert!(asked.is_empty() && got.is_err(), "the denied host was asked {asked:?}; result ok: {}", got.is_ok());
}

// ---- adv-final: referrers (`layout/referrers.rs`) ----

use regfs::manifest::referrers::Referrer;
use regfs::registry::{BlobReply, Client, Fetch, ManifestReply};

/// A registry (`Fake`) whose referrers API answers `list` for every subject.
struct ListsReferrers {
    inner: Arc<Faulty<Fake>>,
    list: Vec<Referrer>,
    /// A repository whose referrers API answers 404 (e.g. NAME_UNKNOWN: a repository gone).
    missing_in: &'static str,
}

impl Client for ListsReferrers {
    fn catalog(&self) -> Result<Vec<String>> {
        self.inner.catalog()
    }
    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        self.inner.tags(repo)
    }
    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        self.inner.manifest(repo, reference, fetch)
    }
    fn referrers(&self, repo: &str, _: &Digest) -> Result<Option<Vec<Referrer>>> {
        Ok((repo != self.missing_in).then(|| self.list.clone()))
    }
    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        self.inner.blob_size(repo, digest)
    }
    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        self.inner.blob(repo, digest, offset)
    }
}

/// `Referrers::child` (a lookup) rebuilds the whole directory, type names made unique by a
/// linear scan per name: O(n²) per lookup in the number of distinct artifact types. A list of
/// 10 000 referrers (within `MAX_REFERRERS`), each with its own type, which anyone who can push
/// artifacts to the repository can make, costs seconds of CPU per name looked up: `ls -l
/// referrers/` (one lookup per name) holds FUSE threads for hours.
#[test]
fn looking_up_names_in_a_long_referrers_list_is_not_quadratic() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (image, _) = fake.image("r", "v1", b"layer");
    let list: Vec<Referrer> = (0..10_000)
        .map(|i| Referrer {
            digest: Digest::of(Algorithm::Sha256, format!("referrer {i}").as_bytes()),
            media_type: media::OCI_MANIFEST.into(),
            size: 100,
            artifact_type: Some(format!("t{i}/x")),
            annotations: Vec::new(),
        })
        .collect();
    let names: Vec<String> = list.iter().take(20).map(|r| r.digest.to_string()).collect();
    let client = Arc::new(ListsReferrers { inner: fake, list, missing_in: "" });
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let fs = Fs::new(Arc::new(Store::new(client, &config).expect("store")), FsConfig::default());
    let top = fs.walk(&format!("r/manifests/{image}/referrers")).expect("referrers/");
    let started = std::time::Instant::now();
    for name in &names {
        fs.lookup(top.ino, std::ffi::OsStr::new(name)).expect("a listed referrer");
    }
    let each = started.elapsed() / names.len() as u32;
    // A linear directory would take well under a millisecond per name here.
    assert!(
        each < std::time::Duration::from_millis(20),
        "{each:?} per lookup; 20 000 names would take {:?}",
        each * 20_000
    );
}

/// One 404 from the referrers API, for any repository (a repository deleted or renamed since
/// its manifest was read, a per-repository proxy rule, a registry hiccup), turns the API off
/// for the whole mount (`Store::no_referrers_api`, never reset): from then on every subject of
/// every repository reads the `sha256-<hex>` tag instead, and referrers pushed through the API
/// (no tag, as `oras attach` does on an OCI 1.1 registry) are hidden until the next mount.
#[test]
fn a_404_in_one_repository_does_not_hide_the_referrers_of_every_other() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (image, _) = fake.image("r", "v1", b"layer");
    let (other, _) = fake.image("gone", "v1", b"other layer");
    let sig = Referrer {
        digest: Digest::of(Algorithm::Sha256, b"a signature"),
        media_type: media::OCI_MANIFEST.into(),
        size: 100,
        artifact_type: Some("application/vnd.cncf.notary.signature".into()),
        annotations: Vec::new(),
    };
    let client = Arc::new(ListsReferrers { inner: fake, list: vec![sig.clone()], missing_in: "gone" });
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let fs = Fs::new(Arc::new(Store::new(client, &config).expect("store")), FsConfig::default());
    assert!(fs.ls(&format!("gone/manifests/{other}/referrers")).expect("ls").is_empty());
    let shown = fs.ls(&format!("r/manifests/{image}/referrers")).expect("ls");
    assert!(shown.contains(&sig.digest.to_string()), "r's signature is hidden: {shown:?}");
}

// ---- adv-final: mirrors (`registry/mirrors.rs`) ----

/// `Mirrored::distrust` finds the mirror that served bad bytes by "its name is a prefix of the
/// reply's URL". Two mirrors on one host (registries.conf `location = "m/a"` and `"m/b"`, both
/// named `https://m/`; or a mirror whose URL is a prefix of another's) are not told apart: the
/// first is distrusted, the one that lied is asked again, lies again, and the read fails with
/// EIO though the registry holds the right bytes. A mirror could make a read fail, not just slow.
#[test]
fn a_lying_mirror_beside_another_on_the_same_host_cannot_fail_a_read() {
    use regfs::registry::mirrors::{Mirror, MirrorConfig, Mirrored};
    let registry = Fake::default();
    let (_, layer) = registry.image("r", "v1", b"layer bytes");
    let lacking = Fake::default(); // a pull-through cache that has not cached it yet
    let liar = Fake::default();
    liar.image("b/r", "v1", b"layer bytes");
    liar.corrupt_blob(&layer, b"other bytes".to_vec());
    let mirror = |name: &str, client: Fake, path: &str| Mirror {
        name: name.into(),
        client: Box::new(client),
        resolve: false,
        path: path.into(),
    };
    // Both on host m: the same name, as main.rs gives them (`spec.url.to_string()`).
    let mirrors = vec![mirror("fake://", lacking, "a"), mirror("fake://", liar, "b")];
    let client = Arc::new(Mirrored::new(Box::new(registry), mirrors, MirrorConfig::default()));
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), small_blob: 0, ..StoreConfig::default() };
    let store = Store::new(client, &config).expect("store");
    store.blob("r", &layer, Some(11)).expect("the registry has the right bytes");
}

/// hosts.toml: a relative `ca` is joined under `DIR/<host>/` even when the file read was
/// `DIR/_default/hosts.toml` (containerd reads it beside the file that names it). The CA the
/// operator put beside `_default/hosts.toml` is never found; a file of that name under
/// `DIR/<host>/` (another config's directory) is trusted instead.
#[test]
fn a_relative_ca_in_the_default_hosts_toml_is_read_beside_it() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("_default")).expect("mkdir");
    std::fs::write(dir.path().join("_default/hosts.toml"), "[host.\"https://m.example\"]\nca = \"ca.pem\"\n")
        .expect("write");
    let (from, specs) =
        regfs::registry::mirror_config::hosts_toml(dir.path(), "r.example").expect("parses").expect("found");
    assert_eq!(from, dir.path().join("_default/hosts.toml"));
    assert_eq!(specs[0].ca, [dir.path().join("_default/ca.pem")]);
}

// ---- adv9: index trust, failed decodes, large builds ----

/// Was a HOLE (cross-image, schema1; fixed: the memory key says which kind of key it is): layer indexes were kept in memory by one digest, the index key,
/// whatever kind of key it is: a schema1 layer's index by its *blob* digest (`Target::From`),
/// an uncompressed layer's by its diff_id (= its blob digest). A hostile OCI manifest naming an
/// honest schema1 image's gzip blob B as an uncompressed `tar` layer with diff_id B passes the
/// diff_id check (the blob is B), fails to parse (gzip bytes are no tar), and files
/// `Known::Failed` under B: the honest schema1 image's `rootfs/` is `EIO` for the run. SEMANTICS:
/// "a hostile manifest pairing an honest diff_id with another blob fails alone".
#[test]
fn a_hostile_plain_layer_on_a_schema1_blob_does_not_fail_the_schema1_image() {
    let _serial = serial();
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = tar_of(&[("etc/motd", b"hello\n")]);
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
    let hostile = walk(&fs, &format!("evil/manifests/{e}/rootfs/etc"));
    assert!(hostile.is_err(), "the hostile layer is no tar: {hostile:?}");
    // The honest schema1 image, verified by its blobSum.
    let got = walk(&fs, &format!("r/manifests/{m}/rootfs/etc/motd")).and_then(|f| cat_as_fuse(&fs, f.ino));
    assert_eq!(got.as_ref().ok().map(Vec::as_slice), Some(&b"hello\n"[..]), "the schema1 image fails: {got:?}");
}

/// Was a HOLE (memory; fixed: in-memory contents kept by inode are bounded by bytes too,
/// `limits::INODE_MEMORY`): with `--no-open` each inode's content is kept until the kernel forgets the
/// inode, bounded by *count* (`INODE_HANDLES`, 4,096) but not by bytes. Blobs up to 1 MiB are
/// served from memory (the store keeps them within `small_cache_bytes`, 32 MiB), and the kept
/// content of each inode pins its own copy: one `cat` of 4,096 small blobs (no descriptor held
/// by the reader, the kernel keeps the inodes in its dentry cache) makes regfs hold 4 GiB for
/// as long as the kernel keeps them. Here 64 blobs of 1 MiB read once each by inode: the live
/// heap grows by all 64 MiB, twice the small-blob budget.
#[test]
fn contents_kept_for_reads_by_inode_stay_within_a_memory_bound() {
    let _serial = serial();
    const BLOBS: usize = 64;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let digests: Vec<Digest> = (0..BLOBS)
        .map(|i| {
            let mut bytes = vec![0u8; 1 << 20];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            fake.add_blob(&bytes)
        })
        .collect();
    let (blob, size, diff) = add_layer(&fake, &tar_of(&[("a", b"a")]));
    put_image(&fake, "r", "v1", &[(blob, size)], &[diff]);
    let fs = fs_on(&fake, cache.path());
    let inos: Vec<u64> = digests.iter().map(|d| walk(&fs, &format!("r/blobs/{d}")).expect("blob").ino).collect();
    let before = live();
    for &ino in &inos {
        let mut off = 0u64;
        loop {
            let chunk = fs.read_ino(ino, 1, off, 128 << 10).expect("read by inode");
            if chunk.is_empty() {
                break;
            }
            off += chunk.len() as u64;
        }
        assert_eq!(off, 1 << 20);
    }
    let grown = live().saturating_sub(before);
    eprintln!("live heap grew by {} MiB reading {BLOBS} blobs of 1 MiB by inode", grown >> 20);
    let bound = (32 << 20) + (8 << 20);
    assert!(
        grown <= bound,
        "{} MiB live after reading {BLOBS} MiB once: kept by inode past the small-blob budget",
        grown >> 20
    );
}

/// HOLE (no open): a failed open by inode is held for 1 s for "the same reader", keyed by the
/// requester's thread id. But the kernel says thread id 0 for every requester the daemon's pid
/// namespace cannot see (regfs in a container, or under `unshare --pid`, read from the host or
/// a sibling container): all of those are one "reader". One such process's failed read (a
/// registry blip, here a corrupt body) is then the answer to every other such process's reads
/// of that file for a second, though the registry serves it well again: an error that crosses
/// to another process, which the hold promises never happens ("another process ... tries
/// again").
#[test]
fn a_failed_read_by_inode_is_not_held_for_every_reader_whose_thread_id_is_unknown() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let good = b"the blob's own bytes".to_vec();
    let blob = fake.add_blob(&good);
    let (layer, size, diff) = add_layer(&fake, &tar_of(&[("a", b"a")]));
    put_image(&fake, "r", "v1", &[(layer, size)], &[diff]);
    let fs = fs_on(&fake, cache.path());
    let ino = walk(&fs, &format!("r/blobs/{blob}")).expect("blob").ino;
    // A blip: the registry serves other bytes once, to a reader regfs sees as thread 0.
    fake.corrupt_blob(&blob, b"not the blob".to_vec());
    let err = fs.read_ino(ino, 0, 0, 4096).expect_err("a corrupt body");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // The registry is well again; another process the daemon cannot see either reads the file.
    fake.corrupt_blob(&blob, good.clone());
    let read = fs.read_ino(ino, 0, 0, 1 << 20);
    assert_eq!(read.map_err(|e| e.to_string()), Ok(good), "another process got the first one's held error");
}

/// HOLE (a lying HEAD): `<repo>/blobs/<digest>` has no descriptor to size it, so its size is
/// what HEAD said, shown with the immutable TTL (a day). A registry whose HEAD says less than
/// the blob holds makes the first read fail (the download is bounded by the size shown) and
/// the HEAD's word is dropped; the next read downloads the whole blob, verifies it, and
/// succeeds. But the kernel still holds the size it was told, for a day, and asks nothing
/// before reading up to it (no getattr within the TTL, by inode or not): every `cat` of the
/// file from then on ends cleanly after the HEAD's 1,000 bytes, a file whose bytes do not
/// hash to its name. A size the open may still contradict must not be cached (as a decoded
/// layer's 0 is not: TTL 0 until it is known).
#[test]
fn a_size_from_a_lying_head_is_not_cached_by_the_kernel_past_the_read_that_disproves_it() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let blob = fake.add_blob(&data);
    let (layer, size, diff) = add_layer(&fake, &tar_of(&[("a", b"a")]));
    put_image(&fake, "r", "v1", &[(layer, size)], &[diff]);
    fake.lie_about_size(&blob, 1000);
    let fs = fs_on(&fake, cache.path());
    let attr = walk(&fs, &format!("r/blobs/{blob}")).expect("blob");
    assert_eq!(attr.size, 1000, "what HEAD says");
    fs.read_ino(attr.ino, 1, 0, 128 << 10).expect_err("a body longer than shown");
    // Another reader, later: the kernel reads up to the size it holds, without asking again
    // while the attributes' TTL lasts.
    let read = fs.read_ino(attr.ino, 2, 0, attr.size as u32);
    if read.is_ok() {
        assert!(
            attr.ttl.is_zero(),
            "a read succeeded on content of {} bytes where the kernel holds {} for {:?}: every cat ends after {} bytes",
            data.len(),
            attr.size,
            attr.ttl,
            attr.size
        );
    }
}
