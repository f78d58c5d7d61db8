//! The verified, content-addressed blob cache on disk, and the files derived from blobs.
//!
//! # Namespaces
//! One directory per [`Kind`], each `<kind>/<algorithm>/<hex>`: `blobs/` (by the blob's digest),
//! `decoded/` (a layer decoded, by its diff_id), `decoded-from/` (a schema1 layer decoded, by its
//! blob's digest) and `index/` (a layer's index, by its diff_id). They share one LRU, one
//! `--cache-size`, one `tmp/`, the same charge and cancellation hook, and the same rules below:
//! a derived file is made into `tmp/` by its producer (a decoder, an index builder), which
//! verifies what it wrote (a decoded layer against its diff_id) before it is renamed into place;
//! one left by an earlier run is checked by its caller's rule before any byte is served (hashed
//! again for `decoded/`; see [`BlobCache::open_derived`]). An `index/` file an earlier run left
//! is never trusted on what it says of itself (a trailer, a recorded diff_id: a local user can
//! rewrite any file here between runs and recompute both): `views` reads back only index files
//! this process made or checked ([`BlobCache::open_verified`]), and checks one already there
//! against the index it built itself from the verified tar, byte for byte; a remount so hashes
//! (and indexes) each decoded tar once. One derived file larger than the whole cache is refused
//! ([`Error::TooLarge`]): that bounds a decompression bomb by the disk.
//!
//! # Invariants
//! - A file under `blobs/<algorithm>/<hex>` holds exactly the bytes of that digest. It got there
//!   by being downloaded to `tmp/`, hashed while it downloaded, compared with the digest, and
//!   renamed; a mismatch deletes it. Nothing outside `tmp/` is ever half-written.
//! - A file left by an earlier run is hashed again the first time this run uses it, before any
//!   byte of it is served; a file altered on disk is deleted and downloaded anew.
//! - `tmp/` is emptied at start-up: whatever a killed process left there is never served.
//! - One process per cache directory: an exclusive `flock` on `lock` is held for the life of the
//!   cache, so a second regfs on the same directory stops at start-up instead of emptying the
//!   first one's `tmp/` under it. A killed process's lock dies with it.
//! - `blobs/` and `tmp/` are private (0700): they may hold layers of private images.
//! - The directory is regfs's own, and used only through descriptors (`dir.rs`): the root must
//!   be the user's and writable by no one else; no link inside it is ever followed (a link found
//!   where a directory, the lock or a blob should be is removed, not followed), and only a
//!   regular file is ever served as a blob.
//! - Past `--cache-size`, the least recently used files are deleted. A file still open by a reader
//!   stays readable (unlinked files live on while open), so eviction never breaks a read.
//! - All open handles of one blob share one descriptor (the verified file, held while any reader
//!   holds it): descriptors grow with distinct blobs open, never with handles.
//! - Downloads in progress count against `--cache-size` (a [`Charge`] each, counted before every
//!   chunk is written): as one grows, finished files make room. Only when downloads in progress
//!   alone exceed the limit does the cache go over it, and then it holds nothing else.
//!
//! # Downloads
//! One per digest at a time (single flight), into `tmp/`, by [`download::fetch`]: streamed,
//! resumed and hashed as it goes; or, for a blob larger than [`DownloadConfig::ranged_above`] by
//! its descriptor's size (never a HEAD's), by [`ranged::fetch`]: `Range` requests at once,
//! written in place, hashed in order, resumed per piece. The cache gives either the open
//! temporary file (it names, renames and removes it itself, through `dir.rs`) and a hook run
//! before every chunk is written (the ranged download runs it for its workers, before they write,
//! and at least every 100 ms), where it counts the download's [`Charge`] and checks for
//! [`BlobCache::cancel`]: at unmount downloads stop at their next chunk; a socket read already
//! blocked ends within `--timeout`, but nobody waits for it (`fuse.rs`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::StoreConfig;
use super::dir::{CacheDir, file_type};
use super::download::{self, DownloadConfig};
use super::flight::SingleFlight;
use super::ranged;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::registry::Client;
use crate::registry::foreign::{self, Foreign};
use crate::sync;
use reqwest::Url;

/// Each has its directory `<kind>/<name>/`, opened at start and held.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// What a cached file is: where it lives, and how a file an earlier run left is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A blob, by its own digest (`blobs/<alg>/<hex>`), hashed again after a restart.
    Blob,
    /// A layer decoded, by its diff_id (`decoded/<alg>/<hex>`), hashed again after a restart.
    Decoded,
    /// A schema1 layer decoded, by its blob's digest (`decoded-from/<alg>/<hex>`): schema1 has
    /// no diff_id, so its decoder's caller says how an earlier run's file is checked.
    DecodedFrom,
    /// A layer's index, by its diff_id (`index/<alg>/<hex>`): used only as made or checked by
    /// this process (its caller compares one an earlier run left with the index it built).
    Index,
    /// A chunk of a layer read lazily, decompressed, by its own digest (`chunks/<alg>/<hex>`),
    /// hashed again after a restart.
    Chunk,
}

/// Every kind, each with its directory, opened at start.
const KINDS: [Kind; 5] = [Kind::Blob, Kind::Decoded, Kind::DecodedFrom, Kind::Index, Kind::Chunk];

impl Kind {
    /// Its directory under the cache root.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Decoded => "decoded",
            Kind::DecodedFrom => "decoded-from",
            Kind::Index => "index",
            Kind::Chunk => "chunks",
        }
    }
}

/// A cached file: its kind, and the digest that names it.
type Key = (Kind, Digest);

