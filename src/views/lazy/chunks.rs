//! A lazily read file's bytes, chunk by chunk: each chunk fetched by one `Range` request (or
//! read from the verified blob when it is cached whole), decompressed alone (one gzip member,
//! one zstd frame), cut to its span, and hashed; only a chunk whose sha256 is the TOC's
//! `chunkDigest` is served or kept.
//!
//! - Verified chunks are kept in memory by their digest ([`Chunks`], bounded in bytes,
//!   least recently used out): content-addressed, so two files or two images with a chunk in
//!   common share it, and nothing a registry says later can change what a digest holds.
//! - One fetch per chunk at a time (single flight): readers of one chunk wait for one request.
//! - A chunk that does not verify is `DigestMismatch` (EIO) for that read, logged with the blob
//!   and the range; nothing of it is kept, and it is asked again at the next read (a registry
//!   fault is not remembered as the file's state).

use std::io::Read;
use std::sync::Arc;

use super::LazyLayer;
use super::toc::{Chunk, Codec, FileChunks};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits;
use crate::store::cache::Kind;
use crate::store::flight::SingleFlight;
use crate::store::sized::SizedLru;
use crate::store::{Content, Parts};
use crate::sync;

/// What memory keeps verified bytes by: a chunk's digest (of its bytes), or a SOCI span's key
/// (of its zTOC and number, [`super::ztoc::Spans::key`]). Two kinds, never confused: a TOC
/// that names a span's key as a chunk's digest is not served the span.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kept {
    Chunk(Digest),
    Span(Digest),
}

/// Verified chunks in memory, by digest, and one fetch per chunk at a time.
pub struct Chunks {
    kept: std::sync::Mutex<SizedLru<Kept, Arc<Vec<u8>>>>,
    pub(super) flights: SingleFlight<Kept, Arc<Vec<u8>>>,
}

impl Chunks {
    /// Room for `bytes` of chunks.
    pub fn new(bytes: usize) -> Chunks {
        Chunks { kept: std::sync::Mutex::new(SizedLru::new(bytes)), flights: SingleFlight::default() }
    }

    /// Chunk `c`'s bytes if they are kept: kept by digest, and of the length `c` says (another
    /// TOC naming the same digest with a shorter size must not be served a prefix).
    fn kept(&self, c: &Chunk) -> Option<Arc<Vec<u8>>> {
        self.kept_bytes(&Kept::Chunk(c.digest.clone()), c.size)
    }

    /// The bytes kept by `key`, if they are `len` bytes.
    pub(super) fn kept_bytes(&self, key: &Kept, len: u64) -> Option<Arc<Vec<u8>>> {
        sync::lock(&self.kept).get(key).filter(|b| b.len() as u64 == len)
    }

    /// Keep `bytes` (verified) by `key`.
    pub(super) fn keep(&self, key: Kept, bytes: Arc<Vec<u8>>) {
        sync::lock(&self.kept).put(key, bytes);
    }

    /// Bytes of chunks held now.
    pub fn bytes(&self) -> usize {
        sync::lock(&self.kept).bytes()
    }
}

/// The bytes of chunk `c` of `layer`: kept, or fetched and verified (and kept).
pub fn chunk(layer: &LazyLayer, c: &Chunk) -> Result<Arc<Vec<u8>>> {
    if c.zeros {
        return Ok(Arc::new(vec![0u8; c.size as usize]));
    }
    if let Some(i) = c.span {
        return super::soci::span(layer, i);
    }
    let chunks = &layer.shared.chunks;
    if let Some(bytes) = chunks.kept(c) {
        return Ok(bytes);
    }
    let got = chunks.flights.run(&Kept::Chunk(c.digest.clone()), || {
        if let Some(bytes) = chunks.kept(c) {
            return Ok(bytes);
        }
        let bytes = Arc::new(on_disk(layer, &c.digest, c.size, &|| fetch(layer, c))?);
        chunks.keep(Kept::Chunk(c.digest.clone()), Arc::clone(&bytes));
        Ok(bytes)
    })?;
    // Another TOC's reader may have led the flight for the same digest with another size.
    if got.len() as u64 != c.size {
        return Err(Error::malformed(
            format!("chunk {} of blob {}", c.digest, layer.blob),
            format!("its TOC says {} bytes; the bytes of that digest are {}", c.size, got.len()),
        ));
    }
    Ok(got)
}

