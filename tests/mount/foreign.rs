//! Foreign layers: a layer whose descriptor lists `urls` (a non-distributable layer) and that the
//! registry does not have is fetched from those URLs, under the rules the reference registry
//! applies to them, never with the registry's credentials, and verified by digest like any blob.
//!
//! The registry is the reference registry with Basic auth and URL validation configured to accept
//! the foreign host's URLs (`validation.manifests.urls.allow`), so the manifests below are ones a
//! real registry takes. The foreign host is a second loopback server (a testkit front serving
//! files, recording every request). The one manifest a registry would refuse (a `#fragment` URL)
//! is served by a front in front of the registry.

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{Mount, Registry, sha256sum, start_forever};
use regfs::digest::{Algorithm, Digest};
use regfs::testkit::fixtures::layers::{Compression, layer};
use regfs::testkit::fixtures::push::Pusher;
use regfs::testkit::front::{Behavior, CUT_OFF, Fault, Front};

const USER: &str = "fiona";
const PASSWORD: &str = "foreign-pw";
const REPO: &str = "foreign/app";
const NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// One image with a foreign layer: what was pushed, where its layer is served.
struct Image {
    manifest: Digest,
    layer: Digest,
    /// The path of the layer on the foreign host.
    file: String,
}

struct World {
    registry: Registry,
    /// The foreign host.
    host: Front,
    /// Its allow pattern, as a user would write it.
    allow: String,
    good: Image,
    altered: Image,
    unallowed: Image,
    /// Its first URL fails (nothing there), its second serves it.
    second: Image,
    /// Served by `relay` only: its descriptor's URLs are a `#fragment` one and a good one.
    fragment: Image,
    /// Served by `relay` only, its URL on the relay's own origin.
    same_origin: Image,
    relay: Front,
}

/// An OCI image manifest with one layer of `layer_bytes` (not uploaded) listing `urls`, its config
/// pushed to `REPO`; the manifest's bytes.
fn manifest_with_urls(p: &Pusher, name: &str, layer_bytes: &[u8], raw: &[u8], urls: &[String]) -> Vec<u8> {
    let diff_id = Digest::of(Algorithm::Sha256, raw);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"name": name}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]}
    })
    .to_string()
    .into_bytes();
    let config_digest = p.blob(REPO, &config).expect("config pushed");
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": NONDIST,
            "digest": Digest::of(Algorithm::Sha256, layer_bytes).to_string(),
            "size": layer_bytes.len(),
            "urls": urls,
        }]
    }))
    .expect("manifest JSON")
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        start_forever(|| {
            let mut files = HashMap::new();
            let host = Front::start("http://127.0.0.1:9", Behavior::default());
            let allow = format!("^http://127\\.0\\.0\\.1:{}/", host.port);
            let htpasswd = Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]).output().expect("htpasswd");
            assert!(htpasswd.status.success());
            // The registry takes manifests whose URLs are on the foreign host (and, for the
            // refused-by-default case, on a second path there too).
            let validation = format!("validation:\n  manifests:\n    urls:\n      allow:\n        - '{allow}'\n");
            let registry = Registry::start_with(Some(&String::from_utf8_lossy(&htpasswd.stdout)), &validation);
            let base = reqwest::Url::parse(&registry.url).expect("registry URL");
            let p = Pusher::new(base, Some(&(USER.to_string(), PASSWORD.to_string()))).expect("pusher");
            let mut image = |name: &str, serve: Option<Vec<u8>>, extra_urls: &[String]| {
                let (bytes, raw) = layer(name, 300 << 10, Compression::Gzip).expect("layer");
                let file = format!("/layers/{name}.tar.gz");
                let mut urls: Vec<String> = extra_urls.to_vec();
                urls.push(format!("{}{file}?token=signed-{name}", host.url));
                files.insert(file.clone(), serve.unwrap_or_else(|| bytes.clone()));
                let m = manifest_with_urls(&p, name, &bytes, &raw, &urls);
                let manifest =
                    p.manifest(REPO, name, "application/vnd.oci.image.manifest.v1+json", &m).expect("pushed");
                (Image { manifest, layer: Digest::of(Algorithm::Sha256, &bytes), file }, m)
            };
            let (good, _) = image("good", None, &[]);
            let mut altered_bytes = layer("altered", 300 << 10, Compression::Gzip).expect("layer").0;
            altered_bytes[1000] ^= 0x55;
            let (altered, _) = image("altered", Some(altered_bytes), &[]);
            let (unallowed, _) = image("unallowed", None, &[]);
            let (second, _) = image("second", None, &[format!("{}/layers/missing.tar.gz", host.url)]);
            // A registry refuses a fragment URL, so this manifest is served by a front that passes
            // everything else through to the registry.
            let (bytes, raw) = layer("fragment", 300 << 10, Compression::Gzip).expect("layer");
            let file = "/layers/fragment.tar.gz".to_string();
            files.insert(file.clone(), bytes.clone());
            let urls = [format!("{}{file}#part", host.url), format!("{}{file}", host.url)];
            let m = manifest_with_urls(&p, "fragment", &bytes, &raw, &urls);
            let manifest = Digest::of(Algorithm::Sha256, &m);
            let mut served = HashMap::new();
            served.insert(format!("/v2/{REPO}/manifests/{manifest}"), m);
            let fragment = Image { manifest, layer: Digest::of(Algorithm::Sha256, &bytes), file };
            // A layer whose URL is on the registry's own origin (the relay's, for the mount through
            // it): it too is fetched without the registry's credentials.
            let relay = Front::start(&registry.url, Behavior::default());
            let (bytes, raw) = layer("same-origin", 300 << 10, Compression::Gzip).expect("layer");
            let file = "/layers/same-origin.tar.gz".to_string();
            served.insert(file.clone(), bytes.clone());
            let m = manifest_with_urls(&p, "same-origin", &bytes, &raw, &[format!("{}{file}", relay.url)]);
            let manifest = Digest::of(Algorithm::Sha256, &m);
            served.insert(format!("/v2/{REPO}/manifests/{manifest}"), m);
            let same_origin = Image { manifest, layer: Digest::of(Algorithm::Sha256, &bytes), file };
            relay.set(|b| b.files = served);
            host.set(|b| b.files = files);
            World { registry, host, allow, good, altered, unallowed, second, fragment, same_origin, relay }
        })
    })
}

