//! A fault-injecting wrapper around any [`Client`]: the faults of a transport that a real
//! registry is hard to make commit on cue (bodies cut off or ending early, an `Interrupted` read,
//! `Range` ignored, slow reads, a HEAD refused or lying about a size). It records every call, so
//! tests can assert on what the core asked for. It derefs to the client it wraps, so a test sets
//! up a [`super::fake::Fake`] through it.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::referrers::Referrer;
use crate::registry::{BlobReply, Client, Fetch, ManifestReply, Stats};
use crate::sync::lock;

/// Called before each read of a blob body, while the download is under way.
pub type OnRead = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Faults {
    /// Cut every blob body off (an error) after this many bytes, this many times.
    cut_after: Option<(usize, usize)>,
    /// End every blob body cleanly (as a server whose body is short) after this many bytes, this
    /// many times.
    end_early: Option<(usize, usize)>,
    /// Fail one read of every blob body with `Interrupted` after this many bytes.
    interrupt_after: Option<usize>,
    ignore_range: bool,
    /// Answer `blob_range` with every byte from its start on, not only those asked for (as a
    /// hostile registry may), saying it is ranged.
    overlong_ranges: bool,
    refuse_manifest_head: bool,
    head_sizes: HashMap<String, u64>,
    slow_reads: Option<Duration>,
    on_read: Option<OnRead>,
}

pub struct Faulty<C> {
    inner: C,
    faults: Mutex<Faults>,
    calls: Mutex<Vec<String>>,
    blob_gets: AtomicUsize,
    blob_ranges: AtomicUsize,
}

impl<C> std::ops::Deref for Faulty<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.inner
    }
}

impl<C: Client> Faulty<C> {
    /// `inner`, with no faults yet.
    pub fn new(inner: C) -> Self {
        Faulty {
            inner,
            faults: Mutex::default(),
            calls: Mutex::default(),
            blob_gets: AtomicUsize::new(0),
            blob_ranges: AtomicUsize::new(0),
        }
    }

    /// Cut the next `times` blob bodies off with an error after `bytes` bytes.
    pub fn cut_bodies_after(&self, bytes: usize, times: usize) {
        lock(&self.faults).cut_after = Some((bytes, times));
    }

    /// End the next `times` blob bodies cleanly (no error) after `bytes` bytes.
    pub fn end_bodies_early(&self, bytes: usize, times: usize) {
        lock(&self.faults).end_early = Some((bytes, times));
    }

    /// Fail one read of every blob body with `Interrupted` (EINTR) after `bytes` bytes.
    pub fn interrupt_bodies_after(&self, bytes: usize) {
        lock(&self.faults).interrupt_after = Some(bytes);
    }

    /// Answer every blob GET from byte 0, saying the reply is not ranged.
    pub fn ignore_range(&self) {
        lock(&self.faults).ignore_range = true;
    }

    /// Answer every [`Client::blob_range`] with the blob from its start to its end, longer than
    /// asked, as if ranged (206).
    pub fn overlong_ranges(&self) {
        lock(&self.faults).overlong_ranges = true;
    }

    /// Answer HEAD of manifests with an unexpected status (as a proxy that refuses HEAD).
    pub fn refuse_manifest_head(&self) {
        lock(&self.faults).refuse_manifest_head = true;
    }

    /// Answer HEAD of blob `digest` with `size` instead of its own.
    pub fn lie_about_size(&self, digest: &Digest, size: u64) {
        lock(&self.faults).head_sizes.insert(digest.to_string(), size);
    }

    /// Sleep `each` before each read of a blob body (so that downloads overlap).
    pub fn slow_reads(&self, each: Duration) {
        lock(&self.faults).slow_reads = Some(each);
    }

    /// Call `f` before each read of a blob body.
    pub fn on_read(&self, f: OnRead) {
        lock(&self.faults).on_read = Some(f);
    }

    /// Every call so far, as `catalog`, `tags R`, `Head manifest R REF`, `Get manifest R REF`,
    /// `HEAD blob R D`, `GET blob R D from N`, `GET blob R D range S..E`, `referrers R D`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// How many blob GETs so far.
    pub fn blob_gets(&self) -> usize {
        self.blob_gets.load(Ordering::SeqCst)
    }

    /// Ranged GETs of part of a blob ([`Client::blob_range`]) sent so far (counted in
    /// [`Faulty::blob_gets`] too).
    pub fn blob_ranges(&self) -> usize {
        self.blob_ranges.load(Ordering::SeqCst)
    }

