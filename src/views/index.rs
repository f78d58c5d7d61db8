//! The per-layer index: what one layer's tar says about every path, as a compact sorted table the
//! merge (`views::merge`) queries without reading the tar again.
//!
//! Design (doc/plans/issue-9.md, section 2.2):
//! - Entries are applied in tar order to a virtual tree (the same-layer rules: last entry wins,
//!   implied parents, whiteouts by basename, opaque markers, AUFS metadata, hard links resolved
//!   to their original). An entry's parent path, and a hard link's target's, follow the
//!   symlinks the layer made before it, confined to the layer's root, as containerd's applier
//!   does (`views::rootpath`); the last component never. The tree is then frozen into
//!   records numbered breadth-first, so that a directory's children are contiguous and sorted by
//!   name bytes (found by binary search), and ids grow with depth. The root is entry 0, path `""`.
//! - Every record has the same fixed size ([`LayerIndex::weight`] counts it) and points into two
//!   byte arenas (names and link targets, xattrs). Hard-link originals whose name is gone (replaced
//!   later in the layer, or AUFS `.wh..wh.plnk/` files) are kept after the tree as *hidden*
//!   records: links name them, listings and lookups never show them.
//! - A whiteout is a record of kind [`EntryKind::Whiteout`] under the victim's own name. A name
//!   both whited out and present in one layer is present (the whiteout applies only below), and
//!   opaque if it is a directory. A directory under an opaque directory of its own layer is
//!   opaque too (the lower layers' directory of that name is hidden with its parent).
//!
//! What the merge needs from one layer is [`LayerIndex::says`]: present, whited out, blocked (an
//! opaque, whited-out or non-directory ancestor hides every lower layer there), or silent.

use std::collections::{BTreeMap, HashMap};

use std::io::Read;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits;
use crate::sync::{Permit, Semaphore};
use crate::views::rootpath::{self, Bounds, Refused, Resolved};
use crate::views::tar::{Parser, RawEntry, RawKind, TarLimits};

/// The number of an entry in one layer's index (the root is 0).
pub type EntryId = u32;

/// What an index entry is. Inputs are never `Whiteout`: whiteouts are recognised by name
/// (`.wh.<x>`), whatever their typeflag; a `Whiteout` input is taken as a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (tar `0`, `\0`, `7`); its data is `size` bytes at `data_offset`.
    File,
    /// A directory (tar `5`, GNU `D`), explicit or implied (see [`EntryRef::is_implied`]).
    Dir,
    /// A symbolic link; [`EntryRef::symlink_target`] is its target, as written.
    Symlink,
    /// A character device ([`EntryRef::rdev`]).
    CharDevice,
    /// A block device ([`EntryRef::rdev`]).
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A hard link; [`EntryRef::link`] says to which inode. Its own attributes are the header's;
    /// the inode's are those of the entry it links to.
    Hardlink,
    /// A whiteout of this name: the name is absent here and in every lower layer.
    Whiteout,
}

impl EntryKind {
    fn code(self) -> u8 {
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

    fn from_code(c: u8) -> Option<EntryKind> {
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

/// One tar entry as the index builder takes it: the name as written in the tar (not yet
/// normalised), the header's attributes, and where the header and the data are in the decoded
/// stream. [`crate::views::tar`] produces these from a tar; tests build them with the
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
    /// for a real entry; [`LayerIndex::from_entries`] invents offsets when it is 0.
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

/// The basename of an opaque marker.
pub const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of a whiteout's basename.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix of AUFS metadata basenames (dropped, with their subtree).
pub const AUFS_PREFIX: &str = ".wh..wh.";
/// The AUFS directory whose regular files are kept as hidden hard-link sources.
pub const AUFS_PLNK: &str = ".wh..wh.plnk";

/// What a hard link links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTo<'a> {
    /// An entry of this layer (never a directory, never itself a hard link: links to links are
    /// resolved to the original). It may be hidden (its name replaced later in the layer).
    Entry(EntryId),
    /// A path of the layers below, normalised, to be resolved against the view below this layer.
    Lower(&'a str),
}

/// What one layer says about a path: the merge asks layers from the top down until one decides.
#[derive(Debug, Clone, Copy)]
pub enum Says<'a> {
    /// This layer has an entry at the path (never a whiteout). A non-directory decides the
    /// path; a directory merges with lower ones unless it is opaque.
    Present(EntryRef<'a>),
    /// This layer whites out the path: absent, whatever lower layers hold.
    WhitedOut,
    /// An ancestor of the path in this layer hides every lower layer there: it is opaque (and
    /// does not hold the path), whited out, or not a directory. The path is absent.
    Blocked,
    /// This layer does not mention the path: ask the layer below.
    Silent,
}

/// Bounds the builder enforces on one layer (defaults from [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Entries (tar entries kept, and records) past which the layer is refused (`TooLarge`).
    pub max_entries: usize,
    /// Bytes of records and arenas past which the layer is refused (`TooLarge`).
    pub max_bytes: usize,
    /// Bytes of a path as written; longer entries are left out and counted.
    pub max_path: usize,
    /// Bytes of a path component; entries with a longer one are left out and counted.
    pub max_component: usize,
    /// Bytes of one entry's xattrs (names and values); past it its xattrs are dropped.
    pub max_xattr_bytes: usize,
    /// Bytes of one xattr value; a longer one drops the entry's xattrs.
    pub max_xattr_value: usize,
    /// Bytes past which a build takes the one slot for large builds (one for the process),
    /// waiting for it if another build has it.
    pub alone_above: usize,
    /// Symlinks followed for one entry's parent path; past it the entry is left out.
    pub max_link_hops: usize,
    /// Path components walked through symlinks by the whole layer; past it the layer is
    /// refused (`TooLarge`).
    pub max_link_steps: usize,
}

/// The one slot for large index builds. Layers decode (and index) in parallel, each build
/// bounded by `max_bytes` alone; without a shared budget, N hostile layers of a million entries
/// each would hold N times that at once. A build that grows past `alone_above` takes this slot
/// first (waiting while another build holds it), and keeps it until it is frozen or dropped, so
/// builds together hold at most `(N - 1) × alone_above + max_bytes`. The holder never waits for
/// another build (it only reads its own stream), so waiting cannot deadlock.
static LARGE_BUILD: Semaphore = Semaphore::new(1);

/// Take the large-build slot, waiting for it if another build holds it.
fn take_large_build() -> Permit<'static> {
    LARGE_BUILD.try_acquire().unwrap_or_else(|| {
        log::debug!("layer index: waiting for another large index build to finish");
        LARGE_BUILD.acquire()
    })
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_entries: limits::MAX_LAYER_ENTRIES,
            max_bytes: limits::MAX_INDEX_BYTES,
            max_path: limits::MAX_LAYER_PATH,
            max_component: limits::MAX_LAYER_COMPONENT,
            max_xattr_bytes: limits::MAX_ENTRY_XATTRS,
            max_xattr_value: limits::MAX_XATTR_VALUE,
            alone_above: limits::INDEX_BUILD_ALONE_ABOVE,
            max_link_hops: limits::MAX_LINK_HOPS,
            max_link_steps: limits::MAX_LINK_STEPS,
        }
    }
}

const F_OPAQUE: u8 = 1;
const F_IMPLIED: u8 = 2;
const F_HIDDEN: u8 = 4;
const F_LOWER: u8 = 8;
const NONE: u32 = u32::MAX;

/// One fixed-size record (see the module note). Spans point into `names` and `xattrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) size: u64,
    pub(crate) header_offset: u64,
    pub(crate) data_offset: u64,
    pub(crate) mtime: i64,
    pub(crate) parent: u32,
    pub(crate) first_child: u32,
    pub(crate) nchildren: u32,
    pub(crate) name_off: u32,
    pub(crate) target_off: u32,
    pub(crate) xattr_off: u32,
    pub(crate) xattr_len: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime_ns: u32,
    pub(crate) dev_major: u32,
    pub(crate) dev_minor: u32,
    /// Hard links: the target entry, or `NONE` with `F_LOWER` (the target path is the target span).
    pub(crate) link: u32,
    pub(crate) name_len: u16,
    pub(crate) target_len: u16,
    pub(crate) mode: u16,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
}

/// One layer's index: a frozen, queryable table of its entries (see the module note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerIndex {
    pub(crate) recs: Vec<Rec>,
    pub(crate) names: Vec<u8>,
    pub(crate) xattrs: Vec<u8>,
    /// Ids of hard links to lower paths, sorted by target path.
    pub(crate) lower: Vec<u32>,
    /// (target, link) for hard links to entries of this layer, sorted.
    pub(crate) same: Vec<(u32, u32)>,
    pub(crate) decoded_len: u64,
    /// Records in the tree (the rest are hidden).
    pub(crate) visible: u32,
    /// Entries whose headers were found to agree with this index in the decoded tar (see
    /// [`LayerIndex::header_checked`]).
    pub(crate) checked: HeaderChecks,
}

/// One bit per record: its headers in the layer's verified decoded tar were parsed and agree
/// with this index. Kept with the index itself, so it goes with it: an index read back from disk
/// again (after the LRU dropped this one) is a new value with none checked. A clone starts with
/// none checked too, and equality ignores it.
#[derive(Default)]
pub(crate) struct HeaderChecks(std::sync::OnceLock<Box<[std::sync::atomic::AtomicU64]>>);

impl Clone for HeaderChecks {
    fn clone(&self) -> Self {
        HeaderChecks::default()
    }
}

impl PartialEq for HeaderChecks {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HeaderChecks {}

impl std::fmt::Debug for HeaderChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderChecks")
    }
}

/// A borrowed view of one entry of a [`LayerIndex`].
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    index: &'a LayerIndex,
    id: EntryId,
}

impl std::fmt::Debug for EntryRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryRef({} {:?} {:?})", self.id, self.path(), self.kind())
    }
}

