//! The signature policy in the core, over an in-memory registry that counts calls: which
//! manifests' content is served (cosign `.sig` signatures and Sigstore bundles, by which keys
//! and identities), what `signatures/` says, what it costs (nothing without a policy; the
//! signature manifest and its payloads with one), and what hostile signatures cannot do.

use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use regfs::digest::{Algorithm, Digest};
use regfs::media;
use regfs::policy::{Attachments, Policy, Setup};
use regfs::testkit::core::{self as kit};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;
use serde_json::json;
use sha2::Digest as _;

pub(crate) const HOST: &str = "reg.test";
pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) fn key(seed: &str) -> SigningKey {
    SigningKey::from_bytes(&sha2::Sha256::digest(seed.as_bytes())).expect("a scalar")
}

pub(crate) fn public_pem(k: &SigningKey) -> String {
    k.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).expect("pem")
}

pub(crate) fn der_sig(k: &SigningKey, message: &[u8]) -> Vec<u8> {
    let s: p256::ecdsa::Signature = k.sign(message);
    s.to_der().as_bytes().to_vec()
}

/// A policy refusing everything but `HOST/r`, which needs a signature by `trusted` under
/// `identity` (a signedIdentity object).
fn policy(trusted: &SigningKey, identity: serde_json::Value) -> Policy {
    let doc = json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            format!("{HOST}/r"): [{"type": "sigstoreSigned", "keyData": B64.encode(public_pem(trusted)), "signedIdentity": identity}],
            format!("{HOST}/open"): [{"type": "insecureAcceptAnything"}],
        }}
    });
    Policy::parse(doc.to_string().as_bytes(), std::path::Path::new("/test/policy.json")).expect("policy")
}

fn setup(policy: Policy, attachments: Attachments) -> Setup {
    Setup { policy: Some(policy), attachments, host: HOST.into() }
}

fn core(fake: Faulty<Fake>, setup: Option<Setup>, ttl: Duration) -> kit::Core {
    let b = kit::Core::builder(fake).tag_ttl(ttl);
    match setup {
        Some(s) => b.policy(s).build(),
        None => b.build(),
    }
}

fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    json!({"critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest.to_string()},
        "type": "cosign container image signature"}, "optional": null})
    .to_string()
    .into_bytes()
}

/// Push the cosign `.sig` manifest of `subject` in `repo` holding `sigs` (payload, DER signature);
/// a later call replaces the tag (as `cosign sign` re-pushing, or a signature deleted).
pub(crate) fn put_sig(fake: &Fake, repo: &str, subject: &Digest, sigs: &[(Vec<u8>, Vec<u8>)]) -> Digest {
    let cfg = fake.add_blob(b"{}");
    let layers: Vec<serde_json::Value> = sigs
        .iter()
        .map(|(p, s)| {
            let d = fake.add_blob(p);
            json!({"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": d.to_string(), "size": p.len(),
                "annotations": {"dev.cosignproject.cosign/signature": B64.encode(s)}})
        })
        .collect();
    let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": layers});
    let tag = format!("sha256-{}.sig", subject.hex());
    fake.put_manifest(repo, Some(&tag), media::OCI_MANIFEST, m.to_string().as_bytes(), Algorithm::Sha256)
}

/// A cosign signature of `subject` claiming `reference`, by `k`.
pub(crate) fn cosign(k: &SigningKey, reference: &str, subject: &Digest) -> (Vec<u8>, Vec<u8>) {
    let p = payload(reference, subject);
    let s = der_sig(k, &p);
    (p, s)
}

fn pae(t: &str, body: &[u8]) -> Vec<u8> {
    [format!("DSSEv1 {} {t} {} ", t.len(), body.len()).into_bytes(), body.to_vec()].concat()
}

