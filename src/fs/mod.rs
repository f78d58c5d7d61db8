//! The filesystem core, free of FUSE: lookup, getattr, forget, readdir, readlink, open, read
//! and release over inode numbers, answering with plain Rust values or an [`Error`]. `fuse.rs`
//! is a thin adapter over this; tests drive it directly with a fake registry client.
//!
//! What a name means and what a directory lists is the layout's ([`crate::layout`], which also
//! says what each operation may cost). This keeps what the kernel deals in: inode numbers
//! ([`Inodes`]), open handles and directory snapshots, attributes (permissions from the kind,
//! TTLs from its [`Stability`]), reads, and the answers to calls of the wrong shape.
//!
//! Its rooms: `config` (what it is told), `attr` (what the kernel is told of a node),
//! `inodes` (numbers both ways), `listings` (directory snapshots, kept and read with
//! attributes), `by_inode` (reads with no open), `ahead` (the next files of a directory walked
//! in listing order, for the kernel's page cache), and this one (lookups, links, opens, reads).

mod ahead;
mod attr;
mod by_inode;
mod config;
pub mod inodes;
mod listings;

pub use attr::{Attr, Xattr, rdev, xattr_list, xattr_reply, xattr_value};
use by_inode::ByIno;
pub use config::FsConfig;
use listings::{Kept, Snapshot};

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::layout::{FileKind, Layout, Meta, Node, Shape, Stability};
use crate::store::{Content, Store};
use crate::sync;
use inodes::{Inodes, ROOT_INO};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: String,
    /// What the entry names; `None` for `.` and `..`. A listing read with attributes hands the
    /// kernel a reference to it ([`Fs::entry_plus`]).
    pub node: Option<Box<Node>>,
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
    /// Where files listed with attributes are in their listings, for reading ahead
    /// ([`Fs::read_ahead_of`]).
    ahead: Mutex<ahead::Ahead>,
    /// [`FsConfig::plus_inodes`].
    plus_inodes: usize,
}

impl Fs {
    pub fn new(store: Arc<Store>, config: FsConfig) -> Fs {
        let layout = Layout::new(store, &config.readahead, config.views);
        Fs::with_layout(layout, config)
    }

    /// A core whose layout asks `gate` (a signature policy) before it shows a manifest's content.
    pub fn gated(store: Arc<Store>, config: FsConfig, gate: Arc<crate::policy::Gate>) -> Fs {
        let mut layout = Layout::new(store, &config.readahead, config.views);
        layout.set_gate(gate);
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
                memory: config.inode_memory,
                failed: lru::LruCache::new(crate::capacity::nonzero(config.failed_opens)),
                hold: config.failed_open_hold,
            }),
            volatile_at_lookup: std::sync::atomic::AtomicBool::new(false),
            swept_at: AtomicU64::new(0),
            ahead: Mutex::new(ahead::Ahead::new(&config)),
            plus_inodes: config.plus_inodes,
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
        let node = self.node(ino)?;
        self.layout.check_gate(&node)?;
        let meta = node.shape().meta(&self.layout)?;
        xattr_value(meta.as_ref().map_or(&[][..], |m| &m.xattrs), name, size)
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Xattr> {
        let node = self.node(ino)?;
        self.layout.check_gate(&node)?;
        let meta = node.shape().meta(&self.layout)?;
        xattr_list(meta.as_ref().map_or(&[][..], |m| &m.xattrs), size)
    }

    /// A manifest's content the policy refuses now is refused here too (the kernel may hold its
    /// inode from before).
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        self.layout.check_gate(&node)?;
        let attr = Attr { ino, ..self.attr_of(&node)? };
        self.inodes.told(&attr);
        Ok(attr)
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
        let attr = Attr { ino: self.inodes.lookup(&child), ..attr };
        self.inodes.told(&attr);
        Ok(attr)
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

    pub fn readlink(&self, ino: u64) -> Result<String> {
        let node = self.node(ino)?;
        self.layout.check_gate(&node)?;
        match node.shape() {
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

    /// A read of open file `fh`; one of a file read by parts may fetch (the adapter asks
    /// [`Fs::read_now`] first, and this on a thread of its own).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        read_content(&self.handle(fh)?, offset, size)
    }

    /// [`Fs::read`] if it needs no waiting; `None` if it may fetch.
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
        match self.handle(fh) {
            Ok(content) => read_content_now(&content, offset, size),
            Err(e) => Some(Err(e)),
        }
    }

    fn handle(&self, fh: u64) -> Result<Content> {
        sync::lock(&self.handles).get(&fh).cloned().ok_or_else(|| Error::BadHandle(format!("no open file {fh}")))
    }

    pub fn release(&self, fh: u64) {
        sync::lock(&self.handles).remove(&fh);
    }

    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }
}

/// The file the kernel may read directly for `content` (passthrough): only a whole verified
/// file. A range's file holds other bytes around it.
fn passthrough_file(content: &Content) -> Option<Arc<std::fs::File>> {
    match content {
        Content::File(f) => Some(Arc::clone(f)),
        Content::Manifest(_) | Content::Memory(_) | Content::Range { .. } | Content::Parts(_) => None,
    }
}

/// [`read_content`] if it needs no waiting: `None` for a file read by parts whose bytes asked
/// are not all verified and in memory.
fn read_content_now(content: &Content, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
    match content {
        Content::Parts(parts) => parts.read_now(offset, size),
        _ => Some(read_content(content, offset, size)),
    }
}

/// Up to `size` bytes of `content` from `offset`; none at or past its end. A file read by parts
/// may fetch (callers that must not wait use [`read_content_now`]).
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
        Content::Parts(parts) => parts.read(offset, size),
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
