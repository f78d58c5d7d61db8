//! The download of one large blob as several `Range` requests at once, written in place, hashed
//! in order, and returned only once the whole blob hashes right.
//!
//! # When
//! A blob whose size a manifest's descriptor gives (never a HEAD's word: the size decides which
//! bytes are asked for, and a descriptor is part of a verified manifest) and which is larger than
//! [`DownloadConfig::ranged_above`] (64 MiB). One connection is often the bottleneck far from the
//! registry (a CDN or proxy that throttles each connection, or a long round trip with a small
//! window); hashing on one core runs at several hundred MiB/s, so it is not.
//!
//! # How
//! The blob is cut into [`DownloadConfig::range`] pieces (16 MiB), asked for by
//! [`DownloadConfig::ranges_at_once`] workers (8), each taking the next piece not yet taken, so
//! pieces complete roughly in order. A worker reads its reply [`DownloadConfig::chunk`] (256 KiB)
//! at a time and writes it in place in the temporary file (`pwrite` at its offset): never more
//! than its piece asks for, so a reply longer than asked writes nothing past its piece (it is
//! refused as a longer body, as the single stream refuses one), and the file never grows past the
//! descriptor's size. A piece cut off, or ending early, is asked again from where it stopped, up
//! to [`DownloadConfig::max_resumes`] times per piece.
//!
//! The calling thread coordinates: it hashes the file **in order**, as far as the completed prefix
//! reaches (every piece before the first unfinished one, and what that one has written so far),
//! reading it back from the file with `pread`. The bytes hashed are read from the file, not
//! kept from the replies: a piece finished before those ahead of it would have to be held in
//! memory until they are done (up to a whole piece per worker and more), whereas what was just
//! written is in the page cache and reading it back costs a copy. So memory stays one buffer per
//! worker and one for the hash, whatever the blob's size.
//!
//! The coordinator also runs the cache's hook (`each`) for the workers, which may not: the hook
//! charges `--cache-size`, shows progress in `.regfs/status` and stops at unmount. Workers write
//! only bytes the hook has been told of (a budget granted a few MiB ahead of what was written),
//! and the hook is run at least every [`HOOK_EVERY`] even when nothing arrives, so an unmount
//! stops a stalled download too. When anything fails (the hook, a piece giving up, a write), the
//! workers are told to stop and each does at its next read; the file is then the caller's to
//! throw away. Nothing here renames or serves it: the cache commits it only on `Ok`.
//!
//! # Falling back
//! The first piece is asked for alone. A registry that answers it without honouring `Range` (200,
//! the whole blob from 0) gets one stream: that very reply is read by [`download::fetch`] as its
//! body, so nothing is asked twice. A later reply not honouring `Range` fails its piece (the
//! registry changed its mind mid-download; its bytes would be at the wrong offset).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::download::{self, Body, DownloadConfig};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::registry::BlobReply;
use crate::sync;

/// Bytes `start..end` of the blob, by one `Range` request: a registry's `blob_range`, or a chain
/// of sources. Called from the workers' threads.
pub type Ranges<'a> = dyn Fn(u64, u64) -> Result<BlobReply> + Sync + 'a;

/// The longest the coordinator goes without running the hook (so without seeing an unmount).
pub const HOOK_EVERY: Duration = Duration::from_millis(100);

/// Whether a blob of descriptor size `size` is downloaded by ranges under `config`.
pub fn wanted(config: &DownloadConfig, size: u64) -> bool {
    config.ranges_at_once > 1 && config.range > 0 && size > config.ranged_above && size > config.range
}

/// What a worker tells the coordinator.
enum Note {
    /// Piece `piece` now has `done` bytes written, from its start.
    Wrote { piece: usize, done: u64 },
    /// A worker waits for the hook to grant more bytes.
    Hungry,
    /// A worker gave up; the download fails with this.
    Failed(Error),
}

/// Bytes the hook has been told the file is about to hold (`granted`), and how many of them the
/// workers have taken to write (`used`); `stop` ends every worker at its next read.
struct Budget {
    granted: u64,
    used: u64,
    stop: bool,
}

