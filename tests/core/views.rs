//! Decoded layers (`layers/<n>.tar`) in the core, without FUSE or HTTP: `Views`
//! and `Fs` over an in-memory registry, with layers made as real tars at test time.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use regfs::digest::{Algorithm, Digest};
use regfs::error::Result;
use regfs::media;
use regfs::store::{Store, StoreConfig};
use regfs::testkit::core::{
    self as kit, Bare, Builder, Cache, GZIP, PLAIN, ZSTD, cat_as_fuse, fs_on, gzip, noise, put_image, sha256, tar_of,
    zstd,
};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;
use regfs::views::Views;

/// An OCI image in `repo:tag` whose layers are `(blob, media type, diff_id)`; its digest.
fn image(fake: &Fake, repo: &str, tag: &str, layers: &[(Vec<u8>, &str, Digest)]) -> Digest {
    let ids: Vec<String> = layers.iter().map(|(_, _, id)| id.to_string()).collect();
    let blobs: Vec<(Digest, usize, &str)> =
        layers.iter().map(|(blob, mt, _)| (fake.add_blob(blob), blob.len(), *mt)).collect();
    put_image(fake, repo, tag, &blobs, &ids).0
}

/// The views over a store (no `Fs` above them).
struct Core {
    fake: Arc<Faulty<Fake>>,
    store: Arc<Store>,
    views: Views,
    cache: Cache,
}

fn core_sized(fake: Faulty<Fake>, cache_size: u64) -> Core {
    let Bare { fake, store, cache } = kit::Core::builder(fake).cache_size(cache_size).bare();
    Core { fake, views: Views::new(Arc::clone(&store)), store, cache }
}

fn core(fake: Faulty<Fake>) -> Core {
    core_sized(fake, 1 << 30)
}

impl Core {
    fn decoded(&self, repo: &str, m: &Digest, n: usize) -> Result<Vec<u8>> {
        let f = self.views.decoded(repo, m, n)?;
        let mut buf = vec![0u8; f.metadata().expect("metadata").len() as usize];
        f.read_exact_at(&mut buf, 0).expect("read");
        Ok(buf)
    }

