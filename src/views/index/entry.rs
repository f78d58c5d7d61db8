//! The index builder's input: one tar entry as [`Entry`], made from what the tar parser read
//! ([`Entry::from_raw`]) or, in tests, with its constructors.
//!
//! - Names and link targets are UTF-8 without NUL bytes, or the entry is left out (the kernel
//!   would cut a name at a NUL, and C readers would see another name than the one listed).
//! - Sparse entries and unknown typeflags are left out; a whiteout is a whiteout by its name,
//!   whatever its typeflag.
//! - Xattrs that describe the machine that made the layer (`security.selinux`,
//!   `system.nfs4_acl`) or steer an overlay (`trusted.overlay.*`, `user.overlay.*`) are never
//!   kept.
//! - An entry keeps its name as written; the builder cleans it as `path.Clean("/" + name)` does
//!   ([`normalise`]).

use super::{EntryKind, OPAQUE, WHITEOUT_PREFIX};
use crate::views::tar::{RawEntry, RawKind};

/// One tar entry as the index builder takes it: the name as written in the tar (not yet
/// normalised), the header's attributes, and where the header and the data are in the decoded
/// stream. The builder makes one of each entry the tar parser read; tests build them with the
/// constructors below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as the tar names it (PAX `path` or GNU long name applied): the builder drops
    /// `./` and `/` prefixes, `.` and empty components, and clamps `..` at the root.
    pub name: String,
    /// What the header says it is (never `Whiteout`, see [`EntryKind`]).
    pub kind: EntryKind,
    /// Permission bits (the low 12 bits are kept).
    pub mode: u32,
    /// Owner; values over 32 bits are shown as 65534.
    pub uid: u64,
    /// Group; values over 32 bits are shown as 65534.
    pub gid: u64,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds of the modification time (PAX `mtime` fractions), below 10⁹.
    pub mtime_ns: u32,
    /// Bytes of data (regular files only; 0 for the others).
    pub size: u64,
    /// A symlink's target, or a hard link's target path as written; empty for the others.
    pub link_target: String,
    /// Device numbers (character and block devices).
    pub dev_major: u32,
    /// See `dev_major`.
    pub dev_minor: u32,
    /// Extended attributes (PAX `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`), in header order.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Offset in the decoded stream of the entry's first header (extension headers included).
    pub header_offset: u64,
    /// Offset in the decoded stream of the entry's data (just past its last header). Never 0
    /// for a real entry; [`LayerIndex::from_entries`](super::LayerIndex::from_entries) invents offsets when it is 0.
    pub data_offset: u64,
}

impl Entry {
    /// An entry of `kind` named `name`, mode 0644 (0755 for directories), root-owned, mtime 0.
    pub fn new(name: &str, kind: EntryKind) -> Entry {
        Entry {
            name: name.to_string(),
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_ns: 0,
            size: 0,
            link_target: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            header_offset: 0,
            data_offset: 0,
        }
    }

    /// A regular file of `size` bytes.
    pub fn file(name: &str, size: u64) -> Entry {
        Entry { size, ..Entry::new(name, EntryKind::File) }
    }

    /// A directory.
    pub fn dir(name: &str) -> Entry {
        Entry::new(name, EntryKind::Dir)
    }

    /// A symlink to `target`.
    pub fn symlink(name: &str, target: &str) -> Entry {
        Entry { link_target: target.to_string(), mode: 0o777, ..Entry::new(name, EntryKind::Symlink) }
    }

    /// A hard link named `name` to the path `target`.
    pub fn hardlink(name: &str, target: &str) -> Entry {
        Entry { link_target: target.to_string(), ..Entry::new(name, EntryKind::Hardlink) }
    }

    /// A character device, block device or FIFO (`kind`) with device numbers.
    pub fn special(name: &str, kind: EntryKind, major: u32, minor: u32) -> Entry {
        Entry { dev_major: major, dev_minor: minor, ..Entry::new(name, kind) }
    }

