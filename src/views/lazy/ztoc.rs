//! A SOCI zTOC (awslabs/soci-snapshotter `ztoc/fbs/ztoc.fbs`, version "0.9"), read and checked,
//! and turned into what `rootfs/` reads: the layer's index (the same [`LayerIndex`] a decoded
//! tar gives, by the same builder) and, per regular file, its pieces of spans.
//!
//! # The document
//! A flatbuffer: `Ztoc{version, build_tool_identifier, compressed_archive_size,
//! uncompressed_archive_size, toc: TOC{metadata: [FileMetadata]}, compression_info:
//! CompressionInfo{compression_algorithm (Gzip = 1, the default), max_span_id, span_digests:
//! [string], checkpoints: [ubyte]}}`. `FileMetadata` is a tar header's fields: `name`, `type`
//! (`reg`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`), `uncompressed_offset` (of
//! its data in the tar), `uncompressed_size`, `linkname`, `mode`, `uid`, `gid`, `mod_time`
//! (RFC 3339), `devmajor`, `devminor`, `xattrs` (the entry's PAX records, as key and value).
//! Read by hand, every offset bounds-checked ([`Fb`]): 150 lines against a crate and generated
//! code, and a malformed buffer is an error, never a panic.
//!
//! The checkpoints blob (`ztoc/compression/gzip_zinfo.c`): `int32 count, int64 span_size`, then
//! per checkpoint `in: 8, out: 8, bits: 1, window: 32768`, little-endian; a version-1 blob
//! leaves out the first (`in` 10, `out` 0, no bits, a window of zeros). Span `i` is the
//! compressed bytes `in_i - (bits_i ? 1 : 0) .. in_{i+1}` (the last: to the blob's end), whose
//! sha256 is `span_digests[i]`, and decompresses to the tar's bytes `out_i .. out_{i+1}` (the
//! last: to `uncompressed_archive_size`).
//!
//! # What is refused (the whole layer)
//! A version other than "0.9"; an algorithm other than gzip; sizes that are not the layer's
//! (compressed) or absurd (uncompressed); a checkpoints blob whose length is not its count's;
//! a count that is not `max_span_id + 1` or the number of span digests; checkpoints whose `in`
//! or `out` do not increase, that start anywhere but `out` 0, or lie past the sizes; a span
//! larger than [`limits::MAX_LAZY_CHUNK`] decompressed or [`limits::MAX_LAZY_CHUNK_FETCH`]
//! compressed; digests that are not sha256; a file whose data lies past the tar, or overlaps
//! another's (as SOCI's reader refuses); unknown types and times; more entries than a layer's
//! index may hold (counted before any is read).

use std::ops::Range;

use super::toc::{Chunk, FileChunks, Toc, rfc3339};
use super::zran::WINDOW;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits;
use crate::views::index::{Builder, IndexLimits};
use crate::views::tar::{RawEntry, RawKind};

/// The zTOC version read.
pub const VERSION: &str = "0.9";
/// Bytes of the checkpoints blob's header, and of each checkpoint.
pub const CHECKPOINTS_HEADER: usize = 12;
pub const CHECKPOINT: usize = 8 + 8 + 1 + WINDOW;
/// Where a version-1 blob's left-out first checkpoint starts (after a 10-byte gzip header).
const V1_FIRST_IN: u64 = 10;
/// PAX records read per entry (their bytes are bounded too, by the index's limits).
const MAX_XATTR_RECORDS: usize = 4096;

/// A flatbuffer, read with every offset checked.
#[derive(Clone, Copy)]
pub struct Fb<'a> {
    buf: &'a [u8],
}

/// A table of a flatbuffer: where it starts, and its vtable.
#[derive(Clone, Copy)]
struct Table {
    at: usize,
    vtable: usize,
    vtable_len: usize,
}

type FbResult<T> = std::result::Result<T, String>;