/// The files an eStargz layer's prefetch landmark puts first, fetched by one `Range` on a
/// thread of its own and verified chunk by chunk into the kept chunks, as stargz-snapshotter
/// prefetches `[0, landmark)`: when their compressed bytes are at most `most` (else nothing).
pub fn prefetch_landmarked(layer: &Arc<LazyLayer>, most: usize) {
    let Some(files) = layer.prefetch.clone() else { return };
    let chunks: Vec<Chunk> = layer
        .files
        .get(files)
        .unwrap_or_default()
        .iter()
        .flat_map(|f| f.chunks.iter().filter(|c| !c.zeros && c.span.is_none()).cloned())
        // Kept already (the layer made again after it left the kept layers): not fetched again.
        .filter(|c| layer.shared.chunks.kept(c).is_none())
        .collect();
    let (Some(start), Some(end)) = (chunks.iter().map(|c| c.start).min(), chunks.iter().map(|c| c.end).max()) else {
        return;
    };
    if end - start > most as u64 {
        log::info!("layer {}: its prioritised files span {} bytes; not prefetched", layer.blob, end - start);
        return;
    }
    let layer = Arc::clone(layer);
    let spawned = std::thread::Builder::new().name("regfs-lazy-prefetch".into()).spawn(move || {
        let bytes = match layer.range(start, end) {
            Ok(b) => b,
            Err(e) => return log::info!("layer {}: prefetch of its prioritised files: {e}", layer.blob),
        };
        let kept = &layer.shared.chunks;
        for c in &chunks {
            if kept.kept(c).is_some() {
                continue;
            }
            let part = &bytes[(c.start - start) as usize..(c.end - start) as usize];
            match verified(&layer, c, part) {
                Ok(data) => kept.keep(Kept::Chunk(c.digest.clone()), Arc::new(data)),
                Err(e) => log::info!("layer {}: prefetch: {e}", layer.blob),
            }
        }
        log::debug!("layer {}: {} chunks of its prioritised files prefetched", layer.blob, chunks.len());
    });
    if let Err(e) = spawned {
        log::info!("no thread to prefetch: {e}");
    }
}

/// The `size` bytes of digest `digest` (a chunk's decompressed bytes; a SOCI span's compressed
/// ones) from the cache's `chunks/` (by its digest: verified when written, and hashed again
/// before its first use by a run), else from `fetch` (which verifies them) and kept there,
/// within `--cache-size` like any cached file. Bytes the cache cannot keep (a full disk, a
/// cache smaller than them) are still served, verified, from memory.
pub(super) fn on_disk(
    layer: &LazyLayer,
    digest: &Digest,
    size: u64,
    fetch: &dyn Fn() -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let cache = layer.shared.store.blob_cache();
    let fetched: std::cell::RefCell<Option<Vec<u8>>> = std::cell::RefCell::new(None);
    let check = |f: &mut std::fs::File| crate::store::cache::hash_file(f, digest, 256 << 10);
    let produce = |out: &mut std::fs::File, hook: &mut dyn FnMut(u64) -> Result<()>| {
        let data = fetch()?;
        let len = data.len() as u64;
        *fetched.borrow_mut() = Some(data);
        hook(len)?;
        let kept = fetched.borrow();
        std::io::Write::write_all(out, kept.as_deref().unwrap_or_default())?;
        Ok(len)
    };
    match cache.open_derived(Kind::Chunk, digest, &check, &produce) {
        Ok(file) => {
            // Kept by digest: its length is the digest's, and must be the one the TOC says.
            let len = file.metadata().map_err(|e| Error::Io(format!("cached chunk {digest}: {e}")))?.len();
            if len != size {
                return Err(Error::malformed(
                    format!("chunk {digest} of blob {}", layer.blob),
                    format!("its TOC says {size} bytes; the bytes of that digest are {len}"),
                ));
            }
            let mut data = vec![0u8; size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut data, 0)
                .map_err(|e| Error::Io(format!("cached chunk {digest}: {e}")))?;
            Ok(data)
        }
        Err(e) => match fetched.into_inner() {
            Some(data) => {
                log::debug!("chunk {digest}: not kept in the cache ({e}); served from memory");
                Ok(data)
            }
            None => Err(e),
        },
    }
}

