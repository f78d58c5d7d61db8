//! A lazy layer's table of contents (eStargz's `stargz.index.json`, zstd:chunked's manifest:
//! one JSON shape), checked, and turned into what `rootfs/` reads: the layer's index (the same
//! [`LayerIndex`] a decoded tar gives, built by the same builder, so the same-layer rules hold)
//! and, per regular file, its chunks.
//!
//! # What is refused (the whole layer, never one entry quietly)
//! - A version other than 1, or more entries than a layer may have.
//! - A `chunk` entry that follows no regular file, or a file whose chunks do not tile it: the
//!   first at 0, each where the last ended, the last ending at the file's size; a chunk of 0
//!   bytes but for "to the end of the file" (the last one, written 0).
//! - A chunk with no digest (a file's own `digest` stands for its one chunk), or with a digest
//!   that is not sha256.
//! - A chunk whose compressed bytes start at or past the end of the data (the TOC's offset), or
//!   larger than [`limits::MAX_LAZY_CHUNK`], or whose span in its member (`innerOffset` and
//!   size) ends past twice that.
//! - Chunks that overlap: two chunks of one compressed member (eStargz's `innerOffset`) whose
//!   decompressed spans overlap, or (zstd:chunked, whose chunks say where they end) two whose
//!   compressed ranges overlap.
//! - A landmark file or the TOC's own entry is hidden, as stargz-snapshotter and
//!   containers/storage hide them: they are in the layer's tar (and its diff_id) but no image
//!   author put them in the image.
//!
//! # Where a chunk's compressed bytes end
//! eStargz says only where a member starts: a chunk's member ends where the next member starts
//! (the least start past its own, or the TOC's offset for the last). zstd:chunked says where a
//! file ends (`endOffset`): a chunk ends at the next chunk's start in its file, or there. Either
//! way only a bound: the decoder reads one gzip member or one zstd frame, and the bytes are
//! checked against the chunk's digest.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits;
use crate::views::index::{Builder, Entry, IndexLimits};
use crate::views::index::{EntryKind, LayerIndex};
use crate::views::tar::{RawEntry, RawKind};

/// Names a TOC lists that `rootfs/` never shows (at the layer's root).
pub const HIDDEN: [&str; 3] = ["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"];

/// The JSON document.
struct Doc {
    version: i64,
    entries: Vec<RawTocEntry>,
}

/// The document, its entries bounded while they are read: a TOC of 64 MiB of `{}` would be
/// 22 million entries of some 300 bytes each before any count could refuse it.
struct DocSeed {
    max_entries: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for DocSeed {
    type Value = Doc;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Doc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DocSeed {
    type Value = Doc;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a TOC")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Doc, A::Error> {
        let (mut version, mut entries) = (None, Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => version = Some(map.next_value::<i64>()?),
                "entries" => entries = map.next_value_seed(EntriesSeed { max: self.max_entries })?,
                _ => drop(map.next_value::<serde::de::IgnoredAny>()?),
            }
        }
        let version = version.ok_or_else(|| serde::de::Error::missing_field("version"))?;
        Ok(Doc { version, entries })
    }
}

/// Said when a TOC has more entries than a layer may: the error to turn into `TooLarge`.
const TOO_MANY: &str = "more entries than a layer's index may hold";