impl<'a> Fb<'a> {
    fn bytes(&self, at: usize, n: usize) -> FbResult<&'a [u8]> {
        at.checked_add(n)
            .and_then(|end| self.buf.get(at..end))
            .ok_or_else(|| format!("{n} bytes at {at}, past the buffer's {}", self.buf.len()))
    }
    fn u16(&self, at: usize) -> FbResult<u16> {
        Ok(u16::from_le_bytes(self.bytes(at, 2)?.try_into().map_err(|_| "u16")?))
    }
    fn u32(&self, at: usize) -> FbResult<u32> {
        Ok(u32::from_le_bytes(self.bytes(at, 4)?.try_into().map_err(|_| "u32")?))
    }
    fn i32(&self, at: usize) -> FbResult<i32> {
        Ok(i32::from_le_bytes(self.bytes(at, 4)?.try_into().map_err(|_| "i32")?))
    }
    fn i64(&self, at: usize) -> FbResult<i64> {
        Ok(i64::from_le_bytes(self.bytes(at, 8)?.try_into().map_err(|_| "i64")?))
    }
    /// The position an unsigned offset at `at` points to.
    fn follow(&self, at: usize) -> FbResult<usize> {
        at.checked_add(self.u32(at)? as usize).ok_or_else(|| "an offset past the buffer".to_string())
    }
    fn table(&self, at: usize) -> FbResult<Table> {
        let soffset = i64::from(self.i32(at)?);
        let vtable = usize::try_from(at as i64 - soffset).map_err(|_| format!("a vtable before the buffer ({at})"))?;
        let vtable_len = usize::from(self.u16(vtable)?);
        if vtable_len < 4 || vtable_len % 2 != 0 {
            return Err(format!("a vtable of {vtable_len} bytes"));
        }
        self.bytes(vtable, vtable_len)?;
        Ok(Table { at, vtable, vtable_len })
    }
    fn root(&self) -> FbResult<Table> {
        self.table(self.follow(0)?)
    }
    /// Where field `n` of `t` is, if it is present.
    fn field(&self, t: Table, n: usize) -> FbResult<Option<usize>> {
        let slot = 4 + 2 * n;
        if slot + 2 > t.vtable_len {
            return Ok(None);
        }
        let off = usize::from(self.u16(t.vtable + slot)?);
        Ok((off != 0).then_some(t.at + off))
    }
    fn i64_field(&self, t: Table, n: usize) -> FbResult<i64> {
        self.field(t, n)?.map_or(Ok(0), |at| self.i64(at))
    }
    fn u32_field(&self, t: Table, n: usize) -> FbResult<u32> {
        self.field(t, n)?.map_or(Ok(0), |at| self.u32(at))
    }
    fn i32_field(&self, t: Table, n: usize) -> FbResult<i32> {
        self.field(t, n)?.map_or(Ok(0), |at| self.i32(at))
    }
    fn i8_field(&self, t: Table, n: usize, default: i8) -> FbResult<i8> {
        self.field(t, n)?.map_or(Ok(default), |at| Ok(self.bytes(at, 1)?[0] as i8))
    }
    /// A vector's length and where its elements start.
    fn vector(&self, at: usize, element: usize) -> FbResult<(usize, usize)> {
        let len = self.u32(at)? as usize;
        let start = at + 4;
        self.bytes(start, len.checked_mul(element).ok_or("a vector too long")?)?;
        Ok((len, start))
    }
    fn bytes_field(&self, t: Table, n: usize) -> FbResult<&'a [u8]> {
        match self.field(t, n)? {
            None => Ok(&[]),
            Some(at) => {
                let (len, start) = self.vector(self.follow(at)?, 1)?;
                self.bytes(start, len)
            }
        }
    }
    fn string_field(&self, t: Table, n: usize) -> FbResult<String> {
        let b = self.bytes_field(t, n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("field {n}: a string that is not UTF-8"))
    }
    fn table_field(&self, t: Table, n: usize) -> FbResult<Option<Table>> {
        self.field(t, n)?.map(|at| self.table(self.follow(at)?)).transpose()
    }
    /// A vector of offsets (tables or strings): its length and where its elements start.
    fn offsets_field(&self, t: Table, n: usize) -> FbResult<(usize, usize)> {
        match self.field(t, n)? {
            None => Ok((0, 0)),
            Some(at) => self.vector(self.follow(at)?, 4),
        }
    }
    fn string_at(&self, at: usize) -> FbResult<String> {
        let (len, start) = self.vector(self.follow(at)?, 1)?;
        String::from_utf8(self.bytes(start, len)?.to_vec()).map_err(|_| "a string that is not UTF-8".to_string())
    }
}

