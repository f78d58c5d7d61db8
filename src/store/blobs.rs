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
//! - Past `--cache-size`, the least recently used files are deleted. A file still open by a reader
//!   stays readable (unlinked files live on while open), so eviction never breaks a read.
//! - All open handles of one blob share one descriptor (the verified file, held while any reader
//!   holds it): descriptors grow with distinct blobs open, never with handles.
//! - Downloads in progress count against `--cache-size` (a [`Charge`] each, counted before every
//!   chunk is written): as one grows, finished files make room. Only when downloads in progress
//!   alone exceed the limit does the cache go over it, and then it holds nothing else.
//!
//! # Downloads
//! One per digest at a time (single flight), streamed in 256 KiB chunks to the temporary file, so
//! memory stays bounded whatever the blob size. A body that is cut off is resumed with a `Range`
//! request from where it stopped, and the same hasher carries on; a registry that ignores `Range`
//! (answers 200) makes the download start over. A body longer than its descriptor is cut off and
//! refused at once.
//!
//! # Why one stream, not parallel ranged GETs
//! A blob may be served only after one sequential sha256 over all of it, so the hash is the
//! floor: 2.1 GB/s with SHA-NI on the benchmark machine (`openssl speed -evp sha256`), against
//! the 1.1 GB/s regfs reaches cold (`scripts/bench`: 0.23 s for 256 MiB, 0.8x the time of
//! `curl | openssl dgst`). The rest is the copy into the cache file and the registry's own speed.
//! Ranged GETs in parallel would download faster only where one connection is the bottleneck (a
//! throttled CDN). They cannot hash in parallel, and would add a second pass over the file.
//! Measured on loopback they had nothing to win, so the download is one stream that hashes as it
//! goes. `Range` is still used, to resume a body that was cut off.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::flight::SingleFlight;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::manifest::MAX_BLOB_SIZE;
use crate::registry::Client;

const CHUNK: usize = 256 << 10;
/// Resumes of one download after cut-off bodies, before giving up.
const MAX_RESUMES: u32 = 5;
/// Downloads this large are logged at info level.
const LOUD_DOWNLOAD: u64 = 64 << 20;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

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
    /// Held open for the `flock` that makes the directory this process's alone.
    _lock: File,
    root: PathBuf,
    tmp: PathBuf,
    limit: u64,
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
    /// Bytes hashed and found good, for `.regfs/stats`.
    pub verified_bytes: AtomicU64,
}