struct EntriesSeed {
    max: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed {
    type Value = Vec<RawTocEntry>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed {
    type Value = Vec<RawTocEntry>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of TOC entries")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element::<RawTocEntry>()? {
            if out.len() >= self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// One entry as written (zero values are left out by writers).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTocEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    modtime: String,
    #[serde(rename = "linkName")]
    link_name: String,
    mode: u64,
    uid: u64,
    gid: u64,
    #[serde(rename = "devMajor")]
    dev_major: u32,
    #[serde(rename = "devMinor")]
    dev_minor: u32,
    xattrs: BTreeMap<String, String>,
    digest: String,
    offset: u64,
    #[serde(rename = "endOffset")]
    end_offset: u64,
    #[serde(rename = "innerOffset")]
    inner_offset: u64,
    #[serde(rename = "chunkOffset")]
    chunk_offset: u64,
    #[serde(rename = "chunkSize")]
    chunk_size: u64,
    #[serde(rename = "chunkDigest")]
    chunk_digest: String,
    #[serde(rename = "chunkType")]
    chunk_type: String,
}

/// How a format's chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// One gzip member per compressed span (eStargz).
    Gzip,
    /// One zstd frame per chunk (zstd:chunked).
    Zstd,
    /// One gzip stream, read by spans from zran checkpoints (SOCI, [`super::zran`]).
    Zran,
}

/// One chunk of a regular file: `size` bytes at `at` in the file, the decompressed bytes
/// `inner..inner + size` of the member or frame at `start..end` of the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub at: u64,
    pub size: u64,
    pub start: u64,
    pub end: u64,
    pub inner: u64,
    pub digest: Digest,
    /// A hole (zstd:chunked `chunkType` "zeros"): `size` zero bytes, nothing fetched.
    pub zeros: bool,
    /// SOCI: the piece of span `span` ([`super::ztoc::Spans`]) at `inner` of its decompressed
    /// bytes; `start..end` are the span's compressed bytes and `digest` their sha256 (the
    /// span's, not the piece's). `None` for eStargz and zstd:chunked.
    pub span: Option<usize>,
}

/// `raw` of a TOC (`which`: "TOC", "zTOC") of `what` as an index entry: pushed to `builder`
/// unless it is a regular file, which is given back for its caller to read its chunks first
/// and push; `None` when it was pushed, or left out (logged) as a tar's would be.
pub(super) fn admit(raw: RawEntry, builder: &mut Builder, which: &str, what: &str) -> Result<Option<Entry>> {
    let kind = raw.kind;
    let entry = match Entry::from_raw(raw) {
        Ok(e) => e,
        Err((why, name)) => {
            log::info!("the {which} of {what}: {name:?} left out ({why})");
            return Ok(None);
        }
    };
    if kind != RawKind::File || entry.kind != EntryKind::File {
        builder.push(entry)?;
        return Ok(None);
    }
    Ok(Some(entry))
}

/// A regular file's chunks, in file order, tiling `0..size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChunks {
    pub size: u64,
    pub chunks: Vec<Chunk>,
    /// The whole file's digest, as the TOC says it (kept for the cross-check with the tar).
    pub digest: Option<Digest>,
    /// Its path as the TOC names it.
    pub name: String,
}

/// A checked TOC: the layer's index and its files' chunks. The index's regular files name
/// their chunks by number: an entry's data offset is `1 + ` its number in `files` (offsets of
/// a decoded tar are never 0; the lazy read path never reads them as offsets).
pub struct Toc {
    pub index: LayerIndex,
    pub files: Vec<FileChunks>,
    /// The files (numbers in `files`) before the prefetch landmark: the image author's
    /// prioritised files, if there is a landmark.
    pub prefetch: Option<std::ops::Range<usize>>,
}

impl Toc {
    /// The chunks of the file whose index entry has data offset `data_offset`.
    pub fn file(&self, data_offset: u64) -> Option<&FileChunks> {
        self.files.get(usize::try_from(data_offset.checked_sub(1)?).ok()?)
    }
}

/// Seconds and nanoseconds since the epoch of an RFC 3339 time (`2006-01-02T15:04:05Z`, with
/// optional fractions and a numeric zone); `None` if it is not one.
pub fn rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ns: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, c) in b[i..i + digits].iter().enumerate() {
            if k < 9 {
                ns = ns * 10 + u32::from(c - b'0');
            }
        }
        for _ in digits..9 {
            ns *= 10;
        }
        i += digits;
    }
    let zone = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (zh, zm) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let off = zh * 3600 + zm * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), as Howard Hinnant's `days_from_civil`.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + se - zone, ns))
}

