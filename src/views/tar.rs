//! A bounded streaming tar parser: headers, positions and the end of the archive, read from any
//! `Read` (a decoder through the diff_id hash), never seeking.
//!
//! Why not the `tar` crate (kept for tests): it reads GNU `L`/`K` and PAX `x` data with
//! `read_to_end`, uncapped, so a header claiming a 4 GiB long name allocates 4 GiB. Here those
//! data are bounded ([`TarLimits`]: PAX 1 MiB, GNU long names 64 KiB) and refused *before* a
//! byte of them is read.
//!
//! Formats: v7, ustar (the `prefix` field), GNU (`L`/`K` long names and links, old sparse
//! extension blocks skipped) and PAX (`x` records: `path`, `linkpath`, `size`, `uid`, `gid`,
//! `mtime`, `SCHILY.devmajor/devminor`, `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`; `GNU.sparse.*`
//! marks the entry sparse). PAX global headers (`g`) are skipped, as Go's archive/tar does.
//! Numbers are octal or base-256 (negative ones included); anything else is `Malformed`, like a
//! bad header checksum (the unsigned or the signed sum is accepted) or data running past the end.
//!
//! The end: parsing stops at the first zero block. A second zero block (or the end of the stream,
//! as Go's reader allows) is the end of the archive; a header after a lone zero block is
//! `Malformed`. The end of the stream at a header boundary also ends the archive. The bytes after
//! the end are *not* read: [`Parser::into_inner`] hands the reader back so that the caller drains
//! them through the diff_id hash. Data are skipped by reading, so every byte before the end
//! passes through the reader in order.
//!
//! Positions: [`RawEntry::header_offset`] is the entry's first header (its extension headers
//! included), [`RawEntry::data_offset`] the first byte of its data, both in the decoded stream.

use std::collections::BTreeMap;
use std::io::{self, Read};

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::limits;

/// The tar block size.
pub const BLOCK: u64 = 512;

/// Bounds on what one archive's extension headers may make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Bytes of one PAX `x` header's records ([`limits::MAX_PAX_HEADER`]).
    pub max_pax: u64,
    /// Bytes of one GNU `L` or `K` long name ([`limits::MAX_GNU_LONG_NAME`]).
    pub max_long_name: u64,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits { max_pax: limits::MAX_PAX_HEADER, max_long_name: limits::MAX_GNU_LONG_NAME }
    }
}

/// What a header's typeflag says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// `0`, `\0` (without a trailing `/`), `7` (contiguous).
    File,
    /// `5`, GNU `D` (its dump data skipped), or `\0` with a name ending in `/` (old tars).
    Dir,
    /// `2`.
    Symlink,
    /// `1`.
    Hardlink,
    /// `3`.
    CharDevice,
    /// `4`.
    BlockDevice,
    /// `6`.
    Fifo,
    /// GNU sparse `S` (or any entry with `GNU.sparse.*` PAX records): data not contiguous.
    Sparse,
    /// Any other typeflag (volume labels, multi-volume continuations, unknown letters).
    Other(u8),
}

/// One entry's headers, parsed (extension headers applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The name: PAX `path`, else GNU long name, else ustar `prefix/name`, else `name`. Bytes as
    /// written (not necessarily UTF-8).
    pub name: Vec<u8>,
    /// What it is.
    pub kind: RawKind,
    /// The header's mode field (all bits the field holds).
    pub mode: u32,
    /// Owner (PAX `uid` over the header's).
    pub uid: u64,
    /// Group (PAX `gid` over the header's).
    pub gid: u64,
    /// Modification time in seconds (PAX `mtime` over the header's; may be negative).
    pub mtime: i64,
    /// Nanoseconds of a PAX `mtime`, else 0.
    pub mtime_ns: u32,
    /// Bytes of data after the headers (0 for header-only kinds: links, devices, dirs, FIFOs).
    pub size: u64,
    /// PAX `linkpath`, else GNU long link, else the header's link name.
    pub linkname: Vec<u8>,
    /// Device major (PAX `SCHILY.devmajor` over the header's).
    pub devmajor: u32,
    /// Device minor (PAX `SCHILY.devminor` over the header's).
    pub devminor: u32,
    /// Extended attributes from PAX records, in record order (names decoded, values raw).
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Offset of the entry's first header (PAX or GNU extension headers included).
    pub header_offset: u64,
    /// Offset of the entry's data (just past its last header).
    pub data_offset: u64,
}

/// A pull parser over a decoded tar stream (see the module note).
pub struct Parser<R> {
    r: R,
    limits: TarLimits,
    /// Bytes read from `r` so far.
    pos: u64,
    /// Bytes of the current entry's data and padding still to skip.
    pending: u64,
    /// Where the archive ended, once it has.
    end: Option<u64>,
}

