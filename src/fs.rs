//! The filesystem core, free of FUSE: lookup, getattr, forget, readdir, readlink, open, read
//! and release over inode numbers, answering with plain Rust values or an [`Error`]. `fuse.rs`
//! is a thin adapter over this; tests drive it directly with a fake registry client.
//!
//! What a name means and what a directory lists is the layout's ([`crate::layout`], which also
//! says what each operation may cost). This keeps what the kernel deals in: inode numbers
//! ([`Inodes`]), open handles and directory snapshots, attributes (permissions from the kind,
//! TTLs from its [`Stability`]), reads, and the answers to calls of the wrong shape.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::inodes::{Inodes, ROOT_INO};
use crate::layout::{FileKind, Layout, Meta, Node, Shape, Stability};
use crate::limits;
use crate::platform::Platform;
use crate::readahead::ReadaheadConfig;
use crate::store::{Content, Store};
use crate::sync;

/// What the core tells the kernel to trust, and for how long, and how tag links are read ahead.
/// `Default` is what regfs runs with; `cli.rs` builds it (`--tag-ttl`; the rest have no option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// How long the kernel may trust digest-addressed entries and attributes, and names the
    /// grammar rules out (a day).
    pub immutable_ttl: Duration,
    /// How long the kernel may trust entries and attributes of names the registry may move
    /// (tags, the catalog), and their absence (60 s; `--tag-ttl`).
    pub tag_ttl: Duration,
    pub readahead: ReadaheadConfig,
    /// Decoded layers', indexes' and `rootfs/`'s bounds (`--index-memory`, `--layer-entries`,
    /// `--layer-index-size`, `--rootfs-layers`).
    pub views: crate::views::ViewsConfig,
    /// Entries of immutable directories' listings kept after their handles close
    /// ([`limits::KEPT_LISTING_ENTRIES`]; tests lower it).
    pub kept_listing_entries: usize,
    /// Contents kept for reads by inode with `--no-open` ([`limits::INODE_HANDLES`]; tests
    /// lower it).
    pub inode_handles: usize,
    /// The platform `current` links choose for, in index directories (`--platform`; by default
    /// this machine's).
    pub platform: Platform,
    /// Whether the registry is Docker Hub, where a one-component name means an official image
    /// (`MOUNT/alpine/tags` links to `library/alpine/tags`; false).
    pub docker_hub: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            immutable_ttl: Duration::from_secs(24 * 3600),
            tag_ttl: Duration::from_secs(60),
            readahead: ReadaheadConfig::default(),
            views: crate::views::ViewsConfig::default(),
            kept_listing_entries: limits::KEPT_LISTING_ENTRIES,
            inode_handles: limits::INODE_HANDLES,
            platform: Platform::host(),
            docker_hub: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits with setuid, setgid and sticky (12 bits). Kinds without metadata of
    /// their own are read-only: 0555 directories, 0444 files, 0777 links.
    pub mode: u16,
    /// The owner; `None` is the mounting user (every kind without metadata of its own).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nlink: u32,
    /// A device's number in the kernel's encoding ([`rdev`]); 0 for anything else.
    pub rdev: u32,
    /// How long the kernel may cache this entry and its attributes.
    pub ttl: Duration,
    pub mtime: SystemTime,
}

/// `major:minor` as the kernel reads a FUSE `rdev` (`new_decode_dev`): 12 bits of major and
/// 20 of minor, the low byte of the minor first.
pub fn rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// An answer to getxattr or listxattr: the length asked for (size 0), or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// The FUSE size protocol: size 0 asks the length; a buffer smaller than the value is ERANGE.
pub fn xattr_reply(value: &[u8], size: u32) -> Result<Xattr> {
    let len = u32::try_from(value.len()).map_err(|_| Error::TooLarge(format!("{} bytes", value.len())))?;
    match size {
        0 => Ok(Xattr::Size(len)),
        s if s < len => Err(Error::BufferTooSmall(format!("{len} bytes into {s}"))),
        _ => Ok(Xattr::Data(value.to_vec())),
    }
}

