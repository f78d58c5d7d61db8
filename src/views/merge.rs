//! The merge: what `rootfs/` shows, read lazily from a stack of layer indexes.
//!
//! The rules:
//! - Paths are literal and normalised (`""` is the root); the merge follows no symlink. Each
//!   layer's index already placed its entries through that layer's own links
//!   (`views::rootpath`); a lower layer's links are not followed to apply an upper layer, as
//!   containerd's overlayfs snapshotter and docker's overlay2 apply each layer into a directory
//!   of its own.
//! - **Lookup** asks layers from the top down what they say of the path
//!   ([`LayerIndex::says`], which checks the path's ancestors in that layer too). The first that
//!   mentions it (an entry) or hides it (a whiteout, an opaque or whited-out ancestor, a
//!   non-directory ancestor) decides. So a top-layer file needs only the top index, and a lower
//!   one the indexes from the top down to its own layer; no floor needs remembering, since a
//!   layer that blocks a directory says so for every path below it. Once the top layer has not
//!   decided, the layers below are asked for at once ([`LayerSource::prefetch`]), so a source
//!   gets them ready in parallel rather than one after another as the walk down reaches each.
//! - **Directories** merge. Their attributes are the topmost explicit entry's, looking down to
//!   the directory's floor: the first layer that makes it opaque, or holds a non-directory or a
//!   whiteout there (an upper directory over a lower non-directory starts empty). Implied all the
//!   way down: 0755, 0:0, mtime 0. A **listing** needs every layer from the top to the floor:
//!   each name is decided by the topmost layer that has an entry for it.
//! - **Hard links are inodes**, identified by (layer, entry) of the original data entry
//!   ([`Inode`]). A link to a path of the layers below is resolved against the view below its
//!   own layer (to a non-directory, else it is no name at all). The content is the original's,
//!   even when every other name of it is gone. `st_nlink` counts the names that survive to the
//!   top: the original's own, this layer's links to it, and links of higher layers to a name
//!   that resolves to it at their level ([`Merge::nlink`]).
//!
//! The layers come from a [`LayerSource`]; a layer whose index cannot be had (a wrong diff_id, a
//! tar that does not parse) fails only what needs that layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::views::index::{EntryId, EntryKind, EntryRef, LayerIndex, LinkTo, Says};

/// The layers of one image, bottom first, each as its index.
pub trait LayerSource {
    /// How many layers.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Layer `i`'s index (fetched, decoded and indexed if need be).
    fn index(&self, i: usize) -> Result<Arc<LayerIndex>>;
    /// A listing is about to need layers `layers` (top first): a source may get them ready at
    /// once, in parallel. By default nothing: each is asked for in turn.
    fn prefetch(&self, layers: &[usize]) {
        let _ = layers;
    }
}

/// A non-directory of the merged tree: the layer and entry of its original (data) entry. Every
/// name of a hard-linked inode gives the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inode {
    pub layer: usize,
    pub entry: EntryId,
    /// File, symlink, character or block device, or FIFO.
    pub kind: EntryKind,
}

/// What a path is in the merged tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Dir,
    Inode(Inode),
}

/// A merged directory's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (may be negative) and nanoseconds.
    pub mtime: (i64, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl DirMeta {
    /// What a directory only ever implied shows.
    fn implied() -> DirMeta {
        DirMeta { mode: 0o755, uid: 0, gid: 0, mtime: (0, 0), xattrs: Vec::new() }
    }

    fn of(e: &EntryRef<'_>) -> DirMeta {
        DirMeta { mode: e.mode(), uid: e.uid(), gid: e.gid(), mtime: e.mtime(), xattrs: owned_xattrs(e) }
    }
}

/// An inode's attributes and where its bytes are in its layer's decoded tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeMeta {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch (may be negative) and nanoseconds.
    pub mtime: (i64, u32),
    /// Bytes of data (regular files; 0 otherwise).
    pub size: u64,
    /// Where the data starts in the decoded tar, and where the entry's headers start.
    pub data_offset: u64,
    pub header_offset: u64,
    /// Device numbers (major, minor).
    pub rdev: (u32, u32),
    /// A symlink's target.
    pub target: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn owned_xattrs(e: &EntryRef<'_>) -> Vec<(String, Vec<u8>)> {
    e.xattrs().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

/// The merged tree of one image's layers.
pub struct Merge<'a, S: LayerSource + ?Sized> {
    src: &'a S,
    /// `src` already asks each layer once ([`Memo`]).
    memo: bool,
}

/// A source that asks each layer of another one for its index once, for the length of one
/// query that looks up many paths ([`Merge::nlink`]).
struct Memo<'a, S: LayerSource + ?Sized> {
    src: &'a S,
    got: std::cell::RefCell<Vec<Option<Arc<LayerIndex>>>>,
}

