//! Docker image manifest v2, schema 1 (signed or not): deprecated, still served by old images.
//!
//! Two things set it apart. Its layers (`fsLayers`) carry no sizes and are listed top layer
//! first, so regfs reverses them and learns sizes from the registry when asked. And a signed
//! schema1 manifest's digest is not the hash of the bytes served: it is the hash of the JWS
//! payload, which libtrust rebuilds from the served bytes as `bytes[..formatLength] +
//! base64url(formatTail)` (both from the first signature's protected header). The registry
//! re-serialises signatures on every GET, so only that payload is stable.
//!
//! The signatures themselves are not checked: their keys are embedded in the document, so they
//! prove nothing about origin; the digest is what regfs verifies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::Descriptor;
use crate::digest::Digest;
use crate::error::{Error, Result};

const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: Digest,
}

/// The layers, bottom first; sizes unknown.
pub fn layers(doc: &serde_json::Value) -> Result<Vec<Descriptor>> {
    let fs_layers = doc.get("fsLayers").ok_or_else(|| Error::malformed("schema1 manifest", "no fsLayers"))?;
    let list: Vec<FsLayer> = Vec::deserialize(fs_layers).map_err(|e| Error::malformed("schema1 fsLayers", e))?;
    Ok(list
        .into_iter()
        .rev()
        .map(|l| Descriptor {
            media_type: LAYER_MEDIA_TYPE.to_string(),
            digest: l.blob_sum,
            size: None,
            platform: None,
        })
        .collect())
}

#[derive(Deserialize)]
struct Protected {
    #[serde(rename = "formatLength")]
    format_length: usize,
    #[serde(rename = "formatTail")]
    format_tail: String,
}

/// The bytes a schema1 manifest's digest is computed over: the JWS payload when it is signed,
/// else the bytes as served.
pub fn canonical_payload<'a>(bytes: &'a [u8], doc: &serde_json::Value) -> Result<std::borrow::Cow<'a, [u8]>> {
    let bad = |why: &str| Error::malformed("schema1 signature", why);
    let Some(signatures) = doc.get("signatures") else {
        return Ok(bytes.into());
    };
    let first = signatures.as_array().and_then(|s| s.first()).ok_or_else(|| bad("no signatures"))?;
    let protected = first.get("protected").and_then(|p| p.as_str()).ok_or_else(|| bad("no protected header"))?;
    let header = URL_SAFE_NO_PAD
        .decode(protected.trim_end_matches('='))
        .map_err(|_| bad("protected header is not base64url"))?;
    let header: Protected =
        serde_json::from_slice(&header).map_err(|e| Error::malformed("schema1 protected header", e))?;
    let tail = URL_SAFE_NO_PAD
        .decode(header.format_tail.trim_end_matches('='))
        .map_err(|_| bad("formatTail is not base64url"))?;
    let head = bytes.get(..header.format_length).ok_or_else(|| bad("formatLength is past the end"))?;
    let mut payload = Vec::with_capacity(head.len() + tail.len());
    payload.extend_from_slice(head);
    payload.extend_from_slice(&tail);
    Ok(payload.into())
}