/// Deletes a temporary file unless it was kept.
struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobCache {
    /// Open (creating) the cache under `dir`, empty its `tmp/`, and take stock of what it holds.
    pub fn new(dir: &Path, limit: u64) -> Result<BlobCache> {
        let root = dir.join("blobs");
        let tmp = dir.join("tmp");
        for d in [&root, &tmp] {
            fs::create_dir_all(d).map_err(|e| Error::Io(format!("{}: {e}", d.display())))?;
            fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| Error::Io(format!("{}: {e}", d.display())))?;
        }
        let lock = lock_dir(dir)?;
        for entry in fs::read_dir(&tmp)?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let mut found = Vec::new();
        for alg in fs::read_dir(&root)?.flatten() {
            for entry in fs::read_dir(alg.path())?.flatten() {
                let name = format!("{}:{}", alg.file_name().to_string_lossy(), entry.file_name().to_string_lossy());
                let Ok(meta) = entry.metadata() else { continue };
                match name.parse::<Digest>() {
                    Ok(d) if meta.is_file() => found.push((meta.modified().ok(), d, meta.len())),
                    _ => {
                        log::warn!("cache: removing stray {}", entry.path().display());
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        found.sort();
        let mut state = State { lru: LruCache::unbounded(), total: 0, downloading: 0, verified: HashSet::new() };
        for (_, d, len) in found {
            state.total += len;
            state.lru.put(d, len);
        }
        let cache = BlobCache {
            _lock: lock,
            root,
            tmp,
            limit,
            state: Mutex::new(state),
            flights: SingleFlight::default(),
            tmp_seq: AtomicU64::new(0),
            open_files: Mutex::default(),
            verified_bytes: AtomicU64::new(0),
        };
        cache.evict(None);
        Ok(cache)
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.algorithm().name()).join(digest.hex())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held on disk now.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    /// The length of `digest`'s file if this process has verified it; never a request.
    pub fn verified_len(&self, digest: &Digest) -> Option<u64> {
        let s = self.lock();
        s.verified.contains(digest).then(|| s.lru.peek(digest).copied()).flatten()
    }

    /// An open file holding exactly the bytes of `digest`, downloading and verifying it first
    /// if need be. `size` is a descriptor's claim, when there is one: it bounds the download (a
    /// longer body is refused at once), but it is only a claim, so a file that hashes right is
    /// returned (and kept) whatever its length; the caller compares. Read it with `read_at`
    /// (pread): the descriptor may be shared with other readers of the same blob.
    pub fn open(&self, client: &dyn Client, repo: &str, digest: &Digest, size: Option<u64>) -> Result<Arc<File>> {
        if let Some(f) = self.open_files().get(digest).and_then(std::sync::Weak::upgrade) {
            self.lock().lru.get(digest);
            return Ok(f);
        }
        if self.lock().verified.contains(digest) {
            match File::open(self.path(digest)) {
                Ok(f) => {
                    self.lock().lru.get(digest);
                    return Ok(self.share(digest, Arc::new(f)));
                }
                // Evicted since: download it again below.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.forget(digest),
                Err(e) => return Err(Error::Io(format!("{}: {e}", self.path(digest).display()))),
            }
        }
        let f = self.flights.run(&(digest.clone(), size), || self.fill(client, repo, digest, size))?;
        Ok(self.share(digest, f))
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, std::sync::Weak<File>>> {
        self.open_files.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut s = self.lock();
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
        if self.lock().verified.contains(digest) {
            if let Ok(f) = File::open(&path) {
                return Ok(Arc::new(f));
            }
        }
        if let Ok(mut f) = File::open(&path) {
            match hash_file(&mut f, digest) {
                // It hashes right: it is the blob, whatever length a descriptor claims.
                Ok(len) => {
                    self.verified_bytes.fetch_add(len, Ordering::Relaxed);
                    let mut s = self.lock();
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
                    let _ = fs::remove_file(&path);
                }
            }
        }
        // Large downloads are announced: `open` (and so `cat`) waits for the whole blob to be
        // verified before the first byte, and the log says why.
        let loud = size.is_some_and(|s| s >= LOUD_DOWNLOAD);
        let level = if loud { log::Level::Info } else { log::Level::Debug };
        log::log!(level, "downloading {digest} of {repo} ({})", size.map_or("size unknown".into(), mib));
        let started = std::time::Instant::now();
        let mut charge = Charge { cache: self, bytes: 0 };
        let (mut tmp, len) = self.download(client, repo, digest, size, &mut charge)?;
        let secs = started.elapsed().as_secs_f64();
        log::log!(
            level,
            "verified {digest} ({}) in {secs:.1} s, {:.0} MiB/s",
            mib(len),
            len as f64 / (1 << 20) as f64 / secs.max(1e-6)
        );
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(&tmp.path, &path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        tmp.keep = true;
        let file = tmp.file.try_clone()?;
        {
            // The download's bytes move from `tmp/` to the cache: counted once, as a file now.
            let mut s = self.lock();
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

    fn download(
        &self,
        client: &dyn Client,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
        charge: &mut Charge<'_>,
    ) -> Result<(TempFile, u64)> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}.{}.{seq}", digest.hex(), std::process::id()));
        // Read and write: once verified, this very descriptor is handed to the readers.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut tmp = TempFile { path, file, keep: false };
        let limit = size.unwrap_or(MAX_BLOB_SIZE);
        let mut hasher = Hasher::new(digest.algorithm());
        let mut len: u64 = 0;
        let mut resumes = 0;
        let mut buf = vec![0u8; CHUNK];
        let url = loop {
            let mut reply = client.blob(repo, digest, len)?;
            if len > 0 && !reply.ranged {
                log::info!("{}: Range not honoured; downloading {digest} from the start", reply.url);
                tmp.file.set_len(0)?;
                tmp.file.rewind()?;
                charge.set(0);
                hasher = Hasher::new(digest.algorithm());
                len = 0;
            }
            let cut = loop {
                let n = match reply.reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                };
                len += n as u64;
                if len > limit {
                    return Err(Error::DigestMismatch {
                        what: format!("blob {}", reply.url),
                        expected: format!("{digest} ({limit} bytes)"),
                        actual: "a longer body".into(),
                    });
                }
                hasher.update(&buf[..n]);
                charge.set(len);
                tmp.file.write_all(&buf[..n]).map_err(|e| Error::Io(format!("{}: {e}", tmp.path.display())))?;
            };
            // Shorter than claimed, but already the whole blob: the claim was wrong, not the body.
            let short = size.is_some_and(|s| len < s) && hasher.clone().finish() != *digest;
            match cut {
                None if !short => break reply.url,
                _ if resumes < MAX_RESUMES => {
                    resumes += 1;
                    let why = cut.map_or_else(|| "ended early".to_string(), |e| e.to_string());
                    log::warn!(
                        "{}: body cut off after {len} bytes ({why}); resuming ({resumes}/{MAX_RESUMES})",
                        reply.url
                    );
                }
                _ => {
                    return Err(Error::Unavailable(format!(
                        "{}: body cut off after {len} bytes, {MAX_RESUMES} times",
                        reply.url
                    )));
                }
            }
        };
        let actual = hasher.finish();
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {url}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        self.verified_bytes.fetch_add(len, Ordering::Relaxed);
        Ok((tmp, len))
    }

    /// Delete least recently used files until the cache, downloads in progress included, fits
    /// its limit, sparing `keep`. Only finished files can go: when downloads in progress alone
    /// are over the limit, the cache is left holding just them (and `keep`).
    fn evict(&self, keep: Option<&Digest>) {
        let mut victims = Vec::new();
        {
            let mut s = self.lock();
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
            let _ = fs::remove_file(self.path(&d));
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
            let mut s = self.cache.lock();
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
            let mut s = self.cache.lock();
            s.downloading -= self.bytes;
        }
    }
}

/// Take the cache directory for this process, or say who has it.
fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(Error::Io(format!(
            "{} is in use by another regfs (pid {}); give each mount its own --cache-dir",
            dir.display(),
            holder.trim()
        )));
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Hash a whole file; its length if it matches `digest`.
fn hash_file(f: &mut File, digest: &Digest) -> Result<u64> {
    let mut hasher = Hasher::new(digest.algorithm());
    let mut buf = vec![0u8; CHUNK];
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
