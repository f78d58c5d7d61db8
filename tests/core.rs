//! The filesystem core without FUSE or HTTP: `Fs` and `Store` over an in-memory registry that
//! can lie, cut bodies off and ignore `Range`. What the kernel would ask, asked directly.

mod common;

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake::{DigestHeader, Fake};
use regfs::digest::{Algorithm, Digest};
use regfs::error::{Error, Result};
use regfs::fs::{Attr, Fs};
use regfs::manifest::media;
use regfs::store::Store;

struct Core {
    fake: Arc<Fake>,
    fs: Fs,
    cache: tempfile::TempDir,
}

fn core_with(fake: Arc<Fake>, cache: tempfile::TempDir, cache_size: u64) -> Core {
    let store = Store::new(fake.clone(), cache.path(), cache_size, Duration::from_secs(60)).expect("store");
    Core { fake, fs: Fs::new(Arc::new(store), Duration::from_secs(60)), cache }
}

fn core_with_ttl(fake: Arc<Fake>, tag_ttl: Duration) -> Core {
    let cache = tempfile::tempdir().expect("cache");
    let store = Store::new(fake.clone(), cache.path(), 1 << 30, tag_ttl).expect("store");
    Core { fake, fs: Fs::new(Arc::new(store), tag_ttl), cache }
}

fn core(fake: Fake) -> Core {
    core_with(Arc::new(fake), tempfile::tempdir().expect("cache"), 1 << 30)
}

impl Core {
    fn walk(&self, path: &str) -> Result<Attr> {
        let mut attr = self.fs.getattr(self.fs.root_ino())?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            attr = self.fs.lookup(attr.ino, OsStr::new(part))?;
        }
        Ok(attr)
    }

    fn cat(&self, path: &str) -> Result<Vec<u8>> {
        let attr = self.walk(path)?;
        let fh = self.fs.open(attr.ino)?;
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(fh, out.len() as u64, 4096)?;
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        self.fs.release(fh);
        Ok(out)
    }

    fn ls(&self, path: &str) -> Result<Vec<String>> {
        let attr = self.walk(path)?;
        let fh = self.fs.opendir(attr.ino)?;
        let names = self.fs.listing(fh)?.iter().map(|e| e.name.clone()).filter(|n| n != "." && n != "..").collect();
        self.fs.releasedir(fh);
        Ok(names)
    }
}

fn noise(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

#[test]
fn a_manifest_that_does_not_hash_to_its_digest_is_refused_and_not_kept() {
    let fake = Fake::default();
    let (good, _) = fake.image("r", "v1", b"layer");
    // The registry serves other bytes under that digest (and says the digest it was asked).
    let mut evil = fake.manifests.lock().unwrap().get(&("r".into(), good.to_string())).cloned().unwrap();
    evil.body.extend_from_slice(b"\n ");
    fake.manifests.lock().unwrap().insert(("r".into(), good.to_string()), evil.clone());
    let c = core(fake);
    let err = c.walk(&format!("r/manifests/{good}")).expect_err("a lying manifest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(err.errno(), libc::EIO);
    // Not cached: asking again asks the registry again.
    let before = c.fake.calls().len();
    assert!(c.walk(&format!("r/manifests/{good}")).is_err());
    assert!(c.fake.calls().len() > before);
}

#[test]
fn a_docker_content_digest_that_lies_is_an_error() {
    let fake = Fake::default();
    let (good, _) = fake.image("r", "v1", b"layer");
    let other = Digest::of(Algorithm::Sha256, b"something else");
    for key in [good.to_string(), "v1".to_string()] {
        fake.manifests.lock().unwrap().get_mut(&("r".to_string(), key)).unwrap().digest_header =
            Some(other.to_string());
    }
    let c = core(fake);
    let err = c.walk(&format!("r/manifests/{good}")).expect_err("lying header");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("Docker-Content-Digest"), "{err}");
    // By tag, the header names another manifest: the link points there, and following it
    // fetches that digest, which these bytes are not, so nothing wrong is ever shown.
    let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
    assert_eq!(target, format!("../manifests/{other}"));
    assert!(c.walk(&format!("r/{}", target.trim_start_matches("../"))).is_err());
}

#[test]
fn without_docker_content_digest_a_tag_is_named_by_the_hash_of_its_manifest() {
    let fake = Fake::default();
    let (d, layer) = fake.image("r", "v1", b"layer bytes");
    for key in [d.to_string(), "v1".to_string()] {
        fake.manifests.lock().unwrap().get_mut(&("r".to_string(), key)).unwrap().digest_header = None;
    }
    let c = core(fake);
    let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
    assert_eq!(target, format!("../manifests/{d}"));
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("layer"), b"layer bytes");
    assert_eq!(c.cat(&format!("r/blobs/{layer}")).expect("blob"), b"layer bytes");
}

