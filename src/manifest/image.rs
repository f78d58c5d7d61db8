//! The two families that share one shape: image manifests (Docker schema2, OCI image manifest)
//! and indexes (Docker manifest list, OCI image index). Docker's and OCI's documents differ in
//! media types, not in the fields regfs reads, so one parser serves each pair.

use serde::Deserialize;

use super::{Descriptor, LAZY_ANNOTATIONS, MAX_LAZY_ANNOTATION, TITLE_ANNOTATION};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{MAX_BLOB_SIZE, MAX_LAYER_URL_LEN, MAX_LAYER_URLS, MAX_PLATFORM_PART, MAX_TITLE};
use crate::platform::Platform;

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
    /// Kept as JSON: only the title is read, and an annotation of another type is no reason to
    /// refuse the descriptor.
    #[serde(default)]
    annotations: Option<serde_json::Value>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A descriptor, checked: a valid digest and a size no larger than regfs accepts.
pub fn descriptor(value: &serde_json::Value, what: &str) -> Result<Descriptor> {
    let raw = RawDescriptor::deserialize(value).map_err(|e| Error::malformed(what, e))?;
    if raw.size > MAX_BLOB_SIZE {
        return Err(Error::malformed(what, format!("size {} is larger than regfs accepts", raw.size)));
    }
    // An empty platform (no OS, no architecture) is no platform; nor is one with an overlong part.
    let kept = |p: &RawPlatform| {
        (!p.os.is_empty() || !p.architecture.is_empty())
            && [p.os.len(), p.architecture.len(), p.variant.as_ref().map_or(0, String::len)]
                .iter()
                .all(|n| *n <= MAX_PLATFORM_PART)
    };
    let platform = raw.platform.filter(kept).map(|p| Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant.unwrap_or_default(),
    });
    let title = raw
        .annotations
        .as_ref()
        .and_then(|a| a.get(TITLE_ANNOTATION))
        .and_then(|t| t.as_str())
        .filter(|t| t.len() <= MAX_TITLE)
        .map(str::to_string);
    let lazy = LAZY_ANNOTATIONS
        .iter()
        .filter_map(|&k| {
            let v = raw.annotations.as_ref()?.get(k)?.as_str()?;
            (v.len() <= MAX_LAZY_ANNOTATION).then(|| (k, v.to_string()))
        })
        .collect();
    let mut urls = raw.urls.unwrap_or_default();
    if urls.len() > MAX_LAYER_URLS || urls.iter().any(|u| u.len() > MAX_LAYER_URL_LEN) {
        log::warn!(
            "{what} ({}): {} urls, the longest {} bytes; more than regfs takes ({MAX_LAYER_URLS} of {MAX_LAYER_URL_LEN} bytes): none will be used",
            raw.digest,
            urls.len(),
            urls.iter().map(String::len).max().unwrap_or(0)
        );
        urls = Vec::new();
    }
    urls.shrink_to_fit();
    Ok(Descriptor { media_type: raw.media_type, digest: raw.digest, size: Some(raw.size), platform, title, urls, lazy })
}

fn descriptors(value: &serde_json::Value, field: &str) -> Result<Vec<Descriptor>> {
    let items = value.as_array().ok_or_else(|| Error::malformed("manifest", format!("{field} is not an array")))?;
    items.iter().enumerate().map(|(i, d)| descriptor(d, &format!("{field}[{i}]"))).collect()
}

/// The config and layers of an image manifest; both are required.
pub fn image(doc: &serde_json::Value) -> Result<(Descriptor, Vec<Descriptor>)> {
    let config = doc.get("config").ok_or_else(|| Error::malformed("manifest", "no config"))?;
    let layers = doc.get("layers").ok_or_else(|| Error::malformed("manifest", "no layers"))?;
    Ok((descriptor(config, "config")?, descriptors(layers, "layers")?))
}

/// The entries of an index; `manifests` is required.
pub fn index(doc: &serde_json::Value) -> Result<Vec<Descriptor>> {
    let manifests = doc.get("manifests").ok_or_else(|| Error::malformed("index", "no manifests"))?;
    descriptors(manifests, "manifests")
}

/// Whatever config and layers an unknown document has: each shown only where it is a valid
/// descriptor (for `layers`, where every entry is), else left out with a log line naming `what`.
pub fn optional_parts(doc: &serde_json::Value, what: &str) -> (Option<Descriptor>, Vec<Descriptor>) {
    let config = doc.get("config").and_then(|c| {
        descriptor(c, "config").map_err(|e| log::info!("manifest {what}: not showing config.json: {e}")).ok()
    });
    let layers = doc.get("layers").map_or_else(Vec::new, |l| {
        descriptors(l, "layers").unwrap_or_else(|e| {
            log::info!("manifest {what}: not showing layers/: {e}");
            Vec::new()
        })
    });
    (config, layers)
}

/// The annotation of an image manifest naming its SOCI v2 index (soci-snapshotter
/// `soci/soci_index.go`; `views/lazy/soci.rs` reads what it names).
pub const SOCI_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";

/// The SOCI index an image manifest names, if it names a valid digest (else none, logged).
pub fn soci_index(doc: &serde_json::Value, what: &str) -> Option<Digest> {
    let v = doc.get("annotations")?.get(SOCI_INDEX_DIGEST)?;
    match v.as_str().and_then(|s| s.parse::<Digest>().ok()) {
        Some(d) => Some(d),
        None => {
            log::info!("manifest {what}: {SOCI_INDEX_DIGEST} {v} is not a digest; no SOCI index is read");
            None
        }
    }
}
