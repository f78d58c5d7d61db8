//! The image config, as far as the views need it: `rootfs.diff_ids`, one per layer.
//!
//! The config is a blob verified by its digest (`Store::blob`); this reads it strictly: at most
//! [`MAX_CONFIG`] bytes, JSON, `rootfs` and `rootfs.diff_ids` present (each key once), every
//! entry a valid sha256/sha512 digest. Anything else is [`Error::Malformed`] (EIO) for every view
//! of that manifest: a decoded layer can only be served once it is checked against its diff_id.

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::MAX_CONFIG;

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The `rootfs.diff_ids` of config `bytes` (`what` names it in errors). Duplicate `rootfs` or
/// `diff_ids` keys are refused (serde's derive does), so the list has one meaning.
pub fn diff_ids(bytes: &[u8], what: &str) -> Result<Vec<Digest>> {
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(Error::TooLarge(format!("config {what}: {} bytes (limit {MAX_CONFIG})", bytes.len())));
    }
    let bad = |why: String| Error::malformed(format!("config {what}"), why);
    let c: Config = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    c.rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| d.parse::<Digest>().map_err(|_| bad(format!("rootfs.diff_ids[{i}] is not a digest: {d:?}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_ids_are_read_strictly() {
        let d = format!("sha256:{}", "a".repeat(64));
        let good = format!(r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}","{d}"]}}}}"#);
        assert_eq!(diff_ids(good.as_bytes(), "c").expect("good").len(), 2);
        let bad = [
            r#"{"os":"linux"}"#.to_string(),
            r#"{"rootfs":{"type":"layers"}}"#.to_string(),
            r#"{"rootfs":{"diff_ids":["sha256:xyz"]}}"#.to_string(),
            r#"{"rootfs":{"diff_ids":"sha256:x"}}"#.to_string(),
            format!(r#"{{"rootfs":{{"diff_ids":["{d}"]}},"rootfs":{{"diff_ids":[]}}}}"#),
            format!(r#"{{"rootfs":{{"diff_ids":["{d}"],"diff_ids":[]}}}}"#),
            "not json".to_string(),
        ];
        for b in bad {
            let e = diff_ids(b.as_bytes(), "c").err().unwrap_or_else(|| panic!("accepted {b}"));
            assert_eq!(e.errno(), libc::EIO, "{b}: {e}");
        }
        let huge = vec![b' '; MAX_CONFIG as usize + 1];
        assert_eq!(diff_ids(&huge, "c").expect_err("too large").errno(), libc::EFBIG);
    }
}