/// How an earlier run's file is checked: its length if it is still right.
pub type Check<'a> = dyn Fn(&mut File) -> Result<u64> + 'a;
/// How a derived file is made into the open temporary file: `hook(bytes)` before each chunk is
/// written (it counts the charge, checks cancellation and the size bound; an error stops the
/// work); the producer verifies what it wrote and returns its length.
pub type Produce<'a> = dyn Fn(&mut File, &mut dyn FnMut(u64) -> Result<()>) -> Result<u64> + 'a;

struct State {
    /// Every cached file, least recently used first, with its size.
    lru: LruCache<Key, u64>,
    total: u64,
    /// Bytes written to `tmp/` by downloads and decodes in progress: they count against the
    /// limit too.
    downloading: u64,
    /// Files checked (or made) by this process.
    verified: HashSet<Key>,
}

pub struct BlobCache {
    /// The root, kept for the `flock` it holds, which makes the directory this process's alone.
    _root: CacheDir,
    /// `<kind>/` of each kind.
    roots: HashMap<Kind, CacheDir>,
    tmp: CacheDir,
    /// `<kind>/<algorithm>/`, opened once each.
    algorithms: Mutex<HashMap<(Kind, &'static str), CacheDir>>,
    limit: u64,
    download: DownloadConfig,
    state: Mutex<State>,
    /// Each download's result is the verified file, already open: waiters share the descriptor,
    /// so eviction (which only unlinks paths) can never pull it from under them. Keyed by the
    /// size that bounds the download too, so that a descriptor claiming a wrong size fails only
    /// its own flight, never an honest reader's.
    flights: SingleFlight<(Digest, Option<u64>), Arc<File>>,
    /// Foreign layers' downloads from their URLs (`open_foreign`), apart from `flights`: a reader
    /// turning to the URLs must not join a registry download of the same blob (whose 404 it has
    /// seen already) that another reader started meanwhile.
    foreign_flights: SingleFlight<(Digest, Option<u64>), Arc<File>>,
    /// One making of each derived file at a time.
    derived_flights: SingleFlight<Key, Arc<File>>,
    tmp_seq: AtomicU64,
    /// The verified file of each blob some reader holds open: every open of it shares that one
    /// descriptor, so handles cost no descriptor each (a local user holding thousands of handles
    /// open cannot run regfs out of them), and a blob evicted while open needs no new download.
    open_files: Mutex<HashMap<Key, std::sync::Weak<File>>>,
    /// Files evicted so far: a holder of open files (the contents kept for reads by inode) that
    /// sees it change looks for files of its own that were evicted, so as not to keep their
    /// disk space ([`BlobCache::evictions`]). A generation as well as a count: written after the
    /// removals (Release) so that whoever reads it (Acquire) sees them.
    evictions: AtomicU64,
    /// Bytes hashed and found good, for the summary regfs logs at unmount.
    verified_bytes: crate::telemetry::Counter,
    /// Set at unmount: downloads stop.
    cancelled: AtomicBool,
    /// The downloads (and, from `views`, decodes) in flight, for `.regfs/status`.
    activity: crate::telemetry::Activity,
}

/// Deletes a temporary file unless it was kept.
struct TempFile {
    /// Its name in `dir`, through which it is renamed or removed.
    name: String,
    dir: CacheDir,
    file: File,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.dir.remove(self.name.as_str());
        }
    }
}

impl BlobCache {
    /// Open (creating) the cache under `config.cache_dir`, empty its `tmp/`, and take stock of
    /// what it holds; it keeps within `config.cache_size`.
    pub fn new(config: &StoreConfig) -> Result<BlobCache> {
        BlobCache::in_dir(CacheDir::open_root(&config.cache_dir)?, config)
    }

    /// The cache in `root`, a root opened and checked already ([`CacheDir::open_root`]);
    /// `config.cache_dir` is not looked at.
    pub fn in_dir(mut root: CacheDir, config: &StoreConfig) -> Result<BlobCache> {
        let limit = config.cache_size;
        // Taken before anything else is touched (if the caller has not taken it already):
        // another regfs may be using the directory. The pid written is this process's.
        root.lock()?;
        root.note_holder()?;
        let tmp = root.subdir("tmp")?;
        for (name, st) in tmp.entries()? {
            if file_type(&st) != rustix::fs::FileType::Directory {
                let _ = tmp.remove(name.as_c_str());
            }
        }
        let mut found = Vec::new();
        let mut roots = HashMap::new();
        let mut algorithms = HashMap::new();
        for kind in KINDS {
            let top = root.subdir(kind.dir())?;
            for (name, st) in top.entries()? {
                let alg = name.to_str().ok().and_then(|n| ALGORITHMS.into_iter().find(|a| a.name() == n));
                let Some(alg) = alg.filter(|_| file_type(&st) == rustix::fs::FileType::Directory) else {
                    log::warn!("cache: removing stray {}", top.path().join(name.to_string_lossy().as_ref()).display());
                    let _ = top.remove(name.as_c_str());
                    continue;
                };
                let alg_dir = top.subdir(alg.name())?;
                for (entry, st) in alg_dir.entries()? {
                    let digest =
                        entry.to_str().ok().and_then(|hex| format!("{}:{hex}", alg.name()).parse::<Digest>().ok());
                    match digest {
                        Some(d) if file_type(&st) == rustix::fs::FileType::RegularFile => {
                            found.push(((st.st_mtime, st.st_mtime_nsec), (kind, d), st.st_size as u64))
                        }
                        _ => {
                            log::warn!(
                                "cache: removing stray {}",
                                alg_dir.path().join(entry.to_string_lossy().as_ref()).display()
                            );
                            let _ = alg_dir.remove(entry.as_c_str());
                        }
                    }
                }
                algorithms.insert((kind, alg.name()), alg_dir);
            }
            // All opened now, so the descriptors a running cache holds do not grow with use.
            for alg in ALGORITHMS {
                if let std::collections::hash_map::Entry::Vacant(e) = algorithms.entry((kind, alg.name())) {
                    e.insert(top.subdir(alg.name())?);
                }
            }
            roots.insert(kind, top);
        }
        found.sort();
        let mut state = State { lru: LruCache::unbounded(), total: 0, downloading: 0, verified: HashSet::new() };
        for (_, key, len) in found {
            state.total += len;
            state.lru.put(key, len);
        }
        let cache = BlobCache {
            _root: root,
            roots,
            tmp,
            algorithms: Mutex::new(algorithms),
            limit,
            download: config.download.clone(),
            state: Mutex::new(state),
            flights: SingleFlight::default(),
            foreign_flights: SingleFlight::default(),
            derived_flights: SingleFlight::default(),
            tmp_seq: AtomicU64::new(0),
            open_files: Mutex::default(),
            evictions: AtomicU64::new(0),
            verified_bytes: crate::telemetry::Counter::default(),
            cancelled: AtomicBool::new(false),
            activity: crate::telemetry::Activity::default(),
        };
        cache.evict(None);
        Ok(cache)
    }

