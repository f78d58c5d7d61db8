//! Layers read lazily: a file of `rootfs/` served from the chunks that hold it, each verified
//! against a digest the manifest covers, without the rest of its layer.
//!
//! # Which layers
//! A layer of an image manifest whose descriptor carries a TOC digest:
//! - **eStargz**: `containerd.io/snapshot/stargz/toc.digest` (the sha256 of the TOC's JSON);
//!   the TOC is found by the footer ([`estargz`]).
//! - **zstd:chunked**: `io.github.containers.zstd-chunked.manifest-checksum` (the sha256 of the
//!   compressed TOC) and `…manifest-position` ([`zstd_chunked`]).
//! - **SOCI v2**: an ordinary gzip layer of an image manifest carrying
//!   `com.amazon.soci.index-digest`, when that SOCI index has a zTOC for it ([`soci`], [`ztoc`]);
//!   its chunks are spans decompressed from zran checkpoints ([`zran`]). A layer's own TOC wins.
//!
//! A layer carrying both is refused (containers/storage refuses it too: two TOCs, two
//! possible trees). The early zstd:chunked variant (`io.containers.zstd-chunked.*`, no
//! tar-split) and a layer with no annotation are read whole, as any layer. `--lazy off` reads
//! every layer whole.
//!
//! # The chain of trust, and its two tiers
//! manifest digest → the descriptor's TOC digest → the TOC → each chunk's `chunkDigest` → the
//! chunk's decompressed bytes. So a lazily served file is **verified against the TOC the
//! manifest names**. It is not proven equal to the layer's tar (the diff_id): no format lets
//! anyone prove that without reading the whole layer, and an image author can make a TOC that
//! differs from the tar it sits in (containers/storage refuses such partial pulls unless told
//! `insecure_allow_unpredictable_image_contents`). `layers/<n>.tar` is never served lazily: it
//! stays the diff_id-verified tier. When the same layer's whole blob is verified later (its
//! `layers/<n>.tar` read, say), its tar is checked against the TOC; if they disagree, the layer is
//! *poisoned*: every lazily served file of it is `EIO` from then on, with a log line and a
//! status entry ([`Lazy::poison`]).
//!
//! # What it costs
//! The first `ls` of a layer: one or two `Range` requests (the footer and, past the tail's
//! first 64 KiB, the rest of the TOC; zstd:chunked: the TOC alone). A file's first read: one
//! request per chunk it touches (4 MiB chunks by eStargz's default), none for a chunk already
//! verified (kept by digest, [`chunks::Chunks`]), none when the whole blob is verified in the
//! cache (read from it). A registry that does not honour `Range` makes the layer read whole,
//! as any other.
//!
//! # Bounds (a hostile TOC or registry)
//! TOCs at most [`limits::MAX_TOC_BYTES`], entries as a layer's index, chunks at most
//! [`limits::MAX_LAZY_CHUNK`] decompressed; what [`toc`] refuses refuses the layer (`EIO`
//! for what it touches); TOCs refused are remembered for [`LazyConfig::failed_hold`] only
//! (a registry fault is not the layer's state).

pub mod check;
pub mod chunks;
pub mod estargz;
pub mod soci;
pub mod toc;
pub mod zran;
pub mod zstd_chunked;
pub mod ztoc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits;
use crate::manifest::Descriptor;
use crate::store::flight::SingleFlight;
use crate::store::{Content, Store, VerifiedManifest};
use crate::sync;
use crate::views::index::{IndexLimits, LayerIndex};
use toc::{Codec, FileChunks};

/// The eStargz TOC digest annotation.
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// The lazy formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Estargz,
    ZstdChunked,
    Soci,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Estargz => "estargz",
            Format::ZstdChunked => "zstd:chunked",
            Format::Soci => "soci",
        }
    }
}

