//! [`Views`]: a manifest's layer, decoded and verified, as a file in the cache.
//!
//! A layer of a Docker schema2 or OCI image manifest is decoded, hashed as it is decoded, and
//! kept under `decoded/` by its diff_id only if it hashes to the config's `rootfs.diff_ids[n]`
//! (the config being a blob verified by its digest). A schema1 layer has no diff_id anywhere:
//! its decoded stream is trusted as a function of its blob, verified by `blobSum`, and kept under
//! `decoded-from/` by the blob's digest; it is trusted only as derived by this run, so the first
//! use in each run decodes the blob again ([`Target::From`] says why). One decode per diff_id at a time (the cache's single
//! flight), shared by every image that has the layer.
//!
//! # One pass per layer ([`Views::materialise`])
//! blob → decoder → [`Tee`] (sha256, the cache's temporary file, charge, cancellation) → tar
//! parser → index builder; what follows the tar's end is drained through the tee, so the hash
//! covers it. The decoded file is committed (renamed into `decoded/`) only if it verifies, and
//! its index right after it into `index/` (`RGFSIDX1`, sha256 trailer), by the same key: the
//! diff_id, or for schema1 the blob's digest (the index then records the digest the stream
//! hashed to). A tar that does not parse still gives its verified `layers/<n>.tar`; the parse
//! failure is kept in memory as that layer's index error. An uncompressed layer is its own
//! decoded tar: its blob, whose digest must be the diff_id (hashed again with the diff_id's
//! algorithm if they differ), is indexed in one pass over the blob. Indexes are kept in memory
//! within [`ViewsConfig::index_memory`], least recently used first out.
//!
//! # Which index is trusted
//! Only one this run built from a verified tar. The index alone decides what `rootfs/` shows
//! besides a regular file's bytes (symlink targets, modes and setuid bits, owners, xattrs,
//! devices, hard links), and a local user can rewrite any file of the cache between runs; a
//! sha256 trailer, or the diff_id the file records, is no defence (anyone can recompute them).
//! So an `index/` file an earlier run left is never read: after a remount, the decoded tar
//! left in `decoded/` is hashed again before use anyway ([`BlobCache::open_derived`]'s check),
//! and that same pass parses and indexes it (`materialise_now`'s `check`): a remount costs
//! one read of each decoded tar, no decode and no download. With the decoded tar gone, the
//! layer is decoded again from its blob (indexed in the same pass). Index files are still
//! written: within a run, an index the memory LRU let go is read back from `index/` instead
//! of parsing the tar again, but only one this run wrote, or found equal byte for byte to the
//! one it built (`commit_index`; any other file there is replaced by ours, so a planted file
//! never becomes "verified by this process").
//!
//! [`BlobCache::open_derived`]: crate::store::cache::BlobCache::open_derived

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lru::LruCache;

use super::bounds::ViewsConfig;
use super::config;
use super::decode::{self, Local, Tee};
use super::index::{self, LayerIndex};
use super::tar::{Parser, TarLimits};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits;
use crate::manifest::{Kind as ManifestKind, Manifest};
use crate::media;
use crate::store::cache::{Kind, hash_file};
use crate::store::flight::SingleFlight;
use crate::store::{Content, Store, VerifiedManifest};
use crate::sync;

crate::telemetry::counters! {
    /// What views have done, for tests and the log.
    pub struct ViewsStats;
    /// Lock-free counters behind [`ViewsStats`], kept by [`Views`].
    pub struct ViewsCounters {
        /// Layers decoded (each a full pass over a blob, indexed in the same pass).
        decodes,
        /// Configs fetched and parsed for their diff_ids.
        configs,
        /// Indexes built by a pass over a decoded tar (or an uncompressed blob) rather than by a
        /// decode: after a restart, in the pass that hashes the decoded tar again; for an
        /// uncompressed layer; or for a tar this run has verified whose index it let go.
        index_passes,
        /// Indexes read back from `index/` (only files this run wrote or checked against its own).
        indexes_read,
    }
}

/// A layer ready for `rootfs/`: its verified decoded tar, and its index (or why it has none).
#[derive(Clone)]
pub struct Materialised {
    pub content: Content,
    pub index: Result<Arc<LayerIndex>>,
}

/// What is known in memory of a layer's index, by its key.
#[derive(Clone)]
enum Known {
    /// The index.
    Index(Arc<LayerIndex>),
    /// The decoded tar verified but did not parse (or passed a bound): never a local error,
    /// which is returned and not remembered (`commit_index`).
    Failed(Error),
}

impl Known {
    fn weight(&self) -> usize {
        match self {
            Known::Index(i) => 128 + i.weight(),
            Known::Failed(_) => 256,
        }
    }
}

struct Indexes {
    lru: LruCache<MemKey, Known>,
    bytes: usize,
}

struct Configs {
    lru: LruCache<Digest, Arc<Vec<Digest>>>,
    bytes: usize,
}