/// A Sigstore bundle v0.3 signing `digest` under `name` by `k`, with `predicate`.
fn bundle(k: &SigningKey, name: &str, digest: &Digest, predicate: &str) -> Vec<u8> {
    let st = json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": name, "digest": {"sha256": digest.hex()}}],
        "predicateType": predicate, "predicate": {}})
    .to_string();
    let t = "application/vnd.in-toto+json";
    let sig = der_sig(k, &pae(t, st.as_bytes()));
    json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
        "dsseEnvelope": {"payload": B64.encode(&st), "payloadType": t, "signatures": [{"sig": B64.encode(sig), "keyid": ""}]}})
    .to_string()
    .into_bytes()
}

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

/// Attach `bundle` to `subject` of `repo` as a referrer (the API lists it).
fn put_bundle(fake: &Fake, repo: &str, subject: &Digest, bundle: &[u8]) -> Digest {
    let empty = fake.add_blob(b"{}");
    let layer = fake.add_blob(bundle);
    let size = fake.stored_manifest(repo, &subject.to_string()).expect("subject").body.len();
    let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": layer.to_string(), "size": bundle.len()}],
        "subject": {"mediaType": media::OCI_MANIFEST, "digest": subject.to_string(), "size": size}});
    fake.put_manifest(repo, None, media::OCI_MANIFEST, m.to_string().as_bytes(), Algorithm::Sha256)
}

fn errno(c: &kit::Core, path: &str) -> i32 {
    c.fs.walk(path).map(|_| 0).unwrap_or_else(|e| e.errno())
}

fn summary(c: &kit::Core, m: &Digest) -> String {
    String::from_utf8(c.fs.cat(&format!("r/manifests/{m}/signatures/summary")).expect("summary")).expect("utf-8")
}

fn repository() -> serde_json::Value {
    json!({"type": "matchRepository"})
}

#[test]
fn without_a_policy_nothing_is_asked_and_signatures_are_listed_unchecked() {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    let (m, _) = fake.image("r", "v1", b"layer");
    put_sig(&fake, "r", &m, &[cosign(&a, &format!("{HOST}/r:v1"), &m)]);
    let c = core(fake, None, Duration::from_secs(60));
    c.fs.cat(&format!("r/manifests/{m}/layers/0.tar")).expect("content");
    c.fs.cat(&format!("r/manifests/{m}/config.json")).expect("config");
    let asked = c.fake.calls();
    assert!(
        !asked.iter().any(|x| x.contains(".sig") || x.starts_with("referrers")),
        "no signature asked for: {asked:?}"
    );
    let mut names = c.fs.ls(&format!("r/manifests/{m}/signatures")).expect("ls");
    names.sort();
    assert_eq!(names, ["cosign-0.json", "summary", "verdict.json"]);
    assert!(summary(&c, &m).starts_with("no signature policy on this mount"), "{}", summary(&c, &m));
    let one: serde_json::Value =
        serde_json::from_slice(&c.fs.cat(&format!("r/manifests/{m}/signatures/cosign-0.json")).expect("json"))
            .expect("json");
    assert_eq!(one["status"], "not checked");
    assert!(c.fs.cat(&format!("r/blobs/{m}")).is_err(), "a manifest is not a blob");
}