/// The lazy format layer `d` names, with its TOC digest; `None` when it names none;
/// `Malformed` when it names two, or a digest that is not one.
pub fn format_of(d: &Descriptor) -> Result<Option<(Format, Digest)>> {
    let estargz = d.lazy_annotation(ESTARGZ_TOC_DIGEST);
    let zstd = d.lazy_annotation(zstd_chunked::CHECKSUM);
    let what = || format!("layer {}", d.digest);
    let parse = |v: &str| v.parse::<Digest>().map_err(|_| Error::malformed(what(), format!("a TOC digest {v:?}")));
    match (estargz, zstd) {
        (Some(_), Some(_)) => Err(Error::malformed(what(), "it names both an eStargz and a zstd:chunked TOC")),
        (Some(v), None) => Ok(Some((Format::Estargz, parse(v)?))),
        (None, Some(v)) => Ok(Some((Format::ZstdChunked, parse(v)?))),
        (None, None) => Ok(None),
    }
}

/// What the lazy reader may hold (sizes chosen for speed; the hostile bounds are in `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyConfig {
    /// Read layers that name a TOC lazily (`--lazy`, on by default).
    pub enabled: bool,
    /// Bytes of verified chunks kept in memory: 64 MiB.
    pub chunk_memory: usize,
    /// Lazy layers (their TOCs, as an index and chunk tables) kept: 64.
    pub layers: usize,
    /// How long a TOC refused is the layer's answer before it is fetched again: 10 s.
    pub failed_hold: Duration,
    /// Once a layer is read lazily, also fetch it whole in the background, verify it by its
    /// diff_id and check its TOC against it (`--lazy-verify`, off by default): a TOC that
    /// lies is then caught without anyone reading `layers/<n>.tar`, at the cost of the whole
    /// layer's bytes.
    pub verify_whole: bool,
}

impl Default for LazyConfig {
    fn default() -> Self {
        LazyConfig {
            enabled: true,
            chunk_memory: 64 << 20,
            layers: 64,
            failed_hold: Duration::from_secs(10),
            verify_whole: false,
        }
    }
}

crate::telemetry::counters! {
    /// What one lazy layer has cost.
    pub struct LayerStats;
    /// Lock-free counters behind [`LayerStats`].
    pub struct LayerCounters {
        /// Range requests sent for it (TOC and chunks).
        ranges,
        /// Compressed bytes fetched by them.
        fetched_bytes,
        /// Chunks fetched and verified.
        chunks_verified,
    }
}

/// What is shared by every lazy layer of a mount.
pub(crate) struct Shared {
    store: Arc<Store>,
    chunks: chunks::Chunks,
    /// Layers whose tar was found to disagree with their TOC, by blob and TOC (a SOCI zTOC is
    /// outside its blob: anyone may publish one for a popular layer, so a lying one must poison
    /// only what it names), and why.
    poisoned: Mutex<std::collections::HashMap<(Digest, Digest), String>>,
}

/// One layer read lazily: its TOC, checked, as an index and chunk tables.
pub struct LazyLayer {
    pub repo: String,
    pub blob: Digest,
    pub size: u64,
    pub format: Format,
    pub toc_digest: Digest,
    pub index: Arc<LayerIndex>,
    pub files: Vec<FileChunks>,
    /// The files before the prefetch landmark (eStargz), if there is one.
    pub prefetch: Option<std::ops::Range<usize>>,
    /// SOCI: the spans its files' pieces are of.
    pub spans: Option<Arc<ztoc::Spans>>,
    codec: Codec,
    shared: Arc<Shared>,
    /// Shared with the status's record of it ([`Lazy::report`]), which outlives it.
    counters: Arc<LayerCounters>,
    /// The images (manifest digests) that have read it lazily, the first [`IMAGES_SHOWN`];
    /// shared with the status's record of it too.
    images: Arc<Mutex<Vec<Digest>>>,
}

/// Images shown per lazy layer in the status.
const IMAGES_SHOWN: usize = 8;

impl LazyLayer {
    /// Bytes `start..end` of the blob, counted.
    fn range(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        fetch_range(&self.shared.store, &self.counters, &self.repo, &self.blob, self.size, start, end)?.ok_or_else(
            || Error::Unavailable(format!("blob {} of {}: the registry no longer honours Range", self.blob, self.repo)),
        )
    }

    /// `Ok` unless the layer was poisoned (its tar disagrees with its TOC).
    fn check_trusted(&self) -> Result<()> {
        match sync::lock(&self.shared.poisoned).get(&(self.blob.clone(), self.toc_digest.clone())) {
            None => Ok(()),
            Some(why) => Err(Error::malformed(
                format!("layer {} of {} read lazily", self.blob, self.repo),
                format!("its tar disagrees with its TOC ({why}); no file of it is served"),
            )),
        }
    }