#[test]
fn sha512_manifests_are_accepted() {
    let fake = Fake::default();
    let (_, _) = fake.image("r", "v1", b"x");
    let body = fake.manifests.lock().unwrap().get(&("r".into(), "v1".into())).unwrap().body.clone();
    let d512 = fake.manifest("r", None, media::OCI_MANIFEST, &body, Algorithm::Sha512);
    let c = core(fake);
    assert_eq!(c.ls(&format!("r/manifests/{d512}")).expect("sha512 dir"), ["manifest.json", "config.json", "layers"]);
    assert_eq!(c.cat(&format!("r/manifests/{d512}/manifest.json")).expect("bytes"), body);
}

#[test]
fn a_cut_off_body_is_resumed_with_range_and_verified() {
    let fake = Fake::default();
    let data = noise(1 << 20, 1);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().cut_after = Some((300_000, 2));
    let c = core(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("resumed"), data);
    let gets: Vec<String> = c.fake.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
    assert_eq!(
        gets,
        [
            format!("GET blob r {layer} from 0"),
            format!("GET blob r {layer} from 300000"),
            format!("GET blob r {layer} from 600000")
        ]
    );
}

#[test]
fn a_registry_that_ignores_range_makes_the_download_start_over() {
    let fake = Fake::default();
    let data = noise(500_000, 2);
    let (d, _) = fake.image("r", "v1", &data);
    {
        let mut k = fake.knobs.lock().unwrap();
        k.cut_after = Some((100_000, 1));
        k.ignore_range = true;
    }
    let c = core(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("restarted"), data);
    assert_eq!(c.fake.blob_gets.load(Ordering::SeqCst), 2);
}

#[test]
fn bodies_that_never_complete_fail_and_leave_nothing() {
    let fake = Fake::default();
    let data = noise(400_000, 3);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().cut_after = Some((1000, 100));
    let c = core(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect_err("always cut off");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(!c.cache.path().join("blobs/sha256").join(layer.hex()).exists());
    assert_eq!(std::fs::read_dir(c.cache.path().join("tmp")).expect("tmp").count(), 0);
}

#[test]
fn a_body_longer_than_its_descriptor_is_refused() {
    let fake = Fake::default();
    let data = noise(300_000, 4);
    let (d, layer) = fake.image("r", "v1", &data);
    let mut longer = data.clone();
    longer.extend_from_slice(&noise(1 << 20, 5));
    fake.knobs.lock().unwrap().substitute.insert(layer.to_string(), longer);
    let c = core(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect_err("too long");
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("longer"), "{err}");
}

#[test]
fn a_cache_file_altered_on_disk_is_detected_after_restart_and_replaced() {
    let fake = Arc::new(Fake::default());
    let data = noise(2 << 20, 6);
    let (d, layer) = fake.image("r", "v1", &data);
    let cache = tempfile::tempdir().expect("cache");
    let cache_path = cache.path().to_path_buf();
    let c = core_with(fake.clone(), cache, 1 << 30);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("first"), data);
    let file = cache_path.join("blobs/sha256").join(layer.hex());
    let mut altered = std::fs::read(&file).expect("cached");
    altered[12345] ^= 1;
    std::fs::write(&file, &altered).expect("alter");
    // A half-written download left behind by a killed process.
    std::fs::write(cache_path.join("tmp").join(format!("{}.1.0", layer.hex())), b"half").expect("tmp");
    // The old process is gone (and with it, its lock on the directory).
    let Core { cache, fs, .. } = c;
    drop(fs);
    // "Restart": a new store on the same directory.
    let c = core_with(fake.clone(), cache, 1 << 30);
    assert_eq!(std::fs::read_dir(cache_path.join("tmp")).expect("tmp").count(), 0, "tmp/ emptied at start");
    let gets = fake.blob_gets.load(Ordering::SeqCst);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("re-verified"), data);
    assert_eq!(fake.blob_gets.load(Ordering::SeqCst), gets + 1, "the altered file was downloaded again");
    // An intact file from an earlier run is re-hashed, not downloaded.
    // The old process is gone (and with it, its lock on the directory).
    let Core { cache, fs, .. } = c;
    drop(fs);
    let c = core_with(fake.clone(), cache, 1 << 30);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("intact"), data);
    assert_eq!(fake.blob_gets.load(Ordering::SeqCst), gets + 1);
}