fn malformed(at: u64, why: impl std::fmt::Display) -> Error {
    Error::malformed(format!("tar at offset {at}"), why)
}

/// `n` rounded up to whole blocks.
fn padded(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|v| v / BLOCK * BLOCK)
}

/// The extension headers seen before an entry's own header.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<BTreeMap<String, Vec<u8>>>,
    xattrs: Vec<(String, Vec<u8>)>,
    sparse: bool,
}

impl<R: Read> Parser<R> {
    /// A parser with the default bounds.
    pub fn new(r: R) -> Parser<R> {
        Parser::with_limits(r, TarLimits::default())
    }

    /// A parser with these bounds.
    pub fn with_limits(r: R, limits: TarLimits) -> Parser<R> {
        Parser { r, limits, pos: 0, pending: 0, end: None }
    }

    /// Bytes consumed from the reader so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The offset just past the end-of-archive marker (or where the stream ended), once
    /// [`next_entry`](Self::next_entry) has returned `Ok(None)`.
    pub fn end(&self) -> Option<u64> {
        self.end
    }

    /// The reader, positioned at [`end`](Self::end) once the archive has ended: the caller
    /// drains the trailing bytes from it. The parser reads nothing ahead, so after an error too
    /// the reader is exactly at [`position`](Self::position), and draining it hashes every
    /// decoded byte once.
    pub fn into_inner(self) -> R {
        self.r
    }

    /// Read exactly `buf.len()` bytes; `Ok(false)` if the stream ended before the first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(malformed(self.pos, "the stream ends inside a block")),
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn read_block(&mut self) -> Result<Option<[u8; 512]>> {
        let mut b = [0u8; 512];
        Ok(self.read_full(&mut b)?.then_some(b))
    }