#[test]
fn a_cosign_signature_by_the_trusted_key_opens_the_content_for_its_manifest_only() {
    let fake = Faulty::new(Fake::default());
    let (a, b) = (key("a"), key("b"));
    let (signed, layer) = fake.image("r", "v1", b"signed layer");
    put_sig(&fake, "r", &signed, &[cosign(&a, &format!("{HOST}/r"), &signed)]);
    let (unsigned, _) = fake.image("r", "v2", b"unsigned layer");
    let (by_b, _) = fake.image("r", "v3", b"signed by b");
    put_sig(&fake, "r", &by_b, &[cosign(&b, &format!("{HOST}/r"), &by_b)]);
    let (for_other, _) = fake.image("r", "v4", b"signature for another manifest");
    put_sig(&fake, "r", &for_other, &[cosign(&a, &format!("{HOST}/r"), &signed)]);
    let (elsewhere, _) = fake.image("r", "v5", b"signed for another repository");
    put_sig(&fake, "r", &elsewhere, &[cosign(&a, &format!("{HOST}/other"), &elsewhere)]);
    let (opened, _) = fake.image("open", "v1", b"anything goes here");
    let c = core(fake, Some(setup(policy(&a, repository()), Attachments::everywhere())), Duration::from_secs(60));

    let before = c.fake.calls().len();
    assert_eq!(c.fs.cat(&format!("r/manifests/{signed}/layers/0.tar")).expect("signed content"), b"signed layer");
    let extra: Vec<String> = c.fake.calls()[before..]
        .iter()
        .filter(|x| !x.contains(&layer.to_string()) && !x.contains(&format!("manifest r {signed}")))
        .cloned()
        .collect();
    // The signature manifest by its tag (one GET) and its one payload: nothing else.
    assert_eq!(extra.len(), 2, "{extra:?}");
    assert!(extra[0].starts_with("Get manifest r sha256-") && extra[0].ends_with(".sig"), "{extra:?}");
    assert!(extra[1].starts_with("GET blob r "), "{extra:?}");
    assert!(summary(&c, &signed).starts_with("accepted: "), "{}", summary(&c, &signed));

    for (m, why) in [
        (&unsigned, "no signature was found"),
        (&by_b, "not verified by any key"),
        (&for_other, "not this manifest"),
        (&elsewhere, "does not match"),
    ] {
        for path in ["config.json", "layers", "layers/0.tar", "rootfs"] {
            assert_eq!(errno(&c, &format!("r/manifests/{m}/{path}")), libc::EACCES, "{m} {path}");
        }
        // What was refused stays readable, and says why.
        c.fs.cat(&format!("r/manifests/{m}/manifest.json")).expect("manifest.json is readable");
        let s = summary(&c, m);
        assert!(s.starts_with("refused: ") && s.contains(why), "{m}: {s}");
    }
    assert_eq!(c.fs.cat(&format!("open/manifests/{opened}/layers/0.tar")).expect("open scope"), b"anything goes here");
    assert_eq!(errno(&c, &format!("r/blobs/{layer}")), libc::EACCES, "blobs/ is closed under a policy");
    // Tags are listed all the same.
    assert!(c.fs.ls("r/tags").expect("tags").contains(&"v2".to_string()));
}

#[test]
fn identities_follow_signed_identity() {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    let (bare, _) = fake.image("r", "v1", b"bare name");
    put_sig(&fake, "r", &bare, &[cosign(&a, &format!("{HOST}/r"), &bare)]);
    let (tagged, _) = fake.image("r", "v2", b"tagged name");
    put_sig(&fake, "r", &tagged, &[cosign(&a, &format!("{HOST}/r:v2"), &tagged)]);
    let fake = std::sync::Arc::new(fake);
    // The default, matchRepoDigestOrExact: a bare repository name (as cosign signs) is not enough.
    let c = kit::Builder::over(fake.clone())
        .policy(setup(policy(&a, json!({"type": "matchRepoDigestOrExact"})), Attachments::everywhere()))
        .build();
    assert_eq!(errno(&c, &format!("r/manifests/{bare}/config.json")), libc::EACCES);
    assert_eq!(errno(&c, &format!("r/manifests/{tagged}/config.json")), 0);
    let remap =
        json!({"type": "remapIdentity", "prefix": format!("{HOST}/r"), "signedPrefix": "registry.example.com/team/r"});
    let c = kit::Builder::over(fake).policy(setup(policy(&a, remap), Attachments::everywhere())).build();
    assert_eq!(
        errno(&c, &format!("r/manifests/{tagged}/config.json")),
        libc::EACCES,
        "signed for reg.test, not the remapped name"
    );
}