    /// Where `key` is kept, for messages: it is opened through [`BlobCache::algorithm_dir`].
    fn path(&self, (kind, digest): &Key) -> PathBuf {
        let root = self.roots.get(kind).map(|d| d.path().to_path_buf()).unwrap_or_else(|| PathBuf::from(kind.dir()));
        root.join(digest.algorithm().name()).join(digest.hex())
    }

    /// `<kind>/<algorithm>/` of `key` (each is opened at start and held).
    fn algorithm_dir(&self, (kind, digest): &Key) -> Result<CacheDir> {
        let name = digest.algorithm().name();
        let mut dirs = sync::lock(&self.algorithms);
        if let Some(d) = dirs.get(&(*kind, name)) {
            return Ok(d.clone());
        }
        let top = self.roots.get(kind).ok_or_else(|| Error::Io(format!("cache: no {} directory", kind.dir())))?;
        let d = top.subdir(name)?;
        dirs.insert((*kind, name), d.clone());
        Ok(d)
    }

    /// The cached file of `key`, if there is one and it is a regular file (see `dir.rs`).
    fn open_cached(&self, key: &Key) -> Result<Option<File>> {
        self.algorithm_dir(key)?.open_regular(key.1.hex())
    }

    /// Bytes held on disk now.
    pub fn size(&self) -> u64 {
        sync::lock(&self.state).total
    }