    /// Skip `n` bytes by reading them; the stream ending first is `Malformed`.
    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        self.pos += copied;
        if copied < n {
            return Err(malformed(self.pos, format!("an entry's data runs {} bytes past the stream", n - copied)));
        }
        Ok(())
    }

    /// Read an extension header's `size` bytes of data (at most `max`, refused unread past it)
    /// and skip its padding.
    fn read_data(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>> {
        if size > max {
            return Err(malformed(self.pos, format!("{what} of {size} bytes, more than {max}")));
        }
        let mut data = vec![0u8; size as usize];
        if size > 0 && !self.read_full(&mut data)? {
            return Err(malformed(self.pos, format!("{what} runs past the stream")));
        }
        self.skip(padded(size).unwrap_or(size) - size)?;
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive. After an error the stream is not
    /// to be parsed further (the layer is malformed).
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        self.skip(pending)?;
        let mut first = self.pos;
        let mut ext = Extensions::default();
        loop {
            let at = self.pos;
            let Some(block) = self.read_block()? else {
                if at != first {
                    return Err(malformed(at, "the stream ends after extension headers"));
                }
                self.end = Some(at);
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                if at != first {
                    return Err(malformed(at, "a zero block after extension headers"));
                }
                return match self.read_block()? {
                    None => {
                        self.end = Some(self.pos);
                        Ok(None)
                    }
                    Some(b) if b.iter().all(|&b| b == 0) => {
                        self.end = Some(self.pos);
                        Ok(None)
                    }
                    Some(_) => Err(malformed(at, "a lone zero block followed by a header")),
                };
            }
            let h = Header::parse(&block, at)?;
            match h.typeflag {
                b'x' => {
                    let data = self.read_data(h.size, self.limits.max_pax, "a PAX header")?;
                    let (map, xattrs, sparse) = parse_pax(&data, at)?;
                    ext.pax = Some(map);
                    ext.xattrs = xattrs;
                    ext.sparse |= sparse;
                }
                b'g' => {
                    // Global headers are ignored (as Go's archive/tar, umoci and containerd do).
                    let skip = padded(h.size).ok_or_else(|| malformed(at, "size overflows"))?;
                    self.skip(skip)?;
                    if ext.pax.is_none() && ext.long_name.is_none() && ext.long_link.is_none() {
                        first = self.pos;
                    }
                }
                b'L' | b'K' => {
                    let mut data = self.read_data(h.size, self.limits.max_long_name, "a GNU long name")?;
                    if let Some(nul) = data.iter().position(|&b| b == 0) {
                        data.truncate(nul);
                    }
                    if h.typeflag == b'L' {
                        ext.long_name = Some(data);
                    } else {
                        ext.long_link = Some(data);
                    }
                }
                _ => return self.entry(h, block, ext, first).map(Some),
            }
        }
    }

    /// Finish an entry from its own header and the extensions before it.
    fn entry(&mut self, h: Header, block: [u8; 512], ext: Extensions, first: u64) -> Result<RawEntry> {
        let at = self.pos - BLOCK;
        let mut e = RawEntry {
            name: ext.long_name.unwrap_or(h.name),
            kind: RawKind::Other(h.typeflag),
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            mtime: h.mtime,
            mtime_ns: 0,
            size: h.size,
            linkname: ext.long_link.unwrap_or(h.linkname),
            devmajor: h.devmajor,
            devminor: h.devminor,
            xattrs: ext.xattrs,
            header_offset: first,
            data_offset: 0,
        };
        if let Some(pax) = &ext.pax {
            let num = |k: &str| -> Result<Option<u64>> {
                match pax.get(k) {
                    None => Ok(None),
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(Some)
                        .ok_or_else(|| malformed(at, format!("PAX {k} is not a number"))),
                }
            };
            if let Some(p) = pax.get("path") {
                e.name = p.clone();
            }
            if let Some(p) = pax.get("linkpath") {
                e.linkname = p.clone();
            }
            if let Some(v) = num("size")? {
                e.size = v;
            }
            if let Some(v) = num("uid")? {
                e.uid = v;
            }
            if let Some(v) = num("gid")? {
                e.gid = v;
            }
            let dev = |v: u64| u32::try_from(v).map_err(|_| malformed(at, "a device number over 32 bits"));
            if let Some(v) = num("SCHILY.devmajor")? {
                e.devmajor = dev(v)?;
            }
            if let Some(v) = num("SCHILY.devminor")? {
                e.devminor = dev(v)?;
            }
            if let Some(v) = pax.get("mtime") {
                (e.mtime, e.mtime_ns) = parse_pax_time(v).ok_or_else(|| malformed(at, "PAX mtime is not a time"))?;
            }
        }
        e.kind = match h.typeflag {
            b'0' | b'7' => RawKind::File,
            0 if e.name.ends_with(b"/") => RawKind::Dir,
            0 => RawKind::File,
            b'1' => RawKind::Hardlink,
            b'2' => RawKind::Symlink,
            b'3' => RawKind::CharDevice,
            b'4' => RawKind::BlockDevice,
            b'5' | b'D' => RawKind::Dir,
            b'6' => RawKind::Fifo,
            b'S' => RawKind::Sparse,
            other => RawKind::Other(other),
        };
        if ext.sparse {
            e.kind = RawKind::Sparse;
        }
        // Old GNU sparse headers may be followed by extension blocks of the sparse map.
        if h.typeflag == b'S' && h.gnu && block[482] != 0 {
            loop {
                let Some(b) = self.read_block()? else {
                    return Err(malformed(self.pos, "the stream ends inside a sparse map"));
                };
                if b[504] == 0 {
                    break;
                }
            }
        }
        if matches!(h.typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') || e.kind == RawKind::Dir && h.typeflag == 0 {
            e.size = 0;
        }
        e.data_offset = self.pos;
        self.pending = padded(e.size).ok_or_else(|| malformed(at, "size overflows"))?;
        if self.pos.checked_add(self.pending).is_none() {
            return Err(malformed(at, "size overflows"));
        }
        Ok(e)
    }
}

/// The fields of one 512-byte header.
struct Header {
    name: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    typeflag: u8,
    linkname: Vec<u8>,
    devmajor: u32,
    devminor: u32,
    gnu: bool,
}

/// Bytes up to the first NUL.
fn cstr(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

/// A numeric field: octal (spaces and NULs around it allowed, empty is 0) or base-256 (the top
/// bit of the first byte set; negative if the next bit is set too).
fn number(b: &[u8], at: u64, field: &str) -> Result<i64> {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        let inv = if b[0] & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return Err(malformed(at, format!("base-256 {field} overflows")));
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 != 0 {
            return Err(malformed(at, format!("base-256 {field} overflows")));
        }
        let x = x as i64;
        return Ok(if inv == 0xff { !x } else { x });
    }
    let trimmed = {
        let s = b.iter().position(|&c| c != b' ' && c != 0).unwrap_or(b.len());
        let e = b.iter().rposition(|&c| c != b' ' && c != 0).map_or(s, |e| e + 1);
        &b[s..e.max(s)]
    };
    let trimmed = &trimmed[..trimmed.iter().position(|&c| c == 0).unwrap_or(trimmed.len())];
    if trimmed.is_empty() {
        return Ok(0);
    }
    let mut x: i64 = 0;
    for &c in trimmed {
        if !(b'0'..=b'7').contains(&c) {
            return Err(malformed(at, format!("{field} is not an octal number")));
        }
        x = x
            .checked_mul(8)
            .and_then(|x| x.checked_add(i64::from(c - b'0')))
            .ok_or_else(|| malformed(at, format!("{field} overflows")))?;
    }
    Ok(x)
}