/// Fetch, decompress, cut and verify chunk `c` of `layer`.
fn fetch(layer: &LazyLayer, c: &Chunk) -> Result<Vec<u8>> {
    layer.check_trusted()?;
    let compressed = layer.range(c.start, c.end)?;
    verified(layer, c, &compressed)
}

/// Chunk `c` of `layer` from its compressed bytes, decompressed, cut and verified.
fn verified(layer: &LazyLayer, c: &Chunk, compressed: &[u8]) -> Result<Vec<u8>> {
    let what = || format!("chunk {} ({}..{} of blob {} of {})", c.digest, c.start, c.end, layer.blob, layer.repo);
    let data = decompress(compressed, layer.codec, c.inner, c.size).map_err(|why| {
        log::warn!("{}: {why}", what());
        Error::malformed(what(), why)
    })?;
    let mut h = Hasher::new(Algorithm::Sha256);
    h.update(&data);
    let actual = h.finish();
    if actual != c.digest {
        log::warn!("{}: hashes to {actual}; not served", what());
        return Err(Error::DigestMismatch { what: what(), expected: c.digest.to_string(), actual: actual.to_string() });
    }
    layer.counters.chunks_verified.bump();
    Ok(data)
}

/// Bytes `inner..inner + size` of the one member (gzip) or frame (zstd) at the start of
/// `compressed`.
fn decompress(compressed: &[u8], codec: Codec, inner: u64, size: u64) -> std::result::Result<Vec<u8>, String> {
    let want = inner.checked_add(size).filter(|w| *w <= limits::MAX_LAZY_CHUNK + limits::MAX_LAZY_CHUNK);
    let want = want.ok_or_else(|| format!("a span {inner}+{size} too large"))?;
    // The bytes before the span are passed over, never held: a chunk kept weighs its length,
    // so it must hold no more than that.
    let span = |mut r: Box<dyn Read + '_>| -> std::io::Result<(u64, Vec<u8>)> {
        let skipped = std::io::copy(&mut (&mut r).take(inner), &mut std::io::sink())?;
        let mut out = Vec::with_capacity(size as usize);
        r.take(size).read_to_end(&mut out)?;
        Ok((skipped, out))
    };
    let read = match codec {
        Codec::Gzip => span(Box::new(flate2::read::GzDecoder::new(compressed))),
        Codec::Zran => return Err("a SOCI span is not one member or frame".into()),
        Codec::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(compressed).map_err(|e| e.to_string())?;
            d.window_log_max(limits::ZSTD_WINDOW_LOG_MAX).map_err(|e| e.to_string())?;
            span(Box::new(d.single_frame()))
        }
    };
    let (skipped, out) = read.map_err(|e| format!("does not decompress: {e}"))?;
    let got = skipped + out.len() as u64;
    if got < want {
        return Err(format!("decompresses to {got} bytes, fewer than the {want} its TOC entry needs"));
    }
    Ok(out)
}

/// Where [`LazyFile`]'s reads get a chunk: `None` if it is not at hand (and must not be fetched).
type ChunkSource<'a> = dyn FnMut(&Chunk) -> Option<Result<Arc<Vec<u8>>>> + 'a;

/// A regular file of a lazy layer, read by chunks ([`Content::Parts`]).
pub struct LazyFile {
    pub(super) layer: Arc<LazyLayer>,
    /// Its number in the layer's files.
    pub(super) file: usize,
}

impl LazyFile {
    fn chunks(&self) -> &FileChunks {
        &self.layer.files[self.file]
    }