impl<'a> EntryRef<'a> {
    fn rec(&self) -> &'a Rec {
        &self.index.recs[self.id as usize]
    }

    /// This entry's number in its layer (stable for a given index; the root is 0).
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The last component of the path (`""` for the root).
    pub fn name(&self) -> &'a str {
        let r = self.rec();
        self.index.str_at(r.name_off, r.name_len)
    }

    /// The full normalised path (`""` for the root). Allocates; hidden entries have no live path
    /// and give their own name.
    pub fn path(&self) -> String {
        let mut parts = Vec::new();
        let mut cur = *self;
        while cur.id != 0 {
            parts.push(cur.name());
            if cur.is_hidden() {
                break;
            }
            cur = EntryRef { index: self.index, id: cur.rec().parent };
        }
        parts.reverse();
        parts.join("/")
    }

    /// What the entry is.
    pub fn kind(&self) -> EntryKind {
        EntryKind::from_code(self.rec().kind).unwrap_or(EntryKind::File)
    }

    /// A directory that hides the lower layers' children (an opaque marker, whited out and
    /// re-created in this layer, or under such a directory of this layer). Its own entries still
    /// show.
    pub fn is_opaque(&self) -> bool {
        self.rec().flags & F_OPAQUE != 0
    }

    /// A directory this layer only implies (a parent of entries, with no header of its own): its
    /// attributes mean nothing; the merge takes them from a lower explicit entry, or defaults.
    pub fn is_implied(&self) -> bool {
        self.rec().flags & F_IMPLIED != 0
    }

    /// A hard-link original with no name of its own in this layer: reached only through links.
    pub fn is_hidden(&self) -> bool {
        self.rec().flags & F_HIDDEN != 0
    }

    /// Permission bits, 12 of them (setuid, setgid, sticky, rwx).
    pub fn mode(&self) -> u32 {
        u32::from(self.rec().mode)
    }

    /// Owner (65534 if the tar's was over 32 bits).
    pub fn uid(&self) -> u32 {
        self.rec().uid
    }

    /// Group (65534 if the tar's was over 32 bits).
    pub fn gid(&self) -> u32 {
        self.rec().gid
    }

    /// Modification time: seconds since the epoch and nanoseconds.
    pub fn mtime(&self) -> (i64, u32) {
        (self.rec().mtime, self.rec().mtime_ns)
    }

    /// Bytes of data (regular files; 0 otherwise).
    pub fn size(&self) -> u64 {
        self.rec().size
    }

    /// Offset in the decoded tar of this entry's first header (extension headers included).
    pub fn header_offset(&self) -> u64 {
        self.rec().header_offset
    }

    /// Offset in the decoded tar of this entry's data; with the layer, the inode's identity.
    pub fn data_offset(&self) -> u64 {
        self.rec().data_offset
    }

    /// Device numbers (major, minor) of a character or block device.
    pub fn rdev(&self) -> (u32, u32) {
        (self.rec().dev_major, self.rec().dev_minor)
    }

    /// A symlink's target as written; `None` for other kinds.
    pub fn symlink_target(&self) -> Option<&'a str> {
        let r = self.rec();
        (self.kind() == EntryKind::Symlink).then(|| self.index.str_at(r.target_off, r.target_len))
    }

    /// A regular file placed through a symlink of its layer: its name as written in the tar
    /// (normalised), which is not its path. `None` for other entries.
    pub fn tar_name(&self) -> Option<&'a str> {
        let r = self.rec();
        (self.kind() == EntryKind::File && r.target_len > 0).then(|| self.index.str_at(r.target_off, r.target_len))
    }

    /// What a hard link links to; `None` for other kinds.
    pub fn link(&self) -> Option<LinkTo<'a>> {
        let r = self.rec();
        if self.kind() != EntryKind::Hardlink {
            return None;
        }
        Some(if r.flags & F_LOWER != 0 {
            LinkTo::Lower(self.index.str_at(r.target_off, r.target_len))
        } else {
            LinkTo::Entry(r.link)
        })
    }

    /// Extended attributes, in header order: (name, value).
    pub fn xattrs(&self) -> Xattrs<'a> {
        let r = self.rec();
        let start = r.xattr_off as usize;
        let end = start.saturating_add(r.xattr_len as usize);
        Xattrs { rest: self.index.xattrs.get(start..end).unwrap_or(&[]) }
    }

    /// The directory holding this entry (`None` for the root and hidden entries).
    pub fn parent(&self) -> Option<EntryRef<'a>> {
        (self.id != 0 && !self.is_hidden()).then(|| EntryRef { index: self.index, id: self.rec().parent })
    }

    /// A directory's entries in this layer, sorted by name bytes, whiteouts included (their kind
    /// is [`EntryKind::Whiteout`]); empty for other kinds.
    pub fn children(&self) -> Children<'a> {
        let r = self.rec();
        Children { index: self.index, next: r.first_child, end: r.first_child.saturating_add(r.nchildren) }
    }

    /// The entry named `name` in this directory, whiteouts included.
    pub fn child(&self, name: &str) -> Option<EntryRef<'a>> {
        let r = self.rec();
        if r.nchildren == 0 {
            return None;
        }
        let (lo, hi) = (r.first_child as usize, r.first_child as usize + r.nchildren as usize);
        let slice = self.index.recs.get(lo..hi)?;
        let i = slice.binary_search_by(|c| self.index.names_at(c.name_off, c.name_len).cmp(name.as_bytes())).ok()?;
        Some(EntryRef { index: self.index, id: (lo + i) as u32 })
    }
}

/// The entries of one directory (see [`EntryRef::children`]).
pub struct Children<'a> {
    index: &'a LayerIndex,
    next: u32,
    end: u32,
}

impl<'a> Iterator for Children<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        if self.next >= self.end || self.next as usize >= self.index.recs.len() {
            return None;
        }
        let e = EntryRef { index: self.index, id: self.next };
        self.next += 1;
        Some(e)
    }
}

/// One entry's extended attributes (see [`EntryRef::xattrs`]).
pub struct Xattrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Xattrs<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<(&'a str, &'a [u8])> {
        let (name, value, rest) = split_xattr(self.rest)?;
        self.rest = rest;
        Some((name, value))
    }
}

/// One xattr in the arena: u16 name length, name, u32 value length, value (little endian).
fn split_xattr(b: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let nl = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(b.get(2..2 + nl)?).ok()?;
    let at = 2 + nl;
    let vl = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
    let value = b.get(at + 4..at + 4 + vl)?;
    Some((name, value, &b[at + 4 + vl..]))
}

impl LayerIndex {
    /// An index of `entries` as if they were a tar in this order: the same-layer rules apply
    /// (see the module note). Entries with `data_offset` 0 get invented positions (entry `i`:
    /// header at `1024 i`, data at `1024 i + 512`), and the decoded length is past the last.
    /// For tests (the merge's included); a layer's real index comes from [`build`]. Entries the
    /// rules refuse are left out, as from a tar; a bound passed panics (a test's own input).
    pub fn from_entries(entries: Vec<Entry>) -> LayerIndex {
        let mut b = Builder::new(IndexLimits::default());
        let n = entries.len() as u64;
        for (i, mut e) in entries.into_iter().enumerate() {
            if e.data_offset == 0 {
                e.header_offset = 1024 * i as u64;
                e.data_offset = 1024 * i as u64 + 512;
            }
            if let Err(err) = b.push(e) {
                panic!("LayerIndex::from_entries: {err}");
            }
        }
        match b.finish(1024 * n + 1024) {
            Ok(index) => index,
            Err(err) => panic!("LayerIndex::from_entries: {err}"),
        }
    }

    fn names_at(&self, off: u32, len: u16) -> &[u8] {
        let start = off as usize;
        self.names.get(start..start + len as usize).unwrap_or(&[])
    }

    fn str_at(&self, off: u32, len: u16) -> &str {
        std::str::from_utf8(self.names_at(off, len)).unwrap_or("")
    }