fn unsigned(b: &[u8], at: u64, field: &str) -> Result<u64> {
    u64::try_from(number(b, at, field)?).map_err(|_| malformed(at, format!("{field} is negative")))
}

impl Header {
    fn parse(b: &[u8; 512], at: u64) -> Result<Header> {
        let stored = unsigned(&b[148..156], at, "checksum")?;
        let unsigned_sum: u64 =
            b.iter().enumerate().map(|(i, &c)| if (148..156).contains(&i) { 32 } else { u64::from(c) }).sum();
        let signed_sum: i64 =
            b.iter().enumerate().map(|(i, &c)| if (148..156).contains(&i) { 32 } else { i64::from(c as i8) }).sum();
        if stored != unsigned_sum && i64::try_from(stored).ok() != Some(signed_sum) {
            return Err(malformed(at, "bad header checksum"));
        }
        let magic = &b[257..263];
        let version = &b[263..265];
        let ustar = magic == b"ustar\0" && version == b"00";
        let gnu = magic == b"ustar " && version == b" \0";
        let mut name = cstr(&b[0..100]);
        if ustar {
            let prefix = cstr(&b[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix;
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let modern = ustar || gnu;
        let dev = |r: std::ops::Range<usize>, f: &str| -> Result<u32> {
            if !modern {
                return Ok(0);
            }
            u32::try_from(unsigned(&b[r], at, f)?).map_err(|_| malformed(at, format!("{f} over 32 bits")))
        };
        Ok(Header {
            name,
            mode: u32::try_from(unsigned(&b[100..108], at, "mode")? & 0o7777_7777).unwrap_or(0),
            uid: unsigned(&b[108..116], at, "uid")?,
            gid: unsigned(&b[116..124], at, "gid")?,
            size: unsigned(&b[124..136], at, "size")?,
            mtime: number(&b[136..148], at, "mtime")?,
            typeflag: b[156],
            linkname: cstr(&b[157..257]),
            devmajor: dev(329..337, "devmajor")?,
            devminor: dev(337..345, "devminor")?,
            gnu,
        })
    }
}

/// PAX records `"<len> <key>=<value>\n"`: the keys kept (see the module note), the xattrs, and
/// whether any `GNU.sparse.*` record was seen.
#[allow(clippy::type_complexity)]
fn parse_pax(data: &[u8], at: u64) -> Result<(BTreeMap<String, Vec<u8>>, Vec<(String, Vec<u8>)>, bool)> {
    let mut map = BTreeMap::new();
    let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sparse = false;
    let mut rest = data;
    while !rest.is_empty() {
        let bad = || malformed(at, "a malformed PAX record");
        let sp = rest.iter().position(|&c| c == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = record.iter().position(|&c| c == b'=').ok_or_else(bad)?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad())?;
        let value = &record[eq + 1..];
        if let Some(xattr) = pax_xattr(key, value) {
            let (name, value) = xattr.ok_or_else(bad)?;
            set_xattr(&mut xattrs, name, value);
        } else if key.starts_with("GNU.sparse.") {
            sparse = true;
        } else if matches!(
            key,
            "path" | "linkpath" | "size" | "uid" | "gid" | "mtime" | "SCHILY.devmajor" | "SCHILY.devminor"
        ) {
            map.insert(key.to_string(), value.to_vec());
        }
    }
    Ok((map, xattrs, sparse))
}

/// The xattr a PAX record sets (`SCHILY.xattr.<name>`, raw; `LIBARCHIVE.xattr.<%-encoded name>`,
/// base64): `None` if the record is not one, `Some(None)` if it is one, malformed.
pub(crate) fn pax_xattr(key: &str, value: &[u8]) -> Option<Option<(String, Vec<u8>)>> {
    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
        return Some(Some((name.to_string(), value.to_vec())));
    }
    let enc = key.strip_prefix("LIBARCHIVE.xattr.")?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(value)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
        .ok();
    Some(percent_decode(enc).zip(value))
}

/// The last record for a name wins; an empty value deletes it (POSIX pax: a record with an
/// empty value removes the field, as Go's archive/tar reads it).
/// A name that is empty or holds a NUL is no xattr name (listxattr separates names by NUL).
pub(crate) fn set_xattr(xattrs: &mut Vec<(String, Vec<u8>)>, name: String, value: Vec<u8>) {
    if name.is_empty() || name.contains('\0') {
        log::debug!("tar: xattr name {name:?} dropped: empty or with a NUL byte");
        return;
    }
    xattrs.retain(|(n, _)| *n != name);
    if !value.is_empty() {
        xattrs.push((name, value));
    }
}

/// `%XX` decoding of a LIBARCHIVE xattr name; `None` if it is not UTF-8 or malformed.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A PAX time, `[-]secs[.frac]`, as (seconds, nanoseconds) with nanoseconds in 0..10⁹.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if secs.is_empty() || !secs.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut ns: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        ns += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some((secs, ns));
    }
    if ns == 0 { Some((-secs, 0)) } else { Some((-secs - 1, 1_000_000_000 - ns)) }
}

