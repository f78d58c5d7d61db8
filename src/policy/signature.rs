//! The two kinds of signature regfs verifies, and how each is checked against a requirement's
//! keys and identity rule. Both are found by `policy::gather`; here only bytes are judged.
//!
//! - **cosign simple signing** (the `sha256-<hex>.sig` tag): the payload blob is signed as it
//!   is (ECDSA P-256 over SHA-256, DER, base64 in the layer's `dev.cosignproject.cosign/signature`
//!   annotation). The payload is read as containers/image reads it, paranoidly: exactly the
//!   fields `critical` (`identity.docker-reference`, `image.docker-manifest-digest`, `type` =
//!   `cosign container image signature`) and `optional`, no duplicate keys. The digest must be
//!   the manifest's; the reference must satisfy `signedIdentity`.
//! - **Sigstore bundle** (v0.1 to v0.3, attached as an OCI 1.1 referrer, as cosign v3 writes):
//!   a DSSE envelope whose signature is over PAE(payloadType, payload), the payload an in-toto
//!   statement (v1 or v0.1) with predicate type `https://sigstore.dev/cosign/sign/v1`, one of
//!   whose subjects has the manifest's digest; that subject's `name` is the identity. A bundle
//!   whose verification material is a certificate (keyless: Fulcio and Rekor) is
//!   *unverifiable*: regfs checks keyed signatures only. A statement of another predicate type
//!   is an attestation, not a signature, and counts for nothing.
//!
//! Verification comes first, parsing of what was signed after: nothing unsigned is believed.

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::Digest as _;

use super::keys::PublicKey;
use super::reference::{Reference, SignedIdentity};
use crate::digest::Digest;
use crate::manifest::json;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const COSIGN_TYPE: &str = "cosign container image signature";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const STATEMENTS: [&str; 2] = ["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"];

/// A registry's value as a reason shows it: JSON-escaped (no newline reaches a summary or a log
/// line) and cut to [`SHOWN`] bytes, so a hostile string costs no memory where reasons are kept.
pub fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= SHOWN {
        return s;
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// How much of a registry's value a reason shows.
pub const SHOWN: usize = 120;

/// How long a reason may be, whatever it carries (an error quoting a registry's key, say):
/// control characters become spaces, and past [`REASON`] bytes it is cut.
pub fn cut(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(REASON + 32));
    for c in reason.chars() {
        if out.len() + c.len_utf8() > REASON {
            out.push_str(&format!("… ({} bytes)", reason.len()));
            return out;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The longest reason kept, in bytes.
pub const REASON: usize = 512;

/// Signatures one DSSE envelope may carry (sigstore-go reads exactly one).
pub const MAX_ENVELOPE_SIGNATURES: usize = 4;

/// Whether `media_type` is a Sigstore bundle's (as an `artifactType` or a layer's type).
pub fn is_bundle_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle.v0.") && media_type.ends_with("+json")
        || media_type.starts_with("application/vnd.dev.sigstore.bundle+json")
}

/// What one signature says of one requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Verified by `key`, for the manifest, with an identity the requirement accepts.
    Verified { key: String },
    /// Checked and refused: why.
    Refused(String),
    /// Cannot be checked by regfs (keyless): why.
    Unverifiable(String),
}

/// A signature as found, before any requirement judged it.
#[derive(Debug, Clone)]
pub enum Signed {
    Cosign { payload: Vec<u8>, signature: Vec<u8> },
    Bundle { bytes: Vec<u8> },
}

/// What a signature claims once verified: the identity it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub identity: String,
}

impl Signed {
    /// This signature judged by a requirement's `keys` and `identity` for `image` (whose digest
    /// is `digest`); the identity claimed, once the signature verified.
    pub fn check(
        &self,
        keys: &[PublicKey],
        identity: &SignedIdentity,
        image: &Reference,
        digest: &Digest,
    ) -> (Status, Option<String>) {
        let verified = match self {
            Signed::Cosign { payload, signature } => cosign(payload, signature, keys, digest),
            Signed::Bundle { bytes } => bundle(bytes, keys, digest),
        };
        match verified {
            Ok((key, claimed)) => match identity.accepts(image, &claimed) {
                Ok(()) => (Status::Verified { key }, Some(claimed)),
                Err(why) => (Status::Refused(why), Some(claimed)),
            },
            Err(Judged::Refused(why)) => (Status::Refused(why), None),
            Err(Judged::Unverifiable(why)) => (Status::Unverifiable(why), None),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Signed::Cosign { .. } => "cosign simple signing",
            Signed::Bundle { .. } => "sigstore bundle",
        }
    }
}

enum Judged {
    Refused(String),
    Unverifiable(String),
}

fn refused<T>(why: impl Into<String>) -> Result<T, Judged> {
    Err(Judged::Refused(why.into()))
}

/// The first key that verifies `der` over the message whose SHA-256 is `hash`.
fn verified_by(keys: &[PublicKey], hash: &[u8], der: &[u8]) -> Option<String> {
    keys.iter().find(|k| k.verifies_prehashed(hash, der)).map(|k| k.name.clone())
}

