//! The kernel adapter: fuser callbacks in, calls on the FUSE-free core ([`crate::fs::Fs`]) out,
//! and the core's errors turned into errno here, once, with one log line each.
//!
//! Operations that may wait on the network (lookup, getattr, readlink, opendir, open, the
//! xattr calls) run on their own thread, so a slow download never holds up `ls` elsewhere; an
//! open whose content is ready (verified and at hand: [`Fs::open_now`]) and a lookup in
//! `rootfs/` whose layers' indexes are in memory ([`Fs::lookup_now`]) are answered inline. `read` (verified memory or
//! the cache file) and `readdir` (the listing taken at `opendir`) never wait, and run inline
//! (but with `--no-open` a read is also what opens: see "No open, no release"). Files are all digest-addressed, so every
//! open keeps the kernel's page cache (`FOPEN_KEEP_CACHE`) and entries of digest-addressed things
//! carry a long TTL; names (tags, the catalog) carry `--tag-ttl`. The one exception is
//! `.regfs/status` (volatile): TTL 0, opened with `FOPEN_DIRECT_IO` and never passthrough, so each
//! read sees the status as rendered at its open (with `--no-open`, at its lookup: see "No open,
//! no release").
//!
//! Every error given to a reader goes through `errno()`, which logs it and records it for
//! `.regfs/status` ([`crate::telemetry::Errors`]).
//!
//!
//! # No open, no release (the default; `--open` turns it off)
//! With [`MountConfig::no_open`], init asks `FUSE_NO_OPEN_SUPPORT` (and not passthrough, which
//! is set up at an open), and the first OPEN of a file is answered ENOSYS before the core is
//! asked anything (so no handle is made that nothing would release). The kernel then sets
//! `no_open` for the connection: every open of a file succeeds in the kernel with handle 0 and
//! `FOPEN_KEEP_CACHE`, and no OPEN or RELEASE of a file is sent again (OPENDIR stays). With no
//! `FOPEN_NOFLUSH` either, a `close` would send FLUSH: answered ENOSYS too, after which the
//! kernel sends none. The core never hands out handle 0 (`Fs::next_fh` starts at 1), so:
//! - `read` with handle 0 is a read by inode ([`Fs::read_ino`]): from the inode's content,
//!   opened at its first read (as an open opens), inline when the content is ready
//!   ([`Fs::read_ino_now`]), else on a thread entered in [`Waiting`] as a waiting open is (so a
//!   killed reader gets EINTR, and the unmount EIO). It is kept until the kernel forgets the
//!   inode, at most [`crate::fs::FsConfig::inode_handles`] of them (the least recently read let go
//!   first, opened again if read again: the bound on descriptors they hold);
//! - `getattr` with handle 0 (the kernel asks it of an open file before a read past the size it
//!   knows, and at `SEEK_END`) opens the inode's content first: a decoded layer not decoded yet
//!   says size 0 until it is, and the kernel reads nothing past the size it was told;
//! - an error an open would have given (a digest mismatch, a failed download) is the read's.
//!   One `read(2)` of pages the kernel does not have sends a readahead READ and, when that
//!   fails, a READ of the first page: the failure is held for the same reader (thread id) and
//!   inode for [`crate::fs::FsConfig::failed_open_hold`], so the second READ does not download and
//!   retry all over again (a failing registry would be asked twice what `--open` asks it);
//!   another process, or the same one a second later, tries again (a requester the daemon's
//!   pid namespace cannot see has thread id 0, shared by all such: nothing is held for it);
//! - `.regfs/status`: the kernel keeps the pages of every file, and an inode's pages live as
//!   long as the inode. So each lookup renders the status and is a new inode, of exactly the
//!   rendering's size (`Fs::lookup`). Its entry's TTL is 0, so each path walk looks it up, and
//!   the kernel, told another inode number than its dentry holds, drops the dentry and makes a
//!   new inode with no pages: each `cat` sees the status as of its lookup, whole, and a read
//!   sequence sees one rendering (a getattr says the same size). Not `FUSE_AUTO_INVAL_DATA`:
//!   it is one switch for every file, and with it the kernel refreshes a volatile file's
//!   attributes at each read, so a rendering whose size or mtime moved between two reads of
//!   one `cat` would drop the pages read so far and mix two snapshots; nothing of that kind
//!   can happen to an inode whose rendering is fixed at its lookup.
//!
//! # What the kernel keeps
//! - Listings carry their entries' attributes (`FUSE_DO_READDIRPLUS`): in `rootfs/`, where
//!   they are at hand, with their TTLs, so a walk that lists a tree leaves the kernel what the
//!   first read of each file would otherwise look up; elsewhere the kind alone with TTL 0, so
//!   the kernel looks the entry up before any use ([`Fs::entry_plus`]). Each entry is a
//!   reference the kernel holds and gives back with FORGET, as from a lookup.
//! - Links' targets are kept by the kernel for the life of their inodes
//!   (`FUSE_CACHE_SYMLINKS`). Every link is immutable but a tag's, and a tag that moved is
//!   another inode ([`crate::layout::Tag::target`]).
//!
//! Why these choices, and what each costs, measured: doc/PERFORMANCE.md.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};