impl<S: LayerSource + ?Sized> LayerSource for Memo<'_, S> {
    fn len(&self) -> usize {
        self.src.len()
    }

    fn index(&self, i: usize) -> Result<Arc<LayerIndex>> {
        if let Some(Some(index)) = self.got.borrow().get(i) {
            return Ok(Arc::clone(index));
        }
        let index = self.src.index(i)?;
        if let Some(slot) = self.got.borrow_mut().get_mut(i) {
            *slot = Some(Arc::clone(&index));
        }
        Ok(index)
    }
}

impl<'a, S: LayerSource + ?Sized> Merge<'a, S> {
    pub fn new(src: &'a S) -> Self {
        Merge { src, memo: false }
    }

    /// What `path` is, or `None` if the merged tree has nothing there.
    pub fn lookup(&self, path: &str) -> Result<Option<Found>> {
        if path.is_empty() {
            return Ok(Some(Found::Dir));
        }
        self.resolve(path, self.src.len())
    }

    /// What `path` is in the view of the layers below `top` (the layers `0..top`).
    fn resolve(&self, path: &str, top: usize) -> Result<Option<Found>> {
        for i in (0..top).rev() {
            let index = self.src.index(i)?;
            match index.says(path) {
                Says::Present(e) => return self.found(i, &e),
                Says::WhitedOut | Says::Blocked => return Ok(None),
                Says::Silent => {}
            }
            if i + 1 == top {
                self.below(i);
            }
        }
        Ok(None)
    }

    /// The topmost layer asked, `i`, did not decide: every layer below may be needed, so they
    /// are asked for at once (top first), and a source may get them ready in parallel instead
    /// of one after another as the walk down reaches each (a cold `cat rootfs/etc/os-release`
    /// of a file of the base layer). A path the top layer decides asks for none.
    fn below(&self, i: usize) {
        if i > 0 {
            self.src.prefetch(&(0..i).rev().collect::<Vec<_>>());
        }
    }

    /// What entry `e` of layer `layer` makes its path: a directory, an inode, or (a hard link
    /// that resolves to no non-directory) nothing.
    fn found(&self, layer: usize, e: &EntryRef<'_>) -> Result<Option<Found>> {
        Ok(match (e.kind(), e.link()) {
            (EntryKind::Dir, _) => Some(Found::Dir),
            (EntryKind::Whiteout, _) => None,
            (EntryKind::Hardlink, Some(LinkTo::Entry(id))) => {
                let index = self.src.index(layer)?;
                index.entry(id).map(|t| Found::Inode(Inode { layer, entry: id, kind: t.kind() }))
            }
            (EntryKind::Hardlink, Some(LinkTo::Lower(target))) => match self.resolve(target, layer)? {
                Some(Found::Inode(i)) => Some(Found::Inode(i)),
                other => {
                    log::debug!(
                        "rootfs: hard link {:?} of layer {layer} names {target:?}, which is {other:?} below it",
                        e.path()
                    );
                    None
                }
            },
            (EntryKind::Hardlink, None) => None,
            (kind, _) => Some(Found::Inode(Inode { layer, entry: e.id(), kind })),
        })
    }

    /// The attributes of the directory at `path`; `None` if it is not a directory.
    pub fn dir(&self, path: &str) -> Result<Option<DirMeta>> {
        let mut seen = false;
        let top = self.src.len();
        for i in (0..top).rev() {
            let index = self.src.index(i)?;
            match index.says(path) {
                Says::Present(e) if e.kind() == EntryKind::Dir => {
                    if !e.is_implied() {
                        return Ok(Some(DirMeta::of(&e)));
                    }
                    seen = true;
                    if e.is_opaque() {
                        break;
                    }
                }
                Says::Present(_) | Says::WhitedOut | Says::Blocked => break,
                Says::Silent => {}
            }
            if i + 1 == top {
                self.below(i);
            }
        }
        Ok((seen || path.is_empty()).then(DirMeta::implied))
    }