    /// The root directory (entry 0; always a directory, implied unless the tar had a `./`).
    pub fn root(&self) -> EntryRef<'_> {
        EntryRef { index: self, id: 0 }
    }

    /// Entry `id`, hidden ones included (for [`LinkTo::Entry`]).
    pub fn entry(&self, id: EntryId) -> Option<EntryRef<'_>> {
        ((id as usize) < self.recs.len()).then_some(EntryRef { index: self, id })
    }

    /// Records in this index, hidden ones and the root included.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// Whether the layer holds nothing but its (implied) root.
    pub fn is_empty(&self) -> bool {
        self.recs.len() <= 1
    }

    /// The entry at the normalised path `path` (`""` is the root), whiteouts included; `None`
    /// if this layer has no entry there (or an ancestor is not a directory here).
    pub fn get(&self, path: &str) -> Option<EntryRef<'_>> {
        let mut cur = self.root();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if cur.kind() != EntryKind::Dir {
                return None;
            }
            cur = cur.child(c)?;
        }
        Some(cur)
    }

    /// The entries of the directory at `path`, sorted by name, whiteouts included; empty if
    /// there is no directory there in this layer.
    pub fn children(&self, path: &str) -> Children<'_> {
        match self.get(path) {
            Some(e) if e.kind() == EntryKind::Dir => e.children(),
            _ => Children { index: self, next: 0, end: 0 },
        }
    }

    /// What this layer says about the normalised path `path` (see [`Says`]).
    pub fn says(&self, path: &str) -> Says<'_> {
        let mut cur = self.root();
        let mut parts = path.split('/').filter(|c| !c.is_empty()).peekable();
        if parts.peek().is_none() {
            return Says::Present(cur);
        }
        while let Some(c) = parts.next() {
            let last = parts.peek().is_none();
            match cur.child(c) {
                Some(e) if e.kind() == EntryKind::Whiteout => {
                    return if last { Says::WhitedOut } else { Says::Blocked };
                }
                Some(e) if last => return Says::Present(e),
                Some(e) if e.kind() == EntryKind::Dir => cur = e,
                Some(_) => return Says::Blocked,
                None if cur.is_opaque() => return Says::Blocked,
                None => return Says::Silent,
            }
        }
        Says::Silent
    }

    /// The hard links of this layer whose target is a lower path: (link entry, target path),
    /// sorted by target path.
    pub fn lower_links(&self) -> impl Iterator<Item = (EntryRef<'_>, &str)> + '_ {
        self.lower.iter().filter_map(move |&id| {
            let e = self.entry(id)?;
            match e.link()? {
                LinkTo::Lower(p) => Some((e, p)),
                LinkTo::Entry(_) => None,
            }
        })
    }

    /// The hard links of this layer to the lower path `path`.
    pub fn lower_links_to<'s>(&'s self, path: &'s str) -> impl Iterator<Item = EntryRef<'s>> + 's {
        let start = self.lower.partition_point(|&id| self.lower_target(id) < path);
        self.lower[start..]
            .iter()
            .take_while(move |&&id| self.lower_target(id) == path)
            .map(move |&id| EntryRef { index: self, id })
    }

    fn lower_target(&self, id: u32) -> &str {
        let r = &self.recs[id as usize];
        self.str_at(r.target_off, r.target_len)
    }

    /// The hard links of this layer to its entry `target` (links to links count: they resolve
    /// to the original).
    pub fn links_to(&self, target: EntryId) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        let start = self.same.partition_point(|&(t, _)| t < target);
        self.same[start..]
            .iter()
            .take_while(move |&&(t, _)| t == target)
            .map(move |&(_, id)| EntryRef { index: self, id })
    }

    /// Bytes of the decoded tar this index describes (trailing bytes after the EOA included).
    pub fn decoded_len(&self) -> u64 {
        self.decoded_len
    }

    /// Whether entry `id`'s headers in the decoded tar were found to agree with this index
    /// ([`LayerIndex::set_header_checked`]): then an open need not parse them again.
    pub fn header_checked(&self, id: EntryId) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        self.checked
            .0
            .get()
            .and_then(|b| b.get(word))
            .is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & (1 << bit) != 0)
    }

    /// Remember that entry `id`'s headers agree with this index (one bit per record, allocated
    /// at the first).
    pub fn set_header_checked(&self, id: EntryId) {
        let bits = self
            .checked
            .0
            .get_or_init(|| (0..self.recs.len().div_ceil(64)).map(|_| std::sync::atomic::AtomicU64::new(0)).collect());
        if let Some(w) = bits.get((id / 64) as usize) {
            w.fetch_or(1 << (id % 64), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Bytes this index takes in memory (records, arenas, link tables): what the index LRU
    /// charges for it.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<LayerIndex>()
            + self.recs.len() * std::mem::size_of::<Rec>()
            + self.names.len()
            + self.xattrs.len()
            + self.lower.len() * 4
            + self.same.len() * 8
            + self.recs.len().div_ceil(64) * 8
    }
}

/// Bytes one record takes in memory (for bounds and reports).
pub const RECORD_BYTES: usize = std::mem::size_of::<Rec>();

/// A builder-only flag: the name is whited out in this layer (if it is, or becomes, a
/// directory, it is opaque). Cleared when the index is frozen.
const B_WHITED: u8 = 16;
/// The flags an index keeps.
const INDEX_FLAGS: u8 = F_OPAQUE | F_IMPLIED | F_HIDDEN | F_LOWER;

/// Applies entries in tar order to a virtual tree (the same-layer rules of the module note),
/// then freezes it into a [`LayerIndex`]. One per layer; bounded by [`IndexLimits`].
///
/// # Memory
/// The builder holds what the index will, and little more: every node is already a [`Rec`]
/// (96 bytes; `parent` and `link` are node numbers until the freeze), its name and link target
/// are spans of one names arena, its xattrs of one xattrs arena (both become the index's as
/// they are, with what replaced entries left there, which the byte bound counted), and a
/// directory's children are found through one hash table of node numbers keyed by (parent,
/// name bytes), hashed with a random key (a hostile tar cannot aim at one bucket). The freeze
/// sorts node numbers, not nodes, numbers the tree breadth-first in a table of `u32`, and
/// moves the records into that order in place. So the peak is the records, the arenas and
/// about 16 bytes per entry (was about 370 bytes per entry with a node per entry holding
/// its owned strings and a map of its children).
pub struct Builder {
    limits: IndexLimits,
    /// Every node made, live or replaced (a replaced one may stay as a hidden link source).
    recs: Vec<Rec>,
    names: Vec<u8>,
    xattrs: Vec<u8>,
    /// Live children: node numbers, found by (parent, name).
    children: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
    /// AUFS `.wh..wh.plnk/` files by path: hidden hard-link sources.
    plnk: HashMap<String, u32>,
    /// Bytes of names, targets and xattrs kept so far (with records, the `max_bytes` bound).
    bytes: usize,
    /// Entries left out, by reason (one log line per layer at the end).
    left_out: BTreeMap<&'static str, usize>,
    /// The large-build slot, once `bytes` passed `alone_above`; held until frozen or dropped.
    large: Option<Permit<'static>>,
    /// Steps the layer may still walk through symlinks (`max_link_steps` at the start).
    link_budget: usize,
}

/// What a new node's link field and target span say while building.
enum NodeLink {
    /// An earlier node of this layer.
    Node(u32),
    /// A lower path, normalised.
    Lower(String),
}

fn key_hash(hasher: &std::hash::RandomState, parent: u32, name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one((parent, name))
}

fn span(arena: &[u8], off: u32, len: u16) -> &[u8] {
    let start = off as usize;
    arena.get(start..start + len as usize).unwrap_or(&[])
}

impl Builder {
    /// A builder for one layer with these bounds.
    pub fn new(mut limits: IndexLimits) -> Builder {
        // Spans are u16 (path bytes) and u32 (arena offsets) in a record; an arena holds at
        // most twice the bytes counted (implied directories' names come from counted paths).
        limits.max_path = limits.max_path.min(u16::MAX as usize);
        limits.max_component = limits.max_component.min(u16::MAX as usize);
        limits.max_bytes = limits.max_bytes.min(u32::MAX as usize / 4);
        let mut b = Builder {
            limits,
            recs: Vec::new(),
            names: Vec::new(),
            xattrs: Vec::new(),
            children: hashbrown::HashTable::new(),
            hasher: std::hash::RandomState::new(),
            plnk: HashMap::new(),
            bytes: 0,
            left_out: BTreeMap::new(),
            large: None,
            link_budget: limits.max_link_steps,
        };
        let root = b.new_node(0, "", &Entry::dir(""), EntryKind::Dir);
        b.recs[root as usize].flags = F_IMPLIED;
        b
    }

    /// Entries left out so far, by reason (each reason is a short phrase).
    pub fn left_out(&self) -> &BTreeMap<&'static str, usize> {
        &self.left_out
    }

    fn skip(&mut self, why: &'static str, name: &str) {
        let n = self.left_out.entry(why).or_insert(0);
        if *n == 0 {
            log::debug!("layer index: {name:?} left out: {why}");
        }
        *n += 1;
    }

    /// Apply one entry. Entries the rules refuse are left out and counted; an `Err` is a bound
    /// passed (`TooLarge`): the whole layer is refused.
    pub fn push(&mut self, e: Entry) -> Result<()> {
        self.apply(e)?;
        // Records made so far, implied directories and replaced ones included.
        if self.recs.len() > self.limits.max_entries.saturating_add(1) {
            return Err(Error::TooLarge(format!("layer index: more than {} entries", self.limits.max_entries)));
        }
        if self.large.is_none() && self.bytes > self.limits.alone_above {
            self.large = Some(take_large_build());
        }
        Ok(())
    }

    fn kind_of(&self, id: u32) -> EntryKind {
        EntryKind::from_code(self.recs[id as usize].kind).unwrap_or(EntryKind::File)
    }

    fn flags(&mut self, id: u32) -> &mut u8 {
        &mut self.recs[id as usize].flags
    }

    /// The live child `name` of node `dir`.
    fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let h = key_hash(&self.hasher, dir, name.as_bytes());
        let (recs, names) = (&self.recs, &self.names);
        self.children
            .find(h, |&id| {
                let r = &recs[id as usize];
                r.parent == dir && span(names, r.name_off, r.name_len) == name.as_bytes()
            })
            .copied()
    }

    /// Make `id` the live child of its parent under its name: the previous one, if any, is
    /// returned (it stays as a node, out of the tree).
    fn set_child(&mut self, id: u32) -> Option<u32> {
        let Builder { recs, names, children, hasher, .. } = self;
        let r = &recs[id as usize];
        let (dir, name) = (r.parent, span(names, r.name_off, r.name_len));
        let h = key_hash(hasher, dir, name);
        let eq = |&c: &u32| {
            let c = &recs[c as usize];
            c.parent == dir && span(names, c.name_off, c.name_len) == name
        };
        if let Some(slot) = children.find_mut(h, eq) {
            return Some(std::mem::replace(slot, id));
        }
        let rehash = |&c: &u32| {
            let c = &recs[c as usize];
            key_hash(hasher, c.parent, span(names, c.name_off, c.name_len))
        };
        children.insert_unique(h, id, rehash);
        None
    }

    /// `bytes` appended to the names arena: its span.
    fn intern(&mut self, bytes: &[u8]) -> (u32, u16) {
        let off = self.names.len() as u32;
        self.names.extend_from_slice(bytes);
        (off, bytes.len().min(u16::MAX as usize) as u16)
    }

    /// `e`'s attributes (not its name, kind or links) into record `id`, its xattrs appended.
    fn set_attrs(&mut self, id: u32, e: &Entry) {
        let xattr_off = self.xattrs.len() as u32;
        for (k, v) in &e.xattrs {
            self.xattrs.extend_from_slice(&(k.len() as u16).to_le_bytes());
            self.xattrs.extend_from_slice(k.as_bytes());
            self.xattrs.extend_from_slice(&(v.len() as u32).to_le_bytes());
            self.xattrs.extend_from_slice(v);
        }
        let xattr_len = self.xattrs.len() as u32 - xattr_off;
        let id32 = |v: u64| u32::try_from(v).unwrap_or(65534);
        let r = &mut self.recs[id as usize];
        r.size = if EntryKind::from_code(r.kind) == Some(EntryKind::File) { e.size } else { 0 };
        r.header_offset = e.header_offset;
        r.data_offset = e.data_offset;
        r.mtime = e.mtime;
        r.mtime_ns = e.mtime_ns;
        r.uid = id32(e.uid);
        r.gid = id32(e.gid);
        r.dev_major = e.dev_major;
        r.dev_minor = e.dev_minor;
        r.mode = (e.mode & 0o7777) as u16;
        r.xattr_off = xattr_off;
        r.xattr_len = xattr_len;
    }

    /// A new node of `kind` named `name` under `parent` (not yet its child), with `e`'s
    /// attributes; a symlink's target is `e`'s.
    fn new_node(&mut self, parent: u32, name: &str, e: &Entry, kind: EntryKind) -> u32 {
        let (name_off, name_len) = self.intern(name.as_bytes());
        let (target_off, target_len) =
            if kind == EntryKind::Symlink { self.intern(e.link_target.as_bytes()) } else { (name_off, 0) };
        let id = self.recs.len() as u32;
        self.recs.push(Rec {
            size: 0,
            header_offset: 0,
            data_offset: 0,
            mtime: 0,
            parent,
            first_child: 0,
            nchildren: 0,
            name_off,
            target_off,
            xattr_off: 0,
            xattr_len: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            dev_major: 0,
            dev_minor: 0,
            link: NONE,
            name_len,
            target_len,
            mode: 0,
            kind: kind.code(),
            flags: 0,
        });
        self.set_attrs(id, e);
        id
    }

    fn apply(&mut self, mut e: Entry) -> Result<()> {
        if e.name.len() > self.limits.max_path || e.link_target.len() > self.limits.max_path {
            self.skip("path too long", &e.name);
            return Ok(());
        }
        let name = std::mem::take(&mut e.name);
        let parts = normalise(&name);
        if parts.iter().any(|c| c.len() > self.limits.max_component) {
            self.skip("path component too long", &name);
            return Ok(());
        }
        self.bound_xattrs(&mut e, &name);
        self.bytes = self.bytes.saturating_add(name.len() + e.link_target.len() + RECORD_BYTES);
        self.bytes = self.bytes.saturating_add(e.xattrs.iter().map(|(n, v)| n.len() + v.len() + 6).sum::<usize>());
        if self.bytes > self.limits.max_bytes {
            return Err(Error::TooLarge(format!("layer index: more than {} bytes", self.limits.max_bytes)));
        }
        if e.kind == EntryKind::Whiteout {
            e.kind = EntryKind::File;
        }
        let Some((base, dirs)) = parts.split_last() else {
            // The root itself: a directory sets its attributes, anything else is refused.
            if e.kind == EntryKind::Dir {
                self.set_attrs(0, &e);
                *self.flags(0) &= !F_IMPLIED;
            } else {
                self.skip("a non-directory named as the root", &name);
            }
            return Ok(());
        };
        // AUFS metadata: `.wh..wh.plnk/<file>` kept hidden for links; the rest dropped.
        if let Some(i) = dirs.iter().position(|c| c.starts_with(AUFS_PREFIX)) {
            if i == 0 && dirs.len() == 1 && dirs[0] == AUFS_PLNK && e.kind == EntryKind::File {
                let id = self.new_node(0, base, &e, EntryKind::File);
                self.plnk.insert(format!("{AUFS_PLNK}/{base}"), id);
            } else {
                self.skip("AUFS metadata", &name);
            }
            return Ok(());
        }
        // The parent as a runtime's applier finds it: through this layer's symlinks.
        let Some(at) = self.locate(dirs, &name)? else {
            return Ok(());
        };
        if *base == OPAQUE {
            let dir = self.make_dirs(&at);
            *self.flags(dir) |= F_OPAQUE;
            return Ok(());
        }
        if base.starts_with(AUFS_PREFIX) {
            self.skip("AUFS metadata", &name);
            return Ok(());
        }
        if let Some(victim) = base.strip_prefix(WHITEOUT_PREFIX) {
            if victim.is_empty() || victim == "." || victim == ".." {
                self.skip("whiteout of an invalid name", &name);
                return Ok(());
            }
            let dir = self.make_dirs(&at);
            match self.child(dir, victim) {
                Some(id) => {
                    let dir_kind = self.kind_of(id) == EntryKind::Dir;
                    *self.flags(id) |= B_WHITED | if dir_kind { F_OPAQUE } else { 0 };
                }
                None => {
                    let id = self.new_node(dir, victim, &e, EntryKind::Whiteout);
                    *self.flags(id) |= B_WHITED;
                    self.set_child(id);
                }
            }
            return Ok(());
        }
        let link = if e.kind == EntryKind::Hardlink {
            match self.resolve_link(&at, base, &e.link_target)? {
                Ok(l) => Some(l),
                Err(why) => {
                    log::debug!("layer index: hard link {:?} -> {:?} left out: {why}", name, e.link_target);
                    *self.left_out.entry("hard link refused").or_insert(0) += 1;
                    return Ok(());
                }
            }
        } else {
            None
        };
        let dir = self.make_dirs(&at);
        if let (Some(old), EntryKind::Dir) = (self.child(dir, base), e.kind) {
            if self.kind_of(old) == EntryKind::Dir {
                // A directory over a directory: new attributes, same children and opacity.
                self.set_attrs(old, &e);
                *self.flags(old) &= !F_IMPLIED;
                return Ok(());
            }
        }
        let id = self.new_node(dir, base, &e, e.kind);
        if e.kind == EntryKind::File && at.linked {
            // Placed through a symlink: the name as written, for the check of its header.
            let (off, len) = self.intern(parts.join("/").as_bytes());
            let r = &mut self.recs[id as usize];
            (r.target_off, r.target_len) = (off, len);
        }
        match link {
            Some(NodeLink::Node(t)) => self.recs[id as usize].link = t,
            Some(NodeLink::Lower(p)) => {
                let (off, len) = self.intern(p.as_bytes());
                let r = &mut self.recs[id as usize];
                (r.target_off, r.target_len) = (off, len);
                r.flags |= F_LOWER;
            }
            None => {}
        }
        self.replace(id);
        if self.names.len() > u32::MAX as usize / 2 || self.xattrs.len() > u32::MAX as usize / 2 {
            return Err(Error::TooLarge("layer index: arenas past 2 GiB".into()));
        }
        Ok(())
    }

    fn bound_xattrs(&mut self, e: &mut Entry, name: &str) {
        let total: usize = e.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        let too_big = e.xattrs.iter().any(|(_, v)| v.len() > self.limits.max_xattr_value);
        if total > self.limits.max_xattr_bytes || too_big {
            log::debug!("layer index: xattrs of {name:?} dropped: {total} bytes");
            *self.left_out.entry("xattrs over the bound (dropped, entry kept)").or_insert(0) += 1;
            e.xattrs.clear();
        }
    }

    /// Put node `id` in the tree under its parent and name, replacing what is there (a
    /// replaced directory's subtree goes with it; a replaced link source stays, hidden). The
    /// name's whiteout carries over.
    fn replace(&mut self, id: u32) {
        if let Some(old) = self.set_child(id) {
            if self.recs[old as usize].flags & B_WHITED != 0 {
                *self.flags(id) |= B_WHITED;
            }
        }
        if self.recs[id as usize].flags & B_WHITED != 0 && self.kind_of(id) == EntryKind::Dir {
            *self.flags(id) |= F_OPAQUE;
        }
    }

    /// Where the directory path `dirs` leads through this layer's symlinks
    /// ([`rootpath::resolve`]); `None` if the entry `name` is refused there (left out and
    /// counted). The layer's link budget spent is `TooLarge`. A place reached through a link
    /// charges the layer's byte bound for what it adds that the name did not bring: the
    /// directories to make (their names come from link targets, which a link can give many
    /// entries) and the name as written, kept beside a file's path.
    fn locate(&mut self, dirs: &[&str], name: &str) -> Result<Option<Resolved>> {
        match self.walk(dirs)? {
            Ok(at) if at.linked => {
                let made: usize = at.rest.iter().map(|c| c.len() + RECORD_BYTES).sum();
                self.bytes = self.bytes.saturating_add(made + name.len());
                if self.bytes > self.limits.max_bytes {
                    return Err(Error::TooLarge(format!("layer index: more than {} bytes", self.limits.max_bytes)));
                }
                Ok(Some(at))
            }
            Ok(at) => Ok(Some(at)),
            Err(why) => {
                self.skip(why.why(), name);
                Ok(None)
            }
        }
    }

    /// [`rootpath::resolve`] of `dirs` with this layer's bounds and budget; the budget spent is
    /// the layer's error.
    fn walk(&mut self, dirs: &[&str]) -> Result<std::result::Result<Resolved, Refused>> {
        let bounds = Bounds {
            max_hops: self.limits.max_link_hops,
            max_path: self.limits.max_path,
            max_component: self.limits.max_component,
        };
        let mut budget = self.link_budget;
        let r = rootpath::resolve(&*self, dirs, bounds, &mut budget);
        self.link_budget = budget;
        match r {
            Err(Refused::Budget) => Err(Error::TooLarge(format!(
                "layer index: more than {} path components walked through symlinks",
                self.limits.max_link_steps
            ))),
            r => Ok(r),
        }
    }

    /// The directory `at` leads to, its missing directories made (implied), replacing what the
    /// walk found in their place (a whiteout, or a same-layer non-directory: the last entry
    /// wins).
    fn make_dirs(&mut self, at: &Resolved) -> u32 {
        let mut cur = at.node;
        for c in &at.rest {
            cur = match self.child(cur, c) {
                Some(id) if self.kind_of(id) == EntryKind::Dir => id,
                _ => {
                    let id = self.new_node(cur, c, &Entry::dir(c), EntryKind::Dir);
                    *self.flags(id) |= F_IMPLIED;
                    self.replace(id);
                    id
                }
            };
        }
        cur
    }

    /// A hard link's target: an earlier non-directory of this layer (links to links resolved),
    /// or a lower path. Its parent path is resolved through this layer's symlinks, as the link's
    /// own (`at`, with its name `base`); its last component is not followed (a link to a
    /// symlink is to the symlink). Refused: a parent the walk refuses, under a same-layer
    /// non-directory, missing (hidden by a whiteout or an opaque directory here), a directory,
    /// or the link itself. `Err` is the layer's link budget spent.
    fn resolve_link(
        &mut self,
        at: &Resolved,
        base: &str,
        target: &str,
    ) -> Result<std::result::Result<NodeLink, &'static str>> {
        if let Some(&id) = self.plnk.get(target.trim_start_matches('/')) {
            return Ok(Ok(NodeLink::Node(id)));
        }
        let parts = normalise(target);
        let Some((tbase, tdirs)) = parts.split_last() else {
            return Ok(Err("target is the root"));
        };
        let to = match self.walk(tdirs)? {
            Ok(to) => to,
            Err(why) => return Ok(Err(why.why())),
        };
        if to.node == at.node && to.rest == at.rest && *tbase == base {
            return Ok(Err("a link to itself"));
        }
        match to.replaces {
            Some(EntryKind::Whiteout) => return Ok(Err("target whited out")),
            Some(_) => return Ok(Err("target under a non-directory")),
            None => {}
        }
        // An opaque directory hides the lower layers below it, its subdirectories included.
        let hidden = self.up_from(to.node).any(|n| self.recs[n as usize].flags & F_OPAQUE != 0);
        let child = if to.rest.is_empty() { self.child(to.node, tbase) } else { None };
        Ok(match child {
            None if hidden => Err("target hidden by an opaque directory"),
            None => Ok(NodeLink::Lower(self.path_of(&to, tbase))),
            Some(id) => match self.kind_of(id) {
                EntryKind::Whiteout => Err("target whited out"),
                EntryKind::Dir => Err("target is a directory"),
                EntryKind::Hardlink => {
                    let r = &self.recs[id as usize];
                    if r.flags & F_LOWER != 0 {
                        Ok(NodeLink::Lower(
                            String::from_utf8_lossy(span(&self.names, r.target_off, r.target_len)).into_owned(),
                        ))
                    } else if r.link != NONE {
                        Ok(NodeLink::Node(r.link))
                    } else {
                        Err("target is a broken link")
                    }
                }
                _ => Ok(NodeLink::Node(id)),
            },
        })
    }

    /// Node `node` and the directories above it, up to the root included.
    fn up_from(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = Some(node);
        std::iter::from_fn(move || {
            let n = next?;
            next = (n != 0).then(|| self.recs[n as usize].parent);
            Some(n)
        })
    }

    /// The path `at` and then `base` name: its node's, the names still to make, `base`.
    fn path_of(&self, at: &Resolved, base: &str) -> String {
        let mut parts: Vec<&str> = self
            .up_from(at.node)
            .filter(|&n| n != 0)
            .map(|n| {
                let r = &self.recs[n as usize];
                std::str::from_utf8(span(&self.names, r.name_off, r.name_len)).unwrap_or("")
            })
            .collect();
        parts.reverse();
        parts.extend(at.rest.iter().map(String::as_str));
        parts.push(base);
        parts.join("/")
    }

    /// Freeze the tree into an index of a decoded tar of `decoded_len` bytes.
    pub fn finish(self, decoded_len: u64) -> Result<LayerIndex> {
        if !self.left_out.is_empty() {
            log::info!("layer index: entries left out: {:?}", self.left_out);
        }
        // `large` (the large-build slot, if taken) is held until the index is frozen.
        let Builder { limits, mut recs, names, xattrs, children, large, .. } = self;
        // Every live child, sorted by (parent, name bytes): each directory's run, in order.
        let mut kids: Vec<u32> = children.into_iter().collect();
        kids.sort_unstable_by(|&a, &b| {
            let (ra, rb) = (&recs[a as usize], &recs[b as usize]);
            ra.parent
                .cmp(&rb.parent)
                .then_with(|| span(&names, ra.name_off, ra.name_len).cmp(span(&names, rb.name_off, rb.name_len)))
        });
        // Breadth-first numbers: `order[pos]` is the node at `pos`, `ids[node]` its position.
        let mut order: Vec<u32> = vec![0];
        let mut ids: Vec<u32> = vec![NONE; recs.len()];
        ids[0] = 0;
        let mut i = 0;
        while i < order.len() {
            let node = order[i];
            let start = kids.partition_point(|&k| recs[k as usize].parent < node);
            let first = order.len() as u32;
            for &child in kids[start..].iter().take_while(|&&k| recs[k as usize].parent == node) {
                ids[child as usize] = order.len() as u32;
                order.push(child);
            }
            let r = &mut recs[node as usize];
            (r.first_child, r.nchildren) = (first, order.len() as u32 - first);
            i += 1;
        }
        drop(kids);
        let visible = order.len() as u32;
        // Hidden sources that a surviving link names.
        let mut wanted: Vec<u32> = order
            .iter()
            .map(|&n| &recs[n as usize])
            .filter(|r| r.kind == EntryKind::Hardlink.code() && r.flags & F_LOWER == 0 && r.link != NONE)
            .map(|r| r.link)
            .filter(|&t| ids[t as usize] == NONE)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for t in wanted {
            ids[t as usize] = order.len() as u32;
            order.push(t);
        }
        if order.len() > limits.max_entries.saturating_add(1) {
            return Err(Error::TooLarge(format!("layer index: more than {} entries", limits.max_entries)));
        }
        // Numbers and flags as the index has them, before the records move.
        let (mut lower, mut same) = (Vec::new(), Vec::new());
        for (pos, &node) in order.iter().enumerate() {
            let pos = pos as u32;
            let hidden = pos >= visible;
            let parent = recs[node as usize].parent;
            // Under an opaque directory of this layer, the lower layers' same directory is
            // hidden too: this layer's own subdirectories are opaque (the parent is done first).
            let inherit = !hidden
                && pos > 0
                && recs[node as usize].kind == EntryKind::Dir.code()
                && recs[parent as usize].flags & F_OPAQUE != 0;
            let r = &mut recs[node as usize];
            r.flags &= INDEX_FLAGS;
            if hidden {
                r.flags |= F_HIDDEN;
                (r.parent, r.first_child, r.nchildren) = (0, 0, 0);
            } else {
                r.parent = if pos == 0 { 0 } else { ids[parent as usize] };
                if inherit {
                    r.flags |= F_OPAQUE;
                }
            }
            if r.kind == EntryKind::Hardlink.code() {
                if r.flags & F_LOWER != 0 {
                    lower.push(pos);
                } else if r.link != NONE {
                    r.link = ids[r.link as usize];
                    same.push((r.link, pos));
                }
            } else {
                r.link = NONE;
            }
        }
        // Replaced nodes go after the kept ones; then every record moves to its place.
        let kept = order.len();
        drop(order);
        for (next, id) in (kept as u32..).zip(ids.iter_mut().filter(|id| **id == NONE)) {
            *id = next;
        }
        for i in 0..recs.len() {
            while ids[i] as usize != i {
                let j = ids[i] as usize;
                recs.swap(i, j);
                ids.swap(i, j);
            }
        }
        drop(ids);
        recs.truncate(kept);
        recs.shrink_to_fit();
        let mut index = LayerIndex {
            recs,
            names,
            xattrs,
            lower: Vec::new(),
            same,
            decoded_len,
            visible,
            checked: HeaderChecks::default(),
        };
        index.names.shrink_to_fit();
        index.xattrs.shrink_to_fit();
        lower.sort_by(|&a, &b| index.lower_target(a).cmp(index.lower_target(b)));
        index.lower = lower;
        index.same.sort_unstable();
        drop(large);
        if index.weight() > limits.max_bytes {
            return Err(Error::TooLarge(format!("layer index: more than {} bytes", limits.max_bytes)));
        }
        Ok(index)
    }
}

