//! Signatures made and checked by skopeo, an independent client, with the testkit's keys
//! (`regfs::testkit::fixtures::sigkeys`): the private key file the testkit writes is one skopeo
//! signs with, and what it signs verifies under a containers policy naming the public key the
//! testkit writes, and not under another key's.
//!
//! skopeo must be built with sigstore: Debian's skopeo 1.9.3 is not (its containers/image is
//! patched, "Debian-local change: sigstore disabled", for signing and verifying both). Set
//! `REGFS_SIGSTORE_SKOPEO` to a skopeo that has it (upstream v1.9.3, built from its vendored
//! sources with `go build -mod=vendor -tags "containers_image_openpgp
//! exclude_graphdriver_btrfs exclude_graphdriver_devicemapper" ./cmd/skopeo`). With the
//! Debian build the test says so on stderr and checks nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

use regfs::testkit::fixtures::layers::{self, Compression};
use regfs::testkit::fixtures::push::Pusher;
use regfs::testkit::fixtures::{push_image, sigkeys};

use crate::common::Registry;

/// The passphrase of every private key file the helpers write.
pub const PASSPHRASE: &str = "regfs-test-passphrase";

/// What skopeo says when its containers/image is Debian's, with sigstore patched out.
const SIGSTORE_DISABLED: &str = "sigstore disabled";

/// The skopeo to sign and verify with: `$REGFS_SIGSTORE_SKOPEO`, else `skopeo`.
pub fn skopeo_bin() -> String {
    std::env::var("REGFS_SIGSTORE_SKOPEO").unwrap_or_else(|_| "skopeo".to_string())
}

/// `host:port` of a registry URL.
pub fn host_of(registry_url: &str) -> &str {
    registry_url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
}

/// A `registries.d` directory in `dir` turning on sigstore attachments for `host`.
pub fn registries_d(dir: &Path, host: &str) -> PathBuf {
    let d = dir.join("registries.d");
    std::fs::create_dir_all(&d).expect("registries.d");
    std::fs::write(d.join("regfs-test.yaml"), format!("docker:\n  {host}:\n    use-sigstore-attachments: true\n"))
        .expect("registries.d file");
    d
}

/// A policy in `dir` that rejects everything but `scope`, which must be sigstoreSigned by
/// `public_pem` (written beside it); its path.
pub fn policy_file(dir: &Path, scope: &str, public_pem: &str) -> PathBuf {
    policy_file_with(dir, scope, public_pem, None)
}

/// [`policy_file`] with a `signedIdentity` (containers' default, matchRepoDigestOrExact, if `None`).
pub fn policy_file_with(dir: &Path, scope: &str, public_pem: &str, signed_identity: Option<&str>) -> PathBuf {
    let key = dir.join(format!("key-{}.pub", sha(public_pem)));
    std::fs::write(&key, public_pem).expect("public key");
    let mut requirement = serde_json::json!({"type": "sigstoreSigned", "keyPath": key.to_string_lossy()});
    if let Some(id) = signed_identity {
        requirement["signedIdentity"] = serde_json::json!({"type": id});
    }
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {scope: [requirement]}}
    });
    let path = dir.join(format!("policy-{}.json", sha(&format!("{scope} {public_pem} {signed_identity:?}"))));
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).expect("json")).expect("policy");
    path
}

fn sha(s: &str) -> String {
    crate::common::sha256_of(s.as_bytes())[7..19].to_string()
}

/// `skopeo copy` of `src_ref` to `dst_ref` (`repo:tag`, both on the registry at
/// `registry_url`), signed with sigstore by the key of `seed` (a cosign private key file the
/// testkit writes, sealed with [`PASSPHRASE`]). skopeo writes the signature as cosign does,
/// tag `sha256-<hex>.sig` in the destination repository. `Err` is skopeo's stderr.
pub fn skopeo_sign(registry_url: &str, src_ref: &str, dst_ref: &str, seed: &str) -> Result<(), String> {
    let host = host_of(registry_url);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cosign.key");
    let pass = dir.path().join("passphrase");
    std::fs::write(&key, sigkeys::cosign_private_pem(&sigkeys::signing_key(seed), PASSPHRASE.as_bytes())).expect("key");
    std::fs::write(&pass, PASSPHRASE).expect("passphrase");
    let regd = registries_d(dir.path(), host);
    let out = Command::new(skopeo_bin())
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--registries.d"])
        .arg(&regd)
        .arg("--sign-by-sigstore-private-key")
        .arg(&key)
        .arg("--sign-passphrase-file")
        .arg(&pass)
        .arg(format!("docker://{host}/{src_ref}"))
        .arg(format!("docker://{host}/{dst_ref}"))
        .output()
        .expect("running skopeo");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// Whether skopeo pulls `reference` (`host/repo:tag`, docker transport, no TLS) under the policy
/// at `policy_path`, attachments read as `registries_d` says.
pub fn skopeo_verifies(policy_path: &Path, registries_d: &Path, reference: &str) -> bool {
    skopeo_verify(policy_path, registries_d, reference).is_ok()
}

/// [`skopeo_verifies`], with skopeo's stderr when it refuses.
pub fn skopeo_verify(policy_path: &Path, registries_d: &Path, reference: &str) -> Result<(), String> {
    let dest = tempfile::tempdir().expect("tempdir");
    let out = Command::new(skopeo_bin())
        .arg("--policy")
        .arg(policy_path)
        .args(["copy", "--src-tls-verify=false", "--registries.d"])
        .arg(registries_d)
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dest.path().join("image").display()))
        .output()
        .expect("running skopeo");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// Whether skopeo's stderr says it has no sigstore at all (Debian's build).
