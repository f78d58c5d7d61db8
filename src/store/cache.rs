//! The verified, content-addressed blob cache on disk.
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
//! resumed and hashed as it goes. The cache gives it the open temporary file (it names, renames
//! and removes it itself, through `dir.rs`) and a hook run before every chunk is written, where it
//! counts the download's [`Charge`] and checks for [`BlobCache::cancel`]: at unmount downloads
//! stop at their next chunk; a socket read already blocked ends within `--timeout`, but nobody
//! waits for it (`fuse.rs`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::StoreConfig;
use super::dir::{CacheDir, file_type};
use super::download::{self, DownloadConfig};
use super::flight::SingleFlight;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::registry::Client;
use crate::sync;

/// Each has its directory `blobs/<name>/`, opened at start and held.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

struct State {
    /// Every cached file, least recently used first, with its size.
    lru: LruCache<Digest, u64>,
    total: u64,
    /// Bytes written to `tmp/` by downloads in progress: they count against the limit too.
    downloading: u64,
    /// Files hashed (or downloaded) by this process.
    verified: HashSet<Digest>,
}

pub struct BlobCache {
    /// The root, kept for the `flock` it holds, which makes the directory this process's alone.
    _root: CacheDir,
    blobs: CacheDir,
    tmp: CacheDir,
    /// `blobs/<algorithm>/`, opened once each.
    algorithms: Mutex<HashMap<&'static str, CacheDir>>,
    limit: u64,
    download: DownloadConfig,
    state: Mutex<State>,
    /// Each download's result is the verified file, already open: waiters share the descriptor,
    /// so eviction (which only unlinks paths) can never pull it from under them. Keyed by the
    /// size that bounds the download too, so that a descriptor claiming a wrong size fails only
    /// its own flight, never an honest reader's.
    flights: SingleFlight<(Digest, Option<u64>), Arc<File>>,
    tmp_seq: AtomicU64,
    /// The verified file of each blob some reader holds open: every open of it shares that one
    /// descriptor, so handles cost no descriptor each (a local user holding thousands of handles
    /// open cannot run regfs out of them), and a blob evicted while open needs no new download.
    open_files: Mutex<std::collections::HashMap<Digest, std::sync::Weak<File>>>,
    /// Bytes hashed and found good, for the summary regfs logs at unmount.
    pub verified_bytes: AtomicU64,
    /// Set at unmount: downloads stop.
    cancelled: AtomicBool,
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
        let blobs = root.subdir("blobs")?;
        let tmp = root.subdir("tmp")?;
        for (name, st) in tmp.entries()? {
            if file_type(&st) != rustix::fs::FileType::Directory {
                let _ = tmp.remove(name.as_c_str());
            }
        }
        let mut found = Vec::new();
        let mut algorithms = HashMap::new();
        for (name, st) in blobs.entries()? {
            let alg = name.to_str().ok().and_then(|n| ALGORITHMS.into_iter().find(|a| a.name() == n));
            let Some(alg) = alg.filter(|_| file_type(&st) == rustix::fs::FileType::Directory) else {
                log::warn!("cache: removing stray {}", blobs.path().join(name.to_string_lossy().as_ref()).display());
                let _ = blobs.remove(name.as_c_str());
                continue;
            };
            let alg_dir = blobs.subdir(alg.name())?;
            for (entry, st) in alg_dir.entries()? {
                let digest = entry.to_str().ok().and_then(|hex| format!("{}:{hex}", alg.name()).parse::<Digest>().ok());
                match digest {
                    Some(d) if file_type(&st) == rustix::fs::FileType::RegularFile => {
                        found.push(((st.st_mtime, st.st_mtime_nsec), d, st.st_size as u64))
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
            algorithms.insert(alg.name(), alg_dir);
        }
        // All opened now, so the descriptors a running cache holds do not grow with use.
        for alg in ALGORITHMS {
            if !algorithms.contains_key(alg.name()) {
                algorithms.insert(alg.name(), blobs.subdir(alg.name())?);
            }
        }
        found.sort();
        let mut state = State { lru: LruCache::unbounded(), total: 0, downloading: 0, verified: HashSet::new() };
        for (_, d, len) in found {
            state.total += len;
            state.lru.put(d, len);
        }
        let cache = BlobCache {
            _root: root,
            blobs,
            tmp,
            algorithms: Mutex::new(algorithms),
            limit,
            download: config.download.clone(),
            state: Mutex::new(state),
            flights: SingleFlight::default(),
            tmp_seq: AtomicU64::new(0),
            open_files: Mutex::default(),
            verified_bytes: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
        };
        cache.evict(None);
        Ok(cache)
    }

    /// Where `digest` is kept, for messages: it is opened through [`BlobCache::algorithm_dir`].
    fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.path().join(digest.algorithm().name()).join(digest.hex())
    }

    /// `blobs/<algorithm>/` of `digest` (each is opened at start and held).
    fn algorithm_dir(&self, digest: &Digest) -> Result<CacheDir> {
        let name = digest.algorithm().name();
        let mut dirs = sync::lock(&self.algorithms);
        if let Some(d) = dirs.get(name) {
            return Ok(d.clone());
        }
        let d = self.blobs.subdir(name)?;
        dirs.insert(name, d.clone());
        Ok(d)
    }

    /// The cached file of `digest`, if there is one and it is a regular file (see `dir.rs`).
    fn open_cached(&self, digest: &Digest) -> Result<Option<File>> {
        self.algorithm_dir(digest)?.open_regular(digest.hex())
    }

    /// Bytes held on disk now.
    pub fn size(&self) -> u64 {
        sync::lock(&self.state).total
    }

    /// The length of `digest`'s file if this process has verified it; never a request.
    pub fn verified_len(&self, digest: &Digest) -> Option<u64> {
        let s = sync::lock(&self.state);
        s.verified.contains(digest).then(|| s.lru.peek(digest).copied()).flatten()
    }

    /// An open file holding exactly the bytes of `digest`, downloading and verifying it first
    /// if need be. `size` is a descriptor's claim, when there is one: it bounds the download (a
    /// longer body is refused at once), but it is only a claim, so a file that hashes right is
    /// returned (and kept) whatever its length; the caller compares. Read it with `read_at`
    /// (pread): the descriptor may be shared with other readers of the same blob.
    pub fn open(&self, client: &dyn Client, repo: &str, digest: &Digest, size: Option<u64>) -> Result<Arc<File>> {
        if let Some(f) = self.open_files().get(digest).and_then(std::sync::Weak::upgrade) {
            sync::lock(&self.state).lru.get(digest);
            return Ok(f);
        }
        if sync::lock(&self.state).verified.contains(digest) {
            match self.open_cached(digest)? {
                Some(f) => {
                    sync::lock(&self.state).lru.get(digest);
                    return Ok(self.share(digest, Arc::new(f)));
                }
                // Evicted since: download it again below.
                None => self.forget(digest),
            }
        }
        let f = self.flights.run(&(digest.clone(), size), || self.fill(client, repo, digest, size))?;
        Ok(self.share(digest, f))
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, std::sync::Weak<File>>> {
        sync::lock(&self.open_files)
    }

    /// Make `f` (verified) the descriptor later opens of `digest` share while it is held, unless
    /// another one is already shared: then that one, and `f` is closed.
    fn share(&self, digest: &Digest, f: Arc<File>) -> Arc<File> {
        let mut open = self.open_files();
        if let Some(live) = open.get(digest).and_then(std::sync::Weak::upgrade) {
            return live;
        }
        // Forget blobs nobody holds any more, now and then (amortised over the inserts).
        if open.len() >= 1024 && open.len().is_power_of_two() {
            open.retain(|_, w| w.strong_count() > 0);
        }
        open.insert(digest.clone(), Arc::downgrade(&f));
        f
    }

    fn forget(&self, digest: &Digest) {
        let mut s = sync::lock(&self.state);
        s.verified.remove(digest);
        if let Some(len) = s.lru.pop(digest) {
            s.total -= len;
        }
    }

    /// Make `path(digest)` a verified file, and return it open: re-hash what an earlier run left,
    /// else download.
    fn fill(&self, client: &dyn Client, repo: &str, digest: &Digest, size: Option<u64>) -> Result<Arc<File>> {
        let path = self.path(digest);
        // Verified by a download that finished between our check and this flight: use it as is.
        if sync::lock(&self.state).verified.contains(digest) {
            if let Ok(Some(f)) = self.open_cached(digest) {
                return Ok(Arc::new(f));
            }
        }
        if let Ok(Some(mut f)) = self.open_cached(digest) {
            match hash_file(&mut f, digest, self.download.chunk) {
                // It hashes right: it is the blob, whatever length a descriptor claims.
                Ok(len) => {
                    self.verified_bytes.fetch_add(len, Ordering::Relaxed);
                    let mut s = sync::lock(&self.state);
                    s.verified.insert(digest.clone());
                    if s.lru.put(digest.clone(), len).is_none() {
                        s.total += len;
                    }
                    return Ok(Arc::new(f));
                }
                Err(_) => {
                    log::warn!(
                        "cache: {} does not hold {digest} any more; removing it and downloading again",
                        path.display()
                    );
                    self.forget(digest);
                    let _ = self.algorithm_dir(digest).map(|d| d.remove(digest.hex()));
                }
            }
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{}.{seq}", digest.hex(), std::process::id());
        // Read and write: once verified, this very descriptor is handed to the readers.
        let file = self.tmp.create_new(&name)?;
        let mut tmp = TempFile { name, dir: self.tmp.clone(), file, keep: false };
        let mut charge = Charge { cache: self, bytes: 0 };
        let len = download::fetch(&self.download, client, repo, digest, size, &mut tmp.file, &mut |held| {
            self.check_cancelled(digest)?;
            charge.set(held);
            Ok(())
        })?;
        self.verified_bytes.fetch_add(len, Ordering::Relaxed);
        self.tmp.rename(&tmp.name, &self.algorithm_dir(digest)?, digest.hex())?;
        tmp.keep = true;
        let file = tmp.file.try_clone()?;
        {
            // The download's bytes move from `tmp/` to the cache: counted once, as a file now.
            let mut s = sync::lock(&self.state);
            s.downloading -= charge.bytes;
            charge.bytes = 0;
            s.verified.insert(digest.clone());
            if let Some(old) = s.lru.put(digest.clone(), len) {
                s.total -= old;
            }
            s.total += len;
        }
        self.evict(Some(digest));
        Ok(Arc::new(file))
    }

    /// Stop every download in flight (at its next chunk) and refuse new ones: the mount is going.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn check_cancelled(&self, digest: &Digest) -> Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(Error::Cancelled(format!("download of {digest}: the filesystem is being unmounted")));
        }
        Ok(())
    }

    /// Delete least recently used files until the cache, downloads in progress included, fits
    /// its limit, sparing `keep`. Only finished files can go: when downloads in progress alone
    /// are over the limit, the cache is left holding just them (and `keep`).
    fn evict(&self, keep: Option<&Digest>) {
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
        for d in victims {
            log::debug!("cache: evicting {d}");
            let _ = self.algorithm_dir(&d).map(|dir| dir.remove(d.hex()));
        }
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
fn hash_file(f: &mut File, digest: &Digest, chunk: usize) -> Result<u64> {
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
}
