//! Everything regfs knows, and the only way to it: the store never hands out bytes it has not
//! verified, and asks the registry for each thing at most once at a time.
//!
//! # Two kinds of things
//! - Addressed by digest (manifests, configs, layers): immutable. Manifests are checked against
//!   their digest and kept in memory (an `lru`), with the sizes their descriptors declare; blobs go
//!   through the verified disk cache ([`blobs`]), and small ones are also kept in memory.
//! - Addressed by name (the catalog, tag lists, what a tag points to): mutable, trusted for
//!   `tag_ttl` and then asked again.
//!
//! # Verification of manifests
//! A manifest fetched by digest must hash (as the registry hashes it; see `manifest::Manifest::
//! digest`) to that digest, and a `Docker-Content-Digest` header that names another digest is an
//! error too. A tag is resolved with HEAD (its `Docker-Content-Digest`); the manifest is then
//! fetched by that digest and verified like any other. Where HEAD gives no digest, the manifest is
//! fetched by tag and named by its own hash.

pub mod blobs;
pub mod dir;
mod flight;
mod sized;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::names;
use crate::registry::{Client, Fetch, ManifestReply};

use blobs::BlobCache;
use flight::SingleFlight;
use sized::{SizedLru, Weigh};

/// Blobs up to this size are also kept in memory once verified.
pub const SMALL_BLOB: u64 = 1 << 20;
/// Memory for verified manifests, and for small blobs (by their bytes, not their number).
const DOC_CACHE_BYTES: usize = 64 << 20;
const SMALL_CACHE_BYTES: usize = 32 << 20;

/// A verified manifest.
#[derive(Debug)]
pub struct Doc {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl Weigh for Arc<Doc> {
    fn weight(&self) -> usize {
        self.bytes.len()
    }
}

/// Verified blob content, for reading.
#[derive(Clone)]
pub enum Content {
    /// A manifest's bytes as served.
    Doc(Arc<Doc>),
    Memory(Arc<Vec<u8>>),
    File(Arc<File>),
}

struct Timed<T> {
    at: Instant,
    value: T,
}

#[derive(Default)]
struct Meta {
    catalog: Option<Timed<Arc<Vec<String>>>>,
    /// The registry's answer that it has no catalog for us (404, 401, 403): an answer, not a
    /// fault, so it is trusted for `tag_ttl` like the catalog itself would be.
    no_catalog: Option<Timed<Error>>,
    tags: HashMap<String, Timed<Arc<Vec<String>>>>,
    tag_digests: HashMap<(String, String), Timed<Digest>>,
    /// Manifests seen per repository, for listing `manifests/`.
    seen: HashMap<String, BTreeSet<Digest>>,
    /// Blob sizes from descriptors and HEADs: digest-addressed, so never stale.
    sizes: HashMap<Digest, u64>,
}

pub struct Store {
    client: Arc<dyn Client>,
    tag_ttl: Duration,
    meta: Mutex<Meta>,
    docs: Mutex<SizedLru<(String, Digest), Arc<Doc>>>,
    small: Mutex<SizedLru<Digest, Arc<Vec<u8>>>>,
    blobs: BlobCache,
    list_flights: SingleFlight<Option<String>, Arc<Vec<String>>>,
    tag_flights: SingleFlight<(String, String), Digest>,
    doc_flights: SingleFlight<(String, Digest), Arc<Doc>>,
    size_flights: SingleFlight<Digest, u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    pub fn new(client: Arc<dyn Client>, cache_dir: &Path, cache_size: u64, tag_ttl: Duration) -> Result<Store> {
        Ok(Store {
            client,
            tag_ttl,
            meta: Mutex::default(),
            docs: Mutex::new(SizedLru::new(DOC_CACHE_BYTES)),
            small: Mutex::new(SizedLru::new(SMALL_CACHE_BYTES)),
            blobs: BlobCache::new(cache_dir, cache_size)?,
            list_flights: SingleFlight::default(),
            tag_flights: SingleFlight::default(),
            doc_flights: SingleFlight::default(),
            size_flights: SingleFlight::default(),
        })
    }

    pub fn blob_cache(&self) -> &BlobCache {
        &self.blobs
    }

    /// One line on what this mount has done, for the log at unmount.
    pub fn summary(&self) -> String {
        let st = self.client.stats();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        format!(
            "{} requests ({} manifest GETs, {} HEADs, {} blob GETs, {} tag-list and {} catalog pages, {} tokens, {} retries); \
             {:.1} MiB of blobs downloaded, {:.1} MiB verified; cache {:.1} MiB",
            st.requests,
            st.manifest_gets,
            st.manifest_heads + st.blob_heads,
            st.blob_gets,
            st.tag_pages,
            st.catalog_pages,
            st.token_fetches,
            st.retries,
            mib(st.blob_bytes),
            mib(self.blobs.verified_bytes.load(std::sync::atomic::Ordering::Relaxed)),
            mib(self.blobs.size()),
        )
    }