/// Hand-made tar blocks for tests (here and in `index`).
#[cfg(test)]
pub(crate) mod testtar {
    use super::padded;
    use std::path::Path;
    use std::process::Command;

    /// A ustar (`gnu`: GNU) header block, with its checksum.
    pub(crate) fn header(name: &[u8], flag: u8, size: u64, gnu: bool) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name);
        octal(&mut b[100..108], 0o644);
        octal(&mut b[108..116], 0);
        octal(&mut b[116..124], 0);
        octal(&mut b[124..136], size);
        octal(&mut b[136..148], 1_700_000_000);
        b[156] = flag;
        if gnu {
            b[257..265].copy_from_slice(b"ustar  \0");
        } else {
            b[257..265].copy_from_slice(b"ustar\x0000");
        }
        checksum(&mut b);
        b
    }

    pub(crate) fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0w$o}\0", v, w = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }

    pub(crate) fn checksum(b: &mut [u8; 512]) {
        b[148..156].fill(b' ');
        let sum: u64 = b.iter().map(|&c| u64::from(c)).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
    }

    /// `data` padded to whole blocks.
    pub(crate) fn padded_data(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(padded(data.len() as u64).unwrap_or(0) as usize, 0);
        v
    }

    pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
        let body = [key.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 2;
        while format!("{len} ").len() + body.len() != len {
            len += 1;
        }
        [format!("{len} ").as_bytes(), &body].concat()
    }

    /// An `x` (or `g`) header with these records, then its data.
    pub(crate) fn pax(flag: u8, records: &[(&str, &[u8])]) -> Vec<u8> {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        [&header(b"PaxHeaders/x", flag, data.len() as u64, false)[..], &padded_data(&data)].concat()
    }

    pub(crate) fn eoa() -> Vec<u8> {
        vec![0u8; 1024]
    }

    /// A tree exercising every kind GNU tar stores; long names only where the format has them.
    pub(crate) fn tree(root: &Path, long: bool) {
        let run = |c: &mut Command| assert!(c.status().expect("run").success());
        std::fs::create_dir_all(root.join("d/sub")).expect("mkdir");
        std::fs::write(root.join("hello"), b"hello world\n").expect("write");
        std::fs::write(root.join("d/f"), vec![7u8; 1500]).expect("write");
        std::fs::write(root.join("d/empty"), b"").expect("write");
        std::os::unix::fs::symlink("../hello", root.join("d/s")).expect("symlink");
        std::fs::hard_link(root.join("hello"), root.join("d/h")).expect("link");
        run(Command::new("chmod").args(["4750"]).arg(root.join("d/f")));
        if long {
            let deep = root.join(format!("{}/{}", "a".repeat(120), "b".repeat(150)));
            std::fs::create_dir_all(deep.parent().expect("parent")).expect("mkdir");
            std::fs::write(&deep, b"deep").expect("write");
            std::os::unix::fs::symlink("t".repeat(200), root.join("longlink")).expect("symlink");
            run(Command::new("mkfifo").arg(root.join("fifo")));
        }
    }

    pub(crate) fn gnu_tar(format: &str, long: bool) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        tree(&root, long);
        let out = dir.path().join("out.tar");
        let ok = Command::new("tar")
            .args(["--format", format, "--sort=name", "--mtime=@1700000000", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&out)
            .arg(".")
            .status()
            .expect("tar");
        assert!(ok.success(), "tar --format={format}");
        let bytes = std::fs::read(&out).expect("read");
        (dir, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::testtar::*;
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    fn all(bytes: &[u8]) -> Result<(Vec<RawEntry>, Option<u64>)> {
        let mut p = Parser::new(Cursor::new(bytes));
        let mut v = Vec::new();
        while let Some(e) = p.next_entry()? {
            v.push(e);
        }
        Ok((v, p.end()))
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(Error::Malformed { .. }))
    }

    #[test]
    fn every_gnu_tar_format_parses_like_tar_tv() {
        for (format, long) in [("gnu", true), ("pax", true), ("ustar", false), ("v7", false)] {
            let (dir, bytes) = gnu_tar(format, long);
            let (entries, end) = all(&bytes).unwrap_or_else(|e| panic!("{format}: {e}"));
            // Names and kinds as `tar -tv` lists them.
            let listing = Command::new("tar")
                .args(["-tv", "--numeric-owner", "-f"])
                .arg(dir.path().join("out.tar"))
                .output()
                .expect("tar -tv");
            let listing = String::from_utf8(listing.stdout).expect("utf8");
            let lines: Vec<&str> = listing.lines().collect();
            assert_eq!(lines.len(), entries.len(), "{format}: {listing}");
            for (line, e) in lines.iter().zip(&entries) {
                let name = String::from_utf8(e.name.clone()).expect("utf8 name");
                let kind = match e.kind {
                    RawKind::File => '-',
                    RawKind::Dir => 'd',
                    RawKind::Symlink => 'l',
                    RawKind::Hardlink => 'h',
                    RawKind::Fifo => 'p',
                    other => panic!("{format}: unexpected {other:?}"),
                };
                assert_eq!(line.chars().next(), Some(kind), "{format}: {line}");
                assert!(line.contains(&format!(" {name}")), "{format}: {line} lacks {name}");
                let owner = line.split_whitespace().nth(1).expect("owner");
                assert_eq!(owner, format!("{}/{}", e.uid, e.gid), "{format}: {line}");
                if kind == '-' {
                    let size: u64 = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).expect("size");
                    assert_eq!(size, e.size, "{format}: {line}");
                }
                if kind == 'l' {
                    let target = String::from_utf8(e.linkname.clone()).expect("utf8");
                    assert!(line.ends_with(&format!(" -> {target}")), "{format}: {line}");
                }
                assert_eq!(e.mtime, 1_700_000_000, "{format}: {line}");
                assert!(e.header_offset % BLOCK == 0 && e.header_offset < e.data_offset, "{format}: {e:?}");
            }
            // hello and d/h are one inode: the first in the archive holds the data.
            let hello = entries.iter().find(|e| e.kind == RawKind::File && e.size == 12).expect("hello");
            let at = hello.data_offset as usize;
            assert_eq!(&bytes[at..at + 12], b"hello world\n", "{format}: data offset");
            let f = entries.iter().find(|e| e.name.ends_with(b"d/f")).expect("d/f");
            assert_eq!(f.mode & 0o7777, 0o4750, "{format}");
            assert!(end.is_some_and(|end| end <= bytes.len() as u64 && end % BLOCK == 0), "{format}: end {end:?}");
            #[cfg(feature = "testkit")]
            agrees_with_the_tar_crate(format, &bytes, &entries);
        }
    }

    /// Names, kinds, sizes, link names and data positions as the `tar` crate reads them.
    #[cfg(feature = "testkit")]
    fn agrees_with_the_tar_crate(format: &str, bytes: &[u8], entries: &[RawEntry]) {
        let mut archive = tar::Archive::new(Cursor::new(bytes));
        let theirs: Vec<_> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let link = e.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                (e.path_bytes().into_owned(), e.size(), link, e.raw_file_position(), e.raw_header_position())
            })
            .collect();
        assert_eq!(theirs.len(), entries.len(), "{format}");
        for (t, e) in theirs.iter().zip(entries) {
            assert_eq!(t.0, e.name, "{format}");
            assert_eq!(t.1, e.size, "{format}: {:?}", String::from_utf8_lossy(&e.name));
            assert_eq!(t.2, e.linkname, "{format}");
            assert_eq!(t.3, e.data_offset, "{format}");
            assert!(e.header_offset <= t.4, "{format}");
        }
    }

    #[test]
    fn long_names_and_link_targets_over_100_bytes_in_gnu_and_pax() {
        for format in ["gnu", "pax"] {
            let (_dir, bytes) = gnu_tar(format, true);
            let (entries, _) = all(&bytes).expect("parse");
            let want_name = format!("./{}/{}", "a".repeat(120), "b".repeat(150));
            let deep = entries.iter().find(|e| e.name == want_name.as_bytes()).expect("the 274-byte name");
            assert_eq!(&bytes[deep.data_offset as usize..][..4], b"deep", "{format}");
            assert!(deep.data_offset - deep.header_offset >= 3 * BLOCK, "{format}: extension headers counted");
            let link = entries.iter().find(|e| e.name == b"./longlink").expect("longlink");
            assert_eq!(link.kind, RawKind::Symlink);
            assert_eq!(link.linkname, "t".repeat(200).into_bytes(), "{format}");
        }
        // ustar's prefix field.
        let mut h = header(b"name", b'0', 0, false);
        h[345..351].copy_from_slice(b"prefix");
        checksum(&mut h);
        let (entries, _) = all(&[&h[..], &eoa()].concat()).expect("parse");
        assert_eq!(entries[0].name, b"prefix/name");
    }

    #[test]
    fn base256_sizes_uids_and_negative_mtimes() {
        let mut h = header(b"big", b'0', 0, true);
        // size 1000 in base-256, uid 2^40, mtime -1.
        h[124..136].fill(0);
        h[124] = 0x80;
        h[134..136].copy_from_slice(&1000u16.to_be_bytes());
        h[108..116].fill(0);
        h[108] = 0x80;
        h[110..116].copy_from_slice(&(1u64 << 40).to_be_bytes()[2..]);
        h[136..148].fill(0xff);
        checksum(&mut h);
        let bytes = [&h[..], &padded_data(&[1u8; 1000]), &eoa()].concat();
        let (entries, end) = all(&bytes).expect("parse");
        assert_eq!((entries[0].size, entries[0].uid, entries[0].mtime), (1000, 1 << 40, -1));
        assert_eq!(end, Some(bytes.len() as u64));
        // Non-octal digits are malformed.
        let mut h = header(b"bad", b'0', 0, false);
        h[124..136].copy_from_slice(b"0000000009x\0");
        checksum(&mut h);
        assert!(is_malformed(all(&[&h[..], &eoa()].concat())));
        // Negative PAX mtime with a fraction.
        let bytes = [pax(b'x', &[("mtime", b"-1.25")]), header(b"old", b'0', 0, false).to_vec(), eoa()].concat();
        let (entries, _) = all(&bytes).expect("parse");
        assert_eq!((entries[0].mtime, entries[0].mtime_ns), (-2, 750_000_000));
    }

    /// POSIX: a PAX record with an empty value deletes the field (Go's archive/tar, and so
    /// umoci and containerd, drop such an xattr); found by the umoci oracle (`c14-meta`).
    #[test]
    fn a_pax_xattr_with_an_empty_value_is_no_xattr() {
        let bytes = [
            pax(b'x', &[("SCHILY.xattr.user.empty", b""), ("SCHILY.xattr.user.k", b"v"), ("SCHILY.xattr.user.k", b"")]),
            header(b"f", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (entries, _) = all(&bytes).expect("parse");
        assert!(entries[0].xattrs.is_empty(), "{:?}", entries[0].xattrs);
    }

    #[test]
    fn pax_xattrs_schily_and_libarchive() {
        let bytes = [
            pax(
                b'x',
                &[
                    ("SCHILY.xattr.user.k", b"v\0\x01"),
                    ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
                    ("LIBARCHIVE.xattr.user.a%20b", b"aGk="),
                    ("uid", b"4294967296"),
                    ("SCHILY.devmajor", b"8"),
                    ("SCHILY.devminor", b"1"),
                    ("path", b"dev/sda1"),
                ],
            ),
            header(b"short", b'4', 0, false).to_vec(),
            header(b"next", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (entries, _) = all(&bytes).expect("parse");
        let e = &entries[0];
        assert_eq!(e.name, b"dev/sda1");
        assert_eq!((e.kind, e.devmajor, e.devminor, e.uid), (RawKind::BlockDevice, 8, 1, 1 << 32));
        assert_eq!(
            e.xattrs,
            [
                ("user.k".to_string(), b"v\0\x01".to_vec()),
                ("security.capability".to_string(), b"\x01\x00\x00\x02".to_vec()),
                ("user.a b".to_string(), b"hi".to_vec()),
            ]
        );
        // PAX records apply to the next entry only.
        assert!(entries[1].xattrs.is_empty() && entries[1].name == b"next" && entries[1].uid == 0);
        // GNU.sparse records mark the entry sparse.
        let bytes = [pax(b'x', &[("GNU.sparse.major", b"1")]), header(b"s", b'0', 0, false).to_vec(), eoa()].concat();
        assert_eq!(all(&bytes).expect("parse").0[0].kind, RawKind::Sparse);
        // A malformed record is malformed.
        let data = b"99 path=x\n";
        let bytes = [&header(b"p", b'x', data.len() as u64, false)[..], &padded_data(data), &eoa()].concat();
        assert!(is_malformed(all(&bytes)));
    }

    #[test]
    fn a_pax_global_header_is_ignored() {
        let bytes = [
            pax(b'g', &[("path", b"global"), ("uid", b"77"), ("SCHILY.xattr.user.g", b"1")]),
            header(b"file", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (entries, _) = all(&bytes).expect("parse");
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].name.as_slice(), entries[0].uid), (&b"file"[..], 0));
        assert!(entries[0].xattrs.is_empty());
        assert_eq!(entries[0].header_offset, 1024, "the global header is not part of the entry");
    }

    /// A reader of `prefix` then endless zeros, counting what is read.
    struct Counting {
        prefix: Vec<u8>,
        read: u64,
    }

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(64 << 10);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.prefix.get(self.read as usize + i).copied().unwrap_or(b'a');
            }
            self.read += n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_gnu_long_name_claiming_4_gib_is_refused_without_reading_it() {
        for flag in [b'L', b'K', b'x'] {
            let mut h = header(b"././@LongLink", flag, 0, true);
            h[124..136].fill(0);
            h[124] = 0x80;
            h[128..136].copy_from_slice(&(4u64 << 30).to_be_bytes());
            checksum(&mut h);
            let mut r = Counting { prefix: h.to_vec(), read: 0 };
            let mut p = Parser::new(&mut r);
            let err = p.next_entry();
            assert!(is_malformed(err), "{}", flag as char);
            assert!(r.read <= 64 << 10, "{} read {} bytes", flag as char, r.read);
        }
        // Just over the bound is refused too; at the bound it is read.
        let name = vec![b'n'; (64 << 10) + 1];
        let bytes =
            [&header(b"././@LongLink", b'L', name.len() as u64, true)[..], &padded_data(&name), &eoa()].concat();
        assert!(is_malformed(all(&bytes)));
        let name = vec![b'n'; 64 << 10];
        let bytes = [
            &header(b"././@LongLink", b'L', name.len() as u64, true)[..],
            &padded_data(&name),
            &header(b"x", b'0', 0, true),
            &eoa(),
        ]
        .concat();
        assert_eq!(all(&bytes).expect("parse").0[0].name, name);
    }

    #[test]
    fn an_entry_running_past_the_stream_is_malformed() {
        let bytes = [&header(b"f", b'0', 2000, false)[..], &[1u8; 1024]].concat();
        assert!(is_malformed(all(&bytes)));
        // A header cut short is malformed too.
        assert!(is_malformed(all(&header(b"f", b'0', 0, false)[..300])));
        // A long name with no entry after it.
        let bytes = [&header(b"././@LongLink", b'L', 4, true)[..], &padded_data(b"name")].concat();
        assert!(is_malformed(all(&bytes)));
    }

    #[test]
    fn a_bad_checksum_is_malformed() {
        let mut h = header(b"hello", b'0', 0, false);
        h[0] = b'j';
        assert!(is_malformed(all(&[&h[..], &eoa()].concat())));
        let mut b = vec![0u8; 512];
        b[..5].copy_from_slice(b"hello");
        assert!(is_malformed(all(&b)));
    }

    #[test]
    fn eoa_then_garbage_stops_at_eoa_and_reports_the_offset() {
        let tail = vec![0x5au8; 1024];
        let body = [&header(b"f", b'0', 3, false)[..], &padded_data(b"abc")].concat();
        let bytes = [&body[..], &eoa(), &tail].concat();
        let mut p = Parser::new(Cursor::new(&bytes[..]));
        assert_eq!(p.next_entry().expect("entry").expect("f").name, b"f");
        assert!(p.next_entry().expect("end").is_none());
        assert!(p.next_entry().expect("still the end").is_none());
        assert_eq!(p.end(), Some(body.len() as u64 + 1024));
        assert_eq!(p.position(), body.len() as u64 + 1024);
        let mut rest = Vec::new();
        p.into_inner().read_to_end(&mut rest).expect("drain");
        assert_eq!(rest, tail, "the trailing bytes are left to the caller");
        // The end of the stream at a block boundary, or after one zero block, is the end too.
        assert_eq!(all(&body).expect("parse").1, Some(body.len() as u64));
        assert_eq!(all(&[&body[..], &[0u8; 512]].concat()).expect("parse").1, Some(body.len() as u64 + 512));
    }

    #[test]
    fn a_lone_zero_block_then_a_header_is_malformed() {
        let bytes = [&header(b"a", b'0', 0, false)[..], &[0u8; 512], &header(b"b", b'0', 0, false), &eoa()].concat();
        let mut p = Parser::new(Cursor::new(&bytes[..]));
        assert!(p.next_entry().expect("a").is_some());
        assert!(is_malformed(p.next_entry()));
    }
}
