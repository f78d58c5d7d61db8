//! The cross-check of a lazy layer against its tar, once the whole layer is verified (its
//! decoded tar hashed to the diff_id): the two views of one layer must be one.
//!
//! - Every path the TOC's index shows, the tar's index shows, as the same kind with the same
//!   mode, owner, mtime, size, link target, device numbers and xattrs; and the other way round
//!   (but for the TOC's own entry and the landmarks at the root, which the TOC hides).
//! - Every chunk the TOC names hashes, in the verified tar at that file's data, to its
//!   `chunkDigest`: so every byte served lazily is a byte of the diff_id-verified tar.
//!
//! One pass over the files' data in the decoded tar (reads only, no request). A disagreement
//! poisons the layer ([`super::Lazy::poison`]).

use std::os::unix::fs::FileExt;

use super::LazyLayer;
use super::toc::HIDDEN;
use crate::digest::{Algorithm, Hasher};
use crate::store::Content;
use crate::views::index::{EntryKind, EntryRef, LayerIndex};

/// What one entry shows, for comparing.
fn shape(index: &LayerIndex, e: &EntryRef<'_>) -> String {
    let xattrs: Vec<(String, Vec<u8>)> = e.xattrs().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
    let link = match e.link() {
        Some(crate::views::index::LinkTo::Entry(id)) => index.entry(id).map(|t| t.path()).unwrap_or_default(),
        Some(crate::views::index::LinkTo::Lower(p)) => format!("lower {p}"),
        None => String::new(),
    };
    format!(
        "{:?} mode {:o} {}:{} mtime {:?} size {} target {:?} link {link:?} rdev {:?} xattrs {xattrs:?} opaque {}",
        e.kind(),
        e.mode(),
        e.uid(),
        e.gid(),
        e.mtime(),
        e.size(),
        e.symlink_target(),
        e.rdev(),
        e.is_opaque()
    )
}

/// Paths of the visible entries of `index` with their shapes, sorted.
fn shapes(index: &LayerIndex, hide_root: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (0..index.len() as u32)
        .filter_map(|id| index.entry(id))
        .filter(|e| !e.is_hidden() && e.id() != 0)
        .filter(|e| !(hide_root && e.parent().is_some_and(|p| p.id() == 0) && HIDDEN.contains(&e.name())))
        .map(|e| (e.path(), shape(index, &e)))
        .collect();
    out.sort();
    out
}

/// `Ok` if `lazy`'s TOC agrees with the verified tar `tar` and its index `tar_index`; else why not.
pub fn against_tar(lazy: &LazyLayer, tar_index: &LayerIndex, tar: &Content) -> Result<(), String> {
    let (toc, whole) = (shapes(&lazy.index, false), shapes(tar_index, true));
    if toc != whole {
        let first = toc.iter().zip(&whole).find(|(a, b)| a != b);
        let why = match first {
            Some((a, b)) => format!("the TOC says {:?} is {}, the tar says {:?} is {}", a.0, a.1, b.0, b.1),
            None => format!("the TOC lists {} entries, the tar {}", toc.len(), whole.len()),
        };
        return Err(why);
    }
    let mut buf = vec![0u8; 256 << 10];
    for id in 0..lazy.index.len() as u32 {
        let Some(e) = lazy.index.entry(id) else { continue };
        if e.kind() != EntryKind::File || e.size() == 0 {
            continue;
        }
        let path = e.path();
        let Some(file) = lazy.files.get((e.data_offset() - 1) as usize) else {
            return Err(format!("{path:?} has no chunks"));
        };
        // A hidden original (a link's, whose name a later entry took) has no path to find it
        // by in the tar's index: its links' checks cover its bytes.
        let Some(t) = (!e.is_hidden()).then(|| tar_index.get(&path)).flatten() else { continue };
        for c in &file.chunks {
            let mut h = Hasher::new(Algorithm::Sha256);
            let mut done = 0u64;
            while done < c.size {
                let n = (c.size - done).min(buf.len() as u64) as usize;
                let at = t.data_offset() + c.at + done;
                read_at(tar, &mut buf[..n], at)
                    .map_err(|e| format!("{path:?}: the tar cannot be read at {at}: {e}"))?;
                h.update(&buf[..n]);
                done += n as u64;
            }
            let actual = h.finish();
            if actual != c.digest {
                return Err(format!(
                    "{path:?} at {}: the tar's bytes hash to {actual}, the TOC says {}",
                    c.at, c.digest
                ));
            }
        }
    }
    Ok(())
}

fn read_at(tar: &Content, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    match tar {
        Content::File(f) => f.read_exact_at(buf, at),
        Content::Memory(b) => {
            let s = usize::try_from(at).ok().and_then(|s| b.get(s..s.checked_add(buf.len())?));
            let s = s.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the tar"))?;
            buf.copy_from_slice(s);
            Ok(())
        }
        _ => Err(std::io::Error::other("not a whole tar")),
    }
}
