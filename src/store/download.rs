//! The download of one blob: streamed into a file the caller opened, hashed as it goes,
//! resumed when cut off, and returned only once it hashes right.
//!
//! It is given an open file, never a path: naming, renaming and removing files is the cache's
//! (`cache.rs` through `dir.rs`). What the caller needs to do as the file grows (count it against
//! `--cache-size`, stop at unmount) it does in the hook `each`, run before every request and
//! before every chunk is written; an error from the hook stops the download.
//!
//! # Resuming
//! Streamed in [`DownloadConfig::chunk`] pieces (256 KiB), so memory stays bounded whatever the
//! blob size. A body that is
//! cut off is resumed with a `Range` request from where it stopped, and the same hasher carries
//! on; a registry that ignores `Range` (answers 200) makes the download start over. A body longer
//! than its descriptor is cut off and refused at once.
//!
//! A body that moves too slowly (the progress rule, `registry/http/body.rs`) counts as cut off:
//! it is resumed, and after [`DownloadConfig::max_resumes`] (5) the download fails (EIO) with a
//! line naming the URL and the digest.
//!
//! # One stream, and when ranges at once instead
//! A blob may be served only after one sequential sha256 over all of it, so the hash is the
//! floor, and one stream that hashes as it goes stays near it where the link is fast (README.md,
//! "Performance": a cold read beside `curl | openssl dgst`). Where one connection is the
//! bottleneck (a far registry, a CDN or proxy that throttles each connection), several `Range`
//! requests at once download faster than any one stream can, and the hash keeps up with them
//! (several hundred MiB/s on one core). So a blob larger than
//! [`DownloadConfig::ranged_above`] (64 MiB) by its descriptor's size is downloaded by
//! `ranged.rs` instead: [`DownloadConfig::ranges_at_once`] (8) pieces of [`DownloadConfig::range`]
//! (16 MiB) at once, written in place, hashed in order as the completed prefix grows (read back
//! from the file), resumed per piece, and verified whole before the cache commits it, as here.
//! Smaller blobs, blobs sized only by a HEAD, foreign layers, and registries that do not honour
//! `Range` on the first piece (whose reply then becomes this function's body) get one stream.
//! Here `Range` is used only to resume a body that was cut off.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits::MAX_BLOB_SIZE;
use crate::registry::BlobReply;

/// Where a download's body comes from: asked for the bytes from an offset on (a `Range` request
/// when it is not 0), once at the start and again for every resume. A registry's `blob`, or a
/// chain of sources (mirrors, then the registry): the hash carries on whichever answers, since
/// the bytes are the same by digest.
pub type Body<'a> = dyn FnMut(u64) -> Result<BlobReply> + 'a;

/// How a blob is downloaded; part of [`StoreConfig`](super::StoreConfig).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadConfig {
    /// Bytes read from the body (and written, and hashed) at a time; also the buffer with which
    /// the cache hashes a file again.
    pub chunk: usize,
    /// Resumes of one download after cut-off bodies, before giving up.
    pub max_resumes: u32,
    /// Downloads at least this large are logged at info level.
    pub loud: u64,
    /// Blobs larger than this, by their descriptor's size, are downloaded as several `Range`
    /// requests at once (`ranged.rs`); others as one stream (64 MiB).
    pub ranged_above: u64,
    /// Bytes asked for by one of those `Range` requests (16 MiB).
    pub range: u64,
    /// `Range` requests of one blob under way at once (8); 1 downloads every blob as one stream.
    pub ranges_at_once: usize,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            chunk: 256 << 10,
            max_resumes: 5,
            loud: 64 << 20,
            ranged_above: 64 << 20,
            range: 16 << 20,
            ranges_at_once: 8,
        }
    }
}