/// The names of `xattrs`, each followed by a NUL, as listxattr(2) gives them.
pub fn xattr_list(xattrs: &[(String, Vec<u8>)], size: u32) -> Result<Xattr> {
    let mut names = Vec::new();
    for (name, _) in xattrs {
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    xattr_reply(&names, size)
}

/// The value of `name` in `xattrs`; ENODATA if it is not there.
pub fn xattr_value(xattrs: &[(String, Vec<u8>)], name: &OsStr, size: u32) -> Result<Xattr> {
    match xattrs.iter().find(|(n, _)| OsStr::new(n) == name) {
        Some((_, value)) => xattr_reply(value, size),
        None => Err(Error::NoAttribute(name.to_string_lossy().into_owned())),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: String,
    /// What the entry names; `None` for `.` and `..`. A listing read with attributes hands the
    /// kernel a reference to it ([`Fs::entry_plus`]).
    pub node: Option<Node>,
}

pub struct Fs {
    layout: Layout,
    /// The same layout for inline answers ([`Layout::at_hand`]): [`Fs::lookup_now`].
    at_hand: Layout,
    inodes: Inodes,
    immutable_ttl: Duration,
    tag_ttl: Duration,
    mounted_at: SystemTime,
    handles: Mutex<HashMap<u64, Content>>,
    /// Listings of open directories, by handle, with the directory's inode.
    dirs: Mutex<HashMap<u64, (u64, Snapshot)>>,
    /// The listing open handles of each directory share, while any is open: a new `opendir` that
    /// finds the same names reuses it, so a directory open many times is held once.
    shared: Mutex<HashMap<u64, std::sync::Weak<Vec<DirEntry>>>>,
    /// Listings of immutable directories, kept after their handles close (see [`Kept`]).
    kept: Mutex<Kept>,
    /// Never 0: a read with handle 0 is a read by inode (the kernel sends no open: `--no-open`).
    next_fh: AtomicU64,
    /// `--no-open`: what reads of each inode are served from, opened at its first read and let go
    /// when the kernel forgets the inode ([`Fs::read_ino`]), or when more than
    /// [`FsConfig::inode_handles`] are held (the least recently read first; read again, it opens
    /// again).
    by_ino: Mutex<ByIno>,
    /// `--no-open`: status files are rendered at lookup, each a new inode ([`Fs::lookup`]).
    volatile_at_lookup: std::sync::atomic::AtomicBool,
    /// [`BlobCache::evictions`](crate::store::BlobCache::evictions) when the contents kept by
    /// inode were last looked over for files the cache deleted ([`Fs::let_go_of_evicted`]).
    swept_at: AtomicU64,
}

/// Contents kept for reads by inode (`--no-open`): at most so many (the LRU's capacity, which
/// bounds descriptors), and contents held in memory (small blobs, manifests) at most
/// [`limits::INODE_MEMORY`] bytes in all, the least recently read let go first.
struct ByIno {
    lru: lru::LruCache<u64, Content>,
    /// Bytes of the in-memory contents kept.
    bytes: usize,
    /// Opens that failed lately, by inode and reader (the requester's thread id), and when: the
    /// answer to that reader's reads of that inode for [`limits::FAILED_OPEN_HOLD`] (at most
    /// [`limits::FAILED_OPENS`] at once).
    failed: lru::LruCache<(u64, u32), (std::time::Instant, Node, Error)>,
}

impl ByIno {
    fn weight(content: &Content) -> usize {
        match content {
            Content::Memory(bytes) => bytes.len(),
            Content::Manifest(doc) => doc.bytes().len(),
            Content::File(_) | Content::Range { .. } => 0,
        }
    }

    fn pop(&mut self, ino: u64) -> Option<Content> {
        let content = self.lru.pop(&ino)?;
        self.bytes -= ByIno::weight(&content);
        Some(content)
    }

    /// Keep `content` for `ino` (not kept yet); what was let go, for the caller to drop unlocked.
    fn push(&mut self, ino: u64, content: Content) -> Vec<Content> {
        self.bytes += ByIno::weight(&content);
        let mut out = Vec::new();
        if let Some((_, old)) = self.lru.push(ino, content) {
            self.bytes -= ByIno::weight(&old);
            out.push(old);
        }
        while self.bytes > limits::INODE_MEMORY && self.lru.len() > 1 {
            let Some((_, old)) = self.lru.pop_lru() else { break };
            self.bytes -= ByIno::weight(&old);
            out.push(old);
        }
        out
    }
}

/// Listings of immutable directories (a manifest's, a rootfs directory: functions of a verified
/// manifest and its layers, so they never change), by node, most recently opened kept first,
/// holding at most `bound` entries in all. A directory kept opens inline ([`Fs::opendir_now`]):
/// a warm `find` of a rootfs starts no thread per directory. Keyed by node, not inode number: a
/// number the kernel forgot may name another node later.
struct Kept {
    lru: lru::LruCache<Node, Snapshot>,
    entries: usize,
    bound: usize,
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
    pub fn new(store: Arc<Store>, config: FsConfig) -> Fs {
        let layout = Layout::new(store, &config.readahead, config.views);
        Fs::with_layout(layout, config)
    }

    /// A core reading image layers (`rootfs/`) through `images` (tests give their own).
    pub fn with_images(store: Arc<Store>, config: FsConfig, images: Arc<dyn crate::layout::ImageLayers>) -> Fs {
        let layout = Layout::with_images(store, images, &config.readahead, config.views);
        Fs::with_layout(layout, config)
    }

    /// The layout under this core (tests look at its counters).
    #[cfg(test)]
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn with_layout(mut layout: Layout, config: FsConfig) -> Fs {
        layout.choose_platform(&config.platform);
        layout.read_names_as_docker_hub(config.docker_hub);
        Fs {
            at_hand: layout.at_hand(),
            layout,
            inodes: Inodes::default(),
            immutable_ttl: config.immutable_ttl,
            tag_ttl: config.tag_ttl,
            mounted_at: SystemTime::now(),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
            kept: Mutex::new(Kept { lru: lru::LruCache::unbounded(), entries: 0, bound: config.kept_listing_entries }),
            next_fh: AtomicU64::new(1),
            by_ino: Mutex::new(ByIno {
                lru: lru::LruCache::new(crate::capacity::nonzero(config.inode_handles)),
                bytes: 0,
                failed: lru::LruCache::new(crate::capacity::nonzero(limits::FAILED_OPENS)),
            }),
            volatile_at_lookup: std::sync::atomic::AtomicBool::new(false),
            swept_at: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &Store {
        self.layout.store()
    }

    /// The node behind `ino`. An unknown number is `NotFound` (ENOENT), which is what the kernel
    /// sees for a forgotten inode today; nothing asks for ESTALE.
    fn node(&self, ino: u64) -> Result<Node> {
        self.inodes.node(ino).ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// Attributes of `node`, under inode number 0: the caller puts in the number (the one asked
    /// about, or the one a lookup hands out). What the kind says of itself (`meta`) wins; kinds
    /// that say nothing are read-only and the mounting user's.
    fn attr(&self, shape: &Shape, size: u64, meta: Option<Meta>) -> Attr {
        let (kind, ttl) = (shape.kind(), self.ttl(shape.stability()));
        if let Some(m) = meta {
            let (uid, gid) = (Some(m.uid), Some(m.gid));
            return Attr {
                ino: 0,
                kind,
                size,
                mode: m.mode & 0o7777,
                uid,
                gid,
                nlink: m.nlink,
                rdev: rdev(m.rdev.0, m.rdev.1),
                ttl,
                mtime: m.mtime,
            };
        }
        Attr { size, ttl, ..self.bare_attr(kind) }
    }

    /// What a kind without metadata of its own shows: read-only, the mounting user's, size 0,
    /// under inode number 0, TTL 0.
    fn bare_attr(&self, kind: FileKind) -> Attr {
        let mode = match kind {
            FileKind::Directory => 0o555,
            FileKind::Symlink => 0o777,
            FileKind::File | FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => 0o444,
        };
        let nlink = if kind == FileKind::Directory { 2 } else { 1 };
        let (size, ttl, mtime) = (0, Duration::ZERO, self.mounted_at);
        Attr { ino: 0, kind, size, mode, uid: None, gid: None, nlink, rdev: 0, ttl, mtime }
    }

    fn ttl(&self, stability: Stability) -> Duration {
        match stability {
            Stability::Immutable => self.immutable_ttl,
            Stability::Named => self.tag_ttl,
            Stability::Volatile => Duration::ZERO,
        }
    }

    /// The attributes of `node`; may ask the registry for what it does not know yet.
    fn attr_of(&self, node: &Node) -> Result<Attr> {
        self.attr_in(&self.layout, node)
    }

    /// [`Fs::attr_of`] through layout `cx`.
    fn attr_in(&self, cx: &Layout, node: &Node) -> Result<Attr> {
        let shape = node.shape();
        let (size, settled) = match &shape {
            Shape::Dir(d) => (d.check(cx).map(|()| 0)?, true),
            // Settledness first: a size read after it said yes is final.
            Shape::File(f) => {
                let settled = f.settled(cx);
                (f.size(cx)?, settled)
            }
            Shape::Link(l) => (l.size(cx), l.settled()),
            Shape::Special(_) => (0, true),
        };
        let attr = self.attr(&shape, size, shape.meta(cx)?);
        // A size not final yet (a layer not decoded yet) is not cached by the kernel.
        Ok(if settled { attr } else { Attr { ttl: Duration::ZERO, ..attr } })
    }

    /// Extended attribute `name` of `ino` (the FUSE size protocol: [`xattr_reply`]).
    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let meta = self.node(ino)?.shape().meta(&self.layout)?;
        xattr_value(meta.as_ref().map_or(&[][..], |m| &m.xattrs), name, size)
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Xattr> {
        let meta = self.node(ino)?.shape().meta(&self.layout)?;
        xattr_list(meta.as_ref().map_or(&[][..], |m| &m.xattrs), size)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        Ok(Attr { ino, ..self.attr_of(&self.node(ino)?)? })
    }

    /// How long the kernel may remember that `parent` has no entry called `name` (a negative
    /// entry): a day where the answer cannot change (inside a manifest, or a name the grammar
    /// rules out), `tag_ttl` where it can (a tag may be pushed).
    pub fn negative_ttl(&self, parent: u64, error: &Error) -> Duration {
        match (self.inodes.node(parent), error) {
            (_, Error::InvalidName(_)) => self.immutable_ttl,
            (Some(p), _) if p.shape().stability() == Stability::Immutable => self.immutable_ttl,
            _ => self.tag_ttl,
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        self.lookup_in(&self.layout, &self.node(parent)?, name)
    }

    /// [`Fs::lookup`] if it needs no waiting: in a directory whose lookups read only manifests
    /// and layers' indexes ([`crate::layout::Dir::looks_up_at_hand`]: `rootfs/`), when those are
    /// in memory. `None` if anything else would be needed (then `lookup` gets it, and may wait).
    /// A name that is not there is `Some(Err(NotFound))`, as from `lookup`.
    pub fn lookup_now(&self, parent: u64, name: &OsStr) -> Option<Result<Attr>> {
        let node = self.inodes.node(parent)?;
        let Shape::Dir(d) = node.shape() else { return None };
        if !d.looks_up_at_hand() {
            return None;
        }
        match self.lookup_in(&self.at_hand, &node, name) {
            Err(Error::NotAtHand(what)) => {
                log::trace!("lookup {name:?}: {what} is not at hand");
                None
            }
            answer => Some(answer),
        }
    }

    /// The lookup of `name` in `parent` through layout `cx`.
    fn lookup_in(&self, cx: &Layout, parent: &Node, name: &OsStr) -> Result<Attr> {
        let name = name.to_str().ok_or_else(|| Error::InvalidName(name.to_string_lossy().into_owned()))?;
        let child = match parent.shape() {
            Shape::Dir(d) => d.child(cx, name)?,
            Shape::File(_) | Shape::Link(_) | Shape::Special(_) => {
                return Err(Error::NotADirectory(format!("looking up {name}")));
            }
        };
        // With `--no-open` the kernel keeps the pages of every file it reads (no open is sent, so
        // none can say `FOPEN_DIRECT_IO`), and an inode's pages live as long as the inode. So a
        // status file is rendered here, and every lookup is a node of its own: a new inode
        // number. Its entry's TTL is 0, so each path walk (each `cat`) looks it up again; the
        // kernel, told another number than the one its dentry holds, drops that dentry and makes
        // a new inode, whose pages start empty. Its size is exactly the rendering's, and a
        // `getattr` (the kernel asks at a read past the size it knows) says the same, so a read
        // sequence sees one snapshot, whole, however the status moves meanwhile. The old inode's
        // rendering goes when the kernel forgets it.
        let child = match child {
            Node::StatusFile(f) if self.volatile_at_lookup.load(Ordering::Relaxed) => {
                Node::StatusFile(f.rendered_now(&self.layout))
            }
            other => other,
        };
        let attr = self.attr_in(cx, &child)?;
        // Counted only once the answer is sure: the kernel holds a reference from this reply on.
        Ok(Attr { ino: self.inodes.lookup(&child), ..attr })
    }

    /// Render status files at lookup, each a new inode, not at open (`--no-open`: the kernel
    /// sends no open, and keeps pages).
    pub fn render_volatile_at_lookup(&self) {
        self.volatile_at_lookup.store(true, Ordering::Relaxed);
    }

    /// The kernel dropped `n` references to `ino` (FUSE `forget`): at none, its inode is freed,
    /// and the handle its reads were served from (`--no-open`) is released.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            let content = sync::lock(&self.by_ino).pop(ino);
            drop(content);
        }
    }

    /// Repositories whose tag-reading position readahead remembers now.
    pub fn readahead_streams(&self) -> usize {
        self.layout.readahead_streams()
    }

    /// Inodes held now (the root included), and the most held at once.
    pub fn inodes_held(&self) -> (usize, usize) {
        self.inodes.held()
    }

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
            if let Some(listing) = sync::lock(&self.kept).lru.get(&node).cloned() {
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
        for (name, n) in dir.children(&self.layout)? {
            out.push(DirEntry { ino: self.inodes.listed(&n), kind: n.shape().kind(), name, node: Some(n) });
        }
        Ok(out)
    }

    /// Whether the entries of directory `ino` are answered with their attributes in a listing
    /// read with them ([`Fs::entry_plus`]): where lookups read only what may be in memory
    /// ([`crate::layout::Dir::looks_up_at_hand`]: `rootfs/`).
    pub fn lists_at_hand(&self, ino: u64) -> bool {
        self.inodes.node(ino).is_some_and(|n| matches!(n.shape(), Shape::Dir(d) if d.looks_up_at_hand()))
    }

    /// Entry `e` of a listing read with attributes (FUSE `READDIRPLUS`), as a lookup would
    /// answer it, without waiting. Where `at_hand` ([`Fs::lists_at_hand`]) and the entry's
    /// layers' indexes are in memory, its attributes with their TTL: a first read of every file
    /// of a tree after a `find` then sends no LOOKUP, only the READ. Anything else gets its
    /// kind alone, with TTL 0, so the kernel looks it up before any use, as after a plain
    /// listing (its `d_type` is right either way).
    ///
    /// The kernel takes a reference to each entry's inode, as from a lookup, so each is counted
    /// here; a caller whose reply had no room for the entry gives it back ([`Fs::forget`]).
    /// `.` and `..` carry the numbers a plain listing gives and no reference: the kernel links
    /// neither.
    pub fn entry_plus(&self, at_hand: bool, e: &DirEntry) -> Attr {
        let bare = Attr { ino: e.ino, ttl: Duration::ZERO, ..self.bare_attr(e.kind) };
        let Some(node) = &e.node else { return bare };
        let attr = match at_hand {
            true => self.attr_in(&self.at_hand, node).unwrap_or(bare),
            false => bare,
        };
        Attr { ino: self.inodes.lookup(node), ..attr }
    }

    pub fn readlink(&self, ino: u64) -> Result<String> {
        match self.node(ino)?.shape() {
            Shape::Link(l) => l.target(&self.layout),
            Shape::Dir(_) | Shape::File(_) | Shape::Special(_) => Err(Error::NotASymlink(format!("inode {ino}"))),
        }
    }

    /// [`Fs::readlink`] if it needs no waiting (the target known now); `None` if it may have to
    /// ask the registry, or if `ino` is not a symlink (then `readlink` says what is wrong).
    pub fn readlink_now(&self, ino: u64) -> Option<Result<String>> {
        let node = self.inodes.node(ino)?;
        let Shape::Link(l) = node.shape() else { return None };
        l.target_now(&self.layout)
    }

    /// The mount is going: downloads in flight stop, and their waiters get an error.
    pub fn cancel(&self) {
        self.layout.store().blob_cache().cancel();
    }

    /// Open a file: its verified content is ready (downloaded if need be) when this returns. The
    /// verified cache file behind it, if it has one, is handed out too, so the adapter can let the
    /// kernel read that file directly (FUSE passthrough).
    pub fn open_file(&self, ino: u64) -> Result<Opened> {
        let (content, stability) = self.content(ino)?;
        Ok(self.opened(content, stability))
    }

    /// What [`Fs::open_file`] opens, with no handle.
    fn content(&self, ino: u64) -> Result<(Content, Stability)> {
        Ok(match self.node(ino)?.shape() {
            Shape::File(f) => (f.open(&self.layout)?, f.stability()),
            Shape::Dir(_) => return Err(Error::IsADirectory(format!("inode {ino}"))),
            Shape::Link(_) => {
                return Err(Error::BadArgument(format!("inode {ino}: a symlink is not opened, its target is")));
            }
            // The kernel opens FIFOs itself and refuses devices on a `nodev` mount: never here.
            Shape::Special(_) => {
                return Err(Error::BadArgument(format!("inode {ino}: a device or FIFO is not opened through regfs")));
            }
        })
    }

    /// [`Fs::open_file`] if it needs no waiting (the content verified and at hand); `None` if
    /// it may have to fetch, decode or hash, or if `ino` is not a file (then `open_file` says
    /// what is wrong).
    pub fn open_now(&self, ino: u64) -> Option<Result<Opened>> {
        let node = self.inodes.node(ino)?;
        let Shape::File(f) = node.shape() else { return None };
        Some(f.open_now(&self.layout)?.map(|content| self.opened(content, f.stability())))
    }

    fn opened(&self, content: Content, stability: Stability) -> Opened {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let volatile = stability == Stability::Volatile;
        let file = if volatile { None } else { passthrough_file(&content) };
        sync::lock(&self.handles).insert(fh, content);
        Opened { fh, file, volatile }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let content = sync::lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::BadHandle(format!("no open file {fh}")))?;
        read_content(&content, offset, size)
    }

    pub fn release(&self, fh: u64) {
        sync::lock(&self.handles).remove(&fh);
    }

    /// A read of `ino` with no handle (`--no-open`: the kernel sends no open, and reads with
    /// handle 0). Served from the inode's own content, opened at its first read (as
    /// [`Fs::open_file`] opens: it may download, decode and verify, so the adapter calls this on
    /// a thread of its own) and kept until the kernel forgets the inode. An error opening is this
    /// read's; the next read tries again, but one by the same `reader` (the requester's thread
    /// id) within [`limits::FAILED_OPEN_HOLD`] gets the same error: the kernel's second READ of
    /// one `read(2)`.
    pub fn read_ino(&self, ino: u64, reader: u32, offset: u64, size: u32) -> Result<Vec<u8>> {
        read_content(&self.kept_or_opened(ino, reader)?, offset, size)
    }

    /// [`Fs::read_ino`] if it needs no waiting: the inode's content is kept, or verified and at
    /// hand (as for [`Fs::open_now`]). `None` if opening may wait, or `ino` is not a file (then
    /// `read_ino` says what is wrong).
    pub fn read_ino_now(&self, ino: u64, reader: u32, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
        self.let_go_of_evicted();
        let content = match self.ino_content(ino, reader) {
            Some(Ok(content)) => content,
            Some(Err(e)) => return Some(Err(e)),
            None => {
                let node = self.inodes.node(ino)?;
                let Shape::File(f) = node.shape() else { return None };
                match f.open_now(&self.layout)? {
                    Ok(content) => self.keep_ino_content(ino, content),
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        Some(read_content(&content, offset, size))
    }

    /// Open `ino`'s content if none is kept (`--no-open`): what an open does, at the kernel's
    /// first `getattr` of an open file (its reads ask for the size first: a layer not decoded
    /// yet says 0, and the kernel reads nothing past what it was told). It may download, decode
    /// and verify.
    pub fn open_ino(&self, ino: u64, reader: u32) -> Result<()> {
        self.kept_or_opened(ino, reader).map(drop)
    }

    /// `ino`'s kept content; else the error `reader`'s last open of it failed with, if that was
    /// within [`limits::FAILED_OPEN_HOLD`]; else its content opened (it may wait) and kept.
    fn kept_or_opened(&self, ino: u64, reader: u32) -> Result<Content> {
        self.let_go_of_evicted();
        if let Some(kept) = self.ino_content(ino, reader) {
            return kept;
        }
        match self.content(ino) {
            Ok((content, _)) => Ok(self.keep_ino_content(ino, content)),
            Err(e) => {
                // Thread id 0 is every requester the daemon's pid namespace cannot see (another
                // container's): not one reader, so nothing is held for it.
                let held = reader != 0 && !matches!(e, Error::Interrupted(_));
                if let (true, Some(node)) = (held, self.inodes.node(ino)) {
                    sync::lock(&self.by_ino).failed.put((ino, reader), (std::time::Instant::now(), node, e.clone()));
                }
                Err(e)
            }
        }
    }

    /// `ino`'s kept content, or `reader`'s failed open of it while still held; `None` if
    /// neither.
    fn ino_content(&self, ino: u64, reader: u32) -> Option<Result<Content>> {
        let mut by_ino = sync::lock(&self.by_ino);
        if let Some(content) = by_ino.lru.get(&ino) {
            return Some(Ok(content.clone()));
        }
        // The node is compared, not only the number: a number the kernel forgot may name another
        // node since.
        match by_ino.failed.get(&(ino, reader)) {
            Some((at, node, e))
                if at.elapsed() < limits::FAILED_OPEN_HOLD && self.inodes.node(ino).as_ref() == Some(node) =>
            {
                Some(Err(e.clone()))
            }
            Some(_) => {
                by_ino.failed.pop(&(ino, reader));
                None
            }
            None => None,
        }
    }

    /// Keep `content`, just opened, as `ino`'s; what to read from: the content another read kept
    /// first, if one did. Not kept if the kernel forgot the inode meanwhile (no `forget` would
    /// let it go): `forget` frees the inode before it takes `by_ino`, so one of the two always
    /// sees the other. Reads take a clone of what is kept, so one let go (forgotten, or past
    /// the bound) under a read in flight still serves that read.
    ///
    /// A file already unlinked once kept (evicted while it was being opened, perhaps counted by
    /// a sweep that ran before this keep) is let go again: one `fstat` per inode opened.
    fn keep_ino_content(&self, ino: u64, content: Content) -> Content {
        let mut by_ino = sync::lock(&self.by_ino);
        if let Some(kept) = by_ino.lru.get(&ino) {
            return kept.clone();
        }
        if self.inodes.node(ino).is_none() {
            return content;
        }
        let evicted = by_ino.push(ino, content.clone());
        drop(by_ino);
        drop(evicted);
        if let Some(file) = content.file().filter(|f| unlinked(f)) {
            let mut by_ino = sync::lock(&self.by_ino);
            let ours = by_ino.lru.peek(&ino).and_then(Content::file).is_some_and(|kept| Arc::ptr_eq(kept, file));
            let let_go = if ours { by_ino.pop(ino) } else { None };
            drop(by_ino);
            drop(let_go);
        }
        // The download or decode that made `content` may have evicted files others keep.
        self.let_go_of_evicted();
        content
    }

    /// Let go of kept contents whose cache file was evicted since the last look (`st_nlink` 0):
    /// a file deleted while open keeps its disk space until closed, and the kernel may never
    /// forget an inode whose dentry it caches, so without this a user reading many large blobs
    /// once each would have regfs hold up to [`limits::INODE_HANDLES`] evicted files, past
    /// `--cache-size`. Read again, such an inode opens again (fetched or decoded anew). Costs an
    /// atomic load and swap when nothing was evicted (no lock), else an `fstat` per file kept,
    /// by the one thread that saw the count move.
    fn let_go_of_evicted(&self) {
        let evictions = self.layout.store().blob_cache().evictions();
        if self.swept_at.swap(evictions, Ordering::AcqRel) == evictions {
            return;
        }
        let files: Vec<(u64, Arc<std::fs::File>)> = {
            let by_ino = sync::lock(&self.by_ino);
            by_ino.lru.iter().filter_map(|(&ino, content)| Some((ino, Arc::clone(content.file()?)))).collect()
        };
        let gone: Vec<_> = files.into_iter().filter(|(_, file)| unlinked(file)).collect();
        if gone.is_empty() {
            return;
        }
        let mut let_go = Vec::new();
        {
            let mut by_ino = sync::lock(&self.by_ino);
            for (ino, file) in &gone {
                if by_ino.lru.peek(ino).and_then(Content::file).is_some_and(|kept| Arc::ptr_eq(kept, file)) {
                    let_go.extend(by_ino.pop(*ino));
                }
            }
        }
        log::debug!("let go of {} kept contents whose cache files were evicted", let_go.len());
        drop(let_go);
    }

    /// Contents held by inode now (`--no-open`), and handles open (tests).
    pub fn handles_held(&self) -> (usize, usize) {
        (sync::lock(&self.by_ino).lru.len(), sync::lock(&self.handles).len())
    }

    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }
}

/// `file` has no name left: the cache deleted it (it keeps its disk space while open).
fn unlinked(file: &std::fs::File) -> bool {
    file.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0)
}

fn is_immutable_dir(node: &Node) -> bool {
    matches!(node.shape(), Shape::Dir(d) if d.stability() == Stability::Immutable)
}

/// The file the kernel may read directly for `content` (passthrough): only a whole verified
/// file. A range's file holds other bytes around it.
fn passthrough_file(content: &Content) -> Option<Arc<std::fs::File>> {
    match content {
        Content::File(f) => Some(Arc::clone(f)),
        Content::Manifest(_) | Content::Memory(_) | Content::Range { .. } => None,
    }
}

/// Up to `size` bytes of `content` from `offset`; none at or past its end.
fn read_content(content: &Content, offset: u64, size: u32) -> Result<Vec<u8>> {
    let slice = |bytes: &[u8]| {
        let start = (offset.min(bytes.len() as u64)) as usize;
        let end = start.saturating_add(size as usize).min(bytes.len());
        bytes[start..end].to_vec()
    };
    match content {
        Content::Manifest(doc) => Ok(slice(doc.bytes())),
        Content::Memory(bytes) => Ok(slice(bytes)),
        Content::File(file) => pread(file, offset, size as usize, false),
        Content::Range { file, start, len } => {
            let want = len.saturating_sub(offset).min(u64::from(size));
            if want == 0 {
                return Ok(Vec::new());
            }
            // A range is verified to lie inside its file: ending early is an error, not EOF.
            let at = start.checked_add(offset).ok_or_else(|| Error::Io(format!("a range at {start} + {offset}")))?;
            pread(file, at, want as usize, true)
        }
    }
}

/// `size` bytes of `file` from `offset` (fewer at its end, an error then if `exact`). Read into
/// the buffer's spare capacity: a READ asks up to 1 MiB, and zeroing a buffer first, to be
/// overwritten at once, was a tenth of the CPU of serving a large blob's READs.
fn pread(file: &std::fs::File, offset: u64, size: usize, exact: bool) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    while buf.len() < size {
        let filled = buf.len();
        let at = offset.checked_add(filled as u64).and_then(|at| libc::off_t::try_from(at).ok());
        let at = at.ok_or_else(|| Error::Io(format!("a read of {size} bytes at {offset}: past any file")))?;
        // SAFETY: the pointer is to the vector's spare capacity, `size - filled` bytes of it,
        // which is all `pread` may write; the length then grows by what it wrote, no more.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().add(filled).cast(), size - filled, at) };
        match usize::try_from(n) {
            Ok(0) => break,
            // SAFETY: `pread` wrote these `n` bytes, at most `size - filled`, in the capacity.
            Ok(n) => unsafe { buf.set_len(filled + n.min(size - filled)) },
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
        }
    }
    if exact && buf.len() < size {
        let filled = buf.len();
        return Err(Error::Io(format!("a range of {size} bytes at {offset} ends after {filled}: its file is shorter")));
    }
    Ok(buf)
}

/// An open file: its handle, and the verified cache file behind it when the content is on disk.
pub struct Opened {
    pub fh: u64,
    pub file: Option<Arc<std::fs::File>>,
    /// Content that is true only now (`.regfs/status`): the kernel must not keep its pages,
    /// and reads it through to regfs (direct I/O), whatever size `stat` said.
    pub volatile: bool,
}

/// A directory's listing as taken at `opendir`, shared by its handles.
type Snapshot = Arc<Vec<DirEntry>>;

/// Whether two listings show the same names of the same kinds, in the same order.
fn same_names(a: &[DirEntry], b: &[DirEntry]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.kind == y.kind && x.name == y.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    /// A core over one image `r:v1`, its cache directory, and the image's manifest digest.
    fn core() -> (Fs, tempfile::TempDir, String) {
        let client = Faulty::new(Fake::default());
        let (d, _) = client.image("r", "v1", b"layer");
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Store::new(Arc::new(client), &config).expect("store");
        (Fs::new(Arc::new(store), FsConfig::default()), cache, d.to_string())
    }

    fn walk(fs: &Fs, path: &str) -> Attr {
        path.split('/').fold(fs.getattr(fs.root_ino()).expect("root"), |at, part| {
            fs.lookup(at.ino, OsStr::new(part)).unwrap_or_else(|e| panic!("{path}: {part}: {e}"))
        })
    }

    /// Calls of the wrong shape get the errno a local filesystem gives, never EIO.
    #[test]
    fn calls_of_the_wrong_shape_get_the_errno_of_a_local_filesystem() {
        let (fs, _cache, d) = core();
        let dir = walk(&fs, &format!("r/manifests/{d}"));
        let file = walk(&fs, &format!("r/manifests/{d}/manifest.json"));
        let link = walk(&fs, "r/tags/v1");
        let errno = |r: Result<()>| r.expect_err("an error").errno();
        assert_eq!(errno(fs.open_file(dir.ino).map(drop)), libc::EISDIR, "open of a directory");
        assert_eq!(errno(fs.open_file(link.ino).map(drop)), libc::EINVAL, "open of a symlink");
        assert_eq!(errno(fs.lookup(file.ino, OsStr::new("x")).map(drop)), libc::ENOTDIR, "lookup in a file");
        assert_eq!(errno(fs.readdir(file.ino).map(drop)), libc::ENOTDIR, "readdir of a file");
        assert_eq!(errno(fs.readlink(dir.ino).map(drop)), libc::EINVAL, "readlink of a directory");
        assert_eq!(errno(fs.readlink(file.ino).map(drop)), libc::EINVAL, "readlink of a file");
        assert_eq!(errno(fs.read(u64::MAX, 0, 10).map(drop)), libc::EBADF, "read of no open file");
        assert_eq!(errno(fs.listing(u64::MAX).map(drop)), libc::EBADF, "listing of no open directory");
        assert_eq!(errno(fs.getattr(u64::MAX - 1).map(drop)), libc::ENOENT, "an inode never given out");
        // And the right calls work, so the errors above are about shape, not a broken core.
        let fh = fs.open_file(file.ino).expect("open").fh;
        assert!(!fs.read(fh, 0, 4096).expect("read").is_empty());
        fs.release(fh);
        assert_eq!(errno(fs.read(fh, 0, 10).map(drop)), libc::EBADF, "read after release");
    }
    /// Kinds that say nothing of their own metadata keep what they always showed: 0555
    /// directories, 0444 files, 0777 links, owned by the mounting user.
    #[test]
    fn existing_kinds_keep_0444_0555_0777_and_the_mounting_user() {
        let (fs, _cache, d) = core();
        for (path, perm) in [
            (format!("r/manifests/{d}"), 0o555),
            (format!("r/manifests/{d}/layers"), 0o555),
            (format!("r/manifests/{d}/manifest.json"), 0o444),
            (format!("r/manifests/{d}/config.json"), 0o444),
            ("r/tags/v1".to_string(), 0o777),
        ] {
            let a = walk(&fs, &path);
            assert_eq!(a.mode, perm, "{path}");
            assert_eq!((a.uid, a.gid, a.rdev), (None, None, 0), "{path}: owned by the mounting user");
            assert_eq!(a.nlink, if a.kind == FileKind::Directory { 2 } else { 1 }, "{path}");
        }
    }

    /// getxattr/listxattr answer as FUSE wants: size 0 asks the length, a buffer too small is
    /// ERANGE, a name not there is ENODATA; kinds without xattrs have none and list nothing.
    #[test]
    fn xattr_size_protocol() {
        let value = b"\x01\x00\x00\x02";
        assert_eq!(xattr_reply(value, 0).expect("size"), Xattr::Size(4));
        assert_eq!(xattr_reply(value, 3).expect_err("too small").errno(), libc::ERANGE);
        assert_eq!(xattr_reply(value, 4).expect("exact"), Xattr::Data(value.to_vec()));
        assert_eq!(xattr_reply(value, 4096).expect("larger"), Xattr::Data(value.to_vec()));
        assert_eq!(xattr_reply(b"", 0).expect("empty value"), Xattr::Size(0));
        let names = [("user.a".to_string(), b"1".to_vec()), ("security.capability".to_string(), value.to_vec())];
        let list = b"user.a\0security.capability\0";
        assert_eq!(xattr_list(&names, 0).expect("size"), Xattr::Size(list.len() as u32));
        assert_eq!(xattr_list(&names, 5).expect_err("too small").errno(), libc::ERANGE);
        assert_eq!(xattr_list(&names, 64).expect("list"), Xattr::Data(list.to_vec()));
        assert_eq!(xattr_value(&names, OsStr::new("user.a"), 0).expect("user.a"), Xattr::Size(1));
        assert_eq!(xattr_value(&names, OsStr::new("user.b"), 0).expect_err("absent").errno(), libc::ENODATA);

        let (fs, _cache, d) = core();
        let file = walk(&fs, &format!("r/manifests/{d}/manifest.json"));
        let dir = walk(&fs, &format!("r/manifests/{d}"));
        for ino in [file.ino, dir.ino, fs.root_ino()] {
            assert_eq!(fs.getxattr(ino, OsStr::new("user.x"), 0).expect_err("none").errno(), libc::ENODATA);
            assert_eq!(fs.getxattr(ino, OsStr::new("user.x"), 64).expect_err("none").errno(), libc::ENODATA);
            assert_eq!(fs.listxattr(ino, 0).expect("list size"), Xattr::Size(0));
            assert_eq!(fs.listxattr(ino, 64).expect("list"), Xattr::Data(Vec::new()));
        }
        assert_eq!(fs.listxattr(u64::MAX - 1, 0).expect_err("no inode").errno(), libc::ENOENT);
    }

    /// `/.regfs/status` and `status.json`: found by lookup from the root only (never listed),
    /// never cached by the kernel (TTL 0, opened for direct I/O), rendered anew at each open
    /// (two opens around a download see different counters; one during it sees the download in
    /// flight), and reading them asks the registry nothing.
    #[test]
    fn status_files_are_volatile_hidden_and_cost_no_request() {
        use crate::testkit::paths::Paths;
        let client = Arc::new(Faulty::new(Fake::default()));
        let big: Vec<u8> = (0..(3usize << 20)).map(|i| (i % 251) as u8).collect();
        let (d, layer) = client.image("r", "v1", &big);
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Store::new(Arc::clone(&client) as Arc<dyn crate::registry::Client>, &config).expect("store");
        let fs = Arc::new(Fs::new(Arc::new(store), FsConfig::default()));
        let json = |fs: &Fs| -> serde_json::Value {
            serde_json::from_slice(&fs.cat(".regfs/status.json").expect("status.json")).expect("JSON")
        };

        assert!(!fs.ls("").expect("ls /").iter().any(|n| n.starts_with('.')), "the root lists .regfs");
        let dir = fs.walk(".regfs").expect(".regfs looks up");
        assert_eq!(dir.kind, FileKind::Directory);
        assert_eq!(fs.ls(".regfs").expect("ls .regfs"), ["status", "status.json"]);
        for name in ["status", "status.json"] {
            let a = fs.walk(&format!(".regfs/{name}")).expect(name);
            assert_eq!((a.kind, a.ttl), (FileKind::File, Duration::ZERO), "{name}: not volatile");
            assert!(a.size > 0, "{name}: a size cat can see");
            let opened = fs.open_file(a.ino).expect("open");
            assert!(opened.volatile && opened.file.is_none(), "{name}: direct I/O, never passthrough");
            fs.release(opened.fh);
        }
        assert_eq!(fs.walk(".regfs/nope").expect_err("nope").errno(), libc::ENOENT);

        let calls = client.calls().len();
        let first = json(&fs);
        for _ in 0..5 {
            json(&fs);
            assert!(!fs.cat(".regfs/status").expect("status").is_empty());
        }
        assert_eq!(client.calls().len(), calls, "reading the status asked the registry: {:?}", client.calls());
        assert_eq!(first["version"], 1);
        assert!(first["in_flight"].as_array().expect("in_flight").is_empty(), "{first}");

        // While the layer downloads, the status shows it with its progress.
        let seen: Arc<Mutex<Vec<(serde_json::Value, String)>>> = Arc::default();
        let (for_hook, seen_by_hook) = (Arc::downgrade(&fs), Arc::clone(&seen));
        client.on_read(Arc::new(move || {
            if let Some(fs) = for_hook.upgrade() {
                let text = String::from_utf8(fs.cat(".regfs/status").expect("status")).expect("UTF-8");
                sync::lock(&seen_by_hook).push((json(&fs), text));
            }
        }));
        let path = format!("r/manifests/{d}/layers/0.tar");
        assert_eq!(fs.cat(&path).expect("layer"), big);
        let seen = sync::lock(&seen).clone();
        let progress: Vec<(u64, u64)> = seen
            .iter()
            .filter_map(|(s, _)| {
                let job = s["in_flight"].as_array()?.iter().find(|j| j["digest"] == layer.to_string())?.clone();
                assert_eq!((job["kind"].as_str(), job["repo"].as_str()), (Some("download"), Some("r")), "{job}");
                Some((job["done"].as_u64()?, job["total"].as_u64()?))
            })
            .collect();
        assert!(
            progress.iter().any(|&(done, total)| 0 < done && done < total && total == big.len() as u64),
            "no download in flight with its progress: {progress:?}"
        );
        assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0), "progress went back: {progress:?}");
        let shown = seen.iter().any(|(_, t)| t.contains(&layer.to_string()) && t.contains(" of 3.0 MiB"));
        assert!(shown, "the text never showed the download: {:?}", seen.last());

        let second = json(&fs);
        assert!(second["in_flight"].as_array().expect("in_flight").is_empty(), "a finished download stays: {second}");
        // (The fake counts no requests: the mount test reads those.)
        let files = |s: &serde_json::Value| s["cache"]["files"].as_u64().expect("files");
        assert_eq!(files(&second), files(&first) + 1, "{first}\n{second}");
        assert!(second["cache"]["used"].as_u64().expect("used") >= big.len() as u64, "{second}");
        assert_eq!(second["cache"]["limit"].as_u64(), Some(config.cache_size), "{second}");
    }

    /// A range is a window on a shared file: reads at any offset see only its bytes, end at its
    /// end, and never reach the bytes beyond it; it is never handed out for passthrough.
    #[test]
    fn a_range_reads_only_its_slice_at_any_offset() {
        let mut tmp = tempfile::tempfile().expect("tmp");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut tmp, &bytes).expect("write");
        let file = Arc::new(tmp);
        let (start, len) = (1000u64, 3000u64);
        let range = Content::Range { file: Arc::clone(&file), start, len };
        let want = |o: u64, n: u64| bytes[(start + o) as usize..(start + o + n) as usize].to_vec();
        assert_eq!(read_content(&range, 0, 100).expect("at 0"), want(0, 100));
        assert_eq!(read_content(&range, 0, 1 << 20).expect("all"), want(0, len), "a big read stops at the end");
        assert_eq!(read_content(&range, 2900, 4096).expect("across the end"), want(2900, 100));
        assert_eq!(read_content(&range, 1234, 7).expect("inside"), want(1234, 7));
        assert!(read_content(&range, len, 4096).expect("at the end").is_empty());
        assert!(read_content(&range, len + 5000, 4096).expect("past the end").is_empty());
        assert!(read_content(&range, u64::MAX - 10, 4096).expect("far past").is_empty());
        let empty = Content::Range { file: Arc::clone(&file), start: 10_000, len: 0 };
        assert!(read_content(&empty, 0, 4096).expect("empty").is_empty());
        // A range whose file is shorter than it claims (a bug, or a file cut behind regfs's back)
        // is an error, never a short read that looks like the end.
        let short = Content::Range { file: Arc::clone(&file), start: 9_000, len: 2_000 };
        assert_eq!(read_content(&short, 0, 4096).expect_err("short").errno(), libc::EIO);
        // A whole file reads to its end, in a buffer larger than what is left, and past its end
        // reads nothing.
        let whole = Content::File(Arc::clone(&file));
        assert_eq!(read_content(&whole, 0, 1 << 20).expect("all"), bytes, "a big read stops at the end");
        assert_eq!(read_content(&whole, 9_990, 4096).expect("the tail"), bytes[9_990..].to_vec());
        assert!(read_content(&whole, 20_000, 4096).expect("past the end").is_empty());
        assert!(passthrough_file(&range).is_none(), "a range's file starts before its bytes");
        assert!(passthrough_file(&Content::File(file)).is_some(), "whole files keep passthrough");
    }
}
