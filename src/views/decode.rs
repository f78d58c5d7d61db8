//! Decoding a layer blob to its tar stream, and the [`Tee`] every decoded byte goes through.
//!
//! # Sniffing
//! Compression is decided by the first bytes, as containerd and docker do: `1f 8b` is gzip,
//! `28 b5 2f fd` zstd, anything else plain. The media type only decides whether a view exists;
//! the diff_id check makes a mislabelled layer safe either way.
//!
//! # Decoders
//! - gzip: every member ([`flate2::read::MultiGzDecoder`], on the `zlib-rs` backend, pure Rust).
//!   Bytes after the last member that are not a gzip header are an error (EIO), as Go's
//!   `gzip.Reader` treats them.
//! - zstd: every frame, with the window capped at 2^[`ZSTD_WINDOW_LOG_MAX`] (128 MiB): a frame
//!   asking for more is refused rather than allocated.
//!
//! # Backends
//! gzip inflates on flate2's `zlib-rs` backend: pure Rust (no C build), and the fastest of the
//! pure-Rust ones (README, "Cold reads of `rootfs/`", has the figures). A layer is decoded once
//! per cache lifetime and kept decoded, so a read of `layers/<n>.tar` is a `pread` of the cache
//! file, never an inflate: random access into the compressed blob would need restart points,
//! which gzip can be given (checkpoints of inflate state) but a zstd frame has none.
//!
//! # The tee
//! The decoded stream is read through a [`Tee`]: each chunk is hashed (for the diff_id), counted
//! by a hook before it is written (the cache's charge, the cancellation check and the bound on
//! decoded bytes: a decompression bomb stops at `--cache-size`), then written to the temporary
//! file. Whoever reads the tee must drain it to the end, so the hash covers the bytes after the
//! tar's end-of-archive marker too.

use std::io::{self, BufReader, Read, Write};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits::ZSTD_WINDOW_LOG_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Plain,
}

/// What the first bytes of a blob say it is.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::Plain
    }
}

/// The decoded stream of `blob`, its compression sniffed from its first four bytes.
pub fn decoder<'a>(mut blob: impl Read + 'a) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match blob.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing decoded yet: whatever failed is the reader's, not the stream's.
            Err(e) => return Err(carried_or_io(e)),
        }
    }
    let c = sniff(&head[..got]);
    let r = BufReader::with_capacity(64 << 10, io::Cursor::new(head).take(got as u64).chain(blob));
    let out: Box<dyn Read + 'a> = match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        Compression::Plain => Box::new(r),
    };
    Ok((c, out))
}

/// Reads through to `inner`, hashing every byte, passing each chunk's new total to `hook` before
/// the chunk is written to `out`. A hook error stops the stream.
pub struct Tee<'h, R, W> {
    inner: R,
    out: W,
    hasher: Option<Hasher>,
    len: u64,
    hook: &'h mut dyn FnMut(u64) -> Result<()>,
}

impl<'h, R: Read, W: Write> Tee<'h, R, W> {
    pub fn new(inner: R, out: W, algorithm: Algorithm, hook: &'h mut dyn FnMut(u64) -> Result<()>) -> Self {
        Tee { inner, out, hasher: Some(Hasher::new(algorithm)), len: 0, hook }
    }

    /// Read whatever is left (bytes after the tar's end included) through the tee, `chunk`
    /// bytes at a time; then the total length and the digest of everything that went through.
    pub fn finish(mut self, chunk: usize) -> Result<(u64, Digest)> {
        let mut buf = vec![0u8; chunk.max(1)];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(from_io(e)),
            }
        }
        self.out.flush()?;
        let digest = self.hasher.take().map(Hasher::finish).ok_or_else(|| Error::Io("tee finished twice".into()))?;
        Ok((self.len, digest))
    }
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Ok(0);
        }
        let total = self.len + n as u64;
        (self.hook)(total).map_err(to_io)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        // A write that fails (a full disk) is local, not a fault of the stream.
        self.out.write_all(&buf[..n]).map_err(|e| to_io(Error::Io(format!("writing the decoded layer: {e}"))))?;
        self.len = total;
        Ok(n)
    }
}

/// Reads `inner` (a verified blob or decoded tar in the cache), its errors carried as
/// [`Error::Io`]: a decoder passes its reader's errors through unchanged, and [`from_io`] would
/// take them for a stream that does not decode, a fault of the content, remembered for the run.
/// A read error of a local file is not one.
pub struct Local<R>(pub R);

impl<R: Read> Read for Local<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::Interrupted => e,
            _ if carries(&e) => e,
            _ => to_io(Error::Io(format!("reading a cached file: {e}"))),
        })
    }
}

/// Carries an [`Error`] through `io::Error` (the `Read` trait's error) and back.
#[derive(Debug)]
struct Carried(Error);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Carried {}

fn to_io(e: Error) -> io::Error {
    io::Error::other(Carried(e))
}

/// Whether `e` carries an [`Error`] ([`to_io`]).
fn carries(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Carried>())
}

/// The [`Error`] an `io::Error` carries, else [`Error::Io`].
fn carried_or_io(e: io::Error) -> Error {
    if carries(&e) { from_io(e) } else { e.into() }
}