pub struct Views {
    store: Arc<Store>,
    /// The mount's bounds (`--index-memory`, `--layer-entries`, `--layer-index-size`).
    config: ViewsConfig,
    configs: Mutex<Configs>,
    config_flights: SingleFlight<(String, Digest), Arc<Vec<Digest>>>,
    indexes: Mutex<Indexes>,
    /// One materialisation per layer key at a time; `true` when the decoded tar is wanted too
    /// (an index alone may come from `index/` without it).
    layer_flights: SingleFlight<(MemKey, bool), Materialised>,
    counters: ViewsCounters,
    /// The last [`ViewsConfig::decodes_kept`] decodes' start and end.
    intervals: Mutex<std::collections::VecDeque<(Instant, Instant)>>,
    /// Decodes that failed this run, by (blob digest, what the stream had to be: the diff_id,
    /// or for schema1 the blob again): a wrong diff_id, a stream that does not decode, a bomb.
    /// The failure is a function of the verified blob and the diff_id (checked: the blob is
    /// hashed again first; local errors are never kept), so it is kept for the run (at most [`ViewsConfig::failed_decodes`], in memory only) and the next `cat` or `ls` is `EIO` at
    /// once instead of decoding the whole blob again. Never by one digest alone: a hostile
    /// manifest pairing an honest diff_id with another blob must not fail the honest image.
    failed: Mutex<LruCache<(Digest, Digest), Error>>,
    /// Schema1 layers decoded this run: blob digest → the sha256 of the decoded stream (see
    /// [`Target::From`]). At most [`ViewsConfig::schema1_derived`]; one forgotten is decoded again.
    derived: Mutex<LruCache<Digest, Digest>>,
    /// The decoded tars `ready` handed out last, kept open ([`ViewsConfig::held_decoded_files`]).
    held: Mutex<LruCache<Digest, Arc<std::fs::File>>>,
    /// Layers read by chunks.
    lazy: super::lazy::Lazy,
}

/// Whether layer `n` of `m` has a decoded view (`<n>.tar`): an image manifest's (schema2, OCI,
/// schema1) gzip or zstd layer of an image-layer media type. An uncompressed layer already is a
/// tar; artifacts (a Helm chart's `…tar+gzip` included) get none.
pub fn has_view(m: &Manifest, n: usize) -> bool {
    let Some((_, d)) = m.layers.get(n) else { return false };
    let image = m.kind.is_image();
    let mt = media::bare(&d.media_type);
    let layer_type =
        mt.starts_with("application/vnd.oci.image.layer.") || mt.starts_with("application/vnd.docker.image.rootfs.");
    image && layer_type && matches!(media::layer_extension(&mt), ".tar.gz" | ".tar.zst")
}

/// A layer's key in memory: whether it is a schema1 blob's digest, and the digest.
type MemKey = (bool, Digest);

/// A layer's decoded tar: decoded into the cache, or its own blob.
#[derive(Debug, Clone)]
enum Source {
    Decoded(Target),
    /// An uncompressed layer: the blob, whose digest must be this diff_id.
    Plain(Digest),
}

impl Source {
    /// Its key in memory (indexes, flights): the index key, and whether it is a schema1 blob's
    /// digest. A blob digest and a diff_id can be the same digest (a hostile manifest naming a
    /// schema1 layer's gzip blob as an uncompressed layer whose diff_id is that blob's digest):
    /// one must never take the other's index, or its failure.
    fn mem_key(&self) -> MemKey {
        (matches!(self, Source::Decoded(Target::From(_))), self.index_key().clone())
    }

    /// The key of its index in `index/`.
    fn index_key(&self) -> &Digest {
        match self {
            Source::Decoded(t) => t.key(),
            Source::Plain(d) => d,
        }
    }
}

/// Where a layer's decoded file is kept, and what it must hash to.
#[derive(Debug, Clone)]
enum Target {
    /// By the config's diff_id, which the decoded stream must hash to.
    DiffId(Digest),
    /// Schema1: by the blob's digest; trusted as a function of the verified blob, and only as
    /// derived from it by this run.
    ///
    /// Nothing an earlier run left can tie a decoded file to the blob: no digest of the decoded
    /// stream is published anywhere, and whatever regfs wrote beside it (the index's recorded
    /// digest, a keyed MAC with its key) a local user able to plant the file could plant or
    /// read too. So `decoded-from/` and a schema1 `index/` file are trusted only once this run
    /// has decoded the blob and knows the stream's sha256 ([`Views`]'s `derived`): the first
    /// use in a run decodes the blob again (one pass, indexed on the way; schema1 images are
    /// legacy and rare), and later uses, or a file evicted from memory, are checked against
    /// that digest. Rejected alternatives: re-decoding and hashing to compare costs the same
    /// pass as re-deriving; a recorded digest is forgeable.
    From(Digest),
}

