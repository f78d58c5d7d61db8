//! The filesystem core without FUSE or HTTP: `Fs` and `Store` over an in-memory registry that
//! can lie, cut bodies off and ignore `Range`. What the kernel would ask, asked directly.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use regfs::digest::{Algorithm, Digest};
use regfs::error::{Error, Result};
use regfs::fs::{Fs, FsConfig};
use regfs::media;
use regfs::store::{Store, StoreConfig};
use regfs::testkit::core::{self as kit, Builder, Core, add_gzip_layer, fs_on, noise, put_gzip_image};
use regfs::testkit::fake::{DigestHeader, Fake};
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// The default store, on `dir`, holding at most `cache_size` on disk, trusting names for `tag_ttl`.
fn store_config(dir: &std::path::Path, cache_size: u64, tag_ttl: Duration) -> StoreConfig {
    StoreConfig { cache_dir: dir.to_path_buf(), cache_size, tag_ttl, ..StoreConfig::default() }
}

#[test]
fn a_manifest_that_does_not_hash_to_its_digest_is_refused_and_not_kept() {
    let fake = Faulty::new(Fake::default());
    let (good, _) = fake.image("r", "v1", b"layer");
    // The registry serves other bytes under that digest (and says the digest it was asked).
    let mut evil = fake.stored_manifest("r", &good.to_string()).unwrap();
    evil.body.extend_from_slice(b"\n ");
    fake.serve_stored_manifest("r", &good.to_string(), evil.clone());
    let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let (good, _) = fake.image("r", "v1", b"layer");
    let other = Digest::of(Algorithm::Sha256, b"something else");
    for key in [good.to_string(), "v1".to_string()] {
        fake.claim_digest("r", &key, Some(&other));
    }
    let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let (d, layer) = fake.image("r", "v1", b"layer bytes");
    for key in [d.to_string(), "v1".to_string()] {
        fake.claim_digest("r", &key, None);
    }
    let c = Core::new(fake);
    let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
    assert_eq!(target, format!("../manifests/{d}"));
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("layer"), b"layer bytes");
    assert_eq!(c.cat(&format!("r/blobs/{layer}")).expect("blob"), b"layer bytes");
}

#[test]
fn sha512_manifests_are_accepted() {
    let fake = Faulty::new(Fake::default());
    let (_, _) = fake.image("r", "v1", b"x");
    let body = fake.stored_manifest("r", "v1").unwrap().body;
    let d512 = fake.put_manifest("r", None, media::OCI_MANIFEST, &body, Algorithm::Sha512);
    let c = Core::new(fake);
    assert_eq!(
        c.ls(&format!("r/manifests/{d512}")).expect("sha512 dir"),
        ["manifest.json", "config.json", "layers", "rootfs", "referrers", "signatures"]
    );
    assert_eq!(c.cat(&format!("r/manifests/{d512}/manifest.json")).expect("bytes"), body);
}

#[test]
fn a_cut_off_body_is_resumed_with_range_and_verified() {
    let fake = Faulty::new(Fake::default());
    let data = noise(1 << 20, 1);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.cut_bodies_after(300_000, 2);
    let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let data = noise(500_000, 2);
    let (d, _) = fake.image("r", "v1", &data);
    fake.cut_bodies_after(100_000, 1);
    fake.ignore_range();
    let c = Core::new(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("restarted"), data);
    assert_eq!(c.fake.blob_gets(), 2);
}

#[test]
fn bodies_that_never_complete_fail_and_leave_nothing() {
    let fake = Faulty::new(Fake::default());
    let data = noise(400_000, 3);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.cut_bodies_after(1000, 100);
    let c = Core::new(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect_err("always cut off");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(!c.cache.path().join("blobs/sha256").join(layer.hex()).exists());
    assert_eq!(std::fs::read_dir(c.cache.path().join("tmp")).expect("tmp").count(), 0);
}

#[test]
fn a_body_longer_than_its_descriptor_is_refused() {
    let fake = Faulty::new(Fake::default());
    let data = noise(300_000, 4);
    let (d, layer) = fake.image("r", "v1", &data);
    let mut longer = data.clone();
    longer.extend_from_slice(&noise(1 << 20, 5));
    fake.corrupt_blob(&layer, longer);
    let c = Core::new(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect_err("too long");
    assert_eq!(err.errno(), libc::EIO);
    assert!(err.to_string().contains("longer"), "{err}");
}

#[test]
fn a_cache_file_altered_on_disk_is_detected_after_restart_and_replaced() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let data = noise(2 << 20, 6);
    let (d, layer) = fake.image("r", "v1", &data);
    let cache = tempfile::tempdir().expect("cache");
    let cache_path = cache.path().to_path_buf();
    let c = Builder::over(fake.clone()).cache(cache).build();
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("first"), data);
    let file = cache_path.join("blobs/sha256").join(layer.hex());
    let mut altered = std::fs::read(&file).expect("cached");
    altered[12345] ^= 1;
    std::fs::write(&file, &altered).expect("alter");
    // A half-written download left behind by a killed process.
    std::fs::write(cache_path.join("tmp").join(format!("{}.1.0", layer.hex())), b"half").expect("tmp");
    // The old process is gone (and with it, its lock on the directory).
    let cache = c.stop();
    // "Restart": a new store on the same directory.
    let c = Builder::over(fake.clone()).cache(cache).build();
    assert_eq!(std::fs::read_dir(cache_path.join("tmp")).expect("tmp").count(), 0, "tmp/ emptied at start");
    let gets = fake.blob_gets();
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("re-verified"), data);
    assert_eq!(fake.blob_gets(), gets + 1, "the altered file was downloaded again");
    // An intact file from an earlier run is re-hashed, not downloaded.
    // The old process is gone (and with it, its lock on the directory).
    let cache = c.stop();
    let c = Builder::over(fake.clone()).cache(cache).build();
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("intact"), data);
    assert_eq!(fake.blob_gets(), gets + 1);
}

/// Ten images of one 2 MiB layer each (noise seeded from `seed`), and a core whose cache holds
/// 5 MiB: reading them all makes the cache evict.
fn ten_images_through_a_5_mib_cache(seed: u8) -> (Vec<(Digest, Vec<u8>)>, u64, Core) {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let images = (0..10u8)
        .map(|i| {
            let data = noise(2 << 20, seed + i);
            let (d, _) = fake.image("r", &format!("v{i}"), &data);
            (d, data)
        })
        .collect();
    let limit = 5 << 20;
    (images, limit, Builder::over(fake).cache_size(limit).build())
}

#[test]
fn the_cache_stays_within_its_size_under_churn_and_open_files_stay_readable() {
    let (images, limit, c) = ten_images_through_a_5_mib_cache(10);
    // Hold the first blob open while the others churn through.
    let first = c.walk(&format!("r/manifests/{}/layers/0.tar", images[0].0)).expect("first");
    let held = c.fs.open_file(first.ino).expect("open").fh;
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
    let fake = Faulty::new(Fake::default());
    let data = noise(3 << 20, 30);
    let (d, _) = fake.image("r", "v1", &data);
    let c = Arc::new(Core::new(fake));
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
    assert_eq!(c.fake.blob_gets(), 1);
}

#[test]
fn names_from_the_registry_that_break_the_grammar_are_never_shown() {
    let fake = Faulty::new(Fake::default());
    fake.image("r", "ok", b"x");
    fake.add_tags("r", &["../../etc", "a/b", "", ".hidden", "x\0y"]);
    let c = Core::new(fake);
    assert_eq!(c.ls("r/tags").expect("tags"), ["ok"]);
    for bad in ["../x", "a\0b", ".", ".."] {
        assert!(c.walk(&format!("r/tags/{bad}")).is_err(), "{bad:?}");
    }
    assert_eq!(c.walk("r/manifests/sha256:..%2F").expect_err("bad digest").errno(), libc::ENOENT);
}

#[test]
fn hostile_manifests_are_refused_with_a_clear_error_and_nothing_is_shown() {
    let fake = Faulty::new(Fake::default());
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
        digests.push(fake.put_manifest("r", None, media::OCI_MANIFEST, body, Algorithm::Sha256));
    }
    let c = Core::new(fake);
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
    let fake = Arc::new(Faulty::new(Fake::default()));
    for i in 0..3 {
        fake.image("r", &format!("t{i}"), b"x");
    }
    // A tag TTL of zero: every new listing asks the registry.
    let c = Builder::over(fake.clone()).tag_ttl(Duration::ZERO).build();
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
    let first =
        Store::new(Arc::new(Faulty::new(Fake::default())), &store_config(dir.path(), 1 << 30, Duration::from_secs(60)))
            .expect("first");
    let second =
        Store::new(Arc::new(Faulty::new(Fake::default())), &store_config(dir.path(), 1 << 30, Duration::from_secs(60)));
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
    Store::new(Arc::new(Faulty::new(Fake::default())), &store_config(dir.path(), 1 << 30, Duration::from_secs(60)))
        .expect("after the first is gone");
}