    /// The layers that hold the directory `path`'s entries, top first: from the top down to its
    /// floor. Empty if it is not a directory.
    fn floors(&self, path: &str) -> Result<Vec<usize>> {
        let mut layers = Vec::new();
        let top = self.src.len();
        for i in (0..top).rev() {
            let index = self.src.index(i)?;
            match index.says(path) {
                Says::Present(e) if e.kind() == EntryKind::Dir => {
                    layers.push(i);
                    if e.is_opaque() {
                        break;
                    }
                }
                Says::Present(_) | Says::WhitedOut | Says::Blocked => break,
                Says::Silent => {}
            }
            // The root was asked for whole by `list`.
            if i + 1 == top && !path.is_empty() {
                self.below(i);
            }
        }
        Ok(layers)
    }

    /// The entries of the directory `path`, sorted by name; empty if it is not a directory.
    /// Listing the root needs every layer but those below a top layer that makes the root
    /// opaque (rare): they are all asked for at once, so a source may build them in parallel.
    /// Other directories find their floor layer by layer.
    pub fn list(&self, path: &str) -> Result<Vec<(String, Found)>> {
        if path.is_empty() {
            let all: Vec<usize> = (0..self.src.len()).rev().collect();
            self.src.prefetch(&all);
        }
        let mut decided: BTreeMap<String, Option<Found>> = BTreeMap::new();
        for i in self.floors(path)? {
            let index = self.src.index(i)?;
            for c in index.children(path) {
                if decided.contains_key(c.name()) {
                    continue;
                }
                let found = self.found(i, &c)?;
                decided.insert(c.name().to_string(), found);
            }
        }
        Ok(decided.into_iter().filter_map(|(n, f)| f.map(|f| (n, f))).collect())
    }

