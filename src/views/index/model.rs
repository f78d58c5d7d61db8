//! The frozen index of one layer and its query API: what the merge reads.
//!
//! - Records are numbered breadth-first: a directory's children are contiguous and sorted by
//!   name bytes (found by binary search), and ids grow with depth. The root is entry 0, path `""`,
//!   always a directory.
//! - Every record has the same fixed size ([`RECORD_BYTES`], counted by [`LayerIndex::weight`])
//!   and points into two byte arenas: names and link targets, and xattrs.
//! - Hard-link originals whose name is gone (replaced later in the layer, or AUFS
//!   `.wh..wh.plnk/` files) are kept after the tree as *hidden* records: links name them,
//!   listings and lookups never show them.
//! - A whiteout is a record of kind [`EntryKind::Whiteout`] under the victim's own name; it is
//!   listed among a directory's children (the merge hides it), never [`Says::Present`].
//! - What the merge needs from one layer is [`LayerIndex::says`]: present, whited out, blocked
//!   (an opaque, whited-out or non-directory ancestor hides every lower layer there), or silent.
//! - No accessor panics or loops on what an index holds: spans out of their arena read as empty,
//!   and an index read from a file was checked ([`super::decode`]) so that every id is in
//!   bounds and every parent comes before its children.

use super::EntryKind;

/// The number of an entry in one layer's index (the root is 0).
pub type EntryId = u32;

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

pub(super) const F_OPAQUE: u8 = 1;
pub(super) const F_IMPLIED: u8 = 2;
pub(super) const F_HIDDEN: u8 = 4;
pub(super) const F_LOWER: u8 = 8;
pub(super) const NONE: u32 = u32::MAX;

/// One fixed-size record (see the module note). Spans point into `names` and `xattrs`. The
/// flags are `F_*`; `NONE` is no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rec {
    pub(super) size: u64,
    pub(super) header_offset: u64,
    pub(super) data_offset: u64,
    pub(super) mtime: i64,
    pub(super) parent: u32,
    pub(super) first_child: u32,
    pub(super) nchildren: u32,
    pub(super) name_off: u32,
    pub(super) target_off: u32,
    pub(super) xattr_off: u32,
    pub(super) xattr_len: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime_ns: u32,
    pub(super) dev_major: u32,
    pub(super) dev_minor: u32,
    /// Hard links: the target entry, or `NONE` with `F_LOWER` (the target path is the target span).
    pub(super) link: u32,
    pub(super) name_len: u16,
    pub(super) target_len: u16,
    pub(super) mode: u16,
    pub(super) kind: u8,
    pub(super) flags: u8,
}

/// One layer's index: a frozen, queryable table of its entries (see the module note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerIndex {
    pub(super) recs: Vec<Rec>,
    pub(super) names: Vec<u8>,
    pub(super) xattrs: Vec<u8>,
    /// Ids of hard links to lower paths, sorted by target path.
    pub(super) lower: Vec<u32>,
    /// (target, link) for hard links to entries of this layer, sorted.
    pub(super) same: Vec<(u32, u32)>,
    pub(super) decoded_len: u64,
    /// Records in the tree (the rest are hidden).
    pub(super) visible: u32,
    /// Entries whose headers were found to agree with this index in the decoded tar (see
    /// [`LayerIndex::header_checked`]).
    pub(super) checked: HeaderChecks,
}

/// One bit per record: its headers in the layer's verified decoded tar were parsed and agree
/// with this index. Kept with the index itself, so it goes with it: an index read back from disk
/// again (after the LRU dropped this one) is a new value with none checked. A clone starts with
/// none checked too, and equality ignores it.
#[derive(Default)]
pub(super) struct HeaderChecks(std::sync::OnceLock<Box<[std::sync::atomic::AtomicU64]>>);

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

    /// The target path of the hard link `id` to a lower path.
    pub(super) fn lower_target(&self, id: u32) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::index::Entry;

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
}
