//! Everything regfs knows, and the only way to it: the store never hands out bytes it has not
//! verified, and asks the registry for each thing at most once at a time.
//!
//! # Two kinds of things
//! - Addressed by digest (manifests, configs, layers): immutable. Manifests are checked against
//!   their digest and kept in memory (an `lru` bounded by what each holds, parsed form included;
//!   `manifests/` lists what it holds, so that list is pruned with it);
//!   the sizes their descriptors declare travel in the nodes that show them; blobs go
//!   through the verified disk cache ([`cache`]), and small ones are also kept in memory.
//! - Addressed by name (the catalog, tag lists, what a tag points to): mutable, trusted for
//!   `tag_ttl` and then asked again; each kept within a bound (tag lists in bytes, what tags
//!   point to in number, [`StoreConfig::tag_digests`]).
//!
//! Every bound and size here is a field of [`StoreConfig`], built once from the command line
//! (`cli.rs`); its `Default` is what regfs runs with unless an option says otherwise.
//!
//! # Verification of manifests
//! A manifest fetched by digest must hash (as the registry hashes it; see `manifest::Manifest::
//! digest`) to that digest, and a `Docker-Content-Digest` header that names another digest is an
//! error too. A tag is resolved with HEAD (its `Docker-Content-Digest`); the manifest is then
//! fetched by that digest and verified like any other. Where HEAD gives no digest, the manifest is
//! fetched by tag and named by its own hash.

pub mod cache;
pub mod dir;
pub mod download;
pub mod flight;
pub mod ranged;
pub mod sized;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capacity::nonzero;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits;
use crate::manifest::referrers::{self, Referrer};
use crate::manifest::{self, Kind, Manifest};
use crate::names;
use crate::registry::foreign::{self, Foreign};
use crate::registry::{Client, Fetch, ManifestReply};
use crate::sync::lock;

use cache::BlobCache;
use download::DownloadConfig;
use flight::SingleFlight;
use sized::{SizedLru, Weigh};

/// What the store keeps, where, and for how long. `Default` is what regfs runs with; `cli.rs`
/// builds it from the command line (`--cache-dir`, `--cache-size`, `--tag-ttl`; the rest have no
/// option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The verified blob cache on disk ([`default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// Most bytes the blob cache may hold, downloads in progress included (10 GiB).
    pub cache_size: u64,
    /// How long the catalog, a tag list and what a tag points to are trusted (60 s).
    pub tag_ttl: Duration,
    /// Blobs up to this size are also kept in memory once verified (1 MiB).
    pub small_blob: u64,
    /// Memory for verified manifests, by what each holds (64 MiB).
    pub manifest_cache_bytes: usize,
    /// Memory for small blobs, by their bytes, not their number (32 MiB).
    pub small_cache_bytes: usize,
    /// Memory for the tag lists kept (of all repositories together), each name counted as its
    /// length plus [`limits::LIST_ENTRY_OVERHEAD`]; least recently used first out (64 MiB).
    pub tag_lists_bytes: usize,
    /// What tags resolved to, kept (for `tag_ttl`) for at most this many tags of all
    /// repositories together, least recently used first out (16 Ki, a few MiB at most).
    pub tag_digests: usize,
    /// HEAD answers on blob sizes kept (16 Ki, a few MiB at most).
    pub head_sizes: usize,
    /// Tag lists that answered with no list, remembered for `tag_ttl` as a list would be: 404
    /// (NAME_UNKNOWN: no such repository), so a name that is no repository costs one request per
    /// `tag_ttl`; 401/403, so a refusal is not asked again on every lookup; a list past the
    /// listing budget, so it is not fetched again; and that a first page answered (the
    /// repository exists, [`Store::repository`]); least recently used first out (4 Ki).
    pub tag_list_answers: usize,
    /// How one blob is downloaded.
    pub download: DownloadConfig,
    /// Memory for referrers lists (of all subjects together), each weighed by what it holds;
    /// least recently used first out (16 MiB).
    pub referrers_bytes: usize,
    /// Repositories remembered (for `tag_ttl`) to have no referrers API, so their referrers are
    /// read from the tag schema at once, one request per subject, not two (4 Ki).
    pub no_referrers_api: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_dir: default_cache_dir(),
            cache_size: 10 << 30,
            tag_ttl: Duration::from_secs(60),
            small_blob: 1 << 20,
            manifest_cache_bytes: 64 << 20,
            small_cache_bytes: 32 << 20,
            tag_lists_bytes: 64 << 20,
            tag_digests: 16 << 10,
            head_sizes: 16 << 10,
            tag_list_answers: 4 << 10,
            download: DownloadConfig::default(),
            referrers_bytes: 16 << 20,
            no_referrers_api: 4 << 10,
        }
    }
}

/// `$XDG_CACHE_HOME/regfs`, else `~/.cache/regfs` (`/tmp/.cache/regfs` without a `$HOME`).
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("regfs");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("regfs")
}

/// A verified manifest.
#[derive(Debug)]
pub struct VerifiedManifest {
    pub digest: Digest,
    /// Parsed from, and holding, the very bytes whose hash was checked.
    pub manifest: Manifest,
}

impl VerifiedManifest {
    /// The manifest's bytes as served (what `manifest.json` shows).
    pub fn bytes(&self) -> &[u8] {
        self.manifest.bytes()
    }
}

/// A cached manifest weighs all it holds: its bytes, a schema1 payload, the parsed descriptors
/// and names, and a fixed allowance for the entry, its key and the digest.
impl Weigh for Arc<VerifiedManifest> {
    fn weight(&self) -> usize {
        const ENTRY: usize = 256;
        ENTRY + self.digest.hex().len() + self.manifest.weight()
    }
}