struct Shared<'a> {
    config: &'a DownloadConfig,
    digest: &'a Digest,
    size: u64,
    pieces: usize,
    file: &'a File,
    range: &'a Ranges<'a>,
    /// The next piece no worker has taken.
    next: AtomicUsize,
    /// The reply to the first piece, asked for before the workers start.
    first: Mutex<Option<BlobReply>>,
    budget: Mutex<Budget>,
    granted: Condvar,
    /// [`Budget::stop`], readable without the lock (looked at before every read).
    halted: AtomicBool,
}

impl Shared<'_> {
    fn bounds(&self, piece: usize) -> (u64, u64) {
        let start = piece as u64 * self.config.range;
        (start, (start + self.config.range).min(self.size))
    }

    fn stopped(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.halted.store(true, Ordering::SeqCst);
        sync::lock(&self.budget).stop = true;
        self.granted.notify_all();
    }

    /// Take `n` bytes of the budget before writing them, waiting for the coordinator to grant
    /// more if need be; `Err` once the download is stopped.
    fn take(&self, n: u64, notes: &mpsc::Sender<Note>) -> Result<()> {
        let mut b = sync::lock(&self.budget);
        let mut asked = false;
        loop {
            if b.stop {
                return Err(self.stopped_error());
            }
            if b.used + n <= b.granted {
                b.used += n;
                return Ok(());
            }
            if !asked {
                asked = true;
                let _ = notes.send(Note::Hungry);
            }
            b = sync::wait_timeout(&self.granted, b, HOOK_EVERY);
        }
    }

    fn stopped_error(&self) -> Error {
        Error::Cancelled(format!("ranged download of {}: stopped", self.digest))
    }

    /// Take pieces until none is left, each downloaded whole; the first failure is told.
    fn work(&self, notes: mpsc::Sender<Note>) {
        let mut buf = vec![0u8; self.config.chunk.max(1)];
        loop {
            if self.stopped() {
                return;
            }
            let piece = self.next.fetch_add(1, Ordering::SeqCst);
            if piece >= self.pieces {
                return;
            }
            if let Err(e) = self.piece(piece, &mut buf, &notes) {
                let _ = notes.send(Note::Failed(e));
                return;
            }
        }
    }

    /// Download piece `piece` into its place in the file, asking again from where a cut-off
    /// reply stopped.
    fn piece(&self, piece: usize, buf: &mut [u8], notes: &mpsc::Sender<Note>) -> Result<()> {
        let (start, end) = self.bounds(piece);
        let digest = self.digest;
        let mut at = start;
        let mut resumes = 0;
        loop {
            if self.stopped() {
                return Err(self.stopped_error());
            }
            let first = if piece == 0 { sync::lock(&self.first).take() } else { None };
            let mut reply = match first {
                Some(r) => r,
                None => (self.range)(at, end)?,
            };
            if !reply.ranged {
                return Err(Error::Protocol(format!(
                    "{}: Range not honoured for bytes {at}..{end} of {digest}, though it was for the first piece",
                    reply.url
                )));
            }
            let cut = loop {
                if at == end {
                    // The piece is whole: its reply must end here, or it is longer than asked.
                    match reply.reader.read(&mut buf[..1]) {
                        Ok(0) => break None,
                        Ok(_) => {
                            return Err(Error::DigestMismatch {
                                what: format!("blob {} (bytes {start}..{end})", reply.url),
                                expected: format!("{digest} ({} bytes in this range)", end - start),
                                actual: "a longer body".into(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Every byte asked for arrived; how the reply ends does not matter.
                        Err(_) => break None,
                    }
                }
                if self.stopped() {
                    return Err(self.stopped_error());
                }
                // A whole buffer at a time (a body's reads are often much smaller): one write,
                // one note and one look at the budget per buffer, not per read.
                let want = buf.len().min((end - at) as usize);
                let mut n = 0;
                let mut cut = None;
                while n < want {
                    if self.stopped() {
                        return Err(self.stopped_error());
                    }
                    match reply.reader.read(&mut buf[n..want]) {
                        Ok(0) => {
                            cut = Some("ended early".to_string());
                            break;
                        }
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            cut = Some(e.to_string());
                            break;
                        }
                    }
                }
                if n > 0 {
                    self.take(n as u64, notes)?;
                    self.file
                        .write_all_at(&buf[..n], at)
                        .map_err(|e| Error::Io(format!("writing the download of {digest}: {e}")))?;
                    at += n as u64;
                    let _ = notes.send(Note::Wrote { piece, done: at - start });
                }
                if cut.is_some() {
                    break cut;
                }
            };
            let Some(why) = cut else { return Ok(()) };
            if resumes >= self.config.max_resumes {
                return Err(Error::Unavailable(format!(
                    "{}: bytes {start}..{end} of {digest} cut off at {at}, {} times; giving up ({why})",
                    reply.url,
                    self.config.max_resumes + 1
                )));
            }
            resumes += 1;
            log::warn!(
                "{}: bytes {start}..{end} of {digest} cut off at {at} ({why}); resuming ({resumes}/{})",
                reply.url,
                self.config.max_resumes
            );
        }
    }
}

/// Download `digest` (of `what`, for the log), `size` bytes as a descriptor gives them, into
/// `out` (open read and write, empty) by `range` requests at once, and return its length once it
/// hashes right. A registry that does not honour `Range` gets one stream ([`download::fetch`],
/// with `single` for its resumes). `each` is told how many bytes `out` is about to hold before
/// they are written, and at least every [`HOOK_EVERY`]; an error from it stops the download.
#[allow(clippy::too_many_arguments)]
pub fn fetch(
    config: &DownloadConfig,
    what: &str,
    digest: &Digest,
    size: u64,
    range: &Ranges,
    single: &mut Body,
    out: &mut File,
    each: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let pieces = size.div_ceil(config.range.max(1)) as usize;
    let at_once = config.ranges_at_once.clamp(1, pieces.max(1));
    each(0)?;
    let first = range(0, config.range.min(size))?;
    if !first.ranged {
        log::info!("{}: Range not honoured; downloading {digest} as one stream", first.url);
        let mut first = Some(first);
        let mut body = |from: u64| match first.take() {
            Some(reply) if from == 0 => Ok(reply),
            _ => single(from),
        };
        return download::fetch(config, what, digest, Some(size), &mut body, out, each);
    }
    let url = first.url.clone();
    let level = if size >= config.loud { log::Level::Info } else { log::Level::Debug };
    log::log!(level, "downloading {digest} of {what} ({}) as {pieces} ranges, {at_once} at once", download::mib(size));
    let started = std::time::Instant::now();
    let shared = Shared {
        config,
        digest,
        size,
        pieces,
        file: out,
        range,
        next: AtomicUsize::new(0),
        first: Mutex::new(Some(first)),
        budget: Mutex::new(Budget { granted: 0, used: 0, stop: false }),
        granted: Condvar::new(),
        halted: AtomicBool::new(false),
    };
    let (tx, rx) = mpsc::channel();
    let hashed = std::thread::scope(|s| {
        for _ in 0..at_once {
            let (shared, tx) = (&shared, tx.clone());
            s.spawn(move || shared.work(tx));
        }
        drop(tx);
        let r = coordinate(&shared, &rx, each);
        // However it ended, the workers stop at their next read (they have once it is `Ok`).
        shared.stop();
        r
    })?;
    download::verified(&format!("blob {url} (by {pieces} ranges)"), digest, &hashed.finish(), size, started, level)
}

/// Run the hook for the workers and hash the completed prefix as it grows, until all of the blob
/// is hashed; the hasher over all of it.
fn coordinate(
    shared: &Shared,
    notes: &mpsc::Receiver<Note>,
    each: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Hasher> {
    let size = shared.size;
    // Granted a few reads of every worker ahead of what was written, so that they seldom wait.
    let ahead = (shared.config.chunk.max(1) as u64) * 2 * shared.config.ranges_at_once.max(1) as u64;
    let mut done = vec![0u64; shared.pieces];
    let mut front = 0; // the first piece not wholly written
    let mut hashed = 0u64;
    let mut hasher = Hasher::new(shared.digest.algorithm());
    let mut buf = vec![0u8; shared.config.chunk.max(1)];
    let mut granted = 0u64;
    let mut hook_at = std::time::Instant::now();
    loop {
        // Grant more once the workers have used half of what is ahead.
        let used = sync::lock(&shared.budget).used;
        if granted < size && used + ahead / 2 >= granted {
            let more = (used + ahead).min(size);
            each(more)?;
            hook_at = std::time::Instant::now();
            granted = more;
            sync::lock(&shared.budget).granted = more;
            shared.granted.notify_all();
        }
        while front < shared.pieces && {
            let (start, end) = shared.bounds(front);
            done[front] == end - start
        } {
            front += 1;
        }
        let prefix = if front == shared.pieces { size } else { shared.bounds(front).0 + done[front] };
        if hashed < prefix {
            let n = buf.len().min((prefix - hashed) as usize);
            shared
                .file
                .read_exact_at(&mut buf[..n], hashed)
                .map_err(|e| Error::Io(format!("reading back the download of {}: {e}", shared.digest)))?;
            hasher.update(&buf[..n]);
            hashed += n as u64;
        }
        if hashed == size {
            return Ok(hasher);
        }
        // Every note that has come, without waiting while there is something to hash.
        let mut first = if hashed < prefix {
            None
        } else {
            match notes.recv_timeout(HOOK_EVERY) {
                Ok(note) => Some(note),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Io(format!(
                        "ranged download of {}: every worker ended with {hashed} of {size} bytes hashed",
                        shared.digest
                    )));
                }
            }
        };
        while let Some(note) = first.take().or_else(|| notes.try_recv().ok()) {
            match note {
                Note::Wrote { piece, done: d } => done[piece] = done[piece].max(d),
                Note::Hungry => {}
                Note::Failed(e) => return Err(e),
            }
        }
        if hook_at.elapsed() >= HOOK_EVERY {
            each(granted)?;
            hook_at = std::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::{Read, Seek};
    use std::sync::Arc;

    use super::*;
    use crate::registry::Client;
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    /// Small sizes, so that a blob of a few hundred KiB is "big": pieces of 64 KiB, 4 at once.
    const RANGE: u64 = 64 << 10;

    fn config() -> DownloadConfig {
        DownloadConfig {
            chunk: 16 << 10,
            ranged_above: RANGE,
            range: RANGE,
            ranges_at_once: 4,
            ..DownloadConfig::default()
        }
    }

    fn noise(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(29) ^ (i >> 11) as u8).collect()
    }

    /// Run `fetch` into a fresh file; its result, the file's bytes, and every length `each` saw.
    fn run(client: &Faulty<Fake>, d: &Digest, size: u64) -> (Result<u64>, Vec<u8>, Vec<u64>) {
        let mut out = tempfile::tempfile().expect("tempfile");
        let mut seen = Vec::new();
        let range = |start, end| client.blob_range("r", d, start, end);
        let mut single = |from| client.blob("r", d, from);
        let got = fetch(&config(), "r", d, size, &range, &mut single, &mut out, &mut |n| {
            seen.push(n);
            Ok(())
        });
        let mut bytes = Vec::new();
        out.rewind().expect("rewind");
        out.read_to_end(&mut bytes).expect("read back");
        (got, bytes, seen)
    }

    fn ranges(client: &Faulty<Fake>) -> Vec<String> {
        client.calls().into_iter().filter(|c| c.contains(" range ")).collect()
    }

    #[test]
    fn a_big_blob_arrives_whole_by_ranges_at_once() {
        let client = Faulty::new(Fake::default());
        let data = noise(10 * RANGE as usize + 1234);
        let d = client.add_blob(&data);
        // Which threads read bodies, each read a little slow so that the workers overlap.
        let readers = Arc::new(Mutex::new(HashSet::new()));
        let r = Arc::clone(&readers);
        client.on_read(Arc::new(move || {
            sync::lock(&r).insert(std::thread::current().id());
        }));
        client.slow_reads(Duration::from_millis(2));
        let (got, bytes, seen) = run(&client, &d, data.len() as u64);
        assert_eq!(got.expect("downloaded"), data.len() as u64);
        assert!(bytes == data, "the file holds other bytes than the blob");
        // One request per piece, each for exactly its piece, and no other blob GET.
        assert_eq!((client.blob_ranges(), client.blob_gets()), (11, 11));
        let mut asked = ranges(&client);
        asked.sort();
        let mut want: Vec<String> = (0..11u64)
            .map(|k| format!("GET blob r {d} range {}..{}", k * RANGE, ((k + 1) * RANGE).min(data.len() as u64)))
            .collect();
        want.sort();
        assert_eq!(asked, want);
        assert!(sync::lock(&readers).len() > 1, "the pieces were read by one thread");
        // The cache was told of every byte before it was written, never of more than the blob.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last().copied(), Some(data.len() as u64));
    }

    #[test]
    fn when_range_is_ignored_the_first_reply_is_read_as_one_stream() {
        let client = Faulty::new(Fake::default());
        let data = noise(5 * RANGE as usize);
        let d = client.add_blob(&data);
        client.ignore_range();
        let (got, bytes, _) = run(&client, &d, data.len() as u64);
        assert_eq!(got.expect("one stream"), data.len() as u64);
        assert!(bytes == data, "the file holds other bytes than the blob");
        // The one ranged GET's whole-blob reply was the stream: nothing was asked again.
        assert_eq!((client.blob_ranges(), client.blob_gets()), (1, 1));
    }

    #[test]
    fn a_piece_cut_off_is_resumed_from_where_it_stopped() {
        let client = Faulty::new(Fake::default());
        let data = noise(4 * RANGE as usize);
        let d = client.add_blob(&data);
        // The first body (piece 0, asked alone) is cut off part way.
        let cut = RANGE as usize / 2 + 100;
        client.cut_bodies_after(cut, 1);
        let (got, bytes, _) = run(&client, &d, data.len() as u64);
        assert_eq!(got.expect("resumed"), data.len() as u64);
        assert!(bytes == data, "the file holds other bytes than the blob");
        let asked = ranges(&client);
        assert_eq!(asked.len(), 5, "{asked:?}");
        assert!(asked.contains(&format!("GET blob r {d} range {cut}..{RANGE}")), "{asked:?}");
    }

    #[test]
    fn a_piece_always_cut_off_gives_up_after_the_resumes_allowed() {
        let client = Faulty::new(Fake::default());
        let data = noise(4 * RANGE as usize);
        let d = client.add_blob(&data);
        client.end_bodies_early(100, 1000);
        let (got, _, _) = run(&client, &d, data.len() as u64);
        let err = got.expect_err("never whole");
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        // The piece that gave up was asked once and resumed `max_resumes` times; none more.
        let asked = ranges(&client);
        let per_piece: Vec<usize> =
            (1..=4u64).map(|k| asked.iter().filter(|c| c.ends_with(&format!("..{}", k * RANGE))).count()).collect();
        assert_eq!(per_piece.iter().max().copied(), Some(1 + config().max_resumes as usize), "{per_piece:?}");
    }

    #[test]
    fn wrong_bytes_in_the_ranges_fail_the_digest() {
        let client = Faulty::new(Fake::default());
        let data = noise(4 * RANGE as usize);
        let d = client.add_blob(&data);
        let mut wrong = data.clone();
        wrong[3 * RANGE as usize + 7] ^= 1;
        client.corrupt_blob(&d, wrong);
        let (got, _, _) = run(&client, &d, data.len() as u64);
        let err = got.expect_err("wrong bytes");
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(err.errno(), libc::EIO);
        assert!(err.to_string().contains(&d.to_string()), "{err}");
    }

    #[test]
    fn a_reply_longer_than_its_range_writes_nothing_past_it() {
        let client = Faulty::new(Fake::default());
        let data = noise(4 * RANGE as usize);
        let d = client.add_blob(&data);
        // Every range is answered with the rest of a blob longer than its descriptor says.
        let mut longer = data.clone();
        longer.extend(noise(3 * RANGE as usize).iter().map(|b| b ^ 0x5a));
        client.corrupt_blob(&d, longer);
        client.overlong_ranges();
        let (got, bytes, seen) = run(&client, &d, data.len() as u64);
        let err = got.expect_err("too long");
        assert!(err.to_string().contains("longer"), "{err}");
        assert!(bytes.len() <= data.len(), "{} bytes written for a blob of {}", bytes.len(), data.len());
        // Whatever was written is the blob's own bytes, at their own offsets.
        assert!(bytes.iter().zip(&data).all(|(a, b)| a == b || *a == 0), "bytes of another piece written");
        assert!(seen.iter().all(|&n| n <= data.len() as u64), "{seen:?}");
    }

    #[test]
    fn small_blobs_and_one_at_a_time_are_not_ranged() {
        let c = config();
        assert!(wanted(&c, 2 * RANGE));
        assert!(!wanted(&c, RANGE), "not above ranged_above");
        assert!(!wanted(&DownloadConfig { ranges_at_once: 1, ..c.clone() }, 100 * RANGE));
        assert!(!wanted(&DownloadConfig::default(), 64 << 20));
        assert!(wanted(&DownloadConfig::default(), (64 << 20) + 1));
    }
}