#[test]
fn sigstore_bundles_attached_as_referrers_are_verified_and_tampered_ones_refused() {
    let fake = Faulty::new(Fake::default());
    let (a, b) = (key("a"), key("b"));
    let name = format!("{HOST}/r");
    let image = |tag: &str| fake.image("r", tag, tag.as_bytes()).0;
    let good = image("good");
    put_bundle(&fake, "r", &good, &bundle(&a, &name, &good, SIGN));
    let other = image("other");
    let wrong_digest = image("wrong-digest");
    put_bundle(&fake, "r", &wrong_digest, &bundle(&a, &name, &other, SIGN));
    let wrong_key = image("wrong-key");
    put_bundle(&fake, "r", &wrong_key, &bundle(&b, &name, &wrong_key, SIGN));
    let truncated = image("truncated");
    let whole = bundle(&a, &name, &truncated, SIGN);
    put_bundle(&fake, "r", &truncated, &whole[..whole.len() / 2]);
    let attestation = image("attestation");
    put_bundle(&fake, "r", &attestation, &bundle(&a, &name, &attestation, "https://slsa.dev/provenance/v1"));
    let keyless = image("keyless");
    let mut k: serde_json::Value = serde_json::from_slice(&bundle(&a, &name, &keyless, SIGN)).expect("json");
    k["verificationMaterial"] =
        json!({"certificate": {"rawBytes": B64.encode(b"a Fulcio certificate")}, "tlogEntries": []});
    put_bundle(&fake, "r", &keyless, k.to_string().as_bytes());
    let c = core(fake, Some(setup(policy(&a, repository()), Attachments::everywhere())), Duration::from_secs(60));
    assert_eq!(errno(&c, &format!("r/manifests/{good}/config.json")), 0, "{}", summary(&c, &good));
    for (m, why) in [
        (wrong_digest, "not this manifest"),
        (wrong_key, "not signed by any key"),
        (truncated, "not JSON"),
        (attestation, "an attestation"),
        (keyless.clone(), "keyless"),
    ] {
        assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), libc::EACCES, "{why}");
        let s = summary(&c, &m);
        assert!(s.contains(why), "{why}: {s}");
    }
    let listed = c.fs.ls(&format!("r/manifests/{keyless}/signatures")).expect("ls");
    let file = listed.iter().find(|n| n.starts_with("bundle-")).expect("the bundle is listed");
    let one: serde_json::Value =
        serde_json::from_slice(&c.fs.cat(&format!("r/manifests/{keyless}/signatures/{file}")).expect("cat"))
            .expect("json");
    assert_eq!(one["status"], "unverifiable");
}

#[test]
fn an_index_is_not_judged_by_its_own_signatures_its_platforms_are_each_by_theirs() {
    for list in [media::OCI_INDEX, media::DOCKER_LIST] {
        index_of(list);
    }
}

/// An index (or manifest list) of media type `list`, itself signed, of two platforms of which one is.
fn index_of(list: &str) {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    let (amd, _) = fake.image("r", "amd", b"amd64 layer");
    let (arm, _) = fake.image("r", "arm", b"arm64 layer");
    put_sig(&fake, "r", &arm, &[cosign(&a, &format!("{HOST}/r"), &arm)]);
    let entry = |d: &Digest, arch: &str| {
        let size = fake.stored_manifest("r", &d.to_string()).expect("child").body.len();
        json!({"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": size, "platform": {"os": "linux", "architecture": arch}})
    };
    let index =
        json!({"schemaVersion": 2, "mediaType": list, "manifests": [entry(&amd, "amd64"), entry(&arm, "arm64")]});
    let idx = fake.put_manifest("r", Some("multi"), list, index.to_string().as_bytes(), Algorithm::Sha256);
    // The index is signed, as `cosign sign` without --recursive signs it.
    put_sig(&fake, "r", &idx, &[cosign(&a, &format!("{HOST}/r"), &idx)]);
    let c = core(fake, Some(setup(policy(&a, repository()), Attachments::everywhere())), Duration::from_secs(60));
    // As containers/image: the index's links are shown, each platform passes on its own.
    assert_eq!(errno(&c, &format!("r/manifests/{idx}/linux-amd64")), 0);
    assert_eq!(
        errno(&c, &format!("r/manifests/{amd}/config.json")),
        libc::EACCES,
        "the index's signature is not the platform's"
    );
    assert_eq!(c.fs.cat(&format!("r/manifests/{arm}/layers/0.tar")).expect("signed on its own"), b"arm64 layer");
    let s = summary(&c, &idx);
    assert!(
        s.starts_with("not judged: ")
            && s.contains("not judged by its own signatures")
            && s.contains("its own signatures would say: accepted"),
        "{s}"
    );
}

