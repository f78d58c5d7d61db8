//! SOCI v2 (awslabs/soci-snapshotter): an ordinary gzip layer read by spans, through the zTOC
//! that the image's SOCI index names for it.
//!
//! # Finding the zTOC, and why it is trusted
//! A SOCI-enabled image manifest carries `com.amazon.soci.index-digest` (so its digest covers
//! it). That digest names the SOCI index, an image manifest whose config's media type is
//! [`INDEX_V2`] and whose layers are zTOCs, each annotated with the layer it is for
//! (`com.amazon.soci.image-layer-digest`). The chain: manifest digest → SOCI index digest →
//! zTOC descriptor digest → the zTOC's span digests → each span's compressed bytes. The zTOC's
//! 32 KiB windows are trusted as the zTOC is: a forged window changes what genuine compressed
//! bytes decompress to, and only the whole layer's diff_id can tell (the cross-check,
//! [`super::check`]).
//!
//! SOCI v1 (an index found through the referrers API, that no manifest commits to) is never
//! read: nothing a manifest digest covers names it.
//!
//! # What is read whole instead (as any layer)
//! A layer that is not gzip; an image whose SOCI index the registry does not have (`404`,
//! logged); a layer the index has no zTOC for (SOCI makes none below 10 MiB by default); a zTOC
//! of a version or algorithm regfs does not read (logged). What is refused (the layer is EIO):
//! an index that is not a v2 SOCI index, two zTOCs for one layer, a zTOC larger than
//! [`limits::MAX_TOC_BYTES`] or that [`ztoc::parse`] refuses.
//!
//! # Reading a span
//! A file's bytes are pieces of spans ([`super::toc::Chunk::span`]). A span is fetched by one
//! `Range` request for its compressed bytes, whose sha256 must be its span digest before
//! anything is done with them; kept on disk by that digest (the cache's `chunks/`, as a chunk);
//! decompressed from its checkpoint ([`zran::span`]) and kept in memory, decompressed, by
//! [`ztoc::Spans::key`] (its zTOC and its number: the same compressed bytes under another
//! window are other bytes).

use std::sync::Arc;

use super::chunks;
use super::zran;
use super::ztoc::{self, Ztoc};
use super::{LayerCounters, LazyLayer};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits;
use crate::manifest::Descriptor;
use crate::store::{Content, Store};
use crate::views::index::IndexLimits;

/// The config media type of a SOCI v2 index.
pub const INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// The config media type of a SOCI v1 index (never read).
pub const INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// The annotation of a zTOC descriptor naming the layer it is for.
pub const LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";

/// Whether layer `d`'s media type is gzip (the only compression SOCI indexes).
pub fn is_gzip(d: &Descriptor) -> bool {
    d.media_type.ends_with("gzip")
}