/// The [`Error`] an `io::Error` carries, else a decoding failure: the stream is not what its
/// magic bytes said (EIO). Readers of local files are wrapped in [`Local`], so their errors
/// come back as [`Error::Io`], not as a fault of the stream.
pub fn from_io(e: io::Error) -> Error {
    if carries(&e) {
        if let Some(inner) = e.into_inner() {
            if let Ok(c) = inner.downcast::<Carried>() {
                return c.0;
            }
        }
        return Error::Io("decode: lost error".into());
    }
    Error::malformed("layer stream", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    /// The chunk the tee reads by in these tests (a mount's is `ViewsConfig::chunk`).
    const CHUNK: usize = 256 << 10;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn decode_all(blob: &[u8]) -> Result<(Compression, Vec<u8>, Digest)> {
        let (c, d) = decoder(blob)?;
        let mut out = Vec::new();
        let mut hook = |_| Ok(());
        let (len, digest) = Tee::new(d, &mut out, Algorithm::Sha256, &mut hook).finish(CHUNK)?;
        assert_eq!(len as usize, out.len());
        Ok((c, out, digest))
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames_decode_whole() {
        let (a, b) = (b"first member ".repeat(1000), b"second member".repeat(1000));
        let whole = [a.clone(), b.clone()].concat();
        let gz = [gzip(&a), gzip(&b)].concat();
        let (c, out, digest) = decode_all(&gz).expect("gzip");
        assert_eq!(c, Compression::Gzip);
        assert_eq!(out, whole, "both gzip members");
        assert_eq!(digest, Digest::of(Algorithm::Sha256, &whole));
        let zst = [zstd::encode_all(&a[..], 3).expect("zstd"), zstd::encode_all(&b[..], 3).expect("zstd")].concat();
        let (c, out, _) = decode_all(&zst).expect("zstd");
        assert_eq!(c, Compression::Zstd);
        assert_eq!(out, whole, "both zstd frames");
        let (c, out, _) = decode_all(&whole).expect("plain");
        assert_eq!(c, Compression::Plain);
        assert_eq!(out, whole);
        assert_eq!(decode_all(b"ab").expect("tiny").1, b"ab");
        assert_eq!(decode_all(b"").expect("empty").1, b"");
    }

    #[test]
    fn garbage_after_the_last_gzip_member_is_an_error() {
        let mut gz = gzip(b"payload");
        gz.extend_from_slice(b"not a gzip header at all");
        let e = decode_all(&gz).expect_err("trailing garbage refused");
        assert_eq!(e.errno(), libc::EIO, "{e}");
    }

    #[test]
    fn a_hook_error_stops_the_stream_and_comes_back_as_itself() {
        let data = vec![7u8; 3 * CHUNK];
        let (_, d) = decoder(&data[..]).expect("plain");
        let mut out = Vec::new();
        let mut hook = |n: u64| if n > CHUNK as u64 { Err(Error::TooLarge(format!("{n}"))) } else { Ok(()) };
        let e = Tee::new(d, &mut out, Algorithm::Sha256, &mut hook).finish(CHUNK).expect_err("stopped");
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(out.len() <= CHUNK, "nothing past the refusal was written: {}", out.len());
    }

    /// Gives `ok` bytes of `data`, then fails every read as a disk would (EIO).
    struct FailsAfter<'a> {
        data: &'a [u8],
        ok: usize,
    }

    impl Read for FailsAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = buf.len().min(self.ok).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.ok -= n;
            Ok(n)
        }
    }

    /// A local read error of the blob in the middle of a gzip stream is `Error::Io` (not
    /// remembered), not `Malformed` (a fault of the content, remembered for the run); a stream
    /// that truly does not decode is still `Malformed`.
    #[test]
    fn a_local_read_error_mid_stream_is_io_not_malformed() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let gz = gzip(&data);
        let run = |r: Box<dyn Read>| -> Result<(u64, Digest)> {
            let (_, d) = decoder(r)?;
            let mut hook = |_| Ok(());
            Tee::new(d, io::sink(), Algorithm::Sha256, &mut hook).finish(CHUNK)
        };
        let e = run(Box::new(Local(FailsAfter { data: &gz, ok: gz.len() / 2 }))).expect_err("a read error");
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        let e = run(Box::new(Local(FailsAfter { data: &gz, ok: 2 }))).expect_err("a read error in the magic");
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        let mut bad = gz.clone();
        let mid = bad.len() / 2;
        bad.truncate(mid);
        let e = run(Box::new(Local(&bad[..]))).expect_err("a cut stream");
        assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
    }

    /// A zstd frame whose header asks for a 256 MiB window is refused, not allocated.
    #[test]
    fn a_zstd_window_over_the_limit_is_refused() {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
        e.window_log(ZSTD_WINDOW_LOG_MAX + 1).expect("window");
        // Written in pieces, so the encoder never learns the total and keeps the large window.
        for _ in 0..4 {
            e.write_all(&[1u8; 1000]).expect("write");
            e.flush().expect("flush");
        }
        let zst = e.finish().expect("finish");
        let e = decode_all(&zst).expect_err("a window over the limit");
        assert_eq!(e.errno(), libc::EIO, "{e}");
        assert!(e.to_string().to_lowercase().contains("memory") || e.to_string().contains("window"), "{e}");
    }
}