impl Target {
    fn kind(&self) -> Kind {
        match self {
            Target::DiffId(_) => Kind::Decoded,
            Target::From(_) => Kind::DecodedFrom,
        }
    }

    fn key(&self) -> &Digest {
        match self {
            Target::DiffId(d) | Target::From(d) => d,
        }
    }
}

impl Views {
    /// Views with the default bounds.
    pub fn new(store: Arc<Store>) -> Views {
        Views::with_config(store, ViewsConfig::default())
    }

    /// Views within the mount's bounds.
    pub fn with_config(store: Arc<Store>, config: ViewsConfig) -> Views {
        let lazy = super::lazy::Lazy::new(Arc::clone(&store), config.lazy, config.index_limits());
        Views {
            store,
            config,
            configs: Mutex::new(Configs { lru: LruCache::unbounded(), bytes: 0 }),
            config_flights: SingleFlight::default(),
            indexes: Mutex::new(Indexes { lru: LruCache::unbounded(), bytes: 0 }),
            layer_flights: SingleFlight::default(),
            counters: ViewsCounters::default(),
            intervals: Mutex::default(),
            failed: Mutex::new(LruCache::new(crate::capacity::nonzero(config.failed_decodes))),
            derived: Mutex::new(LruCache::new(crate::capacity::nonzero(config.schema1_derived))),
            held: Mutex::new(LruCache::new(crate::capacity::nonzero(config.held_decoded_files))),
            lazy,
        }
    }

    /// Layers read by chunks.
    pub fn lazy(&self) -> &super::lazy::Lazy {
        &self.lazy
    }

    /// The bounds these views keep.
    pub fn config(&self) -> &ViewsConfig {
        &self.config
    }

    /// The counts now. Relaxed: read them after whatever did the work has returned (or its
    /// thread has been joined).
    pub fn stats(&self) -> ViewsStats {
        self.counters.snapshot()
    }