fn sha256(s: &str, what: &dyn Fn() -> String) -> Result<Digest> {
    let d: Digest = s.parse().map_err(|_| Error::malformed(what(), format!("digest {s:?}")))?;
    if d.algorithm() != Algorithm::Sha256 {
        return Err(Error::malformed(what(), format!("digest {s:?} is not sha256")));
    }
    Ok(d)
}

/// Parse and check the TOC JSON `json` of a layer whose compressed data ends at `data_end`
/// (the TOC's own offset), compressed with `codec`; `what` names the layer in errors.
pub fn parse(json: &[u8], codec: Codec, data_end: u64, limits: IndexLimits, what: &str) -> Result<Toc> {
    let bad = |why: String| Error::malformed(format!("the TOC of {what}"), why);
    let mut de = serde_json::Deserializer::from_slice(json);
    let doc = serde::de::DeserializeSeed::deserialize(DocSeed { max_entries: limits.max_entries }, &mut de)
        .and_then(|doc| de.end().map(|()| doc));
    let doc = doc.map_err(|e| match e.to_string().starts_with(TOO_MANY) {
        true => Error::TooLarge(format!("the TOC of {what}: more than {} entries", limits.max_entries)),
        false => bad(format!("not a TOC: {e}")),
    })?;
    if doc.version != 1 {
        return Err(bad(format!("version {}", doc.version)));
    }
    // Where members start (eStargz: a chunk's member ends at the next start).
    let mut starts: Vec<u64> = doc
        .entries
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "reg" | "chunk") && (e.size > 0 || e.kind == "chunk"))
        .filter(|e| e.chunk_type != "zeros" || e.offset > 0)
        .map(|e| e.offset)
        .collect();
    starts.push(data_end);
    starts.sort_unstable();
    starts.dedup();
    let member_end = |start: u64| -> Option<u64> {
        let i = starts.partition_point(|s| *s <= start);
        starts.get(i).copied()
    };

    let mut builder = Builder::new(limits);
    let mut files: Vec<FileChunks> = Vec::new();
    // The file whose chunks are being read, and its entry to push once they are.
    let mut open: Option<(Entry, FileChunks, u64)> = None;
    let mut prefetch = None;
    let finish = |open: &mut Option<(Entry, FileChunks, u64)>,
                  builder: &mut Builder,
                  files: &mut Vec<FileChunks>|
     -> Result<()> {
        let Some((entry, file, end_offset)) = open.take() else { return Ok(()) };
        let covered = file.chunks.last().map_or(0, |c| c.at + c.size);
        if covered != file.size {
            return Err(bad(format!("{:?}: chunks cover {covered} of {} bytes", file.name, file.size)));
        }
        if codec == Codec::Zstd && end_offset > 0 {
            if let Some(last) = file.chunks.last() {
                if end_offset < last.start || end_offset > data_end {
                    return Err(bad(format!("{:?}: endOffset {end_offset} out of place", file.name)));
                }
            }
        }
        files.push(file);
        builder.push(entry)
    };
    for (n, raw) in doc.entries.into_iter().enumerate() {
        let shown = raw.name.clone();
        let name_of = || format!("entry {n} ({shown:?})");
        if raw.kind == "chunk" {
            let Some((_, file, end_offset)) = open.as_mut() else {
                return Err(bad(format!("{}: a chunk of no file", name_of())));
            };
            let at = raw.chunk_offset;
            let size = if raw.chunk_size == 0 { file.size.saturating_sub(at) } else { raw.chunk_size };
            let chunk = chunk_of(&raw, at, size, codec, data_end, &member_end, *end_offset, &name_of)?;
            let expected = file.chunks.last().map_or(0, |c| c.at + c.size);
            if at != expected || size == 0 {
                return Err(bad(format!("{}: a chunk at {at} of {size} bytes where {expected} was next", name_of())));
            }
            file.chunks.push(chunk);
            continue;
        }
        finish(&mut open, &mut builder, &mut files)?;
        let base = raw.name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let at_root = crate::views::index::normalise(&raw.name).len() == 1;
        if at_root && HIDDEN.contains(&base) {
            if base == ".prefetch.landmark" {
                prefetch = Some(0..files.len());
            }
            continue;
        }
        let kind = match raw.kind.as_str() {
            "reg" => RawKind::File,
            "dir" => RawKind::Dir,
            "symlink" => RawKind::Symlink,
            "hardlink" => RawKind::Hardlink,
            "char" => RawKind::CharDevice,
            "block" => RawKind::BlockDevice,
            "fifo" => RawKind::Fifo,
            other => return Err(bad(format!("{}: type {other:?}", name_of()))),
        };
        let mut xattrs = Vec::new();
        for (k, v) in &raw.xattrs {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| bad(format!("{}: xattr {k:?} is not base64: {e}", name_of())))?;
            xattrs.push((k.clone(), value));
        }
        let (mtime, mtime_ns) = if raw.modtime.is_empty() {
            (0, 0)
        } else {
            rfc3339(&raw.modtime).ok_or_else(|| bad(format!("{}: modtime {:?}", name_of(), raw.modtime)))?
        };
        let number = files.len() as u64 + 1;
        let mode = u32::try_from(raw.mode & 0o7777).unwrap_or(0);
        let size = if kind == RawKind::File { raw.size } else { 0 };
        let raw_entry = RawEntry {
            name: raw.name.clone().into_bytes(),
            kind,
            mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime,
            mtime_ns,
            size,
            linkname: raw.link_name.clone().into_bytes(),
            devmajor: raw.dev_major,
            devminor: raw.dev_minor,
            xattrs,
            header_offset: number,
            data_offset: number,
        };
        let Some(entry) = admit(raw_entry, &mut builder, "TOC", what)? else { continue };
        let digest = if raw.digest.is_empty() { None } else { Some(sha256(&raw.digest, &name_of)?) };
        let mut file = FileChunks { size, chunks: Vec::new(), digest, name: raw.name.clone() };
        if size > 0 {
            let first = if raw.chunk_size == 0 { size } else { raw.chunk_size };
            if raw.chunk_offset != 0 {
                return Err(bad(format!("{}: its first chunk is at {}", name_of(), raw.chunk_offset)));
            }
            let mut raw = raw;
            if raw.chunk_digest.is_empty() && first == size {
                raw.chunk_digest.clone_from(&raw.digest);
            }
            file.chunks.push(chunk_of(
                &raw,
                0,
                first.min(size),
                codec,
                data_end,
                &member_end,
                raw.end_offset,
                &name_of,
            )?);
            open = Some((entry, file, raw.end_offset));
        } else {
            open = Some((entry, file, 0));
        }
    }
    finish(&mut open, &mut builder, &mut files)?;
    check_overlaps(&files, codec).map_err(bad)?;
    let index = builder.finish(0)?;
    Ok(Toc { index, files, prefetch })
}