/// Verified blob content, for reading.
#[derive(Clone)]
pub enum Content {
    /// A manifest's bytes as served.
    Manifest(Arc<VerifiedManifest>),
    Memory(Arc<Vec<u8>>),
    File(Arc<File>),
    /// `len` bytes of a verified file from `start` (a rootfs file: its slice of the decoded
    /// layer). Reads never see bytes outside it, so it is never handed to the kernel for
    /// passthrough, which would read the whole file.
    Range {
        file: Arc<File>,
        start: u64,
        len: u64,
    },
    /// A file whose bytes are had by parts as they are read, each part verified before it is
    /// served (a file of a layer read lazily, chunk by chunk): reads may wait on the network.
    Parts(Arc<dyn Parts>),
}

/// A file read by parts ([`Content::Parts`]): every byte it gives was verified against a
/// digest the manifest covers, and a read of what it has not verified yet may fetch.
pub trait Parts: Send + Sync {
    /// Its length.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `size` bytes from `offset` (none at or past the end); may fetch and verify.
    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>>;
    /// [`Parts::read`] if it needs no waiting (every byte asked is verified and in memory).
    fn read_now(&self, offset: u64, size: u32) -> Option<Result<Vec<u8>>>;
}

impl Content {
    /// The open file this content reads from, if it is one (a whole file or a range of one).
    pub fn file(&self) -> Option<&Arc<File>> {
        match self {
            Content::File(file) | Content::Range { file, .. } => Some(file),
            Content::Manifest(_) | Content::Memory(_) | Content::Parts(_) => None,
        }
    }
}

/// A repository's tag list, as fetched at `at`; `weight` is what it counts for in
/// [`StoreConfig::tag_lists_bytes`].
#[derive(Clone)]
struct Listed {
    at: Instant,
    /// Which fetch of a tag list this is: every fetch has a number of its own.
    generation: u64,
    weight: usize,
    names: Arc<Vec<String>>,
}

impl Weigh for Listed {
    fn weight(&self) -> usize {
        self.weight
    }
}

/// One subject's referrers, as fetched at `at` (trusted for `tag_ttl`).
#[derive(Clone)]
struct HeldReferrers {
    at: Instant,
    list: Arc<Vec<Referrer>>,
}

impl Weigh for HeldReferrers {
    fn weight(&self) -> usize {
        const ENTRY: usize = 256;
        ENTRY + self.list.iter().map(Referrer::weight).sum::<usize>()
    }
}

struct Timed<T> {
    at: Instant,
    value: T,
}

struct Meta {
    catalog: Option<Timed<Arc<Vec<String>>>>,
    /// The registry's answer that it has no catalog for us (404, 401, 403): an answer, not a
    /// fault, so it is trusted for `tag_ttl` like the catalog itself would be.
    no_catalog: Option<Timed<Error>>,
    /// What tags resolved to, within [`StoreConfig::tag_digests`] tags.
    tag_digests: Option<lru::LruCache<(String, String), Timed<Digest>>>,
    /// What HEAD said of blobs no descriptor sizes (`blobs/<digest>`, schema1 layers), per
    /// repository; bounded, as it is only a cache of answers. Descriptor sizes are not kept here:
    /// each travels in its own node (`layout::Node::Blob`).
    head_sizes: Option<lru::LruCache<(String, Digest), u64>>,
    /// Tag lists that answered with no list (404, 401/403, too large), or whose first page
    /// answered, with that answer, within [`StoreConfig::tag_list_answers`].
    tag_list_answers: Option<lru::LruCache<String, Timed<Result<()>>>>,
    /// The bounds of the three above ([`StoreConfig::tag_digests`], [`StoreConfig::head_sizes`],
    /// [`StoreConfig::tag_list_answers`]); each is made on first use.
    tag_digests_cap: usize,
    head_sizes_cap: usize,
    tag_list_answers_cap: usize,
}

impl Meta {
    fn new(config: &StoreConfig) -> Meta {
        Meta {
            catalog: None,
            no_catalog: None,
            tag_digests: None,
            head_sizes: None,
            tag_list_answers: None,
            tag_digests_cap: config.tag_digests,
            head_sizes_cap: config.head_sizes,
            tag_list_answers_cap: config.tag_list_answers,
        }
    }

    fn tag_list_answers(&mut self) -> &mut lru::LruCache<String, Timed<Result<()>>> {
        let cap = self.tag_list_answers_cap;
        self.tag_list_answers.get_or_insert_with(|| lru::LruCache::new(nonzero(cap)))
    }

    fn tag_digests(&mut self) -> &mut lru::LruCache<(String, String), Timed<Digest>> {
        let cap = self.tag_digests_cap;
        self.tag_digests.get_or_insert_with(|| lru::LruCache::new(nonzero(cap)))
    }

    fn head_sizes(&mut self) -> &mut lru::LruCache<(String, Digest), u64> {
        let cap = self.head_sizes_cap;
        self.head_sizes.get_or_insert_with(|| lru::LruCache::new(nonzero(cap)))
    }
}

pub struct Store {
    client: Arc<dyn Client>,
    tag_ttl: Duration,
    meta: Mutex<Meta>,
    manifests: Mutex<SizedLru<(String, Digest), Arc<VerifiedManifest>>>,
    /// Tag lists by repository, within [`StoreConfig::tag_lists_bytes`].
    tag_lists: Mutex<SizedLru<String, Listed>>,
    small: Mutex<SizedLru<Digest, Arc<Vec<u8>>>>,
    /// Blobs up to this size go into `small` too.
    small_blob: u64,
    blobs: BlobCache,
    /// The errors readers were given (`fuse.rs` records them), for `.regfs/status`.
    errors: crate::telemetry::Errors,
    list_flights: SingleFlight<Option<String>, Arc<Vec<String>>>,
    /// Whether a repository has a tag list ([`Store::repository`]), one request per name at a time.
    repository_flights: SingleFlight<String, ()>,
    tag_flights: SingleFlight<(String, String), Digest>,
    manifest_flights: SingleFlight<(String, Digest), Arc<VerifiedManifest>>,
    size_flights: SingleFlight<(String, Digest), u64>,
    /// Referrers lists by subject, within [`StoreConfig::referrers_bytes`].
    referrers: Mutex<SizedLru<(String, Digest), HeldReferrers>>,
    referrer_flights: SingleFlight<(String, Digest), Arc<Vec<Referrer>>>,
    /// Repositories whose referrers API answered 404: there the tag schema is read at once (one
    /// request per subject, not two), per repository, for `tag_ttl` (a 404 in one repository, or a passing one, says nothing of
    /// the others, nor for ever); at most [`StoreConfig::no_referrers_api`] repositories.
    no_referrers_api: Mutex<lru::LruCache<String, Instant>>,
    /// Foreign layers: the URL rules and their client (`None`: no URL is allowed).
    foreign: Option<Arc<Foreign>>,
    /// Foreign layers already said to be refused, so each is logged once (bounded).
    refused_foreign: Mutex<lru::LruCache<Digest, ()>>,
}