    /// Names under a directory of the cache (`decoded/sha256`, `tmp`, …).
    fn held(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache.path().join(dir))
            .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[test]
fn a_decoded_layer_must_hash_to_its_diff_id_trailing_bytes_included() {
    let fake = Faulty::new(Fake::default());
    let tar = tar_of(&[("a.txt", b"hello\n"), ("b.bin", &noise(5000, 1))]);
    let raw = [tar.clone(), noise(1024, 9)].concat(); // 1 KiB of non-zero bytes after the EOA
    let good = image(&fake, "r", "good", &[(gzip(&raw), GZIP, sha256(&raw))]);
    let short = image(&fake, "r", "short", &[(gzip(&raw), GZIP, sha256(&tar))]);
    let c = core(fake);
    assert_eq!(c.decoded("r", &good, 0).expect("the diff_id of every decoded byte"), raw);
    let e = c.decoded("r", &short, 0).expect_err("the diff_id of the tar without its tail");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(
        e.to_string().contains(&sha256(&tar).to_string()) && e.to_string().contains(&sha256(&raw).to_string()),
        "{e}"
    );
}

#[test]
fn a_wrong_diff_id_is_eio_and_leaves_nothing_in_decoded_or_index() {
    let fake = Faulty::new(Fake::default());
    let raw = tar_of(&[("x", &noise(300_000, 2))]);
    let blob = gzip(&raw);
    let wrong = sha256(b"something else");
    let m = image(&fake, "r", "v1", &[(blob.clone(), GZIP, wrong)]);
    let c = core(fake);
    for attempt in 0..2 {
        let e = c.decoded("r", &m, 0).expect_err("a wrong diff_id");
        assert_eq!(e.errno(), libc::EIO, "attempt {attempt}: {e}");
        let e = c.views.index("r", &m, 0).expect_err("no index either");
        assert_eq!(e.errno(), libc::EIO, "attempt {attempt}: {e}");
    }
    assert_eq!(c.views.stats().decodes, 1, "the failure is kept for the run (in memory only), not decoded again");
    assert!(c.held("decoded/sha256").is_empty(), "{:?}", c.held("decoded/sha256"));
    assert!(c.held("index/sha256").is_empty());
    assert!(c.held("tmp").is_empty(), "{:?}", c.held("tmp"));
    assert_eq!(c.held("blobs/sha256").iter().filter(|h| **h == sha256(&blob).hex()).count(), 1, "the valid blob stays");
    assert_eq!(c.fake.blob_gets(), 2, "the config and the blob, once each");
}

/// A failed decode is kept by (blob, diff_id), never by one of them alone: a hostile image that
/// pairs an honest diff_id with another blob, or an honest blob with a wrong diff_id, fails
/// alone; the honest image decodes and reads after both.
#[test]
fn a_decode_failure_is_kept_for_its_blob_and_diff_id_pair_only() {
    let fake = Faulty::new(Fake::default());
    let honest = tar_of(&[("etc/motd", b"hello\n")]);
    let other = tar_of(&[("etc/motd", b"other\n")]);
    let wrong_blob = image(&fake, "evil", "a", &[(gzip(&other), GZIP, sha256(&honest))]);
    let wrong_id = image(&fake, "evil", "b", &[(gzip(&honest), GZIP, sha256(b"nothing"))]);
    let good = image(&fake, "r", "v1", &[(gzip(&honest), GZIP, sha256(&honest))]);
    let c = core(fake);
    for _ in 0..2 {
        assert_eq!(c.decoded("evil", &wrong_blob, 0).expect_err("another blob").errno(), libc::EIO);
        assert_eq!(c.decoded("evil", &wrong_id, 0).expect_err("another diff_id").errno(), libc::EIO);
    }
    assert_eq!(c.views.stats().decodes, 2, "each failing pair decoded once");
    assert_eq!(c.decoded("r", &good, 0).expect("the honest image"), honest);
    assert!(c.views.index("r", &good, 0).expect("its index").get("etc/motd").is_some());
    assert_eq!(c.views.stats().decodes, 3);
}

/// A decode that fails because of the local disk, not of the verified content, is not
/// remembered as a failed layer: here the cached blob (verified when it was fetched) is
/// altered in place before the decode reads it, and put back; the next access decodes it.
/// Only a failure of the verified blob's own content (a wrong diff_id, a stream that does not
/// decode, a bomb) is kept for the run.
#[test]
fn a_decode_failing_on_a_local_fault_is_tried_again_once_the_fault_is_gone() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let raw = tar_of(&[("etc/motd", b"hello\n"), ("usr/bin/tool", &noise(200_000, 5))]);
    let blob = gzip(&raw);
    let m = image(&fake, "r", "v1", &[(blob.clone(), GZIP, sha256(&raw))]);
    let cache = tempfile::tempdir().expect("cache");
    // small_blob 0: the decode reads the blob from its cache file, never from memory.
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), small_blob: 0, ..StoreConfig::default() };
    let store = Arc::new(Store::new(fake.clone(), &config).expect("store"));
    let views = Views::new(Arc::clone(&store));
    store.blob("r", &sha256(&blob), Some(blob.len() as u64)).expect("the blob, fetched and verified");
    let path = cache.path().join("blobs/sha256").join(sha256(&blob).hex());
    let at = blob.len() as u64 / 2;
    let write_at = |bytes: &[u8]| {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
            f.write_all_at(bytes, at).expect("write in place");
        }
    };
    write_at(&[0u8; 512]);
    let e = views.index("r", &m, 0).expect_err("the altered blob does not decode");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    write_at(&blob[at as usize..at as usize + 512]);
    let index = views.index("r", &m, 0).expect("the fault is gone: decoded now");
    assert!(index.get("etc/motd").is_some());
    let f = views.decoded("r", &m, 0).expect("layers/0.tar");
    let mut buf = vec![0u8; raw.len()];
    f.read_exact_at(&mut buf, 0).expect("read");
    assert!(buf == raw, "the decoded tar is the layer's");
}

#[test]
fn two_images_with_one_diff_id_decode_it_once() {
    let fake = Faulty::new(Fake::default());
    let raw = tar_of(&[("shared", &noise(200_000, 3))]);
    let a = image(&fake, "a", "v1", &[(gzip(&raw), GZIP, sha256(&raw))]);
    let b = image(&fake, "b", "v1", &[(zstd(&raw), ZSTD, sha256(&raw))]);
    let c = core(fake);
    assert_eq!(c.decoded("a", &a, 0).expect("a"), raw);
    assert_eq!(c.decoded("b", &b, 0).expect("b, another blob of the same diff_id"), raw);
    assert_eq!(c.decoded("a", &a, 0).expect("a again"), raw);
    assert_eq!(c.views.stats().decodes, 1);
    assert_eq!(c.held("decoded/sha256"), [sha256(&raw).hex().to_string()]);
}