/// One zran checkpoint: where a span starts in the blob (`input`, and `bits` of the byte before
/// it) and in the tar (`output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub input: u64,
    pub output: u64,
    pub bits: u8,
}

/// A layer's spans: what reading one needs.
#[derive(Debug)]
pub struct Spans {
    pub ztoc: Digest,
    pub checkpoints: Vec<Checkpoint>,
    /// The checkpoints' windows, [`WINDOW`] bytes each, in order.
    pub windows: Vec<u8>,
    pub digests: Vec<Digest>,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
}

impl Spans {
    /// Span `i`'s compressed bytes in the blob.
    pub fn compressed(&self, i: usize) -> Range<u64> {
        let c = self.checkpoints[i];
        let start = c.input - u64::from(c.bits != 0);
        let end = self.checkpoints.get(i + 1).map_or(self.compressed_size, |n| n.input);
        start..end
    }
    /// Span `i`'s bytes in the tar.
    pub fn uncompressed(&self, i: usize) -> Range<u64> {
        let start = self.checkpoints[i].output;
        let end = self.checkpoints.get(i + 1).map_or(self.uncompressed_size, |n| n.output);
        start..end
    }
    pub fn window(&self, i: usize) -> &[u8] {
        &self.windows[i * WINDOW..(i + 1) * WINDOW]
    }
    /// The spans holding tar bytes `range`.
    pub fn covering(&self, range: Range<u64>) -> Range<usize> {
        let first = self.checkpoints.partition_point(|c| c.output <= range.start).saturating_sub(1);
        let last = self.checkpoints.partition_point(|c| c.output < range.end);
        first..last.max(first)
    }
    /// The key span `i`'s decompressed bytes are kept by: its bytes follow from its compressed
    /// bytes (its digest) and its checkpoint (its window and bits, in the zTOC), so from the
    /// zTOC's digest and its number.
    pub fn key(&self, i: usize) -> Digest {
        Digest::of(Algorithm::Sha256, format!("regfs soci span {} {i}", self.ztoc).as_bytes())
    }
}

/// A checked zTOC: the layer's index, its files' pieces of spans, and the spans.
pub struct Ztoc {
    pub toc: Toc,
    pub spans: Spans,
}

/// The checkpoints blob `blob`, for `count` spans.
fn checkpoints(blob: &[u8], count: usize) -> std::result::Result<(Vec<Checkpoint>, Vec<u8>), String> {
    let header = blob.get(..CHECKPOINTS_HEADER).ok_or("a checkpoints blob shorter than its header")?;
    let n = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if usize::try_from(n).ok() != Some(count) {
        return Err(format!("{n} checkpoints for {count} spans"));
    }
    let body = &blob[CHECKPOINTS_HEADER..];
    let v1 = if body.len() == count * CHECKPOINT {
        false
    } else if count > 0 && body.len() == (count - 1) * CHECKPOINT {
        true
    } else {
        return Err(format!("a checkpoints blob of {} bytes for {count} checkpoints", blob.len()));
    };
    let mut points = Vec::with_capacity(count);
    let mut windows = Vec::with_capacity(count * WINDOW);
    if v1 {
        points.push(Checkpoint { input: V1_FIRST_IN, output: 0, bits: 0 });
        windows.resize(WINDOW, 0);
    }
    for c in body.chunks_exact(CHECKPOINT) {
        let le = |r: Range<usize>| u64::from_le_bytes(c[r].try_into().unwrap_or_default());
        points.push(Checkpoint { input: le(0..8), output: le(8..16), bits: c[16] });
        windows.extend_from_slice(&c[17..]);
    }
    Ok((points, windows))
}

