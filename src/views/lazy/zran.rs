//! One span of an ordinary gzip layer decompressed on its own, from a zran checkpoint (SOCI's
//! zTOC): where the span's first deflate block starts, to the bit, and the 32 KiB of
//! uncompressed data before it, which that block's back-references may reach.
//!
//! As zlib's zran example and SOCI's `gzip_zinfo.c`: a raw inflater, primed with the `bits`
//! bits of the block's first byte (`inflatePrime`), given the window as its dictionary
//! (`inflateSetDictionary`), then fed the rest. flate2 has no `inflatePrime`, and it cannot be
//! done by shifting the bytes instead (tried first): a stored block aligns to a byte of the
//! *original* stream, so a shifted stream misreads every stored block after a mid-byte start
//! (incompressible data is stored blocks). So this calls zlib-rs, the inflater flate2 already
//! runs on here, through its C API (`libz-rs-sys`, no symbols exported): the only `unsafe` of
//! the lazy reader, a stream boxed (zlib checks its state's back pointer) and ended on drop,
//! pointing into two slices that outlive it.
//!
//! The span's bytes must decompress to exactly `out_len` bytes: fewer (the compressed bytes
//! run out, or the stream ends) is an error, as is a stream that is not deflate. The bytes
//! served are still the span's: its compressed bytes were checked against the zTOC's span
//! digest before this runs ([`super::soci`]); the window is the zTOC's (trusted as the zTOC is,
//! through the manifest's annotation).

use libz_rs_sys as z;

use crate::limits;

/// The window a checkpoint carries: the 32 KiB of uncompressed data before it.
pub const WINDOW: usize = 32 << 10;

/// A raw inflater, ended when dropped.
struct Inflater(Box<z::z_stream>);

impl Inflater {
    fn new() -> Result<Inflater, String> {
        let mut s = Inflater(Box::default());
        let size = std::mem::size_of::<z::z_stream>() as i32;
        // SAFETY: a default (zeroed) stream, boxed so that it does not move after init; -15:
        // raw deflate, a 32 KiB window.
        let rc = unsafe { z::inflateInit2_(&mut *s.0, -15, z::zlibVersion(), size) };
        if rc != z::Z_OK {
            // Not initialised: nothing to end (inflateEnd of it is a harmless stream error).
            return Err(format!("the inflater does not start ({rc})"));
        }
        Ok(s)
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; its next_in/next_out are not read by inflateEnd.
        unsafe { z::inflateEnd(&mut *self.0) };
    }
}

/// `out_len` bytes decompressed from `compressed`, a raw deflate stream that starts `bits` bits
/// before the end of its first byte (0: at the start of it), with `window` as the preceding
/// uncompressed data.
pub fn span(compressed: &[u8], bits: u8, window: &[u8], out_len: u64) -> Result<Vec<u8>, String> {
    if out_len > limits::MAX_LAZY_CHUNK {
        return Err(format!("a span of {out_len} bytes decompressed, more than regfs reads as one"));
    }
    if bits > 7 {
        return Err(format!("a checkpoint at bit {bits} of a byte"));
    }
    if window.len() > WINDOW {
        return Err(format!("a window of {} bytes", window.len()));
    }
    let (first, rest) = match (bits, compressed.split_first()) {
        (0, _) => (None, compressed),
        (_, Some((b, rest))) => (Some(*b), rest),
        (_, None) => return Err("no compressed bytes".into()),
    };
    let avail_in = u32::try_from(rest.len()).map_err(|_| format!("{} compressed bytes", rest.len()))?;
    let mut out = vec![0u8; out_len as usize];
    let mut d = Inflater::new()?;
    let strm: &mut z::z_stream = &mut d.0;
    if let Some(b) = first {
        // SAFETY: an initialised stream.
        let rc = unsafe { z::inflatePrime(strm, i32::from(bits), i32::from(b >> (8 - bits))) };
        if rc != z::Z_OK {
            return Err(format!("the checkpoint's first bits are refused ({rc})"));
        }
    }
    if !window.is_empty() {
        // SAFETY: an initialised stream; the pointer and length are `window`'s.
        let rc = unsafe { z::inflateSetDictionary(strm, window.as_ptr(), window.len() as u32) };
        if rc != z::Z_OK {
            return Err(format!("the checkpoint's window is refused ({rc})"));
        }
    }
    strm.next_in = rest.as_ptr().cast_mut();
    strm.avail_in = avail_in;
    strm.next_out = out.as_mut_ptr();
    strm.avail_out = out.len() as u32;
    loop {
        let before = (strm.avail_in, strm.avail_out);
        // SAFETY: next_in/avail_in are within `rest` and next_out/avail_out within `out`, both
        // alive and untouched until the stream is dropped; inflate only reads the one and
        // writes the other.
        let rc = unsafe { z::inflate(strm, z::Z_NO_FLUSH) };
        let filled = out.len() - strm.avail_out as usize;
        if filled == out.len() {
            break;
        }
        match rc {
            z::Z_STREAM_END => return Err(format!("its deflate stream ends after {filled} of {out_len} bytes")),
            z::Z_OK | z::Z_BUF_ERROR if before == (strm.avail_in, strm.avail_out) => {
                return Err(format!("its compressed bytes run out after {filled} of {out_len} bytes"));
            }
            z::Z_OK => {}
            rc => return Err(format!("does not decompress from its checkpoint (zlib {rc}, after {filled} bytes)")),
        }
    }
    // The stream points into `rest` and `out` no longer once dropped here, before `out` moves.
    strm.next_in = std::ptr::null_mut();
    strm.next_out = std::ptr::null_mut();
    drop(d);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_aligned_stream_with_no_window_is_read_to_its_length() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &data).expect("deflate");
        let raw = e.finish().expect("deflate");
        assert_eq!(span(&raw, 0, &[], data.len() as u64).expect("the span"), data);
        assert_eq!(span(&raw, 0, &[], 10).expect("a prefix"), data[..10]);
        let short = span(&raw, 0, &[], data.len() as u64 + 1).expect_err("past the stream's end");
        assert!(short.contains("ends after"), "{short}");
        let cut = span(&raw[..raw.len() / 2], 0, &[], data.len() as u64).expect_err("cut");
        assert!(cut.contains("run out"), "{cut}");
        assert!(span(b"\xff\xff\xff\xff", 0, &[], 10).is_err(), "not deflate");
        assert!(span(&raw, 0, &[], limits::MAX_LAZY_CHUNK + 1).is_err(), "too large to hold");
    }
}
