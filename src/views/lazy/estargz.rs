//! eStargz: where the TOC is (the footer), and the TOC's JSON out of its gzip member.
//!
//! - The footer is the blob's last 51 bytes: an empty gzip member whose extra field holds
//!   `SG`, 22, the TOC's offset as 16 hex digits and `STARGZ` (CRFS's legacy stargz: the last
//!   47 bytes, the extra field only `%016xSTARGZ`). Both are read; anything else is no eStargz.
//! - At the TOC's offset starts one gzip member holding a tar whose one entry is
//!   `stargz.index.json`. Its payload's sha256 is what the manifest's
//!   `containerd.io/snapshot/stargz/toc.digest` must be; only then is the TOC read.
//! - The TOC sits between its offset and the footer. The first request asks for the blob's tail
//!   ([`TAIL`] bytes): a small layer's TOC is then already there; a larger one costs one more
//!   request, of exactly the bytes missing. Two requests at most per layer.

use std::io::Read;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits;

/// The footer's length.
pub const FOOTER: u64 = 51;
/// The legacy (CRFS) footer's length.
pub const LEGACY_FOOTER: u64 = 47;
/// Bytes of the blob's tail asked for first: the footer and, for most layers of a few hundred
/// files, the whole TOC.
pub const TAIL: u64 = 64 << 10;

/// The TOC's offset the footer `tail` (the blob's last bytes, at least 51 of them if there are)
/// gives, and the footer's length; `None` if it is no eStargz footer.
pub fn footer(tail: &[u8]) -> Option<(u64, u64)> {
    let hex = |b: &[u8]| -> Option<u64> {
        let s = std::str::from_utf8(b).ok()?;
        (s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit())).then(|| u64::from_str_radix(s, 16).ok())?
    };
    if tail.len() >= FOOTER as usize {
        let f = &tail[tail.len() - FOOTER as usize..];
        let head_ok = f[0..4] == [0x1f, 0x8b, 0x08, 0x04];
        let extra_ok = f[10..12] == [26, 0] && f[12..14] == *b"SG" && f[14..16] == [22, 0] && f[32..38] == *b"STARGZ";
        if head_ok && extra_ok {
            return Some((hex(&f[16..32])?, FOOTER));
        }
    }
    if tail.len() >= LEGACY_FOOTER as usize {
        let f = &tail[tail.len() - LEGACY_FOOTER as usize..];
        if f[0..4] == [0x1f, 0x8b, 0x08, 0x04] && f[10..12] == [22, 0] && f[28..34] == *b"STARGZ" {
            return Some((hex(&f[12..28])?, LEGACY_FOOTER));
        }
    }
    None
}

/// The TOC JSON in `member` (the blob's bytes from the TOC's offset to the footer), checked
/// against `expected`, the manifest's TOC digest.
pub fn toc_json(member: &[u8], expected: &Digest, what: &str) -> Result<Vec<u8>> {
    let bad = |why: String| Error::malformed(format!("the eStargz TOC of {what}"), why);
    // One member, not the stream: what follows it is no part of the TOC.
    let gz = flate2::read::GzDecoder::new(member);
    let mut tar = crate::views::tar::Parser::new(gz.take(limits::MAX_TOC_BYTES as u64 + (64 << 10)));
    let raw = tar.next_entry().map_err(|e| bad(format!("no tar: {e}")))?.ok_or_else(|| bad("an empty tar".into()))?;
    let name = String::from_utf8_lossy(&raw.name);
    if crate::views::index::normalise(&name) != ["stargz.index.json"] {
        return Err(bad(format!("its entry is {name:?}, not stargz.index.json")));
    }
    if raw.size > limits::MAX_TOC_BYTES as u64 {
        return Err(Error::TooLarge(format!("the eStargz TOC of {what}: {} bytes", raw.size)));
    }
    let mut json = Vec::with_capacity(raw.size as usize);
    // The parser reads nothing ahead: its reader is at the entry's data.
    tar.into_inner().take(raw.size).read_to_end(&mut json).map_err(|e| bad(format!("its JSON cannot be read: {e}")))?;
    if json.len() as u64 != raw.size {
        return Err(bad(format!("its JSON ends after {} of {} bytes", json.len(), raw.size)));
    }
    let actual = Digest::of(expected.algorithm(), &json);
    if actual != *expected || expected.algorithm() != Algorithm::Sha256 {
        log::warn!("{what}: the eStargz TOC hashes to {actual}, the manifest says {expected}; not read lazily");
        return Err(Error::DigestMismatch {
            what: format!("the eStargz TOC of {what}"),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer_of(offset: u64) -> Vec<u8> {
        let mut f = vec![0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
        f.extend_from_slice(format!("{offset:016x}STARGZ").as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn footers_of_both_kinds_give_the_toc_offset() {
        let f = footer_of(0x1234);
        assert_eq!(f.len() as u64, FOOTER);
        let mut tail = vec![7u8; 100];
        tail.extend_from_slice(&f);
        assert_eq!(footer(&tail), Some((0x1234, FOOTER)));
        let mut legacy = vec![0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0];
        legacy.extend_from_slice(format!("{:016x}STARGZ", 99).as_bytes());
        legacy.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(legacy.len() as u64, LEGACY_FOOTER);
        assert_eq!(footer(&legacy), Some((99, LEGACY_FOOTER)));
        let mut broken = f.clone();
        broken[33] = b'X';
        assert_eq!(footer(&broken), None, "no STARGZ, no footer");
        let mut not_hex = f;
        not_hex[20] = b'g';
        assert_eq!(footer(&not_hex), None);
        assert_eq!(footer(b"short"), None);
    }
}