#[test]
fn the_cache_stays_within_its_size_under_churn_and_open_files_stay_readable() {
    let fake = Arc::new(Fake::default());
    let mut images = Vec::new();
    for i in 0..10u8 {
        let data = noise(2 << 20, 10 + i);
        let (d, _) = fake.image("r", &format!("v{i}"), &data);
        images.push((d, data));
    }
    let limit = 5 << 20;
    let c = core_with(fake.clone(), tempfile::tempdir().expect("cache"), limit);
    // Hold the first blob open while the others churn through.
    let first = c.walk(&format!("r/manifests/{}/layers/0.tar", images[0].0)).expect("first");
    let held = c.fs.open(first.ino).expect("open");
    for (d, data) in &images {
        assert_eq!(&c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("read"), data);
        assert!(c.fs.store().blob_cache().size() <= limit, "cache at {} bytes", c.fs.store().blob_cache().size());
    }
    let on_disk: u64 = std::fs::read_dir(c.cache.path().join("blobs/sha256"))
        .expect("dir")
        .map(|e| e.expect("e").metadata().expect("m").len())
        .sum();
    assert!(on_disk <= limit, "{on_disk} bytes on disk");
    // Evicted while open, and still whole.
    assert_eq!(c.fs.read(held, 0, 4 << 20).expect("held"), images[0].1);
}

#[test]
fn concurrent_opens_of_one_blob_download_it_once() {
    let fake = Fake::default();
    let data = noise(3 << 20, 30);
    let (d, _) = fake.image("r", "v1", &data);
    let c = Arc::new(core(fake));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let c = Arc::clone(&c);
            let path = format!("r/manifests/{d}/layers/0.tar");
            std::thread::spawn(move || c.cat(&path).expect("read"))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread"), data);
    }
    assert_eq!(c.fake.blob_gets.load(Ordering::SeqCst), 1);
}

#[test]
fn names_from_the_registry_that_break_the_grammar_are_never_shown() {
    let fake = Fake::default();
    fake.image("r", "ok", b"x");
    fake.tags.lock().unwrap().get_mut("r").unwrap().extend([
        "../../etc".to_string(),
        "a/b".into(),
        "".into(),
        ".hidden".into(),
        "x\0y".into(),
    ]);
    let c = core(fake);
    assert_eq!(c.ls("r/tags").expect("tags"), ["ok"]);
    for bad in ["../x", "a\0b", ".", ".."] {
        assert!(c.walk(&format!("r/tags/{bad}")).is_err(), "{bad:?}");
    }
    assert_eq!(c.walk("r/manifests/sha256:..%2F").expect_err("bad digest").errno(), libc::ENOENT);
}