#[test]
fn a_gzip_bomb_past_the_cache_size_is_efbig() {
    let fake = Faulty::new(Fake::default());
    // 64 MiB of zeros as 64 gzip members of 1 MiB each: about 64 KiB of blob.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![0u8; 1 << 20]).expect("gzip");
    let member = e.finish().expect("gzip");
    let bomb = member.repeat(64);
    assert!(bomb.len() < 128 << 10, "{}", bomb.len());
    let m = image(&fake, "r", "bomb", &[(bomb, GZIP, sha256(b"whatever"))]);
    let c = core_sized(fake, 16 << 20);
    let e = c.decoded("r", &m, 0).expect_err("a bomb");
    assert_eq!(e.errno(), libc::EFBIG, "{e}");
    assert!(c.held("decoded/sha256").is_empty());
    assert!(c.held("tmp").is_empty(), "{:?}", c.held("tmp"));
    assert!(c.store.blob_cache().size() <= 16 << 20);
}

#[test]
fn a_mislabelled_plain_layer_still_verifies() {
    let fake = Faulty::new(Fake::default());
    let plain = tar_of(&[("p", &noise(10_000, 4))]);
    let zst = tar_of(&[("z", &noise(10_000, 5))]);
    // Said gzip, is plain; said gzip, is zstd: the magic bytes decide, the diff_id verifies.
    let m = image(&fake, "r", "v1", &[(plain.clone(), GZIP, sha256(&plain)), (zstd(&zst), GZIP, sha256(&zst))]);
    let c = core(fake);
    assert_eq!(c.decoded("r", &m, 0).expect("plain said gzip"), plain);
    assert_eq!(c.decoded("r", &m, 1).expect("zstd said gzip"), zst);
}

#[test]
fn a_config_without_diff_ids_for_every_layer_is_eio() {
    let fake = Faulty::new(Fake::default());
    let raw = tar_of(&[("a", b"a")]);
    let (l, _) = (fake.add_blob(&gzip(&raw)), ());
    let cfg = fake.add_blob(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#);
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 42},
        "layers": [{"mediaType": GZIP, "digest": l.to_string(), "size": gzip(&raw).len()}]
    });
    let d = fake.put_manifest("r", Some("v1"), media::OCI_MANIFEST, m.to_string().as_bytes(), Algorithm::Sha256);
    let c = core(fake);
    let e = c.decoded("r", &d, 0).expect_err("no diff_id for the layer");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert_eq!(c.views.stats().decodes, 0);
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn ls_l_of_layers_decodes_nothing_and_shows_0_until_materialised() {
    let fake = Faulty::new(Fake::default());
    let (a, b, p) = (tar_of(&[("a", &noise(70_000, 6))]), tar_of(&[("b", &noise(50_000, 7))]), tar_of(&[("p", b"p")]));
    let m = image(
        &fake,
        "r",
        "v1",
        &[(gzip(&a), GZIP, sha256(&a)), (zstd(&b), ZSTD, sha256(&b)), (p.clone(), PLAIN, sha256(&p))],
    );
    let c = kit::Core::new(fake);
    let dir = format!("r/manifests/{m}/layers");
    // `ls -l`: the listing and every entry's attributes.
    assert_eq!(c.ls(&dir).expect("ls"), ["0.tar.gz", "0.tar", "1.tar.zst", "1.tar", "2.tar"]);
    for name in ["0.tar", "1.tar"] {
        let attr = c.walk(&format!("{dir}/{name}")).expect(name);
        assert_eq!((attr.size, attr.ttl), (0, Duration::ZERO), "{name} before it is decoded");
        let again = c.fs.getattr(attr.ino).expect("getattr");
        assert_eq!((again.size, again.ttl), (0, Duration::ZERO), "{name} before it is decoded");
    }
    for name in ["0.tar.gz", "1.tar.zst", "2.tar"] {
        assert_eq!(c.walk(&format!("{dir}/{name}")).expect(name).ttl, DAY, "{name}: a blob is unchanged");
    }
    assert_eq!(c.fake.blob_gets(), 0, "ls -l fetched a blob");
    // Reading decodes; from then on the size is exact and immutable.
    assert_eq!(c.cat(&format!("{dir}/0.tar")).expect("cat 0.tar"), a);
    let attr = c.walk(&format!("{dir}/0.tar")).expect("0.tar");
    assert_eq!((attr.size, attr.ttl), (a.len() as u64, DAY));
    assert_eq!(c.fs.getattr(attr.ino).expect("getattr").size, a.len() as u64);
    assert_eq!(c.cat(&format!("{dir}/1.tar")).expect("cat 1.tar"), b);
    assert_eq!(c.walk(&format!("{dir}/1.tar")).expect("1.tar").size, b.len() as u64);
    assert!(c.walk(&format!("{dir}/2.tar.tar")).is_err());
    assert_eq!(c.walk(&format!("{dir}/9.tar")).expect_err("no layer 9").errno(), libc::ENOENT);
}