#[test]
fn tags_read_in_order_are_resolved_ahead_and_only_then() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    for i in 0..40 {
        fake.image("r", &format!("t{i:02}"), format!("layer {i}").as_bytes());
    }
    let c = Builder::over(fake.clone()).tag_ttl(Duration::from_secs(60)).build();
    let heads = |tag: &str| fake.calls().iter().filter(|c| *c == &format!("Head manifest r {tag}")).count();
    let link = |tag: &str| c.fs.readlink(c.walk(&format!("r/tags/{tag}")).expect("tag").ino).expect("readlink");
    c.ls("r/tags").expect("list");
    // One tag, then one out of order: nothing is read ahead.
    link("t05");
    link("t20");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((0..40).map(|i| heads(&format!("t{i:02}"))).sum::<usize>(), 2, "{:?}", fake.calls());
    // Two in order: the next WINDOW are resolved in the background.
    let window = FsConfig::default().readahead.window;
    link("t21");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while heads(&format!("t{:02}", 21 + window)) == 0 {
        assert!(std::time::Instant::now() < deadline, "no readahead: {:?}", fake.calls());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(heads(&format!("t{:02}", 22 + window)), 0, "read past the window");
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
    let fake = Faulty::new(Fake::default());
    fake.image("tags/x", "v1", b"a");
    fake.image("r/blobs", "v1", b"b");
    fake.image("r", "v1", b"c");
    let c = Core::new(fake);
    // A top-level namespace called `tags` is an ordinary directory.
    assert!(c.ls("").expect("root").contains(&"tags".to_string()));
    assert_eq!(c.ls("tags/x/tags").expect("tags/x"), ["v1"]);
    // Inside a repository, `blobs` is the repository's own blobs/ (so r/blobs is unreachable).
    assert_eq!(c.ls("r").expect("r"), ["tags", "manifests", "blobs"]);
    assert!(c.walk("r/blobs/tags").is_err());
}

#[test]
fn a_registry_that_refuses_head_still_resolves_tags_by_get() {
    let fake = Faulty::new(Fake::default());
    let (d, _) = fake.image("r", "v1", b"layer");
    fake.refuse_manifest_head();
    let c = Core::new(fake);
    let target = c.fs.readlink(c.walk("r/tags/v1").expect("tag").ino).expect("readlink");
    assert_eq!(target, format!("../manifests/{d}"));
    // The manifest fetched by tag was verified and kept: reading it costs nothing more.
    let before = c.fake.calls().len();
    assert!(!c.cat(&format!("r/manifests/{d}/manifest.json")).expect("manifest").is_empty());
    assert_eq!(c.fake.calls().len(), before, "{:?}", c.fake.calls());
}

/// The signed schema1 fixture: its bytes, its JWS payload, and the digest of that payload.
fn signed_schema1_fixture() -> (Vec<u8>, Vec<u8>, Digest) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes =
        std::fs::read(format!("{}/tests/fixtures/schema1-signed.json", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("fixture");
    let header: serde_json::Value = serde_json::from_slice(
        &b64.decode(doc["signatures"][0]["protected"].as_str().expect("fixture")).expect("fixture"),
    )
    .expect("fixture");
    let len = header["formatLength"].as_u64().expect("fixture") as usize;
    let tail = b64.decode(header["formatTail"].as_str().expect("fixture")).expect("fixture");
    let payload = [&bytes[..len], &tail[..]].concat();
    let d = Digest::of(Algorithm::Sha256, &payload);
    (bytes, payload, d)
}

#[test]
fn a_forged_signed_schema1_served_for_a_pinned_digest_is_refused_and_nothing_of_it_is_shown() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (bytes, payload, d) = signed_schema1_fixture();
    let fake = Faulty::new(Fake::default());
    let evil = fake.add_blob(b"not the layer the digest names");
    let serve = |repo: &str, body: Vec<u8>| {
        fake.serve_stored_manifest(
            repo,
            &d.to_string(),
            regfs::testkit::fake::StoredManifest {
                content_type: media::DOCKER_SCHEMA1_SIGNED.into(),
                body,
                digest_header: Some(d.to_string()),
            },
        );
    };
    serve("good", bytes);
    // D's genuine payload travels whole in the protected header; the served JSON names `evil`.
    let header = serde_json::json!({"formatLength": 0, "formatTail": b64.encode(&payload)});
    let forged = format!(
        r#"{{"schemaVersion":1,"name":"t/x","tag":"s1","fsLayers":[{{"blobSum":"{evil}"}}],"signatures":[{{"protected":"{}"}}]}}"#,
        b64.encode(serde_json::to_vec(&header).expect("json"))
    );
    serve("r", forged.into_bytes());
    let c = Core::new(fake);

    assert_eq!(c.ls(&format!("good/manifests/{d}/layers")).expect("the genuine document"), ["0.tar.gz", "0.tar"]);
    let err = c.walk(&format!("r/manifests/{d}")).expect_err("a forged document");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("formatTail"), "{err}");
    assert!(c.ls(&format!("r/manifests/{d}/layers")).is_err());
    assert!(c.cat(&format!("r/manifests/{d}/manifest.json")).is_err());
    assert!(!c.fake.calls().iter().any(|l| l.contains(&evil.to_string())), "{:?}", c.fake.calls());
    assert!(c.cat(&format!("r/blobs/{evil}")).is_ok(), "the blob itself exists");
}

/// Two images in two repositories name one layer, one with its true size and one with `lie`.
/// The honest one stats and reads right whoever comes first, the liar's layer is EIO, and the
/// verified cache file survives, across a restart too.
fn one_layer_two_sizes(data_len: usize, lie: u64, liar_first: bool) {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let data = noise(data_len, 41);
    let (honest, layer) = fake.image("honest", "v1", &data);
    let liar = fake.image_claiming("liar", "v1", &layer, lie);
    let honest_path = format!("honest/manifests/{honest}/layers/0.tar");
    let liar_path = format!("liar/manifests/{liar}/layers/0.tar");
    let cache = tempfile::tempdir().expect("cache");
    let cache_path = cache.path().to_path_buf();
    let check = |c: &Core, liar_first: bool| {
        let liar_says = |c: &Core| {
            assert_eq!(c.walk(&liar_path).expect("the liar's stat").size, lie, "stat shows the liar's own claim");
            let err = c.cat(&liar_path).map(|v| v.len()).expect_err("the liar's layer");
            assert_eq!(err.errno(), libc::EIO, "{err}");
            assert!(err.to_string().contains(&liar.to_string()), "the error names the manifest: {err}");
        };
        if liar_first {
            liar_says(c);
        }
        assert_eq!(c.walk(&honest_path).expect("honest stat").size, data.len() as u64);
        assert_eq!(c.cat(&honest_path).expect("honest read"), data);
        assert_eq!(c.cat(&format!("liar/blobs/{layer}")).expect("the blob by digest"), data);
        liar_says(c);
        assert_eq!(c.walk(&honest_path).expect("honest stat").size, data.len() as u64);
        assert_eq!(c.cat(&honest_path).expect("honest read"), data);
    };
    let c = Builder::over(fake.clone()).cache(cache).build();
    check(&c, liar_first);
    let file = cache_path.join("blobs/sha256").join(layer.hex());
    assert_eq!(std::fs::read(&file).expect("the cache file survives"), data);
    // Restart on the same cache: the file is re-hashed and kept, whoever asks first.
    let cache = c.stop();
    let gets = fake.blob_gets();
    let c = Builder::over(fake.clone()).cache(cache).build();
    check(&c, true);
    assert_eq!(std::fs::read(&file).expect("the cache file survives a restart"), data);
    assert_eq!(fake.blob_gets(), gets, "a verified file is never downloaded again");
}

#[test]
fn a_wrong_descriptor_size_in_another_manifest_fails_only_that_manifest_s_entry() {
    for (len, liar_first) in [(2 << 20, false), (2 << 20, true), (300_000, false), (300_000, true)] {
        for lie in [len as u64 - 1, len as u64 + 1, 7] {
            one_layer_two_sizes(len, lie, liar_first);
        }
    }
}

