//! Real layer tarballs, deterministic, in each compression the layout names.

use std::io::Write;

/// A small deterministic generator (xorshift), so fixtures are the same on every run.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: &str) -> Noise {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for b in seed.bytes() {
            s = (s ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        Noise(s | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Compression {
    Gzip,
    Zstd,
    Plain,
}

/// A tar holding `files` (path, contents).
pub fn tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice()).map_err(|e| e.to_string())?;
    }
    b.into_inner().map_err(|e| e.to_string())
}

pub fn compress(raw: &[u8], c: Compression) -> Result<Vec<u8>, String> {
    match c {
        Compression::Plain => Ok(raw.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).map_err(|e| e.to_string())?;
            e.finish().map_err(|e| e.to_string())
        }
        Compression::Zstd => zstd::encode_all(raw, 3).map_err(|e| e.to_string()),
    }
}

/// A layer of a fixture image: a text file naming it, and `noise` bytes of incompressible data.
pub fn layer(name: &str, noise: usize, c: Compression) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut data = vec![0u8; noise];
    Noise::new(name).fill(&mut data);
    let files = vec![
        (format!("regfs-fixture/{name}.txt"), format!("layer {name}\n").into_bytes()),
        (format!("regfs-fixture/{name}.bin"), data),
    ];
    let raw = tar(&files)?;
    Ok((compress(&raw, c)?, raw))
}