fn cosign(payload: &[u8], signature: &[u8], keys: &[PublicKey], digest: &Digest) -> Result<(String, String), Judged> {
    let Some(key) = verified_by(keys, &sha2::Sha256::digest(payload), signature) else {
        return refused("the signature is not verified by any key of the requirement");
    };
    let (claimed, signed_digest) = simple_signing(payload).map_err(Judged::Refused)?;
    if signed_digest != digest.to_string() {
        return refused(format!("signed for {signed_digest}, not this manifest"));
    }
    Ok((key, claimed))
}

/// `(docker-reference, docker-manifest-digest)` of a simple-signing payload, read paranoidly.
pub fn simple_signing(payload: &[u8]) -> Result<(String, String), String> {
    let doc = json::strict(payload).map_err(|e| format!("payload: {e}"))?;
    let top = exact(&doc, "payload", &["critical", "optional"])?;
    match &top["optional"] {
        Value::Null => {}
        // As containers/image: other fields are free, these two typed.
        Value::Object(o) => {
            if o.get("creator").is_some_and(|c| !c.is_string()) {
                return Err("payload: optional.creator is not a string".into());
            }
            if let Some(t) = o.get("timestamp") {
                let integral =
                    t.as_i64().is_some() || t.as_u64().is_some() || t.as_f64().is_some_and(|f| f.fract() == 0.0);
                if !integral {
                    return Err("payload: optional.timestamp is not an integer".into());
                }
            }
        }
        _ => return Err("payload: optional is not an object".into()),
    }
    let critical = exact(&top["critical"], "critical", &["identity", "image", "type"])?;
    if critical["type"].as_str() != Some(COSIGN_TYPE) {
        return Err(format!("payload: critical.type is {}, not {COSIGN_TYPE:?}", shown(&critical["type"])));
    }
    let image = exact(&critical["image"], "critical.image", &["docker-manifest-digest"])?;
    let identity = exact(&critical["identity"], "critical.identity", &["docker-reference"])?;
    let text = |v: &Value, what: &str| {
        v.as_str().map(str::to_string).ok_or_else(|| format!("payload: {what} is not a string"))
    };
    Ok((
        text(&identity["docker-reference"], "docker-reference")?,
        text(&image["docker-manifest-digest"], "docker-manifest-digest")?,
    ))
}

/// `v` as an object with exactly the fields `fields`.
fn exact<'a>(v: &'a Value, what: &str, fields: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let m = v.as_object().ok_or_else(|| format!("{what} is not an object"))?;
    if m.len() != fields.len() || !fields.iter().all(|f| m.contains_key(*f)) {
        let keys: Vec<&String> = m.keys().take(8).collect();
        let keys = shown(&Value::from(format!("{keys:?}")));
        return Err(format!("{what} has the fields {keys}, not exactly {fields:?}"));
    }
    Ok(m)
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

fn b64(s: &Value, what: &str) -> Result<Vec<u8>, Judged> {
    let s = match s.as_str() {
        Some(s) => s,
        None => return refused(format!("bundle: {what} is not a string")),
    };
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .map_err(|e| Judged::Refused(format!("bundle: {what} is not base64: {e}")))
}