pub fn sigstore_disabled(stderr: &str) -> bool {
    stderr.contains(SIGSTORE_DISABLED)
}

/// The digest of `repo`'s manifest `reference` (a tag or a digest) as the registry serves it
/// (`None`: not there).
fn manifest_digest(registry_url: &str, repo: &str, reference: &str) -> Option<String> {
    let sep = if reference.contains(':') { "@" } else { ":" };
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo}{sep}{reference}", host_of(registry_url)))
        .output()
        .expect("skopeo");
    out.status.success().then(|| crate::common::sha256_of(&out.stdout))
}

#[test]
fn skopeo_signs_with_the_testkit_s_cosign_key_and_verifies_with_its_public_key() {
    let registry = Registry::start(None);
    let host = host_of(&registry.url).to_string();
    let p = Pusher::new(registry.url.parse().expect("url"), None).expect("pusher");
    let (_, tar) = layers::layer("signatures-skopeo", 2_000, Compression::Plain).expect("layer");
    let digest = push_image(&p, "plain/app", "v1", &[tar]).expect("push");

    if let Err(e) = skopeo_sign(&registry.url, "plain/app:v1", "signed/app:v1", "regfs-sig-a") {
        if sigstore_disabled(&e) {
            eprintln!(
                "NOT CHECKED: {} has no sigstore (Debian's build); set REGFS_SIGSTORE_SKOPEO to one that has: {e}",
                skopeo_bin()
            );
            return;
        }
        panic!("skopeo did not sign with the testkit's key: {e}");
    }
    // skopeo copies the manifest unchanged, and writes cosign's tag for its digest.
    assert_eq!(manifest_digest(&registry.url, "signed/app", "v1").as_deref(), Some(digest.to_string().as_str()));
    let sig_tag = format!("sha256-{}.sig", digest.hex());
    assert!(manifest_digest(&registry.url, "signed/app", &sig_tag).is_some(), "no {sig_tag} in signed/app");
    assert!(manifest_digest(&registry.url, "plain/app", &sig_tag).is_none(), "the source was signed");

    let dir = tempfile::tempdir().expect("tempdir");
    let regd = registries_d(dir.path(), &host);
    let scope = format!("{host}/signed");
    let a = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-a"));
    let b = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-b"));
    let by_a = policy_file(dir.path(), &scope, &a);
    let by_b = policy_file(dir.path(), &scope, &b);
    let signed = format!("{host}/signed/app:v1");
    if let Err(e) = skopeo_verify(&by_a, &regd, &signed) {
        panic!("skopeo refused what it signed with key A under key A's policy: {e}");
    }
    match skopeo_verify(&by_b, &regd, &signed) {
        Ok(()) => panic!("skopeo accepted key A's signature under key B's policy"),
        Err(e) => assert!(e.contains("ignature"), "refused, but not for its signature: {e}"),
    }
    // The unsigned source: refused by the default, and outside the scope anyway.
    assert!(!skopeo_verifies(&by_a, &regd, &format!("{host}/plain/app:v1")));
    // The signed copy without the attachments read: no signature found.
    let none = tempfile::tempdir().expect("tempdir");
    assert!(!skopeo_verifies(&by_a, none.path(), &signed));
}

