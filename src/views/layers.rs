//! [`Views`]: a manifest's layer, decoded and verified, as a file in the cache.
//!
//! A layer of a Docker schema2 or OCI image manifest is decoded, hashed as it is decoded, and
//! kept under `decoded/` by its diff_id only if it hashes to the config's `rootfs.diff_ids[n]`
//! (the config being a blob verified by its digest). A schema1 layer has no diff_id anywhere:
//! its decoded stream is trusted as a function of its blob, verified by `blobSum`, and kept under
//! `decoded-from/` by the blob's digest; after a restart it is decoded again (until its index
//! records the diff_id it hashed to). One decode per diff_id at a time (the cache's single
//! flight), shared by every image that has the layer.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::config;
use super::decode::{self, Tee};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::manifest::{Kind as ManifestKind, Manifest};
use crate::media;
use crate::store::cache::{Kind, hash_file};
use crate::store::flight::SingleFlight;
use crate::store::{Content, Store, VerifiedManifest};
use crate::sync;

/// Memory for the diff_id lists of configs kept (8 MiB; a list is its digests' bytes).
pub const CONFIG_CACHE_BYTES: usize = 8 << 20;

/// What views have done, for tests and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewsStats {
    /// Layers decoded (each a full pass over a blob).
    pub decodes: u64,
    /// Configs fetched and parsed for their diff_ids.
    pub configs: u64,
}

struct Configs {
    lru: LruCache<Digest, Arc<Vec<Digest>>>,
    bytes: usize,
}

pub struct Views {
    store: Arc<Store>,
    configs: Mutex<Configs>,
    config_flights: SingleFlight<(String, Digest), Arc<Vec<Digest>>>,
    decodes: AtomicU64,
    configs_read: AtomicU64,
}

/// Whether layer `n` of `m` has a decoded view (`<n>.tar`): an image manifest's (schema2, OCI,
/// schema1) gzip or zstd layer of an image-layer media type. An uncompressed layer already is a
/// tar; artifacts (a Helm chart's `…tar+gzip` included) get none.
pub fn has_view(m: &Manifest, n: usize) -> bool {
    let Some((_, d)) = m.layers.get(n) else { return false };
    let image = matches!(m.kind, ManifestKind::DockerSchema2 | ManifestKind::OciManifest | ManifestKind::DockerSchema1);
    let mt = media::bare(&d.media_type);
    let layer_type =
        mt.starts_with("application/vnd.oci.image.layer.") || mt.starts_with("application/vnd.docker.image.rootfs.");
    image && layer_type && matches!(media::layer_extension(&mt), ".tar.gz" | ".tar.zst")
}

/// Where a layer's decoded file is kept, and what it must hash to.
#[derive(Debug, Clone)]
enum Target {
    /// By the config's diff_id, which the decoded stream must hash to.
    DiffId(Digest),
    /// Schema1: by the blob's digest; trusted as a function of the verified blob.
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
    pub fn new(store: Arc<Store>) -> Views {
        Views {
            store,
            configs: Mutex::new(Configs { lru: LruCache::unbounded(), bytes: 0 }),
            config_flights: SingleFlight::default(),
            decodes: AtomicU64::new(0),
            configs_read: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> ViewsStats {
        ViewsStats { decodes: self.decodes.load(Ordering::SeqCst), configs: self.configs_read.load(Ordering::SeqCst) }
    }

    /// Layer `n` of manifest `manifest` of `repo`, decoded and verified: an open file of the
    /// cache, decoded first if need be. Read it with `read_at` (the descriptor is shared).
    pub fn decoded(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<File>> {
        let doc = self.store.manifest(repo, manifest)?;
        if !has_view(&doc.manifest, n) {
            return Err(Error::NotFound(format!("{repo}@{manifest}: layer {n} has no decoded view")));
        }
        let target = self.target(repo, &doc, n)?;
        let cache = self.store.blob_cache();
        let check = |f: &mut File| match &target {
            Target::DiffId(d) => hash_file(f, d, decode::CHUNK),
            Target::From(_) => Err(Error::Io("a schema1 layer decoded by an earlier run is decoded again".into())),
        };
        let produce =
            |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| self.decode(repo, &doc, n, &target, out, hook);
        cache.open_derived(target.kind(), target.key(), &check, &produce).inspect_err(|e| {
            if matches!(e, Error::TooLarge(_)) {
                log::warn!("{repo}@{manifest}: layer {n} decodes past the cache size, refused: {e}");
            }
        })
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
        cache.derived_len(Kind::Decoded, ids.get(n)?)
    }

    fn target(&self, repo: &str, doc: &VerifiedManifest, n: usize) -> Result<Target> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        if doc.manifest.kind == ManifestKind::DockerSchema1 {
            return Ok(Target::From(layer.digest.clone()));
        }
        let ids = self.diff_ids(repo, doc)?;
        if ids.len() != doc.manifest.layers.len() {
            return Err(Error::malformed(
                format!("config of {repo}@{}", doc.digest),
                format!("{} diff_ids for {} layers", ids.len(), doc.manifest.layers.len()),
            ));
        }
        ids.get(n).cloned().map(Target::DiffId).ok_or_else(|| Error::NotFound(format!("diff_id {n}")))
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
            self.configs_read.fetch_add(1, Ordering::SeqCst);
            let what = format!("{} of {repo}", config.digest);
            let bytes = read_bounded(self.store.blob(repo, &config.digest, config.size)?, config::MAX_CONFIG, &what)?;
            let ids = Arc::new(config::diff_ids(&bytes, &what)?);
            let mut c = sync::lock(&self.configs);
            let weight = 64 + ids.iter().map(|d| 32 + d.hex().len()).sum::<usize>();
            if c.lru.put(config.digest.clone(), Arc::clone(&ids)).is_none() {
                c.bytes += weight;
            }
            while c.bytes > CONFIG_CACHE_BYTES {
                let Some((_, old)) = c.lru.pop_lru() else { break };
                c.bytes -= 64 + old.iter().map(|d| 32 + d.hex().len()).sum::<usize>();
            }
            Ok(ids)
        })
    }

    /// Decode layer `n`'s blob into `out` through the tee; its length if it hashes right.
    fn decode(
        &self,
        repo: &str,
        doc: &VerifiedManifest,
        n: usize,
        target: &Target,
        out: &mut File,
        hook: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<u64> {
        let (_, layer) = doc.manifest.layers.get(n).ok_or_else(|| Error::NotFound(format!("layer {n}")))?;
        self.decodes.fetch_add(1, Ordering::SeqCst);
        let blob = self.store.blob(repo, &layer.digest, layer.size)?;
        let (_, decoder) = decode::decoder(reader(blob)?)?;
        let alg = match target {
            Target::DiffId(d) => d.algorithm(),
            Target::From(_) => Algorithm::Sha256,
        };
        let (len, actual) = Tee::new(decoder, out, alg, hook).finish()?;
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
                Ok(len)
            }
        }
    }
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