#[test]
fn a_wrong_descriptor_size_does_not_fail_an_honest_reader_of_the_same_layer_concurrently() {
    for lie in [(2u64 << 20) - 1, (2 << 20) + 1] {
        let fake = Arc::new(Faulty::new(Fake::default()));
        let data = noise(2 << 20, 43);
        let (honest, layer) = fake.image("honest", "v1", &data);
        let liar = fake.image_claiming("liar", "v1", &layer, lie);
        fake.slow_reads(Duration::from_millis(20));
        let c = Builder::over(fake.clone()).build();
        // Both manifests known first, so that the two opens race for the blob itself.
        c.walk(&format!("honest/manifests/{honest}/layers/0.tar")).expect("honest");
        c.walk(&format!("liar/manifests/{liar}/layers/0.tar")).expect("liar");
        std::thread::scope(|s| {
            let mut threads = Vec::new();
            for i in 0..8 {
                let c = &c;
                let (honest, liar) = (&honest, &liar);
                threads.push(s.spawn(move || {
                    if i % 2 == 0 {
                        (true, c.cat(&format!("honest/manifests/{honest}/layers/0.tar")))
                    } else {
                        (false, c.cat(&format!("liar/manifests/{liar}/layers/0.tar")))
                    }
                }));
            }
            for t in threads {
                match t.join().expect("thread") {
                    (true, r) => assert_eq!(r.expect("the honest reader"), data),
                    (false, r) => assert_eq!(r.map(|v| v.len()).expect_err("the liar").errno(), libc::EIO),
                }
            }
        });
        let file = c.cache.path().join("blobs/sha256").join(layer.hex());
        assert_eq!(std::fs::read(&file).expect("the cache file"), data);
    }
}

#[test]
fn a_manifest_of_a_type_regfs_does_not_know_is_shown_as_its_verified_bytes() {
    let fake = Faulty::new(Fake::default());
    let sbom = fake.add_blob(b"{\"sbom\":true}");
    let body = format!(
        r#"{{"schemaVersion": 9, "artifactType": "x", "layers": [{{"mediaType": "application/x.sbom", "size": 13, "digest": "{sbom}"}}]}}"#
    );
    let d =
        fake.put_manifest("r", Some("v1"), "application/vnd.example.thing.v9+json", body.as_bytes(), Algorithm::Sha256);
    let not_json =
        fake.put_manifest("r", None, "application/vnd.example.blob", b"\x00\x01 not JSON", Algorithm::Sha256);
    let c = Core::new(fake);
    assert_eq!(
        c.ls(&format!("r/manifests/{d}")).expect("listed"),
        ["manifest.json", "layers", "referrers", "signatures"]
    );
    assert_eq!(c.cat(&format!("r/manifests/{d}/manifest.json")).expect("read"), body.as_bytes());
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0")).expect("layer"), b"{\"sbom\":true}");
    assert_eq!(c.ls(&format!("r/manifests/{not_json}")).expect("listed"), ["manifest.json", "referrers", "signatures"]);
    assert_eq!(c.cat(&format!("r/manifests/{not_json}/manifest.json")).expect("read"), b"\x00\x01 not JSON");
}

#[test]
fn manifests_are_listed_only_once_verified() {
    let fake = Faulty::new(Fake::default());
    let (good, _) = fake.image("r", "good", b"layer");
    let (bad, _) = fake.image("r", "bad", b"other layer");
    // The registry serves other bytes under `bad` (by tag and by digest).
    for key in [bad.to_string(), "bad".to_string()] {
        let mut altered = fake.stored_manifest("r", &key).unwrap();
        altered.body.push(b' ');
        fake.serve_stored_manifest("r", &key, altered);
    }
    let c = Core::new(fake);
    for tag in ["good", "bad"] {
        c.fs.readlink(c.walk(&format!("r/tags/{tag}")).expect("tag").ino).expect("readlink");
    }
    assert_eq!(c.ls("r/manifests").expect("listed"), Vec::<String>::new(), "nothing verified yet");
    assert!(c.walk(&format!("r/manifests/{bad}")).is_err());
    c.walk(&format!("r/manifests/{good}")).expect("good");
    assert_eq!(c.ls("r/manifests").expect("listed"), [good.to_string()]);
}

#[test]
fn a_head_size_that_disagrees_with_the_verified_blob_is_an_error_and_then_corrected() {
    let fake = Faulty::new(Fake::default());
    let data = noise(300_000, 44);
    let (_, layer) = fake.image("r", "v1", &data);
    let path = format!("r/blobs/{layer}");
    let c = Core::new(fake);
    // HEAD says less than the blob holds: the download is bounded by what was shown, and fails.
    c.fake.lie_about_size(&layer, 1000);
    assert_eq!(c.walk(&path).expect("stat").size, 1000, "what HEAD says, before any download");
    let err = c.cat(&path).map(|v| v.len()).expect_err("a body longer than shown");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("longer"), "{err}");
    // HEAD says more: the blob verifies, but the size shown was wrong, so that open fails...
    c.fake.lie_about_size(&layer, 400_000);
    assert_eq!(c.walk(&path).expect("stat").size, 400_000, "a new HEAD after the failure");
    let err = c.cat(&path).map(|v| v.len()).expect_err("a size that was shown wrong");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains(&layer.to_string()), "{err}");
    // ...and the verified length replaces the HEAD's word.
    assert_eq!(c.walk(&path).expect("stat").size, data.len() as u64);
    assert_eq!(c.cat(&path).expect("read"), data);
}

#[test]
fn lookups_are_counted_and_forgotten_inodes_are_freed_not_reused() {
    let fake = Faulty::new(Fake::default());
    let tags: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
    // `a`: a namespace in the catalog, that nothing has looked up yet.
    fake.image("a/b", "v1", b"other");
    let mut layer_digest = None;
    for t in &tags {
        layer_digest = Some(fake.image("r", t, b"layer").1);
    }
    let blob = format!("r/blobs/{}", layer_digest.expect("a layer"));
    let c = Core::new(fake);
    let (before, _) = c.fs.inodes_held();
    // Listing 1000 tags hands the kernel no reference, so it holds nothing in the table.
    assert_eq!(c.ls("r/tags").expect("ls").len(), 1000);
    let walked = c.fs.inodes_held().0;
    assert_eq!(walked, before + 2, "r and r/tags only");
    // Each lookup of a name is one reference; the number stays while any is held.
    let root = c.fs.root_ino();
    let a = c.fs.lookup(root, OsStr::new("a")).expect("lookup").ino;
    assert_eq!(c.fs.lookup(root, OsStr::new("a")).expect("again").ino, a);
    c.fs.forget(a, 1);
    assert!(c.fs.getattr(a).is_ok(), "freed while still held once");
    c.fs.forget(a, 1);
    assert_eq!(c.fs.getattr(a).expect_err("freed").errno(), libc::ENOENT);
    assert_eq!(c.fs.inodes_held().0, walked);
    // Looked up again, the same directory, under a number never used before.
    let a2 = c.fs.lookup(root, OsStr::new("a")).expect("lookup").ino;
    assert_ne!(a2, a);
    // A digest-addressed file comes back identical after being forgotten.
    let layer = c.walk(&blob).expect("layer");
    assert_eq!(c.cat(&blob).expect("cat"), b"layer");
    c.fs.forget(layer.ino, 2);
    assert_eq!(c.fs.getattr(layer.ino).expect_err("freed").errno(), libc::ENOENT);
    let again = c.walk(&blob).expect("layer again");
    assert_eq!((again.size, again.kind), (layer.size, layer.kind));
    assert_eq!(c.cat(&blob).expect("cat"), b"layer");
}