#[test]
fn schema1_layers_decode_verified_by_their_blob_digest() {
    let fake = Faulty::new(Fake::default());
    let (top, base) = (tar_of(&[("top", &noise(20_000, 8))]), tar_of(&[("base", &noise(30_000, 9))]));
    let (top_d, base_d) = (fake.add_blob(&gzip(&top)), fake.add_blob(&zstd(&base)));
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": top_d.to_string()}, {"blobSum": base_d.to_string()}],
        "history": [{"v1Compatibility": "{}"}, {"v1Compatibility": "{}"}]
    });
    let m = fake.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let c = kit::Core::new(fake);
    let dir = format!("r/manifests/{m}/layers");
    assert_eq!(c.ls(&dir).expect("ls"), ["0.tar.gz", "0.tar", "1.tar.gz", "1.tar"]);
    // Bottom first: layer 0 is the last fsLayer.
    assert_eq!(c.cat(&format!("{dir}/0.tar")).expect("0.tar"), base, "a zstd blob said gzip: sniffed");
    assert_eq!(c.cat(&format!("{dir}/1.tar")).expect("1.tar"), top);
    assert_eq!(c.walk(&format!("{dir}/1.tar")).expect("1.tar").size, top.len() as u64);
    // A blob that does not hash to its blobSum gives no decoded view either.
    let other = tar_of(&[("evil", b"x")]);
    let bad = Faulty::new(Fake::default());
    let d = bad.add_blob(&gzip(&top));
    bad.corrupt_blob(&d, gzip(&other));
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": d.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let m = bad.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let c = kit::Core::new(bad);
    let e = c.cat(&format!("r/manifests/{m}/layers/0.tar")).expect_err("a corrupt blob");
    assert_eq!(e.errno(), libc::EIO, "{e}");
}

#[test]
fn a_layer_listed_by_an_artifact_gets_no_tar_view() {
    let fake = Faulty::new(Fake::default());
    let chart = gzip(&tar_of(&[("chart/Chart.yaml", b"name: x\n")]));
    let l = fake.add_blob(&chart);
    let cfg = fake.add_blob(b"{}");
    let art = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": l.to_string(), "size": chart.len()}]
    });
    let m = fake.put_manifest("r", Some("chart"), media::OCI_MANIFEST, art.to_string().as_bytes(), Algorithm::Sha256);
    let c = kit::Core::new(fake);
    let dir = format!("r/manifests/{m}/layers");
    assert_eq!(c.ls(&dir).expect("ls"), ["0.tar.gz"]);
    assert_eq!(c.walk(&format!("{dir}/0.tar")).expect_err("no view").errno(), libc::ENOENT);
}

/// A core on the cache directory `dir` (to restart on it).
fn core_in(fake: Arc<Faulty<Fake>>, dir: &std::path::Path) -> (Arc<Store>, Views) {
    let store = Builder::over(fake).cache_at(dir).bare().store;
    (Arc::clone(&store), Views::new(store))
}

/// GETs of blob `d` so far.
fn two_file_layer() -> Vec<u8> {
    tar_of(&[("etc/motd", b"hello\n"), ("usr/bin/tool", &noise(40_000, 11))])
}