    fn fresh<T: Clone>(&self, t: Option<&Timed<T>>) -> Option<T> {
        t.filter(|t| t.at.elapsed() < self.tag_ttl).map(|t| t.value.clone())
    }

    /// The catalog's repository names (valid ones only), trusted for `tag_ttl`.
    pub fn catalog(&self) -> Result<Arc<Vec<String>>> {
        {
            let meta = lock(&self.meta);
            if let Some(c) = self.fresh(meta.catalog.as_ref()) {
                return Ok(c);
            }
            if let Some(e) = self.fresh(meta.no_catalog.as_ref()) {
                return Err(e);
            }
        }
        self.list_flights.run(&None, || {
            let mut names = match self.client.catalog() {
                Ok(n) => n,
                Err(e @ (Error::NotFound(_) | Error::Denied(_))) => {
                    lock(&self.meta).no_catalog = Some(Timed { at: Instant::now(), value: e.clone() });
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            names.retain(|n| valid_or_warn(n, names::check_repo(n), "catalog"));
            names.sort();
            names.dedup();
            let names = Arc::new(names);
            lock(&self.meta).catalog = Some(Timed { at: Instant::now(), value: Arc::clone(&names) });
            Ok(names)
        })
    }

    /// The tags of `repo` (valid ones only, sorted), trusted for `tag_ttl`.
    pub fn tags(&self, repo: &str) -> Result<Arc<Vec<String>>> {
        if let Some(t) = self.fresh(lock(&self.meta).tags.get(repo)) {
            return Ok(t);
        }
        self.list_flights.run(&Some(repo.to_string()), || {
            let mut tags = self.client.tags(repo)?;
            tags.retain(|t| valid_or_warn(t, names::check_tag(t), repo));
            tags.sort();
            tags.dedup();
            let tags = Arc::new(tags);
            lock(&self.meta).tags.insert(repo.to_string(), Timed { at: Instant::now(), value: Arc::clone(&tags) });
            Ok(tags)
        })
    }

    /// The tag list of `repo` if fetched within `tag_ttl`; never a request.
    pub fn tags_if_fresh(&self, repo: &str) -> Option<Arc<Vec<String>>> {
        self.fresh(lock(&self.meta).tags.get(repo))
    }

    /// Whether `tag` exists, from a fresh tag list when there is one (no request), else `None`.
    pub fn tag_listed(&self, repo: &str, tag: &str) -> Option<bool> {
        let meta = lock(&self.meta);
        self.fresh(meta.tags.get(repo)).map(|tags| tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok())
    }

    /// What `tag` points to, if resolved within `tag_ttl`; never a request.
    pub fn resolve_tag_if_known(&self, repo: &str, tag: &str) -> Option<Digest> {
        let meta = lock(&self.meta);
        self.fresh(meta.tag_digests.get(&(repo.to_string(), tag.to_string())))
    }

    /// What `tag` points to now (trusted for `tag_ttl`).
    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Digest> {
        names::check_tag(tag)?;
        let key = (repo.to_string(), tag.to_string());
        if let Some(d) = self.fresh(lock(&self.meta).tag_digests.get(&key)) {
            return Ok(d);
        }
        self.tag_flights.run(&key, || {
            let digest = match self.client.manifest(repo, tag, Fetch::Head) {
                Ok(head) => match head.digest_header.as_deref().map(str::parse::<Digest>) {
                    Some(Ok(d)) => d,
                    Some(Err(_)) => {
                        return Err(Error::Protocol(format!(
                            "{}: bad Docker-Content-Digest {:?}",
                            head.url, head.digest_header
                        )));
                    }
                    // No digest in the answer: GET by tag and name the manifest by its hash.
                    None => self.manifest_by_tag(repo, tag)?,
                },
                // Some registries and proxies refuse HEAD (405 and the like): the same GET.
                // 404 and refusals of access stay final.
                Err(Error::Protocol(why)) => {
                    log::debug!("{why}; resolving {repo}:{tag} with GET");
                    self.manifest_by_tag(repo, tag)?
                }
                Err(e) => return Err(e),
            };
            let mut meta = lock(&self.meta);
            meta.tag_digests.insert(key.clone(), Timed { at: Instant::now(), value: digest.clone() });
            meta.seen.entry(repo.to_string()).or_default().insert(digest.clone());
            Ok(digest)
        })
    }

    /// GET a manifest by tag, name it by its own hash, and keep it.
    fn manifest_by_tag(&self, repo: &str, tag: &str) -> Result<Digest> {
        let doc = checked(self.client.manifest(repo, tag, Fetch::Get)?, None)?;
        let digest = doc.digest.clone();
        self.keep_doc(repo, doc);
        Ok(digest)
    }

    fn keep_doc(&self, repo: &str, doc: Doc) -> Arc<Doc> {
        let doc = Arc::new(doc);
        {
            let mut meta = lock(&self.meta);
            for (d, size) in doc.manifest.sized_blobs() {
                meta.sizes.insert(d.clone(), size);
            }
            meta.seen.entry(repo.to_string()).or_default().insert(doc.digest.clone());
        }
        lock(&self.docs).put((repo.to_string(), doc.digest.clone()), Arc::clone(&doc));
        doc
    }

    /// The manifest `digest` of `repo`, verified.
    pub fn manifest(&self, repo: &str, digest: &Digest) -> Result<Arc<Doc>> {
        let key = (repo.to_string(), digest.clone());
        if let Some(doc) = lock(&self.docs).get(&key) {
            return Ok(doc);
        }
        self.doc_flights.run(&key, || {
            let reply = self.client.manifest(repo, &digest.to_string(), Fetch::Get)?;
            Ok(self.keep_doc(repo, checked(reply, Some(digest))?))
        })
    }

    /// Manifests of `repo` seen so far (through tags or lookups), for listing `manifests/`.
    pub fn seen_manifests(&self, repo: &str) -> Vec<Digest> {
        lock(&self.meta).seen.get(repo).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// A blob's size if a descriptor or an earlier HEAD told us; never a request.
    pub fn known_size(&self, digest: &Digest) -> Option<u64> {
        lock(&self.meta).sizes.get(digest).copied()
    }

    /// A blob's size: from a descriptor if one declared it, else from a HEAD (which also proves
    /// the blob exists in `repo`).
    pub fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        if let Some(s) = self.known_size(digest) {
            return Ok(s);
        }
        self.size_flights.run(digest, || {
            let size = self.client.blob_size(repo, digest)?;
            if size > manifest::MAX_BLOB_SIZE {
                return Err(Error::TooLarge(format!("blob {digest} of {repo}: {size} bytes")));
            }
            lock(&self.meta).sizes.insert(digest.clone(), size);
            Ok(size)
        })
    }

    /// A blob's verified content: small ones from memory, others from the disk cache.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Result<Content> {
        if let Some(bytes) = lock(&self.small).get(digest) {
            return Ok(Content::Memory(bytes));
        }
        let size = self.known_size(digest);
        let file = self.blobs.open(&*self.client, repo, digest, size)?;
        let len = file.metadata()?.len();
        if len <= SMALL_BLOB {
            let mut bytes = vec![0u8; len as usize];
            // pread: the descriptor may be shared with other readers.
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, 0)?;
            let bytes = Arc::new(bytes);
            lock(&self.small).put(digest.clone(), Arc::clone(&bytes));
            return Ok(Content::Memory(bytes));
        }
        Ok(Content::File(file))
    }
}

/// A manifest reply, parsed and checked: against `expected` when it was fetched by digest, and
/// against its `Docker-Content-Digest` whenever the registry sent one. Named by the digest asked
/// for, else by its own sha256. The one place a manifest is verified.
fn checked(reply: ManifestReply, expected: Option<&Digest>) -> Result<Doc> {
    let body = reply.body.ok_or_else(|| Error::Protocol(format!("{}: no body", reply.url)))?;
    let m = manifest::parse(&body, reply.content_type.as_deref(), &reply.url)?;
    let mismatch = |what: String, expected: &Digest, actual: Digest| Error::DigestMismatch {
        what,
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    if let Some(h) = reply.digest_header.as_deref() {
        let claimed: Digest =
            h.parse().map_err(|_| Error::Protocol(format!("{}: bad Docker-Content-Digest {h:?}", reply.url)))?;
        let actual = m.digest(claimed.algorithm());
        if actual != claimed {
            return Err(mismatch(format!("Docker-Content-Digest of {}", reply.url), &claimed, actual));
        }
    }
    let digest = match expected {
        Some(d) => {
            let actual = m.digest(d.algorithm());
            if &actual != d {
                return Err(mismatch(format!("manifest {}", reply.url), d, actual));
            }
            d.clone()
        }
        None => m.digest(crate::digest::Algorithm::Sha256),
    };
    Ok(Doc { digest, bytes: body, manifest: m })
}

fn valid_or_warn(name: &str, check: Result<()>, list: &str) -> bool {
    match check {
        Ok(()) => true,
        Err(_) => {
            log::warn!("{list}: skipping invalid name {name:?}");
            false
        }
    }
}