/// Bytes in the cache directory's files now: verified blobs and downloads in progress.
fn cache_bytes(dir: &std::path::Path) -> u64 {
    ["blobs/sha256", "tmp"]
        .iter()
        .filter_map(|d| std::fs::read_dir(dir.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn downloads_in_progress_count_against_the_cache_size() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let mib = 1u64 << 20;
    let blob = |n: u64, seed: u8| {
        let data = noise(n as usize, seed);
        let (_, layer) = fake.image("r", &format!("s{seed}"), &data);
        (format!("r/blobs/{layer}"), data)
    };
    let (a, b) = (blob(3 * mib / 2, 1), blob(3 * mib / 2, 2));
    let c3 = blob(3 * mib, 3);
    let huge = blob(6 * mib, 4);
    let limit = 4 * mib;
    let cache = tempfile::tempdir().expect("cache");
    let dir = cache.path().to_path_buf();
    let c = Builder::over(fake.clone()).cache(cache).cache_size(limit).build();
    for (path, data) in [&a, &b] {
        assert_eq!(&c.cat(path).expect("read"), data);
    }
    assert_eq!(cache_bytes(&dir), 3 * mib);
    // Watch the disk while each download is under way.
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let (peak, dir) = (Arc::clone(&peak), dir.clone());
        fake.on_read(Arc::new(move || {
            peak.fetch_max(cache_bytes(&dir), Ordering::SeqCst);
        }));
    }
    // 3 MiB more into a cache of 4 holding 3: older files make room as the download grows.
    assert_eq!(&c.cat(&c3.0).expect("read"), &c3.1);
    let seen = peak.swap(0, Ordering::SeqCst);
    eprintln!("a 3 MiB download into a 4 MiB cache holding 3 MiB: at most {seen} bytes on disk");
    assert!(seen <= limit, "{seen} bytes on disk with a limit of {limit}");
    assert!(cache_bytes(&dir) <= limit);
    // A blob larger than the whole cache is still served; the cache then holds it alone.
    assert_eq!(&c.cat(&huge.0).expect("read"), &huge.1);
    let seen = peak.swap(0, Ordering::SeqCst);
    assert!(seen <= 6 * mib, "{seen} bytes on disk for a 6 MiB blob");
    assert_eq!(cache_bytes(&dir), 6 * mib);
    // And the smaller ones come back as needed.
    assert_eq!(&c.cat(&a.0).expect("read"), &a.1);
    assert!(cache_bytes(&dir) <= limit);
}

#[test]
fn tag_lists_kept_are_bounded_in_bytes_across_repositories() {
    let fake = Faulty::new(Fake::default());
    // Ten repositories of 200,000 tags each: about 10 MiB of names apiece as regfs counts them.
    for r in 0..10 {
        let tags: Vec<String> = (0..200_000).map(|i| format!("tag-{r}-{i:012}")).collect();
        fake.set_tags(&format!("r{r}"), tags);
    }
    let c = Core::new(fake);
    for r in 0..10 {
        assert_eq!(c.fs.store().tags(&format!("r{r}")).expect("tags").len(), 200_000);
    }
    let held = c.fs.store().tag_list_bytes();
    eprintln!("ten 10 MiB tag lists listed: {} MiB kept", held >> 20);
    assert!(held <= StoreConfig::default().tag_lists_bytes, "{held} bytes of tag lists kept");
    // The most recent are still fresh (no request); the oldest are asked for again.
    let asked = |c: &Core, repo: &str| c.fake.calls().iter().filter(|x| *x == &format!("tags {repo}")).count();
    c.fs.store().tags("r9").expect("tags");
    assert_eq!(asked(&c, "r9"), 1);
    c.fs.store().tags("r0").expect("tags");
    assert_eq!(asked(&c, "r0"), 2);
}

/// A local user holding many handles of one large directory open (each `opendir` takes a
/// listing) must not make regfs hold one copy of it per handle: handles of a directory whose
/// listing has not changed share one snapshot, so memory is bounded by what the directory holds,
/// not by how many times it is open.
#[test]
fn open_handles_of_an_unchanged_directory_share_one_listing() {
    let fake = Faulty::new(Fake::default());
    let tags: Vec<String> = (0..10_000).map(|i| format!("tag-{i:08}-{}", "x".repeat(40))).collect();
    fake.set_tags("r", tags);
    let c = Core::new(fake);
    let dir = c.walk("r/tags").expect("tags");
    let handles: Vec<u64> = (0..100).map(|_| c.fs.opendir(dir.ino).expect("opendir")).collect();
    let first = c.fs.listing(handles[0]).expect("listing");
    assert_eq!(first.len(), 10_002);
    let copies = handles.iter().filter(|&&fh| !Arc::ptr_eq(&first, &c.fs.listing(fh).expect("listing"))).count();
    assert_eq!(copies, 0, "{copies} of 100 open handles hold their own copy of a 10,000-entry listing");
    for fh in handles {
        c.fs.releasedir(fh);
    }
}

/// What tags resolved to is kept for `--tag-ttl`, but not without bound: a local user resolving
/// tag after tag (each one HEAD) must not grow a table for the life of the mount.
#[test]
fn resolved_tags_kept_are_bounded() {
    let fake = Faulty::new(Fake::default());
    let (digest, _) = fake.image("r", "t0", b"layer");
    let stored = fake.stored_manifest("r", "t0");
    let stored = stored.expect("stored");
    let n = StoreConfig::default().tag_digests + 2000;
    for i in 1..n {
        fake.serve_stored_manifest("r", &format!("t{i}"), stored.clone());
    }
    let c = Core::new(fake);
    for i in 0..n {
        assert_eq!(c.fs.store().resolve_tag("r", &format!("t{i}")).expect("resolve"), digest);
    }
    let held = c.fs.store().tag_digests_held();
    assert!(held <= StoreConfig::default().tag_digests, "{held} tag resolutions held after {n}");
    // The most recent are still known without a request.
    assert_eq!(c.fs.store().resolve_tag_if_known("r", &format!("t{}", n - 1)), Some(digest));
}

/// `manifests/` lists the verified manifests regfs holds: pruned with them, so the list (and
/// what it costs) cannot grow past the manifest cache; one pruned is verified again on lookup.
#[test]
fn manifests_listed_are_pruned_with_the_manifest_cache() {
    let fake = Faulty::new(Fake::default());
    let ct = "application/vnd.example.blob";
    let digests: Vec<Digest> = (0..20u8)
        .map(|i| {
            let mut body = vec![b'x'; (4 << 20) - 16];
            body[0] = i;
            fake.put_manifest("r", None, ct, &body, Algorithm::Sha256)
        })
        .collect();
    let c = Core::new(fake);
    for d in &digests {
        c.walk(&format!("r/manifests/{d}")).expect("verified");
    }
    let listed = c.ls("r/manifests").expect("listed");
    assert!(listed.len() < digests.len(), "{} of {} listed: more than the cache can hold", listed.len(), digests.len());
    // The most recent is listed; the first, pruned, still looks up (fetched and verified anew).
    assert!(listed.contains(&digests[19].to_string()));
    assert!(!listed.contains(&digests[0].to_string()));
    c.walk(&format!("r/manifests/{}", digests[0])).expect("verified again");
    assert!(c.ls("r/manifests").expect("listed").contains(&digests[0].to_string()));
}

/// Every open of a cached layer must not cost regfs a file descriptor of its own: a local user
/// (with `--allow-other`, any user) holding many handles of one layer open would otherwise run
/// regfs out of descriptors for everybody. Handles of one verified blob share its descriptor.
#[test]
fn open_handles_of_one_blob_share_one_descriptor() {
    let fake = Faulty::new(Fake::default());
    let data = noise(3 << 20, 9);
    fake.image("r", "v1", &data);
    let c = Core::new(fake);
    let path = format!("r/manifests/{}/layers/0.tar", c.fs.store().resolve_tag("r", "v1").expect("tag"));
    assert_eq!(c.cat(&path).expect("read"), data, "downloaded and verified");
    let ino = c.walk(&path).expect("layer").ino;
    let fds = || std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count();
    let before = fds();
    let handles: Vec<u64> = (0..1000).map(|_| c.fs.open_file(ino).expect("open").fh).collect();
    let grown = fds().saturating_sub(before);
    for fh in handles {
        c.fs.release(fh);
    }
    assert!(grown < 100, "1000 open handles of one layer took {grown} descriptors");
}

/// Readahead remembers, per repository, where the reader of its tag links is: not for every
/// repository ever read, or a local user reading one link in repository after repository grows
/// that table for the life of the mount.
#[test]
fn readahead_remembers_a_bounded_number_of_repositories() {
    let fake = Faulty::new(Fake::default());
    let (_, _) = fake.image("r0", "v1", b"layer");
    let stored = fake.stored_manifest("r0", "v1");
    let stored = stored.expect("stored");
    let streams = FsConfig::default().readahead.streams;
    let n = streams + 500;
    for i in 1..n {
        fake.serve_stored_manifest(&format!("r{i}"), "v1", stored.clone());
        fake.set_tags(&format!("r{i}"), vec!["v1".into()]);
    }
    let c = Core::new(fake);
    for i in 0..n {
        let repo = format!("r{i}");
        c.fs.store().tags(&repo).expect("tags");
        let link = c.walk(&format!("{repo}/tags/v1")).expect("tag");
        c.fs.readlink(link.ino).expect("readlink");
    }
    let held = c.fs.readahead_streams();
    assert!(held <= streams, "{held} repositories remembered after {n}");
}

#[test]
fn calls_of_the_wrong_shape_answer_in_filesystem_terms() {
    let fake = Faulty::new(Fake::default());
    let (manifest, _) = fake.image("r", "v1", b"layer");
    let c = Core::new(fake);
    let dir = c.walk("r/manifests").expect("manifests");
    let link = c.walk("r/tags/v1").expect("tag");
    let json = c.walk(&format!("r/manifests/{manifest}/manifest.json")).expect("manifest.json");
    let errno = |r: Result<()>| {
        let e = r.expect_err("wrong shape");
        assert!(!e.is_not_found(), "{e} would become a negative entry");
        e.errno()
    };
    // A name inside a file or a link: not a directory.
    assert_eq!(errno(c.fs.lookup(json.ino, OsStr::new("x")).map(drop)), libc::ENOTDIR);
    assert_eq!(errno(c.fs.lookup(link.ino, OsStr::new("x")).map(drop)), libc::ENOTDIR);
    assert_eq!(errno(c.fs.opendir(json.ino).map(drop)), libc::ENOTDIR);
    // readlink of what is not a link: EINVAL, as readlink(2).
    assert_eq!(errno(c.fs.readlink(dir.ino).map(drop)), libc::EINVAL);
    assert_eq!(errno(c.fs.readlink(json.ino).map(drop)), libc::EINVAL);
    // open of a directory is EISDIR; of a link (never followed by the core), EINVAL.
    assert_eq!(errno(c.fs.open_file(dir.ino).map(drop)), libc::EISDIR);
    assert_eq!(errno(c.fs.open_file(link.ino).map(drop)), libc::EINVAL);
    // Handles that were never opened, or were released.
    assert_eq!(errno(c.fs.listing(999).map(drop)), libc::EBADF);
    assert_eq!(errno(c.fs.read(999, 0, 10).map(drop)), libc::EBADF);
    let fh = c.fs.open_file(json.ino).expect("open").fh;
    c.fs.release(fh);
    assert_eq!(errno(c.fs.read(fh, 0, 10).map(drop)), libc::EBADF);
    // Only a name the grammar forbids is an invalid name (with the day-long negative entry).
    let e = c.fs.lookup(dir.ino, OsStr::new("not-a-digest")).expect_err("grammar");
    assert!(matches!(e, Error::InvalidName(_)), "{e}");
    assert_eq!(c.fs.negative_ttl(dir.ino, &e), Duration::from_secs(24 * 3600));
}

/// A transcript of the whole tree, for the characterization test below: every path with its kind,
/// size, permissions and TTL, every listing in order, every link's target.
fn transcribe(c: &Core, path: &str, out: &mut Vec<String>) {
    let attr = c.walk(path).expect(path);
    let shown = if path.is_empty() { "/" } else { path };
    let mut line =
        format!("{shown} {:?} size={} perm={:o} ttl={}", attr.kind, attr.size, attr.mode, attr.ttl.as_secs());
    match attr.kind {
        regfs::layout::FileKind::Symlink => {
            line += &format!(" -> {}", c.fs.readlink(attr.ino).expect("readlink"));
            out.push(line);
        }
        regfs::layout::FileKind::File => {
            match c.cat(path) {
                Ok(bytes) => line += &format!(" read={}", bytes.len()),
                Err(e) => line += &format!(" read: errno={}", e.errno()),
            }
            out.push(line);
        }
        regfs::layout::FileKind::CharDevice | regfs::layout::FileKind::BlockDevice | regfs::layout::FileKind::Fifo => {
            out.push(format!("{line} rdev={:x}", attr.rdev))
        }
        regfs::layout::FileKind::Directory => {
            let fh = match c.fs.opendir(attr.ino) {
                Ok(fh) => fh,
                Err(e) => return out.push(format!("{line} opendir: errno={}", e.errno())),
            };
            let listing = c.fs.listing(fh).expect("listing");
            c.fs.releasedir(fh);
            let names: Vec<String> = listing.iter().map(|e| format!("{}:{:?}", e.name, e.kind)).collect();
            line += &format!(" [{}]", names.join(" "));
            // `..` names the directory this one was reached from (held, so its number is known).
            let up = c.walk(path.rsplit_once('/').map_or("", |(p, _)| p)).expect("parent").ino;
            if listing.iter().find(|e| e.name == "..").map(|e| e.ino) != Some(up) {
                line += " (.. is elsewhere)";
            }
            out.push(line);
            for e in listing.iter().filter(|e| e.name != "." && e.name != "..") {
                transcribe(c, format!("{path}/{}", e.name).trim_start_matches('/'), out);
            }
        }
    }
}

#[test]
fn the_layout_of_every_kind_of_node_is_as_recorded() {
    let fake = Faulty::new(Fake::default());
    let (img, layer) = fake.image("ns/img", "v1", b"layer one");
    let (arm, _) = fake.image("ns/img", "arm", b"layer two");
    let cfg = fake.add_blob(br#"{"architecture":"amd64","os":"linux"}"#);
    let docker = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::DOCKER_SCHEMA2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg.to_string(), "size": 38},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer.to_string(), "size": 9},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": layer.to_string(), "size": 9}
        ]
    });
    let d2 = fake.put_manifest(
        "ns/img",
        Some("d2"),
        media::DOCKER_SCHEMA2,
        docker.to_string().as_bytes(),
        Algorithm::Sha256,
    );
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": img.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": arm.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": media::OCI_MANIFEST, "digest": d2.to_string(), "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": img.to_string(), "size": 1, "platform": {"os": "layers", "architecture": "x"}},
            {"mediaType": media::OCI_MANIFEST, "digest": arm.to_string(), "size": 1}
        ]
    });
    let idx =
        fake.put_manifest("ns/img", Some("idx"), media::OCI_INDEX, index.to_string().as_bytes(), Algorithm::Sha256);
    let s1 = serde_json::json!({
        "schemaVersion": 1, "name": "ns/img", "tag": "s1", "architecture": "amd64",
        "fsLayers": [{"blobSum": layer.to_string()}], "history": [{"v1Compatibility": "{}"}]
    });
    let s1 =
        fake.put_manifest("ns/img", Some("s1"), media::DOCKER_SCHEMA1, s1.to_string().as_bytes(), Algorithm::Sha256);
    let art = fake.put_manifest("ns/img", Some("art"), "application/vnd.example.thing", b"not json", Algorithm::Sha256);
    let (solo, _) = fake.image("solo", "latest", b"solo layer");
    fake.image("ns/img/tags", "v1", b"hidden by the reserved name");
    // `current` chooses for a fixed platform, so the record is the same on any machine.
    let c = Core::builder(fake).platform("linux/amd64").build();

    // Resolve ns/img's tags first, so their sizes do not depend on how far the readahead got;
    // solo's one tag stays unresolved until read, and shows the size reported before that.
    for tag in ["arm", "art", "d2", "idx", "s1", "v1"] {
        c.fs.readlink(c.walk(&format!("ns/img/tags/{tag}")).expect("tag").ino).expect("readlink");
    }
    let mut out = Vec::new();
    transcribe(&c, "", &mut out);
    for d in [&img, &arm, &d2, &idx, &s1, &art] {
        transcribe(&c, &format!("ns/img/manifests/{d}"), &mut out);
    }
    transcribe(&c, &format!("ns/img/blobs/{layer}"), &mut out);
    let zeros = format!("sha256:{}", "0".repeat(64));
    let wrong = [
        // Not in the catalog: still a namespace (a catalog never denies a name; a reserved name
        // is ordinary at the root), but no repository, as its tag list says.
        "tags",
        "nosuch",
        "nosuch/tags",
        "UPPER",
        ".hidden",
        "ns/x y",
        "ns/img/tags/missing",
        "ns/img/tags/-bad",
        "ns/img/tags/v1/x",
        "ns/img/manifests/not-a-digest",
        "ns/img/manifests/sha256:..",
        &format!("ns/img/manifests/{zeros}"),
        &format!("ns/img/manifests/{img}/nope"),
        &format!("ns/img/manifests/{img}/config.json/x"),
        &format!("ns/img/manifests/{img}/layers/9.tar"),
        &format!("ns/img/manifests/{idx}/linux-s390x"),
        &format!("ns/img/manifests/{img}/current"),
        &format!("ns/img/manifests/{art}/config.json"),
        "ns/img/blobs/not-a-digest",
        &format!("ns/img/blobs/{zeros}"),
        &format!("ns/{}", "a".repeat(300)),
    ];
    for path in wrong {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let p = c.walk(parent).expect(parent);
        match c.fs.lookup(p.ino, OsStr::new(name)) {
            Ok(a) => out.push(format!("{path} ok {:?}", a.kind)),
            Err(e) => {
                out.push(format!("{path} errno={} negative_ttl={}", e.errno(), c.fs.negative_ttl(p.ino, &e).as_secs()))
            }
        }
    }
    let mut text = out.join("\n");
    for (d, alias) in [
        (&img, "<img>"),
        (&arm, "<arm>"),
        (&d2, "<d2>"),
        (&idx, "<idx>"),
        (&s1, "<s1>"),
        (&art, "<art>"),
        (&layer, "<layer>"),
        (&cfg, "<cfg>"),
        (&solo, "<solo>"),
    ] {
        text = text.replace(&d.to_string(), alias);
    }
    let text = text.replace(&"a".repeat(300), "<a*300>");
    let expected = include_str!("core_layout.txt");
    if text.trim() != expected.trim() {
        eprintln!("{text}");
    }
    assert_eq!(text.trim(), expected.trim());
}