    /// The most bytes the cache holds (`--cache-size`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Files held on disk now.
    pub fn len(&self) -> usize {
        sync::lock(&self.state).lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The work in flight (for `.regfs/status`).
    pub fn activity(&self) -> &crate::telemetry::Activity {
        &self.activity
    }

    /// The length of blob `digest`'s file if this process has verified it; never a request.
    pub fn verified_len(&self, digest: &Digest) -> Option<u64> {
        self.derived_len(Kind::Blob, digest)
    }

    /// The length of the `kind` file named `key` if this process has checked or made it; never
    /// any work.
    pub fn derived_len(&self, kind: Kind, key: &Digest) -> Option<u64> {
        let key = (kind, key.clone());
        let s = sync::lock(&self.state);
        s.verified.contains(&key).then(|| s.lru.peek(&key).copied()).flatten()
    }

    /// An open file holding exactly the bytes of `digest`, downloading and verifying it first
    /// if need be. `size` is a descriptor's claim, when there is one: it bounds the download (a
    /// longer body is refused at once), but it is only a claim, so a file that hashes right is
    /// returned (and kept) whatever its length; the caller compares. Read it with `read_at`
    /// (pread): the descriptor may be shared with other readers of the same blob.
    pub fn open(&self, client: &dyn Client, repo: &str, digest: &Digest, size: Option<u64>) -> Result<Arc<File>> {
        self.open_bounded(client, repo, digest, size, true)
    }

    /// [`BlobCache::open`] bounded by `size`, which is a descriptor's size if `described`, else
    /// only a HEAD's word: a blob larger than [`DownloadConfig::ranged_above`] is downloaded by
    /// ranges at once only by a descriptor's size (`ranged.rs`), never by a HEAD's.
    pub fn open_bounded(
        &self,
        client: &dyn Client,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
        described: bool,
    ) -> Result<Arc<File>> {
        let key = (Kind::Blob, digest.clone());
        if let Some(f) = self.ready(&key)? {
            return Ok(f);
        }
        let _shown = self.activity.show(crate::telemetry::Work::Download, repo, digest, size); // `.regfs/status`
        let check = |f: &mut File| hash_file(f, digest, self.download.chunk);
        let ranged =
            size.filter(|s| described && *s <= crate::limits::MAX_BLOB_SIZE && ranged::wanted(&self.download, *s));
        // Where the bytes came from: a mirror among them that served wrong bytes is dropped
        // (`Client::distrust`) and the download made once more from the next source.
        let urls = Mutex::new(Vec::new());
        let attempt = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| {
            let mut body = |from| {
                let reply = client.blob(repo, digest, from)?;
                sync::lock(&urls).push(reply.url.clone());
                Ok(reply)
            };
            match ranged {
                Some(size) => {
                    let range = |start, end| {
                        let reply = client.blob_range(repo, digest, start, end)?;
                        sync::lock(&urls).push(reply.url.clone());
                        Ok(reply)
                    };
                    ranged::fetch(&self.download, repo, digest, size, &range, &mut body, out, hook)
                }
                None => download::fetch(&self.download, repo, digest, size, &mut body, out, hook),
            }
        };
        let produce = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| match attempt(out, hook) {
            Err(e @ Error::DigestMismatch { .. }) => {
                let mut again = false;
                let mut seen = std::mem::take(&mut *sync::lock(&urls));
                seen.sort();
                seen.dedup();
                for url in seen {
                    again |= client.distrust(&url);
                }
                if !again {
                    return Err(e);
                }
                out.set_len(0)?;
                std::io::Seek::rewind(out)?;
                attempt(out, hook)
            }
            other => other,
        };
        let f = self.flights.run(&(digest.clone(), size), || self.fill(&key, &check, &produce))?;
        Ok(self.share(&key, f))
    }

    /// [`BlobCache::open`] for a blob the registry does not have, from a foreign layer's URLs
    /// (allowed already by the caller), tried in order until one gives the blob; each is
    /// downloaded as a registry blob is (resumed, bounded by `size`, verified). The last
    /// failure is returned when none does, and each is logged naming the URL and the digest.
    pub fn open_foreign(
        &self,
        foreign: &Foreign,
        urls: &[Url],
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Arc<File>> {
        let key = (Kind::Blob, digest.clone());
        if let Some(f) = self.ready(&key)? {
            return Ok(f);
        }
        let _shown = self.activity.show(crate::telemetry::Work::Download, "(foreign layer)", digest, size); // `.regfs/status`
        let check = |f: &mut File| hash_file(f, digest, self.download.chunk);
        let produce = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| {
            let mut last = Error::NotFound(format!("{digest}: no URL to fetch it from"));
            for url in urls {
                // What an earlier URL left is not kept (the hook is told the file is empty again).
                out.set_len(0)?;
                out.rewind()?;
                let shown = foreign::shown(url);
                log::info!("fetching {digest} from {shown} (a foreign layer: the registry does not have it)");
                let mut body = |from| foreign.get(url, from);
                match download::fetch(&self.download, &shown, digest, size, &mut body, out, hook) {
                    Ok(len) => return Ok(len),
                    Err(e @ (Error::Cancelled(_) | Error::Interrupted(_))) => return Err(e),
                    Err(e) => {
                        log::warn!("foreign layer {digest} from {shown}: {e}");
                        last = e;
                    }
                }
            }
            Err(last)
        };
        let f = self.foreign_flights.run(&(digest.clone(), size), || self.fill(&key, &check, &produce))?;
        Ok(self.share(&key, f))
    }

    /// The file `kind`/`key`, derived from verified content (a decoded layer, an index): checked
    /// with `check` if an earlier run left it, else made by `produce` into `tmp/` (one making per
    /// key at a time), renamed into place and kept like a blob, within the same `--cache-size`.
    /// Its bytes count against the limit as they are written, and one file larger than the
    /// whole cache is refused ([`Error::TooLarge`]) as soon as it gets there: nothing is kept.
    pub fn open_derived(&self, kind: Kind, key: &Digest, check: &Check, produce: &Produce) -> Result<Arc<File>> {
        let key = (kind, key.clone());
        if let Some(f) = self.ready(&key)? {
            return Ok(f);
        }
        let limit = self.limit;
        let bounded = |out: &mut File, hook: &mut dyn FnMut(u64) -> Result<()>| {
            produce(out, &mut |held| {
                if held > limit {
                    return Err(Error::TooLarge(format!(
                        "{} {}: more than the cache's {limit} bytes (--cache-size)",
                        kind.dir(),
                        key.1
                    )));
                }
                hook(held)
            })
        };
        let f = self.derived_flights.run(&key, || self.fill(&key, check, &bounded))?;
        Ok(self.share(&key, f))
    }

    /// The file `kind`/`key` if it is open already or verified by this process (and still on
    /// disk); never a check, never any work.
    pub fn open_verified(&self, kind: Kind, key: &Digest) -> Result<Option<Arc<File>>> {
        self.ready(&(kind, key.clone()))
    }

    /// Drop the `kind` file named `key` as no longer right (a verified file found altered on
    /// disk since): forgotten, unlinked, and no more shared, so the next open makes or fetches it
    /// anew. Readers holding it keep their descriptor.
    pub fn discard(&self, kind: Kind, key: &Digest) {
        let key = (kind, key.clone());
        log::warn!("cache: {} was altered on disk after it was verified; removing it", self.path(&key).display());
        self.open_files().remove(&key);
        self.forget(&key);
        let _ = self.algorithm_dir(&key).map(|d| d.remove(key.1.hex()));
    }

    /// `key`'s file verified by a flight that finished meanwhile, or left by an earlier run and
    /// passing `check` (then verified from now on); one failing it is removed.
    fn checked_existing(&self, key: &Key, check: &Check) -> Option<Arc<File>> {
        // Verified by a flight that finished between our check and this one: use it as is.
        if sync::lock(&self.state).verified.contains(key) {
            if let Ok(Some(f)) = self.open_cached(key) {
                return Some(Arc::new(f));
            }
        }
        let Ok(Some(mut f)) = self.open_cached(key) else { return None };
        match check(&mut f) {
            // It checks: it is the file, whatever length a descriptor claims.
            Ok(len) => {
                self.verified_bytes.add(len);
                let mut s = sync::lock(&self.state);
                s.verified.insert(key.clone());
                if s.lru.put(key.clone(), len).is_none() {
                    s.total += len;
                }
                Some(Arc::new(f))
            }
            Err(e) => {
                log::warn!("cache: {} does not hold {} any more ({e}); removing it", self.path(key).display(), key.1);
                self.forget(key);
                let _ = self.algorithm_dir(key).map(|d| d.remove(key.1.hex()));
                None
            }
        }
    }

    /// `key`'s file if it is open already or verified by this process; `None` when it must be
    /// checked or made.
    fn ready(&self, key: &Key) -> Result<Option<Arc<File>>> {
        if let Some(f) = self.open_files().get(key).and_then(std::sync::Weak::upgrade) {
            sync::lock(&self.state).lru.get(key);
            return Ok(Some(f));
        }
        if sync::lock(&self.state).verified.contains(key) {
            match self.open_cached(key)? {
                Some(f) => {
                    sync::lock(&self.state).lru.get(key);
                    return Ok(Some(self.share(key, Arc::new(f))));
                }
                // Evicted since: made again by the caller.
                None => self.forget(key),
            }
        }
        Ok(None)
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, HashMap<Key, std::sync::Weak<File>>> {
        sync::lock(&self.open_files)
    }

    /// Make `f` (verified) the descriptor later opens of `key` share while it is held, unless
    /// another one is already shared: then that one, and `f` is closed.
    fn share(&self, key: &Key, f: Arc<File>) -> Arc<File> {
        let mut open = self.open_files();
        if let Some(live) = open.get(key).and_then(std::sync::Weak::upgrade) {
            return live;
        }
        // Forget files nobody holds any more, now and then (amortised over the inserts).
        if open.len() >= 1024 && open.len().is_power_of_two() {
            open.retain(|_, w| w.strong_count() > 0);
        }
        open.insert(key.clone(), Arc::downgrade(&f));
        f
    }

    fn forget(&self, key: &Key) {
        let mut s = sync::lock(&self.state);
        s.verified.remove(key);
        if let Some(len) = s.lru.pop(key) {
            s.total -= len;
        }
    }

    /// Make `key`'s file a verified one, and return it open: check what an earlier run left,
    /// else make it with `produce` (a download, a decode) into `tmp/` and rename it into place.
    fn fill(&self, key: &Key, check: &Check, produce: &Produce) -> Result<Arc<File>> {
        if let Some(f) = self.checked_existing(key, check) {
            return Ok(f);
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let prefix = if key.0 == Kind::Blob { String::new() } else { format!("{}-", key.0.dir()) };
        let name = format!("{prefix}{}.{}.{seq}", key.1.hex(), std::process::id());
        // Read and write: once verified, this very descriptor is handed to the readers.
        let file = self.tmp.create_new(&name)?;
        let mut tmp = TempFile { name, dir: self.tmp.clone(), file, keep: false };
        let mut charge = Charge { cache: self, bytes: 0 };
        let len = produce(&mut tmp.file, &mut |held| {
            if key.0 == Kind::Blob {
                self.activity.progress(crate::telemetry::Work::Download, &key.1, held); // shown by `open`: `.regfs/status`
            }
            self.check_cancelled(key)?;
            charge.set(held);
            Ok(())
        })?;
        self.verified_bytes.add(len);
        self.tmp.rename(&tmp.name, &self.algorithm_dir(key)?, key.1.hex())?;
        tmp.keep = true;
        let file = tmp.file.try_clone()?;
        {
            // The bytes move from `tmp/` to the cache: counted once, as a file now.
            let mut s = sync::lock(&self.state);
            s.downloading -= charge.bytes;
            charge.bytes = 0;
            s.verified.insert(key.clone());
            if let Some(old) = s.lru.put(key.clone(), len) {
                s.total -= old;
            }
            s.total += len;
        }
        self.evict(Some(key));
        Ok(Arc::new(file))
    }

    /// Stop every download in flight (at its next chunk) and refuse new ones: the mount is going.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn check_cancelled(&self, (kind, digest): &Key) -> Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            let what = if *kind == Kind::Blob { "download" } else { kind.dir() };
            return Err(Error::Cancelled(format!("{what} of {digest}: the filesystem is being unmounted")));
        }
        Ok(())
    }

    /// Delete least recently used files until the cache, downloads in progress included, fits
    /// its limit, sparing `keep`. Only finished files can go: when downloads in progress alone
    /// are over the limit, the cache is left holding just them (and `keep`).
    fn evict(&self, keep: Option<&Key>) {
        let mut victims = Vec::new();
        {
            let mut s = sync::lock(&self.state);
            while s.total + s.downloading > self.limit {
                let Some((d, len)) = s.lru.pop_lru() else { break };
                if Some(&d) == keep {
                    s.lru.put(d, len);
                    if s.lru.len() == 1 {
                        break;
                    }
                    continue;
                }
                s.total -= len;
                s.verified.remove(&d);
                victims.push(d);
            }
        }
        for key in &victims {
            log::debug!("cache: evicting {} {}", key.0.dir(), key.1);
            let _ = self.algorithm_dir(key).map(|dir| dir.remove(key.1.hex()));
        }
        self.evictions.fetch_add(victims.len() as u64, Ordering::Release);
    }

    /// Bytes hashed and found good so far (downloads, derived files, files hashed again).
    pub fn verified_bytes(&self) -> u64 {
        self.verified_bytes.get()
    }

    /// How many files eviction has deleted so far. A file deleted while open keeps its disk
    /// space until its last descriptor closes; whoever keeps files open for long compares this
    /// with what it saw last, and lets go of those deleted since (`st_nlink` 0).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Acquire)
    }
}

/// The bytes one download has written to `tmp/`, counted in [`State::downloading`] while it runs
/// and given back when it ends (on success they are counted again as the cache file).
struct Charge<'a> {
    cache: &'a BlobCache,
    bytes: u64,
}