fn bundle(bytes: &[u8], keys: &[PublicKey], digest: &Digest) -> Result<(String, String), Judged> {
    let doc = json::strict(bytes).map_err(|e| Judged::Refused(format!("bundle: {e}")))?;
    let media = doc["mediaType"].as_str().unwrap_or_default();
    if !is_bundle_type(media) {
        return refused(format!("bundle: mediaType {} is not a Sigstore bundle's", shown(&doc["mediaType"])));
    }
    let material = &doc["verificationMaterial"];
    if !material.is_object() {
        return refused("bundle: no verificationMaterial");
    }
    for keyless in ["certificate", "x509CertificateChain"] {
        if !material[keyless].is_null() {
            return Err(Judged::Unverifiable(format!(
                "keyless ({keyless}: a Fulcio certificate and Rekor); regfs verifies keyed signatures only"
            )));
        }
    }
    if !material["publicKey"].is_object() {
        return refused("bundle: verificationMaterial has no publicKey");
    }
    let envelope = &doc["dsseEnvelope"];
    if !envelope.is_object() {
        let what = if doc["messageSignature"].is_object() {
            "a message signature (a blob's), not an image's"
        } else {
            "no dsseEnvelope"
        };
        return refused(format!("bundle: {what}"));
    }
    let payload_type = envelope["payloadType"].as_str().unwrap_or_default();
    if payload_type != IN_TOTO {
        return refused(format!("bundle: payloadType {} is not {IN_TOTO}", shown(&envelope["payloadType"])));
    }
    let payload = b64(&envelope["payload"], "dsseEnvelope.payload")?;
    let signed = pae(payload_type, &payload);
    let sigs = match envelope["signatures"].as_array() {
        Some(s) if !s.is_empty() && s.len() <= MAX_ENVELOPE_SIGNATURES => s,
        _ => {
            return refused(format!("bundle: dsseEnvelope.signatures is not a list of 1 to {MAX_ENVELOPE_SIGNATURES}"));
        }
    };
    // Hashed once, for every signature and key.
    let hash = sha2::Sha256::digest(&signed);
    let mut key = None;
    for s in sigs {
        let der = b64(&s["sig"], "dsseEnvelope.signatures[].sig")?;
        if let Some(k) = verified_by(keys, &hash, &der) {
            key = Some(k);
            break;
        }
    }
    let Some(key) = key else { return refused("the envelope is not signed by any key of the requirement") };
    // Signed: now its statement is believed as far as it says.
    let st = json::strict(&payload).map_err(|e| Judged::Refused(format!("statement: {e}")))?;
    if !STATEMENTS.contains(&st["_type"].as_str().unwrap_or_default()) {
        return refused(format!("statement: _type {} is not an in-toto statement", shown(&st["_type"])));
    }
    let predicate = st["predicateType"].as_str().unwrap_or_default();
    if predicate != COSIGN_SIGN_PREDICATE {
        let predicate = shown(&Value::from(predicate));
        return refused(format!("an attestation ({predicate}), not a signature ({COSIGN_SIGN_PREDICATE})"));
    }
    let subjects = st["subject"].as_array().map(Vec::as_slice).unwrap_or_default();
    let alg = digest.algorithm().name();
    let ours = subjects.iter().find(|s| s["digest"][alg].as_str() == Some(digest.hex()));
    let Some(subject) = ours else {
        let named: Vec<String> = subjects
            .iter()
            .filter_map(|s| s["digest"][alg].as_str().map(|h| shown(&Value::from(format!("{alg}:{h}")))))
            .take(4)
            .collect();
        return refused(format!("the statement's subjects are [{}], not this manifest", named.join(", ")));
    };
    match subject["name"].as_str() {
        Some(name) => Ok((key, name.to_string())),
        None => refused("the statement's subject has no name"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::{
        self,
        tests::{key_pair, sign},
    };
    use super::*;

    fn payload(reference: &str, digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"critical":{"identity":{"docker-reference":reference},"image":{"docker-manifest-digest":digest},"type":COSIGN_TYPE},"optional":null})).expect("json")
    }

    #[test]
    fn cosign_payloads_verify_for_their_manifest_and_identity_only() {
        let (sk, pem) = key_pair("cosign");
        let key = keys::parse(pem.as_bytes(), "k.pub").expect("key");
        let d: Digest = format!("sha256:{}", "d".repeat(64)).parse().expect("digest");
        let image = Reference::parse_normalized(&format!("localhost:5000/sig/app@{d}")).expect("ref");
        let p = payload("localhost:5000/sig/app:v1", &d.to_string());
        let good = Signed::Cosign { payload: p.clone(), signature: sign(&sk, &p) };
        let (status, claimed) =
            good.check(std::slice::from_ref(&key), &SignedIdentity::MatchRepoDigestOrExact, &image, &d);
        assert_eq!(status, Status::Verified { key: "k.pub".into() });
        assert_eq!(claimed.as_deref(), Some("localhost:5000/sig/app:v1"));
        let other: Digest = format!("sha256:{}", "e".repeat(64)).parse().expect("digest");
        let q = payload("localhost:5000/sig/app:v1", &other.to_string());
        let cases = [
            (Signed::Cosign { payload: q.clone(), signature: sign(&sk, &q) }, "not this manifest"),
            (Signed::Cosign { payload: p.clone(), signature: sign(&key_pair("other").0, &p) }, "any key"),
            (Signed::Cosign { payload: [&p[..], b" "].concat(), signature: sign(&sk, &p) }, "any key"),
        ];
        for (s, why) in cases {
            match s.check(std::slice::from_ref(&key), &SignedIdentity::MatchRepoDigestOrExact, &image, &d).0 {
                Status::Refused(w) => assert!(w.contains(why), "{w}"),
                other => panic!("{other:?}"),
            }
        }
        let bare = payload("localhost:5000/sig/app", &d.to_string());
        let s = Signed::Cosign { payload: bare.clone(), signature: sign(&sk, &bare) };
        assert!(matches!(
            s.check(std::slice::from_ref(&key), &SignedIdentity::MatchRepoDigestOrExact, &image, &d).0,
            Status::Refused(_)
        ));
        assert!(matches!(s.check(&[key], &SignedIdentity::MatchRepository, &image, &d).0, Status::Verified { .. }));
        for bad in [
            r#"{"critical":{"identity":{"docker-reference":"a/b"},"image":{"docker-manifest-digest":"x"},"type":"cosign container image signature"}}"#,
            r#"{"critical":{"identity":{"docker-reference":"a/b"},"image":{"docker-manifest-digest":"x"},"type":"other"},"optional":{}}"#,
            r#"{"critical":{"identity":{"docker-reference":"a/b","x":1},"image":{"docker-manifest-digest":"x"},"type":"cosign container image signature"},"optional":{}}"#,
            r#"{"critical":{"identity":{"docker-reference":"a/b"},"image":{"docker-manifest-digest":"x"},"type":"cosign container image signature"},"optional":{},"optional":{}}"#,
        ] {
            assert!(simple_signing(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn dsse_pae_is_the_spec_s() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }
}
