//! Directory listings: taken once at `opendir`, shared by the handles of one directory while
//! its names are unchanged, kept after close for immutable directories (bounded), and read
//! with attributes (`READDIRPLUS`) where those are at hand, each entry then a reference the
//! kernel holds ([`Fs::entry_plus`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Attr, DirEntry, Fs};
use crate::error::{Error, Result};
use crate::layout::{FileKind, Node, Shape, Stability};
use crate::sync;

/// Listings of immutable directories (a manifest's, a rootfs directory: functions of a verified
/// manifest and its layers, so they never change), by node, most recently opened kept first,
/// holding at most `bound` entries in all. A directory kept opens inline ([`Fs::opendir_now`]):
/// a warm `find` of a rootfs starts no thread per directory. Keyed by node, not inode number: a
/// number the kernel forgot may name another node later.
pub(super) struct Kept {
    pub(super) lru: lru::LruCache<Node, Snapshot>,
    pub(super) entries: usize,
    pub(super) bound: usize,
}

impl Kept {
    fn keep(&mut self, node: Node, listing: &Snapshot) {
        if listing.len() > self.bound {
            return;
        }
        if let Some(old) = self.lru.put(node, Arc::clone(listing)) {
            self.entries -= old.len();
        }
        self.entries += listing.len();
        while self.entries > self.bound {
            let Some((_, old)) = self.lru.pop_lru() else { break };
            self.entries -= old.len();
        }
    }
}