    /// The content of the regular file whose index entry has data offset `data_offset`.
    pub fn open(self: &Arc<Self>, data_offset: u64) -> Result<Content> {
        self.check_trusted()?;
        let n = data_offset.checked_sub(1).and_then(|n| usize::try_from(n).ok()).filter(|n| *n < self.files.len());
        let n =
            n.ok_or_else(|| Error::malformed(format!("lazy layer {}", self.blob), format!("no file {data_offset}")))?;
        Ok(chunks::content(Arc::clone(self), n))
    }

    fn used_by(&self, manifest: &Digest) {
        let mut images = sync::lock(&self.images);
        if images.len() < IMAGES_SHOWN && !images.contains(manifest) {
            images.push(manifest.clone());
        }
    }

    /// What it has cost so far.
    pub fn stats(&self) -> LayerStats {
        self.counters.snapshot()
    }
}

/// Bytes `start..end` of blob `digest`, counted in `counters`: `None` if Range is not honoured.
fn fetch_range(
    store: &Store,
    counters: &LayerCounters,
    repo: &str,
    digest: &Digest,
    size: u64,
    start: u64,
    end: u64,
) -> Result<Option<Vec<u8>>> {
    let got = store.blob_range(repo, digest, size, start, end)?;
    if let Some(b) = &got {
        counters.ranges.bump();
        counters.fetched_bytes.add(b.len() as u64);
    }
    Ok(got)
}

/// A lazy layer's key: the repository, the blob, the TOC digest, and where the TOC is said to be
/// (zstd:chunked's position annotation; empty for eStargz, whose footer is in the blob):
/// everything its build reads, so that a manifest that lies about one cannot fail or replace
/// the layer an honest manifest names.
type Key = (String, Digest, Digest, String);

/// What the status shows of a lazy layer made this run, kept once it is dropped.
struct Seen {
    format: Format,
    size: u64,
    entries: usize,
    counters: Arc<LayerCounters>,
    images: Arc<Mutex<Vec<Digest>>>,
}

/// The lazy layers of a mount: built from their TOCs once, kept ([`LazyConfig::layers`]).
pub struct Lazy {
    config: LazyConfig,
    limits: IndexLimits,
    shared: Arc<Shared>,
    layers: Mutex<LruCache<Key, Arc<LazyLayer>>>,
    flights: SingleFlight<Key, Option<Arc<LazyLayer>>>,
    /// Layers whose registry did not honour Range when their TOC was first asked: read whole
    /// from then on.
    whole: Mutex<LruCache<Key, ()>>,
    /// Layers read lazily this run (at most 4096): their TOC's index is their index for the
    /// rest of it (its entries are inode numbers), so one is never read whole later, even
    /// if the registry stops honouring Range once it has left [`Lazy::layers`].
    lazily: Mutex<LruCache<Key, ()>>,
    /// TOCs refused lately, and when.
    failed: Mutex<LruCache<Key, (Instant, Error)>>,
    /// Every lazy layer made this run, for the status (at most [`LazyConfig::layers`] × 4):
    /// what it reports, never the layer (its index and chunk tables are bounded by `layers`).
    seen: Mutex<LruCache<Key, Seen>>,
    /// Lazy layers checked against their verified tar this run (at most 4096).
    checked: Mutex<LruCache<Key, ()>>,
    /// Whether any layer this run has named a TOC: until one does, every layer is read whole
    /// and [`Lazy::reads_whole_now`] answers without looking at the manifest.
    any: std::sync::atomic::AtomicBool,
}