impl Charge<'_> {
    /// The download now holds `bytes` in `tmp/` (called before they are written, so the disk
    /// never holds more than was counted): make room for any growth by evicting finished files.
    fn set(&mut self, bytes: u64) {
        let grew = bytes > self.bytes;
        {
            let mut s = sync::lock(&self.cache.state);
            s.downloading = s.downloading - self.bytes + bytes;
        }
        self.bytes = bytes;
        if grew {
            self.cache.evict(None);
        }
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut s = sync::lock(&self.cache.state);
            s.downloading -= self.bytes;
        }
    }
}

/// Hash a whole file, `chunk` bytes at a time; its length if it matches `digest`.
pub(crate) fn hash_file(f: &mut File, digest: &Digest, chunk: usize) -> Result<u64> {
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; chunk.max(1)];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let actual = hasher.finish();
    if &actual == digest {
        Ok(len)
    } else {
        Err(Error::DigestMismatch {
            what: "cached file".into(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    fn noise(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 10) as u8).collect()
    }

    fn read_all(f: &File) -> Vec<u8> {
        let len = f.metadata().expect("metadata").len() as usize;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    fn config(dir: &std::path::Path, cache_size: u64) -> StoreConfig {
        StoreConfig { cache_dir: dir.to_path_buf(), cache_size, ..StoreConfig::default() }
    }

    fn on_disk(dir: &std::path::Path, d: &Digest) -> bool {
        dir.join("blobs").join(d.algorithm().name()).join(d.hex()).exists()
    }

    #[test]
    fn past_the_limit_the_least_recently_used_file_goes() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let blobs: Vec<(Digest, Vec<u8>)> = (0..3)
            .map(|i| {
                let data = noise(100_000, i);
                (client.add_blob(&data), data)
            })
            .collect();
        let cache = BlobCache::new(&config(dir.path(), 250_000)).expect("cache");
        let open = |i: usize| drop(cache.open(&client, "r", &blobs[i].0, Some(100_000)).expect("open"));
        open(0);
        open(1);
        open(0); // 0 is now the more recently used
        open(2); // 300,000 > 250,000: one goes, the least recently used
        assert!(on_disk(dir.path(), &blobs[0].0), "the recently used file was evicted");
        assert!(!on_disk(dir.path(), &blobs[1].0), "the least recently used file was kept");
        assert!(on_disk(dir.path(), &blobs[2].0));
        assert_eq!(cache.size(), 200_000);
        assert_eq!(client.blob_gets(), 3);
    }

    #[test]
    fn a_file_left_by_an_earlier_run_is_hashed_again_before_it_is_served() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let (good, bad) = (noise(50_000, 1), noise(50_000, 2));
        let (dg, db) = (client.add_blob(&good), client.add_blob(&bad));
        drop(BlobCache::new(&config(dir.path(), 1 << 30)).expect("first run"));
        // What an earlier run left: one file intact, one altered on disk since.
        let sha = dir.path().join("blobs/sha256");
        std::fs::write(sha.join(dg.hex()), &good).expect("plant");
        let mut altered = bad.clone();
        altered[1000] ^= 1;
        std::fs::write(sha.join(db.hex()), &altered).expect("plant");
        let cache = BlobCache::new(&config(dir.path(), 1 << 30)).expect("second run");
        assert_eq!(cache.verified_len(&dg), None, "trusted before it was hashed");
        assert_eq!(read_all(&cache.open(&client, "r", &dg, None).expect("intact")), good);
        assert_eq!(client.blob_gets(), 0, "an intact file is not downloaded again");
        assert_eq!(cache.verified_len(&dg), Some(50_000));
        assert_eq!(read_all(&cache.open(&client, "r", &db, None).expect("altered")), bad);
        assert_eq!(client.blob_gets(), 1, "an altered file is downloaded again");
        assert_eq!(std::fs::read(sha.join(db.hex())).expect("replaced"), bad);
    }

    /// Pieces of 64 KiB, 4 at once, above 64 KiB: a blob of a few hundred KiB is downloaded by ranges.
    fn ranged(dir: &std::path::Path) -> StoreConfig {
        let download = DownloadConfig {
            chunk: 16 << 10,
            ranged_above: 64 << 10,
            range: 64 << 10,
            ranges_at_once: 4,
            ..DownloadConfig::default()
        };
        StoreConfig { download, ..config(dir, 1 << 30) }
    }

    /// Nothing kept: no blob file, nothing in `tmp/`, no bytes counted.
    fn assert_nothing_kept(dir: &std::path::Path, cache: &BlobCache, d: &Digest) {
        assert!(!on_disk(dir, d), "the blob was committed");
        assert_eq!(std::fs::read_dir(dir.join("tmp")).expect("tmp").count(), 0, "tmp/ is not empty");
        let s = sync::lock(&cache.state);
        assert_eq!((s.total, s.downloading), (0, 0), "bytes still counted");
    }

    #[test]
    fn a_big_blob_whose_ranges_bring_wrong_bytes_is_not_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let data = noise(6 * (64 << 10) + 5, 3);
        let d = client.add_blob(&data);
        let mut wrong = data.clone();
        wrong[5 * (64 << 10)] ^= 0x80;
        client.corrupt_blob(&d, wrong);
        let cache = BlobCache::new(&ranged(dir.path())).expect("cache");
        let err = cache.open(&client, "r", &d, Some(data.len() as u64)).expect_err("wrong bytes");
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(err.errno(), libc::EIO);
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        assert!(client.blob_ranges() > 1, "not downloaded by ranges");
        assert_nothing_kept(dir.path(), &cache, &d);
    }

    #[test]
    fn a_ranged_download_cancelled_mid_way_keeps_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let data = noise(16 * (64 << 10), 4);
        let d = client.add_blob(&data);
        client.slow_reads(std::time::Duration::from_millis(5));
        let cache = BlobCache::new(&ranged(dir.path())).expect("cache");
        let got = std::thread::scope(|s| {
            let run = s.spawn(|| cache.open(&client, "r", &d, Some(data.len() as u64)).map(|_| ()));
            // Cancelled once the workers are under way (several pieces asked for).
            let waited = std::time::Instant::now();
            while client.blob_ranges() < 4 && waited.elapsed() < std::time::Duration::from_secs(20) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            cache.cancel();
            run.join().expect("no panic")
        });
        let err = got.expect_err("cancelled");
        assert!(matches!(err, Error::Cancelled(_)), "{err}");
        assert!(client.blob_ranges() < 16, "every piece was asked for: {}", client.blob_ranges());
        assert_nothing_kept(dir.path(), &cache, &d);
    }

    /// `.regfs/status` shows a ranged download's progress as its pieces are written: part way,
    /// some bytes done and fewer than all, of the descriptor's total.
    #[test]
    fn a_ranged_download_shows_its_progress_as_pieces_are_written() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let data = noise(16 * (64 << 10), 7);
        let d = client.add_blob(&data);
        client.slow_reads(std::time::Duration::from_millis(3));
        let cache = BlobCache::new(&ranged(dir.path())).expect("cache");
        let size = data.len() as u64;
        let mut seen = Vec::new();
        std::thread::scope(|s| {
            let run = s.spawn(|| cache.open(&client, "r", &d, Some(size)).map(|_| ()));
            while !run.is_finished() {
                let (jobs, _) = cache.activity().jobs(10);
                seen.extend(jobs.into_iter().map(|j| (j.done, j.total)));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            run.join().expect("no panic").expect("downloaded");
        });
        assert!(client.blob_ranges() > 1, "not downloaded by ranges");
        assert!(seen.iter().all(|(_, total)| *total == Some(size)), "{seen:?}");
        assert!(seen.iter().any(|(done, _)| *done > 0 && *done < size), "no progress part way: {seen:?}");
    }

    #[test]
    fn a_blob_sized_only_by_head_is_one_stream_and_by_a_descriptor_ranges() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let (a, b) = (noise(5 * (64 << 10), 5), noise(5 * (64 << 10), 6));
        let (da, db) = (client.add_blob(&a), client.add_blob(&b));
        let cache = BlobCache::new(&ranged(dir.path())).expect("cache");
        let got = cache.open_bounded(&client, "r", &da, Some(a.len() as u64), false).expect("by HEAD");
        assert_eq!(read_all(&got), a);
        assert_eq!((client.blob_ranges(), client.blob_gets()), (0, 1), "a HEAD's size was trusted for ranges");
        let got = cache.open(&client, "r", &db, Some(b.len() as u64)).expect("by descriptor");
        assert_eq!(read_all(&got), b);
        assert_eq!(client.blob_ranges(), 5);
    }
}

