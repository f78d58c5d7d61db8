//! Docker image manifest v2, schema 1 (signed or not): deprecated, still served by old images.
//!
//! Two things set it apart. Its layers (`fsLayers`) carry no sizes and are listed top layer
//! first, so regfs reverses them and learns sizes from the registry when asked. And a signed
//! schema1 manifest's digest is not the hash of the bytes served: it is the hash of the JWS
//! payload, which libtrust rebuilds from the served bytes as `bytes[..formatLength] +
//! base64url(formatTail)` (both from each signature's protected header). The registry
//! re-serialises signatures on every GET, so only that payload is stable.
//!
//! # What is shown is what the digest covers
//! `formatTail` is whatever the protected header says, so a served document could carry a
//! genuine payload in its header and name other layers in its own JSON. So, as the reference
//! registry does, every field shown is read from the payload, never from the served JSON; and the
//! served document must be exactly what libtrust's `PrettySignature` makes of that payload:
//! - every signature's protected header names the same `formatLength` and `formatTail`;
//! - `formatTail` is the payload's closing brace (whitespace, `}`, whitespace), so the payload is
//!   `bytes[..formatLength]` closed;
//! - after `bytes[..formatLength]` comes `, "signatures": [ … ] }` and nothing else (whitespace
//!   aside);
//! - neither the payload nor the served JSON has a duplicate key, the payload has no
//!   `signatures`, and the served JSON less its `signatures` is the payload, member for member.
//!
//! Anything else is refused. The signatures themselves are not checked: their keys are embedded
//! in the document, so they prove nothing about origin; the digest is what regfs verifies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};

const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const SIGNATURES: &str = "signatures";

#[derive(Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: Digest,
}

/// The layers, bottom first; sizes unknown. `payload` is what the digest covers.
pub fn layers(payload: &serde_json::Value) -> Result<Vec<Descriptor>> {
    let fs_layers = payload.get("fsLayers").ok_or_else(|| Error::malformed("schema1 manifest", "no fsLayers"))?;
    let list: Vec<FsLayer> = Vec::deserialize(fs_layers).map_err(|e| Error::malformed("schema1 fsLayers", e))?;
    Ok(list
        .into_iter()
        .rev()
        .map(|l| Descriptor {
            media_type: LAYER_MEDIA_TYPE.to_string(),
            digest: l.blob_sum,
            size: None,
            platform: None,
            title: None,
            urls: Vec::new(),
            lazy: Vec::new(),
        })
        .collect())
}

#[derive(Deserialize, PartialEq)]
struct Protected {
    #[serde(rename = "formatLength")]
    format_length: usize,
    #[serde(rename = "formatTail")]
    format_tail: String,
}

/// A signed document's JWS payload and its parsed JSON, checked to be all the served document
/// says besides its signatures (see the module notes); `None` when `doc` is unsigned.
pub fn signed_payload(bytes: &[u8], doc: &serde_json::Value) -> Result<Option<(Vec<u8>, serde_json::Value)>> {
    let bad = |why: &str| Error::malformed("schema1 signature", why);
    let Some(signatures) = doc.get(SIGNATURES) else {
        return Ok(None);
    };
    let signatures = signatures.as_array().filter(|s| !s.is_empty()).ok_or_else(|| bad("no signatures"))?;
    let mut format: Option<Protected> = None;
    for s in signatures {
        let protected = s.get("protected").and_then(|p| p.as_str()).ok_or_else(|| bad("no protected header"))?;
        let header = URL_SAFE_NO_PAD
            .decode(protected.trim_end_matches('='))
            .map_err(|_| bad("protected header is not base64url"))?;
        let header: Protected =
            serde_json::from_slice(&header).map_err(|e| Error::malformed("schema1 protected header", e))?;
        match &format {
            None => format = Some(header),
            Some(f) if *f == header => {}
            Some(_) => return Err(bad("signatures disagree on formatLength or formatTail")),
        }
    }
    let Some(format) = format else { return Err(bad("no signatures")) };
    let tail = URL_SAFE_NO_PAD
        .decode(format.format_tail.trim_end_matches('='))
        .map_err(|_| bad("formatTail is not base64url"))?;
    let head = bytes.get(..format.format_length).ok_or_else(|| bad("formatLength is past the end"))?;
    if !is_closing_brace(&tail) {
        return Err(bad("formatTail is more than the payload's closing brace"));
    }
    if !is_signature_block(&bytes[format.format_length..]) {
        return Err(bad("the document is more than its payload and one signatures block"));
    }
    let payload = [head, &tail[..]].concat();
    let parsed = super::json::strict(&payload).map_err(|why| Error::malformed("schema1 payload", why))?;
    if parsed.get(SIGNATURES).is_some() {
        return Err(bad("the payload has signatures of its own"));
    }
    let mut rest = doc.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove(SIGNATURES);
    }
    if rest != parsed {
        return Err(bad("the document says more than its payload"));
    }
    Ok(Some((payload, parsed)))
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')).count();
    &b[n..]
}

/// Whitespace, `}`, whitespace: what libtrust cuts off a payload as its `formatTail`.
fn is_closing_brace(tail: &[u8]) -> bool {
    skip_ws(tail).split_first().is_some_and(|(c, rest)| *c == b'}' && skip_ws(rest).is_empty())
}

/// `, "signatures": <one JSON array> }`, whitespace allowed between the tokens.
fn is_signature_block(b: &[u8]) -> bool {
    let Some(b) = skip_ws(b).strip_prefix(b",") else { return false };
    let Some(b) = skip_ws(b).strip_prefix(b"\"signatures\"") else { return false };
    let Some(b) = skip_ws(b).strip_prefix(b":") else { return false };
    let b = skip_ws(b);
    if !b.starts_with(b"[") {
        return false;
    }
    let mut values = serde_json::Deserializer::from_slice(b).into_iter::<serde::de::IgnoredAny>();
    if !matches!(values.next(), Some(Ok(_))) {
        return false;
    }
    is_closing_brace(&b[values.byte_offset()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_block_grammar() {
        assert!(is_signature_block(b",\n   \"signatures\": [{\"a\":1}]\n}"));
        assert!(is_signature_block(br#","signatures":[]}"#));
        assert!(!is_signature_block(br#","signatures":[],"x":1}"#));
        assert!(!is_signature_block(br#","x":1,"signatures":[]}"#));
        assert!(!is_signature_block(br#","signatures":{}}"#));
        assert!(!is_signature_block(br#","signatures":[]}}"#));
        assert!(!is_signature_block(br#","signatures":[}"#));
        assert!(is_closing_brace(b"\n}") && is_closing_brace(b"}\n") && !is_closing_brace(b"]}"));
    }
}