/// `len` bytes downloaded since `started`, as `what`, whose hash is `actual`: `Ok(len)` if it is
/// `digest` (logged at `level` with the rate), else the mismatch.
pub(crate) fn verified(
    what: &str,
    digest: &Digest,
    actual: &Digest,
    len: u64,
    started: std::time::Instant,
    level: log::Level,
) -> Result<u64> {
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    let secs = started.elapsed().as_secs_f64();
    log::log!(
        level,
        "verified {digest} ({}) in {secs:.1} s, {:.0} MiB/s",
        mib(len),
        len as f64 / (1 << 20) as f64 / secs.max(1e-6)
    );
    Ok(len)
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Download `digest` (of `what`, a repository, for the log) from `body` into `out` (open read
/// and write, empty), hashing as it goes, and return its length once it hashes right. `size` is a descriptor's claim, when there is one: it
/// bounds the length (else [`MAX_BLOB_SIZE`] does), and a body shorter than it that does not hash
/// right counts as cut off. Cut-off bodies are resumed with `Range` (from the start if the
/// registry ignores it), [`DownloadConfig::max_resumes`] times at most. `each` is told how many bytes `out` is
/// about to hold before every request and before every chunk is written (0 when it starts over);
/// an error from it stops the download.
pub fn fetch(
    config: &DownloadConfig,
    what: &str,
    digest: &Digest,
    size: Option<u64>,
    body: &mut Body,
    out: &mut File,
    each: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<u64> {
    // Large downloads are announced: `open` (and so `cat`) waits for the whole blob to be
    // verified before the first byte, and the log says why.
    let loud = size.is_some_and(|s| s >= config.loud);
    let level = if loud { log::Level::Info } else { log::Level::Debug };
    log::log!(level, "downloading {digest} of {what} ({})", size.map_or("size unknown".into(), mib));
    let started = std::time::Instant::now();
    let limit = size.unwrap_or(MAX_BLOB_SIZE);
    let mut hasher = Hasher::new(digest.algorithm());
    let mut len: u64 = 0;
    let mut resumes = 0;
    let mut buf = vec![0u8; config.chunk.max(1)];
    let url = loop {
        each(len)?;
        let mut reply = body(len)?;
        if len > 0 && !reply.ranged {
            log::info!("{}: Range not honoured; downloading {digest} from the start", reply.url);
            out.set_len(0)?;
            out.rewind()?;
            each(0)?;
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
            each(len)?;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::Io(format!("writing the download of {digest}: {e}")))?;
        };
        // Shorter than claimed, but already the whole blob: the claim was wrong, not the body.
        let short = size.is_some_and(|s| len < s) && hasher.clone().finish() != *digest;
        match cut {
            None if !short => break reply.url,
            _ if resumes < config.max_resumes => {
                resumes += 1;
                let why = cut.map_or_else(|| "ended early".to_string(), |e| e.to_string());
                log::warn!(
                    "{}: body cut off after {len} bytes ({why}); resuming ({resumes}/{})",
                    reply.url,
                    config.max_resumes
                );
            }
            _ => {
                let why = cut.map_or_else(|| "ended early".to_string(), |e| e.to_string());
                return Err(Error::Unavailable(format!(
                    "{}: body of {digest} cut off after {len} bytes, {} times; giving up ({why})",
                    reply.url,
                    config.max_resumes + 1
                )));
            }
        }
    };
    verified(&format!("blob {url}"), digest, &hasher.finish(), len, started, level)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::registry::Client;
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    /// The chunk the download reads and writes at a time (the default).
    const CHUNK: usize = 256 << 10;

    fn noise(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ (i >> 9) as u8).collect()
    }

    /// Run `fetch` into a fresh file; its result, the file's bytes, and every length `each` saw.
    fn run(client: &Faulty<Fake>, d: &Digest, size: Option<u64>) -> (Result<u64>, Vec<u8>, Vec<u64>) {
        let mut out = tempfile::tempfile().expect("tempfile");
        let mut seen = Vec::new();
        let config = DownloadConfig { chunk: CHUNK, ..DownloadConfig::default() };
        let mut body = |from| client.blob("r", d, from);
        let got = fetch(&config, "r", d, size, &mut body, &mut out, &mut |n| {
            seen.push(n);
            Ok(())
        });
        let mut bytes = Vec::new();
        out.rewind().expect("rewind");
        out.read_to_end(&mut bytes).expect("read back");
        (got, bytes, seen)
    }

    #[test]
    fn a_cut_off_body_is_resumed_from_where_it_stopped() {
        let client = Faulty::new(Fake::default());
        let data = noise(3 * CHUNK);
        let d = client.add_blob(&data);
        client.cut_bodies_after(CHUNK + 1000, 2);
        let (got, bytes, _) = run(&client, &d, Some(data.len() as u64));
        assert_eq!(got.expect("resumed"), data.len() as u64);
        assert!(bytes == data, "the file holds other bytes than the blob");
        let gets: Vec<String> = client.calls().into_iter().filter(|c| c.starts_with("GET blob")).collect();
        let from = |n: usize| format!("GET blob r {d} from {n}");
        assert_eq!(gets, [from(0), from(CHUNK + 1000), from(2 * (CHUNK + 1000))]);
    }

    #[test]
    fn when_range_is_ignored_the_file_starts_over_and_holds_only_the_blob() {
        let client = Faulty::new(Fake::default());
        let data = noise(2 * CHUNK);
        let d = client.add_blob(&data);
        client.cut_bodies_after(CHUNK + 7, 1);
        client.ignore_range();
        let (got, bytes, seen) = run(&client, &d, Some(data.len() as u64));
        assert_eq!(got.expect("started over"), data.len() as u64);
        assert_eq!(bytes.len(), data.len(), "what the first attempt wrote is not kept");
        assert!(bytes == data, "the file holds other bytes than the blob");
        assert_eq!(client.blob_gets(), 2);
        // The cache is told the download holds nothing again (at the start, and at the restart).
        assert_eq!(seen.iter().filter(|&&n| n == 0).count(), 2, "{seen:?}");
    }

    #[test]
    fn a_body_longer_than_its_size_is_refused_before_more_is_written() {
        let client = Faulty::new(Fake::default());
        let data = noise(CHUNK);
        let d = client.add_blob(&data);
        let mut longer = data.clone();
        longer.extend(noise(4 * CHUNK));
        client.corrupt_blob(&d, longer);
        let (got, bytes, seen) = run(&client, &d, Some(data.len() as u64));
        let err = got.expect_err("too long");
        assert!(err.to_string().contains("longer"), "{err}");
        assert!(bytes.len() <= data.len(), "{} bytes written for a blob of {}", bytes.len(), data.len());
        assert!(seen.iter().all(|&n| n <= data.len() as u64), "{seen:?}");
    }
}