use crate::error::Error;
use crate::fs::{Attr, Fs, Xattr};
use crate::layout::FileKind;
mod ahead;
mod backing;
mod config;
mod waiting;

pub use ahead::AheadHandle;
use backing::Backing;
pub use config::MountConfig;
pub use waiting::Canceller;
use waiting::{Answer, Caller, Waiting};

pub struct FuseAdapter {
    core: Arc<Fs>,
    waiting: Arc<Waiting>,
    uid: u32,
    gid: u32,
    config: MountConfig,
    /// Whether to try FUSE passthrough (asked for, and possible as far as init can tell; the
    /// kernel may still refuse it).
    want_passthrough: bool,
    /// Set at init when the kernel granted passthrough.
    backing: Option<Arc<Backing>>,
    /// Set at init when `--no-open` was asked and the kernel can take ENOSYS from an open as
    /// "send no more" (`FUSE_NO_OPEN_SUPPORT`).
    no_open: bool,
    /// Threads started for requests (a count for tests: ready opens start none).
    spawned: std::sync::atomic::AtomicU64,
    /// Where first-page reads are told, to put the next files of a walk in the page cache.
    ahead: ahead::Ahead,
}

impl Drop for FuseAdapter {
    fn drop(&mut self) {
        self.waiting.closed.store(true, Ordering::SeqCst);
        self.waiting.wake.notify_all();
    }
}

impl FuseAdapter {
    pub fn new(core: Arc<Fs>, config: MountConfig) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let waiting = Arc::new(Waiting::default());
        let (watcher, for_watcher) = (Arc::clone(&waiting), Arc::clone(&core));
        let every = config.watch_every;
        let watch = move || watcher.watch(for_watcher, every);
        if let Err(e) = std::thread::Builder::new().name("regfs-watch".into()).spawn(watch) {
            log::warn!("no watchdog thread ({e}): a killed reader waits for its download to end");
        }
        let want_passthrough = config.passthrough && !config.no_open;
        if config.no_open {
            // Whether the kernel takes it or not: a status file rendered at lookup is right both
            // ways (opened, it is still read through, as of its lookup, just before the open).
            core.render_volatile_at_lookup();
        }
        let ahead = ahead::Ahead::start(&core);
        FuseAdapter {
            core,
            waiting,
            uid,
            gid,
            config,
            want_passthrough,
            backing: None,
            no_open: false,
            spawned: Default::default(),
            ahead,
        }
    }

    /// What ends the waiting at unmount.
    /// What attaches the session's notifier, so that the next files of a walk can be put in
    /// the kernel's page cache ([`ahead`]).
    pub fn read_ahead(&self) -> AheadHandle {
        self.ahead.handle()
    }

    pub fn canceller(&self) -> Canceller {
        Canceller { waiting: Arc::clone(&self.waiting), core: Arc::clone(&self.core) }
    }
}