/// The `sig/…` fixtures on a registry of their own: each image its own manifest, the `.sig`
/// and referrers tags where the summary says, and, with a skopeo that has sigstore, skopeo's
/// verdict on every cosign-signed one under the summary's policy (key A for `<host>/sig`,
/// matchRepository) is the summary's `expect`. (skopeo 1.9 reads no Sigstore bundle: the
/// bundle fixtures are checked by the verifier's own tests; the hostile ones would cost it
/// 10,000 blob reads, or it takes a 2 MiB payload regfs refuses, so they are left out; and it
/// judges no index by the index's own signatures, see below.)
#[test]
fn the_sigstore_fixtures_are_as_their_summary_says_and_skopeo_agrees() {
    let registry = Registry::start(None);
    let host = host_of(&registry.url).to_string();
    let p = Pusher::new(registry.url.parse().expect("url"), None).expect("pusher");
    let started = std::time::Instant::now();
    let summary = regfs::testkit::fixtures::sigstore::push_sigstore(&p).expect("pushing sig/…");
    eprintln!("sig/… pushed in {:?}", started.elapsed());
    assert_eq!(summary["host"], host.as_str());
    assert_eq!(summary["policy"]["scope"], format!("{host}/sig").as_str());
    let images = summary["images"].as_array().expect("images");
    let mut digests: Vec<&str> = images.iter().map(|i| crate::common::s(&i["digest"])).collect();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), images.len(), "each image its own manifest");
    assert_eq!(images.len(), 21, "{summary:#}");
    for i in images {
        let (repo, tag, digest) =
            (crate::common::s(&i["repo"]), crate::common::s(&i["tag"]), crate::common::s(&i["digest"]));
        assert_eq!(manifest_digest(&registry.url, repo, tag).as_deref(), Some(digest), "{repo}:{tag}");
        assert!(i["expect"] == "accepted" || i["expect"] == "refused", "{i}");
        let hex = digest.trim_start_matches("sha256:");
        if let Some(sig) = i.get("signature") {
            assert_eq!(sig["tag"], format!("sha256-{hex}.sig").as_str());
            assert_eq!(
                manifest_digest(&registry.url, repo, crate::common::s(&sig["tag"])).as_deref(),
                Some(crate::common::s(&sig["digest"]))
            );
        }
        if let Some(refs) = i.get("referrers") {
            assert_eq!(refs["tag"], format!("sha256-{hex}").as_str());
            let raw = crate::common::skopeo_raw(&registry.url, repo, crate::common::s(&refs["tag"]));
            let index: serde_json::Value = serde_json::from_slice(&raw).expect("the referrers index");
            let listed = index["manifests"].as_array().expect("manifests");
            assert_eq!(listed.len() as u64, refs["count"].as_u64().expect("count"));
            assert!(listed.iter().all(|d| d["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"));
        }
    }
    let find = |repo: &str, tag: &str| {
        images.iter().find(|i| i["repo"] == repo && i["tag"] == tag).unwrap_or_else(|| panic!("no {repo}:{tag}"))
    };
    // The flood's unreadable referrers are gone; its valid one, last, is there.
    let flood = &find("sig/hostile", "flood")["referrers"];
    let raw = crate::common::skopeo_raw(&registry.url, "sig/hostile", crate::common::s(&flood["tag"]));
    let index: serde_json::Value = serde_json::from_slice(&raw).expect("index");
    let listed = index["manifests"].as_array().expect("manifests");
    assert_eq!(listed.len(), 10_001);
    assert_eq!(listed[10_000]["digest"], flood["valid"]);
    let first = crate::common::s(&listed[0]["digest"]);
    assert!(manifest_digest(&registry.url, "sig/hostile", first).is_none(), "{first} is still there");
    assert!(manifest_digest(&registry.url, "sig/hostile", crate::common::s(&flood["valid"])).is_some());
    // self-sig's `.sig` is itself.
    let me = find("sig/hostile", "self-sig");
    assert_eq!(me["signature"]["digest"], me["digest"]);

    // skopeo's verdicts, where it can give one.
    let dir = tempfile::tempdir().expect("tempdir");
    let regd = registries_d(dir.path(), &host);
    let a = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-a"));
    let policy = policy_file_with(dir.path(), &format!("{host}/sig"), &a, Some("matchRepository"));
    let probe = skopeo_verify(&policy, &regd, &format!("{host}/sig/app:cosign"));
    if let Err(e) = &probe {
        if sigstore_disabled(e) {
            eprintln!("NOT CHECKED by skopeo: {} has no sigstore; set REGFS_SIGSTORE_SKOPEO: {e}", skopeo_bin());
            return;
        }
    }
    // containers/image never judges an index: a copy from one judges the platform image it
    // copies (each, with --all), by that image's own signatures. The index's are not asked.
    let index = format!("{host}/sig/index:cosign");
    match skopeo_verify(&policy, &regd, &index) {
        Ok(()) => panic!("skopeo accepted {index}, whose platform images are not signed"),
        Err(e) => assert!(e.contains("no signature exists"), "{e}"),
    }
    let cosign: Vec<&serde_json::Value> = images
        .iter()
        .filter(|i| i.get("signature").is_some() && i["repo"] != "sig/hostile" && i["repo"] != "sig/index")
        .chain([find("sig/hostile", "self-sig"), find("sig/app", "unsigned")])
        .collect();
    assert_eq!(cosign.len(), 8);
    for i in cosign {
        let reference = format!("{host}/{}:{}", crate::common::s(&i["repo"]), crate::common::s(&i["tag"]));
        let verdict = skopeo_verify(&policy, &regd, &reference);
        let said = if verdict.is_ok() { "accepted" } else { "refused" };
        assert_eq!(said, i["expect"], "skopeo on {reference}: {verdict:?} ({})", i["why"]);
    }
    // Key B trusts none of them; nor does the default identity rule the bare identity.
    let b = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-b"));
    let by_b = policy_file_with(dir.path(), &format!("{host}/sig"), &b, Some("matchRepository"));
    assert!(!skopeo_verifies(&by_b, &regd, &format!("{host}/sig/app:cosign")));
    let exact = policy_file(dir.path(), &format!("{host}/sig"), &a);
    assert!(skopeo_verifies(&exact, &regd, &format!("{host}/sig/app:cosign")));
    assert!(!skopeo_verifies(&exact, &regd, &format!("{host}/sig/app:cosign-bare")));
}