#[test]
fn a_manifest_fetched_by_digest_must_hash_to_it_whatever_docker_content_digest_says() {
    // A registry or mirror whose stored manifest changed: one that sends no header, and one that
    // sends the hash of the bytes it actually serves (consistent with the body, not the request).
    for header in [DigestHeader::Omitted, DigestHeader::OfServedBytes] {
        let fake = Faulty::new(Fake::default());
        let (good, _) = fake.image("r", "v1", b"layer");
        // Still valid JSON, still the same manifest to a parser: only the hash tells.
        fake.serve_altered_manifest("r", &good.to_string(), |body| body.insert(1, b' '), header);
        let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let (d, _) = fake.image("r", "v1", b"layer");
    let other = Digest::of(Algorithm::Sha256, b"another manifest");
    fake.claim_digest("r", "v1", Some(&other));
    fake.refuse_manifest_head();
    let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let data = noise(300_000, 6);
    let (d, layer) = fake.image("r", "v1", &data);
    let mut corrupt = data.clone();
    corrupt[150_000] ^= 1;
    let served = Digest::of(Algorithm::Sha256, &corrupt);
    fake.corrupt_blob(&layer, corrupt);
    let c = Core::new(fake);
    for path in [format!("r/manifests/{d}/layers/0.tar"), format!("r/blobs/{layer}")] {
        let gets = c.fake.blob_gets();
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
        assert_eq!(c.fake.blob_gets(), gets + 1, "{path}");
        assert!(!c.cache.path().join("blobs/sha256").join(layer.hex()).exists());
        assert_eq!(std::fs::read_dir(c.cache.path().join("tmp")).expect("tmp").count(), 0);
    }
}

#[test]
fn a_body_cut_off_is_resumed_five_times_and_no_more() {
    let data = noise(200_000, 7);
    // Five cut-offs: the sixth GET completes it.
    let fake = Faulty::new(Fake::default());
    let (d, _) = fake.image("r", "v1", &data);
    fake.cut_bodies_after(10_000, 5);
    let c = Core::new(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("resumed five times"), data);
    assert_eq!(c.fake.blob_gets(), 6);
    // Six: given up after the sixth GET, though a seventh would have worked.
    let fake = Faulty::new(Fake::default());
    let (d, _) = fake.image("r", "v1", &data);
    fake.cut_bodies_after(10_000, 6);
    let c = Core::new(fake);
    let err = c.cat(&format!("r/manifests/{d}/layers/0.tar")).map(|b| b.len()).expect_err("cut off six times");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("6 times"), "{err}");
    assert_eq!(c.fake.blob_gets(), 6);
}