/// The errno for `e`, logged once: ENOENT quietly, everything else as a warning naming the URL
/// or digest the error carries; and recorded for `.regfs/status` (counted, the last kept).
fn errno(fs: &Fs, op: &str, e: &Error) -> Errno {
    fs.store().errors().record(op, e);
    if e.is_not_found() {
        log::debug!("{op}: {e}");
    } else {
        log::warn!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Let the kernel keep many requests in flight (readahead, many readers). Blocking work
        // does not tie up the session's threads, because it runs on threads of its own (`spawn`).
        let _ = config.set_max_background(self.config.max_background);
        let _ = config.set_congestion_threshold(self.config.congestion_threshold);
        let _ = config.set_max_readahead(self.config.max_readahead);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS | fuser::InitFlags::FUSE_ASYNC_READ);
        // The kernel keeps each link's target for the life of its inode (Linux 4.20+): every
        // link is immutable but a tag's, and a tag that moved is another inode
        // ([`crate::layout::Tag::target`]), so a walk through `tags/<tag>/` reads no link.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        // Listings carry their entries' attributes (`readdirplus`): a `find` leaves the kernel
        // what the first read of each file in `rootfs/` would otherwise look up.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        // `--no-open`: the first open of a file is answered ENOSYS, and the kernel then sends no
        // OPEN nor RELEASE of files again (directories keep OPENDIR). Passthrough is given up:
        // it is set up at an open. A kernel without the capability gets ordinary opens.
        if self.config.no_open {
            self.no_open = config.add_capabilities(fuser::InitFlags::FUSE_NO_OPEN_SUPPORT).is_ok();
            log::info!(
                "no OPEN of files {}",
                if self.no_open { "(--no-open): reads are by inode" } else { "not offered by this kernel" }
            );
        }
        // Passthrough (Linux 6.9+): reads of a verified cache file go straight to that file in
        // the kernel, at local-file speed. The cache lives on an ordinary filesystem, so a stack
        // depth of 1 suffices. Where the kernel says no, reads take the ordinary path.
        // Registering backing files needs CAP_SYS_ADMIN: without root, do not ask.
        // SAFETY: geteuid cannot fail and touches no memory.
        if self.want_passthrough && !self.no_open && unsafe { libc::geteuid() } != 0 {
            log::info!("FUSE passthrough needs root; reads are served by regfs");
            self.want_passthrough = false;
        }
        if self.want_passthrough && !self.no_open {
            let granted = config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            log::info!("FUSE passthrough {}", if granted { "on" } else { "not offered by this kernel" });
            if granted {
                self.backing = Some(Arc::default());
            }
        }
        Ok(())
    }

    /// Inline when nothing it needs can wait (a name in `rootfs/` whose layers' indexes are in
    /// memory: [`Fs::lookup_now`]; the first read of every file of a tree looks each one up),
    /// else on a thread.
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (uid, gid, blksize) = (self.uid, self.gid, self.config.blksize);
        if let Some(result) = self.core.lookup_now(parent.0, name) {
            return answer_lookup(&self.core, parent, name, result, reply, (uid, gid, blksize));
        }
        let name = name.to_owned();
        self.spawn_waiting(req, format!("lookup {name:?}"), reply, move |fs, ticket| {
            let result = fs.lookup(parent.0, &name);
            let Some(reply) = ticket.take() else {
                // Answered already (EINTR, or cancelled): the kernel never got this reference.
                if let Ok(a) = &result {
                    fs.forget(a.ino, 1);
                }
                return;
            };
            answer_lookup(fs, parent, &name, result, reply, (uid, gid, blksize))
        });
    }

    /// The kernel dropped `nlookup` references to `ino`: the core frees the inode at none. (A
    /// `BATCH_FORGET` arrives here once per inode, through fuser's default `batch_forget`.) Inline:
    /// no reply, no waiting.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    /// The session ends: say how many inodes the kernel still held, and the most it ever did.
    fn destroy(&mut self) {
        let (held, peak) = self.core.inodes_held();
        log::info!("inode table at unmount: {held} held, at most {peak} at once");
    }

    /// With handle 0 (`--no-open`: the kernel asks, for an open file, before a read past the size
    /// it knows, and at `SEEK_END`), the file is opened first, as an open would: a layer not
    /// decoded yet says size 0 until then, and the kernel would read nothing. An error opening
    /// (a digest mismatch, a failed download) is this getattr's, so the read's.
    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let (uid, gid, blksize) = (self.uid, self.gid, self.config.blksize);
        let open_first = fh == Some(FileHandle(0));
        let reader = req.pid();
        self.spawn_waiting(req, format!("getattr {ino}"), reply, move |fs, ticket| {
            // An error opening is logged and counted as the read's it is.
            let opened = if open_first { fs.open_ino(ino.0, reader).map_err(|e| ("read", e)) } else { Ok(()) };
            let result = opened.and_then(|()| fs.getattr(ino.0).map_err(|e| ("getattr", e)));
            let Some(reply) = ticket.take() else { return };
            match result {
                Ok(a) => reply.attr(&a.ttl, &file_attr(&a, uid, gid, blksize)),
                Err((op, e)) => reply.error(errno(fs, &format!("{op} {ino}"), &e)),
            }
        });
    }

    /// Inline when the target is known (a tag resolved within its TTL: every path through
    /// `tags/<tag>/` reads that link), else on a thread.
    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        if let Some(result) = self.core.readlink_now(ino.0) {
            return match result {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(errno(&self.core, &format!("readlink {ino}"), &e)),
            };
        }
        self.spawn_waiting(req, format!("readlink {ino}"), reply, move |fs, ticket| {
            let result = fs.readlink(ino.0);
            let Some(reply) = ticket.take() else { return };
            match result {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => reply.error(errno(fs, &format!("readlink {ino}"), &e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.open_for(Caller::of(req), ino, flags, reply);
    }

    /// Inline from an open handle. Handle 0 (the core hands out none: the kernel sent no open,
    /// `--no-open`) is a read by inode: inline when the inode's content is kept, or is
    /// ready, else on a thread of its own, as a waiting open is.
    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if offset == 0 {
            self.ahead.read(ino.0);
        }
        if fh.0 == 0 {
            return self.read_ino_for(Caller::of(req), ino, offset, size, reply);
        }
        if let Some(result) = self.core.read_now(fh.0, offset, size) {
            return answer_read(&self.core, ino, result, reply);
        }
        // A file read by parts whose bytes asked are not at hand: fetched on a thread of its own.
        self.spawn_waiting_for(Caller::of(req), format!("read {ino}"), reply, move |fs, ticket| {
            let result = fs.read(fh.0, offset, size);
            let Some(reply) = ticket.take() else { return };
            answer_read(fs, ino, result, reply)
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.core.release(fh.0);
        if let Some(b) = &self.backing {
            b.release(fh.0);
        }
        reply.ok();
    }

    /// Nothing to write back. With `--no-open` no open says `FOPEN_NOFLUSH`, so the kernel would
    /// send a FLUSH at every `close`: ENOSYS makes it send none again (`fc->no_flush`), and the
    /// `close` still succeeds.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        reply.ok();
    }

    /// Extended attributes as the kind gives them (rootfs entries: the layer's); other kinds
    /// have none. On a thread: a rootfs entry's metadata may need its layer's index.
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_owned();
        self.spawn_waiting(req, format!("getxattr {ino} {name:?}"), reply, move |fs, ticket| {
            let result = fs.getxattr(ino.0, &name, size);
            let Some(reply) = ticket.take() else { return };
            answer_xattr(fs, reply, result, &format!("getxattr {ino} {name:?}"));
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn_waiting(req, format!("listxattr {ino}"), reply, move |fs, ticket| {
            let result = fs.listxattr(ino.0, size);
            let Some(reply) = ticket.take() else { return };
            answer_xattr(fs, reply, result, &format!("listxattr {ino}"));
        });
    }

    /// Inline when the listing is kept (an immutable directory listed before), else on a
    /// thread. An immutable directory's listing never changes: the kernel may keep what it read
    /// of it (`FOPEN_CACHE_DIR`, and `FOPEN_KEEP_CACHE` so a new open does not drop that).
    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let answer = move |fs: &Fs, result: crate::error::Result<u64>, reply: ReplyOpen| match result {
            Ok(fh) => {
                let flags = if fs.dir_is_immutable(ino.0) {
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(errno(fs, &format!("opendir {ino}"), &e)),
        };
        if let Some(result) = self.core.opendir_now(ino.0) {
            return answer(&self.core, result, reply);
        }
        self.spawn_waiting(req, format!("opendir {ino}"), reply, move |fs, ticket| {
            let result = fs.opendir(ino.0);
            let Some(reply) = ticket.take() else {
                if let Ok(fh) = result {
                    fs.releasedir(fh);
                }
                return;
            };
            answer(fs, result, reply)
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    /// Served from the listing taken at `opendir`: no network, so inline.
    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.core.listing(fh.0) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(e.ino), (i + 1) as u64, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&self.core, &format!("readdir {ino}"), &e)),
        }
    }

    /// The listing taken at `opendir`, each entry with its attributes where they are at hand
    /// ([`Fs::entry_plus`]), so that a walk that lists a tree (`find`) leaves the kernel what the
    /// first read of each file would otherwise look up. Inline: nothing here waits.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let (uid, gid, blksize) = (self.uid, self.gid, self.config.blksize);
        match self.core.listing(fh.0) {
            Ok(entries) => {
                let at_hand = self.core.lists_at_hand(ino.0);
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let Some((a, counted)) = self.core.entry_plus(at_hand, &entries, i) else { break };
                    let attr = file_attr(&a, uid, gid, blksize);
                    if reply.add(INodeNo(a.ino), (i + 1) as u64, &e.name, &a.ttl, &attr, Generation(0)) {
                        // No room: this entry is not in the reply, so the kernel has no reference.
                        if counted {
                            self.core.forget(a.ino, 1);
                        }
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&self.core, &format!("readdirplus {ino}"), &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let block = self.config.blksize;
        reply.statfs(0, 0, 0, 0, 0, block, 255, block);
    }
}

/// What an open is answered with ([`ReplyOpen`]; tests answer with a probe).
trait OpenAnswer: Answer {
    fn backing(&self, file: &std::fs::File) -> std::io::Result<BackingId>;
    fn opened(self, fh: FileHandle, flags: FopenFlags);
    fn opened_passthrough(self, fh: FileHandle, flags: FopenFlags, id: &BackingId);
}

impl OpenAnswer for ReplyOpen {
    fn backing(&self, file: &std::fs::File) -> std::io::Result<BackingId> {
        self.open_backing(file)
    }
    fn opened(self, fh: FileHandle, flags: FopenFlags) {
        ReplyOpen::opened(self, fh, flags)
    }
    fn opened_passthrough(self, fh: FileHandle, flags: FopenFlags, id: &BackingId) {
        ReplyOpen::opened_passthrough(self, fh, flags, id)
    }
}

impl FuseAdapter {
    /// Open `ino` for `caller`: inline when the content is ready (verified and at hand, so
    /// nothing can wait: a warm `xargs cat` of thousands of files starts no thread per file),
    /// else on a thread of its own that the watchdog can answer for.
    fn open_for<R: OpenAnswer>(&self, caller: Caller, ino: INodeNo, flags: OpenFlags, reply: R) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.fail(Errno::EROFS);
            return;
        }
        if self.no_open {
            // Before the core is asked anything: no handle is made that nothing would release.
            // The kernel takes this as "send no open again" and opens the file itself, handle 0.
            reply.fail(Errno::ENOSYS);
            return;
        }
        let backing = self.backing.clone();
        if let Some(result) = self.core.open_now(ino.0) {
            return answer_open(&self.core, ino, result, backing, reply);
        }
        self.spawn_waiting_for(caller, format!("open {ino}"), reply, move |fs, ticket| {
            let result = fs.open_file(ino.0);
            let Some(reply) = ticket.take() else {
                // The requester left (or the mount is going): nobody will release this.
                if let Ok(opened) = result {
                    fs.release(opened.fh);
                }
                return;
            };
            answer_open(fs, ino, result, backing, reply)
        });
    }
}

/// What a read is answered with ([`ReplyData`]; tests answer with a probe).
trait ReadAnswer: Answer {
    fn data(self, bytes: &[u8]);
}

impl ReadAnswer for ReplyData {
    fn data(self, bytes: &[u8]) {
        ReplyData::data(self, bytes)
    }
}

impl FuseAdapter {
    /// Read `ino` with no handle (`--no-open`): inline when it needs no waiting, else on a thread
    /// of its own that the watchdog can answer for (a killed reader, the unmount). What the
    /// thread opened stays kept for the inode even if the reader left: `forget` lets it go.
    fn read_ino_for<R: ReadAnswer>(&self, caller: Caller, ino: INodeNo, offset: u64, size: u32, reply: R) {
        let reader = caller.tid;
        if let Some(result) = self.core.read_ino_now(ino.0, reader, offset, size) {
            return answer_read(&self.core, ino, result, reply);
        }
        self.spawn_waiting_for(caller, format!("read {ino}"), reply, move |fs, ticket| {
            let result = fs.read_ino(ino.0, reader, offset, size);
            let Some(reply) = ticket.take() else { return };
            answer_read(fs, ino, result, reply)
        });
    }
}

/// Answer a lookup with its entry (owned by `owner`'s uid and gid where the entry names none,
/// with its block size), a negative entry for a name that is not there, or its error through
/// `errno()`.
fn answer_lookup(
    fs: &Fs,
    parent: INodeNo,
    name: &OsStr,
    result: crate::error::Result<Attr>,
    reply: ReplyEntry,
    (uid, gid, blksize): (u32, u32, u32),
) {
    match result {
        Ok(a) => reply.entry(&a.ttl, &file_attr(&a, uid, gid, blksize), Generation(0)),
        // A negative entry (inode 0): the kernel remembers the name is missing for the TTL
        // instead of asking again on every `stat` or shell completion.
        Err(e) if e.is_not_found() => {
            log::debug!("lookup {name:?}: {e}");
            reply.entry(&fs.negative_ttl(parent.0, &e), &negative_entry(), Generation(0))
        }
        Err(e) => reply.error(errno(fs, &format!("lookup {name:?}"), &e)),
    }
}

/// Answer a read by inode with its bytes, or its error through `errno()`.
fn answer_read<R: ReadAnswer>(fs: &Fs, ino: INodeNo, result: crate::error::Result<Vec<u8>>, reply: R) {
    match result {
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.fail(errno(fs, &format!("read {ino}"), &e)),
    }
}

/// Answer an open: through passthrough when the content is a whole verified file and the kernel
/// takes it, else with reads served by regfs.
fn answer_open<R: OpenAnswer>(
    fs: &Fs,
    ino: INodeNo,
    result: crate::error::Result<crate::fs::Opened>,
    backing: Option<Arc<Backing>>,
    reply: R,
) {
    let opened = match result {
        Ok(opened) => opened,
        Err(e) => return reply.fail(errno(fs, &format!("open {ino}"), &e)),
    };
    // What is true only now (`.regfs/status`): read through to regfs each time, never kept.
    if opened.volatile {
        return reply.opened(FileHandle(opened.fh), FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH);
    }
    if let (Some(backing), Some(file)) = (backing, opened.file) {
        match backing.register(ino.0, opened.fh, &file, &reply) {
            Ok(id) => return reply.opened_passthrough(FileHandle(opened.fh), FopenFlags::FOPEN_NOFLUSH, &id),
            Err(e) => log::debug!("passthrough refused for inode {ino} ({e}); serving reads ourselves"),
        }
    }
    // Everything regfs serves is addressed by digest: the kernel may keep its pages.
    reply.opened(FileHandle(opened.fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH)
}

/// An xattr answer; ENODATA (asked of every file by `ls` and `cp -a`) quietly.
fn answer_xattr(fs: &Fs, reply: ReplyXattr, result: crate::error::Result<Xattr>, what: &str) {
    match result {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(bytes)) => reply.data(&bytes),
        Err(e @ Error::NoAttribute(_)) => {
            log::debug!("{what}: {e}");
            reply.error(Errno::from_i32(e.errno()))
        }
        Err(e) => reply.error(errno(fs, what, &e)),
    }
}

/// A negative entry: inode 0 is all the kernel reads of it.
fn negative_entry() -> FileAttr {
    let never = std::time::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: never,
        mtime: never,
        ctime: never,
        crtime: never,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
    }
}

/// The kernel's attributes of `a`; `uid`/`gid` (the mounting user) where `a` names no owner.
fn file_attr(a: &Attr, uid: u32, gid: u32, blksize: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.mode & 0o7777,
        nlink: a.nlink,
        uid: a.uid.unwrap_or(uid),
        gid: a.gid.unwrap_or(gid),
        rdev: a.rdev,
        blksize,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::waiting::{Pending, Ticket, fatal_signal_pending};
    use super::*;
    use crate::sync;

    /// A reply that records the errno it was failed with.
    struct Probe(Arc<Mutex<Option<i32>>>);

    impl Answer for Probe {
        fn fail(self, errno: Errno) {
            *sync::lock(&self.0) = Some(errno.code());
        }
    }

    /// An open reply that says, through a channel, how it was answered.
    struct OpenProbe(std::sync::mpsc::Sender<std::result::Result<u64, i32>>);

    impl Answer for OpenProbe {
        fn fail(self, errno: Errno) {
            let _ = self.0.send(Err(errno.code()));
        }
    }

    impl OpenAnswer for OpenProbe {
        fn backing(&self, _: &std::fs::File) -> std::io::Result<BackingId> {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }
        fn opened(self, fh: FileHandle, _: FopenFlags) {
            let _ = self.0.send(Ok(fh.0));
        }
        fn opened_passthrough(self, fh: FileHandle, _: FopenFlags, _: &BackingId) {
            let _ = self.0.send(Ok(fh.0));
        }
    }

    /// An open reply that says with which flags it was answered (passthrough: `None`).
    struct FlagsProbe(std::sync::mpsc::Sender<Option<FopenFlags>>);

    impl Answer for FlagsProbe {
        fn fail(self, errno: Errno) {
            panic!("open failed: {errno:?}");
        }
    }

    impl OpenAnswer for FlagsProbe {
        fn backing(&self, _: &std::fs::File) -> std::io::Result<BackingId> {
            Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
        }
        fn opened(self, _: FileHandle, flags: FopenFlags) {
            let _ = self.0.send(Some(flags));
        }
        fn opened_passthrough(self, _: FileHandle, _: FopenFlags, _: &BackingId) {
            let _ = self.0.send(None);
        }
    }

    /// A core over a fake registry holding image `r:v1` of one layer (its manifest's digest), and
    /// the cache directory it lives in.
    fn core_with_one_image() -> (Arc<Fs>, crate::digest::Digest, tempfile::TempDir) {
        let client = crate::testkit::faulty::Faulty::new(crate::testkit::fake::Fake::default());
        let (d, _) = client.image("r", "v1", b"layer");
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = crate::store::Store::new(Arc::new(client), &config).expect("store");
        (Arc::new(Fs::new(Arc::new(store), crate::fs::FsConfig::default())), d, cache)
    }

    /// The inode at `path` below the root.
    fn walk(core: &Fs, path: &str) -> u64 {
        path.split('/').fold(core.root_ino(), |ino, part| core.lookup(ino, OsStr::new(part)).expect(path).ino)
    }

    /// `.regfs/status` is opened for direct I/O without keeping the page cache, and inline (it
    /// is rendered from memory); a verified blob keeps the page cache. An error given to a reader
    /// is counted in the status where it is turned into an errno.
    #[test]
    fn status_files_open_for_direct_io_and_errors_given_to_readers_are_counted() {
        let (core, d, _cache) = core_with_one_image();
        let walk = |path: &str| walk(&core, path);
        let adapter = FuseAdapter::new(Arc::clone(&core), MountConfig::default());
        let open = |ino: u64| {
            let (tx, rx) = std::sync::mpsc::channel();
            adapter.open_for(Caller { unique: 1, tid: 0 }, INodeNo(ino), OpenFlags(libc::O_RDONLY), FlagsProbe(tx));
            rx.recv_timeout(Duration::from_secs(10)).expect("answered")
        };
        for path in [".regfs/status", ".regfs/status.json"] {
            let flags = open(walk(path)).expect("not passthrough");
            assert!(flags.contains(FopenFlags::FOPEN_DIRECT_IO), "{path}: {flags:?}");
            assert!(!flags.contains(FopenFlags::FOPEN_KEEP_CACHE), "{path}: {flags:?}");
            assert!(flags.contains(FopenFlags::FOPEN_NOFLUSH), "{path}: read-only, no FLUSH at close: {flags:?}");
        }
        let layer = open(walk(&format!("r/manifests/{d}/layers/0.tar"))).expect("not passthrough");
        assert_eq!(layer, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH);

        let e = Error::Unavailable(format!("blob {d}: 503"));
        assert_eq!(errno(&core, "open 7", &e), Errno::EIO);
        let status = crate::status::Snapshot::take(core.store());
        assert_eq!(status.errors.by_errno.get("EIO"), Some(&1));
        assert_eq!(
            status.errors.last.last().map(|e| (e.op.as_str(), e.digests.clone())),
            Some(("open 7", vec![d.to_string()]))
        );
    }

    /// An open whose content is ready (verified, in memory or open) is answered inline: no
    /// thread is spawned, and the answer is there when `open` returns. One that must download
    /// still gets a thread of its own.
    #[test]
    fn opening_ready_content_spawns_no_thread() {
        let (core, d, _cache) = core_with_one_image();
        let walk = |path: &str| walk(&core, path);
        let (layer, manifest) =
            (walk(&format!("r/manifests/{d}/layers/0.tar")), walk(&format!("r/manifests/{d}/manifest.json")));
        let adapter = FuseAdapter::new(Arc::clone(&core), MountConfig::default());
        let caller = Caller { unique: 1, tid: 0 };
        let open = |ino: u64| {
            let (tx, rx) = std::sync::mpsc::channel();
            let before = adapter.spawned.load(Ordering::SeqCst);
            adapter.open_for(caller, INodeNo(ino), OpenFlags(libc::O_RDONLY), OpenProbe(tx));
            let inline = rx.try_recv().ok();
            let spawned = adapter.spawned.load(Ordering::SeqCst) - before;
            let answer = inline.or_else(|| rx.recv_timeout(Duration::from_secs(10)).ok());
            let fh = answer.expect("answered").expect("opened");
            core.release(fh);
            (inline.is_some(), spawned)
        };
        // (Its thread may have answered by the time `open_for` returns: only the count says.)
        assert_eq!(open(layer).1, 1, "a layer never fetched is downloaded on a thread");
        assert_eq!(open(layer), (true, 0), "the verified layer, now in memory, opens inline");
        assert_eq!(open(manifest), (true, 0), "a manifest held in memory opens inline");
    }

    /// A read reply that says, through a channel, what it was answered with.
    struct ReadProbe(std::sync::mpsc::Sender<std::result::Result<Vec<u8>, i32>>);

    impl Answer for ReadProbe {
        fn fail(self, errno: Errno) {
            let _ = self.0.send(Err(errno.code()));
        }
    }

    impl ReadAnswer for ReadProbe {
        fn data(self, bytes: &[u8]) {
            let _ = self.0.send(Ok(bytes.to_vec()));
        }
    }

    /// `--no-open`: an open is ENOSYS and leaves no handle in the core; a read with no handle
    /// is served by inode (on a thread the first time, the layer not fetched yet; inline then),
    /// from what is kept for the inode, let go when the kernel forgets the inode. Each lookup of a
    /// status file is a new inode whose reads give its rendering, of the size the lookup said.
    #[test]
    fn no_open_reads_by_inode_from_one_handle_released_at_forget() {
        let (core, d, _cache) = core_with_one_image();
        let mut adapter = FuseAdapter::new(Arc::clone(&core), MountConfig { no_open: true, ..MountConfig::default() });
        adapter.no_open = true; // what init sets when the kernel takes FUSE_NO_OPEN_SUPPORT
        assert!(!adapter.want_passthrough, "passthrough is not asked with --no-open");
        let caller = Caller { unique: 1, tid: 0 };
        let layer = walk(&core, &format!("r/manifests/{d}/layers/0.tar"));

        let (tx, rx) = std::sync::mpsc::channel();
        adapter.open_for(caller, INodeNo(layer), OpenFlags(libc::O_RDONLY), OpenProbe(tx));
        assert_eq!(rx.try_recv().ok(), Some(Err(libc::ENOSYS)), "answered ENOSYS, inline");
        assert_eq!(core.handles_held(), (0, 0), "the open left a handle");

        let read = |ino: u64, offset: u64, size: u32| {
            let (tx, rx) = std::sync::mpsc::channel();
            let before = adapter.spawned.load(Ordering::SeqCst);
            adapter.read_ino_for(caller, INodeNo(ino), offset, size, ReadProbe(tx));
            let answer = rx.recv_timeout(Duration::from_secs(10)).expect("answered");
            (answer, adapter.spawned.load(Ordering::SeqCst) - before)
        };
        let (first, spawned) = read(layer, 0, 1 << 20);
        assert_eq!(spawned, 1, "a layer never fetched is read on a thread of its own");
        let whole = first.expect("read");
        let plain = core.open_file(layer).expect("open");
        assert_eq!(whole, core.read(plain.fh, 0, 1 << 20).expect("read"), "the bytes an open handle reads");
        core.release(plain.fh);
        assert!(whole.len() >= 4, "{whole:?}");
        assert_eq!(core.handles_held(), (1, 0), "kept by inode, no handle");
        assert_eq!(read(layer, 1, 3), (Ok(whole[1..4].to_vec()), 0), "then inline, from what is kept");
        assert_eq!(core.handles_held(), (1, 0));
        core.forget(layer, 1);
        assert_eq!(core.handles_held(), (0, 0), "forget let the inode's content go");
        let (gone, _) = read(layer, 0, 10);
        assert_eq!(gone, Err(libc::ENOENT), "a forgotten inode");
        assert_eq!(core.handles_held(), (0, 0));

        // Two lookups of the status, two inodes, each read whole at the size its lookup said.
        let regfs = walk(&core, ".regfs");
        let a = core.lookup(regfs, OsStr::new("status.json")).expect("status.json");
        std::thread::sleep(Duration::from_millis(5));
        let b = core.lookup(regfs, OsStr::new("status.json")).expect("status.json");
        assert_ne!(a.ino, b.ino, "a lookup of the status is a new inode");
        for attr in [&a, &b] {
            assert_eq!(attr.ttl, Duration::ZERO);
            let bytes = read(attr.ino, 0, 1 << 20).0.expect("status read");
            assert_eq!(bytes.len() as u64, attr.size, "the size its lookup gave");
            assert_eq!(core.getattr(attr.ino).expect("getattr").size, attr.size, "getattr says the same");
            serde_json::from_slice::<serde_json::Value>(&bytes).expect("status.json parses");
        }
        core.forget(a.ino, 1);
        core.forget(b.ino, 1);
        assert_eq!(core.handles_held(), (0, 0));

        // FLUSH is not needed: ENOSYS stops it (tested on a mount); the core holds nothing more.
        drop(adapter);
    }

    /// What is kept for reads by inode is bounded: past the bound the least recently read is
    /// let go, and a read of it opens it again (inline: its content is at hand).
    #[test]
    fn contents_kept_for_reads_by_inode_are_bounded() {
        let client = crate::testkit::faulty::Faulty::new(crate::testkit::fake::Fake::default());
        let (d, _) = client.image("r", "v1", b"layer");
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = crate::store::Store::new(Arc::new(client), &config).expect("store");
        let fs_config = crate::fs::FsConfig { inode_handles: 1, ..Default::default() };
        let core = Arc::new(Fs::new(Arc::new(store), fs_config));
        let (layer, manifest) = (
            walk(&core, &format!("r/manifests/{d}/layers/0.tar")),
            walk(&core, &format!("r/manifests/{d}/manifest.json")),
        );
        let first = core.read_ino(layer, 1, 0, 1 << 20).expect("layer");
        assert_eq!(core.handles_held(), (1, 0));
        let json = core.read_ino_now(manifest, 1, 0, 1 << 20).expect("inline").expect("manifest");
        assert!(json.starts_with(b"{"), "{json:?}");
        assert_eq!(core.handles_held(), (1, 0), "the layer was let go");
        let again = core.read_ino_now(layer, 1, 0, 1 << 20).expect("inline: the layer is at hand").expect("layer");
        assert_eq!(again, first);
        assert_eq!(core.handles_held(), (1, 0));
    }

    /// A worker that ends without answering (a bug that panics) must not leave its requester
    /// waiting for an answer that never comes, nor its entry for the watchdog to look at forever.
    #[test]
    fn a_worker_that_panics_answers_eio_and_leaves_no_entry() {
        let waiting = Arc::new(Waiting::default());
        let answered = Arc::new(Mutex::new(None));
        let slot = Arc::new(Mutex::new(Some(Probe(Arc::clone(&answered)))));
        let for_watchdog = Arc::clone(&slot);
        let abandon = Box::new(move |e: &Error| {
            if let Some(r) = sync::lock(&for_watchdog).take() {
                r.fail(Errno::from_i32(e.errno()));
            }
        });
        let left = Arc::new(AtomicBool::new(false));
        sync::lock(&waiting.pending).insert(7, Pending { tid: 0, left, what: "open 7".into(), abandon });
        let ticket = Ticket { unique: 7, slot, waiting: Arc::clone(&waiting) };
        let worker = std::thread::spawn(move || {
            let _held = ticket;
            panic!("a worker's bug");
        });
        assert!(worker.join().is_err());
        assert_eq!(*sync::lock(&answered), Some(libc::EIO), "the requester was never answered");
        assert!(sync::lock(&waiting.pending).is_empty(), "the entry stays for the watchdog");
    }

    /// What the core says of a file reaches the kernel whole: mode bits with setuid, setgid and
    /// sticky, the image's owner, the link count, the device number, the kind.
    #[test]
    fn file_attr_carries_mode_bits_owner_nlink_and_rdev() {
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let attr = Attr {
            ino: 9,
            kind: FileKind::BlockDevice,
            size: 0,
            mode: 0o4755,
            uid: Some(7),
            gid: Some(70),
            nlink: 3,
            rdev: crate::fs::rdev(8, 1),
            ttl: Duration::from_secs(5),
            mtime,
        };
        let fa = file_attr(&attr, 1000, 1001, 4096);
        assert_eq!((fa.perm, fa.uid, fa.gid, fa.nlink), (0o4755, 7, 70, 3));
        assert_eq!(fa.rdev as u64, libc::makedev(8, 1), "the kernel's encoding of 8:1");
        assert_eq!((fa.kind, fa.mtime, fa.ino), (FileType::BlockDevice, mtime, INodeNo(9)));
        let big = crate::fs::rdev(259, 70_000);
        assert_eq!(big as u64, libc::makedev(259, 70_000), "majors past 255 and minors past 65535");
        for (kind, ty) in [(FileKind::CharDevice, FileType::CharDevice), (FileKind::Fifo, FileType::NamedPipe)] {
            assert_eq!(file_attr(&Attr { kind, ..attr.clone() }, 1000, 1001, 4096).kind, ty);
        }
        // Without an owner of its own, the mounting user's.
        let mine = file_attr(&Attr { uid: None, gid: None, ..attr }, 1000, 1001, 4096);
        assert_eq!((mine.uid, mine.gid), (1000, 1001));
    }

    /// A requester regfs cannot see in `/proc` (a `hidepid=2` /proc with an `--allow-other`
    /// mount, or regfs in another pid namespace than its /proc) is not a dying one: a waiting
    /// request's thread cannot exit before it is answered, so a missing `/proc/<tid>` says
    /// nothing about its signals, and answering EINTR would fail a live reader after 100 ms.
    #[test]
    fn a_requester_regfs_cannot_see_is_not_dying() {
        // Above any pid_max (at most 2^22): no such thread ever exists.
        assert!(!fatal_signal_pending(u32::MAX), "a thread /proc does not show was taken for a killed one");
    }

    /// The `Name:` line of `/proc/<tid>/status` comes first and a thread sets its own name: a
    /// name holding a newline and a `ShdPnd:` mask with SIGKILL set must not read as a kill.
    #[test]
    fn a_thread_name_cannot_fake_a_pending_kill() {
        let faked = std::thread::spawn(|| {
            let name = c"\nShdPnd:\t100";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            assert_eq!(rc, 0, "prctl: {}", std::io::Error::last_os_error());
            // SAFETY: gettid cannot fail.
            let tid = unsafe { libc::gettid() } as u32;
            let status = std::fs::read_to_string(format!("/proc/{tid}/status")).expect("own status");
            (fatal_signal_pending(tid), status.lines().next().unwrap_or_default().to_string())
        })
        .join()
        .expect("thread");
        assert!(!faked.0, "a thread's name was read as a pending SIGKILL (first line: {:?})", faked.1);
    }
}
