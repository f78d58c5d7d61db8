//! `zstd-chunked-oracle BLOB`: the tar the `zstd-chunked` crate rebuilds from BLOB (footer →
//! TOC and tar-split → each referenced range decoded alone and checked against its digest) on
//! stdout; exits 1 with the crate's error, or a digest that does not match, on stderr.

use std::io::Write;

use sha2::{Digest, Sha256};
use zstd_chunked::{MetadataReferences, Stream};

fn slice<'a>(data: &'a [u8], r: &std::ops::Range<u64>) -> Result<&'a [u8], String> {
    data.get(r.start as usize..r.end as usize).ok_or_else(|| format!("range {r:?} outside the blob of {}", data.len()))
}

fn run(path: &str) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let refs = MetadataReferences::from_footer(&data).ok_or("no zstd:chunked footer")?;
    let stream = Stream::new_from_frames(slice(&data, &refs.manifest.range)?, slice(&data, &refs.tarsplit.range)?)
        .map_err(|e| format!("metadata: {e:#}"))?;
    let mut out = Vec::new();
    stream
        .write_to(&mut out, |r| {
            let bytes = zstd::decode_all(slice(&data, &r.range).map_err(|e| std::io::Error::other(e))?)?;
            let got = format!("sha256:{:x}", Sha256::digest(&bytes));
            if got != r.digest || bytes.len() as u64 != r.size {
                Err(std::io::Error::other(format!(
                    "range {:?}: {got} ({} bytes), TOC says {} ({})",
                    r.range,
                    bytes.len(),
                    r.digest,
                    r.size
                )))?;
            }
            Ok(bytes)
        })
        .map_err(|e| format!("{e:#}"))?;
    Ok(out)
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: zstd-chunked-oracle BLOB");
        std::process::exit(2);
    };
    match run(&path) {
        Ok(tar) => {
            let _ = std::io::stdout().write_all(&tar);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