    /// Layer `n` of manifest `manifest` of `repo`, decoded and verified: an open file of the
    /// cache, decoded (and indexed in the same pass) first if need be. Only for layers with a
    /// decoded view ([`has_view`]). Read it with `read_at` (the descriptor is shared).
    pub fn decoded(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<File>> {
        let doc = self.store.manifest(repo, manifest)?;
        if !has_view(&doc.manifest, n) {
            return Err(Error::NotFound(format!("{repo}@{manifest}: layer {n} has no decoded view")));
        }
        match self.materialise(repo, manifest, n)?.content {
            Content::File(f) => Ok(f),
            _ => Err(Error::Io(format!("{repo}@{manifest}: layer {n}: a decoded layer is a file"))),
        }
    }

    /// Layer `n`'s verified decoded tar, any layer of an image: the decoded file of a gzip or
    /// zstd layer, the blob itself of an uncompressed one (its digest checked against the
    /// diff_id).
    pub fn decoded_content(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Content> {
        Ok(self.materialise(repo, manifest, n)?.content)
    }

    /// Layer `n`'s index: from memory, else from `index/` if this run wrote it (without
    /// touching the tar), else by materialising the layer (one pass over the decoded tar, or a
    /// decode). One per layer at a time.
    pub fn index(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<LayerIndex>> {
        let doc = self.store.manifest(repo, manifest)?;
        let source = self.source(repo, &doc, n)?;
        let key = source.mem_key();
        if let Some(known) = self.known(&key) {
            return known_index(known);
        }
        let ready = self.layer_flights.run(&(key.clone(), false), || {
            if let Some(known) = self.known(&key) {
                return Ok(Materialised { content: Content::Memory(Arc::default()), index: known_index(known) });
            }
            if let Some((_, index)) = self.index_from_disk(&source)? {
                self.remember(&key, Known::Index(Arc::clone(&index)));
                return Ok(Materialised { content: Content::Memory(Arc::default()), index: Ok(index) });
            }
            self.materialise(repo, manifest, n)
        })?;
        ready.index
    }

    /// Layer `n`'s verified decoded tar and its index, making them if need be: decoded,
    /// hashed, parsed and indexed in one pass, the decoded file and the index committed
    /// together. A tar that does not parse is still a verified tar: its index is the error.
    pub fn materialise(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Materialised> {
        let doc = self.store.manifest(repo, manifest)?;
        let source = self.source(repo, &doc, n)?;
        let key = source.mem_key();
        let m = self.layer_flights.run(&(key.clone(), true), || self.materialise_now(repo, &doc, n, &source))?;
        // The two views of a layer read by chunks must be one (`lazy::check`).
        if let Ok(index) = &m.index {
            self.lazy.check_whole(repo, &doc, n, index, &m.content);
        }
        Ok(m)
    }

    fn materialise_now(&self, repo: &str, doc: &VerifiedManifest, n: usize, source: &Source) -> Result<Materialised> {
        let key = &source.mem_key();
        let mut known = self.known(key);
        if known.is_none() {
            known = self.index_from_disk(source)?.map(|(_, i)| Known::Index(i));
        }
        let stash: Stash = Mutex::new(None);
        let want_index = known.is_none();
        let content = match source {
            Source::Plain(diff_id) => self.plain(repo, doc, n, diff_id)?,
            Source::Decoded(target) => {
                // A decoded tar an earlier run left is hashed again before use; when no index is
                // at hand, that same pass parses and indexes it (no index file an earlier run
                // left is trusted: `index_from_disk`), so a remount costs one read of the tar.
                let check = |f: &mut File| {
                    let Some(want) = self.expected(source) else {
                        return Err(Error::Io("a schema1 layer is trusted only as decoded by this run".into()));
                    };
                    if !want_index {
                        return hash_file(f, &want, self.config.chunk);
                    }
                    let read = std::io::BufReader::with_capacity(self.config.chunk, &*f);
                    let (len, actual, built) = self.hash_and_index(read, want.algorithm())?;
                    if actual != want {
                        return Err(Error::DigestMismatch {
                            what: "cached decoded layer".into(),
                            expected: want.to_string(),
                            actual: actual.to_string(),
                        });
                    }
                    self.counters.index_passes.bump();
                    *sync::lock(&stash) = Some((actual, built));
                    Ok(len)
                };
                let produce = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| {
                    self.decode(repo, doc, n, target, out, hook, want_index.then_some(&stash))
                };
                let cache = self.store.blob_cache();
                let file = cache.open_derived(target.kind(), target.key(), &check, &produce).inspect_err(|e| {
                    if matches!(e, Error::TooLarge(_)) {
                        log::warn!("{repo}@{}: layer {n} decodes past the cache size, refused: {e}", doc.digest);
                    }
                })?;
                Content::File(file)
            }
        };
        let index = match known {
            Some(k) => known_index(k),
            None => {
                let (diff_id, built) = match sync::lock(&stash).take() {
                    Some(made) => made,
                    None => self.index_pass(source, &content)?,
                };
                self.commit_index(repo, doc, n, source, diff_id, built).and_then(|known| {
                    self.remember(key, known.clone());
                    known_index(known)
                })
            }
        };
        Ok(Materialised { content, index })
    }

    /// An uncompressed layer's blob, checked to be its diff_id.
    fn plain(&self, repo: &str, doc: &VerifiedManifest, n: usize, diff_id: &Digest) -> Result<Content> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        let content = self.store.blob(repo, &layer.digest, layer.size)?;
        let actual = if layer.digest.algorithm() == diff_id.algorithm() {
            layer.digest.clone()
        } else {
            let mut h = Hasher::new(diff_id.algorithm());
            let mut r = reader(content.clone())?;
            let mut buf = vec![0u8; self.config.chunk.max(1)];
            loop {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
            }
            h.finish()
        };
        if &actual != diff_id {
            log::warn!(
                "{repo}@{}: uncompressed layer {n} ({}) is {actual}, but the config's rootfs.diff_ids[{n}] is {diff_id}; refused",
                doc.digest,
                layer.digest
            );
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {n} ({}) of {repo}@{}", layer.digest, doc.digest),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(content)
    }

    /// One pass over a verified decoded tar only to index it (hashing it on the way, for the
    /// diff_id a schema1 index records).
    fn index_pass(&self, source: &Source, content: &Content) -> Result<(Digest, Result<LayerIndex>)> {
        self.counters.index_passes.bump();
        let alg = match source {
            Source::Decoded(Target::DiffId(d)) | Source::Plain(d) => d.algorithm(),
            Source::Decoded(Target::From(_)) => Algorithm::Sha256,
        };
        let (_, digest, built) = self.hash_and_index(reader(content.clone())?, alg)?;
        let diff_id = match source {
            Source::Decoded(Target::DiffId(d)) | Source::Plain(d) => d.clone(),
            Source::Decoded(Target::From(_)) => digest,
        };
        Ok((diff_id, built))
    }

    /// Read a verified decoded tar (a cache file: its read errors are local, [`Local`]) to its
    /// end, hashing every byte with `alg` and indexing it within the mount's bounds: its length,
    /// digest and index. The one pass both a remount's check and [`Views::index_pass`] make.
    fn hash_and_index(&self, tar: impl Read, alg: Algorithm) -> Result<(u64, Digest, Result<LayerIndex>)> {
        let mut hook = |_| Ok(());
        tee_index(Local(tar), std::io::sink(), alg, &mut hook, &self.config)
    }

    /// Keep a built index in `index/` (a failure to write it is only logged: it is in memory),
    /// or log why there is none.
    fn commit_index(
        &self,
        repo: &str,
        doc: &VerifiedManifest,
        n: usize,
        source: &Source,
        diff_id: Digest,
        built: Result<LayerIndex>,
    ) -> Result<Known> {
        let index = match built {
            Ok(i) => i,
            // The tar (verified: it hashed to `diff_id`) does not parse, or passes a bound: a
            // function of its content, kept as the layer's index error.
            Err(e @ (Error::Malformed { .. } | Error::TooLarge(_))) => {
                log::warn!("{repo}@{}: layer {n} ({diff_id}) has no index: {e}", doc.digest);
                return Ok(Known::Failed(e));
            }
            // A read of the stream failed under the parser (local I/O, cancellation): returned,
            // not remembered; the next access indexes the layer again.
            Err(e) => {
                log::warn!("{repo}@{}: layer {n} ({diff_id}) was not indexed this time: {e}", doc.digest);
                return Err(e);
            }
        };
        let bytes = index::encode(&index, &diff_id);
        log::debug!("index of {diff_id}: {} entries, {} bytes", index.len(), index.weight());
        // A file already there (an earlier run's, or planted) is kept only if it is, byte for
        // byte, the index this run built from the verified tar: else it is removed and ours
        // written. Accepting it on its trailer would make a planted index "verified by this
        // process", and `index_from_disk` would then serve it.
        let check = |f: &mut File| {
            if read_file(f, self.max_index_file())? == bytes {
                Ok(bytes.len() as u64)
            } else {
                Err(Error::malformed("layer index file", "not the index this run built from the verified tar"))
            }
        };
        let produce = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| {
            hook(bytes.len() as u64)?;
            std::io::Write::write_all(out, &bytes)?;
            Ok(bytes.len() as u64)
        };
        if let Err(e) = self.store.blob_cache().open_derived(Kind::Index, source.index_key(), &check, &produce) {
            log::warn!("{repo}@{}: the index of layer {n} ({diff_id}) is not kept on disk: {e}", doc.digest);
        }
        Ok(Known::Index(Arc::new(index)))
    }

    /// The index this run kept in `index/` (written, or found equal to the one it built from
    /// the verified tar: [`Views::commit_index`]), if the cache still holds it: an index
    /// evicted from memory is read back without another pass over the tar. An index file an
    /// earlier run left is never used, whatever its trailer says: a local user can rewrite any
    /// file of the cache between runs, and the index alone decides symlink targets, modes,
    /// owners and xattrs of `rootfs/`; the caller builds the index from the verified tar.
    fn index_from_disk(&self, source: &Source) -> Result<Option<(Digest, Arc<LayerIndex>)>> {
        // A schema1 index is trusted only once this run has derived the layer from its blob.
        let Some(expected) = self.expected(source) else { return Ok(None) };
        let Some(file) = self.store.blob_cache().open_verified(Kind::Index, source.index_key())? else {
            return Ok(None);
        };
        let found = decode_index(&read_file(&file, self.max_index_file())?, Some(&expected))?;
        self.counters.indexes_read.bump();
        Ok(Some((found.0, Arc::new(found.1))))
    }

    /// Layer `n`'s index if it is in memory now, with the manifest and config that name it:
    /// never a request, a read of a file or a decode, so a caller may answer inline. `None`:
    /// not at hand (then [`Views::index`] gets it, and may wait). A layer whose index failed
    /// is that failure.
    pub fn index_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Result<Arc<LayerIndex>>> {
        let doc = self.store.manifest_now(repo, manifest)?;
        let ids = match doc.manifest.config.as_ref() {
            Some(config) => sync::lock(&self.configs).lru.peek(&config.digest).cloned(),
            None => None,
        };
        let source = match self.source_by(repo, &doc, n, || {
            ids.ok_or_else(|| Error::NotAtHand(format!("the config of {repo}@{manifest}")))
        }) {
            Ok(source) => source,
            Err(Error::NotAtHand(_)) => return None,
            Err(e) => return Some(Err(e)),
        };
        self.known(&source.mem_key()).map(known_index)
    }

    /// Layer `n` of `doc` (a manifest at hand) if its index and decoded tar are both ready
    /// now: in memory, and verified by this process. Never a request, a decode or a hash, so
    /// a caller may answer inline.
    pub fn ready(&self, doc: &VerifiedManifest, n: usize) -> Option<(Arc<LayerIndex>, Content)> {
        let (_, layer) = doc.manifest.layers.get(n)?;
        let cache = self.store.blob_cache();
        let view = has_view(&doc.manifest, n);
        let (key, kind, file_key) = if doc.manifest.kind == ManifestKind::DockerSchema1 {
            ((true, layer.digest.clone()), Kind::DecodedFrom, layer.digest.clone())
        } else {
            let config = doc.manifest.config.as_ref()?;
            let ids = sync::lock(&self.configs).lru.peek(&config.digest).cloned()?;
            let id = ids.get(n)?.clone();
            if view {
                ((false, id.clone()), Kind::Decoded, id)
            } else {
                ((false, id), Kind::Blob, layer.digest.clone())
            }
        };
        let Some(Known::Index(index)) = sync::lock(&self.indexes).lru.get(&key).cloned() else { return None };
        let file = cache.open_verified(kind, &file_key).ok()??;
        // Kept open: the next file of this layer finds it shared (no open, check or close).
        sync::lock(&self.held).put(file_key, Arc::clone(&file));
        Some((index, Content::File(file)))
    }

    /// When each of the last [`ViewsConfig::decodes_kept`] decodes started and ended (for tests of
    /// parallel decoding).
    pub fn decode_intervals(&self) -> Vec<(Instant, Instant)> {
        sync::lock(&self.intervals).iter().copied().collect()
    }

    /// What `source`'s decoded stream hashes to, as far as this run knows: the diff_id, or
    /// for schema1 the digest this run's decode of the blob gave (`None` before that).
    fn expected(&self, source: &Source) -> Option<Digest> {
        match source {
            Source::Decoded(Target::DiffId(d)) | Source::Plain(d) => Some(d.clone()),
            Source::Decoded(Target::From(blob)) => sync::lock(&self.derived).get(blob).cloned(),
        }
    }

    /// Bytes an index file may have: the index bound and some room.
    fn max_index_file(&self) -> u64 {
        self.config.layer_index_size as u64 + limits::INDEX_FILE_SLACK
    }

    fn known(&self, key: &MemKey) -> Option<Known> {
        sync::lock(&self.indexes).lru.get(key).cloned()
    }

    fn remember(&self, key: &MemKey, known: Known) {
        let mut c = sync::lock(&self.indexes);
        let w = known.weight();
        if let Some(old) = c.lru.put(key.clone(), known) {
            c.bytes -= old.weight();
        }
        c.bytes += w;
        while c.bytes > self.config.index_memory && c.lru.len() > 1 {
            let Some((_, old)) = c.lru.pop_lru() else { break };
            c.bytes -= old.weight();
        }
    }

    /// The length of layer `n`'s decoded file if this process has it verified, without any
    /// request or decode (`None`: not known yet).
    pub fn decoded_len_if_known(&self, doc: &VerifiedManifest, n: usize) -> Option<u64> {
        let (_, layer) = doc.manifest.layers.get(n)?;
        let cache = self.store.blob_cache();
        if doc.manifest.kind == ManifestKind::DockerSchema1 {
            return cache.derived_len(Kind::DecodedFrom, &layer.digest);
        }
        let config = doc.manifest.config.as_ref()?;
        let ids = sync::lock(&self.configs).lru.peek(&config.digest).cloned()?;
        let id = ids.get(n)?;
        cache.derived_len(Kind::Decoded, id).or_else(|| {
            match sync::lock(&self.indexes).lru.peek(&(false, id.clone())) {
                Some(Known::Index(i)) => Some(i.decoded_len()),
                _ => None,
            }
        })
    }

    /// What layer `n`'s decoded tar is, and what it must hash to.
    fn source(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> Result<Source> {
        self.source_by(repo, doc, n, || self.diff_ids(repo, doc))
    }

    /// [`Views::source`] with the config's diff_ids from `diff_ids`, asked only if needed.
    fn source_by(
        &self,
        repo: &str,
        doc: &VerifiedManifest,
        n: usize,
        diff_ids: impl FnOnce() -> Result<Arc<Vec<Digest>>>,
    ) -> Result<Source> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        let view = has_view(&doc.manifest, n);
        if doc.manifest.kind == ManifestKind::DockerSchema1 && view {
            return Ok(Source::Decoded(Target::From(layer.digest.clone())));
        }
        let plain = media::layer_extension(&layer.media_type) == ".tar" && doc.manifest.kind.has_diff_ids();
        if !view && !plain {
            return Err(Error::NotFound(format!("{repo}@{}: layer {n} is not a tar", doc.digest)));
        }
        let ids = diff_ids()?;
        if ids.len() != doc.manifest.layers.len() {
            return Err(Error::malformed(
                format!("config of {repo}@{}", doc.digest),
                format!("{} diff_ids for {} layers", ids.len(), doc.manifest.layers.len()),
            ));
        }
        let id = ids.get(n).cloned().ok_or_else(|| Error::NotFound(format!("diff_id {n}")))?;
        Ok(if view { Source::Decoded(Target::DiffId(id)) } else { Source::Plain(id) })
    }

    /// The config's `rootfs.diff_ids`, fetched (verified) and parsed once per config.
    fn diff_ids(&self, repo: &str, doc: &VerifiedManifest) -> Result<Arc<Vec<Digest>>> {
        let config = doc
            .manifest
            .config
            .as_ref()
            .ok_or_else(|| Error::malformed(format!("manifest {repo}@{}", doc.digest), "no config"))?;
        if let Some(ids) = sync::lock(&self.configs).lru.get(&config.digest) {
            return Ok(Arc::clone(ids));
        }
        self.config_flights.run(&(repo.to_string(), config.digest.clone()), || {
            self.counters.configs.bump();
            let what = format!("{} of {repo}", config.digest);
            let bytes = read_bounded(self.store.blob(repo, &config.digest, config.size)?, limits::MAX_CONFIG, &what)?;
            let ids = Arc::new(config::diff_ids(&bytes, &what)?);
            let mut c = sync::lock(&self.configs);
            let weight = 64 + ids.iter().map(|d| 32 + d.hex().len()).sum::<usize>();
            if c.lru.put(config.digest.clone(), Arc::clone(&ids)).is_none() {
                c.bytes += weight;
            }
            while c.bytes > self.config.config_cache_bytes {
                let Some((_, old)) = c.lru.pop_lru() else { break };
                c.bytes -= 64 + old.iter().map(|d| 32 + d.hex().len()).sum::<usize>();
            }
            Ok(ids)
        })
    }

    /// Decode layer `n`'s blob into `out` through the tee (and, given `stash`, parse and index
    /// it in the same pass, leaving the index there); its length if it hashes right.
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        repo: &str,
        doc: &VerifiedManifest,
        n: usize,
        target: &Target,
        out: &mut File,
        hook: &mut dyn FnMut(u64) -> Result<()>,
        stash: Option<&Stash>,
    ) -> Result<u64> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        let pair = (layer.digest.clone(), target.key().clone());
        if let Some(e) = sync::lock(&self.failed).get(&pair).cloned() {
            log::debug!("{repo}@{}: layer {n} ({}) failed to decode earlier this run: {e}", doc.digest, layer.digest);
            return Err(e);
        }
        // Fetching the blob may fail for a while (the network): only what follows is kept.
        let blob = self.store.blob(repo, &layer.digest, layer.size)?;
        self.counters.decodes.bump();
        let decoded = self.decode_blob(repo, doc, n, target, blob.clone(), out, hook, stash);
        let Err(e) = decoded else { return decoded };
        // Remembered only if it is a function of the verified blob: a wrong diff_id, a stream
        // that does not decode, a bomb past a bound; and only once the blob's bytes are found
        // to be still the verified ones (a cached file altered or cut under the decode fails it
        // the same way). A local error (`Error::Io`: a read or write of the cache failed),
        // cancellation or anything else is returned, and the next access tries again.
        if !matches!(e, Error::DigestMismatch { .. } | Error::Malformed { .. } | Error::TooLarge(_)) {
            return Err(e);
        }
        match still_hashes_to(&blob, &layer.digest, self.config.chunk) {
            Ok(true) => {
                sync::lock(&self.failed).put(pair, e.clone());
                Err(e)
            }
            Ok(false) => {
                log::warn!(
                    "{repo}@{}: layer {n} ({}): the cached blob changed under the decode ({e})",
                    doc.digest,
                    layer.digest
                );
                self.store.blob_cache().discard(Kind::Blob, &layer.digest);
                Err(Error::Io(format!("the cached blob {} changed on disk during its decode: {e}", layer.digest)))
            }
            Err(local) => Err(Error::Io(format!("{e}; and the cached blob could not be read again: {local}"))),
        }
    }

    /// [`Views::decode`] once the blob is at hand.
    #[allow(clippy::too_many_arguments)]
    fn decode_blob(
        &self,
        repo: &str,
        doc: &VerifiedManifest,
        n: usize,
        target: &Target,
        blob: Content,
        out: &mut File,
        hook: &mut dyn FnMut(u64) -> Result<()>,
        stash: Option<&Stash>,
    ) -> Result<u64> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        let started = Instant::now();
        let _record = Interval { views: self, started };
        // Shown in `.regfs/status` while it runs, by the layer's blob digest, with the bytes decoded.
        let (activity, decode) = (self.store.blob_cache().activity(), crate::telemetry::Work::Decode);
        let _shown = activity.show(decode, repo, &layer.digest, None);
        let hook = &mut |n: u64| {
            activity.progress(decode, &layer.digest, n);
            hook(n)
        };
        let (_, decoder) = decode::decoder(Local(reader(blob)?))?;
        let alg = match target {
            Target::DiffId(d) => d.algorithm(),
            Target::From(_) => Algorithm::Sha256,
        };
        let (len, actual, built) = if stash.is_some() {
            tee_index(decoder, out, alg, hook, &self.config)?
        } else {
            let (len, actual) = Tee::new(decoder, out, alg, hook).finish(self.config.chunk)?;
            (len, actual, Err(Error::Io("not indexed".into())))
        };
        match target {
            Target::DiffId(expected) if &actual != expected => {
                log::warn!(
                    "{repo}@{}: layer {n} ({}) decodes to {actual}, but the config's rootfs.diff_ids[{n}] is {expected}; refused",
                    doc.digest,
                    layer.digest
                );
                Err(Error::DigestMismatch {
                    what: format!("layer {n} ({}) of {repo}@{} decoded", layer.digest, doc.digest),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            _ => {
                log::debug!("{repo}@{}: layer {n} ({}) decoded: {len} bytes, {actual}", doc.digest, layer.digest);
                if let Target::From(blob) = target {
                    sync::lock(&self.derived).put(blob.clone(), actual.clone());
                }
                if let Some(stash) = stash {
                    *sync::lock(stash) = Some((actual, built));
                }
                Ok(len)
            }
        }
    }
}

/// Read `decoded` through a tee into `out` while parsing and indexing it, then drain what
/// follows the tar's end through the tee: the length, the digest of every byte, and the index
/// (or why the tar did not parse; a failure of the stream itself is the outer error). Within
/// `config`'s index bounds, draining by its chunk.
fn tee_index<R: Read, W: std::io::Write>(
    decoded: R,
    out: W,
    alg: Algorithm,
    hook: &mut dyn FnMut(u64) -> Result<()>,
    config: &ViewsConfig,
) -> Result<(u64, Digest, Result<LayerIndex>)> {
    let mut tee = Tee::new(decoded, out, alg, hook);
    let built = {
        let mut parser = Parser::with_limits(&mut tee, TarLimits::default());
        index::build(&mut parser, config.index_limits())
    };
    let (len, digest) = tee.finish(config.chunk)?;
    Ok((len, digest, built.and_then(|b| b.finish(len))))
}

/// Records a decode's interval when it ends, however it ends.
struct Interval<'a> {
    views: &'a Views,
    started: Instant,
}

impl Drop for Interval<'_> {
    fn drop(&mut self) {
        let mut kept = sync::lock(&self.views.intervals);
        if kept.len() >= self.views.config.decodes_kept {
            kept.pop_front();
        }
        kept.push_back((self.started, Instant::now()));
    }
}

/// Where a decode leaves the index it built in the same pass: the diff_id the stream hashed to,
/// and the index or why the tar did not parse.
type Stash = Mutex<Option<(Digest, Result<LayerIndex>)>>;

fn known_index(known: Known) -> Result<Arc<LayerIndex>> {
    match known {
        Known::Index(i) => Ok(i),
        Known::Failed(e) => Err(e),
    }
}

/// An index file's bytes decoded and checked to be of the decoded stream `expected` (the
/// diff_id; for schema1 what this run's decode gave; `None`: nothing to trust it by yet).
fn decode_index(bytes: &[u8], expected: Option<&Digest>) -> Result<(Digest, LayerIndex)> {
    let (diff_id, index) = index::decode(bytes)?;
    match expected {
        Some(want) if &diff_id == want => Ok((diff_id, index)),
        Some(want) => Err(Error::malformed("layer index file", format!("for {diff_id}, not {want}"))),
        None => Err(Error::malformed("layer index file", "of a schema1 layer not decoded by this run")),
    }
}

/// A whole index file, at most `max` bytes.
fn read_file(f: &File, max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    At { file: Arc::new(f.try_clone()?), pos: 0 }.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::TooLarge(format!("layer index file of more than {max} bytes")));
    }
    Ok(bytes)
}