    /// The chunks holding bytes `offset..offset + size` (none past the end).
    fn covering(&self, offset: u64, size: u32) -> &[Chunk] {
        let f = self.chunks();
        let end = offset.saturating_add(u64::from(size)).min(f.size);
        if offset >= end {
            return &[];
        }
        let first = f.chunks.partition_point(|c| c.at + c.size <= offset);
        let last = f.chunks.partition_point(|c| c.at < end);
        &f.chunks[first..last.max(first)]
    }

    fn assemble(&self, offset: u64, size: u32, get: &mut ChunkSource<'_>) -> Option<Result<Vec<u8>>> {
        let end = offset.saturating_add(u64::from(size)).min(self.chunks().size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for c in self.covering(offset, size) {
            let bytes = match get(c)? {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            // A SOCI piece is `c.inner` bytes into its span's bytes; a chunk is its own bytes.
            let base = if c.span.is_some() { c.inner } else { 0 };
            let from = offset.max(c.at) - c.at + base;
            let to = end.min(c.at + c.size) - c.at + base;
            match bytes.get(from as usize..to as usize) {
                Some(part) => out.extend_from_slice(part),
                None => return Some(Err(Error::Io(format!("chunk {} is short", c.digest)))),
            }
        }
        Some(Ok(out))
    }
}

impl Parts for LazyFile {
    fn len(&self) -> u64 {
        self.chunks().size
    }

    fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.layer.check_trusted()?;
        let layer = &self.layer;
        let got = self.assemble(offset, size, &mut |c| Some(chunk(layer, c)));
        got.unwrap_or_else(|| Err(Error::Io("a chunk went missing".into())))
    }

    fn read_now(&self, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
        if let Err(e) = self.layer.check_trusted() {
            return Some(Err(e));
        }
        let (layer, chunks) = (&self.layer, &self.layer.shared.chunks);
        self.assemble(offset, size, &mut |c| {
            if c.zeros {
                return Some(Ok(Arc::new(vec![0u8; c.size as usize])));
            }
            if let (Some(i), Some(spans)) = (c.span, layer.spans.as_ref()) {
                let u = spans.uncompressed(i);
                return chunks.kept_bytes(&Kept::Span(spans.key(i)), u.end - u.start).map(Ok);
            }
            chunks.kept(c).map(Ok)
        })
    }
}

/// `file` of `layer` as content.
pub fn content(layer: Arc<LazyLayer>, file: usize) -> Content {
    Content::Parts(Arc::new(LazyFile { layer, file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, data).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn one_member_is_decompressed_and_cut_to_its_span() {
        let member = [gzip(b"header and payload"), gzip(b"the next member")].concat();
        assert_eq!(decompress(&member, Codec::Gzip, 11, 7).expect("span"), b"payload");
        assert!(decompress(&member, Codec::Gzip, 11, 30).is_err(), "a span past its member is an error");
        let frame =
            [zstd::encode_all(&b"0123456789"[..], 1).expect("zstd"), zstd::encode_all(&b"abc"[..], 1).expect("zstd")]
                .concat();
        assert_eq!(decompress(&frame, Codec::Zstd, 0, 10).expect("frame"), b"0123456789");
        assert!(decompress(&frame, Codec::Zstd, 0, 13).is_err(), "one frame only");
        assert!(decompress(b"not gzip", Codec::Gzip, 0, 1).is_err());
    }

    /// A chunk kept weighs its length: what it holds must be no more, whatever its inner
    /// offset (a TOC of chunks of one byte each at 32 MiB into a member of zeros must not keep
    /// 32 MiB per byte weighed).
    #[test]
    fn a_chunk_far_into_its_member_holds_only_its_own_bytes() {
        let mut data = vec![0u8; 32 << 20];
        data.extend_from_slice(b"tail");
        for codec in [Codec::Gzip, Codec::Zstd] {
            let member = match codec {
                Codec::Zstd => zstd::encode_all(&data[..], 1).expect("zstd"),
                _ => gzip(&data),
            };
            let got = decompress(&member, codec, 32 << 20, 4).expect("the tail");
            assert_eq!(got, b"tail");
            assert!(got.capacity() < 4096, "{codec:?}: 4 bytes held in {} bytes", got.capacity());
        }
    }
}