#[test]
fn hostile_manifests_are_refused_with_a_clear_error_and_nothing_is_shown() {
    let fake = Fake::default();
    let dg = format!("sha256:{}", "c".repeat(64));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid JSON", b"{\"schemaVersion\": 2,".to_vec(), "not JSON"),
        ("wrong schemaVersion", br#"{"schemaVersion": 7}"#.to_vec(), "schemaVersion 7"),
        ("missing config", br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}"#.to_vec(), "no config"),
        (
            "negative size",
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{dg}","size":-5}},"layers":[]}}"#, media::OCI_MANIFEST).into_bytes(),
            "config",
        ),
        (
            "absurd size",
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{dg}","size":99999999999999999}},"layers":[]}}"#, media::OCI_MANIFEST).into_bytes(),
            "larger than regfs accepts",
        ),
        (
            "unknown digest algorithm",
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"md5:d41d8cd98f00b204e9800998ecf8427e","size":1}},"layers":[]}}"#, media::OCI_MANIFEST).into_bytes(),
            "invalid digest",
        ),
        (
            "bad hex",
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"sha256:{}","size":1}},"layers":[]}}"#, media::OCI_MANIFEST, "Z".repeat(64)).into_bytes(),
            "invalid digest",
        ),
        ("over 4 MiB", [b"{\"schemaVersion\":2,\"pad\":\"".to_vec(), vec![b'x'; 4 << 20], b"\"}".to_vec()].concat(), "too large"),
    ];
    let mut digests = Vec::new();
    for (_, body, _) in &cases {
        digests.push(fake.manifest("r", None, media::OCI_MANIFEST, body, Algorithm::Sha256));
    }
    let c = core(fake);
    for ((what, _, why), d) in cases.iter().zip(&digests) {
        let err = c.walk(&format!("r/manifests/{d}")).expect_err(what);
        assert!(matches!(err.errno(), libc::EIO | libc::EFBIG), "{what}: {err}");
        assert!(err.to_string().contains(why), "{what}: {err}");
        assert!(
            err.to_string().contains(&d.to_string()) || err.to_string().contains("fake://"),
            "{what}: the error must name the manifest: {err}"
        );
    }
}

#[test]
fn a_listing_is_a_snapshot_taken_at_opendir() {
    let fake = Arc::new(Fake::default());
    for i in 0..3 {
        fake.image("r", &format!("t{i}"), b"x");
    }
    // A tag TTL of zero: every new listing asks the registry.
    let c = core_with_ttl(fake.clone(), Duration::ZERO);
    let tags = c.walk("r/tags").expect("tags");
    let fh = c.fs.opendir(tags.ino).expect("opendir");
    let names = |fh| c.fs.listing(fh).expect("listing").iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(fh), [".", "..", "t0", "t1", "t2"]);
    // A tag pushed while the directory is being read does not shift the open listing ...
    fake.image("r", "t3", b"y");
    assert_eq!(names(fh), [".", "..", "t0", "t1", "t2"]);
    // ... and shows in the next one.
    let fh2 = c.fs.opendir(tags.ino).expect("opendir");
    assert_eq!(names(fh2), [".", "..", "t0", "t1", "t2", "t3"]);
    c.fs.releasedir(fh);
    c.fs.releasedir(fh2);
    assert!(c.fs.listing(fh).is_err(), "released");
}

#[test]
fn a_cache_directory_serves_one_process_at_a_time_and_is_private() {
    let dir = tempfile::tempdir().expect("cache");
    let first = Store::new(Arc::new(Fake::default()), dir.path(), 1 << 30, Duration::from_secs(60)).expect("first");
    let second = Store::new(Arc::new(Fake::default()), dir.path(), 1 << 30, Duration::from_secs(60));
    let err = second.err().expect("a second store on the same directory");
    assert!(
        err.to_string().contains("in use by another regfs")
            && err.to_string().contains(&std::process::id().to_string()),
        "{err}"
    );
    for d in ["blobs", "tmp"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(d)).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
    drop(first);
    // Released with its owner.
    Store::new(Arc::new(Fake::default()), dir.path(), 1 << 30, Duration::from_secs(60))
        .expect("after the first is gone");
}

