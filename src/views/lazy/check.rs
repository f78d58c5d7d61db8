//! The cross-check of a lazy layer against its tar, once the whole layer is verified (its
//! decoded tar hashed to the diff_id): the two views of one layer must be one.
//!
//! - Every path the TOC's index shows, the tar's index shows, as the same kind with the same
//!   mode, owner, mtime, size, link target, device numbers and xattrs; and the other way round
//!   (but for the TOC's own entry and the landmarks at the root, which the TOC hides).
//! - Every chunk the TOC names hashes, in the verified tar at that file's data, to its
//!   `chunkDigest`, and a hole (zstd:chunked `zeros`, served as zeros unfetched) is zeros
//!   there: so every byte served lazily is a byte of the diff_id-verified tar.
//! - A hard link's original whose name a later entry took (hidden in both indexes, reached by
//!   its links only) has the same attributes and bytes as the tar's original of that link.
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

/// What a cross-check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Agrees,
    /// The TOC says other than the tar: the layer is poisoned.
    Disagrees(String),
    /// Nothing could be told (the verified blob a SOCI check reads is no longer at hand): no
    /// proof either way, and asked again at the next verification.
    Unchecked(String),
}

/// Whether `lazy`'s TOC agrees with the verified tar `tar` and its index `tar_index`.
pub fn against_tar(lazy: &LazyLayer, tar_index: &LayerIndex, tar: &Content) -> Outcome {
    if let Some(spans) = &lazy.spans {
        if let Err(why) = shapes_agree(lazy, tar_index) {
            return Outcome::Disagrees(why);
        }
        return soci_against_tar(lazy, spans, tar_index, tar);
    }
    match chunks_against_tar(lazy, tar_index, tar) {
        Ok(()) => Outcome::Agrees,
        Err(why) => Outcome::Disagrees(why),
    }
}

/// `Ok` if every path shows the same in both indexes.
fn shapes_agree(lazy: &LazyLayer, tar_index: &LayerIndex) -> Result<(), String> {
    let (toc, whole) = (shapes(&lazy.index, false), shapes(tar_index, true));
    if toc != whole {
        let first = toc.iter().zip(&whole).find(|(a, b)| a != b);
        let why = match first {
            Some((a, b)) => format!("the TOC says {:?} is {}, the tar says {:?} is {}", a.0, a.1, b.0, b.1),
            None => format!("the TOC lists {} entries, the tar {}", toc.len(), whole.len()),
        };
        return Err(why);
    }
    Ok(())
}

/// Every regular file a path of `lazy` serves, each once, with the tar's file at that path: its
/// own entry, or a hard link's original (hidden when a later entry took its name: reached by its
/// links only, so its attributes are compared here, as the shapes compare the rest). `Err` at the
/// first such original that differs.
fn served_files<'a>(
    lazy: &'a LazyLayer,
    tar_index: &'a LayerIndex,
) -> Result<Vec<(String, EntryRef<'a>, EntryRef<'a>)>, String> {
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    for id in 1..lazy.index.len() as u32 {
        let Some(e) = lazy.index.entry(id).filter(|e| !e.is_hidden()) else { continue };
        let path = e.path();
        let (Some(mine), Some(theirs)) =
            (served(&lazy.index, e), tar_index.get(&path).and_then(|t| served(tar_index, t)))
        else {
            continue;
        };
        if !done.insert(mine.id()) {
            continue;
        }
        if mine.is_hidden() {
            let (a, b) = (shape(&lazy.index, &mine), shape(tar_index, &theirs));
            if a != b {
                return Err(format!("the TOC says {path:?} links to a file that is {a}, the tar one that is {b}"));
            }
        }
        out.push((path, mine, theirs));
    }
    Ok(out)
}