/// The zTOC SOCI index `index` of `repo` names for layer `layer` (`size` bytes), read and
/// checked; `None` to read the layer whole.
pub fn ztoc(
    store: &Store,
    repo: &str,
    index: &Digest,
    layer: &Digest,
    size: u64,
    limits: IndexLimits,
) -> Result<Option<Ztoc>> {
    let what = format!("layer {layer} of {repo}");
    let soci = match store.manifest(repo, index) {
        Ok(m) => m,
        Err(Error::NotFound(e)) => {
            log::info!(
                "{what}: its image names SOCI index {index}, which the registry does not have ({e}); read whole"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let config = soci.manifest.config.as_ref().map(|c| c.media_type.as_str()).unwrap_or_default();
    if config != INDEX_V2 {
        return Err(Error::malformed(
            format!("SOCI index {index} of {repo}"),
            format!("its config's media type is {config:?}, not {INDEX_V2:?}"),
        ));
    }
    let mut named = soci.manifest.layers.iter().filter(|(_, d)| {
        d.lazy_annotation(LAYER_DIGEST).and_then(|v| v.parse::<Digest>().ok()).as_ref() == Some(layer)
    });
    let Some((_, z)) = named.next() else {
        log::debug!("{what}: SOCI index {index} has no zTOC for it; read whole");
        return Ok(None);
    };
    if named.next().is_some() {
        return Err(Error::malformed(&what, format!("SOCI index {index} names two zTOCs for it")));
    }
    let zsize = z.size.ok_or_else(|| Error::malformed(&what, format!("zTOC {} has no size", z.digest)))?;
    if zsize > limits::MAX_TOC_BYTES as u64 {
        return Err(Error::TooLarge(format!("{what}: a zTOC of {zsize} bytes")));
    }
    let bytes = store.blob(repo, &z.digest, Some(zsize))?;
    let bytes = match &bytes {
        Content::Memory(b) => b.to_vec(),
        other => read_all(other, zsize).map_err(|e| Error::Io(format!("zTOC {} of {what}: {e}", z.digest)))?,
    };
    if let Err(why) = ztoc::readable(&bytes) {
        log::info!("{what}: zTOC {} is {why}; read whole", z.digest);
        return Ok(None);
    }
    ztoc::parse(&bytes, &z.digest, size, limits, &what).map(Some)
}

fn read_all(c: &Content, size: u64) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; size as usize];
    match c {
        Content::File(f) => std::os::unix::fs::FileExt::read_exact_at(&**f, &mut out, 0)?,
        _ => return Err(std::io::Error::other("not a whole blob")),
    }
    Ok(out)
}

/// Span `i` of `layer`, decompressed: kept, or fetched (or read from the disk cache), verified
/// and decompressed (and kept).
pub fn span(layer: &LazyLayer, i: usize) -> Result<Arc<Vec<u8>>> {
    let spans = layer.spans.as_ref().ok_or_else(|| Error::Io(format!("layer {} has no spans", layer.blob)))?;
    let key = chunks::Kept::Span(spans.key(i));
    let out = spans.uncompressed(i);
    let len = out.end - out.start;
    let kept = &layer.shared.chunks;
    if let Some(b) = kept.kept_bytes(&key, len) {
        return Ok(b);
    }
    kept.flights.run(&key, || {
        if let Some(b) = kept.kept_bytes(&key, len) {
            return Ok(b);
        }
        let z = spans.compressed(i);
        let digest = &spans.digests[i];
        let fetch = || {
            layer.check_trusted()?;
            let bytes = layer.range(z.start, z.end)?;
            verify(layer, &layer.counters, digest, z.start, z.end, &bytes)?;
            Ok(bytes)
        };
        let compressed = chunks::on_disk(layer, digest, z.end - z.start, &fetch)?;
        let c = spans.checkpoints[i];
        let data = zran::span(&compressed, c.bits, spans.window(i), len).map_err(|why| {
            let what = format!("span {i} ({}..{} of blob {} of {})", z.start, z.end, layer.blob, layer.repo);
            log::warn!("{what}: {why}");
            Error::malformed(what, why)
        })?;
        let data = Arc::new(data);
        kept.keep(key.clone(), Arc::clone(&data));
        Ok(data)
    })
}

/// `Ok` if `bytes` (`start..end` of `layer`'s blob) hash to span digest `digest`.
fn verify(
    layer: &LazyLayer,
    counters: &LayerCounters,
    digest: &Digest,
    start: u64,
    end: u64,
    bytes: &[u8],
) -> Result<()> {
    let mut h = Hasher::new(Algorithm::Sha256);
    h.update(bytes);
    let actual = h.finish();
    if actual != *digest {
        let what = format!("span {digest} ({start}..{end} of blob {} of {})", layer.blob, layer.repo);
        log::warn!("{what}: hashes to {actual}; not served");
        return Err(Error::DigestMismatch { what, expected: digest.to_string(), actual: actual.to_string() });
    }
    counters.chunks_verified.bump();
    Ok(())
}