#[test]
fn materialising_a_layer_decodes_it_once_and_indexes_it_in_the_same_pass() {
    let fake = Faulty::new(Fake::default());
    let raw = two_file_layer();
    let m = image(&fake, "r", "v1", &[(gzip(&raw), GZIP, sha256(&raw))]);
    let c = core(fake);
    let index = c.views.index("r", &m, 0).expect("index");
    assert_eq!(index.get("usr/bin/tool").expect("tool").size(), 40_000);
    assert_eq!(index.get("etc/motd").expect("motd").size(), 6);
    assert_eq!(index.decoded_len(), raw.len() as u64);
    let stats = c.views.stats();
    assert_eq!((stats.decodes, stats.index_passes), (1, 0), "one pass: decoded and indexed together");
    assert_eq!(c.decoded("r", &m, 0).expect("layers/0.tar"), raw);
    c.views.index("r", &m, 0).expect("index again");
    assert_eq!(c.views.stats().decodes, 1, "nothing decoded again");
    // Opened as layers/0.tar first: the same one pass leaves the index too.
    let fake = Faulty::new(Fake::default());
    let m = image(&fake, "r", "v1", &[(zstd(&raw), ZSTD, sha256(&raw))]);
    let c = core(fake);
    assert_eq!(c.decoded("r", &m, 0).expect("layers/0.tar"), raw);
    assert!(c.views.index("r", &m, 0).expect("index").get("etc/motd").is_some());
    assert_eq!((c.views.stats().decodes, c.views.stats().index_passes), (1, 0));
    assert_eq!(c.held("index/sha256"), [sha256(&raw).hex().to_string()], "the index is kept by diff_id");
}

/// An index file an earlier run left is never trusted (a local user can rewrite it between
/// runs): a remount builds the index again from the verified decoded tar, in the one pass that
/// hashes that tar anyway before it is used: no decode, no blob GET, no index read back. With
/// the decoded tar gone too, the layer is decoded again from the cached blob (verified, and
/// indexed in the same pass).
#[test]
fn a_remount_builds_the_index_in_the_pass_that_hashes_the_decoded_tar_again() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let raw = two_file_layer();
    let blob = gzip(&raw);
    let m = image(&fake, "r", "v1", &[(blob.clone(), GZIP, sha256(&raw))]);
    let dir = tempfile::tempdir().expect("cache");
    {
        let (_, views) = core_in(Arc::clone(&fake), dir.path());
        views.index("r", &m, 0).expect("first run");
    }
    let index_file = dir.path().join("index/sha256").join(sha256(&raw).hex());
    let written = std::fs::read(&index_file).expect("the first run kept an index file");
    let gets = fake.gets_of(&sha256(&blob));
    let (_, views) = core_in(Arc::clone(&fake), dir.path());
    let index = views.index("r", &m, 0).expect("second run");
    assert_eq!(index.get("usr/bin/tool").expect("tool").size(), 40_000);
    let stats = views.stats();
    assert_eq!(
        (stats.decodes, stats.index_passes, stats.indexes_read),
        (0, 1, 0),
        "one pass over the decoded tar (hashed and indexed together); the index file is not read"
    );
    assert_eq!(fake.gets_of(&sha256(&blob)), gets, "the layer blob was fetched");
    // The tar is at hand as verified now: reading it costs nothing more.
    let f = views.decoded("r", &m, 0).expect("decoded tar");
    assert_eq!(f.metadata().expect("metadata").len(), raw.len() as u64);
    assert_eq!((views.stats().decodes, views.stats().index_passes), (0, 1));
    assert_eq!(std::fs::read(&index_file).expect("index file"), written, "the same index, kept");
    drop((f, views));

    // The decoded tar deleted behind regfs's back: decoded again from the cached blob.
    std::fs::remove_file(dir.path().join("decoded/sha256").join(sha256(&raw).hex())).expect("decoded");
    let (_, views) = core_in(Arc::clone(&fake), dir.path());
    let index = views.index("r", &m, 0).expect("third run");
    assert_eq!(index.get("etc/motd").expect("motd").size(), 6);
    let stats = views.stats();
    assert_eq!((stats.decodes, stats.index_passes, stats.indexes_read), (1, 0, 0), "decoded and indexed in one pass");
    assert_eq!(fake.gets_of(&sha256(&blob)), gets, "the cached blob is used (hashed again), not fetched");
    let f = views.decoded("r", &m, 0).expect("decoded again");
    let mut buf = vec![0u8; raw.len()];
    f.read_exact_at(&mut buf, 0).expect("read");
    assert_eq!(buf, raw);
}