    /// The whiteout of `path`: an empty regular file named `<parent>/.wh.<basename>`.
    pub fn whiteout(path: &str) -> Entry {
        let name = match path.rsplit_once('/') {
            Some((parent, base)) => format!("{parent}/.wh.{base}"),
            None => format!(".wh.{path}"),
        };
        Entry::new(&name, EntryKind::File)
    }

    /// The opaque marker of directory `dir` (`<dir>/.wh..wh..opq`; `""` is the root).
    pub fn opaque(dir: &str) -> Entry {
        let name = if dir.is_empty() { OPAQUE.to_string() } else { format!("{dir}/{OPAQUE}") };
        Entry::new(&name, EntryKind::File)
    }

    /// This entry with `mode`.
    pub fn with_mode(self, mode: u32) -> Entry {
        Entry { mode, ..self }
    }

    /// This entry owned by `uid:gid`.
    pub fn with_owner(self, uid: u64, gid: u64) -> Entry {
        Entry { uid, gid, ..self }
    }

    /// This entry with mtime `secs`.
    pub fn with_mtime(self, secs: i64) -> Entry {
        Entry { mtime: secs, ..self }
    }

    /// This entry with one more extended attribute.
    pub fn with_xattr(mut self, name: &str, value: &[u8]) -> Entry {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }
}

/// Xattrs never kept (umoci's list): they describe the machine that made the layer.
const DROPPED_XATTRS: [&str; 2] = ["security.selinux", "system.nfs4_acl"];

/// Xattr namespaces never kept: overlayfs's own metadata (`trusted.overlay.*`, and
/// `user.overlay.*` on mounts with `userxattr`). overlayfs reads it from a lower layer, so kept
/// in `rootfs/` (a `lowerdir`) it would steer the overlay rather than show the image: a
/// `metacopy` file reads as EPERM, an `opaque` directory hides the lower layers' files below it.
const DROPPED_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

fn kept_xattr(name: &str) -> bool {
    !DROPPED_XATTRS.contains(&name) && !DROPPED_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl Entry {
    /// A parsed tar entry as the builder's input, or why it is left out and its name (lossy):
    /// names or link targets that are not UTF-8 or hold a NUL, sparse entries, unknown
    /// typeflags. Whiteouts are whiteouts whatever their typeflag.
    pub(crate) fn from_raw(raw: RawEntry) -> Result<Entry, (&'static str, String)> {
        let lossy = String::from_utf8_lossy(&raw.name).into_owned();
        let (Ok(name), Ok(link_target)) = (String::from_utf8(raw.name), String::from_utf8(raw.linkname)) else {
            return Err(("name not UTF-8", lossy));
        };
        // No file name holds a NUL: the kernel would cut it there, and C readers would see
        // another name than the one listed.
        if name.contains('\0') || link_target.contains('\0') {
            return Err(("name with a NUL byte", lossy));
        }
        let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let kind = if base.starts_with(WHITEOUT_PREFIX) {
            EntryKind::File
        } else {
            match raw.kind {
                RawKind::File => EntryKind::File,
                RawKind::Dir => EntryKind::Dir,
                RawKind::Symlink => EntryKind::Symlink,
                RawKind::Hardlink => EntryKind::Hardlink,
                RawKind::CharDevice => EntryKind::CharDevice,
                RawKind::BlockDevice => EntryKind::BlockDevice,
                RawKind::Fifo => EntryKind::Fifo,
                RawKind::Sparse => return Err(("sparse", lossy)),
                RawKind::Other(_) => return Err(("unknown typeflag", lossy)),
            }
        };
        let mut xattrs = raw.xattrs;
        xattrs.retain(|(n, _)| kept_xattr(n));
        Ok(Entry {
            name,
            kind,
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            mtime_ns: raw.mtime_ns,
            size: raw.size,
            link_target: if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) {
                link_target
            } else {
                String::new()
            },
            dev_major: raw.devmajor,
            dev_minor: raw.devminor,
            xattrs,
            header_offset: raw.header_offset,
            data_offset: raw.data_offset,
        })
    }
}

/// The components of a tar name, cleaned as `path.Clean("/" + name)`: `/` and `./` prefixes,
/// `.` and empty components dropped, `..` clamped at the root. `[]` is the root.
pub fn normalise(name: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}