#[cfg(test)]
mod derived_tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    fn config(dir: &std::path::Path, cache_size: u64) -> StoreConfig {
        StoreConfig { cache_dir: dir.to_path_buf(), cache_size, ..StoreConfig::default() }
    }

    fn noise(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 9) as u8).collect()
    }

    /// What the cache holds, files and work in progress together.
    fn held(cache: &BlobCache) -> u64 {
        let s = sync::lock(&cache.state);
        s.total + s.downloading
    }

    /// Writes `data` in 256 KiB chunks through the hook, checks the hash, as a decoder would.
    fn producer<'a>(
        data: &'a [u8],
        runs: &'a AtomicUsize,
        after_hook: &'a dyn Fn(),
    ) -> impl Fn(&mut File, &mut dyn FnMut(u64) -> Result<()>) -> Result<u64> + 'a {
        move |out, hook| {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut done = 0usize;
            for chunk in data.chunks(256 << 10) {
                hook((done + chunk.len()) as u64)?;
                after_hook();
                out.write_all(chunk)?;
                done += chunk.len();
            }
            Ok(done as u64)
        }
    }

    fn hashes_to(key: &Digest) -> impl Fn(&mut File) -> Result<u64> + '_ {
        move |f| hash_file(f, key, 64 << 10)
    }

    fn read_all(f: &File) -> Vec<u8> {
        let mut buf = vec![0u8; f.metadata().expect("metadata").len() as usize];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    #[test]
    fn a_decoded_layer_counts_against_the_cache_size_with_its_blob() {
        let dir = tempfile::tempdir().expect("dir");
        let client = Faulty::new(Fake::default());
        let blob = noise(1 << 20, 1);
        let bd = client.add_blob(&blob);
        let cache = BlobCache::new(&config(dir.path(), 3 << 20)).expect("cache");
        drop(cache.open(&client, "r", &bd, Some(1 << 20)).expect("blob"));
        assert_eq!(cache.size(), 1 << 20);
        let decoded = noise(5 << 19, 2); // 2.5 MiB
        let key = Digest::of(Algorithm::Sha256, &decoded);
        let runs = AtomicUsize::new(0);
        let most = AtomicU64::new(0);
        let watch = || {
            most.fetch_max(held(&cache), Ordering::SeqCst);
        };
        let f = cache
            .open_derived(Kind::Decoded, &key, &hashes_to(&key), &producer(&decoded, &runs, &watch))
            .expect("derived");
        assert_eq!(read_all(&f), decoded);
        assert!(most.load(Ordering::SeqCst) <= 3 << 20, "held {} > 3 MiB", most.load(Ordering::SeqCst));
        assert!(most.load(Ordering::SeqCst) >= 5 << 19, "the decode was not counted");
        assert!(!dir.path().join("blobs/sha256").join(bd.hex()).exists(), "the blob went first");
        assert!(dir.path().join("decoded/sha256").join(key.hex()).exists());
        assert_eq!(cache.size(), 5 << 19);
        assert_eq!(cache.derived_len(Kind::Decoded, &key), Some(5 << 19));
        assert_eq!(cache.verified_len(&key), None, "a decoded file is not a blob");
        // Used again: no second run.
        drop(f);
        cache.open_derived(Kind::Decoded, &key, &hashes_to(&key), &producer(&decoded, &runs, &|| {})).expect("again");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_derived_file_past_the_cache_size_is_too_large_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = BlobCache::new(&config(dir.path(), 1 << 20)).expect("cache");
        let decoded = noise(3 << 19, 3);
        let key = Digest::of(Algorithm::Sha256, &decoded);
        let runs = AtomicUsize::new(0);
        let e = cache
            .open_derived(Kind::Decoded, &key, &hashes_to(&key), &producer(&decoded, &runs, &|| {}))
            .expect_err("past the cache size");
        assert_eq!(e.errno(), libc::EFBIG, "{e}");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0, "tmp/ is empty");
        assert_eq!(std::fs::read_dir(dir.path().join("decoded/sha256")).expect("decoded").count(), 0);
        assert_eq!(held(&cache), 0);
    }

    #[test]
    fn a_derived_file_altered_between_runs_is_rebuilt_not_served() {
        let dir = tempfile::tempdir().expect("dir");
        let (good, other) = (noise(100_000, 4), noise(100_000, 5));
        let (kg, ko) = (Digest::of(Algorithm::Sha256, &good), Digest::of(Algorithm::Sha256, &other));
        let runs = AtomicUsize::new(0);
        {
            let cache = BlobCache::new(&config(dir.path(), 1 << 30)).expect("first run");
            for (k, d) in [(&kg, &good), (&ko, &other)] {
                cache.open_derived(Kind::Index, k, &hashes_to(k), &producer(d, &runs, &|| {})).expect("made");
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let path = dir.path().join("index/sha256").join(ko.hex());
        let mut altered = std::fs::read(&path).expect("on disk");
        altered[500] ^= 1;
        std::fs::write(&path, &altered).expect("alter");
        let cache = BlobCache::new(&config(dir.path(), 1 << 30)).expect("second run");
        assert_eq!(cache.derived_len(Kind::Index, &kg), None, "trusted before it was checked");
        let f = cache.open_derived(Kind::Index, &kg, &hashes_to(&kg), &producer(&good, &runs, &|| {})).expect("intact");
        assert_eq!(read_all(&f), good);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "an intact file is checked, not made again");
        let f =
            cache.open_derived(Kind::Index, &ko, &hashes_to(&ko), &producer(&other, &runs, &|| {})).expect("altered");
        assert_eq!(read_all(&f), other, "the altered file is not served");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the altered file is made again");
        assert_eq!(std::fs::read(&path).expect("replaced"), other);
    }
}