/// A sound index file (right trailer, right diff_id) planted between runs does not become
/// "verified by this run" when the run commits the index it built: the planted file is
/// replaced by ours, so an index evicted from memory and read back from `index/` is the
/// verified tar's.
#[test]
fn a_planted_index_is_replaced_when_the_run_commits_its_own() {
    use regfs::views::ViewsConfig;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (raw, other) = (two_file_layer(), tar_of(&[("etc/issue", b"regfs\n")]));
    let m = image(&fake, "r", "v1", &[(gzip(&raw), GZIP, sha256(&raw)), (gzip(&other), GZIP, sha256(&other))]);
    let dir = tempfile::tempdir().expect("cache");
    {
        let (_, views) = core_in(Arc::clone(&fake), dir.path());
        views.index("r", &m, 0).expect("first run");
    }
    let path = dir.path().join("index/sha256").join(sha256(&raw).hex());
    let ours = std::fs::read(&path).expect("index file");
    let lying = tar_of(&[("etc/motd", b"pwned\n"), ("usr/bin/evil", &noise(40_000, 11))]);
    let limits = (regfs::views::tar::TarLimits::default(), regfs::views::index::IndexLimits::default());
    let planted = regfs::views::index::build_all(&lying[..], limits.0, limits.1).expect("lying index");
    std::fs::write(&path, regfs::views::index::encode(&planted, &sha256(&raw))).expect("plant");
    let config = StoreConfig { cache_dir: dir.path().to_path_buf(), ..StoreConfig::default() };
    let store = Arc::new(Store::new(fake, &config).expect("store"));
    let views = Views::with_config(store, ViewsConfig { index_memory: 1, ..ViewsConfig::default() });
    assert!(views.index("r", &m, 0).expect("second run").get("usr/bin/tool").is_some());
    assert!(std::fs::read(&path).expect("index file") == ours, "the planted file is not replaced by this run's index");
    views.index("r", &m, 1).expect("evicts layer 0's index from memory");
    let back = views.index("r", &m, 0).expect("read back");
    assert_eq!(views.stats().indexes_read, 1, "read back from index/");
    assert!(back.get("usr/bin/tool").is_some() && back.get("usr/bin/evil").is_none(), "the planted index was used");
}

#[test]
fn an_index_with_a_flipped_byte_is_rebuilt() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let raw = two_file_layer();
    let m = image(&fake, "r", "v1", &[(gzip(&raw), GZIP, sha256(&raw))]);
    let dir = tempfile::tempdir().expect("cache");
    {
        let (_, views) = core_in(Arc::clone(&fake), dir.path());
        views.index("r", &m, 0).expect("first run");
    }
    let path = dir.path().join("index/sha256").join(sha256(&raw).hex());
    let good = std::fs::read(&path).expect("index file");
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    std::fs::write(&path, &flipped).expect("flip");
    let (_, views) = core_in(Arc::clone(&fake), dir.path());
    let index = views.index("r", &m, 0).expect("rebuilt");
    assert_eq!(index.get("etc/motd").expect("motd").size(), 6);
    assert_eq!(views.stats().decodes, 0, "rebuilt from the decoded tar (hashed again), not decoded again");
    assert_eq!((views.stats().index_passes, views.stats().indexes_read), (1, 0));
    assert_eq!(std::fs::read(&path).expect("index file"), good, "the file is written anew");
}

#[test]
fn a_layer_that_is_not_a_tar_still_gives_its_verified_tar_view_but_no_index() {
    let fake = Faulty::new(Fake::default());
    let raw = noise(3000, 12); // hashes to its diff_id, but is no tar
    let m = image(&fake, "r", "v1", &[(gzip(&raw), GZIP, sha256(&raw))]);
    let c = core(fake);
    let e = c.views.index("r", &m, 0).expect_err("not a tar");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert_eq!(c.decoded("r", &m, 0).expect("layers/0.tar"), raw);
    assert_eq!(c.views.index("r", &m, 0).expect_err("kept as the layer's index error").errno(), libc::EIO);
    assert_eq!(c.views.stats().decodes, 1);
    assert!(c.held("index/sha256").is_empty());
}

#[test]
fn an_uncompressed_layer_is_indexed_from_its_blob_which_must_be_its_diff_id() {
    let fake = Faulty::new(Fake::default());
    let raw = two_file_layer();
    let wrong = tar_of(&[("x", b"x")]);
    let m = image(&fake, "r", "v1", &[(raw.clone(), PLAIN, sha256(&raw)), (wrong, PLAIN, sha256(b"not it"))]);
    let c = core(fake);
    assert!(c.views.index("r", &m, 0).expect("plain").get("etc/motd").is_some());
    assert_eq!(c.views.stats().decodes, 0);
    assert_eq!(c.views.index("r", &m, 1).expect_err("a blob that is not its diff_id").errno(), libc::EIO);
}