    /// How many GETs of the blob `digest` so far (of any repository, from any offset).
    pub fn gets_of(&self, digest: &crate::digest::Digest) -> usize {
        let d = digest.to_string();
        lock(&self.calls).iter().filter(|c| c.starts_with("GET blob") && c.contains(&d)).count()
    }
}

struct FaultyReader {
    inner: Box<dyn Read + Send>,
    left: Option<usize>,
    slow: Option<Duration>,
    on_read: Option<OnRead>,
    /// At `left == 0`, end the body (Ok(0)) rather than fail.
    clean: bool,
    /// Bytes before one `Interrupted` error.
    interrupt_in: Option<usize>,
}

impl Read for FaultyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        if let Some(f) = &self.on_read {
            f();
        }
        match self.interrupt_in {
            Some(0) => {
                self.interrupt_in = None;
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "injected EINTR"));
            }
            Some(n) => {
                let max = buf.len().min(n);
                let got = self.inner.read(&mut buf[..max])?;
                self.interrupt_in = Some(n - got);
                return Ok(got);
            }
            None => {}
        }
        if let Some(left) = self.left {
            if left == 0 {
                if self.clean {
                    return Ok(0);
                }
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut-off"));
            }
            let max = buf.len().min(left);
            let n = self.inner.read(&mut buf[..max])?;
            self.left = Some(left - n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl<C: Client> Client for Faulty<C> {
    fn ping(&self) -> Result<()> {
        self.inner.ping()
    }

    fn catalog(&self) -> Result<Vec<String>> {
        lock(&self.calls).push("catalog".into());
        self.inner.catalog()
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        lock(&self.calls).push(format!("tags {repo}"));
        self.inner.tags(repo)
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        lock(&self.calls).push(format!("{fetch:?} manifest {repo} {reference}"));
        if fetch == Fetch::Head && lock(&self.faults).refuse_manifest_head {
            return Err(Error::Protocol(format!("HEAD {repo}/manifests/{reference}: HTTP 405 (injected)")));
        }
        self.inner.manifest(repo, reference, fetch)
    }

    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        lock(&self.calls).push(format!("referrers {repo} {digest}"));
        self.inner.referrers(repo, digest)
    }

    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        lock(&self.calls).push(format!("HEAD blob {repo} {digest}"));
        if let Some(&lie) = lock(&self.faults).head_sizes.get(&digest.to_string()) {
            return Ok(lie);
        }
        self.inner.blob_size(repo, digest)
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        lock(&self.calls).push(format!("GET blob {repo} {digest} from {offset}"));
        self.blob_gets.fetch_add(1, Ordering::SeqCst);
        let mut f = lock(&self.faults);
        let asked = if f.ignore_range { 0 } else { offset };
        let reply = self.inner.blob(repo, digest, asked)?;
        Ok(Faulty::<C>::faulty_reply(&mut f, reply))
    }

    /// Counted apart ([`Faulty::blob_ranges`]); a registry that ignores `Range` answers with the
    /// whole blob, unranged.
    fn blob_range(&self, repo: &str, digest: &Digest, start: u64, end: u64) -> Result<BlobReply> {
        lock(&self.calls).push(format!("GET blob {repo} {digest} range {start}..{end}"));
        self.blob_gets.fetch_add(1, Ordering::SeqCst);
        self.blob_ranges.fetch_add(1, Ordering::SeqCst);
        let mut f = lock(&self.faults);
        let reply = if f.ignore_range {
            BlobReply { ranged: false, ..self.inner.blob(repo, digest, 0)? }
        } else if f.overlong_ranges {
            BlobReply { ranged: true, ..self.inner.blob(repo, digest, start)? }
        } else {
            self.inner.blob_range(repo, digest, start, end)?
        };
        Ok(Faulty::<C>::faulty_reply(&mut f, reply))
    }

    fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

impl<C: Client> Faulty<C> {
    /// `reply` with the faults asked for applied to its body.
    fn faulty_reply(f: &mut Faults, reply: BlobReply) -> BlobReply {
        let left = match f.cut_after.as_mut() {
            Some((after, times)) if *times > 0 => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        let short = match f.end_early.as_mut() {
            Some((after, times)) if *times > 0 && left.is_none() => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        let (left, clean) = if short.is_some() { (short, true) } else { (left, false) };
        BlobReply {
            url: reply.url,
            reader: Box::new(FaultyReader {
                inner: reply.reader,
                left,
                slow: f.slow_reads,
                on_read: f.on_read.clone(),
                clean,
                interrupt_in: f.interrupt_after,
            }),
            ranged: reply.ranged,
        }
    }
}