/// One chunk of entry `raw`: `size` bytes at `at` of its file.
#[allow(clippy::too_many_arguments)]
fn chunk_of(
    raw: &RawTocEntry,
    at: u64,
    size: u64,
    codec: Codec,
    data_end: u64,
    member_end: &dyn Fn(u64) -> Option<u64>,
    file_end: u64,
    name_of: &dyn Fn() -> String,
) -> Result<Chunk> {
    let bad = |why: String| Error::malformed(format!("a TOC's {}", name_of()), why);
    if size > limits::MAX_LAZY_CHUNK {
        return Err(bad(format!("a chunk of {size} bytes")));
    }
    // Its span in its member, bounded as the reader bounds it (so `inner + size` never
    // overflows in what follows).
    if raw.inner_offset.checked_add(size).is_none_or(|end| end > 2 * limits::MAX_LAZY_CHUNK) {
        return Err(bad(format!("a chunk of {size} bytes at {} in its member", raw.inner_offset)));
    }
    let zeros = raw.chunk_type == "zeros";
    if !raw.chunk_type.is_empty() && !zeros {
        return Err(bad(format!("chunkType {:?}", raw.chunk_type)));
    }
    if zeros && codec != Codec::Zstd {
        return Err(bad("a chunk of zeros outside zstd:chunked".into()));
    }
    let digest = if raw.chunk_digest.is_empty() {
        if zeros {
            // A hole needs no digest: its bytes are zeros, whatever the blob holds.
            Digest::of(Algorithm::Sha256, &[])
        } else {
            return Err(bad("a chunk without a digest".into()));
        }
    } else {
        sha256(&raw.chunk_digest, name_of)?
    };
    if zeros {
        return Ok(Chunk { at, size, start: 0, end: 0, inner: 0, digest, zeros, span: None });
    }
    let start = raw.offset;
    if start >= data_end {
        return Err(bad(format!("data at {start}, past the layer's data (which ends at {data_end})")));
    }
    let end = match codec {
        Codec::Zstd if file_end > start => file_end.min(member_end(start).unwrap_or(data_end)),
        _ => member_end(start).unwrap_or(data_end),
    };
    if end - start > limits::MAX_LAZY_CHUNK_FETCH {
        return Err(bad(format!("a chunk spanning {} compressed bytes", end - start)));
    }
    Ok(Chunk { at, size, start, end, inner: raw.inner_offset, digest, zeros, span: None })
}