fn mount(registry: &str, allow: Option<&str>) -> Mount {
    let cache = tempfile::tempdir().expect("cache").keep();
    let mut args = vec!["--username", USER, "--password-stdin", "--retries", "1"];
    if let Some(a) = allow {
        args.extend(["--layer-url-allow", a]);
    }
    Mount::start_with_cache(registry, &args, cache, Some(&format!("{PASSWORD}\n")))
}

fn layer_path(img: &Image) -> String {
    format!("{REPO}/manifests/{}/layers/0.tar.gz", img.manifest)
}

/// Requests the foreign host saw for `file`.
fn asked(w: &World, file: &str) -> Vec<regfs::testkit::front::Recorded> {
    w.host.requests().into_iter().filter(|r| r.path.split('?').next() == Some(file)).collect()
}

#[test]
fn foreign_layers_are_fetched_from_allowed_urls_without_credentials_and_verified() {
    let w = world();
    let m = mount(&w.registry.url, Some(&w.allow));
    // The first body is cut off half way: the download resumes from there with Range.
    w.host.set(|b| b.faults.push(Fault::status(&w.good.file, CUT_OFF, 1)));
    // The registry does not have the layer: it answered 404 first.
    let path = m.path(&layer_path(&w.good));
    assert_eq!(sha256sum(&path), w.good.layer.to_string(), "the layer from its URL, verified:\n{}", m.log());
    let registry_asked = w.registry.requests().iter().any(|r| r.contains(&format!("/blobs/{}", w.good.layer)));
    assert!(registry_asked, "the registry is asked first");
    let seen = asked(w, &w.good.file);
    assert!(!seen.is_empty(), "the foreign host was asked");
    for r in &seen {
        assert_eq!(r.authorization, None, "no Authorization to the foreign host: {r:?}");
    }
    let resumed = seen.iter().any(|r| r.range.as_deref().is_some_and(|v| v.starts_with("bytes=") && v != "bytes=0-"));
    assert!(resumed, "the cut-off body was resumed with Range: {seen:?}");

    // URLs are tried in order: one that fails gives way to the next.
    assert_eq!(sha256sum(&m.path(&layer_path(&w.second))), w.second.layer.to_string(), "{}", m.log());
    assert!(!asked(w, "/layers/missing.tar.gz").is_empty(), "the first URL was tried first");
    assert!(!asked(w, &w.second.file).is_empty());
    // The layer decodes like any other (views read the foreign blob through the same store).
    let tar = m.sh(&format!("tar -tf {REPO}/manifests/{}/layers/0.tar | head -3", w.good.manifest));
    assert!(crate::common::stdout(&tar).contains("regfs-fixture/good.txt"), "{tar:?}");
    // The log names the URL without its query (a signature there works as a credential).
    let log = m.log();
    assert!(!log.contains("signed-good"), "a URL's query was logged:\n{log}");

    // Altered bytes from the foreign host: EIO, and the log names the digest.
    let out = m.sh(&format!("cat {} > /dev/null", layer_path(&w.altered)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Input/output error"), "{err}");
    assert!(m.log().contains(&w.altered.layer.to_string()), "the log names the digest:\n{}", m.log());

    // One `#fragment` URL refuses them all, the good one after it too: ENOENT, said in the log.
    let through_relay = mount(&w.relay.url, Some(&w.allow));
    let out = through_relay.sh(&format!("cat {} > /dev/null", layer_path(&w.fragment)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No such file or directory"), "{err}");
    assert!(asked(w, &w.fragment.file).is_empty(), "no URL of a descriptor with a fragment URL is used");
    assert!(through_relay.log().contains("has a fragment"), "the log says why:\n{}", through_relay.log());
}

/// "No registry credentials" holds on the registry's own origin too: the foreign client has none.
#[test]
fn a_foreign_url_on_the_registry_s_own_origin_gets_no_credentials_either() {
    let w = world();
    let relay_allow = format!("^http://127\\.0\\.0\\.1:{}/", w.relay.port);
    let cache = tempfile::tempdir().expect("cache").keep();
    let args = ["--username", USER, "--password-stdin", "--layer-url-allow", &relay_allow];
    let m = Mount::start_with_cache(&w.relay.url, &args, cache, Some(&format!("{PASSWORD}\n")));
    let path = m.path(&layer_path(&w.same_origin));
    assert_eq!(sha256sum(&path), w.same_origin.layer.to_string(), "{}", m.log());
    let requests = w.relay.requests();
    let layer: Vec<_> = requests.iter().filter(|r| r.path == w.same_origin.file).collect();
    assert!(!layer.is_empty(), "the layer's URL was asked");
    assert!(layer.iter().all(|r| r.authorization.is_none()), "credentials sent with a foreign layer: {layer:?}");
    // The same origin did get the credentials, for the registry's own API.
    assert!(
        requests
            .iter()
            .any(|r| r.path.starts_with("/v2/") && r.authorization.as_deref().is_some_and(|a| a.starts_with("Basic ")))
    );
}

#[test]
fn foreign_layers_are_not_fetched_by_default_and_the_log_says_how_to_allow() {
    let w = world();
    let m = mount(&w.registry.url, None);
    let out = m.sh(&format!("cat {} > /dev/null", layer_path(&w.unallowed)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No such file or directory"), "{err}");
    assert!(asked(w, &w.unallowed.file).is_empty(), "the foreign host was not asked");
    let hint = format!("--layer-url-allow '{}'", w.allow);
    let log = m.log();
    assert!(log.contains(&hint), "the log says how to allow ({hint}):\n{log}");
    assert!(log.contains(&w.unallowed.layer.to_string()), "the log names the layer:\n{log}");
    // Once per layer, however often it is read.
    let _ = m.sh(&format!("cat {0} > /dev/null; cat {0} > /dev/null", layer_path(&w.unallowed)));
    assert_eq!(m.log().matches(&hint).count(), 1, "{}", m.log());
}