#[cfg(test)]
mod foreign_tests {
    use std::collections::HashMap;
    use std::sync::mpsc;

    use super::*;
    use crate::registry::http::Options;
    use crate::registry::{BlobReply, Fetch, ManifestReply};
    use crate::testkit::front::{Behavior, Front};

    /// A registry that has nothing, and whose blob GETs say they started and then wait for the
    /// test's word.
    struct Held(Mutex<(mpsc::Sender<()>, mpsc::Receiver<()>)>);

    impl Client for Held {
        fn catalog(&self) -> Result<Vec<String>> {
            Err(Error::NotFound("catalog".into()))
        }
        fn tags(&self, _: &str) -> Result<Vec<String>> {
            Err(Error::NotFound("tags".into()))
        }
        fn manifest(&self, _: &str, _: &str, _: Fetch) -> Result<ManifestReply> {
            Err(Error::NotFound("manifest".into()))
        }
        fn blob_size(&self, _: &str, d: &Digest) -> Result<u64> {
            Err(Error::NotFound(format!("HEAD {d}")))
        }
        fn blob(&self, _: &str, d: &Digest, _: u64) -> Result<BlobReply> {
            let channels = sync::lock(&self.0);
            let _ = channels.0.send(());
            let _ = channels.1.recv();
            Err(Error::NotFound(format!("GET {d}")))
        }
    }

