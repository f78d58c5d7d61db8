//! zstd:chunked: where the TOC is (the manifest's annotations, never the footer), and the TOC's
//! JSON out of its zstd frame.
//!
//! - `io.github.containers.zstd-chunked.manifest-position` is `offset:compressed:uncompressed:1`:
//!   the TOC's zstd bytes, past their skippable frame's 8-byte header. containers/storage reads
//!   only the annotations, not the footer ("Partial pull security hinges on the TOC digest, and
//!   that exists as a layer annotation"); so does regfs: one request per layer for the TOC.
//! - `io.github.containers.zstd-chunked.manifest-checksum` is the sha256 of those **compressed**
//!   bytes (eStargz's digest is of the JSON): checked before a byte is decompressed.
//! - The layer's data (files' frames and tar headers' frames) ends where the TOC's skippable
//!   frame begins, 8 bytes before the offset.

use std::io::Read;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits;

pub const CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
/// The early stargz-snapshotter variant's key (40-byte footer, no tar-split): containers/storage
/// pulls such layers whole, and so does regfs.
pub const EARLY_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";

/// Where the TOC is: its compressed bytes' range in the blob, and its JSON's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub compressed: u64,
    pub uncompressed: u64,
}

impl Position {
    /// Where the layer's data ends (the TOC's skippable frame's header).
    pub fn data_end(&self) -> u64 {
        self.offset.saturating_sub(8)
    }
}

/// The position annotation `value`, checked against the blob's `size`.
pub fn position(value: &str, size: u64) -> Result<Position> {
    let bad = |why: &str| Error::malformed("a zstd:chunked manifest-position", format!("{value:?}: {why}"));
    let parts: Vec<&str> = value.split(':').collect();
    let [offset, compressed, uncompressed, kind] = parts[..] else { return Err(bad("not offset:len:len:type")) };
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not numbers"));
    let p = Position { offset: num(offset)?, compressed: num(compressed)?, uncompressed: num(uncompressed)? };
    if kind != "1" {
        return Err(bad("a TOC type other than 1"));
    }
    if p.offset < 8 || p.compressed == 0 || p.offset.checked_add(p.compressed).is_none_or(|end| end > size) {
        return Err(bad(&format!("not inside the blob of {size} bytes")));
    }
    if p.compressed > limits::MAX_TOC_BYTES as u64 || p.uncompressed > limits::MAX_TOC_BYTES as u64 {
        return Err(Error::TooLarge(format!(
            "a zstd:chunked TOC of {} bytes ({} compressed)",
            p.uncompressed, p.compressed
        )));
    }
    Ok(p)
}

/// The TOC JSON from its compressed bytes `frame`, checked against the manifest's `checksum`
/// first, then decompressed to exactly the length the position says.
pub fn toc_json(frame: &[u8], checksum: &Digest, p: &Position, what: &str) -> Result<Vec<u8>> {
    let actual = Digest::of(checksum.algorithm(), frame);
    if actual != *checksum || checksum.algorithm() != Algorithm::Sha256 {
        log::warn!("{what}: the zstd:chunked TOC hashes to {actual}, the manifest says {checksum}; not read lazily");
        return Err(Error::DigestMismatch {
            what: format!("the zstd:chunked TOC of {what}"),
            expected: checksum.to_string(),
            actual: actual.to_string(),
        });
    }
    let bad = |why: String| Error::malformed(format!("the zstd:chunked TOC of {what}"), why);
    let mut dec = zstd::stream::read::Decoder::with_buffer(frame).map_err(|e| bad(e.to_string()))?;
    dec.window_log_max(limits::ZSTD_WINDOW_LOG_MAX).map_err(|e| bad(e.to_string()))?;
    let mut json = Vec::with_capacity(p.uncompressed as usize);
    dec.take(p.uncompressed + 1).read_to_end(&mut json).map_err(|e| bad(format!("does not decompress: {e}")))?;
    if json.len() as u64 != p.uncompressed {
        return Err(bad(format!("{} bytes decompressed, the position says {}", json.len(), p.uncompressed)));
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_and_bounded_by_the_blob() {
        assert_eq!(position("100:20:50:1", 200).ok(), Some(Position { offset: 100, compressed: 20, uncompressed: 50 }));
        for bad in ["100:20:50", "100:20:50:2", "x:20:50:1", "190:20:50:1", "4:2:2:1", "100:0:0:1"] {
            assert!(position(bad, 200).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_toc_is_checked_before_it_is_decompressed() {
        let json = br#"{"version":1,"entries":[]}"#;
        let frame = zstd::encode_all(&json[..], 3).expect("zstd");
        let p = Position { offset: 8, compressed: frame.len() as u64, uncompressed: json.len() as u64 };
        let sum = Digest::of(Algorithm::Sha256, &frame);
        assert_eq!(toc_json(&frame, &sum, &p, "t").expect("the TOC"), json);
        let wrong = Digest::of(Algorithm::Sha256, json);
        assert!(matches!(toc_json(&frame, &wrong, &p, "t"), Err(Error::DigestMismatch { .. })));
        let longer = Position { uncompressed: 5, ..p };
        assert!(toc_json(&frame, &sum, &longer, "t").is_err(), "a length that lies is refused");
    }
}