/// Schema1 has no diff_id: its decoded stream is trusted only as derived from its verified blob
/// by this run. What an earlier run left in `decoded-from/` and `index/` is never trusted (a
/// planter could replace both together: `a_planted_schema1_decoded_file_and_index_are_not_served`
/// in `rootfs::a_hostile_plain_layer_on_a_schema1_blob_does_not_fail_the_schema1_image`); each run decodes the blob once, and then serves from what it made.
#[test]
fn a_schema1_layer_is_decoded_again_once_per_run_from_its_verified_blob() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let raw = two_file_layer();
    let d = fake.add_blob(&gzip(&raw));
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": d.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let m = fake.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let dir = tempfile::tempdir().expect("cache");
    {
        let (_, views) = core_in(Arc::clone(&fake), dir.path());
        assert!(views.index("r", &m, 0).expect("index").get("etc/motd").is_some());
        assert_eq!(views.stats().decodes, 1);
    }
    let (_, views) = core_in(Arc::clone(&fake), dir.path());
    let f = views.decoded("r", &m, 0).expect("second run");
    assert_eq!(f.metadata().expect("metadata").len(), raw.len() as u64);
    assert!(views.index("r", &m, 0).expect("index").get("etc/motd").is_some());
    let f2 = views.decoded("r", &m, 0).expect("again");
    assert_eq!(f2.metadata().expect("metadata").len(), raw.len() as u64);
    assert_eq!(views.stats().decodes, 1, "decoded again from the blob, once this run, indexed in the same pass");
    drop((f, f2, views));
    let path = dir.path().join("decoded-from/sha256").join(d.hex());
    let mut altered = std::fs::read(&path).expect("decoded-from");
    altered[700] ^= 1;
    std::fs::write(&path, &altered).expect("alter");
    let (_, views) = core_in(Arc::clone(&fake), dir.path());
    let f = views.decoded("r", &m, 0).expect("third run");
    let mut buf = vec![0u8; raw.len()];
    f.read_exact_at(&mut buf, 0).expect("read");
    assert_eq!(buf, raw, "the altered file is not served");
    assert_eq!(views.stats().decodes, 1, "decoded again");
}

#[test]
fn a_layer_is_ready_only_once_its_index_and_decoded_tar_are_at_hand() {
    let fake = Faulty::new(Fake::default());
    let (a, p) = (two_file_layer(), tar_of(&[("plain", b"p")]));
    let m = image(&fake, "r", "v1", &[(gzip(&a), GZIP, sha256(&a)), (p.clone(), PLAIN, sha256(&p))]);
    let c = core(fake);
    let doc = c.store.manifest("r", &m).expect("manifest");
    assert!(c.views.ready(&doc, 0).is_none() && c.views.ready(&doc, 1).is_none(), "nothing is ready yet");
    let gets = c.fake.blob_gets();
    assert!(c.views.ready(&doc, 0).is_none());
    assert_eq!(c.fake.blob_gets(), gets, "asking costs nothing");
    for n in 0..2 {
        c.views.materialise("r", &m, n).expect("materialise");
        let (index, content) = c.views.ready(&doc, n).expect("ready");
        let regfs::store::Content::File(f) = content else { panic!("a file") };
        let want = if n == 0 { &a } else { &p };
        assert_eq!(f.metadata().expect("metadata").len(), want.len() as u64);
        assert_eq!(index.decoded_len(), want.len() as u64);
    }
    let spans = c.views.decode_intervals();
    assert_eq!(spans.len(), 1, "one decode (the uncompressed layer is not decoded)");
    assert!(spans[0].0 <= spans[0].1);
}