impl Lazy {
    pub fn new(store: Arc<Store>, config: LazyConfig, limits: IndexLimits) -> Lazy {
        let n = crate::capacity::nonzero(config.layers);
        Lazy {
            config,
            limits,
            shared: Arc::new(Shared {
                store,
                chunks: chunks::Chunks::new(config.chunk_memory),
                poisoned: Mutex::default(),
            }),
            layers: Mutex::new(LruCache::new(n)),
            flights: SingleFlight::default(),
            whole: Mutex::new(LruCache::new(crate::capacity::nonzero(4096))),
            lazily: Mutex::new(LruCache::new(crate::capacity::nonzero(4096))),
            failed: Mutex::new(LruCache::new(n)),
            seen: Mutex::new(LruCache::new(crate::capacity::nonzero(config.layers.saturating_mul(4)))),
            checked: Mutex::new(LruCache::new(crate::capacity::nonzero(4096))),
            any: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &LazyConfig {
        &self.config
    }

    fn key(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> Result<Option<(Key, Descriptor, Format)>> {
        let Some((_, d)) = doc.manifest.layers.get(n) else { return Ok(None) };
        if !doc.manifest.kind.is_image() {
            return Ok(None);
        }
        let named = format_of(d);
        let soci = doc.manifest.soci_index.as_ref().filter(|_| soci::is_gzip(d));
        if !matches!(named, Ok(None)) || soci.is_some() {
            self.any.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // A layer's own TOC first: the SOCI index of its image is for the layers with none.
        let (format, toc) = match (named?, soci) {
            (Some(named), _) => named,
            (None, Some(index)) => (Format::Soci, index.clone()),
            (None, None) => return Ok(None),
        };
        let at = match format {
            Format::Estargz => String::new(),
            Format::ZstdChunked => d.lazy_annotation(zstd_chunked::POSITION).unwrap_or_default().to_string(),
            Format::Soci => "soci".to_string(),
        };
        Ok(Some(((repo.to_string(), d.digest.clone(), toc, at), d.clone(), format)))
    }

    /// Layer `n` of `doc` read lazily, if it names a TOC and the registry honours Range; `None`
    /// to read it whole. A TOC that is refused is this layer's error.
    pub fn layer(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> Result<Option<Arc<LazyLayer>>> {
        if !self.config.enabled {
            return Ok(None);
        }
        let Some((key, d, format)) = self.key(repo, doc, n)? else { return Ok(None) };
        if let Some(l) = sync::lock(&self.layers).get(&key).cloned() {
            l.used_by(&doc.digest);
            return Ok(Some(l));
        }
        if sync::lock(&self.whole).contains(&key) {
            return Ok(None);
        }
        if let Some((at, e)) = sync::lock(&self.failed).get(&key) {
            if at.elapsed() < self.config.failed_hold {
                return Err(e.clone());
            }
        }
        self.flights.run(&key, || {
            let built = match self.build(&key, &d, format) {
                Ok(None) if sync::lock(&self.lazily).contains(&key) => Err(Error::Unavailable(format!(
                    "layer {} of {repo}, read lazily, again: the registry no longer honours Range",
                    key.1
                ))),
                built => built,
            };
            match &built {
                Ok(Some(l)) => {
                    l.used_by(&doc.digest);
                    sync::lock(&self.lazily).put(key.clone(), ());
                    sync::lock(&self.layers).put(key.clone(), Arc::clone(l));
                    chunks::prefetch_landmarked(l, self.config.chunk_memory / 2);
                    let seen = Seen {
                        format: l.format,
                        size: l.size,
                        entries: l.index.len(),
                        counters: Arc::clone(&l.counters),
                        images: Arc::clone(&l.images),
                    };
                    sync::lock(&self.seen).put(key.clone(), seen);
                    log::info!(
                        "{repo}: layer {} is read lazily ({}, TOC {}: {} entries)",
                        key.1,
                        format.name(),
                        key.2,
                        l.index.len()
                    );
                }
                Ok(None) => {
                    sync::lock(&self.whole).put(key.clone(), ());
                }
                Err(e) if !matches!(e, Error::Io(_) | Error::Cancelled(_) | Error::Interrupted(_)) => {
                    log::warn!("{repo}: layer {} ({}): {e}", key.1, format.name());
                    sync::lock(&self.failed).put(key.clone(), (Instant::now(), e.clone()));
                }
                Err(_) => {}
            }
            built
        })
    }

    /// [`Lazy::layer`] if it is in memory now; never a fetch.
    pub fn layer_now(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> Option<Arc<LazyLayer>> {
        if !self.config.enabled {
            return None;
        }
        let (key, _, _) = self.key(repo, doc, n).ok()??;
        sync::lock(&self.layers).get(&key).cloned()
    }

    /// True when no layer this run has named a TOC yet (or lazy reading is off): every layer is
    /// read whole, whatever the manifest (a manifest not yet read names none this run has seen;
    /// before its layers are used, it is read, and [`Lazy::layer`] or [`Lazy::check_whole`]
    /// sees its TOCs). Lock-free: for the inline paths of every lookup.
    pub fn reads_whole_now(&self) -> bool {
        !self.config.enabled || !self.any.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether layer `n` of `doc` is read whole (it names no TOC, or Range is not honoured, or
    /// lazy reading is off) as far as is known now.
    pub fn reads_whole(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> bool {
        match self.key(repo, doc, n) {
            Ok(Some((key, _, _))) => !self.config.enabled || sync::lock(&self.whole).contains(&key),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    fn build(&self, key: &Key, d: &Descriptor, format: Format) -> Result<Option<Arc<LazyLayer>>> {
        let (repo, blob, toc_digest, _) = key;
        let what = format!("layer {blob} of {repo}");
        let size = d.size.ok_or_else(|| Error::malformed(&what, "no size"))?;
        // A layer made again (after it left `layers`) counts on where it left off.
        let counters = sync::lock(&self.seen).peek(key).map(|s| Arc::clone(&s.counters)).unwrap_or_default();
        let store = &self.shared.store;
        let range = |start: u64, end: u64| fetch_range(store, &counters, repo, blob, size, start, end);
        if format == Format::Soci {
            let Some(z) = soci::ztoc(store, repo, toc_digest, blob, size, self.limits)? else { return Ok(None) };
            return Ok(Some(self.made(key, size, format, z.toc, Codec::Zran, Some(Arc::new(z.spans)), counters)));
        }
        let (json, codec, data_end) = match format {
            Format::Estargz => {
                let tail_start = size.saturating_sub(estargz::TAIL);
                if size < estargz::LEGACY_FOOTER {
                    return Err(Error::malformed(&what, format!("{size} bytes: too short for an eStargz footer")));
                }
                let Some(tail) = range(tail_start, size)? else { return Ok(None) };
                let (toc_at, footer) =
                    estargz::footer(&tail).ok_or_else(|| Error::malformed(&what, "no eStargz footer"))?;
                let footer_at = size - footer;
                if toc_at >= footer_at {
                    return Err(Error::malformed(
                        &what,
                        format!("its footer puts the TOC at {toc_at}, outside the blob's data"),
                    ));
                }
                if footer_at - toc_at > limits::MAX_TOC_BYTES as u64 {
                    return Err(Error::TooLarge(format!("{what}: a TOC of {} bytes", footer_at - toc_at)));
                }
                let in_tail = (footer_at - tail_start) as usize;
                let member = if toc_at >= tail_start {
                    tail[(toc_at - tail_start) as usize..in_tail].to_vec()
                } else {
                    let Some(mut head) = range(toc_at, tail_start)? else { return Ok(None) };
                    head.extend_from_slice(&tail[..in_tail]);
                    head
                };
                (estargz::toc_json(&member, toc_digest, &what)?, Codec::Gzip, toc_at)
            }
            Format::Soci => return Err(Error::Io(format!("{what}: a SOCI layer has no TOC of its own"))),
            Format::ZstdChunked => {
                let position = d
                    .lazy_annotation(zstd_chunked::POSITION)
                    .ok_or_else(|| Error::malformed(&what, "a zstd:chunked checksum without its position"))?;
                let p = zstd_chunked::position(position, size)?;
                let Some(frame) = range(p.offset, p.offset + p.compressed)? else { return Ok(None) };
                (zstd_chunked::toc_json(&frame, toc_digest, &p, &what)?, Codec::Zstd, p.data_end())
            }
        };
        let toc = toc::parse(&json, codec, data_end, self.limits, &what)?;
        Ok(Some(self.made(key, size, format, toc, codec, None, counters)))
    }

    #[allow(clippy::too_many_arguments)]
    fn made(
        &self,
        key: &Key,
        size: u64,
        format: Format,
        toc: toc::Toc,
        codec: Codec,
        spans: Option<Arc<ztoc::Spans>>,
        counters: Arc<LayerCounters>,
    ) -> Arc<LazyLayer> {
        let (repo, blob, toc_digest, _) = key;
        Arc::new(LazyLayer {
            repo: repo.clone(),
            blob: blob.clone(),
            size,
            format,
            toc_digest: toc_digest.clone(),
            index: Arc::new(toc.index),
            files: toc.files,
            prefetch: toc.prefetch,
            spans,
            codec,
            shared: Arc::clone(&self.shared),
            counters,
            images: sync::lock(&self.seen).peek(key).map(|s| Arc::clone(&s.images)).unwrap_or_default(),
        })
    }

    /// Layer `n` of `doc` was verified whole (its decoded tar `tar` hashed to its diff_id, and
    /// indexed as `tar_index`): if it names a TOC, check the two agree, once per run, and poison
    /// the layer if they do not. Its TOC is read if it was not yet (from the blob, now cached
    /// whole, when the cache held it: no request).
    pub fn check_whole(&self, repo: &str, doc: &VerifiedManifest, n: usize, tar_index: &LayerIndex, tar: &Content) {
        let Ok(Some((key, _, _))) = self.key(repo, doc, n) else { return };
        if !self.config.enabled || sync::lock(&self.checked).contains(&key) {
            return;
        }
        let layer = match self.layer(repo, doc, n) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                log::info!(
                    "{repo}: layer {} verified whole; its TOC was refused ({e}), so nothing of it is read lazily",
                    key.1
                );
                return;
            }
        };
        sync::lock(&self.checked).put(key.clone(), ());
        match check::against_tar(&layer, tar_index, tar) {
            check::Outcome::Agrees => log::info!("{repo}: layer {} verified whole; its TOC agrees with its tar", key.1),
            check::Outcome::Disagrees(why) => self.poison(&key.1, &key.2, &why),
            check::Outcome::Unchecked(why) => {
                log::info!("{repo}: layer {} verified whole; its TOC not checked against it ({why})", key.1);
                sync::lock(&self.checked).pop(&key);
            }
        }
    }

    /// From now on, serve no file of lazy layer `blob` read by TOC `toc`: its tar disagrees.
    pub fn poison(&self, blob: &Digest, toc: &Digest, why: &str) {
        log::error!(
            "layer {blob} (TOC {toc}): its tar disagrees with its TOC ({why}); its lazily served files are EIO from now on"
        );
        sync::lock(&self.shared.poisoned).insert((blob.clone(), toc.clone()), why.to_string());
    }

    /// Every lazy layer made this run (the most recent first), with what it cost, and why it is
    /// poisoned if it is.
    pub fn report(&self) -> Vec<LayerReport> {
        let poisoned = sync::lock(&self.shared.poisoned).clone();
        sync::lock(&self.seen)
            .iter()
            .map(|((repo, blob, toc, _), l)| LayerReport {
                repo: repo.clone(),
                blob: blob.to_string(),
                format: l.format,
                toc: toc.to_string(),
                size: l.size,
                entries: l.entries,
                images: sync::lock(&l.images).iter().map(Digest::to_string).collect(),
                stats: l.counters.snapshot(),
                poisoned: poisoned.get(&(blob.clone(), toc.clone())).cloned(),
            })
            .collect()
    }

    /// Bytes of verified chunks held in memory now.
    pub fn chunk_bytes(&self) -> usize {
        self.shared.chunks.bytes()
    }
}

/// One lazy layer in the status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub repo: String,
    pub blob: String,
    pub format: Format,
    pub toc: String,
    pub size: u64,
    pub entries: usize,
    /// The images that read it lazily (the first 8): each image's layers read lazily are the
    /// entries that name it.
    pub images: Vec<String>,
    #[serde(flatten)]
    pub stats: LayerStats,
    pub poisoned: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::core::{Builder, GZIP};
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;
    use crate::testkit::fixtures::{estargz, tricky};

    /// An OCI image of `n` eStargz layers, each with one file; the store and the manifest.
    fn image(n: usize) -> (Arc<Store>, Arc<VerifiedManifest>) {
        let bare = Builder::over(Arc::new(Faulty::new(Fake::default()))).bare();
        let built: Vec<estargz::Built> = (0..n)
            .map(|i| {
                let entries = [tricky::file(&format!("f{i}"), "data\n")];
                estargz::estargz(&entries, &estargz::Options::default()).expect("eStargz")
            })
            .collect();
        let layers: Vec<serde_json::Value> = built
            .iter()
            .map(|b| {
                let d = bare.fake.add_blob(&b.blob);
                serde_json::json!({"mediaType": GZIP, "digest": d.to_string(), "size": b.blob.len(), "annotations": b.annotations})
            })
            .collect();
        let ids: Vec<String> = built.iter().map(|b| b.diff_id.to_string()).collect();
        let config = serde_json::to_vec(
            &serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}}),
        )
        .expect("config");
        let cfg = bare.fake.add_blob(&config);
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
            "layers": layers,
        });
        let body = serde_json::to_vec(&m).expect("manifest");
        let digest = bare.fake.put_manifest(
            "r",
            Some("v1"),
            crate::media::OCI_MANIFEST,
            &body,
            crate::digest::Algorithm::Sha256,
        );
        let doc = bare.store.manifest("r", &digest).expect("the manifest");
        (bare.store, doc)
    }

    /// The cross-check of a SOCI layer reads its spans from the verified blob in the cache: a
    /// blob that is not there is no proof either way, and a registry that no longer honours
    /// `Range` (or fails) then must not poison an honest layer.
    #[test]
    fn a_soci_cross_check_without_the_blob_at_hand_poisons_nothing() {
        use crate::testkit::fixtures::soci;
        let bare = Builder::over(Arc::new(Faulty::new(Fake::default()))).bare();
        let entries = [tricky::dir("d/"), tricky::file("d/f", "data\n")];
        let b =
            soci::layer(&entries, &soci::Options { span_size: 1 << 10, ..soci::Options::default() }).expect("layer");
        let blob = bare.fake.add_blob(&b.blob);
        let ztoc = soci::Doc::of(&b).bytes();
        let z = bare.fake.add_blob(&ztoc);
        let cfg = bare.fake.add_blob(b"{}");
        let index = soci::index_manifest(&cfg, &[(z, ztoc.len(), blob.clone(), GZIP)]);
        let alg = crate::digest::Algorithm::Sha256;
        let index = bare.fake.put_manifest("r", None, crate::media::OCI_MANIFEST, &index, alg);
        let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [b.diff_id.to_string()]}}))
        .expect("config");
        let cd = bare.fake.add_blob(&config);
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": GZIP, "digest": blob.to_string(), "size": b.blob.len()}],
            "annotations": {soci::INDEX_DIGEST: index.to_string()}});
        let body = serde_json::to_vec(&m).expect("manifest");
        let digest = bare.fake.put_manifest("r", Some("v1"), crate::media::OCI_MANIFEST, &body, alg);
        let doc = bare.store.manifest("r", &digest).expect("the manifest");
        let lazy = Lazy::new(Arc::clone(&bare.store), LazyConfig::default(), IndexLimits::default());
        let layer = lazy.layer("r", &doc, 0).expect("a zTOC").expect("read lazily");
        assert_eq!(layer.format, Format::Soci);
        bare.fake.ignore_range();
        let limits = crate::views::tar::TarLimits::default();
        let tar_index = crate::views::index::build_all(&b.tar[..], limits, IndexLimits::default()).expect("index");
        lazy.check_whole("r", &doc, 0, &tar_index, &Content::Memory(Arc::new(b.tar.clone())));
        let report = lazy.report();
        assert!(report.iter().all(|r| r.poisoned.is_none()), "{report:?}");
    }

    /// The layers kept are at most `LazyConfig::layers`: the status's list of every layer read
    /// this run keeps what it reports, not the layers (their indexes and chunk tables).
    #[test]
    fn layers_past_the_bound_are_dropped_and_still_reported() {
        let (store, doc) = image(4);
        let lazy = Lazy::new(store, LazyConfig { layers: 1, ..LazyConfig::default() }, IndexLimits::default());
        let weak: Vec<std::sync::Weak<LazyLayer>> = (0..4)
            .map(|n| {
                let l = lazy.layer("r", &doc, n).expect("a TOC").expect("read lazily");
                Arc::downgrade(&l)
            })
            .collect();
        let alive = weak.iter().filter(|w| w.upgrade().is_some()).count();
        assert_eq!(alive, 1, "one layer kept, as configured");
        let report = lazy.report();
        assert_eq!(report.len(), 4, "every layer read this run is reported");
        assert!(report.iter().all(|r| r.entries == 2 && r.stats.ranges >= 1), "{report:?}");
    }
}
