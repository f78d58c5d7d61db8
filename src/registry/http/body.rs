//! Bodies: each held to a least speed, and metered where a budget or a counter needs it.
//!
//! # Rules
//! - A per-read timeout does not bound a body that trickles (a byte every few seconds). So every
//!   body is also held to a [`Progress`] rule, as curl's `--speed-limit`/`--speed-time`: once
//!   `window` has passed since the body (or the last check) began, fewer than `min_speed` bytes a
//!   second over it is a fault, reported as a timed-out read ([`Paced`]). Manifests, tag-list
//!   pages and tokens are then fetched again within the retry budget; a blob download is resumed
//!   with `Range` (`store/download.rs`). An attempt thus lasts at most `window + timeout` once its
//!   headers are in.
//! - A body read whole ([`read_limited`]: manifests, tokens, referrers pages) is refused past its
//!   limit, by its `Content-Length` before a byte is read, else by the byte after the limit.
//! - A listing's body is [`Metered`] against what is left of the listing's budget.
//! - Blob bytes are counted as they arrive ([`CountingReader`]), for the client's [`Stats`](crate::registry::Stats).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::Response;

use super::Counters;
use crate::error::{Error, Result};

/// The least a body must move: `min_speed` bytes a second, measured over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes a second; 0 turns the rule off.
    pub min_speed: u64,
    pub window: Duration,
}

impl Default for Progress {
    /// 1 KiB/s over 30 s. A registry or CDN that works moves hundreds of KiB a second at the very
    /// least; 1 KiB/s would take 17 minutes per MiB, which no reader waits for. 30 s rides out
    /// a congested link, a server's GC pause or a slow start, and with the default `--timeout`
    /// an abandoned attempt has cost at most 40 s.
    fn default() -> Self {
        Progress { min_speed: 1024, window: Duration::from_secs(30) }
    }
}

/// A body held to a [`Progress`] rule: a read that finds the body has moved too slowly over the
/// last window fails with [`std::io::ErrorKind::TimedOut`], naming what was read.
pub struct Paced<R> {
    inner: R,
    rule: Progress,
    what: String,
    since: std::time::Instant,
    moved: u64,
}

impl<R> Paced<R> {
    pub fn new(inner: R, rule: Progress, what: impl Into<String>) -> Self {
        Paced { inner, rule, what: what.into(), since: std::time::Instant::now(), moved: 0 }
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 || self.rule.min_speed == 0 {
            return Ok(n);
        }
        self.moved += n as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= self.rule.window {
            if (self.moved as f64) < self.rule.min_speed as f64 * elapsed.as_secs_f64() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{}: slower than {} bytes/s over {} s ({} bytes in {:.1} s)",
                        self.what,
                        self.rule.min_speed,
                        self.rule.window.as_secs_f64(),
                        self.moved,
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            self.since = std::time::Instant::now();
            self.moved = 0;
        }
        Ok(n)
    }
}

/// Read a whole body, refusing more than `limit` bytes and one slower than `progress`.
pub(super) fn read_limited(resp: Response, limit: usize, what: &str, progress: Progress) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::TooLarge(format!("{what}: body of {len} bytes (limit {limit})")));
        }
    }
    let mut body = Vec::new();
    Paced::new(resp, progress, what)
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Unavailable(format!("{what}: body cut off: {e}")))?;
    if body.len() > limit {
        return Err(Error::TooLarge(format!("{what}: body over {limit} bytes")));
    }
    Ok(body)
}

/// A body that refuses to be read past `limit` bytes (one more is let through, to tell "exactly
/// the limit" from "over it").
pub(super) struct Metered<R> {
    pub(super) inner: R,
    pub(super) read: u64,
    pub(super) limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.limit {
            return Err(std::io::Error::other("listing over its byte budget"));
        }
        let room = (self.limit + 1 - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Counts blob bytes as they arrive, for the summary regfs logs at unmount.
pub(super) struct CountingReader<R> {
    pub(super) inner: R,
    pub(super) counters: Arc<Counters>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.blob_bytes.add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that gives `chunk` bytes every `every`, forever.
    struct Drip {
        chunk: usize,
        every: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.every);
            let n = self.chunk.min(buf.len());
            buf[..n].fill(b'x');
            Ok(n)
        }
    }

    fn read_for(body: Drip, rule: Progress, total: usize) -> std::io::Result<usize> {
        let mut paced = Paced::new(body, rule, "test body");
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < total {
            got += paced.read(&mut buf)?;
        }
        Ok(got)
    }

    #[test]
    fn a_body_slower_than_the_rule_fails_once_its_window_has_passed() {
        let rule = Progress { min_speed: 1000, window: Duration::from_millis(200) };
        let started = std::time::Instant::now();
        let e = read_for(Drip { chunk: 10, every: Duration::from_millis(20) }, rule, usize::MAX).expect_err("trickle");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("test body: slower than 1000 bytes/s"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    }

    #[test]
    fn a_steady_body_above_the_rule_reads_for_many_windows() {
        let rule = Progress { min_speed: 1000, window: Duration::from_millis(100) };
        // 4 KiB every 10 ms: 400 KB/s for 0.5 s, five windows.
        let got = read_for(Drip { chunk: 4096, every: Duration::from_millis(10) }, rule, 200 << 10).expect("steady");
        assert!(got >= 200 << 10);
        // Off: any speed goes.
        let off = Progress { min_speed: 0, window: Duration::from_millis(10) };
        assert!(read_for(Drip { chunk: 1, every: Duration::from_millis(15) }, off, 5).is_ok());
    }
}
