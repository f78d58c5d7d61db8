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

use crate::common::{Mount, Registry};

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
    assert_eq!(images.len(), 22, "{summary:#}");
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
    let each = format!("{host}/sig/index:each");
    if let Err(e) = skopeo_verify(&policy, &regd, &each) {
        panic!("skopeo refused {each}, whose platform images are each signed: {e}");
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

/// The registry of the `sig/…` fixtures, pushed once for the tests below, and the files of
/// the summary's policy (key A for `<host>/sig`, matchRepository) and registries.d.
struct Signed {
    registry: Registry,
    summary: serde_json::Value,
    host: String,
    policy: PathBuf,
    regd: PathBuf,
    _dir: tempfile::TempDir,
}

fn signed_registry() -> Signed {
    let registry = Registry::start(None);
    let host = host_of(&registry.url).to_string();
    let p = Pusher::new(registry.url.parse().expect("url"), None).expect("pusher");
    let summary = regfs::testkit::fixtures::sigstore::push_sigstore(&p).expect("pushing sig/…");
    let dir = tempfile::tempdir().expect("tempdir");
    let regd = registries_d(dir.path(), &host);
    let a = sigkeys::public_pem(&sigkeys::signing_key("regfs-sig-a"));
    let scope = crate::common::s(&summary["policy"]["scope"]).to_string();
    let policy = policy_file_with(dir.path(), &scope, &a, Some("matchRepository"));
    Signed { registry, summary, host, policy, regd, _dir: dir }
}

fn errno_of(path: &Path) -> i32 {
    match std::fs::metadata(path) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn verdict_of(m: &Mount, repo: &str, digest: &str) -> &'static str {
    match errno_of(&m.path(&format!("{repo}/manifests/{digest}/config.json"))) {
        0 => "accepted",
        libc::EACCES => "refused",
        e => panic!("{repo}@{digest}: config.json: errno {e}, not a verdict"),
    }
}

/// A real mount under the summary's policy on the `sig/…` fixtures (cosign `.sig` on OCI and
/// Docker images, a bare identity, Sigstore bundles, every lying bundle and signature, the
/// hostile ones, indexes): each image's content is served or EACCES as its `expect` says, its
/// `manifest.json` and `signatures/summary` always read, and the mount answers throughout.
/// The summaries are printed (`--nocapture`), for the record.
#[test]
fn a_mount_under_the_policy_serves_exactly_what_each_fixture_expects() {
    let sg = signed_registry();
    let args = ["--policy", sg.policy.to_str().expect("utf-8"), "--registries-d", sg.regd.to_str().expect("utf-8")];
    let m = Mount::start(&sg.registry.url, &args);
    let mut wrong = Vec::new();
    let mut judged = 0;
    for i in sg.summary["images"].as_array().expect("images") {
        let (repo, tag, digest) =
            (crate::common::s(&i["repo"]), crate::common::s(&i["tag"]), crate::common::s(&i["digest"]));
        let dir = m.path(&format!("{repo}/manifests/{digest}"));
        std::fs::read(dir.join("manifest.json")).unwrap_or_else(|e| panic!("{repo}:{tag}: manifest.json: {e}"));
        let summary = std::fs::read_to_string(dir.join("signatures/summary")).expect("signatures/summary");
        eprintln!("{repo}:{tag} (expect {}): {}", i["expect"], summary.trim_end());
        if let Some(children) = i["children"].as_array() {
            // An index: its links shown, each platform judged on its own.
            for c in children {
                let d = crate::common::s(&c["digest"]);
                let arch = crate::common::s(&c["platform"]).replace('/', "-");
                assert_eq!(errno_of(&dir.join(&arch)), 0, "{repo}:{tag}: the link {arch}");
                let said = verdict_of(&m, repo, d);
                judged += 1;
                if said != c["expect"] {
                    wrong.push(format!("{repo}:{tag} {arch}: {said}, expected {}", c["expect"]));
                }
            }
            continue;
        }
        let said = verdict_of(&m, repo, digest);
        judged += 1;
        if said != i["expect"] {
            wrong.push(format!(
                "{repo}:{tag}: {said}, expected {} ({}): {}",
                i["expect"],
                i["why"],
                summary.trim_end()
            ));
        }
        if said == "refused" {
            for p in ["layers", "rootfs"] {
                assert_eq!(errno_of(&dir.join(p)), libc::EACCES, "{repo}:{tag}: {p}");
            }
        } else {
            let layers = std::fs::read_dir(dir.join("layers")).expect("layers").count();
            assert!(layers > 0, "{repo}:{tag}: layers listed");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(judged >= 20, "{judged} verdicts");
    // blobs/ is closed under a policy; the mount still answers.
    let img = sg.summary["images"].as_array().expect("images").iter().find(|i| i["tag"] == "cosign").expect("cosign");
    assert_eq!(errno_of(&m.path(&format!("sig/app/blobs/{}", crate::common::s(&img["digest"])))), libc::EACCES);
    assert!(m.log().contains("refused by the signature policy"), "refusals are logged");
    assert!(crate::common::ls(&m.path("sig/app/tags")).contains(&"unsigned".to_string()), "tags are listed");
}

/// What a policy costs, counted at the registry: a signed image's first read costs its `.sig`
/// manifest (one GET by tag) and its payload (one blob) more than the same read without a
/// policy; an index costs nothing more; and without a policy, no request names a signature.
#[test]
fn a_signed_image_costs_its_signature_manifest_and_payload_and_no_policy_costs_nothing() {
    let sg = signed_registry();
    let find = |repo: &str, tag: &str| {
        let i = sg.summary["images"].as_array().expect("images").iter().find(|i| i["repo"] == repo && i["tag"] == tag);
        crate::common::s(&i.unwrap_or_else(|| panic!("{repo}:{tag}"))["digest"]).to_string()
    };
    let image = find("sig/app", "cosign");
    let read = |m: &Mount| {
        let before = sg.registry.requests().len();
        let path = m.path(&format!("sig/app/manifests/{image}/layers/0.tar"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sg.registry.requests()[before..].to_vec()
    };
    let plain = Mount::start(&sg.registry.url, &[]);
    let without = read(&plain);
    assert!(
        !without.iter().any(|r| r.contains(".sig") || r.contains("/referrers/")),
        "no policy, no signature: {without:?}"
    );
    let listed = crate::common::ls(&plain.path(&format!("sig/app/manifests/{image}/signatures")));
    assert!(listed.contains(&"cosign-0.json".to_string()), "listed unchecked without a policy: {listed:?}");
    drop(plain);
    let args = ["--policy", sg.policy.to_str().expect("utf-8"), "--registries-d", sg.regd.to_str().expect("utf-8")];
    let gated = Mount::start(&sg.registry.url, &args);
    let with = read(&gated);
    let extra: Vec<&String> = with.iter().filter(|r| !without.contains(r)).collect();
    eprintln!("without a policy: {} requests; with: {} ({extra:?} more)", without.len(), with.len());
    assert_eq!(with.len(), without.len() + 2, "with: {with:?}\nwithout: {without:?}");
    assert!(
        extra.iter().any(|r| r.starts_with("GET /v2/sig/app/manifests/sha256-") && r.contains(".sig")),
        "{extra:?}"
    );
    assert!(extra.iter().any(|r| r.starts_with("GET /v2/sig/app/blobs/sha256:")), "{extra:?}");
    // An index is not judged itself: its links cost nothing more.
    let index = find("sig/index", "cosign");
    let before = sg.registry.requests().len();
    assert_eq!(errno_of(&gated.path(&format!("sig/index/manifests/{index}/linux-amd64"))), 0);
    let asked: Vec<String> = sg.registry.requests()[before..].to_vec();
    assert!(!asked.iter().any(|r| r.contains(".sig") || r.contains("/referrers/")), "{asked:?}");
}

/// A policy file regfs cannot use stops it before mounting, naming the file.
#[test]
fn a_bad_policy_or_key_is_an_error_before_mounting() {
    let registry = Registry::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, r#"{"default":[{"type":"reject"}],"unknown":1}"#).expect("write");
    let bad_key = dir.path().join("badkey.json");
    std::fs::write(&bad_key, r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/cosign.pub"}]}"#)
        .expect("write");
    let mnt = tempfile::tempdir().expect("mountpoint");
    for (file, says) in [(&bad_json, "unknown field"), (&bad_key, "/nonexistent/cosign.pub")] {
        let out = Command::new(crate::common::regfs_bin())
            .args(["--policy"])
            .arg(file)
            .args(["--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg(&registry.url)
            .arg(mnt.path())
            .output()
            .expect("regfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: regfs mounted", file.display());
        assert!(err.contains(&file.display().to_string()) && err.contains(says), "{}: {err}", file.display());
        assert!(!crate::common::is_mounted(mnt.path()), "nothing mounted");
    }
}

/// The oracle: for every policy here and every cosign-signed image (signed by skopeo itself,
/// or by the testkit as cosign writes), regfs serves an image's content exactly when skopeo
/// (`skopeo copy --policy`, by digest, as regfs names a manifest directory) accepts it. The
/// table is printed (`--nocapture`). Needs a skopeo with sigstore (`REGFS_SIGSTORE_SKOPEO`);
/// Debian's has none, and then the test says so and checks nothing (CI's case).
#[test]
fn regfs_accepts_exactly_what_skopeo_accepts() {
    let sg = signed_registry();
    let host = sg.host.clone();
    let p = Pusher::new(sg.registry.url.parse().expect("url"), None).expect("pusher");
    let (_, tar) = layers::layer("signatures-oracle", 3_000, Compression::Gzip).expect("layer");
    push_image(&p, "plain/app", "v1", &[tar]).expect("push");
    for (dst, seed) in [("sig/skopeo-a/app:v1", "regfs-sig-a"), ("sig/skopeo-b/app:v1", "regfs-sig-b")] {
        if let Err(e) = skopeo_sign(&sg.registry.url, "plain/app:v1", dst, seed) {
            if sigstore_disabled(&e) {
                eprintln!(
                    "NOT CHECKED: {} has no sigstore (Debian's build); set REGFS_SIGSTORE_SKOPEO: {e}",
                    skopeo_bin()
                );
                return;
            }
            panic!("skopeo sign {dst}: {e}");
        }
    }
    // A mirror's copy, signatures and all (for remapIdentity).
    let out = Command::new(skopeo_bin())
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--registries.d"])
        .arg(&sg.regd)
        .arg(format!("docker://{host}/sig/skopeo-a/app:v1"))
        .arg(format!("docker://{host}/sig/mirror/app:v1"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo copy to the mirror: {}", String::from_utf8_lossy(&out.stderr));
    assert!(manifest_digest(&sg.registry.url, "sig/mirror/app", "v1").is_some());

    // The images: (repo, digest), cosign-signed or not; bundles (skopeo 1.9 reads none) and the
    // hostile ones (skopeo has no bound on them) are the other tests'.
    let mut images: Vec<(String, String)> = Vec::new();
    for repo in ["sig/skopeo-a/app", "sig/skopeo-b/app", "sig/mirror/app"] {
        let d = manifest_digest(&sg.registry.url, repo, "v1").expect("digest");
        images.push((repo.to_string(), d));
    }
    for i in sg.summary["images"].as_array().expect("images") {
        let repo = crate::common::s(&i["repo"]);
        if repo == "sig/hostile" || i.get("referrers").is_some() {
            continue;
        }
        match i["children"].as_array() {
            Some(children) => {
                images.extend(children.iter().map(|c| (repo.to_string(), crate::common::s(&c["digest"]).to_string())))
            }
            None => images.push((repo.to_string(), crate::common::s(&i["digest"]).to_string())),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (sigkeys::signing_key("regfs-sig-a"), sigkeys::signing_key("regfs-sig-b"));
    let (a_pem, b_pem) = (sigkeys::public_pem(&a), sigkeys::public_pem(&b));
    let a_path = dir.path().join("a.pub");
    let b_path = dir.path().join("b.pub");
    std::fs::write(&a_path, &a_pem).expect("a.pub");
    std::fs::write(&b_path, &b_pem).expect("b.pub");
    let signed = |key: &Path, identity: serde_json::Value| {
        let mut r = serde_json::json!({"type": "sigstoreSigned", "keyPath": key.to_string_lossy()});
        if !identity.is_null() {
            r["signedIdentity"] = identity;
        }
        r
    };
    let policies: Vec<(&str, serde_json::Value)> = vec![
        ("key A, default identity", signed(&a_path, serde_json::Value::Null)),
        ("key A, matchRepository", signed(&a_path, serde_json::json!({"type": "matchRepository"}))),
        ("key A, matchExact", signed(&a_path, serde_json::json!({"type": "matchExact"}))),
        (
            "key A, exactRepository sig/skopeo-a/app",
            signed(
                &a_path,
                serde_json::json!({"type": "exactRepository", "dockerRepository": format!("{host}/sig/skopeo-a/app")}),
            ),
        ),
        (
            "key A, remapIdentity sig/mirror -> sig/skopeo-a",
            signed(
                &a_path,
                serde_json::json!({"type": "remapIdentity", "prefix": format!("{host}/sig/mirror"), "signedPrefix": format!("{host}/sig/skopeo-a")}),
            ),
        ),
        ("key B, matchRepository", signed(&b_path, serde_json::json!({"type": "matchRepository"}))),
        ("reject", serde_json::json!({"type": "reject"})),
        ("insecureAcceptAnything", serde_json::json!({"type": "insecureAcceptAnything"})),
    ];
    let mut table =
        vec!["| policy (scope <host>/sig) | image | skopeo | regfs |".to_string(), "|---|---|---|---|".into()];
    let (mut agree, mut differ) = (0, Vec::new());
    for (n, (name, requirement)) in policies.iter().enumerate() {
        let policy = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {format!("{host}/sig"): [requirement]}}});
        let path = dir.path().join(format!("policy-{n}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&policy).expect("json")).expect("policy");
        let args = ["--policy", path.to_str().expect("utf-8"), "--registries-d", sg.regd.to_str().expect("utf-8")];
        let m = Mount::start(&sg.registry.url, &args);
        for (repo, digest) in &images {
            let ours = verdict_of(&m, repo, digest);
            let theirs = match skopeo_verify(&path, &sg.regd, &format!("{host}/{repo}@{digest}")) {
                Ok(()) => "accepted",
                Err(e) if sigstore_disabled(&e) => panic!("skopeo lost sigstore: {e}"),
                Err(_) => "refused",
            };
            table.push(format!("| {name} | {repo}@{} | {theirs} | {ours} |", &digest[7..19]));
            if ours == theirs {
                agree += 1;
            } else {
                differ.push(format!("{name}: {repo}@{digest}: skopeo {theirs}, regfs {ours}"));
            }
        }
    }
    eprintln!("{}", table.join("\n"));
    eprintln!("{agree} verdicts agree, {} differ", differ.len());
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert!(agree >= 8 * 12, "{agree} comparisons");
}

/// A tag scope of a tag naming an index: skopeo judges the platform it pulls under that tag's
/// scope, and regfs judges the index's platforms under it too (whichever path reached them).
/// No signature is involved, so Debian's skopeo is oracle enough: this one runs everywhere.
#[test]
fn a_tag_scope_of_an_index_reaches_its_platforms_as_skopeo_judges_them() {
    let sg = signed_registry();
    let host = sg.host.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    // A tag scope of a tag naming an index: skopeo judges the platform it pulls under the tag's
    // scope; regfs judges the index's platforms under it too (whichever path reached them).
    let each = sg.summary["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["repo"] == "sig/index" && i["tag"] == "each");
    let each = each.expect("sig/index:each");
    let amd64 =
        each["children"].as_array().expect("children").iter().find(|c| c["platform"] == "linux/amd64").expect("amd64");
    let amd64 = crate::common::s(&amd64["digest"]);
    let policy = serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {
        format!("{host}/sig"): [{"type": "insecureAcceptAnything"}],
        format!("{host}/sig/index:each"): [{"type": "reject"}],
    }}});
    let path = dir.path().join("policy-tag-scope.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&policy).expect("json")).expect("policy");
    let by_tag = skopeo_verify(&path, &sg.regd, &format!("{host}/sig/index:each")).is_ok();
    let args = ["--policy", path.to_str().expect("utf-8"), "--registries-d", sg.regd.to_str().expect("utf-8")];
    let m = Mount::start(&sg.registry.url, &args);
    let link = m.path("sig/index/tags/each/linux-amd64");
    assert_eq!(errno_of(&link), 0, "the index's link is shown");
    let ours = verdict_of(&m, "sig/index", amd64);
    let theirs = if by_tag { "accepted" } else { "refused" };
    eprintln!(
        "tag scope sig/index:each rejects, pulled by that tag: sig/index@{}: skopeo {theirs}, regfs {ours}",
        &amd64[7..19]
    );
    // And by digest, skopeo judges the platform alone (the repository's scope): regfs, which
    // cannot know the path, is the stricter of the two there.
    let alone = skopeo_verify(&path, &sg.regd, &format!("{host}/sig/index@{amd64}")).is_ok();
    assert!(alone, "skopeo by digest: the repository's scope");
    assert_eq!((theirs, ours), ("refused", "refused"), "the tag scope reaches the index's platforms");
}
