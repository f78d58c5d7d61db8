//! The kernel adapter: fuser callbacks in, calls on the FUSE-free core ([`crate::fs::Fs`]) out,
//! and the core's errors turned into errno here, once, with one log line each.
//!
//! Operations that may wait on the network (lookup, getattr, readlink, opendir, open) run on
//! their own thread, so a slow download never holds up `ls` elsewhere. `read` (verified memory or
//! the cache file) and `readdir` (the listing taken at `opendir`) never wait, and run inline. Files are all digest-addressed, so every
//! open keeps the kernel's page cache (`FOPEN_KEEP_CACHE`) and entries of digest-addressed things
//! carry a long TTL; names (tags, the catalog) carry `--tag-ttl`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Weak};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use crate::error::Error;
use crate::fs::{Attr, FileKind, Fs};

pub struct FuseAdapter {
    core: Arc<Fs>,
    uid: u32,
    gid: u32,
    /// Whether to try FUSE passthrough (asked for; the kernel may still refuse it at init).
    want_passthrough: bool,
    /// Set at init when the kernel granted passthrough.
    backing: Option<Arc<Backing>>,
}

/// Backing files registered with the kernel for passthrough. The kernel wants one backing id per
/// inode for as long as any handle of it is open: `by_ino` finds the live one, `by_fh` keeps it
/// alive until the handle's release.
#[derive(Default)]
struct Backing {
    state: std::sync::Mutex<BackingState>,
}

#[derive(Default)]
struct BackingState {
    by_ino: HashMap<u64, Weak<BackingId>>,
    by_fh: HashMap<u64, Arc<BackingId>>,
}

impl FuseAdapter {
    pub fn new(core: Arc<Fs>) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FuseAdapter { core, uid, gid, want_passthrough: true, backing: None }
    }

    /// Serve every read through regfs itself, never by passthrough.
    pub fn without_passthrough(mut self) -> Self {
        self.want_passthrough = false;
        self
    }

    /// Run `job` on its own thread (inline if no thread can be had).
    fn spawn(&self, job: impl FnOnce(&Fs) + Send + 'static) {
        let core = Arc::clone(&self.core);
        let slot = Arc::new(std::sync::Mutex::new(Some(job)));
        let for_thread = Arc::clone(&slot);
        let spawned = std::thread::Builder::new().name("regfs-op".into()).spawn(move || {
            if let Some(job) = for_thread.lock().ok().and_then(|mut j| j.take()) {
                job(&core);
            }
        });
        if spawned.is_err() {
            if let Some(job) = slot.lock().ok().and_then(|mut j| j.take()) {
                job(&self.core);
            }
        }
    }
}

/// The errno for `e`, logged once: ENOENT quietly, everything else as a warning naming the URL
/// or digest the error carries.
fn errno(op: &str, e: &Error) -> Errno {
    if e.is_not_found() {
        log::debug!("{op}: {e}");
    } else {
        log::warn!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Let the kernel keep many requests in flight (readahead, many readers). 64 background
        // requests: the load test runs 64 readers. Blocking work does not tie up the session's
        // threads, because it runs on threads of its own (`spawn`).
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS | fuser::InitFlags::FUSE_ASYNC_READ);
        // Passthrough (Linux 6.9+): reads of a verified cache file go straight to that file in
        // the kernel, at local-file speed. The cache lives on an ordinary filesystem, so a stack
        // depth of 1 suffices. Where the kernel says no, reads take the ordinary path.
        // Registering backing files needs CAP_SYS_ADMIN: without root, do not ask.
        // SAFETY: geteuid cannot fail and touches no memory.
        if self.want_passthrough && unsafe { libc::geteuid() } != 0 {
            log::info!("FUSE passthrough needs root; reads are served by regfs");
            self.want_passthrough = false;
        }
        if self.want_passthrough {
            let granted = config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            log::info!("FUSE passthrough {}", if granted { "on" } else { "not offered by this kernel" });
            if granted {
                self.backing = Some(Arc::default());
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let (uid, gid) = (self.uid, self.gid);
        self.spawn(move |fs| match fs.lookup(parent.0, &name) {
            Ok(a) => reply.entry(&a.ttl, &file_attr(&a, uid, gid), Generation(0)),
            // A negative entry (inode 0): the kernel remembers the name is missing for the TTL
            // instead of asking again on every `stat` or shell completion.
            Err(e) if e.is_not_found() => {
                log::debug!("lookup {name:?}: {e}");
                reply.entry(&fs.negative_ttl(parent.0, &e), &negative_entry(), Generation(0))
            }
            Err(e) => reply.error(errno(&format!("lookup {:?}", name), &e)),
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

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (uid, gid) = (self.uid, self.gid);
        self.spawn(move |fs| match fs.getattr(ino.0) {
            Ok(a) => reply.attr(&a.ttl, &file_attr(&a, uid, gid)),
            Err(e) => reply.error(errno(&format!("getattr {ino}"), &e)),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |fs| match fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(&format!("readlink {ino}"), &e)),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            reply.error(Errno::EROFS);
            return;
        }
        let backing = self.backing.clone();
        self.spawn(move |fs| match fs.open_file(ino.0) {
            Ok(opened) => {
                if let (Some(backing), Some(file)) = (backing, opened.file) {
                    match backing.register(ino.0, opened.fh, &file, &reply) {
                        Ok(id) => return reply.opened_passthrough(FileHandle(opened.fh), FopenFlags::empty(), &id),
                        Err(e) => log::debug!("passthrough refused for inode {ino} ({e}); serving reads ourselves"),
                    }
                }
                // Everything regfs serves is addressed by digest: the kernel may keep its pages.
                reply.opened(FileHandle(opened.fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(errno(&format!("open {ino}"), &e)),
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(fh.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(errno(&format!("read {ino}"), &e)),
        }
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

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    /// No extended attributes: `ls` and `cp -a` ask, and "none" is the honest answer.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 { reply.size(0) } else { reply.data(&[]) }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |fs| match fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&format!("opendir {ino}"), &e)),
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
            Err(e) => reply.error(errno(&format!("readdir {ino}"), &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 128 << 10, 255, 128 << 10);
    }
}

impl Backing {
    /// The backing id for `ino` (registering `file` if none is live), held for handle `fh`.
    fn register(&self, ino: u64, fh: u64, file: &std::fs::File, reply: &ReplyOpen) -> std::io::Result<Arc<BackingId>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = match st.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => {
                let id = Arc::new(reply.open_backing(file)?);
                st.by_ino.insert(ino, Arc::downgrade(&id));
                id
            }
        };
        st.by_fh.insert(fh, Arc::clone(&id));
        // Forget inodes whose handles are all closed (their ids are already gone in the kernel).
        st.by_ino.retain(|_, w| w.strong_count() > 0);
        Ok(id)
    }

    fn release(&self, fh: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).by_fh.remove(&fh);
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
    }
}

fn file_attr(a: &Attr, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: if a.kind == FileKind::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: 128 << 10,
        flags: 0,
    }
}