/// regfs's own verifier (`policy::Gate`, over HTTP, no mount) on the `sig/…` fixtures, under
/// the summary's policy: every verdict is the summary's `expect`, and the index's platforms are
/// accepted through it only. The reasons are printed (`--nocapture`), for the record.
#[test]
fn the_verifier_judges_the_sigstore_fixtures_as_their_summary_expects() {
    use regfs::policy::{Attachments, Gate, Policy, Setup};
    use std::sync::Arc;

    let registry = Registry::start(None);
    let host = host_of(&registry.url).to_string();
    let p = Pusher::new(registry.url.parse().expect("url"), None).expect("pusher");
    let summary = regfs::testkit::fixtures::sigstore::push_sigstore(&p).expect("pushing sig/…");
    let dir = tempfile::tempdir().expect("tempdir");
    let regd = registries_d(dir.path(), &host);
    let a = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-a"));
    let scope = crate::common::s(&summary["policy"]["scope"]);
    let policy_path = policy_file_with(dir.path(), scope, &a, Some("matchRepository"));
    let gate = || {
        let policy = Policy::load(&policy_path).expect("policy");
        let attachments = Attachments::load(&regd).expect("registries.d");
        let client = regfs::registry::http::HttpClient::new(registry.url.parse().expect("url"), Default::default())
            .expect("client");
        let cache = tempfile::tempdir().expect("cache");
        let config = regfs::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Arc::new(regfs::store::Store::new(Arc::new(client), &config).expect("store"));
        let g = Gate::new(Arc::clone(&store), Setup { policy: Some(policy), attachments, host: host.clone() });
        (g, store, cache)
    };
    let (g, store, _cache) = gate();
    let mut wrong = Vec::new();
    for i in summary["images"].as_array().expect("images") {
        let (repo, tag) = (crate::common::s(&i["repo"]), crate::common::s(&i["tag"]));
        let digest: regfs::digest::Digest = crate::common::s(&i["digest"]).parse().expect("digest");
        // As the layout does: the manifest is read, then the gate asked before its content shows.
        store.manifest(repo, &digest).expect("the manifest");
        let verdict = g.allows(repo, &digest);
        let said = match &verdict {
            Ok(()) => "accepted",
            Err(regfs::error::Error::Refused(_)) => "refused",
            Err(e) => panic!("{repo}:{tag}: not a verdict: {e}"),
        };
        let report = g.report(repo, &digest).expect("report");
        eprintln!("{repo}:{tag} (expect {}): {}", i["expect"], report.summary().trim_end());
        if said != i["expect"] {
            wrong.push(format!("{repo}:{tag}: {said}, expected {} ({}): {verdict:?}", i["expect"], i["why"]));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The index's platforms: refused alone, accepted once the index is.
    let index =
        summary["images"].as_array().expect("images").iter().find(|i| i["repo"] == "sig/index").expect("sig/index");
    let (fresh, _, _cache2) = gate();
    for c in index["children"].as_array().expect("children") {
        let d: regfs::digest::Digest = crate::common::s(&c["digest"]).parse().expect("digest");
        assert!(fresh.allows("sig/index", &d).is_err(), "{} accepted alone", c["platform"]);
        assert!(g.allows("sig/index", &d).is_ok(), "{} refused through its index", c["platform"]);
    }
}
