//! The index as a file, so that a layer indexed once is not parsed again: [`encode`] and
//! [`decode`].
//!
//! - Layout, little endian throughout: [`MAGIC`], the format version (u32), the diff_id (u16
//!   length, `alg:hex`), the decoded length (u64), six counts (records, visible records, names,
//!   xattrs, lower links, same-layer links: u32 each), the records (92 bytes each), the two
//!   arenas, the two link tables, then the sha256 of everything before it (32 bytes).
//! - Encoding is deterministic: an index decoded and encoded again gives the same bytes.
//! - A file is trusted for nothing its checksum and its own checks do not show. [`decode`]
//!   refuses (`Malformed`) a wrong magic, another version, a trailer that does not match, and any
//!   count, span or id out of bounds, a child that names another parent, or a parent that does
//!   not come before its children: no accessor can then panic or loop on what a file says.
//! - Any change to the layout or to what a record means takes a new [`FORMAT_VERSION`]:
//!   [`decode`] refuses a file of another version.

use super::EntryKind;
use super::model::{HeaderChecks, LayerIndex, NONE, Rec};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};

/// The first bytes of an index file.
pub const MAGIC: &[u8; 8] = b"RGFSIDX1";
/// The version of the index file format [`encode`] writes and [`decode`] reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes one record takes on disk.
const REC_DISK: usize = 92;
/// Bytes of the sha256 trailer.
const TRAILER: usize = 32;