/// The builder's live tree, as [`rootpath::resolve`] walks it.
impl rootpath::Tree for Builder {
    fn child(&self, dir: u32, name: &str) -> Option<u32> {
        Builder::child(self, dir, name)
    }

    fn kind(&self, node: u32) -> EntryKind {
        self.kind_of(node)
    }

    fn target(&self, node: u32) -> &str {
        let r = &self.recs[node as usize];
        std::str::from_utf8(span(&self.names, r.target_off, r.target_len)).unwrap_or("")
    }

    fn parent(&self, node: u32) -> u32 {
        self.recs[node as usize].parent
    }

    fn name_len(&self, node: u32) -> usize {
        self.recs[node as usize].name_len as usize
    }
}

/// Parse every entry of a tar and apply it to a new [`Builder`], up to the end of the archive.
/// The caller then drains the stream's trailing bytes (`parser.into_inner()`, through the
/// diff_id hash) and calls [`Builder::finish`] with the decoded length. A parse error or a bound
/// passed refuses the whole layer; entries the rules refuse are only left out and counted.
pub fn build<R: Read>(parser: &mut Parser<R>, limits: IndexLimits) -> Result<Builder> {
    let mut b = Builder::new(limits);
    while let Some(raw) = parser.next_entry()? {
        if let Some(e) = b.convert(raw) {
            b.push(e)?;
        }
    }
    Ok(b)
}