impl Store {
    /// The store of `config`, its blob cache under `config.cache_dir`.
    pub fn new(client: Arc<dyn Client>, config: &StoreConfig) -> Result<Store> {
        Store::in_dir(client, dir::CacheDir::open_root(&config.cache_dir)?, config)
    }

    /// A store whose blob cache is the directory `root`, opened (and checked) already: the
    /// directory used is the one checked, whatever its path names by now (`config.cache_dir`
    /// is not looked at).
    pub fn in_dir(client: Arc<dyn Client>, root: dir::CacheDir, config: &StoreConfig) -> Result<Store> {
        Ok(Store {
            client,
            tag_ttl: config.tag_ttl,
            meta: Mutex::new(Meta::new(config)),
            manifests: Mutex::new(SizedLru::new(config.manifest_cache_bytes)),
            tag_lists: Mutex::new(SizedLru::new(config.tag_lists_bytes)),
            small: Mutex::new(SizedLru::new(config.small_cache_bytes)),
            small_blob: config.small_blob,
            blobs: BlobCache::in_dir(root, config)?,
            errors: crate::telemetry::Errors::default(),
            list_flights: SingleFlight::default(),
            repository_flights: SingleFlight::default(),
            tag_flights: SingleFlight::default(),
            manifest_flights: SingleFlight::default(),
            size_flights: SingleFlight::default(),
            referrers: Mutex::new(SizedLru::new(config.referrers_bytes)),
            referrer_flights: SingleFlight::default(),
            no_referrers_api: Mutex::new(lru::LruCache::new(nonzero(config.no_referrers_api))),
            foreign: None,
            refused_foreign: Mutex::new(lru::LruCache::new(nonzero(limits::REFUSED_FOREIGN_LOGGED))),
        })
    }

    /// Fetch foreign layers the registry lacks from their URLs, under `foreign`'s rules
    /// (`--layer-url-allow`, `--layer-url-deny`); without this, no URL is used.
    pub fn with_foreign(mut self, foreign: Foreign) -> Store {
        self.foreign = Some(Arc::new(foreign));
        self
    }

    pub fn blob_cache(&self) -> &BlobCache {
        &self.blobs
    }

    /// The errors readers were given (for `.regfs/status`; `fuse.rs` records them).
    pub fn errors(&self) -> &crate::telemetry::Errors {
        &self.errors
    }

