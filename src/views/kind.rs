//! What a layer's entries are: [`EntryKind`], and the basenames OCI and AUFS layers give a
//! meaning of their own. The index, its builder and the symlink walk (`rootpath`) all read these;
//! this module reads nothing of theirs.
//!
//! - A whiteout is a regular file named `.wh.<name>` ([`WHITEOUT_PREFIX`]), whatever its
//!   typeflag: `<name>` is absent in this layer and every lower one.
//! - An opaque marker is a file named [`OPAQUE`] in a directory: the lower layers' children of
//!   that directory are hidden.
//! - Any other basename starting with [`AUFS_PREFIX`] is AUFS metadata, dropped with its
//!   subtree, except the regular files of the root's [`AUFS_PLNK`], which hard links may name.

/// What a layer's entry is. Inputs to the index builder are never `Whiteout`: whiteouts are
/// recognised by name (`.wh.<x>`), whatever their typeflag; a `Whiteout` input is taken as a
/// regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (tar `0`, `\0`, `7`); its data is `size` bytes at `data_offset`.
    File,
    /// A directory (tar `5`, GNU `D`), explicit or implied (`EntryRef::is_implied`).
    Dir,
    /// A symbolic link; `EntryRef::symlink_target` is its target, as written.
    Symlink,
    /// A character device (`EntryRef::rdev`).
    CharDevice,
    /// A block device (`EntryRef::rdev`).
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A hard link; `EntryRef::link` says to which inode. Its own attributes are the header's;
    /// the inode's are those of the entry it links to.
    Hardlink,
    /// A whiteout of this name: the name is absent here and in every lower layer.
    Whiteout,
}

impl EntryKind {
    /// The number an index record stores for this kind, in memory and in the index file: a
    /// kind keeps its number (a new kind takes a new one, and a new file format version).
    pub(crate) fn code(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
            EntryKind::CharDevice => 3,
            EntryKind::BlockDevice => 4,
            EntryKind::Fifo => 5,
            EntryKind::Hardlink => 6,
            EntryKind::Whiteout => 7,
        }
    }

    /// The kind stored as `c`; `None` for a number no kind has.
    pub(crate) fn from_code(c: u8) -> Option<EntryKind> {
        Some(match c {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::CharDevice,
            4 => EntryKind::BlockDevice,
            5 => EntryKind::Fifo,
            6 => EntryKind::Hardlink,
            7 => EntryKind::Whiteout,
            _ => return None,
        })
    }
}

/// The basename of an opaque marker.
pub const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of a whiteout's basename.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix of AUFS metadata basenames (dropped, with their subtree).
pub const AUFS_PREFIX: &str = ".wh..wh.";
/// The AUFS directory whose regular files are kept as hidden hard-link sources.
pub const AUFS_PLNK: &str = ".wh..wh.plnk";