#[test]
fn tags_read_in_order_are_resolved_ahead_and_only_then() {
    let fake = Arc::new(Fake::default());
    for i in 0..40 {
        fake.image("r", &format!("t{i:02}"), format!("layer {i}").as_bytes());
    }
    let c = core_with_ttl(fake.clone(), Duration::from_secs(60));
    let heads = |tag: &str| fake.calls().iter().filter(|c| *c == &format!("Head manifest r {tag}")).count();
    let link = |tag: &str| c.fs.readlink(c.walk(&format!("r/tags/{tag}")).expect("tag").ino).expect("readlink");
    c.ls("r/tags").expect("list");
    // One tag, then one out of order: nothing is read ahead.
    link("t05");
    link("t20");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((0..40).map(|i| heads(&format!("t{i:02}"))).sum::<usize>(), 2, "{:?}", fake.calls());
    // Two in order: the next WINDOW are resolved in the background.
    link("t21");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while heads(&format!("t{:02}", 21 + regfs::readahead::WINDOW)) == 0 {
        assert!(std::time::Instant::now() < deadline, "no readahead: {:?}", fake.calls());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(heads(&format!("t{:02}", 22 + regfs::readahead::WINDOW)), 0, "read past the window");
    // Reading on to the end resolves every tag exactly once.
    for i in 22..40 {
        link(&format!("t{i:02}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 20..40 {
        assert_eq!(heads(&format!("t{i:02}")), 1, "t{i:02}: {:?}", fake.calls());
    }
}

#[test]
fn reserved_names_are_reserved_only_inside_repository_directories() {
    let fake = Fake::default();
    fake.image("tags/x", "v1", b"a");
    fake.image("r/blobs", "v1", b"b");
    fake.image("r", "v1", b"c");
    let c = core(fake);
    // A top-level namespace called `tags` is an ordinary directory.
    assert!(c.ls("").expect("root").contains(&"tags".to_string()));
    assert_eq!(c.ls("tags/x/tags").expect("tags/x"), ["v1"]);
    // Inside a repository, `blobs` is the repository's own blobs/ (so r/blobs is unreachable).
    assert_eq!(c.ls("r").expect("r"), ["tags", "manifests", "blobs"]);
    assert!(c.walk("r/blobs/tags").is_err());
}

#[test]
fn a_registry_that_refuses_head_still_resolves_tags_by_get() {
    let fake = Fake::default();
    let (d, _) = fake.image("r", "v1", b"layer");
    fake.knobs.lock().unwrap().refuse_head = true;
    let c = core(fake);
    let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
    assert_eq!(target, format!("../manifests/{d}"));
    // The manifest fetched by tag was verified and kept: reading it costs nothing more.
    let before = c.fake.calls().len();
    assert!(!c.cat(&format!("r/manifests/{d}/manifest.json")).expect("manifest").is_empty());
    assert_eq!(c.fake.calls().len(), before, "{:?}", c.fake.calls());
}

#[test]
fn a_manifest_fetched_by_digest_must_hash_to_it_whatever_docker_content_digest_says() {
    // A registry or mirror whose stored manifest changed: one that sends no header, and one that
    // sends the hash of the bytes it actually serves (consistent with the body, not the request).
    for header in [DigestHeader::Omitted, DigestHeader::OfServedBytes] {
        let fake = Fake::default();
        let (good, _) = fake.image("r", "v1", b"layer");
        // Still valid JSON, still the same manifest to a parser: only the hash tells.
        fake.serve_altered_manifest("r", &good.to_string(), |body| body.insert(1, b' '), header);
        let c = core(fake);
        let err = c.walk(&format!("r/manifests/{good}")).expect_err("altered manifest");
        assert_eq!(err.errno(), libc::EIO, "{header:?}: {err}");
        match &err {
            Error::DigestMismatch { expected, .. } => assert_eq!(expected, &good.to_string(), "{header:?}"),
            other => panic!("{header:?}: {other}"),
        }
        // Through the tag too: HEAD names the good digest, the GET by digest serves other bytes.
        let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
        assert_eq!(target, format!("../manifests/{good}"));
        assert!(c.cat(&format!("r/manifests/{good}/manifest.json")).is_err(), "{header:?}");
        // Nothing kept: asking again asks the registry again.
        let before = c.fake.calls().len();
        assert!(c.walk(&format!("r/manifests/{good}")).is_err());
        assert!(c.fake.calls().len() > before, "{header:?}");
    }
}

#[test]
fn when_head_is_refused_the_get_by_tag_must_match_its_docker_content_digest() {
    let fake = Fake::default();
    let (d, _) = fake.image("r", "v1", b"layer");
    let other = Digest::of(Algorithm::Sha256, b"another manifest");
    fake.claim_digest("r", "v1", Some(&other));
    fake.knobs.lock().unwrap().refuse_head = true;
    let c = core(fake);
    let err = c.walk("r/tags/v1").and_then(|a| c.fs.readlink(a.ino)).expect_err("a header that lies");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("Docker-Content-Digest"), "{err}");
    assert!(c.fake.calls().iter().any(|call| call == "Get manifest r v1"), "{:?}", c.fake.calls());
    // Neither the body's digest nor the claimed one is taken for a manifest of the repository.
    let seen = c.ls("r/manifests").expect("manifests/");
    assert!(!seen.contains(&d.to_string()) && !seen.contains(&other.to_string()), "{seen:?}");
}

#[test]
fn a_blob_of_the_right_length_with_other_bytes_is_refused_and_not_kept() {
    let fake = Fake::default();
    let data = noise(300_000, 6);
    let (d, layer) = fake.image("r", "v1", &data);
    let mut corrupt = data.clone();
    corrupt[150_000] ^= 1;
    let served = Digest::of(Algorithm::Sha256, &corrupt);
    fake.knobs.lock().unwrap().substitute.insert(layer.to_string(), corrupt);
    let c = core(fake);
    for path in [format!("r/manifests/{d}/layers/0.tar"), format!("r/blobs/{layer}")] {
        let gets = c.fake.blob_gets.load(Ordering::SeqCst);
        let err = match c.cat(&path) {
            Ok(bytes) => panic!("{path}: {} bytes served from a corrupt blob", bytes.len()),
            Err(e) => e,
        };
        assert_eq!(err.errno(), libc::EIO, "{path}: {err}");
        match &err {
            Error::DigestMismatch { expected, actual, .. } => {
                assert_eq!(expected, &layer.to_string(), "{path}");
                assert_eq!(actual, &served.to_string(), "{path}");
            }
            other => panic!("{path}: {other}"),
        }
        // Asked anew each time: nothing of it was kept, in memory or on disk.
        assert_eq!(c.fake.blob_gets.load(Ordering::SeqCst), gets + 1, "{path}");
        assert!(!c.cache.path().join("blobs/sha256").join(layer.hex()).exists());
        assert_eq!(std::fs::read_dir(c.cache.path().join("tmp")).expect("tmp").count(), 0);
    }
}

#[test]
fn a_body_cut_off_is_resumed_five_times_and_no_more() {
    let data = noise(200_000, 7);
    // Five cut-offs: the sixth GET completes it.
    let fake = Fake::default();
    let (d, _) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().cut_after = Some((10_000, 5));
    let c = core(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("resumed five times"), data);
    assert_eq!(c.fake.blob_gets.load(Ordering::SeqCst), 6);
    // Six: given up after the sixth GET, though a seventh would have worked.
    let fake = Fake::default();
    let (d, _) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().cut_after = Some((10_000, 6));
    let c = core(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).map(|b| b.len()).expect_err("cut off six times");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("5 times"), "{err}");
    assert_eq!(c.fake.blob_gets.load(Ordering::SeqCst), 6);
}

#[test]
fn a_body_that_ends_short_without_an_error_is_resumed_and_verified() {
    let fake = Fake::default();
    let data = noise(500_000, 8);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().end_early = Some((200_000, 1));
    let c = core(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("resumed"), data);
    let gets: Vec<String> = c.fake.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
    assert_eq!(gets, [format!("GET blob r {layer} from 0"), format!("GET blob r {layer} from 200000")]);
}

#[test]
fn an_interrupted_read_is_read_again_not_taken_for_a_cut_off() {
    let fake = Fake::default();
    let data = noise(300_000, 9);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.knobs.lock().unwrap().interrupt_after = Some(100_000);
    let c = core(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("read through EINTR"), data);
    let gets: Vec<String> = c.fake.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
    assert_eq!(gets, [format!("GET blob r {layer} from 0")]);
}

#[test]
fn small_blobs_are_kept_in_memory_once_verified_and_large_ones_are_not() {
    use regfs::store::{Content, SMALL_BLOB};
    let fake = Arc::new(Fake::default());
    let small = fake.blob(&noise(4096, 10));
    let large = fake.blob(&noise(SMALL_BLOB as usize + 1, 11));
    let cache = tempfile::tempdir().expect("cache");
    let store = Store::new(fake.clone(), cache.path(), 1 << 30, Duration::from_secs(60)).expect("store");
    assert!(matches!(store.blob("r", &small).expect("small"), Content::Memory(_)));
    assert!(matches!(store.blob("r", &large).expect("large"), Content::File(_)));
    // With the disk copies gone, the small blob is still served (from memory, asking nothing);
    // the large one is fetched again.
    for d in [&small, &large] {
        std::fs::remove_file(cache.path().join("blobs/sha256").join(d.hex())).expect("cached file");
    }
    let gets = fake.blob_gets.load(Ordering::SeqCst);
    assert!(matches!(store.blob("r", &small).expect("small again"), Content::Memory(_)));
    assert_eq!(fake.blob_gets.load(Ordering::SeqCst), gets, "the small blob was fetched again");
    assert!(matches!(store.blob("r", &large).expect("large again"), Content::File(_)));
    assert_eq!(fake.blob_gets.load(Ordering::SeqCst), gets + 1);
}

#[test]
fn after_a_fresh_listing_tag_lookups_ask_the_registry_nothing() {
    let fake = Fake::default();
    fake.image("r", "v1", b"layer");
    let c = core(fake);
    assert_eq!(c.ls("r/tags").expect("tags"), ["v1"]);
    let before = c.fake.calls();
    // Listed: found without a HEAD. Not listed: missing without a HEAD.
    assert!(c.walk("r/tags/v1").is_ok());
    let err = c.walk("r/tags/v2").expect_err("not in the list");
    assert_eq!(err.errno(), libc::ENOENT, "{err}");
    assert_eq!(c.fake.calls(), before);
}

#[test]
fn a_blob_the_registry_says_is_over_1_tib_is_efbig() {
    let fake = Fake::default();
    let at_limit = fake.blob(b"one");
    let over = fake.blob(b"two");
    {
        let mut k = fake.knobs.lock().unwrap();
        k.head_size.insert(at_limit.to_string(), regfs::manifest::MAX_BLOB_SIZE);
        k.head_size.insert(over.to_string(), regfs::manifest::MAX_BLOB_SIZE + 1);
    }
    fake.tags.lock().unwrap().insert("r".into(), vec![]);
    let c = core(fake);
    // No descriptor names them: the size comes from a HEAD.
    assert_eq!(c.walk(&format!("r/blobs/{at_limit}")).expect("1 TiB").size, regfs::manifest::MAX_BLOB_SIZE);
    let err = c.walk(&format!("r/blobs/{over}")).expect_err("over 1 TiB");
    assert_eq!(err.errno(), libc::EFBIG, "{err}");
}