    /// The client's request counters so far; never a request.
    pub fn stats(&self) -> crate::registry::Stats {
        self.client.stats()
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
            mib(self.blobs.verified_bytes()),
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
                // A catalog past its budget is no catalog, remembered as long: it is not fetched
                // again for each name a tag list denies.
                Err(e @ (Error::NotFound(_) | Error::Denied(_) | Error::TooLarge(_))) => {
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

    /// Whether a catalog fetched within `tag_ttl` lists `repo`; never a request. A catalog
    /// only ever says yes: one that does not list a name is no answer (it may be partial).
    pub fn catalog_lists(&self, repo: &str) -> bool {
        let meta = lock(&self.meta);
        self.fresh(meta.catalog.as_ref()).is_some_and(|c| c.binary_search_by(|r| r.as_str().cmp(repo)).is_ok())
    }

    /// Whether the registry said within `tag_ttl` that `repo` is a repository (a catalog listing
    /// it, its tag list, or the first page of it); never a request.
    pub fn known_repository(&self, repo: &str) -> bool {
        self.catalog_lists(repo)
            || self.tags_if_fresh(repo).is_some()
            || matches!(self.tag_list_answer(repo), Some(Ok(()) | Err(Error::TooLarge(_))))
    }

    /// Whether `repo` is a repository, as far as the registry says; `Err(NotFound)` when its
    /// tag list answers 404 (NAME_UNKNOWN), `Err(Denied)` when the list is refused (the
    /// repository may still be pulled from by name). A catalog fetched within `tag_ttl` that
    /// lists it, its fresh tag list or a remembered answer of it say so at no cost; else one
    /// request, for the first page of its tag list, whatever the list's length. That answer is
    /// kept for `tag_ttl`, as [`Store::tags`] keeps its own; other failures are not kept, and
    /// say nothing (`Ok`). A 404 is overruled by the catalog (fetched if need be, kept for
    /// `tag_ttl`) listing `repo`.
    pub fn repository(&self, repo: &str) -> Result<()> {
        if self.catalog_lists(repo) || self.tags_if_fresh(repo).is_some() {
            return Ok(());
        }
        let answered = |a: Result<()>| match a {
            // A list too long to keep is still a list.
            Err(Error::TooLarge(_)) => Ok(()),
            // The catalog may add a name its tag list denies (tag listing disabled): it
            // decided before any tag list was asked, and still does where it lists the name.
            Err(Error::NotFound(_))
                if self.catalog().is_ok_and(|c| c.binary_search_by(|r| r.as_str().cmp(repo)).is_ok()) =>
            {
                Ok(())
            }
            Err(e @ (Error::NotFound(_) | Error::Denied(_))) => Err(e),
            // Any other failure says nothing.
            _ => Ok(()),
        };
        if let Some(a) = self.tag_list_answer(repo) {
            return answered(a);
        }
        let asked = self.repository_flights.run(&repo.to_string(), || {
            if let Some(a) = self.tag_list_answer(repo) {
                return a;
            }
            let answer = match self.client.has_tag_list(repo) {
                Ok(Some(tags)) => {
                    self.keep_tags(repo, tags);
                    return Ok(());
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if matches!(answer, Ok(()) | Err(Error::NotFound(_) | Error::Denied(_) | Error::TooLarge(_))) {
                lock(&self.meta)
                    .tag_list_answers()
                    .put(repo.to_string(), Timed { at: Instant::now(), value: answer.clone() });
            }
            answer
        });
        answered(asked)
    }

    /// The tags of `repo` (valid ones only, sorted), trusted for `tag_ttl`.
    /// A tag list answering 404 (NAME_UNKNOWN: no such repository), 401/403, or past the
    /// listing budget, is an answer too, kept as long; any other failure is not kept.
    pub fn tags(&self, repo: &str) -> Result<Arc<Vec<String>>> {
        if let Some(t) = self.tags_if_fresh(repo) {
            return Ok(t);
        }
        if let Some(Err(e)) = self.tag_list_answer(repo) {
            return Err(e);
        }
        self.list_flights.run(&Some(repo.to_string()), || {
            let tags = match self.client.tags(repo) {
                Ok(tags) => tags,
                Err(e @ (Error::NotFound(_) | Error::Denied(_) | Error::TooLarge(_))) => {
                    lock(&self.meta)
                        .tag_list_answers()
                        .put(repo.to_string(), Timed { at: Instant::now(), value: Err(e.clone()) });
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            Ok(self.keep_tags(repo, tags))
        })
    }

    /// `tags`, as a tag list of `repo` fetched now: valid names only, sorted, kept for `tag_ttl`.
    fn keep_tags(&self, repo: &str, mut tags: Vec<String>) -> Arc<Vec<String>> {
        // The HTTP client already skips invalid names page by page, before holding them; this
        // check stands for any client.
        tags.retain(|t| valid_or_warn(t, names::check_tag(t), repo));
        tags.sort();
        tags.dedup();
        let tags = Arc::new(tags);
        static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let generation = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listed = Listed { at: Instant::now(), generation, weight: list_weight(&tags), names: Arc::clone(&tags) };
        lock(&self.tag_lists).put(repo.to_string(), listed);
        tags
    }

    /// What a tag list of `repo` answered within `tag_ttl` without a list (404, 401/403, too
    /// large), or that its first page answered (`Ok`), if it did; never a request.
    fn tag_list_answer(&self, repo: &str) -> Option<Result<()>> {
        let mut meta = lock(&self.meta);
        self.fresh(meta.tag_list_answers().get(repo))
    }

    /// Tags whose resolution is kept now.
    pub fn tag_digests_held(&self) -> usize {
        lock(&self.meta).tag_digests.as_ref().map_or(0, lru::LruCache::len)
    }

    /// Bytes the tag lists kept hold, as [`StoreConfig::tag_lists_bytes`] counts them.
    pub fn tag_list_bytes(&self) -> usize {
        lock(&self.tag_lists).bytes()
    }

    /// The tag list of `repo` if fetched within `tag_ttl`; never a request.
    pub fn tags_if_fresh(&self, repo: &str) -> Option<Arc<Vec<String>>> {
        let listed = lock(&self.tag_lists).get(&repo.to_string())?;
        (listed.at.elapsed() < self.tag_ttl).then_some(listed.names)
    }

    /// Which fetch the fresh tag list of `repo` is, if there is one (no request): a tag named
    /// by another fetch may have moved meanwhile.
    pub fn tag_list_generation(&self, repo: &str) -> Option<u64> {
        let listed = lock(&self.tag_lists).get(&repo.to_string())?;
        (listed.at.elapsed() < self.tag_ttl).then_some(listed.generation)
    }

    /// Whether `tag` exists, from a fresh tag list when there is one (no request), else `None`.
    pub fn tag_listed(&self, repo: &str, tag: &str) -> Option<bool> {
        self.tags_if_fresh(repo).map(|tags| tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok())
    }

    /// What `tag` points to, if resolved within `tag_ttl`; never a request.
    pub fn resolve_tag_if_known(&self, repo: &str, tag: &str) -> Option<Digest> {
        let mut meta = lock(&self.meta);
        self.fresh(meta.tag_digests().get(&(repo.to_string(), tag.to_string())))
    }

    /// What `tag` points to now (trusted for `tag_ttl`).
    pub fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Digest> {
        self.resolve_tag_within(repo, tag, self.tag_ttl)
    }

    /// [`Store::resolve_tag`], a resolution held used only if made within `max_age`.
    pub fn resolve_tag_within(&self, repo: &str, tag: &str, max_age: Duration) -> Result<Digest> {
        self.tag_digest_within(repo, tag, max_age, || match self.client.manifest(repo, tag, Fetch::Head) {
            Ok(head) => match head.digest_header.as_deref().map(str::parse::<Digest>) {
                Some(Ok(d)) => Ok(d),
                Some(Err(_)) => {
                    Err(Error::Protocol(format!("{}: bad Docker-Content-Digest {:?}", head.url, head.digest_header)))
                }
                // No digest in the answer: GET by tag and name the manifest by its hash.
                None => self.manifest_by_tag(repo, tag),
            },
            // Some registries and proxies refuse HEAD (405 and the like): the same GET.
            // 404 and refusals of access stay final.
            Err(Error::Protocol(why)) => {
                log::debug!("{why}; resolving {repo}:{tag} with GET");
                self.manifest_by_tag(repo, tag)
            }
            Err(e) => Err(e),
        })
    }

    /// The manifest `tag` names, verified: by the tag's digest if it was resolved within
    /// `max_age` (then by digest, from memory as a rule), else in one GET by tag, now (a HEAD
    /// first would cost a request more). For tags whose manifest is always read next, and which
    /// must count soon after they change: a cosign `sha256-<hex>.sig` tag.
    pub fn manifest_of_tag_within(&self, repo: &str, tag: &str, max_age: Duration) -> Result<Arc<VerifiedManifest>> {
        let digest = self.tag_digest_within(repo, tag, max_age, || self.manifest_by_tag(repo, tag))?;
        self.manifest(repo, &digest)
    }

    /// What `tag` names: its resolution if made within `max_age` (at most `tag_ttl`), else
    /// `resolve`d now, once however many ask at a time, and kept. Not listed under `manifests/`
    /// yet: only verified manifests are (see `keep_manifest`).
    fn tag_digest_within(
        &self,
        repo: &str,
        tag: &str,
        max_age: Duration,
        resolve: impl FnOnce() -> Result<Digest>,
    ) -> Result<Digest> {
        names::check_tag(tag)?;
        let key = (repo.to_string(), tag.to_string());
        let max_age = max_age.min(self.tag_ttl);
        let young = |meta: &mut Meta| {
            meta.tag_digests().get(&key).filter(|t| t.at.elapsed() < max_age).map(|t| t.value.clone())
        };
        if let Some(d) = young(&mut lock(&self.meta)) {
            return Ok(d);
        }
        self.tag_flights.run(&key, || {
            // A resolution that finished between the check above and this flight (the readahead's,
            // or another reader's) is not made again.
            if let Some(d) = young(&mut lock(&self.meta)) {
                return Ok(d);
            }
            let digest = resolve()?;
            lock(&self.meta).tag_digests().put(key.clone(), Timed { at: Instant::now(), value: digest.clone() });
            Ok(digest)
        })
    }

    /// How long names (tags, lists) are trusted.
    pub fn tag_ttl(&self) -> std::time::Duration {
        self.tag_ttl
    }

    /// GET a manifest by tag, name it by its own hash, and keep it.
    fn manifest_by_tag(&self, repo: &str, tag: &str) -> Result<Digest> {
        let reply = self.client.manifest(repo, tag, Fetch::Get)?;
        let url = reply.url.clone();
        let doc = match checked(reply, None) {
            Err(Error::DigestMismatch { .. }) if self.client.distrust(&url) => {
                checked(self.client.manifest(repo, tag, Fetch::Get)?, None)?
            }
            other => other?,
        };
        let digest = doc.digest.clone();
        self.keep_manifest(repo, doc);
        Ok(digest)
    }

    fn keep_manifest(&self, repo: &str, doc: VerifiedManifest) -> Arc<VerifiedManifest> {
        let doc = Arc::new(doc);
        lock(&self.manifests).put((repo.to_string(), doc.digest.clone()), Arc::clone(&doc));
        doc
    }

    /// The manifest `digest` of `repo` if it is verified and in memory now: asks nothing.
    pub fn manifest_now(&self, repo: &str, digest: &Digest) -> Option<Arc<VerifiedManifest>> {
        lock(&self.manifests).get(&(repo.to_string(), digest.clone()))
    }

    /// The manifest `digest` of `repo`, verified.
    pub fn manifest(&self, repo: &str, digest: &Digest) -> Result<Arc<VerifiedManifest>> {
        let key = (repo.to_string(), digest.clone());
        if let Some(doc) = lock(&self.manifests).get(&key) {
            return Ok(doc);
        }
        self.manifest_flights.run(&key, || {
            let reply = self.client.manifest(repo, &digest.to_string(), Fetch::Get)?;
            let url = reply.url.clone();
            let doc = match checked(reply, Some(digest)) {
                // A mirror served other bytes: it is dropped, and the next source asked once.
                Err(Error::DigestMismatch { .. }) if self.client.distrust(&url) => {
                    checked(self.client.manifest(repo, &digest.to_string(), Fetch::Get)?, Some(digest))?
                }
                other => other?,
            };
            Ok(self.keep_manifest(repo, doc))
        })
    }

    /// What refers to manifest `subject` of `repo`, trusted for `tag_ttl`: the referrers API's
    /// answer, unless this mount has seen it answer 404; then the index tagged by the referrers
    /// tag schema (`<alg>-<hex>`, hex cut to 64), fetched by tag and verified as any tag is (by
    /// its `Docker-Content-Digest`, else named by its hash). No such tag, or a tag that is not an
    /// image index, means nobody refers to `subject`. One request per subject per `tag_ttl`
    /// (two for the first subject that finds the API missing).
    pub fn referrers(&self, repo: &str, subject: &Digest) -> Result<Arc<Vec<Referrer>>> {
        self.referrers_within(repo, subject, self.tag_ttl)
    }

    /// [`Store::referrers`], the list held used only if fetched within `max_age`.
    pub fn referrers_within(&self, repo: &str, subject: &Digest, max_age: Duration) -> Result<Arc<Vec<Referrer>>> {
        let key = (repo.to_string(), subject.clone());
        let max_age = max_age.min(self.tag_ttl);
        if let Some(held) = lock(&self.referrers).get(&key).filter(|h| h.at.elapsed() < max_age) {
            return Ok(held.list);
        }
        self.referrer_flights.run(&key, || {
            let known_absent = lock(&self.no_referrers_api).get(repo).is_some_and(|at| at.elapsed() < self.tag_ttl);
            let api = if known_absent { None } else { self.client.referrers(repo, subject)? };
            let list = match api {
                Some(list) => list,
                None => {
                    if !known_absent {
                        log::info!(
                            "{repo}: no referrers API (404); reading the referrers tag schema for {} s",
                            self.tag_ttl.as_secs()
                        );
                        lock(&self.no_referrers_api).put(repo.to_string(), Instant::now());
                    }
                    self.referrers_by_tag(repo, subject)?
                }
            };
            let list = Arc::new(list);
            let held = HeldReferrers { at: Instant::now(), list: Arc::clone(&list) };
            lock(&self.referrers).put(key.clone(), held);
            Ok(list)
        })
    }

    /// The referrers tag schema's index of `subject`, fetched by tag in one GET.
    fn referrers_by_tag(&self, repo: &str, subject: &Digest) -> Result<Vec<Referrer>> {
        let hex = subject.hex();
        let tag = format!("{}-{}", subject.algorithm().name(), &hex[..hex.len().min(64)]);
        let reply = match self.client.manifest(repo, &tag, Fetch::Get) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let doc = self.keep_manifest(repo, checked(reply, None)?);
        let key = (repo.to_string(), tag.clone());
        lock(&self.meta).tag_digests().put(key, Timed { at: Instant::now(), value: doc.digest.clone() });
        if doc.manifest.kind != Kind::OciIndex {
            log::warn!("{repo}:{tag} is not an image index ({}): no referrers shown for {subject}", doc.digest);
            return Ok(Vec::new());
        }
        referrers::parse(doc.bytes(), &format!("{repo}:{tag}@{}", doc.digest))
    }

    /// Manifests of `repo` verified (through tags or lookups) and still held in memory, sorted,
    /// for listing `manifests/`: pruned with the manifest cache, so the list is bounded by it.
    pub fn seen_manifests(&self, repo: &str) -> Vec<Digest> {
        let mut seen: Vec<Digest> =
            lock(&self.manifests).iter().filter(|((r, _), _)| r == repo).map(|((_, d), _)| d.clone()).collect();
        seen.sort();
        seen
    }

    /// A blob's size as shown: `claimed` (the size in the descriptor that named the file) when
    /// there is one; else the verified length when the blob is cached, else what a HEAD says
    /// (which also proves the blob exists in `repo`).
    pub fn blob_size(&self, repo: &str, digest: &Digest, claimed: Option<u64>) -> Result<u64> {
        if let Some(s) = claimed {
            return Ok(s);
        }
        if let Some(s) = self.blobs.verified_len(digest) {
            return Ok(s);
        }
        let key = (repo.to_string(), digest.clone());
        if let Some(&s) = lock(&self.meta).head_sizes().get(&key) {
            return Ok(s);
        }
        self.size_flights.run(&key, || {
            let size = self.client.blob_size(repo, digest)?;
            if size > limits::MAX_BLOB_SIZE {
                return Err(Error::TooLarge(format!("blob {digest} of {repo}: {size} bytes")));
            }
            lock(&self.meta).head_sizes().put(key.clone(), size);
            Ok(size)
        })
    }

    /// A blob's verified content: small ones from memory, others from the disk cache. `claimed`
    /// is the size the descriptor naming it declares, if any: verified content of another length
    /// is an error for that descriptor's file only (the content stays cached for everyone else).
    pub fn blob(&self, repo: &str, digest: &Digest, claimed: Option<u64>) -> Result<Content> {
        if let Some(ready) = self.blob_now(repo, digest, claimed) {
            return ready;
        }
        // The download is bounded by the size shown: the descriptor's claim, else what HEAD said.
        let key = (repo.to_string(), digest.clone());
        let head = if claimed.is_none() { lock(&self.meta).head_sizes().peek(&key).copied() } else { None };
        let opened = match self.blobs.open_bounded(&*self.client, repo, digest, claimed.or(head), claimed.is_some()) {
            // The registry does not have it: a foreign layer's URLs may.
            Err(e @ Error::NotFound(_)) => self.foreign_blob(repo, digest, claimed.or(head)).unwrap_or(Err(e)),
            other => other,
        };
        let file = opened.map_err(|e| match (e, claimed) {
            // A body longer than claimed: say whose claim it was.
            (Error::DigestMismatch { what, expected, actual }, Some(c)) => Error::DigestMismatch {
                what: format!("{what} as described by {}", self.claimants(repo, digest, c)),
                expected,
                actual,
            },
            (e @ Error::DigestMismatch { .. }, None) if head.is_some() => {
                // Longer than HEAD said: that answer is not kept (a new HEAD is asked next time).
                lock(&self.meta).head_sizes().pop(&key);
                e
            }
            (e, _) => e,
        })?;
        let len = file.metadata()?.len();
        let content = if len <= self.small_blob {
            let mut bytes = vec![0u8; len as usize];
            // pread: the descriptor may be shared with other readers.
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, 0)?;
            let bytes = Arc::new(bytes);
            lock(&self.small).put(digest.clone(), Arc::clone(&bytes));
            Content::Memory(bytes)
        } else {
            Content::File(file)
        };
        self.check_claim(repo, digest, claimed, len)?;
        self.check_head_size(repo, digest, claimed, len)?;
        Ok(content)
    }

    /// A blob the registry does not have, from the `urls` a descriptor of it lists in a
    /// manifest of `repo` held in memory (the manifest the reader came through), if the rules
    /// allow every one of them; `None` (the registry's 404 stands) when no descriptor lists URLs
    /// or they are refused, which is logged once per layer with how to allow them.
    fn foreign_blob(&self, repo: &str, digest: &Digest, size: Option<u64>) -> Option<Result<Arc<File>>> {
        let urls = lock(&self.manifests)
            .iter()
            .filter(|((r, _), _)| r == repo)
            .flat_map(|(_, doc)| doc.manifest.config.iter().chain(doc.manifest.layers.iter().map(|(_, d)| d)))
            .find(|d| d.digest == *digest && !d.urls.is_empty())
            .map(|d| d.urls.clone())?;
        let default = foreign::UrlRules::default();
        let rules = self.foreign.as_ref().map_or(&default, |f| f.rules());
        match (rules.check(&urls), &self.foreign) {
            (Ok(allowed), Some(foreign)) => Some(self.blobs.open_foreign(foreign, &allowed, digest, size)),
            (Ok(_), None) => None,
            (Err(why), _) => {
                if lock(&self.refused_foreign).put(digest.clone(), ()).is_none() {
                    let hint = match foreign::allow_hint(&urls).filter(|_| !rules.allows_any()) {
                        Some(h) => format!("; pass {h} to fetch it"),
                        None => String::new(),
                    };
                    log::warn!(
                        "{repo}: layer {digest} is not in the registry and has {} urls, not used: {why}{hint}",
                        urls.len()
                    );
                }
                None
            }
        }
    }

    /// Bytes `start..end` of blob `digest` of `repo`, whose size `size` a verified manifest
    /// declares: from the verified blob if it is cached (no request), else by one `Range`
    /// request. `Ok(None)` when the registry does not honour `Range` (the caller reads the whole
    /// blob instead). Nothing here verifies the bytes (their caller checks them against a digest
    /// the manifest covers); a reply of another length than asked is a fault (`Protocol`), and
    /// a range past `size` or longer than [`limits::MAX_RANGE_FETCH`] is never asked.
    pub fn blob_range(&self, repo: &str, digest: &Digest, size: u64, start: u64, end: u64) -> Result<Option<Vec<u8>>> {
        let what = || format!("bytes {start}..{end} of blob {digest} of {repo}");
        if start >= end || end > size || end - start > limits::MAX_RANGE_FETCH {
            return Err(Error::malformed(what(), format!("not a range of a blob of {size} bytes")));
        }
        let len = (end - start) as usize;
        if let Some(bytes) = lock(&self.small).get(digest) {
            return Ok(bytes.get(start as usize..end as usize).map(<[u8]>::to_vec));
        }
        if let Some(file) = self.blobs.open_verified(cache::Kind::Blob, digest)? {
            let mut buf = vec![0u8; len];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, start)
                .map_err(|e| Error::Io(format!("{}: {e}", what())))?;
            return Ok(Some(buf));
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let reply = self.client.blob_range(repo, digest, start, end)?;
            if !reply.ranged {
                log::info!("{}: Range not honoured; {} is read whole", reply.url, digest);
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(len);
            let read = std::io::Read::read_to_end(&mut std::io::Read::take(reply.reader, len as u64 + 1), &mut buf);
            match read {
                Ok(_) if buf.len() == len => return Ok(Some(buf)),
                Ok(_) => {
                    let e = Error::Protocol(format!("{}: {} bytes sent for a range of {len}", reply.url, buf.len()));
                    if buf.len() > len || tries >= 3 {
                        return Err(e);
                    }
                    log::info!("{e}; asking again");
                }
                Err(e) if tries < 3 => log::info!("{}: {e}; asking again", reply.url),
                Err(e) => return Err(Error::Unavailable(format!("{}: {e}", reply.url))),
            }
        }
    }

    /// Bytes `start..end` of blob `digest` if it is verified and at hand (in memory or in the
    /// cache), else `None`; never a request.
    pub fn blob_range_cached(&self, digest: &Digest, start: u64, end: u64) -> Result<Option<Vec<u8>>> {
        let what = || format!("bytes {start}..{end} of blob {digest}");
        if start >= end || end - start > limits::MAX_RANGE_FETCH {
            return Err(Error::malformed(what(), "not a range to read"));
        }
        if let Some(bytes) = lock(&self.small).get(digest) {
            return Ok(bytes.get(start as usize..end as usize).map(<[u8]>::to_vec));
        }
        let Some(file) = self.blobs.open_verified(cache::Kind::Blob, digest)? else { return Ok(None) };
        let mut buf = vec![0u8; (end - start) as usize];
        match std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, start) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::Io(format!("{}: {e}", what()))),
        }
    }

    /// [`Store::blob`] if it needs no waiting (a small blob verified and in memory); `None` if
    /// it may have to download or hash.
    pub fn blob_now(&self, repo: &str, digest: &Digest, claimed: Option<u64>) -> Option<Result<Content>> {
        let bytes = lock(&self.small).get(digest)?;
        let checked = self
            .check_claim(repo, digest, claimed, bytes.len() as u64)
            .and_then(|()| self.check_head_size(repo, digest, claimed, bytes.len() as u64));
        Some(checked.map(|()| Content::Memory(bytes)))
    }

    /// Where no descriptor sized the file, its size was shown from a HEAD: if that disagrees with
    /// the verified content, the size shown was wrong, so the open fails (once: the HEAD's word is
    /// dropped, and the verified length is shown from then on).
    fn check_head_size(&self, repo: &str, digest: &Digest, claimed: Option<u64>, len: u64) -> Result<()> {
        if claimed.is_some() {
            return Ok(());
        }
        let key = (repo.to_string(), digest.clone());
        let mut meta = lock(&self.meta);
        let Some(head) = meta.head_sizes().peek(&key).copied().filter(|h| *h != len) else { return Ok(()) };
        meta.head_sizes().pop(&key);
        drop(meta);
        log::warn!("{repo}: HEAD said {digest} has {head} bytes; its verified content has {len}");
        Err(Error::DigestMismatch {
            what: format!("blob {digest} of {repo} as sized by HEAD"),
            expected: format!("{head} bytes"),
            actual: format!("{len} bytes of verified content"),
        })
    }

    /// The manifests in memory that name `digest` in `repo` with size `claimed`, for messages.
    fn claimants(&self, repo: &str, digest: &Digest, claimed: u64) -> String {
        let manifests: Vec<String> = lock(&self.manifests)
            .iter()
            .filter(|((r, _), doc)| r == repo && doc.manifest.sized_blobs().any(|(d, s)| d == digest && s == claimed))
            .map(|((_, d), _)| d.to_string())
            .collect();
        if manifests.is_empty() { format!("a descriptor of {claimed} bytes") } else { manifests.join(", ") }
    }

    /// Whether verified content of `len` bytes is what a descriptor claiming `claimed` names.
    fn check_claim(&self, repo: &str, digest: &Digest, claimed: Option<u64>, len: u64) -> Result<()> {
        let Some(claimed) = claimed.filter(|c| *c != len) else { return Ok(()) };
        let by = self.claimants(repo, digest, claimed);
        log::warn!("{repo}: {by} says {digest} has {claimed} bytes; its verified content has {len}");
        Err(Error::DigestMismatch {
            what: format!("blob {digest} of {repo} as described by {by}"),
            expected: format!("{claimed} bytes"),
            actual: format!("{len} bytes of verified content"),
        })
    }
}

/// A manifest reply, parsed and checked: against `expected` when it was fetched by digest, and
/// against its `Docker-Content-Digest` whenever the registry sent one. Named by the digest asked
/// for, else by its own sha256. The one place a manifest is verified.
fn checked(reply: ManifestReply, expected: Option<&Digest>) -> Result<VerifiedManifest> {
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
    Ok(VerifiedManifest { digest, manifest: m })
}

/// What a list of names holds, as listings are budgeted.
fn list_weight(names: &[String]) -> usize {
    names.iter().map(|n| n.len() + limits::LIST_ENTRY_OVERHEAD).sum()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn doc(bytes: &[u8], content_type: &str) -> Arc<VerifiedManifest> {
        let m = manifest::parse(bytes, Some(content_type), "t").expect("test input is valid");
        Arc::new(VerifiedManifest { digest: m.digest(Algorithm::Sha256), manifest: m })
    }

    #[test]
    fn a_cached_manifest_weighs_all_it_holds() {
        // An index of many entries with long platform names: its parsed form outweighs its bytes.
        let entries: Vec<_> = (0..2000)
            .map(|i| {
                serde_json::json!({"mediaType": crate::media::OCI_MANIFEST, "size": 1,
                    "digest": format!("sha256:{:064x}", i),
                    "platform": {"os": "l", "architecture": format!("a{i}"), "variant": "v".repeat(40)}})
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": crate::media::OCI_INDEX, "manifests": entries});
        let bytes = serde_json::to_vec(&index).expect("test input is valid");
        let d = doc(&bytes, crate::media::OCI_INDEX);
        let parsed: usize = d
            .manifest
            .children
            .iter()
            .map(|(name, c)| {
                std::mem::size_of::<(String, manifest::Descriptor)>()
                    + name.len()
                    + c.media_type.len()
                    + c.digest.hex().len()
                    + c.platform.as_ref().map_or(0, |p| p.os.len() + p.architecture.len() + p.variant.len())
            })
            .sum();
        let w = d.weight();
        assert!(w >= bytes.len() + parsed, "weight {w} < {} bytes + {parsed} parsed", bytes.len());
        assert!(w <= 2 * (bytes.len() + parsed), "weight {w} is not honest either");

        // An artifact of many titled layers holds each title twice: in its descriptor and as a name.
        let layers: Vec<_> = (0..2000)
            .map(|i| {
                serde_json::json!({"mediaType": "x", "size": 1, "digest": format!("sha256:{:064x}", i),
                    "annotations": {manifest::TITLE_ANNOTATION: format!("{i}-{}", "t".repeat(200))}})
            })
            .collect();
        let art = serde_json::json!({"schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "x", "size": 2, "digest": format!("sha256:{}", "c".repeat(64))}, "layers": layers});
        let bytes = serde_json::to_vec(&art).expect("test input is valid");
        let d = doc(&bytes, crate::media::OCI_MANIFEST);
        assert_eq!(d.manifest.titles.len(), 2000);
        let titles: usize = d.manifest.titles.iter().map(|(t, _)| 2 * t.len()).sum();
        let w = d.weight();
        assert!(w >= bytes.len() + titles, "weight {w} < {} bytes + {titles} of titles", bytes.len());

        // Signed schema1 holds its payload besides its bytes.
        let s1 = std::fs::read(format!("{}/tests/fixtures/schema1-signed.json", env!("CARGO_MANIFEST_DIR")))
            .expect("test input is valid");
        let d = doc(&s1, crate::media::DOCKER_SCHEMA1_SIGNED);
        assert!(d.weight() >= s1.len() + 400, "weight {} for {} bytes and a payload", d.weight(), s1.len());
    }

    /// Besides the manifest, a cached entry holds its digest (in the value, and again in the key,
    /// each with its hex digits), the key itself and the `Arc`'s counts: the weight allows for at
    /// least those, and not much more (under 1 KiB), so that the 64 MiB of the manifest cache,
    /// filled with small manifests, is neither many times that in memory nor a fraction of it.
    #[test]
    fn a_cached_manifest_s_entry_is_weighed_for_its_digests_and_key_too() {
        use std::mem::size_of;
        let d =
            doc(br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing"}"#, "application/vnd.example.thing");
        let entry = d.weight().checked_sub(d.manifest.weight()).expect("the entry weighs its manifest");
        let hex = d.digest.hex().len();
        let held = 2 * size_of::<usize>() + size_of::<Digest>() + hex + size_of::<(String, Digest)>() + hex;
        assert!(entry >= held, "{entry} bytes allowed for an entry holding {held}");
        assert!(entry < 1024, "{entry} bytes allowed for an entry holding {held}");
    }
    /// The repositories remembered to have no referrers API are the config's count.
    #[test]
    fn repositories_without_a_referrers_api_are_kept_up_to_the_config_s_count() {
        let cache = tempfile::tempdir().expect("cache");
        let at = |n: usize| {
            let config =
                StoreConfig { cache_dir: cache.path().to_path_buf(), no_referrers_api: n, ..Default::default() };
            let store = Store::new(Arc::new(crate::testkit::fake::Fake::default()), &config).expect("store");
            lock(&store.no_referrers_api).cap().get()
        };
        assert_eq!((at(3), at(StoreConfig::default().no_referrers_api)), (3, 4096));
    }
}