impl Fs {
    /// Open a directory: its listing is taken here, once, and every `readdir` of the handle reads
    /// that snapshot. So a listing is consistent however the registry changes while it is read,
    /// a large one is built once rather than once per kernel buffer, and a failure surfaces here,
    /// where it is visible: glibc reads ENOENT from getdents as the end of the directory.
    ///
    /// Handles of one directory share its listing while the names in it are unchanged (the
    /// numbers of entries the kernel does not hold are informational, so they may be those of the
    /// first handle): a local user opening a large directory a thousand times costs one listing,
    /// not a thousand.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.node(ino)?;
        let immutable = is_immutable_dir(&node);
        if immutable {
            // The lock is let go before the gate, which may ask the registry.
            let kept = sync::lock(&self.kept).lru.get(&node).cloned();
            if let Some(listing) = kept {
                // A kept listing of a manifest's content is shown only while the policy allows it.
                self.layout.check_gate(&node)?;
                return Ok(self.open_listing(ino, listing));
            }
        }
        let fresh = self.readdir(ino)?;
        let entries = {
            let mut shared = sync::lock(&self.shared);
            match shared.get(&ino).and_then(std::sync::Weak::upgrade) {
                Some(old) if same_names(&old, &fresh) => old,
                _ => {
                    let fresh = Arc::new(fresh);
                    shared.insert(ino, Arc::downgrade(&fresh));
                    fresh
                }
            }
        };
        if immutable {
            sync::lock(&self.kept).keep(node, &entries);
        }
        Ok(self.open_listing(ino, entries))
    }

    /// [`Fs::opendir`] if the listing is kept (an immutable directory listed before): no layout
    /// call, so the adapter answers inline. `None` otherwise (then `opendir` lists, or says what
    /// is wrong).
    pub fn opendir_now(&self, ino: u64) -> Option<Result<u64>> {
        let node = self.inodes.node(ino)?;
        let listing = sync::lock(&self.kept).lru.get(&node).cloned()?;
        match self.at_hand.check_gate(&node) {
            Err(Error::NotAtHand(_)) => return None,
            Err(e) => return Some(Err(e)),
            Ok(()) => {}
        }
        Some(Ok(self.open_listing(ino, listing)))
    }

    /// Whether `ino` is a directory whose listing never changes: the kernel may keep what it
    /// read of it (`FOPEN_CACHE_DIR`).
    pub fn dir_is_immutable(&self, ino: u64) -> bool {
        self.inodes.node(ino).is_some_and(|n| is_immutable_dir(&n))
    }

    fn open_listing(&self, ino: u64, entries: Snapshot) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        sync::lock(&self.dirs).insert(fh, (ino, entries));
        fh
    }

    /// The listing taken when `fh` was opened.
    pub fn listing(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        sync::lock(&self.dirs)
            .get(&fh)
            .map(|(_, entries)| Arc::clone(entries))
            .ok_or_else(|| Error::BadHandle(format!("no open directory {fh}")))
    }

    pub fn releasedir(&self, fh: u64) {
        let released = sync::lock(&self.dirs).remove(&fh);
        if let Some((ino, entries)) = released {
            drop(entries);
            let mut shared = sync::lock(&self.shared);
            if shared.get(&ino).is_some_and(|w| w.strong_count() == 0) {
                shared.remove(&ino);
            }
        }
    }

    /// The entries of a directory, `.` and `..` first, as they are now.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        let mut out = vec![DirEntry { ino, kind: FileKind::Directory, name: ".".into(), node: None }];
        let Shape::Dir(dir) = node.shape() else { return Err(Error::NotADirectory(format!("inode {ino}"))) };
        let parent = self.inodes.listed(&dir.parent());
        out.push(DirEntry { ino: parent, kind: FileKind::Directory, name: "..".into(), node: None });
        // Entries keep their nodes (for `entry_plus`) only in listings small enough to keep: a
        // larger one holds what it held without them, and its entries hand out no reference.
        let children = dir.children(&self.layout)?;
        let keep_nodes = children.len() + 2 <= sync::lock(&self.kept).bound;
        for (name, n) in children {
            let ino = self.inodes.listed(&n);
            out.push(DirEntry { ino, kind: n.shape().kind(), name, node: keep_nodes.then(|| Box::new(n)) });
        }
        Ok(out)
    }

    /// Whether the entries of directory `ino` are answered with their attributes in a listing
    /// read with them ([`Fs::entry_plus`]): where lookups read only what may be in memory
    /// ([`crate::layout::Dir::looks_up_at_hand`]: `rootfs/`).
    pub fn lists_at_hand(&self, ino: u64) -> bool {
        self.inodes.node(ino).is_some_and(|n| matches!(n.shape(), Shape::Dir(d) if d.looks_up_at_hand()))
    }

    /// Entry `i` of `listing` read with attributes (FUSE `READDIRPLUS`), without waiting, and
    /// whether the kernel now holds one more reference to its inode (a caller whose reply had no
    /// room for the entry gives that back: [`Fs::forget`]).
    ///
    /// Where `at_hand` ([`Fs::lists_at_hand`]: `rootfs/`), the entry kept its node, and its
    /// layers' indexes are in memory, it is answered as a lookup is, with its attributes and
    /// their TTL, and counted: a first read of every file of a tree after a `find` then sends no
    /// LOOKUP, only the READ. Such a file or directory is also remembered with its place in
    /// `listing`, for reading ahead ([`Fs::read_ahead_of`]).
    ///
    /// Anything else gets its kind alone with TTL 0, so the kernel looks it up before any use,
    /// as after a plain listing (its `d_type` is right either way). It is counted under the
    /// number a lookup gives its node, so that lookup finds the inode the kernel made (one
    /// LOOKUP per name used, as without attributes). In a listing too large to keep (more than
    /// [`FsConfig::kept_listing_entries`](super::FsConfig::kept_listing_entries) entries, whose
    /// entries kept no node), the number is the one a plain listing gives: the kernel's if it
    /// holds the node (then counted, as the kernel counts it), else a fresh one that is not kept,
    /// which names nothing here (the kernel's next lookup of the name answers another number, so
    /// it drops that inode and forgets it). So a flood of tags or repositories allocates nothing.
    /// An entry whose inode the kernel holds already gets, instead of its kind alone, the
    /// attributes the kernel was last told of it, with TTL 0: the kernel takes an entry's
    /// attributes for its inode, and a bare size of 0 would cut the pages of an open file (and
    /// fault a mapping of it with SIGBUS). `.` and `..` are never counted: the kernel links
    /// neither.
    pub fn entry_plus(&self, at_hand: bool, listing: &Snapshot, i: usize) -> Option<(Attr, bool)> {
        let e = listing.get(i)?;
        let bare = Attr { ino: e.ino, ttl: Duration::ZERO, ..self.bare_attr(e.kind) };
        if e.name == "." || e.name == ".." {
            return Some((bare, false));
        }
        let repeat = |ino: u64| match self.inodes.last_told_ino(ino) {
            Some(t) if t.kind == e.kind => Attr { ino, ttl: Duration::ZERO, ..t },
            _ => Attr { ino, ..bare.clone() },
        };
        // Past the bound on what listings may hold, an entry is handed out as a plain listing
        // numbers it (a `find` of a huge tree holds no more than its lookups would).
        let node = e.node.as_ref().filter(|_| self.inodes.held().0 < self.plus_inodes);
        let Some(node) = node else {
            let held = self.inodes.hold(e.ino);
            return Some((if held { repeat(e.ino) } else { bare.clone() }, held));
        };
        // Attributes (a TTL the kernel keeps) only for what the policy allows now.
        let attr = if at_hand && self.at_hand.check_gate(node).is_ok() {
            self.attr_in(&self.at_hand, node).ok()
        } else {
            None
        };
        let ino = self.inodes.lookup(node);
        let Some(attr) = attr else {
            let answer = repeat(ino);
            self.inodes.told(&answer);
            return Some((answer, true));
        };
        if matches!(e.kind, FileKind::File | FileKind::Directory) {
            sync::lock(&self.ahead).place(ino, listing, i);
        }
        let answer = Attr { ino, ..attr };
        self.inodes.told(&answer);
        Some((answer, true))
    }
}

fn is_immutable_dir(node: &Node) -> bool {
    matches!(node.shape(), Shape::Dir(d) if d.stability() == Stability::Immutable)
}

/// A directory's listing as taken at `opendir`, shared by its handles.
pub type Snapshot = Arc<Vec<DirEntry>>;

/// Whether two listings show the same names of the same kinds, in the same order.
fn same_names(a: &[DirEntry], b: &[DirEntry]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.kind == y.kind && x.name == y.name)
}