/// The views' bounds are the mount's (`--layer-entries`, `--layer-index-size`,
/// `--index-memory`): a layer past the entry or byte bound has no index (`EFBIG`), its
/// `layers/<n>.tar` still served; indexes past the memory bound are read back from `index/`.
#[test]
fn the_views_bounds_are_the_mount_s() {
    use regfs::views::ViewsConfig;
    let fake = Faulty::new(Fake::default());
    let many: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("d/f{i:02}"), vec![b'x'; 10])).collect();
    let many = regfs::testkit::fixtures::layers::tar(&many).expect("tar");
    let small = two_file_layer();
    let other = tar_of(&[("etc/issue", b"regfs\n")]);
    let layers = [
        (gzip(&many), GZIP, sha256(&many)),
        (gzip(&small), GZIP, sha256(&small)),
        (gzip(&other), GZIP, sha256(&other)),
    ];
    let m = image(&fake, "r", "v1", &layers);
    let fake = Arc::new(fake);
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let store = Arc::new(Store::new(fake, &config).expect("store"));
    let bounds = ViewsConfig { layer_entries: 20, index_memory: 1, ..ViewsConfig::default() };
    let views = Views::with_config(Arc::clone(&store), bounds);
    assert_eq!(views.index("r", &m, 0).expect_err("51 records, 20 allowed").errno(), libc::EFBIG);
    assert!(views.decoded("r", &m, 0).is_ok(), "the tar view is still served");
    assert!(views.index("r", &m, 1).expect("small").get("etc/motd").is_some());
    assert!(views.index("r", &m, 2).expect("other").get("etc/issue").is_some());
    assert_eq!(views.stats().indexes_read, 0);
    assert!(views.index("r", &m, 1).expect("again").get("etc/motd").is_some());
    assert_eq!(views.stats().indexes_read, 1, "one byte of index memory keeps one index: read back from index/");
    assert_eq!(views.stats().decodes, 3, "not decoded again");
    let bytes = ViewsConfig { layer_index_size: 1024, ..ViewsConfig::default() };
    let views = Views::with_config(store, bytes);
    assert_eq!(views.index("r", &m, 0).expect_err("past 1 KiB of index").errno(), libc::EFBIG);
}

/// A layer at hand stays open between opens of its files: `ready` keeps the last few decoded
/// tars it handed out open (`ViewsConfig::held_decoded_files`), so a warm `xargs cat` of a rootfs,
/// whose every file is closed before the next opens, does not open, check and close the layer's
/// file once per file. Past the bound, the oldest is let go.
#[test]
fn a_ready_layer_s_decoded_tar_stays_open_between_opens() {
    let fake = Faulty::new(Fake::default());
    let held = regfs::views::ViewsConfig::default().held_decoded_files;
    let layers: Vec<Vec<u8>> = (0..=held).map(|i| tar_of(&[(&format!("f{i}"), &[i as u8; 10])])).collect();
    let descs: Vec<_> = layers.iter().map(|l| (gzip(l), GZIP, sha256(l))).collect();
    let m = image(&fake, "r", "v1", &descs);
    let c = core(fake);
    let doc = c.store.manifest("r", &m).expect("manifest");
    let file = |n: usize| {
        let (_, content) = c.views.ready(&doc, n).expect("ready");
        let regfs::store::Content::File(f) = content else { panic!("a file") };
        f
    };
    for n in 0..=held {
        c.views.materialise("r", &m, n).expect("materialise");
    }
    // Every handle dropped at once: what still holds the file open is `ready`'s own.
    let handed: Vec<std::sync::Weak<std::fs::File>> = (0..=held).map(|n| Arc::downgrade(&file(n))).collect();
    assert!(handed[0].upgrade().is_none(), "more than the bound is held");
    for (n, w) in handed.iter().enumerate().skip(1) {
        let open = w.upgrade().expect("a layer of the last few was let go");
        assert!(Arc::ptr_eq(&open, &file(n)), "layer {n} was opened again");
    }
    assert!(file(0).metadata().is_ok(), "the oldest opens again");
}

/// A schema1 layer's decoded file is tied to the blob's digest, the one thing verified: a
/// decoded file and an index planted together in the cache between runs (the index trusted on
/// its unkeyed sha256 trailer, the decoded file checked against the diff_id that index
/// records) are not served as the layer, as a blob altered in place is hashed again and
/// replaced (SEMANTICS' rule for `blobs/`).
#[test]
fn a_planted_schema1_decoded_file_and_index_are_not_served() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let honest = kit::tar_of(&[("etc/motd", b"hello\n")]);
    let evil = kit::tar_of(&[("etc/motd", b"pwned\n")]);
    let blob = fake.add_blob(&gzip(&honest));
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "r", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": blob.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let m = fake.put_manifest("r", Some("old"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let path = format!("r/manifests/{m}/rootfs/etc/motd");
    {
        let fs = fs_on(&fake, cache.path());
        let f = fs.walk(&path).expect("motd");
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
    let f = fs.walk(&path).expect("motd");
    let got =
        cat_as_fuse(&fs, f.ino).and_then(|b| String::from_utf8(b).map_err(|e| regfs::error::Error::Io(e.to_string())));
    assert_eq!(got.ok().as_deref(), Some("hello\n"), "the planted layer was served");
}