/// Whether `content` (a blob verified when it was fetched) still hashes to `digest`, read
/// `chunk` bytes at a time.
fn still_hashes_to(content: &Content, digest: &Digest, chunk: usize) -> Result<bool> {
    let mut h = Hasher::new(digest.algorithm());
    let mut r = reader(content.clone())?;
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => h.update(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(&h.finish() == digest)
}

/// A reader over verified blob content.
fn reader(content: Content) -> Result<Box<dyn Read>> {
    match content {
        Content::Memory(bytes) => Ok(Box::new(Mem { bytes, pos: 0 })),
        Content::File(file) => Ok(Box::new(At { file, pos: 0 })),
        _ => Err(Error::Io("a blob's content is neither in memory nor a file".into())),
    }
}

/// Reads shared bytes from the start.
struct Mem {
    bytes: Arc<Vec<u8>>,
    pos: usize,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a shared descriptor with `pread`, from the start (its offset is other readers' too).
struct At {
    file: Arc<File>,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// All of `content`, refused past `limit` bytes.
fn read_bounded(content: Content, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader(content)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge(format!("{what}: more than {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;

    /// What views keep is sized by the mount's [`ViewsConfig`], not by constants: failed
    /// decodes, schema1 digests and held decoded files, each at today's default unless set.
    #[test]
    fn what_views_keep_is_sized_by_their_config() {
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Arc::new(Store::new(Arc::new(Fake::default()), &config).expect("store"));
        let caps = |v: &Views| {
            (sync::lock(&v.failed).cap().get(), sync::lock(&v.derived).cap().get(), sync::lock(&v.held).cap().get())
        };
        let sizes = ViewsConfig { failed_decodes: 3, schema1_derived: 4, held_decoded_files: 2, ..Default::default() };
        assert_eq!(caps(&Views::with_config(Arc::clone(&store), sizes)), (3, 4, 2));
        assert_eq!(caps(&Views::new(store)), (4096, 4096, 8), "today's defaults");
    }
}