#[test]
fn a_body_that_ends_short_without_an_error_is_resumed_and_verified() {
    let fake = Faulty::new(Fake::default());
    let data = noise(500_000, 8);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.end_bodies_early(200_000, 1);
    let c = Core::new(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("resumed"), data);
    let gets: Vec<String> = c.fake.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
    assert_eq!(gets, [format!("GET blob r {layer} from 0"), format!("GET blob r {layer} from 200000")]);
}

#[test]
fn an_interrupted_read_is_read_again_not_taken_for_a_cut_off() {
    let fake = Faulty::new(Fake::default());
    let data = noise(300_000, 9);
    let (d, layer) = fake.image("r", "v1", &data);
    fake.interrupt_bodies_after(100_000);
    let c = Core::new(fake);
    assert_eq!(c.cat(&format!("r/manifests/{d}/layers/0.tar")).expect("read through EINTR"), data);
    let gets: Vec<String> = c.fake.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
    assert_eq!(gets, [format!("GET blob r {layer} from 0")]);
}

#[test]
fn small_blobs_are_kept_in_memory_once_verified_and_large_ones_are_not() {
    use regfs::store::Content;
    let small_blob = StoreConfig::default().small_blob;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let small = fake.add_blob(&noise(4096, 10));
    let large = fake.add_blob(&noise(small_blob as usize + 1, 11));
    let cache = tempfile::tempdir().expect("cache");
    let store = Store::new(fake.clone(), &store_config(cache.path(), 1 << 30, Duration::from_secs(60))).expect("store");
    assert!(matches!(store.blob("r", &small, None).expect("small"), Content::Memory(_)));
    assert!(matches!(store.blob("r", &large, None).expect("large"), Content::File(_)));
    // With the disk copies gone, the small blob is still served (from memory, asking nothing);
    // the large one is fetched again.
    for d in [&small, &large] {
        std::fs::remove_file(cache.path().join("blobs/sha256").join(d.hex())).expect("cached file");
    }
    let gets = fake.blob_gets();
    assert!(matches!(store.blob("r", &small, None).expect("small again"), Content::Memory(_)));
    assert_eq!(fake.blob_gets(), gets, "the small blob was fetched again");
    assert!(matches!(store.blob("r", &large, None).expect("large again"), Content::File(_)));
    assert_eq!(fake.blob_gets(), gets + 1);
}

/// The kit's own image must be what it says: its config reads back as stored.
#[test]
fn the_config_of_an_image_reads_as_stored() {
    let fake = Faulty::new(Fake::default());
    let (d, _) = fake.image("r", "v1", b"layer");
    let c = Core::new(fake);
    let path = format!("r/manifests/{d}/config.json");
    assert_eq!(c.walk(&path).expect("config").size, regfs::testkit::fake::IMAGE_CONFIG.len() as u64);
    assert_eq!(c.cat(&path).expect("config.json"), regfs::testkit::fake::IMAGE_CONFIG);
}

/// `ls -l tags/` shows a tag link's size before the tag is resolved (no HEAD per tag): it must be
/// the length readlink then gives, for the sha256 digests registries use.
#[test]
fn an_unresolved_tag_link_reports_the_length_of_its_target() {
    let fake = Faulty::new(Fake::default());
    fake.image("r", "v1", b"layer");
    let c = Core::new(fake);
    // Listed first, as `ls -l` does: the lookup then needs no request.
    assert_eq!(c.ls("r/tags").expect("tags"), ["v1"]);
    let before = c.walk("r/tags/v1").expect("tag");
    assert!(c.fs.store().resolve_tag_if_known("r", "v1").is_none(), "resolved already: {:?}", c.fake.calls());
    let target = c.fs.readlink(before.ino).expect("readlink");
    assert_eq!(before.size, target.len() as u64, "size before resolution vs {target:?}");
    assert_eq!(c.walk("r/tags/v1").expect("tag").size, target.len() as u64);
}

#[test]
fn after_a_fresh_listing_tag_lookups_ask_the_registry_nothing() {
    let fake = Faulty::new(Fake::default());
    fake.image("r", "v1", b"layer");
    let c = Core::new(fake);
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
    let fake = Faulty::new(Fake::default());
    let at_limit = fake.add_blob(b"one");
    let over = fake.add_blob(b"two");
    fake.lie_about_size(&at_limit, regfs::limits::MAX_BLOB_SIZE);
    fake.lie_about_size(&over, regfs::limits::MAX_BLOB_SIZE + 1);
    fake.set_tags("r", Vec::new());
    let c = Core::new(fake);
    // No descriptor names them: the size comes from a HEAD.
    assert_eq!(c.walk(&format!("r/blobs/{at_limit}")).expect("1 TiB").size, regfs::limits::MAX_BLOB_SIZE);
    let err = c.walk(&format!("r/blobs/{over}")).expect_err("over 1 TiB");
    assert_eq!(err.errno(), libc::EFBIG, "{err}");
}

