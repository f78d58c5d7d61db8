//! Signed Docker schema1 manifests, as libtrust signs them (ES256 JWS with an embedded JWK):
//! the reference registry refuses unsigned ones.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::{Signature, SigningKey, signature::Signer};

pub fn signed(name: &str, tag: &str, layers_top_first: &[String]) -> Result<Vec<u8>, String> {
    // Each history entry names its parent, the entry below it, as real schema1 images do (and
    // as skopeo checks).
    let n = layers_top_first.len();
    let history: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut v1 = serde_json::json!({"id": format!("{:064x}", i + 1), "created": "2023-11-14T22:13:20Z"});
            if i + 1 < n {
                v1["parent"] = serde_json::json!(format!("{:064x}", i + 2));
            }
            serde_json::json!({"v1Compatibility": v1.to_string()})
        })
        .collect();
    let fs_layers: Vec<serde_json::Value> =
        layers_top_first.iter().map(|d| serde_json::json!({"blobSum": d})).collect();
    let doc = serde_json::json!({
        "schemaVersion": 1, "name": name, "tag": tag, "architecture": "amd64",
        "fsLayers": fs_layers, "history": history
    });
    let mut payload = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut payload, fmt);
    serde::Serialize::serialize(&doc, &mut ser).map_err(|e| e.to_string())?;
    let format_length = payload.windows(2).rposition(|w| w == b"\n}").ok_or("no closing brace")?;
    let tail = &payload[format_length..];
    let protected = serde_json::json!({
        "formatLength": format_length,
        "formatTail": URL_SAFE_NO_PAD.encode(tail),
        "time": "2023-11-14T22:13:20Z"
    });
    let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
    let signing_input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(&payload));
    let key = SigningKey::from_slice(&[7u8; 32]).map_err(|e| e.to_string())?;
    let sig: Signature = key.sign(signing_input.as_bytes());
    let point = key.verifying_key().to_encoded_point(false);
    let (x, y) = (point.x().ok_or("no x")?, point.y().ok_or("no y")?);
    let signatures = serde_json::json!([{
        "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}, "alg": "ES256"},
        "signature": URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        "protected": protected
    }]);
    let mut out = payload[..format_length].to_vec();
    out.extend_from_slice(b",\n   \"signatures\": ");
    out.extend_from_slice(serde_json::to_string_pretty(&signatures).map_err(|e| e.to_string())?.as_bytes());
    out.extend_from_slice(tail);
    Ok(out)
}