#[test]
fn attachments_are_read_only_where_registries_d_says() {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    let (m, _) = fake.image("r", "v1", b"layer");
    put_sig(&fake, "r", &m, &[cosign(&a, &format!("{HOST}/r"), &m)]);
    let c = core(fake, Some(setup(policy(&a, repository()), Attachments::default())), Duration::from_secs(60));
    assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), libc::EACCES);
    assert!(summary(&c, &m).contains("use-sigstore-attachments"), "{}", summary(&c, &m));
    assert!(!c.fake.calls().iter().any(|x| x.contains(".sig")), "nothing read where attachments are off");
}

#[test]
fn a_signature_pushed_later_counts_within_tag_ttl() {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    let (m, _) = fake.image("r", "v1", b"layer");
    let fake = std::sync::Arc::new(fake);
    let ttl = Duration::from_millis(400);
    let c = kit::Builder::over(fake.clone())
        .tag_ttl(ttl)
        .policy(setup(policy(&a, repository()), Attachments::everywhere()))
        .build();
    assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), libc::EACCES);
    put_sig(&fake, "r", &m, &[cosign(&a, &format!("{HOST}/r"), &m)]);
    assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), libc::EACCES, "kept within tag_ttl");
    std::thread::sleep(ttl + Duration::from_millis(100));
    assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), 0, "decided again after tag_ttl");
}

#[test]
fn hostile_signatures_are_bounded() {
    let fake = Faulty::new(Fake::default());
    let a = key("a");
    // 10,000 layers of bad signatures over one payload: more values than a manifest may hold.
    let (many, _) = fake.image("r", "many", b"many");
    let p = payload(&format!("{HOST}/r"), &many);
    let sigs: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000).map(|_| (p.clone(), b"0".to_vec())).collect();
    put_sig(&fake, "r", &many, &sigs);
    // 2,000 of them: a manifest, of which 64 are read.
    let (some, _) = fake.image("r", "some", b"some");
    let p = payload(&format!("{HOST}/r"), &some);
    let sigs: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000).map(|_| (p.clone(), b"0".to_vec())).collect();
    put_sig(&fake, "r", &some, &sigs);
    // A payload claiming 5 MiB, over what containers/image reads too.
    let (huge, _) = fake.image("r", "huge", b"huge");
    let big = vec![b' '; 5 << 20];
    put_sig(&fake, "r", &huge, &[(big, b"sig".to_vec())]);
    // A `.sig` tag naming the image itself.
    let (own, _) = fake.image("r", "self", b"self");
    let body = fake.stored_manifest("r", &own.to_string()).expect("self").body;
    fake.put_manifest("r", Some(&format!("sha256-{}.sig", own.hex())), media::OCI_MANIFEST, &body, Algorithm::Sha256);
    let c = core(fake, Some(setup(policy(&a, repository()), Attachments::everywhere())), Duration::from_secs(60));
    for m in [&many, &some, &huge, &own] {
        assert_eq!(errno(&c, &format!("r/manifests/{m}/config.json")), libc::EACCES, "{m}");
    }
    let gets = c.fake.calls().iter().filter(|x| x.starts_with("GET blob")).count();
    assert!(gets <= 3, "one payload blob each, read once; none of 5 MiB: {gets} GETs");
    assert!(summary(&c, &many).contains("more than 100000 JSON values"), "{}", summary(&c, &many));
    let s = summary(&c, &some);
    assert!(s.contains("only the first 64") && s.contains("0 of 64 signature(s)"), "{s}");
    assert!(summary(&c, &huge).contains("over the"), "{}", summary(&c, &huge));
}