/// Index a whole decoded tar read from `r`, trailing bytes included in the decoded length.
pub fn build_all<R: Read>(r: R, tar_limits: TarLimits, limits: IndexLimits) -> Result<LayerIndex> {
    let mut parser = Parser::with_limits(r, tar_limits);
    let b = build(&mut parser, limits)?;
    let end = parser.position();
    let rest = std::io::copy(&mut parser.into_inner(), &mut std::io::sink())?;
    b.finish(end + rest)
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

impl Builder {
    /// A parsed tar entry as the builder's input, or `None` (left out and counted): names or
    /// link targets that are not UTF-8, sparse entries, unknown typeflags. Whiteouts are
    /// whiteouts whatever their typeflag.
    fn convert(&mut self, raw: RawEntry) -> Option<Entry> {
        let lossy = String::from_utf8_lossy(&raw.name).into_owned();
        let (Ok(name), Ok(link_target)) = (String::from_utf8(raw.name), String::from_utf8(raw.linkname)) else {
            self.skip("name not UTF-8", &lossy);
            return None;
        };
        // No file name holds a NUL: the kernel would cut it there, and C readers would see
        // another name than the one listed.
        if name.contains('\0') || link_target.contains('\0') {
            self.skip("name with a NUL byte", &lossy);
            return None;
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
                RawKind::Sparse => {
                    self.skip("sparse", &name);
                    return None;
                }
                RawKind::Other(_) => {
                    self.skip("unknown typeflag", &name);
                    return None;
                }
            }
        };
        let mut xattrs = raw.xattrs;
        xattrs.retain(|(n, _)| kept_xattr(n));
        Some(Entry {
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

/// The first bytes of an index file.
pub const MAGIC: &[u8; 8] = b"RGFSIDX1";
/// The version of the index file format [`encode`] writes and [`decode`] reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes one record takes on disk.
const REC_DISK: usize = 92;
/// Bytes of the sha256 trailer.
const TRAILER: usize = 32;

/// The index as a file: `MAGIC`, version (u32), the diff_id (u16 length, `alg:hex`), decoded
/// length (u64), counts (records, visible records, names, xattrs, lower links, same-layer
/// links: u32 each), the records (92 bytes each), the two arenas, the two link tables, then the
/// sha256 of everything before it. Little endian throughout.
pub fn encode(index: &LayerIndex, diff_id: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(index.weight() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let d = diff_id.to_string();
    out.extend_from_slice(&(d.len() as u16).to_le_bytes());
    out.extend_from_slice(d.as_bytes());
    out.extend_from_slice(&index.decoded_len.to_le_bytes());
    for n in [
        index.recs.len(),
        index.visible as usize,
        index.names.len(),
        index.xattrs.len(),
        index.lower.len(),
        index.same.len(),
    ] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for r in &index.recs {
        for v in [r.size, r.header_offset, r.data_offset, r.mtime as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            r.parent,
            r.first_child,
            r.nchildren,
            r.name_off,
            r.target_off,
            r.xattr_off,
            r.xattr_len,
            r.uid,
            r.gid,
            r.mtime_ns,
            r.dev_major,
            r.dev_minor,
            r.link,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [r.name_len, r.target_len, r.mode] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(r.kind);
        out.push(r.flags);
    }
    out.extend_from_slice(&index.names);
    out.extend_from_slice(&index.xattrs);
    for id in &index.lower {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for (t, l) in &index.same {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
    }
    let sum = Digest::of(Algorithm::Sha256, &out);
    out.extend((0..sum.hex().len()).step_by(2).filter_map(|i| u8::from_str_radix(&sum.hex()[i..i + 2], 16).ok()));
    out
}

/// A cursor over an index file being decoded.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| bad_index("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| bad_index("truncated"))?))
    }
}

fn bad_index(why: impl std::fmt::Display) -> Error {
    Error::malformed("layer index file", why)
}

/// An index file back: the diff_id it was written for and the index. Refused (`Malformed`):
/// a wrong magic, another version, a trailer that does not match, or any count, span or id
/// out of bounds (so that no accessor can panic on what a file says).
pub fn decode(bytes: &[u8]) -> Result<(Digest, LayerIndex)> {
    if bytes.len() < MAGIC.len() + 4 + TRAILER || &bytes[..8] != MAGIC {
        return Err(bad_index("not an index file"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let sum = Digest::of(Algorithm::Sha256, body);
    let hex: String = trailer.iter().map(|b| format!("{b:02x}")).collect();
    if sum.hex() != hex {
        return Err(bad_index("checksum mismatch"));
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(bad_index(format!("format version {version}, not {FORMAT_VERSION}")));
    }
    let dlen = r.u16()? as usize;
    let diff_id: Digest =
        std::str::from_utf8(r.take(dlen)?).ok().and_then(|s| s.parse().ok()).ok_or_else(|| bad_index("bad diff_id"))?;
    let decoded_len = r.u64()?;
    let mut counts = [0usize; 6];
    for c in &mut counts {
        *c = r.u32()? as usize;
    }
    let [nrecs, visible, names_len, xattrs_len, nlower, nsame] = counts;
    if nrecs == 0 || visible == 0 || visible > nrecs || nrecs.saturating_mul(REC_DISK) > body.len() {
        return Err(bad_index("bad record counts"));
    }
    let mut recs = Vec::with_capacity(nrecs);
    for _ in 0..nrecs {
        let (size, header_offset, data_offset, mtime) = (r.u64()?, r.u64()?, r.u64()?, r.u64()? as i64);
        let mut w = [0u32; 13];
        for v in &mut w {
            *v = r.u32()?;
        }
        let (name_len, target_len, mode) = (r.u16()?, r.u16()?, r.u16()?);
        let (kind, flags) = (r.u8()?, r.u8()?);
        recs.push(Rec {
            size,
            header_offset,
            data_offset,
            mtime,
            parent: w[0],
            first_child: w[1],
            nchildren: w[2],
            name_off: w[3],
            target_off: w[4],
            xattr_off: w[5],
            xattr_len: w[6],
            uid: w[7],
            gid: w[8],
            mtime_ns: w[9],
            dev_major: w[10],
            dev_minor: w[11],
            link: w[12],
            name_len,
            target_len,
            mode,
            kind,
            flags,
        });
    }
    let names = r.take(names_len)?.to_vec();
    let xattrs = r.take(xattrs_len)?.to_vec();
    let mut lower = Vec::with_capacity(nlower.min(nrecs));
    for _ in 0..nlower {
        lower.push(r.u32()?);
    }
    let mut same = Vec::with_capacity(nsame.min(nrecs));
    for _ in 0..nsame {
        same.push((r.u32()?, r.u32()?));
    }
    if r.at != body.len() {
        return Err(bad_index("trailing bytes"));
    }
    let n = nrecs as u64;
    let within = |off: u32, len: u64, arena: usize| u64::from(off) + len <= arena as u64;
    for (i, rec) in recs.iter().enumerate() {
        let kind = EntryKind::from_code(rec.kind).ok_or_else(|| bad_index("bad kind"))?;
        let ok = u64::from(rec.parent) < n
            && u64::from(rec.first_child) + u64::from(rec.nchildren) <= n
            && (rec.nchildren == 0 || kind == EntryKind::Dir)
            && within(rec.name_off, u64::from(rec.name_len), names_len)
            && within(rec.target_off, u64::from(rec.target_len), names_len)
            && within(rec.xattr_off, u64::from(rec.xattr_len), xattrs_len)
            && (rec.link == NONE || u64::from(rec.link) < n)
            && (i != 0 || kind == EntryKind::Dir)
            // Breadth-first: a parent comes before its children, children after their parent and
            // within the visible records, so that walks up and down always end.
            && (i == 0 || (rec.parent as usize) < i)
            && (rec.nchildren == 0 || (rec.first_child as usize > i && (rec.first_child + rec.nchildren) as usize <= visible));
        if !ok {
            return Err(bad_index(format!("record {i} out of bounds")));
        }
        let children = rec.first_child as usize..(rec.first_child + rec.nchildren) as usize;
        if recs[children].iter().any(|c| c.parent as usize != i) {
            return Err(bad_index(format!("record {i}'s children name another parent")));
        }
    }
    if lower.iter().chain(same.iter().flat_map(|(a, b)| [a, b])).any(|&id| u64::from(id) >= n) {
        return Err(bad_index("link table out of bounds"));
    }
    let index = LayerIndex {
        recs,
        names,
        xattrs,
        lower,
        same,
        decoded_len,
        visible: visible as u32,
        checked: HeaderChecks::default(),
    };
    Ok((diff_id, index))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opaque_directory_hides_lower_children_but_not_itself() {
        let layer = LayerIndex::from_entries(vec![Entry::dir("etc"), Entry::opaque("etc"), Entry::file("etc/motd", 3)]);
        assert!(matches!(layer.says("etc"), Says::Present(e) if e.is_opaque() && e.kind() == EntryKind::Dir));
        assert!(matches!(layer.says("etc/motd"), Says::Present(_)));
        assert!(matches!(layer.says("etc/passwd"), Says::Blocked));
        assert!(matches!(layer.says("usr/bin"), Says::Silent));
    }

    #[test]
    fn the_query_api_answers_children_links_and_weight() {
        let layer = LayerIndex::from_entries(vec![
            Entry::file("usr/bin/b", 1),
            Entry::file("usr/bin/a", 2).with_mode(0o4755).with_owner(7, 8).with_xattr("user.k", b"v"),
            Entry::hardlink("usr/bin/c", "usr/bin/a"),
            Entry::hardlink("usr/bin/d", "usr/lib/x"),
            Entry::whiteout("usr/bin/e"),
            Entry::symlink("usr/s", "bin/a"),
        ]);
        let names: Vec<_> = layer.children("usr/bin").map(|e| (e.name(), e.kind())).collect();
        assert_eq!(
            names,
            [
                ("a", EntryKind::File),
                ("b", EntryKind::File),
                ("c", EntryKind::Hardlink),
                ("d", EntryKind::Hardlink),
                ("e", EntryKind::Whiteout)
            ]
        );
        let a = layer.get("usr/bin/a").expect("a");
        assert_eq!((a.mode(), a.uid(), a.gid(), a.size(), a.path()), (0o4755, 7, 8, 2, "usr/bin/a".to_string()));
        assert_eq!(a.xattrs().collect::<Vec<_>>(), [("user.k", &b"v"[..])]);
        assert!(layer.get("usr").expect("usr").is_implied());
        assert_eq!(layer.get("usr/bin/c").and_then(|c| c.link()), Some(LinkTo::Entry(a.id())));
        assert_eq!(layer.links_to(a.id()).map(|l| l.name()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(layer.lower_links().map(|(l, p)| (l.name(), p)).collect::<Vec<_>>(), [("d", "usr/lib/x")]);
        assert_eq!(layer.lower_links_to("usr/lib/x").count(), 1);
        assert!(matches!(layer.says("usr/bin/e"), Says::WhitedOut));
        assert_eq!(layer.get("usr/s").and_then(|s| s.symlink_target()), Some("bin/a"));
        assert_eq!(layer.decoded_len(), 7 * 1024);
        assert!(layer.weight() >= 8 * RECORD_BYTES);
    }

    use crate::views::tar::Parser;
    use crate::views::tar::testtar::{checksum, header, pax};
    use std::io::Cursor;

    fn eoa() -> Vec<u8> {
        vec![0u8; 1024]
    }

    /// The index of a tar, and what was left out.
    fn from_tar(bytes: &[u8], limits: IndexLimits) -> Result<(LayerIndex, BTreeMap<&'static str, usize>)> {
        let mut p = Parser::new(Cursor::new(bytes));
        let b = build(&mut p, limits)?;
        let left = b.left_out().clone();
        Ok((b.finish(bytes.len() as u64)?, left))
    }

    fn kinds(layer: &LayerIndex, dir: &str) -> Vec<(String, EntryKind)> {
        layer.children(dir).map(|e| (e.name().to_string(), e.kind())).collect()
    }

    fn present(layer: &LayerIndex, path: &str) -> bool {
        matches!(layer.says(path), Says::Present(_))
    }

    #[test]
    fn duplicates_the_last_wins() {
        let layer = LayerIndex::from_entries(vec![
            Entry::file("a", 1),
            Entry::file("a", 2),
            Entry::dir("d").with_mode(0o700),
            Entry::file("d/x", 1),
            Entry::dir("d").with_mode(0o750).with_owner(5, 6),
            Entry::dir("e"),
            Entry::file("e/y", 1),
            Entry::file("e", 3),
            Entry::symlink("s", "a"),
            Entry::dir("s"),
        ]);
        assert_eq!(layer.get("a").map(|a| a.size()), Some(2));
        let d = layer.get("d").expect("d");
        assert_eq!((d.mode(), d.uid(), d.gid(), d.is_implied()), (0o750, 5, 6, false));
        assert!(present(&layer, "d/x"), "a directory over a directory keeps its children");
        assert_eq!(layer.get("e").map(|e| (e.kind(), e.size())), Some((EntryKind::File, 3)));
        assert!(matches!(layer.says("e/y"), Says::Blocked), "a replaced directory's children go with it");
        assert_eq!(layer.get("s").map(|s| s.kind()), Some(EntryKind::Dir));
        assert_eq!(kinds(&layer, "").len(), 4);
    }

    #[test]
    fn dot_slash_and_absolute_names() {
        let layer = LayerIndex::from_entries(vec![
            Entry::dir("./").with_mode(0o700).with_mtime(9),
            Entry::file("./a", 1),
            Entry::file("/b", 1),
            Entry::file("c/./d", 1),
            Entry::file("e//f/", 1),
            Entry::file("/", 1),
            Entry::file(".", 1),
        ]);
        let names: Vec<String> =
            ["a", "b", "c/d", "e/f"].iter().filter(|p| present(&layer, p)).map(|p| p.to_string()).collect();
        assert_eq!(names, ["a", "b", "c/d", "e/f"]);
        let root = layer.root();
        assert_eq!((root.kind(), root.mode(), root.mtime().0, root.is_implied()), (EntryKind::Dir, 0o700, 9, false));
        assert_eq!(kinds(&layer, "").len(), 4, "non-directories naming the root are refused");
    }

    #[test]
    fn dotdot_is_clamped_at_the_root() {
        let layer = LayerIndex::from_entries(vec![
            Entry::file("../../etc/passwd", 1),
            Entry::file("a/../../b", 1),
            Entry::file("x/y/../z", 1),
            Entry::symlink("../up", "../../../target"),
        ]);
        for p in ["etc/passwd", "b", "x/z", "up"] {
            assert!(present(&layer, p), "{p}");
        }
        assert!(layer.get("x/y").is_none());
        assert_eq!(
            layer.get("up").and_then(|e| e.symlink_target()),
            Some("../../../target"),
            "targets stay as written"
        );
        assert_eq!(kinds(&layer, "").iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "etc", "up", "x"]);
    }

    #[test]
    fn implied_parents_have_no_attributes() {
        let layer =
            LayerIndex::from_entries(vec![Entry::file("a/b/c", 1).with_owner(3, 3), Entry::dir("a").with_mode(0o711)]);
        let b = layer.get("a/b").expect("a/b");
        assert!(b.is_implied() && b.kind() == EntryKind::Dir);
        assert_eq!((b.uid(), b.mtime(), b.header_offset(), b.data_offset()), (0, (0, 0), 0, 0));
        let a = layer.get("a").expect("a");
        assert!(!a.is_implied() && a.mode() == 0o711, "an explicit entry later makes it explicit");
        assert!(layer.root().is_implied());
    }

    #[test]
    fn opaque_marker_before_and_after_siblings_is_the_same() {
        let first = LayerIndex::from_entries(vec![Entry::opaque("d"), Entry::file("d/x", 1), Entry::dir("d")]);
        let last = LayerIndex::from_entries(vec![Entry::dir("d"), Entry::file("d/x", 1), Entry::opaque("d")]);
        for layer in [&first, &last] {
            assert!(layer.get("d").is_some_and(|d| d.is_opaque() && !d.is_implied()));
            assert_eq!(kinds(layer, "d"), [("x".to_string(), EntryKind::File)], "the marker is not an entry");
            assert!(matches!(layer.says("d/lower"), Says::Blocked));
        }
        let root = LayerIndex::from_entries(vec![Entry::opaque(""), Entry::file("a", 1)]);
        assert!(root.root().is_opaque());
        assert!(matches!(root.says("etc"), Says::Blocked));
    }

    #[test]
    fn whiteout_and_recreate_in_one_layer_is_opaque() {
        for order in [
            vec![Entry::whiteout("d"), Entry::dir("d"), Entry::file("d/x", 1)],
            vec![Entry::dir("d"), Entry::file("d/x", 1), Entry::whiteout("d")],
            vec![Entry::whiteout("d"), Entry::file("d/x", 1)],
        ] {
            let layer = LayerIndex::from_entries(order);
            let d = layer.get("d").expect("d");
            assert!(d.kind() == EntryKind::Dir && d.is_opaque(), "{d:?}");
            assert!(present(&layer, "d/x"));
            assert!(matches!(layer.says("d/old"), Says::Blocked));
        }
        for order in [vec![Entry::whiteout("f"), Entry::file("f", 1)], vec![Entry::file("f", 1), Entry::whiteout("f")]]
        {
            let layer = LayerIndex::from_entries(order);
            assert_eq!(layer.get("f").map(|f| f.kind()), Some(EntryKind::File));
        }
    }

    #[test]
    fn whiteouts_apply_only_below() {
        let layer = LayerIndex::from_entries(vec![
            Entry::file("a", 1),
            Entry::whiteout("a"),
            Entry::whiteout("b"),
            Entry::whiteout("c/d"),
        ]);
        assert!(present(&layer, "a"), "present in the layer that whites it out");
        assert!(matches!(layer.says("b"), Says::WhitedOut));
        assert!(matches!(layer.says("b/x"), Says::Blocked));
        assert!(matches!(layer.says("c/d"), Says::WhitedOut));
        assert!(matches!(layer.says("c/e"), Says::Silent), "c is only implied: lower c/e shows");
        assert!(layer.get("c").is_some_and(|c| c.is_implied() && !c.is_opaque()));
    }

    #[test]
    fn wh_lookalikes_are_ordinary() {
        let names = [".wh", ".whx", ".wh_a", "a.wh.b", "d/.wh"];
        let mut entries: Vec<Entry> = names.iter().map(|n| Entry::file(n, 1)).collect();
        entries.extend([Entry::file(".wh.", 1), Entry::file("d/.wh..", 1), Entry::file("d/.wh...", 1)]);
        let layer = LayerIndex::from_entries(entries);
        for n in names {
            assert_eq!(layer.get(n).map(|e| e.kind()), Some(EntryKind::File), "{n}");
        }
        assert_eq!(
            kinds(&layer, "d"),
            [(".wh".to_string(), EntryKind::File)],
            "whiteouts of '', '.', '..' are ignored"
        );
        assert!(matches!(layer.says("d"), Says::Present(d) if !d.is_opaque()));
    }

    #[test]
    fn aufs_metadata_is_dropped_plnk_files_stay_link_sources() {
        let layer = LayerIndex::from_entries(vec![
            Entry::dir(".wh..wh.plnk"),
            Entry::file(".wh..wh.plnk/1234.56", 7),
            Entry::dir(".wh..wh.orph"),
            Entry::file(".wh..wh.orph/x", 1),
            Entry::file(".wh..wh.aufs", 1),
            Entry::file("d/.wh..wh.other", 1),
            Entry::hardlink("bin/x", ".wh..wh.plnk/1234.56"),
            Entry::hardlink("bin/y", "/.wh..wh.plnk/1234.56"),
        ]);
        assert_eq!(kinds(&layer, ""), [("bin".to_string(), EntryKind::Dir)], "metadata implies no parent either");
        let Some(LinkTo::Entry(id)) = layer.get("bin/x").and_then(|x| x.link()) else {
            panic!("bin/x links the plnk file")
        };
        let src = layer.entry(id).expect("source");
        assert!(src.is_hidden() && src.size() == 7 && src.kind() == EntryKind::File);
        assert_eq!(layer.get("bin/y").and_then(|y| y.link()), Some(LinkTo::Entry(id)));
        assert_eq!(layer.links_to(id).count(), 2);
        assert!(layer.get(".wh..wh.plnk").is_none() && layer.get(".wh..wh.plnk/1234.56").is_none());
    }

    #[test]
    fn a_whiteout_stored_as_a_hardlink_is_a_whiteout() {
        let mut link = header(b"dir/.wh.gone", b'1', 0, false);
        link[157..163].copy_from_slice(b"target");
        checksum(&mut link);
        let fifo = header(b".wh.fifo", b'6', 0, false);
        let bytes = [&link[..], &fifo, &eoa()].concat();
        let (layer, _) = from_tar(&bytes, IndexLimits::default()).expect("index");
        assert!(matches!(layer.says("dir/gone"), Says::WhitedOut));
        assert!(matches!(layer.says("fifo"), Says::WhitedOut));
        assert!(layer.lower_links().next().is_none());
    }

    #[test]
    fn hardlink_to_an_earlier_entry_and_to_a_lower_path() {
        let layer = LayerIndex::from_entries(vec![
            Entry::file("a", 5),
            Entry::hardlink("b", "a"),
            Entry::hardlink("c", "./b"),
            Entry::hardlink("d", "/usr/lib/x"),
            Entry::hardlink("e", "later"),
            Entry::file("later", 1),
            Entry::file("a", 9),
        ]);
        let Some(LinkTo::Entry(orig)) = layer.get("b").and_then(|b| b.link()) else { panic!("b links a") };
        assert_eq!(
            layer.get("c").and_then(|c| c.link()),
            Some(LinkTo::Entry(orig)),
            "a link to a link is the original"
        );
        let old = layer.entry(orig).expect("original");
        assert!(old.is_hidden() && old.size() == 5, "the replaced original stays as the inode");
        assert_eq!(layer.get("a").map(|a| (a.size(), a.is_hidden())), Some((9, false)));
        let mut names: Vec<_> = layer.links_to(orig).map(|l| l.name()).collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(layer.get("d").and_then(|d| d.link()), Some(LinkTo::Lower("usr/lib/x")));
        assert_eq!(layer.get("e").and_then(|e| e.link()), Some(LinkTo::Lower("later")), "not earlier: a lower path");
        assert_eq!(
            layer.lower_links().map(|(l, p)| (l.name(), p)).collect::<Vec<_>>(),
            [("e", "later"), ("d", "usr/lib/x")]
        );
    }

    #[test]
    fn hard_links_no_applier_could_make_are_refused() {
        let (layer, left) = {
            let mut b = Builder::new(IndexLimits::default());
            for e in [
                Entry::dir("real"),
                Entry::file("real/f", 1),
                Entry::hardlink("to-dir", "real"),
                Entry::hardlink("self", "self"),
                Entry::whiteout("gone"),
                Entry::hardlink("to-whiteout", "gone"),
                Entry::opaque("o"),
                Entry::hardlink("under-opaque", "o/lower"),
                Entry::hardlink("under-file", "real/f/x"),
                Entry::hardlink("ok", "real/f"),
            ] {
                b.push(e).expect("push");
            }
            let left = b.left_out().clone();
            (b.finish(0).expect("finish"), left)
        };
        for refused in ["to-dir", "self", "to-whiteout", "under-opaque", "under-file"] {
            assert!(layer.get(refused).is_none(), "{refused}");
        }
        assert!(matches!(layer.get("ok").and_then(|e| e.link()), Some(LinkTo::Entry(_))));
        assert_eq!(left.get("hard link refused"), Some(&5));
    }

    #[test]
    fn entry_under_a_same_layer_file_replaces_it() {
        let layer = LayerIndex::from_entries(vec![Entry::file("f", 1), Entry::file("f/x", 2)]);
        let e = layer.get("f").expect("f");
        assert!(e.kind() == EntryKind::Dir && e.is_implied() && !e.is_opaque());
        assert_eq!(layer.get("f/x").map(|x| x.size()), Some(2));
        assert!(present(&layer, "f/x"));
    }

    #[test]
    fn non_utf8_and_overlong_names_are_left_out_and_counted() {
        let long_component = vec![b'c'; 256];
        let long_path = [b"p/".repeat(2048), b"x".to_vec()].concat();
        let ok_component = vec![b'c'; 255];
        let bytes = [
            header(b"bad\xff", b'0', 0, false).to_vec(),
            pax(b'x', &[("path", &long_component)]),
            header(b"ignored", b'0', 0, false).to_vec(),
            pax(b'x', &[("path", &long_path)]),
            header(b"ignored", b'0', 0, false).to_vec(),
            pax(b'x', &[("path", &ok_component)]),
            header(b"ignored", b'0', 0, false).to_vec(),
            {
                let mut h = header(b"link", b'2', 0, false);
                h[157..160].copy_from_slice(b"\xfe\xfe\xfe");
                checksum(&mut h);
                h.to_vec()
            },
            header(b"good", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (layer, left) = from_tar(&bytes, IndexLimits::default()).expect("index");
        assert_eq!(kinds(&layer, "").iter().map(|(n, _)| n.len()).collect::<Vec<_>>(), [255, 4]);
        assert_eq!(left.get("name not UTF-8"), Some(&2), "{left:?}");
        assert_eq!(left.get("path component too long"), Some(&1), "{left:?}");
        assert_eq!(left.get("path too long"), Some(&1), "{left:?}");
    }

    #[test]
    fn entries_past_the_bound_refuse_the_layer() {
        let small = IndexLimits { max_entries: 3, ..IndexLimits::default() };
        let tar = |n: usize| {
            let mut v: Vec<u8> = (0..n).flat_map(|i| header(format!("f{i}").as_bytes(), b'0', 0, false)).collect();
            v.extend(eoa());
            v
        };
        assert!(from_tar(&tar(3), small).is_ok());
        assert!(matches!(from_tar(&tar(4), small), Err(Error::TooLarge(_))));
        let tiny = IndexLimits { max_bytes: 4 * RECORD_BYTES, ..IndexLimits::default() };
        assert!(matches!(from_tar(&tar(8), tiny), Err(Error::TooLarge(_))));
        // Implied directories count too: one deep entry cannot make a million records.
        let deep = IndexLimits { max_entries: 3, ..IndexLimits::default() };
        let mut b = Builder::new(deep);
        assert!(matches!(b.push(Entry::file("a/b/c/d/e", 1)), Err(Error::TooLarge(_))));
    }

    /// Builds past `alone_above` take turns: while one holds the slot, another that grows past
    /// it waits, and goes on once the first is frozen (or dropped).
    #[test]
    fn large_builds_take_turns() {
        let limits = IndexLimits { alone_above: 4 * RECORD_BYTES, ..IndexLimits::default() };
        let grow = |b: &mut Builder, prefix: &str| {
            for i in 0..16 {
                b.push(Entry::file(&format!("{prefix}{i}"), 1)).expect("push");
            }
        };
        let mut first = Builder::new(limits);
        grow(&mut first, "a");
        assert!(first.large.is_some(), "the first build took the slot");
        let (tx, rx) = std::sync::mpsc::channel();
        let second = std::thread::spawn(move || {
            let mut b = Builder::new(limits);
            grow(&mut b, "b");
            tx.send(()).expect("send");
            b.finish(0).map(|i| i.len())
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the second build waited");
        assert_eq!(first.finish(0).map(|i| i.len()).ok(), Some(17));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second build went on once the first was frozen");
        assert_eq!(second.join().expect("second").ok(), Some(17));
        // A small build never waits, whoever holds the slot.
        let mut held = Builder::new(limits);
        grow(&mut held, "c");
        let mut small = Builder::new(limits);
        small.push(Entry::file("d", 1)).expect("a small build goes on");
        drop(held);
    }

    /// overlayfs reads `trusted.overlay.*` (and, mounted `userxattr`, `user.overlay.*`) of its
    /// lower layers as its own metadata: a layer's are never kept, so `rootfs/` as a `lowerdir`
    /// shows what the image holds (a `metacopy` made reads EPERM, an `opaque` hid other lowers).
    #[test]
    fn overlayfs_metadata_xattrs_are_never_kept() {
        let bytes = [
            pax(
                b'x',
                &[
                    ("SCHILY.xattr.trusted.overlay.metacopy", b"\0\x04\0\0"),
                    ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                    ("SCHILY.xattr.user.overlay.redirect", b"/elsewhere"),
                    ("SCHILY.xattr.trusted.overlayish", b"kept: another name"),
                    ("SCHILY.xattr.user.k", b"v"),
                ],
            ),
            header(b"f", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (layer, _) = from_tar(&bytes, IndexLimits::default()).expect("index");
        let names: Vec<String> = layer.get("f").expect("f").xattrs().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["trusted.overlayish", "user.k"]);
    }

    #[test]
    fn xattrs_past_the_bound_are_dropped() {
        let limits = IndexLimits { max_xattr_bytes: 31, max_xattr_value: 16, ..IndexLimits::default() };
        let bytes = [
            pax(b'x', &[("SCHILY.xattr.user.a", b"0123456789"), ("SCHILY.xattr.security.selinux", b"ctx")]),
            header(b"kept", b'0', 0, false).to_vec(),
            pax(b'x', &[("SCHILY.xattr.user.a", b"0123456789"), ("SCHILY.xattr.user.b", b"0123456789")]),
            header(b"total", b'0', 0, false).to_vec(),
            pax(b'x', &[("SCHILY.xattr.user.big", &[7u8; 17]), ("SCHILY.xattr.system.nfs4_acl", b"x")]),
            header(b"value", b'0', 0, false).to_vec(),
            eoa(),
        ]
        .concat();
        let (layer, left) = from_tar(&bytes, limits).expect("index");
        let xattrs =
            |p: &str| layer.get(p).map(|e| e.xattrs().map(|(n, v)| (n.to_string(), v.to_vec())).collect::<Vec<_>>());
        assert_eq!(
            xattrs("kept"),
            Some(vec![("user.a".to_string(), b"0123456789".to_vec())]),
            "security.selinux is never kept"
        );
        assert_eq!(xattrs("total"), Some(vec![]));
        assert_eq!(xattrs("value"), Some(vec![]));
        assert_eq!(left.get("xattrs over the bound (dropped, entry kept)"), Some(&2));
    }

    #[test]
    fn sparse_unknown_and_over_32_bit_owners() {
        let mut big = header(b"big", b'0', 0, false);
        big[108..116].fill(0);
        big[108] = 0x80;
        big[111] = 1; // uid 2^32
        checksum(&mut big);
        let bytes = [
            header(b"sparse", b'S', 0, true).to_vec(),
            header(b"volume", b'V', 0, false).to_vec(),
            header(b"contig", b'7', 0, false).to_vec(),
            header(b"dumpdir", b'D', 0, true).to_vec(),
            big.to_vec(),
            eoa(),
        ]
        .concat();
        let (layer, left) = from_tar(&bytes, IndexLimits::default()).expect("index");
        assert_eq!(
            kinds(&layer, ""),
            [
                ("big".to_string(), EntryKind::File),
                ("contig".to_string(), EntryKind::File),
                ("dumpdir".to_string(), EntryKind::Dir)
            ]
        );
        assert_eq!(layer.get("big").map(|b| b.uid()), Some(65534));
        assert_eq!((left.get("sparse"), left.get("unknown typeflag")), (Some(&1), Some(&1)));
    }

    #[test]
    fn a_gnu_tar_indexes_with_positions_that_point_at_the_data() {
        for format in ["gnu", "pax", "ustar"] {
            let (_dir, bytes) = crate::views::tar::testtar::gnu_tar(format, format != "ustar");
            let layer = build_all(Cursor::new(&bytes), TarLimits::default(), IndexLimits::default()).expect("index");
            assert_eq!(layer.decoded_len(), bytes.len() as u64, "{format}");
            let f = layer.get("d/f").expect("d/f");
            assert_eq!((f.size(), f.mode()), (1500, 0o4750), "{format}");
            assert_eq!(&bytes[f.data_offset() as usize..][..1500], &[7u8; 1500][..], "{format}");
            // hello and d/h: one file, one link to it, whichever comes first.
            let (h, hello) = (layer.get("d/h").expect("d/h"), layer.get("hello").expect("hello"));
            let (file, link) = if h.kind() == EntryKind::File { (h, hello) } else { (hello, h) };
            assert_eq!(link.link(), Some(LinkTo::Entry(file.id())), "{format}");
            assert_eq!(&bytes[file.data_offset() as usize..][..12], b"hello world\n", "{format}");
            assert_eq!(layer.get("d/s").and_then(|s| s.symlink_target()), Some("../hello"), "{format}");
            assert!(!layer.root().is_implied(), "{format}: GNU tar writes ./");
            if format != "ustar" {
                assert_eq!(layer.get("fifo").map(|f| f.kind()), Some(EntryKind::Fifo), "{format}");
                assert_eq!(layer.get("longlink").and_then(|l| l.symlink_target()).map(str::len), Some(200));
            }
        }
    }

    fn rich_layer() -> LayerIndex {
        LayerIndex::from_entries(vec![
            Entry::dir("./").with_mode(0o700),
            Entry::file("usr/bin/a", 10).with_mode(0o4755).with_owner(7, 8).with_mtime(-5).with_xattr("user.k", b"v\0"),
            Entry::hardlink("usr/bin/b", "usr/bin/a"),
            Entry::hardlink("usr/bin/c", "lib/lower"),
            Entry::file("usr/bin/a", 3),
            Entry::symlink("usr/s", "bin/a"),
            Entry::special("dev/sda", EntryKind::BlockDevice, 8, 1),
            Entry::special("dev/null", EntryKind::CharDevice, 1, 3),
            Entry::special("run/p", EntryKind::Fifo, 0, 0),
            Entry::whiteout("etc/gone"),
            Entry::opaque("etc"),
            Entry::file(".wh..wh.plnk/9.9", 4),
            Entry::hardlink("usr/bin/d", ".wh..wh.plnk/9.9"),
        ])
    }

    fn sha(n: u8) -> Digest {
        Digest::of(crate::digest::Algorithm::Sha256, &[n])
    }

    #[test]
    fn an_index_round_trips_byte_for_byte() {
        for layer in [rich_layer(), LayerIndex::from_entries(vec![])] {
            let bytes = encode(&layer, &sha(1));
            assert_eq!(&bytes[..8], MAGIC);
            let (diff_id, back) = decode(&bytes).expect("decode");
            assert_eq!(diff_id, sha(1));
            assert_eq!(back, layer);
            assert_eq!(encode(&back, &sha(1)), bytes, "re-encoding gives the same bytes");
            if back.is_empty() {
                continue;
            }
            let a = back.get("usr/bin/d").and_then(|d| d.link());
            assert!(
                matches!(a, Some(LinkTo::Entry(id)) if back.entry(id).is_some_and(|e| e.is_hidden() && e.size() == 4))
            );
        }
    }

    #[test]
    fn a_flipped_byte_or_an_old_version_is_refused() {
        let bytes = encode(&rich_layer(), &sha(2));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(matches!(decode(&bad), Err(Error::Malformed { .. })), "byte {i} flipped");
        }
        for len in [0, 7, 8, 40, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        // A well-formed file of another version, trailer and all, is refused by its version.
        let mut old = bytes[..bytes.len() - 32].to_vec();
        old[8..12].copy_from_slice(&0u32.to_le_bytes());
        let sum = Digest::of(crate::digest::Algorithm::Sha256, &old);
        old.extend(hex_bytes(sum.hex()));
        let err = decode(&old).expect_err("old version");
        assert!(err.to_string().contains("version"), "{err}");
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
    }

    #[test]
    fn index_memory_per_entry_is_at_most_128_bytes_plus_names() {
        // A shape like a distro layer: 8,000 files in 400 directories, some links.
        let mut entries = Vec::new();
        for d in 0..400 {
            entries.push(Entry::dir(&format!("usr/share/pkg{d}")));
            for f in 0..20 {
                let e = if f % 10 == 9 {
                    Entry::hardlink(&format!("usr/share/pkg{d}/link{f}"), &format!("usr/share/pkg{d}/file{}", f - 1))
                } else {
                    Entry::file(&format!("usr/share/pkg{d}/file{f}"), 100)
                };
                entries.push(e);
            }
        }
        let layer = LayerIndex::from_entries(entries);
        let names: usize = (0..layer.len() as u32).filter_map(|i| layer.entry(i)).map(|e| e.name().len()).sum();
        let per_entry = (layer.weight() - names) as f64 / layer.len() as f64;
        eprintln!(
            "index of {} entries: {} bytes, {per_entry:.1} bytes per entry besides {names} bytes of names; record {} bytes",
            layer.len(),
            layer.weight(),
            RECORD_BYTES
        );
        assert!(per_entry <= 128.0, "{per_entry} bytes per entry");
        assert!(layer.weight() < 1 << 20, "8,000 entries in under 1 MiB");
    }

    /// `bytes` (an encoded index) with record `i`'s parent set to `parent`, trailer recomputed.
    fn with_parent(bytes: &[u8], i: usize, parent: u32) -> Vec<u8> {
        let dlen = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
        let at = 14 + dlen + 8 + 24 + i * REC_DISK + 32;
        let mut body = bytes[..bytes.len() - TRAILER].to_vec();
        body[at..at + 4].copy_from_slice(&parent.to_le_bytes());
        let sum = Digest::of(crate::digest::Algorithm::Sha256, &body);
        body.extend(hex_bytes(sum.hex()));
        body
    }

    #[test]
    fn a_decoded_index_whose_parents_do_not_come_first_is_refused() {
        let layer = rich_layer();
        let bytes = encode(&layer, &sha(3));
        let leaf = layer.get("usr/bin/a").expect("a").id() as usize;
        let unchanged = with_parent(&bytes, leaf, layer.get("usr/bin").expect("bin").id());
        assert!(decode(&unchanged).is_ok(), "the offsets in this test are right");
        // A parent after its child could make a cycle, and `path()` would never end.
        assert!(matches!(decode(&with_parent(&bytes, leaf, leaf as u32)), Err(Error::Malformed { .. })));
        assert!(matches!(decode(&with_parent(&bytes, 2, 5)), Err(Error::Malformed { .. })));
    }

    #[test]
    fn a_directory_under_an_opaque_one_hides_lower_layers_too() {
        // Found by lazy_merge_equals_an_eager_apply: the root made opaque and `a` re-created
        // must hide a lower `a/a`, since the lower `a` is hidden.
        let layer = LayerIndex::from_entries(vec![
            Entry::opaque(""),
            Entry::dir("a"),
            Entry::opaque("d"),
            Entry::file("d/e/f", 1),
        ]);
        assert!(matches!(layer.says("a/a"), Says::Blocked));
        assert!(matches!(layer.says("d/e/lower"), Says::Blocked));
        assert!(layer.get("a").is_some_and(|a| a.is_opaque()), "the merge stops at a's floor here");
        assert!(layer.get("d/e").is_some_and(|e| e.is_opaque()));
    }

    #[test]
    fn a_hardlink_to_a_lower_path_under_an_opaque_ancestor_is_refused() {
        let mut b = Builder::new(IndexLimits::default());
        for e in
            [Entry::opaque("d"), Entry::dir("d/e"), Entry::hardlink("l", "d/e/lower"), Entry::hardlink("m", "x/lower")]
        {
            b.push(e).expect("push");
        }
        let layer = b.finish(0).expect("finish");
        assert!(layer.get("l").is_none(), "d/e/lower is hidden in this layer by d");
        assert_eq!(layer.get("m").and_then(|m| m.link()), Some(LinkTo::Lower("x/lower")));
    }
}