/// Chunks that overlap: in one member, decompressed spans that overlap; across members, none
/// can (their ends are the next start) but zstd:chunked's own ends, checked here.
fn check_overlaps(files: &[FileChunks], codec: Codec) -> std::result::Result<(), String> {
    let mut spans: Vec<(u64, u64, u64, u64)> = files
        .iter()
        .flat_map(|f| f.chunks.iter())
        .filter(|c| !c.zeros)
        .map(|c| (c.start, c.inner, c.inner + c.size, c.end))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.0 == b.0 {
            if codec == Codec::Zstd || a.2 > b.1 {
                return Err(format!("two chunks overlap in the member at {}", a.0));
            }
        } else if a.3 > b.0 {
            return Err(format!("the chunk at {} runs past the one at {}", a.0, b.0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toc(entries: serde_json::Value) -> Result<Toc> {
        let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": entries})).expect("json");
        parse(&json, Codec::Gzip, 10_000, IndexLimits::default(), "a test layer")
    }

    fn digest(s: &str) -> String {
        Digest::of(Algorithm::Sha256, s.as_bytes()).to_string()
    }

    #[test]
    fn rfc3339_times_are_read_as_go_writes_them() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(rfc3339("2020-02-29T12:34:56Z"), Some((1_582_979_696, 0)));
        assert_eq!(rfc3339("2020-02-29T12:34:56.5Z"), Some((1_582_979_696, 500_000_000)));
        assert_eq!(rfc3339("2020-02-29T13:34:56+01:00"), Some((1_582_979_696, 0)));
        assert_eq!(rfc3339("1969-12-31T23:59:59Z"), Some((-1, 0)));
        for bad in ["", "2020-02-29", "2020-13-01T00:00:00Z", "2020-02-29T12:34:56", "x020-02-29T12:34:56Z"] {
            assert_eq!(rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_toc_gives_an_index_and_chunks_that_tile_each_file() {
        let t = toc(serde_json::json!([
            {"name": "bin/", "type": "dir", "mode": 16877},
            {"name": "bin/sh", "type": "reg", "size": 10, "mode": 33261, "offset": 100, "chunkSize": 4, "chunkDigest": digest("a"), "digest": digest("whole")},
            {"type": "chunk", "offset": 200, "chunkOffset": 4, "chunkDigest": digest("b")},
            {"name": "bin/ash", "type": "hardlink", "linkName": "bin/sh"},
            {"name": "empty", "type": "reg", "digest": digest("")},
            {"name": "stargz.index.json", "type": "reg", "size": 5, "offset": 300, "chunkDigest": digest("toc")},
            {"name": "link", "type": "symlink", "linkName": "bin/sh", "modtime": "2020-01-01T00:00:00Z"},
        ]))
        .expect("a good TOC");
        let sh = t.index.get("bin/sh").expect("bin/sh");
        assert_eq!((sh.size(), sh.mode()), (10, 0o755));
        let chunks = &t.file(sh.data_offset()).expect("its chunks").chunks;
        assert_eq!(
            chunks.iter().map(|c| (c.at, c.size, c.start, c.end)).collect::<Vec<_>>(),
            [(0, 4, 100, 200), (4, 6, 200, 300)]
        );
        assert!(t.index.get("stargz.index.json").is_none(), "the TOC's own entry is hidden");
        assert_eq!(t.index.get("link").and_then(|l| l.symlink_target()), Some("bin/sh"));
        assert_eq!(t.index.get("link").map(|l| l.mtime()), Some((1_577_836_800, 0)));
        let empty = t.index.get("empty").expect("empty");
        assert_eq!(t.file(empty.data_offset()).map(|f| f.chunks.len()), Some(0));
    }

    #[test]
    fn tocs_that_lie_about_chunks_are_refused() {
        let reg = |extra: serde_json::Value| {
            let mut e =
                serde_json::json!({"name": "f", "type": "reg", "size": 10, "offset": 100, "chunkDigest": digest("a")});
            e.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
            e
        };
        let cases = [
            ("past the data", serde_json::json!([reg(serde_json::json!({"offset": 10_000}))])),
            ("no digest", serde_json::json!([reg(serde_json::json!({"chunkDigest": ""}))])),
            ("not sha256", serde_json::json!([reg(serde_json::json!({"chunkDigest": "md5:abc"}))])),
            ("short", serde_json::json!([reg(serde_json::json!({"chunkSize": 4}))])),
            (
                "gap",
                serde_json::json!([reg(serde_json::json!({"chunkSize": 4})), {"type": "chunk", "offset": 200, "chunkOffset": 5, "chunkDigest": digest("b")}]),
            ),
            ("orphan chunk", serde_json::json!([{"type": "chunk", "offset": 200, "chunkDigest": digest("b")}])),
            (
                "overlap",
                serde_json::json!([
                    reg(serde_json::json!({"chunkSize": 4, "innerOffset": 0})),
                    {"type": "chunk", "offset": 100, "innerOffset": 2, "chunkOffset": 4, "chunkDigest": digest("b")},
                ]),
            ),
            ("unknown type", serde_json::json!([{"name": "x", "type": "sock"}])),
            ("bad time", serde_json::json!([{"name": "x", "type": "dir", "modtime": "yesterday"}])),
        ];
        for (what, entries) in cases {
            assert!(toc(entries).is_err(), "{what}: refused");
        }
        // Offsets near 2^64: refused, never an overflow (a panic, or a wrapped sum that
        // passes the overlap check).
        for (what, entries) in [
            ("inner offset", serde_json::json!([reg(serde_json::json!({"innerOffset": u64::MAX - 4}))])),
            (
                "inner offset of a chunk",
                serde_json::json!([
                    reg(serde_json::json!({"chunkSize": 4})),
                    {"type": "chunk", "offset": 200, "innerOffset": u64::MAX - 2, "chunkOffset": 4, "chunkDigest": digest("b")},
                ]),
            ),
        ] {
            let got = std::panic::catch_unwind(|| toc(entries).is_err());
            assert_eq!(got.ok(), Some(true), "{what}: refused without a panic");
        }
        // Entries past the bound are refused as they are read, not once all are held: the
        // entry past the bound is never parsed.
        let mut many = serde_json::to_string(&vec![serde_json::json!({}); 11]).expect("json");
        many.insert_str(many.len() - 1, r#",{"name": 5}"#);
        let json = format!(r#"{{"version": 1, "entries": {many}}}"#);
        let small = IndexLimits { max_entries: 10, ..IndexLimits::default() };
        let got = parse(json.as_bytes(), Codec::Gzip, 10, small, "x").err();
        assert!(matches!(got, Some(Error::TooLarge(_))), "{got:?}");
        let json = br#"{"version": 2, "entries": []}"#;
        assert!(parse(json, Codec::Gzip, 10, IndexLimits::default(), "x").is_err(), "version 2 is refused");
    }
}