/// The index as a file: `MAGIC`, version (u32), the diff_id (u16 length, `alg:hex`), decoded
/// length (u64), counts (records, visible records, names, xattrs, lower links, same-layer
/// links: u32 each), the records (92 bytes each), the two arenas, the two link tables, then the
/// sha256 of everything before it. Little endian throughout.
pub fn encode(index: &LayerIndex, diff_id: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(index.weight() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let d = diff_id.to_string();
    out.extend_from_slice(&(d.len() as u16).to_le_bytes());
    out.extend_from_slice(d.as_bytes());
    out.extend_from_slice(&index.decoded_len.to_le_bytes());
    for n in [
        index.recs.len(),
        index.visible as usize,
        index.names.len(),
        index.xattrs.len(),
        index.lower.len(),
        index.same.len(),
    ] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for r in &index.recs {
        for v in [r.size, r.header_offset, r.data_offset, r.mtime as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            r.parent,
            r.first_child,
            r.nchildren,
            r.name_off,
            r.target_off,
            r.xattr_off,
            r.xattr_len,
            r.uid,
            r.gid,
            r.mtime_ns,
            r.dev_major,
            r.dev_minor,
            r.link,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [r.name_len, r.target_len, r.mode] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(r.kind);
        out.push(r.flags);
    }
    out.extend_from_slice(&index.names);
    out.extend_from_slice(&index.xattrs);
    for id in &index.lower {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for (t, l) in &index.same {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
    }
    let sum = Digest::of(Algorithm::Sha256, &out);
    out.extend((0..sum.hex().len()).step_by(2).filter_map(|i| u8::from_str_radix(&sum.hex()[i..i + 2], 16).ok()));
    out
}

/// A cursor over an index file being decoded.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| bad_index("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
}

fn bad_index(why: impl std::fmt::Display) -> Error {
    Error::malformed("layer index file", why)
}

/// An index file back: the diff_id it was written for and the index. Refused (`Malformed`):
/// a wrong magic, another version, a trailer that does not match, or any count, span or id
/// out of bounds (so that no accessor can panic on what a file says).
pub fn decode(bytes: &[u8]) -> Result<(Digest, LayerIndex)> {
    if bytes.len() < MAGIC.len() + 4 + TRAILER || &bytes[..8] != MAGIC {
        return Err(bad_index("not an index file"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let sum = Digest::of(Algorithm::Sha256, body);
    let hex: String = trailer.iter().map(|b| format!("{b:02x}")).collect();
    if sum.hex() != hex {
        return Err(bad_index("checksum mismatch"));
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(bad_index(format!("format version {version}, not {FORMAT_VERSION}")));
    }
    let dlen = r.u16()? as usize;
    let diff_id: Digest =
        std::str::from_utf8(r.take(dlen)?).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad_index("bad diff_id"))?;
    let decoded_len = r.u64()?;
    let mut counts = [0usize; 6];
    for c in &mut counts {
        *c = r.u32()? as usize;
    }
    let [nrecs, visible, names_len, xattrs_len, nlower, nsame] = counts;
    if nrecs == 0 || visible == 0 || visible > nrecs || nrecs.saturating_mul(REC_DISK) > body.len() {
        return Err(bad_index("bad record counts"));
    }
    let mut recs = Vec::with_capacity(nrecs);
    for _ in 0..nrecs {
        let (size, header_offset, data_offset, mtime) = (r.u64()?, r.u64()?, r.u64()?, r.u64()? as i64);
        let mut w = [0u32; 13];
        for v in &mut w {
            *v = r.u32()?;
        }
        let (name_len, target_len, mode) = (r.u16()?, r.u16()?, r.u16()?);
        let (kind, flags) = (r.u8()?, r.u8()?);
        recs.push(Rec {
            size,
            header_offset,
            data_offset,
            mtime,
            parent: w[0],
            first_child: w[1],
            nchildren: w[2],
            name_off: w[3],
            target_off: w[4],
            xattr_off: w[5],
            xattr_len: w[6],
            uid: w[7],
            gid: w[8],
            mtime_ns: w[9],
            dev_major: w[10],
            dev_minor: w[11],
            link: w[12],
            name_len,
            target_len,
            mode,
            kind,
            flags,
        });
    }
    let names = r.take(names_len)?.to_vec();
    let xattrs = r.take(xattrs_len)?.to_vec();
    let mut lower = Vec::with_capacity(nlower.min(nrecs));
    for _ in 0..nlower {
        lower.push(r.u32()?);
    }
    let mut same = Vec::with_capacity(nsame.min(nrecs));
    for _ in 0..nsame {
        same.push((r.u32()?, r.u32()?));
    }
    if r.at != body.len() {
        return Err(bad_index("trailing bytes"));
    }
    let n = nrecs as u64;
    let within = |off: u32, len: u64, arena: usize| u64::from(off) + len <= arena as u64;
    for (i, rec) in recs.iter().enumerate() {
        let kind = EntryKind::from_code(rec.kind).ok_or_else(|| bad_index("bad kind"))?;
        let ok = u64::from(rec.parent) < n
            && u64::from(rec.first_child) + u64::from(rec.nchildren) <= n
            && (rec.nchildren == 0 || kind == EntryKind::Dir)
            && within(rec.name_off, u64::from(rec.name_len), names_len)
            && within(rec.target_off, u64::from(rec.target_len), names_len)
            && within(rec.xattr_off, u64::from(rec.xattr_len), xattrs_len)
            && (rec.link == NONE || u64::from(rec.link) < n)
            && (i != 0 || kind == EntryKind::Dir)
            // Breadth-first: a parent comes before its children, children after their parent and
            // within the visible records, so that walks up and down always end.
            && (i == 0 || (rec.parent as usize) < i)
            && (rec.nchildren == 0 || (rec.first_child as usize > i && (rec.first_child + rec.nchildren) as usize <= visible));
        if !ok {
            return Err(bad_index(format!("record {i} out of bounds")));
        }
        let children = rec.first_child as usize..(rec.first_child + rec.nchildren) as usize;
        if recs[children].iter().any(|c| c.parent as usize != i) {
            return Err(bad_index(format!("record {i}'s children name another parent")));
        }
    }
    if lower.iter().chain(same.iter().flat_map(|(a, b)| [a, b])).any(|&id| u64::from(id) >= n) {
        return Err(bad_index("link table out of bounds"));
    }
    let index = LayerIndex {
        recs,
        names,
        xattrs,
        lower,
        same,
        decoded_len,
        visible: visible as u32,
        checked: HeaderChecks::default(),
    };
    Ok((diff_id, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::index::{Entry, LinkTo};

    fn rich_layer() -> LayerIndex {
        LayerIndex::from_entries(vec![
            Entry::dir("./").with_mode(0o700),
            Entry::file("usr/bin/a", 10).with_mode(0o4755).with_owner(7, 8).with_mtime(-5).with_xattr("user.k", b"v\0"),
            Entry::hardlink("usr/bin/b", "usr/bin/a"),
            Entry::hardlink("usr/bin/c", "lib/lower"),
            Entry::file("usr/bin/a", 3),
            Entry::symlink("usr/s", "bin/a"),
            Entry::special("dev/sda", EntryKind::BlockDevice, 8, 1),
            Entry::special("dev/null", EntryKind::CharDevice, 1, 3),
            Entry::special("run/p", EntryKind::Fifo, 0, 0),
            Entry::whiteout("etc/gone"),
            Entry::opaque("etc"),
            Entry::file(".wh..wh.plnk/9.9", 4),
            Entry::hardlink("usr/bin/d", ".wh..wh.plnk/9.9"),
        ])
    }

    fn sha(n: u8) -> Digest {
        Digest::of(crate::digest::Algorithm::Sha256, &[n])
    }

    #[test]
    fn an_index_round_trips_byte_for_byte() {
        for layer in [rich_layer(), LayerIndex::from_entries(vec![])] {
            let bytes = encode(&layer, &sha(1));
            assert_eq!(&bytes[..8], MAGIC);
            let (diff_id, back) = decode(&bytes).expect("decode");
            assert_eq!(diff_id, sha(1));
            assert_eq!(back, layer);
            assert_eq!(encode(&back, &sha(1)), bytes, "re-encoding gives the same bytes");
            if back.is_empty() {
                continue;
            }
            let a = back.get("usr/bin/d").and_then(|d| d.link());
            assert!(
                matches!(a, Some(LinkTo::Entry(id)) if back.entry(id).is_some_and(|e| e.is_hidden() && e.size() == 4))
            );
        }
    }

    #[test]
    fn a_flipped_byte_or_an_old_version_is_refused() {
        let bytes = encode(&rich_layer(), &sha(2));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(matches!(decode(&bad), Err(Error::Malformed { .. })), "byte {i} flipped");
        }
        for len in [0, 7, 8, 40, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        // A well-formed file of another version, trailer and all, is refused by its version.
        let mut old = bytes[..bytes.len() - 32].to_vec();
        old[8..12].copy_from_slice(&0u32.to_le_bytes());
        let sum = Digest::of(crate::digest::Algorithm::Sha256, &old);
        old.extend(hex_bytes(sum.hex()));
        let err = decode(&old).expect_err("old version");
        assert!(err.to_string().contains("version"), "{err}");
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
    }

    /// `bytes` (an encoded index) with record `i`'s parent set to `parent`, trailer recomputed.
    fn with_parent(bytes: &[u8], i: usize, parent: u32) -> Vec<u8> {
        let dlen = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
        let at = 14 + dlen + 8 + 24 + i * REC_DISK + 32;
        let mut body = bytes[..bytes.len() - TRAILER].to_vec();
        body[at..at + 4].copy_from_slice(&parent.to_le_bytes());
        let sum = Digest::of(crate::digest::Algorithm::Sha256, &body);
        body.extend(hex_bytes(sum.hex()));
        body
    }

    #[test]
    fn a_decoded_index_whose_parents_do_not_come_first_is_refused() {
        let layer = rich_layer();
        let bytes = encode(&layer, &sha(3));
        let leaf = layer.get("usr/bin/a").expect("a").id() as usize;
        let unchanged = with_parent(&bytes, leaf, layer.get("usr/bin").expect("bin").id());
        assert!(decode(&unchanged).is_ok(), "the offsets in this test are right");
        // A parent after its child could make a cycle, and `path()` would never end.
        assert!(matches!(decode(&with_parent(&bytes, leaf, leaf as u32)), Err(Error::Malformed { .. })));
        assert!(matches!(decode(&with_parent(&bytes, 2, 5)), Err(Error::Malformed { .. })));
    }
}