/// eStargz and zstd:chunked: the shapes, and every chunk's bytes in the tar.
fn chunks_against_tar(lazy: &LazyLayer, tar_index: &LayerIndex, tar: &Content) -> Result<(), String> {
    shapes_agree(lazy, tar_index)?;
    let mut buf = vec![0u8; 256 << 10];
    for (path, mine, theirs) in served_files(lazy, tar_index)? {
        if mine.size() == 0 {
            continue;
        }
        let Some(file) = lazy.files.get((mine.data_offset().saturating_sub(1)) as usize) else {
            return Err(format!("{path:?} has no chunks"));
        };
        for c in &file.chunks {
            let mut h = Hasher::new(Algorithm::Sha256);
            let mut zeros = true;
            let mut at_c = 0u64;
            while at_c < c.size {
                let n = (c.size - at_c).min(buf.len() as u64) as usize;
                let at = theirs.data_offset() + c.at + at_c;
                read_at(tar, &mut buf[..n], at)
                    .map_err(|e| format!("{path:?}: the tar cannot be read at {at}: {e}"))?;
                h.update(&buf[..n]);
                zeros &= buf[..n].iter().all(|b| *b == 0);
                at_c += n as u64;
            }
            // A hole is served as zeros, whatever its digest says: the tar must hold zeros there.
            if c.zeros && !zeros {
                return Err(format!("{path:?} at {}: the TOC says zeros, the tar holds data", c.at));
            }
            let actual = h.finish();
            if !c.zeros && actual != c.digest {
                return Err(format!(
                    "{path:?} at {}: the tar's bytes hash to {actual}, the TOC says {}",
                    c.at, c.digest
                ));
            }
        }
    }
    Ok(())
}

/// A SOCI layer against its verified tar (its shapes agree already): each file's data is where
/// the zTOC says in the tar, and each span, decompressed from the verified blob by its
/// checkpoint (its window and bits, which no digest covers), is the tar's bytes there, its
/// compressed bytes hashing to its span digest. So every byte served by spans is the tar's.
fn soci_against_tar(lazy: &LazyLayer, spans: &super::ztoc::Spans, tar_index: &LayerIndex, tar: &Content) -> Outcome {
    let files = match served_files(lazy, tar_index) {
        Ok(f) => f,
        Err(why) => return Outcome::Disagrees(why),
    };
    for (path, mine, theirs) in files {
        if mine.size() == 0 {
            continue;
        }
        let file = lazy.files.get((mine.data_offset().saturating_sub(1)) as usize);
        let Some((c, i)) = file.and_then(|f| f.chunks.first()).and_then(|c| Some((c, c.span?))) else {
            return Outcome::Disagrees(format!("{path:?} has no spans"));
        };
        let at = spans.uncompressed(i).start + c.inner - c.at;
        if at != theirs.data_offset() {
            return Outcome::Disagrees(format!(
                "the zTOC puts the data of {path:?} at {at} of the tar, the tar at {}",
                theirs.data_offset()
            ));
        }
    }
    let store = &lazy.shared.store;
    for i in 0..spans.digests.len() {
        let (z, u) = (spans.compressed(i), spans.uncompressed(i));
        // From the verified blob only: a range asked of the registry now proves nothing (it
        // may fail, or lie), and its failure is not the zTOC's.
        let compressed = match store.blob_range_cached(&lazy.blob, z.start, z.end) {
            Ok(Some(b)) => b,
            Ok(None) => return Outcome::Unchecked(format!("the blob is not in the cache (span {i})")),
            Err(e) => return Outcome::Unchecked(format!("span {i}: {e}")),
        };
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(&compressed);
        if h.finish() != spans.digests[i] {
            return Outcome::Disagrees(format!(
                "span {i}: the blob's bytes {}..{} do not hash to its span digest",
                z.start, z.end
            ));
        }
        let c = spans.checkpoints[i];
        let data = match super::zran::span(&compressed, c.bits, spans.window(i), u.end - u.start) {
            Ok(d) => d,
            Err(why) => return Outcome::Disagrees(format!("span {i}: {why}")),
        };
        let mut theirs = vec![0u8; data.len()];
        if let Err(e) = read_at(tar, &mut theirs, u.start) {
            return Outcome::Unchecked(format!("span {i}: the tar cannot be read at {}: {e}", u.start));
        }
        if data != theirs {
            return Outcome::Disagrees(format!(
                "span {i}: decompressed from its checkpoint, it is not the tar's bytes {}..{}",
                u.start, u.end
            ));
        }
    }
    Outcome::Agrees
}

/// The regular file entry `e` of `index` serves: itself, or a hard link's original in its layer.
fn served<'a>(index: &'a LayerIndex, e: EntryRef<'a>) -> Option<EntryRef<'a>> {
    let file = match (e.kind(), e.link()) {
        (EntryKind::File, _) => e,
        (EntryKind::Hardlink, Some(crate::views::index::LinkTo::Entry(t))) => index.entry(t)?,
        _ => return None,
    };
    (file.kind() == EntryKind::File).then_some(file)
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