/// A tag's link is answered without waiting (`Fs::readlink_now`, which the adapter answers
/// inline) only while the tag is resolved within `tag_ttl`: that answer costs no request, and
/// once the TTL has passed it is `None`, so the kernel's READLINK goes to a thread that asks the
/// registry again and sees the tag moved. What is not a link is left to `readlink` to refuse.
#[test]
fn a_tag_link_is_answered_without_waiting_only_within_its_ttl() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (one, _) = fake.image("r", "v1", b"one");
    let ttl = Duration::from_millis(400);
    let c = Builder::over(fake.clone()).tag_ttl(ttl).build();
    let ino = c.walk("r/tags/v1").expect("tag").ino;
    assert_eq!(c.fs.readlink(ino).expect("readlink"), format!("../manifests/{one}"));
    let calls = fake.calls().len();
    let now = c.fs.readlink_now(ino).expect("resolved within the TTL").expect("target");
    assert_eq!(now, format!("../manifests/{one}"));
    assert_eq!(fake.calls().len(), calls, "an inline readlink asked the registry: {:?}", fake.calls());
    let (two, _) = fake.image("r", "v1", b"two");
    std::thread::sleep(ttl + Duration::from_millis(100));
    assert!(c.fs.readlink_now(ino).is_none(), "a tag past its TTL was answered from memory");
    assert_eq!(c.fs.readlink(ino).expect("readlink"), format!("../manifests/{two}"), "the tag moved");
    assert_eq!(c.fs.readlink_now(ino).expect("resolved again").expect("target"), format!("../manifests/{two}"));
    let dir = c.walk("r/tags").expect("tags").ino;
    assert!(c.fs.readlink_now(dir).is_none(), "a directory is readlink's to refuse");
}

/// The listing of an immutable directory (a manifest's, a rootfs directory) never changes, so it
/// is kept after its handles close, within a bound of entries: opened again, it is ready
/// without the layout (`Fs::opendir_now`, which the adapter answers inline) and the same.
/// Directories of names the registry may move (`tags/`) are not kept: each opendir lists anew.
#[test]
fn immutable_listings_are_kept_within_a_bound_and_open_without_waiting() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let digests: Vec<Digest> = (0..4).map(|i| fake.image("r", &format!("t{i}"), &[i]).0).collect();
    let cache = tempfile::tempdir().expect("cache");
    let store = Store::new(fake.clone(), &store_config(cache.path(), 1 << 30, Duration::from_secs(60))).expect("store");
    let names = |fs: &Fs, fh| fs.listing(fh).expect("listing").iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    // Room for the listings of two manifest directories, not three.
    let per_dir = {
        let fs = Fs::new(Arc::new(store), FsConfig::default());
        let ino = fs.walk(&format!("r/manifests/{}", digests[0])).expect("dir").ino;
        let fh = fs.opendir(ino).expect("opendir");
        let n = fs.listing(fh).expect("listing").len();
        fs.releasedir(fh);
        n
    };
    let store = Store::new(fake.clone(), &store_config(cache.path(), 1 << 30, Duration::from_secs(60))).expect("store");
    let fs = Fs::new(Arc::new(store), FsConfig { kept_listing_entries: 2 * per_dir + 1, ..FsConfig::default() });
    let dirs: Vec<u64> = digests.iter().map(|d| fs.walk(&format!("r/manifests/{d}")).expect("dir").ino).collect();
    let first: Vec<Vec<String>> = dirs
        .iter()
        .map(|&ino| {
            assert!(fs.opendir_now(ino).is_none(), "a listing never taken is ready");
            let fh = fs.opendir(ino).expect("opendir");
            let listed = names(&fs, fh);
            fs.releasedir(fh);
            listed
        })
        .collect();
    let calls = fake.calls().len();
    // The two most recent are kept, whole; the older ones went to keep within the bound.
    for (i, &ino) in dirs.iter().enumerate() {
        match fs.opendir_now(ino) {
            Some(opened) => {
                assert!(i >= 2, "dir {i} kept past the bound of {} entries", 2 * per_dir + 1);
                let fh = opened.expect("opened");
                assert_eq!(names(&fs, fh), first[i]);
                fs.releasedir(fh);
            }
            None => assert!(i < 2, "dir {i}, listed last, was not kept"),
        }
    }
    assert_eq!(fake.calls().len(), calls, "opening kept listings asked the registry: {:?}", fake.calls());
    let tags = fs.walk("r/tags").expect("tags").ino;
    let fh = fs.opendir(tags).expect("opendir");
    fs.releasedir(fh);
    assert!(fs.opendir_now(tags).is_none(), "a listing of tags was kept");
}

/// Bytes of files under `dir` that this process holds open though they were deleted.
fn deleted_bytes_held_under(dir: &std::path::Path) -> u64 {
    let prefix = dir.display().to_string();
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| {
            let fd = e.ok()?.path();
            let target = std::fs::read_link(&fd).ok()?.display().to_string();
            (target.starts_with(&prefix) && target.ends_with(" (deleted)")).then(|| std::fs::metadata(&fd).ok())?
        })
        .map(|m| m.len())
        .sum()
}

/// With no open (the default mount), each inode's content is kept for its reads until the kernel
/// forgets the inode, which may be never while its dentry is cached. A kept file the cache has
/// since evicted must not keep its disk space: the cache's `--cache-size` would mean nothing to
/// a user who `cat`s many large blobs once each.
#[test]
fn contents_kept_for_reads_by_inode_do_not_pin_evicted_cache_files() {
    let (images, _, c) = ten_images_through_a_5_mib_cache(40);
    for (d, data) in &images {
        let ino = c.walk(&format!("r/manifests/{d}/layers/0.tar")).expect("layer").ino;
        assert_eq!(&c.fs.read_ino(ino, 1, 0, 4 << 20).expect("read by inode"), data);
    }
    let pinned = deleted_bytes_held_under(c.cache.path());
    eprintln!("evicted cache files held open after 10 reads by inode: {pinned} bytes");
    // The last blob read evicted what it needed room for; only what is being handed out may still be
    // held: one blob.
    assert!(pinned <= 2 << 20, "{pinned} bytes of evicted files held open");
}

/// A failed open by inode is held for 1 s for the same reader only, and a requester whose
/// thread id the kernel gives as 0 (one the daemon's pid namespace cannot see: regfs in a
/// container, or under `unshare --pid`, read from the host or a sibling container) is no
/// reader's twin: one such process's failed read (a registry blip, here a corrupt body) is not
/// the answer to another's read of that file once the registry serves it well again.
#[test]
fn a_failed_read_by_inode_is_not_held_for_every_reader_whose_thread_id_is_unknown() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let good = b"the blob's own bytes".to_vec();
    let blob = fake.add_blob(&good);
    let (layer, size, diff) = add_gzip_layer(&fake, &kit::tar_of(&[("a", b"a")]));
    put_gzip_image(&fake, "r", "v1", &[(layer, size)], &[diff]);
    let fs = fs_on(&fake, cache.path());
    let ino = fs.walk(&format!("r/blobs/{blob}")).expect("blob").ino;
    // A blip: the registry serves other bytes once, to a reader regfs sees as thread 0.
    fake.corrupt_blob(&blob, b"not the blob".to_vec());
    let err = fs.read_ino(ino, 0, 0, 4096).expect_err("a corrupt body");
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // The registry is well again; another process the daemon cannot see either reads the file.
    fake.corrupt_blob(&blob, good.clone());
    let read = fs.read_ino(ino, 0, 0, 1 << 20);
    assert_eq!(read.map_err(|e| e.to_string()), Ok(good), "another process got the first one's held error");
}

/// A size the open may still contradict is not cached by the kernel (as a decoded layer's 0 is
/// not: TTL 0 until it is known). `<repo>/blobs/<digest>` has no descriptor to size it, so its
/// size is what HEAD said; a registry whose HEAD says less than the blob holds makes the first
/// read fail and the HEAD's word is dropped. Were that size kept for the immutable TTL (a day),
/// every later `cat` would end cleanly after the HEAD's 1,000 bytes, a file whose bytes do not
/// hash to its name.
#[test]
fn a_size_from_a_lying_head_is_not_cached_by_the_kernel_past_the_read_that_disproves_it() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let blob = fake.add_blob(&data);
    let (layer, size, diff) = add_gzip_layer(&fake, &kit::tar_of(&[("a", b"a")]));
    put_gzip_image(&fake, "r", "v1", &[(layer, size)], &[diff]);
    fake.lie_about_size(&blob, 1000);
    let fs = fs_on(&fake, cache.path());
    let attr = fs.walk(&format!("r/blobs/{blob}")).expect("blob");
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