    /// A reader that has seen the registry's 404 and turns to the layer's URLs gets the blob
    /// from them even while another reader's registry download of the same blob is in flight
    /// (it must not join that download and get its 404).
    #[test]
    fn a_reader_turning_to_the_urls_does_not_join_a_registry_download_in_flight() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &data);
        let mut files = HashMap::new();
        files.insert("/layer".to_string(), data.clone());
        let host = Front::start("http://127.0.0.1:9", Behavior { files, ..Behavior::default() });
        let rules = foreign::UrlRules::new(&[".".to_string()], &[]).expect("rules");
        let foreign = Foreign::new(rules, &Options::default()).expect("client");
        let urls = foreign.rules().check(&[format!("{}/layer", host.url)]).expect("allowed");

        let dir = tempfile::tempdir().expect("dir");
        let config = StoreConfig { cache_dir: dir.path().to_path_buf(), ..StoreConfig::default() };
        let cache = BlobCache::new(&config).expect("cache");
        let len = data.len() as u64;
        let (release, held) = mpsc::channel();
        let (entered, started) = mpsc::channel();
        let registry = Held(Mutex::new((entered, held)));
        std::thread::scope(|s| {
            let other = s.spawn(|| cache.open(&registry, "r", &digest, Some(data.len() as u64)).map(|_| ()));
            // Until the other reader's registry download is in flight.
            started.recv().expect("the registry download started");
            let (tx, rx) = mpsc::channel();
            let (foreign, urls, digest, cache) = (&foreign, &urls, &digest, &cache);
            s.spawn(move || {
                let _ = tx.send(cache.open_foreign(foreign, urls, digest, Some(len)));
            });
            let got = rx.recv_timeout(std::time::Duration::from_secs(10));
            let _ = release.send(());
            let got = got.expect("the reader waited on the registry's download in flight instead of the URLs");
            let file = got.expect("the blob from its URL");
            let mut bytes = vec![0u8; data.len()];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut bytes, 0).expect("read");
            assert!(bytes == data, "other bytes than the blob");
            // The other reader's download got its 404, as it should.
            assert!(matches!(other.join().expect("thread"), Err(Error::NotFound(_))));
        });
    }
}