/// `Err` (what it is) when zTOC `buf` is a version or an algorithm regfs does not read: its
/// layer is read whole. A buffer that is no zTOC is `Ok` here, and refused by [`parse`].
pub fn readable(buf: &[u8]) -> std::result::Result<(), String> {
    let fb = Fb { buf };
    let Ok(root) = fb.root() else { return Ok(()) };
    if let Ok(version) = fb.string_field(root, 0) {
        if version != VERSION {
            return Err(format!("version {version:?} (regfs reads {VERSION:?})"));
        }
    }
    if let Ok(Some(info)) = fb.table_field(root, 5) {
        if let Ok(a) = fb.i8_field(info, 0, 1) {
            if a != 1 {
                return Err(format!("compressed by algorithm {a} (regfs reads gzip, 1)"));
            }
        }
    }
    Ok(())
}

/// Parse and check the zTOC `buf` (digest `digest`) of a layer of `size` compressed bytes.
pub fn parse(buf: &[u8], digest: &Digest, size: u64, limits: IndexLimits, what: &str) -> Result<Ztoc> {
    let bad = |why: String| Error::malformed(format!("the zTOC {digest} of {what}"), why);
    let fb = Fb { buf };
    let root = fb.root().map_err(bad)?;
    let version = fb.string_field(root, 0).map_err(bad)?;
    if version != VERSION {
        return Err(bad(format!("version {version:?} (regfs reads {VERSION:?})")));
    }
    let compressed = fb.i64_field(root, 2).map_err(bad)?;
    let uncompressed = fb.i64_field(root, 3).map_err(bad)?;
    if u64::try_from(compressed).ok() != Some(size) {
        return Err(bad(format!("a compressed size of {compressed}; the layer is {size} bytes")));
    }
    let uncompressed = u64::try_from(uncompressed)
        .ok()
        .filter(|u| *u > 0 && *u <= limits::MAX_BLOB_SIZE.saturating_mul(1024))
        .ok_or_else(|| bad(format!("an uncompressed size of {uncompressed}")))?;
    let info = fb.table_field(root, 5).map_err(bad)?.ok_or_else(|| bad("no compression info".into()))?;
    let algorithm = fb.i8_field(info, 0, 1).map_err(bad)?;
    if algorithm != 1 {
        return Err(bad(format!("compression algorithm {algorithm} (regfs reads gzip, 1)")));
    }
    let max_span = fb.i32_field(info, 1).map_err(bad)?;
    let (n_digests, digests_at) = fb.offsets_field(info, 2).map_err(bad)?;
    let count = usize::try_from(max_span).ok().and_then(|m| m.checked_add(1));
    if count != Some(n_digests) {
        return Err(bad(format!("max_span_id {max_span} and {n_digests} span digests")));
    }
    let (points, windows) = checkpoints(fb.bytes_field(info, 3).map_err(bad)?, n_digests).map_err(bad)?;
    let mut digests = Vec::with_capacity(n_digests);
    for i in 0..n_digests {
        let s = fb.string_at(digests_at + 4 * i).map_err(bad)?;
        let d: Digest = s.parse().map_err(|_| bad(format!("span digest {i}: {s:?}")))?;
        if d.algorithm() != Algorithm::Sha256 {
            return Err(bad(format!("span digest {i} is not sha256")));
        }
        digests.push(d);
    }
    let spans = Spans {
        ztoc: digest.clone(),
        checkpoints: points,
        windows,
        digests,
        compressed_size: size,
        uncompressed_size: uncompressed,
    };
    check_spans(&spans).map_err(bad)?;
    let toc_table = fb.table_field(root, 4).map_err(bad)?.ok_or_else(|| bad("no TOC".into()))?;
    let toc = files(&fb, toc_table, &spans, limits, what).map_err(|e| match e {
        Error::Malformed { why, .. } => bad(why),
        e => e,
    })?;
    Ok(Ztoc { toc, spans })
}