/// Reading ahead across a walk (`fs::ahead`): once a tree is listed with attributes, a read of
/// the first file of a directory hands back the next files in walk order (into a subdirectory
/// and back up), each whole and as it reads, leaving the window's middle file for the reader;
/// that file's read hands back the next window, passing by what was handed back already; a
/// read out of order hands back nothing; with `ahead_files` 0 nothing is read ahead.
#[test]
fn a_walk_in_listing_order_reads_the_next_files_ahead_and_single_reads_do_not() {
    let files: Vec<(String, Vec<u8>)> =
        ["a/f0", "a/f1", "a/sub/g0", "a/sub/g1", "a/sub/g2", "a/f2", "a/f3", "a/f4", "a/f5"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), noise(1000 + 100 * i, i as u8)))
            .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let raw = kit::tar_of(&refs);
    let started = |ahead_files: usize| {
        let fake = Faulty::new(Fake::default());
        let (blob, size, diff_id) = add_gzip_layer(&fake, &raw);
        let m = put_gzip_image(&fake, "r", "v1", &[(blob, size)], &[diff_id]);
        let c = Core::builder(fake).fs_config(FsConfig { ahead_files, ..FsConfig::default() }).build();
        let root = format!("r/manifests/{m}/rootfs");
        let mut walk = Vec::new();
        kit::walk_listed(&c.fs, c.walk(&root).expect("rootfs").ino, &root, &mut walk);
        (c, root, walk)
    };
    let (c, root, walk) = started(4);
    assert_eq!(walk.len(), files.len(), "{walk:?}");
    let content = |ino: u64| walk.iter().find(|(_, i)| *i == ino).map(|(p, _)| c.cat(p).expect("cat"));
    let names = |got: &[(u64, Vec<u8>)]| -> Vec<String> {
        got.iter()
            .map(|(ino, data)| {
                assert_eq!(Some(data.clone()), content(*ino), "inode {ino}: handed back other bytes than it reads");
                let path = &walk.iter().find(|(_, i)| i == ino).expect("a walked file").0;
                path.strip_prefix(&format!("{root}/")).unwrap_or(path).to_string()
            })
            .collect()
    };
    let at = |n: usize| walk[n].1;
    let order: Vec<&str> = walk.iter().map(|(p, _)| p.rsplit('/').next().unwrap_or_default()).collect();
    let window = names(&c.fs.read_ahead_of(at(0)));
    let expected: Vec<String> = [1, 2, 4, 5]
        .iter()
        .map(|&n| walk[n].0.strip_prefix(&format!("{root}/")).unwrap_or_default().to_string())
        .collect();
    assert_eq!(window, expected, "the first window in walk order {order:?}, the third file left as its marker");
    let next = names(&c.fs.read_ahead_of(at(3)));
    let expected: Vec<String> =
        [6, 7].iter().map(|&n| walk[n].0.strip_prefix(&format!("{root}/")).unwrap_or_default().to_string()).collect();
    assert_eq!(next[..2], expected[..], "the marker's read hands back what follows the first window");
    assert!(c.fs.read_ahead_of(at(1)).is_empty(), "a file read out of the walk's order hands back nothing");
    let (off, _, walk) = started(0);
    assert!(off.fs.read_ahead_of(walk[0].1).is_empty(), "ahead_files 0 reads nothing ahead");
}

/// A tag on a manifest the registry names by its sha512 digest (Docker-Content-Digest
/// `sha512:`): listed before it is resolved, its link says the sha256 length, so its target,
/// longer, is ESTALE (never a link cut short); looked up again, as the kernel does at ESTALE, it
/// is resolved, its size the target's, and the manifest behind it verifies by sha512.
#[test]
fn a_tag_on_a_sha512_manifest_is_estale_once_unresolved_then_its_whole_target() {
    let fake = Faulty::new(Fake::default());
    let layer = fake.add_blob(b"layer");
    let cfg = fake.add_blob(regfs::testkit::fake::IMAGE_CONFIG);
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(),
                   "size": regfs::testkit::fake::IMAGE_CONFIG.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}]
    }))
    .expect("json");
    let d = fake.put_manifest("r", Some("v1"), media::OCI_MANIFEST, &body, Algorithm::Sha512);
    let c = Core::new(fake);
    assert_eq!(c.ls("r/tags").expect("ls"), ["v1"]);
    let unresolved = c.walk("r/tags/v1").expect("tag");
    let first = c.fs.readlink(unresolved.ino);
    let target = format!("../manifests/{d}");
    match first {
        Ok(t) => assert_eq!(t, target, "a link served other than whole"),
        Err(e) => assert_eq!(e.errno(), libc::ESTALE, "{e}"),
    }
    let again = c.walk("r/tags/v1").expect("tag again");
    assert_eq!(again.size, target.len() as u64);
    assert_eq!(c.fs.readlink(again.ino).expect("readlink"), target);
    assert_eq!(c.cat(&format!("r/manifests/{d}/manifest.json")).expect("manifest by sha512"), body);
}

/// A listing read with attributes outside `rootfs/` hands out its entries with TTL 0; one whose
/// inode the kernel holds already carries the attributes the kernel was last told (the kernel
/// takes them for that inode: a size of 0 would cut an open file's pages), one it does not hold
/// its kind alone.
#[test]
fn a_listing_with_attributes_tells_a_held_inode_what_it_was_told() {
    let fake = Faulty::new(Fake::default());
    let (m, _) = fake.image("r", "v1", b"layer");
    let c = Core::new(fake);
    let dir = format!("r/manifests/{m}");
    let held = c.walk(&format!("{dir}/manifest.json")).expect("manifest.json");
    assert!(held.size > 0);
    let ino = c.walk(&dir).expect("dir").ino;
    let fh = c.fs.opendir(ino).expect("opendir");
    let listing = c.fs.listing(fh).expect("listing");
    let at_hand = c.fs.lists_at_hand(ino);
    assert!(!at_hand, "a manifest's directory lists no attributes at hand");
    let at = |name: &str| listing.iter().position(|e| e.name == name).expect(name);
    let (told, counted) = c.fs.entry_plus(at_hand, &listing, at("manifest.json")).expect("manifest.json");
    assert!(counted, "an entry of a listing this small is a reference");
    assert_eq!((told.ino, told.size, told.mode, told.ttl), (held.ino, held.size, held.mode, Duration::ZERO));
    let (bare, _) = c.fs.entry_plus(at_hand, &listing, at("config.json")).expect("config.json");
    assert_eq!((bare.size, bare.ttl), (0, Duration::ZERO), "not held: its kind alone");
    c.fs.releasedir(fh);
}

/// Listings read with attributes hand out references only while the kernel holds fewer than
/// `FsConfig::plus_inodes` inodes: past that bound an entry is numbered as a plain listing
/// numbers it (not counted, nothing kept), so a walk of a huge tree holds no more than its
/// lookups would. Every file is still listed, and reads under the number a lookup gives.
#[test]
fn listings_hand_out_no_more_references_past_the_bound() {
    let names: Vec<String> = (0..40).map(|i| format!("d/f{i:02}")).collect();
    let data: Vec<Vec<u8>> = (0..40).map(|i| noise(100 + i, i as u8)).collect();
    let files: Vec<(&str, &[u8])> = names.iter().zip(&data).map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let fake = Faulty::new(Fake::default());
    let (blob, size, diff_id) = add_gzip_layer(&fake, &kit::tar_of(&files));
    let m = put_gzip_image(&fake, "r", "v1", &[(blob, size)], &[diff_id]);
    let c = Core::builder(fake).fs_config(FsConfig { plus_inodes: 12, ..FsConfig::default() }).build();
    let root = format!("r/manifests/{m}/rootfs");
    let mut walk = Vec::new();
    kit::walk_listed(&c.fs, c.walk(&root).expect("rootfs").ino, &root, &mut walk);
    assert_eq!(walk.len(), 40, "every file listed");
    let (held, _) = c.fs.inodes_held();
    assert!(held <= 12, "{held} inodes held after listing 40 files with a bound of 12");
    assert_eq!(c.cat(&format!("{root}/d/f39")).expect("a file past the bound reads"), data[39]);
}