    /// The attributes of `inode` (its original entry's).
    pub fn inode(&self, inode: Inode) -> Result<InodeMeta> {
        let index = self.src.index(inode.layer)?;
        let e = index.entry(inode.entry).ok_or_else(|| missing(inode))?;
        Ok(InodeMeta {
            kind: e.kind(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            mtime: e.mtime(),
            size: e.size(),
            data_offset: e.data_offset(),
            header_offset: e.header_offset(),
            rdev: e.rdev(),
            target: e.symlink_target().map(str::to_string),
            xattrs: owned_xattrs(&e),
        })
    }

    /// The names of `inode` that survive to the top (`st_nlink`): its own and its layer's links
    /// to it, and the links of higher layers to any of those names that resolve to it there.
    /// Needs the indexes of its layer and those above (which finding it needed anyway).
    /// Each layer's index is asked for once however many names there are (a stat of one of K
    /// links costs K path look-ups in memory, not K index fetches); callers that stat every name
    /// (`ls -l`) keep the count per inode (`layout::rootfs`'s link counts).
    pub fn nlink(&self, inode: Inode) -> Result<u32> {
        if self.memo {
            return self.nlink_memo(inode);
        }
        let memo = Memo { src: self.src, got: std::cell::RefCell::new(vec![None; self.src.len()]) };
        Merge { src: &memo, memo: true }.nlink_memo(inode)
    }

    fn nlink_memo(&self, inode: Inode) -> Result<u32> {
        let base = self.src.index(inode.layer)?;
        let e = base.entry(inode.entry).ok_or_else(|| missing(inode))?;
        let mut names: Vec<String> = Vec::new();
        if !e.is_hidden() {
            names.push(e.path());
        }
        names.extend(base.links_to(inode.entry).filter(|l| !l.is_hidden()).map(|l| l.path()));
        for j in inode.layer + 1..self.src.len() {
            let index = self.src.index(j)?;
            let mut more = Vec::new();
            for name in &names {
                for link in index.lower_links_to(name) {
                    if !link.is_hidden() && self.resolve(name, j)? == Some(Found::Inode(inode)) {
                        more.push(link.path());
                    }
                }
            }
            names.extend(more);
        }
        names.sort_unstable();
        names.dedup();
        let mut n = 0u32;
        for name in &names {
            if self.lookup(name)? == Some(Found::Inode(inode)) {
                n = n.saturating_add(1);
            }
        }
        Ok(n.max(1))
    }
}

fn missing(inode: Inode) -> crate::error::Error {
    crate::error::Error::malformed(format!("layer {} index", inode.layer), format!("no entry {}", inode.entry))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::error::{Error, Result};
    use crate::views::index::{Entry, EntryKind, LayerIndex};

    /// Layers bottom first; records which were asked for; a layer may be broken (its index an
    /// error, as a layer whose decoded tar does not hash to its diff_id).
    struct Counting {
        layers: Vec<Option<Arc<LayerIndex>>>,
        asked: Mutex<Vec<usize>>,
        /// Each call of `prefetch`, in order.
        prefetched: Mutex<Vec<Vec<usize>>>,
    }

    impl Counting {
        fn new(layers: Vec<Vec<Entry>>) -> Counting {
            let layers = layers.into_iter().map(|l| Some(Arc::new(LayerIndex::from_entries(l)))).collect();
            Counting { layers, asked: Mutex::new(Vec::new()), prefetched: Mutex::new(Vec::new()) }
        }

        fn broken(mut self, i: usize) -> Counting {
            self.layers[i] = None;
            self
        }

        /// The layers asked for since the last call, each once, sorted.
        fn asked(&self) -> Vec<usize> {
            let mut a = std::mem::take(&mut *crate::sync::lock(&self.asked));
            a.sort_unstable();
            a.dedup();
            a
        }
    }

    impl LayerSource for Counting {
        fn len(&self) -> usize {
            self.layers.len()
        }

        fn index(&self, i: usize) -> Result<Arc<LayerIndex>> {
            crate::sync::lock(&self.asked).push(i);
            self.layers[i].clone().ok_or_else(|| Error::malformed(format!("layer {i}"), "broken for the test"))
        }

        fn prefetch(&self, layers: &[usize]) {
            crate::sync::lock(&self.prefetched).push(layers.to_vec());
        }
    }

    fn names(m: &Merge<'_, Counting>, dir: &str) -> Vec<String> {
        m.list(dir).expect("list").into_iter().map(|(n, _)| n).collect()
    }

    fn inode(found: Option<Found>) -> Inode {
        match found {
            Some(Found::Inode(i)) => i,
            other => panic!("not a non-directory: {other:?}"),
        }
    }

    /// A path the top layer does not decide may need every layer below: they are asked for at
    /// once (top first, so a source may get them ready in parallel) before the lookup reads them
    /// one by one, not as the lookup reaches each. A path the top layer decides asks for none.
    #[test]
    fn a_path_the_top_layer_does_not_decide_gets_the_layers_below_at_once() {
        let src = Counting::new(vec![
            vec![Entry::file("usr/lib/os-release", 10), Entry::dir("etc"), Entry::file("etc/hosts", 1)],
            vec![Entry::file("usr/bin/ls", 20)],
            vec![Entry::file("usr/bin/cat", 20)],
            vec![Entry::file("etc/motd", 5)],
        ]);
        let m = Merge::new(&src);
        let prefetched = || std::mem::take(&mut *crate::sync::lock(&src.prefetched));
        assert_eq!(inode(m.lookup("etc/motd").expect("motd")).layer, 3);
        assert!(prefetched().is_empty(), "a top-layer path asks for no layer below");
        assert_eq!(inode(m.lookup("usr/lib/os-release").expect("os-release")).layer, 0);
        assert_eq!(prefetched(), [vec![2, 1, 0]], "the layers below the top, at once, top first");
        assert_eq!(src.asked(), [0, 1, 2, 3]);
        // A directory's attributes and listing look down past the top layer the same way.
        assert!(m.dir("etc").expect("etc").is_some());
        assert_eq!(prefetched(), [vec![2, 1, 0]]);
        assert_eq!(names(&m, "etc"), ["hosts", "motd"]);
        assert_eq!(prefetched(), [vec![2, 1, 0]]);
    }

    #[test]
    fn top_layer_file_needs_only_the_top_index() {
        let src = Counting::new(vec![
            vec![Entry::file("etc/passwd", 10), Entry::file("usr/bin/sh", 100)],
            vec![Entry::file("usr/bin/ls", 20)],
            vec![Entry::file("etc/motd", 5).with_mode(0o600).with_owner(1, 2)],
        ])
        .broken(0);
        let m = Merge::new(&src);
        let motd = inode(m.lookup("etc/motd").expect("motd"));
        assert_eq!((motd.layer, motd.kind), (2, EntryKind::File));
        assert_eq!(src.asked(), [2], "a top-layer file needs only the top index");
        let meta = m.inode(motd).expect("meta");
        assert_eq!((meta.mode, meta.uid, meta.gid, meta.size), (0o600, 1, 2, 5));
        assert_eq!(m.nlink(motd).expect("nlink"), 1);
        assert_eq!(src.asked(), [2], "its attributes and link count too");
        // One layer down: the two layers above it are read, and still not the broken base
        // (asked for at once with layer 1, to be got ready in the background; not waited for).
        assert_eq!(inode(m.lookup("usr/bin/ls").expect("ls")).layer, 1);
        assert_eq!(src.asked(), [1, 2]);
        // What needs the broken layer fails, with its error.
        assert_eq!(m.lookup("etc/passwd").expect_err("broken base").errno(), libc::EIO);
    }

    #[test]
    fn opaque_whiteout_and_type_change_decide_without_lower_layers() {
        let src = Counting::new(vec![
            vec![Entry::file("a/x", 1), Entry::file("b/y", 1), Entry::file("c/z", 1), Entry::file("d", 1)],
            vec![Entry::file("keep", 1)],
            vec![Entry::dir("a"), Entry::opaque("a"), Entry::whiteout("b"), Entry::file("c", 2), Entry::file("d/w", 1)],
        ])
        .broken(0);
        let m = Merge::new(&src);
        assert!(m.lookup("a/x").expect("opaque").is_none(), "hidden by an opaque directory");
        assert!(m.lookup("b").expect("whiteout").is_none(), "whited out");
        assert!(m.lookup("b/y").expect("below a whiteout").is_none());
        assert_eq!(inode(m.lookup("c").expect("file over a dir")).layer, 2, "a file over a directory");
        assert!(m.lookup("c/z").expect("under a file").is_none(), "an upper file hides the lower subtree");
        assert_eq!(src.asked(), [2], "each was decided by the top layer alone");
        // An upper directory (implied) over a lower file: a directory, and what it holds.
        assert!(matches!(m.lookup("d").expect("dir over a file"), Some(Found::Dir)));
        assert_eq!(inode(m.lookup("d/w").expect("d/w")).layer, 2);
        assert_eq!(m.list("a").expect("opaque listing").len(), 0);
        assert_eq!(src.asked(), [2], "an opaque directory lists from its own layer");
        // Only its attributes and its listing look lower (to find the lower file: the floor).
        assert_eq!(m.dir("d").expect_err("needs layer 0").errno(), libc::EIO);
    }

    #[test]
    fn listing_needs_every_layer_down_to_the_floor() {
        let src = Counting::new(vec![
            vec![Entry::file("etc/old", 1), Entry::file("etc/gone", 1)],
            vec![Entry::dir("etc"), Entry::opaque("etc"), Entry::file("etc/hosts", 1), Entry::file("etc/gone", 1)],
            vec![Entry::file("etc/motd", 1), Entry::whiteout("etc/gone")],
            vec![Entry::file("usr/bin/ls", 1)],
        ])
        .broken(0);
        let m = Merge::new(&src);
        assert_eq!(names(&m, "etc"), ["hosts", "motd"]);
        assert_eq!(src.asked(), [1, 2, 3], "down to the opaque floor, not below");
        assert_eq!(m.list("").expect_err("the root needs the broken base").errno(), libc::EIO);
        assert_eq!(src.asked(), [0, 1, 2, 3], "the root has no floor above the base");

        let whole = Counting::new(vec![
            vec![Entry::file("etc/old", 1), Entry::file("bin/sh", 1)],
            vec![Entry::file("etc/hosts", 1)],
            vec![Entry::file("usr/bin/ls", 1)],
        ]);
        let m = Merge::new(&whole);
        assert_eq!(names(&m, ""), ["bin", "etc", "usr"]);
        assert_eq!(whole.asked(), [0, 1, 2]);
        assert_eq!(names(&m, "etc"), ["hosts", "old"]);
        assert_eq!(whole.asked(), [0, 1, 2]);
    }

    #[test]
    fn dir_recreated_after_whiteout_shows_only_new_children() {
        let src = Counting::new(vec![
            vec![Entry::file("a/old", 1), Entry::file("b/old", 1)],
            // Across layers: whited out in one, re-created in the next.
            vec![Entry::whiteout("a")],
            vec![Entry::dir("a"), Entry::file("a/new", 1)],
            // In one layer: whited out and re-created (opaque for what is below).
            vec![Entry::whiteout("b"), Entry::dir("b"), Entry::file("b/new", 1)],
        ]);
        let m = Merge::new(&src);
        assert_eq!(names(&m, "a"), ["new"]);
        assert_eq!(names(&m, "b"), ["new"]);
        assert!(m.lookup("a/old").expect("a/old").is_none());
        assert!(m.lookup("b/old").expect("b/old").is_none());
        assert!(matches!(m.lookup("a").expect("a"), Some(Found::Dir)));
    }

    #[test]
    fn upper_explicit_dir_attributes_replace_lower_implied_keep_them() {
        let src = Counting::new(vec![
            vec![
                Entry::dir("etc").with_mode(0o750).with_owner(3, 4).with_mtime(100),
                Entry::dir("opt").with_mode(0o700).with_owner(5, 6).with_mtime(200),
                Entry::file("only/implied", 1),
            ],
            // `etc/` only implied here: the lower explicit attributes stay.
            vec![Entry::file("etc/hosts", 1)],
            // `opt/` explicit here: its attributes replace the lower ones.
            vec![Entry::dir("opt").with_mode(0o1777).with_owner(7, 8).with_mtime(300)],
        ]);
        let m = Merge::new(&src);
        let attrs = |p: &str| {
            let d = m.dir(p).expect("dir").expect("a directory");
            (d.mode, d.uid, d.gid, d.mtime.0)
        };
        assert_eq!(attrs("etc"), (0o750, 3, 4, 100));
        assert_eq!(attrs("opt"), (0o1777, 7, 8, 300));
        assert_eq!(attrs("only"), (0o755, 0, 0, 0), "implied everywhere: 0755 root, mtime 0");
        assert!(m.dir("only/implied").expect("file").is_none(), "a file is not a directory");
        assert!(m.dir("nothing").expect("absent").is_none());
    }

    #[test]
    fn hardlink_one_inode_nlink_counts_surviving_names() {
        let src = Counting::new(vec![
            vec![Entry::file("bin/a", 4).with_mode(0o755), Entry::hardlink("bin/b", "bin/a")],
            // A third name in an upper layer, and a whiteout of one of the lower names.
            vec![Entry::hardlink("sbin/c", "bin/a"), Entry::whiteout("bin/b")],
            vec![Entry::file("other", 1)],
        ]);
        let m = Merge::new(&src);
        let a = inode(m.lookup("bin/a").expect("a"));
        let c = inode(m.lookup("sbin/c").expect("c"));
        assert_eq!(a, c, "one inode for every name");
        assert!(m.lookup("bin/b").expect("b").is_none(), "a whiteout removes that name only");
        assert_eq!(m.nlink(a).expect("nlink"), 2, "a and c survive, b does not");
        // Listings give the same inode.
        let listed = m.list("sbin").expect("sbin");
        assert_eq!(listed, [("c".to_string(), Found::Inode(a))]);
        let meta = m.inode(c).expect("meta");
        assert_eq!((meta.kind, meta.mode, meta.size), (EntryKind::File, 0o755, 4));
    }

    #[test]
    fn hardlink_content_survives_deleting_the_original() {
        let src = Counting::new(vec![
            vec![Entry::file("data/orig", 7), Entry::hardlink("data/link", "data/orig")],
            vec![Entry::whiteout("data/orig")],
            // Same layer: the original name replaced by another file after the link was made.
            vec![Entry::file("x/orig", 3), Entry::hardlink("x/link", "x/orig"), Entry::file("x/orig", 9)],
        ]);
        let m = Merge::new(&src);
        let link = inode(m.lookup("data/link").expect("link"));
        assert_eq!(link.layer, 0, "the content is read from the original's layer");
        let meta = m.inode(link).expect("meta");
        assert_eq!(meta.size, 7);
        assert_eq!(m.nlink(link).expect("nlink"), 1, "only the link's name is left");
        assert!(m.lookup("data/orig").expect("orig").is_none());
        let x = inode(m.lookup("x/link").expect("x/link"));
        let new = inode(m.lookup("x/orig").expect("x/orig"));
        assert_ne!(x, new, "the replaced original is another inode");
        assert_eq!((m.inode(x).expect("x").size, m.inode(new).expect("new").size), (3, 9));
        assert_eq!((m.nlink(x).expect("x"), m.nlink(new).expect("new")), (1, 1));
        assert_eq!(names(&m, "x"), ["link", "orig"]);
    }

    /// A layer's entries follow the symlinks of their own layer, never a lower layer's: as
    /// containerd's overlayfs snapshotter and docker's overlay2 apply each layer to a directory
    /// of its own. So a lower link under an upper (implied) directory of the same name is
    /// replaced by it, and the files land there.
    #[test]
    fn entries_follow_their_own_layer_s_symlinks_only() {
        let src = Counting::new(vec![
            vec![Entry::dir("etc"), Entry::file("etc/hosts", 1), Entry::symlink("lower", "/etc")],
            vec![Entry::symlink("ln", "/etc"), Entry::file("ln/passwd", 2), Entry::file("lower/x", 3)],
        ]);
        let m = Merge::new(&src);
        assert_eq!(names(&m, "etc"), ["hosts", "passwd"]);
        assert_eq!(m.inode(inode(m.lookup("etc/passwd").expect("passwd"))).expect("meta").size, 2);
        assert_eq!(inode(m.lookup("ln").expect("ln")).kind, EntryKind::Symlink);
        assert!(matches!(m.lookup("lower").expect("lower"), Some(Found::Dir)), "the upper directory wins");
        assert_eq!(names(&m, "lower"), ["x"]);
        assert!(m.lookup("etc/x").expect("etc/x").is_none());
    }

    #[test]
    fn hardlink_to_a_lower_file_shares_its_inode() {
        let src = Counting::new(vec![
            vec![Entry::file("usr/bin/perl5.36", 11)],
            vec![Entry::hardlink("usr/bin/perl", "usr/bin/perl5.36")],
            // A link to the lower link's name resolves to the same inode; a link to a name
            // replaced in between links to the replacement.
            vec![Entry::hardlink("usr/local/p", "usr/bin/perl")],
        ]);
        let m = Merge::new(&src);
        let orig = inode(m.lookup("usr/bin/perl5.36").expect("orig"));
        assert_eq!(orig.layer, 0);
        assert_eq!(inode(m.lookup("usr/bin/perl").expect("perl")), orig);
        assert_eq!(inode(m.lookup("usr/local/p").expect("p")), orig);
        assert_eq!(m.nlink(orig).expect("nlink"), 3);

        let replaced =
            Counting::new(vec![vec![Entry::file("f", 1)], vec![Entry::file("f", 2)], vec![Entry::hardlink("g", "f")]]);
        let m = Merge::new(&replaced);
        let f = inode(m.lookup("f").expect("f"));
        assert_eq!((f.layer, inode(m.lookup("g").expect("g"))), (1, f));
        assert_eq!(m.nlink(f).expect("nlink"), 2);
        // A link to a lower directory or to nothing is no name at all.
        let bad =
            Counting::new(vec![vec![Entry::dir("d")], vec![Entry::hardlink("l", "d"), Entry::hardlink("m", "nope")]]);
        let m = Merge::new(&bad);
        assert!(m.lookup("l").expect("l").is_none());
        assert!(m.lookup("m").expect("m").is_none());
        assert_eq!(names(&m, ""), ["d"]);
    }
}