fn check_spans(s: &Spans) -> std::result::Result<(), String> {
    let first = s.checkpoints.first().ok_or("no checkpoints")?;
    if first.output != 0 {
        return Err(format!("its first checkpoint is at {} of the tar, not 0", first.output));
    }
    for (i, w) in s.checkpoints.windows(2).enumerate() {
        if w[1].input <= w[0].input || w[1].output <= w[0].output {
            return Err(format!("checkpoints {i} and {} do not increase", i + 1));
        }
    }
    for (i, c) in s.checkpoints.iter().enumerate() {
        if c.bits > 7 || (c.bits != 0 && c.input == 0) {
            return Err(format!("checkpoint {i}: bit {} of byte {}", c.bits, c.input));
        }
        if c.input >= s.compressed_size || c.output >= s.uncompressed_size {
            return Err(format!("checkpoint {i} at {}/{}, past the layer", c.input, c.output));
        }
        let (z, u) = (s.compressed(i), s.uncompressed(i));
        if u.end - u.start > limits::MAX_LAZY_CHUNK || z.end - z.start > limits::MAX_LAZY_CHUNK_FETCH {
            return Err(format!("span {i}: {} bytes from {} compressed", u.end - u.start, z.end - z.start));
        }
    }
    Ok(())
}

/// The TOC's files: the layer's index, and each regular file's pieces of spans.
fn files(fb: &Fb<'_>, toc: Table, spans: &Spans, limits: IndexLimits, what: &str) -> Result<Toc> {
    let bad = |why: String| Error::malformed(what, why);
    let (n, at) = fb.offsets_field(toc, 0).map_err(bad)?;
    if n > limits.max_entries {
        return Err(Error::TooLarge(format!("the zTOC of {what}: {n} entries, more than {}", limits.max_entries)));
    }
    let mut builder = Builder::new(limits);
    let mut files: Vec<FileChunks> = Vec::new();
    // Each file's data in the tar, to refuse overlaps once all are read.
    let mut data: Vec<(u64, u64, usize)> = Vec::new();
    // A flatbuffer may point many offsets at one string (a million entries naming one string of
    // 60 MiB): what is copied out is bounded, whatever is pointed at. An honest zTOC copies each
    // of its strings once, so at most its own length.
    let budget = fb.buf.len().saturating_mul(2).max(16 << 20);
    let mut copied = 0usize;
    let mut charge = |n: usize| -> Result<()> {
        copied = copied.saturating_add(n);
        if copied > budget {
            return Err(Error::TooLarge(format!("the zTOC of {what}: its entries name more than {budget} bytes")));
        }
        Ok(())
    };
    for i in 0..n {
        let t = fb.follow(at + 4 * i).and_then(|p| fb.table(p)).map_err(bad)?;
        let len = |f: usize| fb.bytes_field(t, f).map(<[u8]>::len).map_err(bad);
        let (name_len, link_len) = (len(0)?, len(4)?);
        if name_len > limits.max_path || link_len > limits.max_path {
            log::info!("the zTOC of {what}: entry {i} left out (a name or link of {} bytes)", name_len.max(link_len));
            continue;
        }
        if len(1)? > 16 || len(10)? > 64 {
            return Err(bad(format!("entry {i}: a type or time of {} bytes", len(1)?.max(len(10)?))));
        }
        charge(name_len + link_len)?;
        let s = |f: usize| fb.string_field(t, f).map_err(bad);
        let (name, kind) = (s(0)?, s(1)?);
        let name_of = || format!("entry {i} ({name:?})");
        let kind = match kind.as_str() {
            "reg" => RawKind::File,
            "dir" => RawKind::Dir,
            "symlink" => RawKind::Symlink,
            "hardlink" => RawKind::Hardlink,
            "char" => RawKind::CharDevice,
            "block" => RawKind::BlockDevice,
            "fifo" => RawKind::Fifo,
            other => return Err(bad(format!("{}: type {other:?}", name_of()))),
        };
        let num = |f: usize| fb.i64_field(t, f).map_err(bad);
        let (offset, size) = (num(2)?, num(3)?);
        let (Ok(offset), Ok(size)) = (u64::try_from(offset), u64::try_from(size)) else {
            return Err(bad(format!("{}: data of {size} bytes at {offset}", name_of())));
        };
        let mtime = s(10)?;
        let (mtime, mtime_ns) = if mtime.is_empty() {
            (0, 0)
        } else {
            rfc3339(&mtime).ok_or_else(|| bad(format!("{}: mod_time {mtime:?}", name_of())))?
        };
        let (nx, xat) = fb.offsets_field(t, 13).map_err(bad)?;
        let mut xattrs = Vec::new();
        // Their bytes are bounded before any is copied (the index's bounds, which drop a tar
        // entry's xattrs past them and keep the entry, apply only once all are held).
        let mut held = 0usize;
        for x in 0..nx.min(MAX_XATTR_RECORDS) {
            let xt = fb.follow(xat + 4 * x).and_then(|p| fb.table(p)).map_err(bad)?;
            let (key, value) = (fb.bytes_field(xt, 0).map_err(bad)?, fb.bytes_field(xt, 1).map_err(bad)?);
            held = held.saturating_add(key.len() + value.len());
            if value.len() > limits.max_xattr_value || held > limits.max_xattr_bytes {
                log::debug!("the zTOC of {what}: the xattrs of {} dropped: past {held} bytes", name_of());
                xattrs.clear();
                break;
            }
            charge(key.len() + value.len())?;
            let key = fb.string_field(xt, 0).map_err(bad)?;
            match crate::views::tar::pax_xattr(&key, value) {
                Some(Some((k, v))) => crate::views::tar::set_xattr(&mut xattrs, k, v),
                Some(None) => return Err(bad(format!("{}: a malformed xattr record {key:?}", name_of()))),
                None => {}
            }
        }
        let dev = |f: usize| num(f).map(|d| u32::try_from(d).unwrap_or(0));
        let number = files.len() as u64 + 1;
        let size = if kind == RawKind::File { size } else { 0 };
        let raw = RawEntry {
            name: name.clone().into_bytes(),
            kind,
            mode: u32::try_from(num(5)? & 0o7777).unwrap_or(0),
            uid: u64::from(fb.u32_field(t, 6).map_err(bad)?),
            gid: u64::from(fb.u32_field(t, 7).map_err(bad)?),
            mtime,
            mtime_ns,
            size,
            linkname: s(4)?.into_bytes(),
            devmajor: dev(11)?,
            devminor: dev(12)?,
            xattrs,
            header_offset: number,
            data_offset: number,
        };
        let Some(entry) = super::toc::admit(raw, &mut builder, "zTOC", what)? else { continue };
        let end = offset.checked_add(size).filter(|e| *e <= spans.uncompressed_size);
        let end = end.ok_or_else(|| bad(format!("{}: data at {offset}+{size}, past the tar", name_of())))?;
        data.push((offset, end, files.len()));
        files.push(FileChunks { size, chunks: pieces(spans, offset..end), digest: None, name });
        builder.push(entry)?;
    }
    data.sort_unstable();
    for w in data.windows(2) {
        if w[0].1 > w[1].0 {
            let (a, b) = (&files[w[0].2].name, &files[w[1].2].name);
            return Err(bad(format!("the data of {a:?} and {b:?} overlap in the tar")));
        }
    }
    let index = builder.finish(0)?;
    Ok(Toc { index, files, prefetch: None })
}

/// The pieces of spans that hold tar bytes `data` (a file's), in file order.
fn pieces(spans: &Spans, data: Range<u64>) -> Vec<Chunk> {
    let mut out = Vec::new();
    for i in spans.covering(data.clone()) {
        let u = spans.uncompressed(i);
        let (from, to) = (data.start.max(u.start), data.end.min(u.end));
        if from >= to {
            continue;
        }
        let z = spans.compressed(i);
        out.push(Chunk {
            at: from - data.start,
            size: to - from,
            start: z.start,
            end: z.end,
            inner: from - u.start,
            digest: spans.digests[i].clone(),
            zeros: false,
            span: Some(i),
        });
    }
    out
}
