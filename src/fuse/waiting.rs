//! Any waiter can leave.
//! Once the kernel has sent a request, the process that made it waits for our answer, and a
//! fatal signal does not free it: it sits in `D` state, unkillable. So every request that runs
//! on a thread of its own is also entered in a table of [`Waiting`] requests, and a watchdog
//! thread looks at them every [`MountConfig::watch_every`] (100 ms). It answers one at once, and the worker's answer
//! later is dropped, when
//! - the requesting thread has a fatal signal pending (`EINTR`): `kill -9`, or a default-fatal
//!   signal such as SIGINT, which the kernel turns into SIGKILL on every thread of the process.
//!   The work goes on: a download another reader waits for is not abandoned with the first;
//! - the filesystem is being unmounted ([`Canceller::cancel`], `EIO`): every waiter leaves at
//!   once, new requests are refused, and the blob cache stops its downloads. regfs cancels at
//!   its signals; a mount detached by someone else (`umount -l`) is noticed by the watchdog,
//!   which looks every second, while requests wait, whether the mount point is still mounted.
//!
//! A worker whose answer came too late undoes what it did for it (an open handle is released).
//! A worker that ends without answering (a bug that panicked) answers EIO as its [`Ticket`]
//! goes, so no requester waits for an answer that never comes.
//! While it waits for work another request started (a download in flight), it leaves that wait
//! within 100 ms of its request being answered, so requesters killed one after another do not
//! pile up threads; the work itself goes on.
//!
//! # Why look at the requester's signals, not handle FUSE_INTERRUPT
//! fuser 0.18 answers FUSE_INTERRUPT with ENOSYS (after which the kernel sends no more). Handling
//! it needs a patched copy of fuser to carry and keep merging. The requesting thread's id is in
//! every request (`Request::pid`, the tid), and `/proc/<tid>/status` shows a pending SIGKILL
//! (`SigPnd`/`ShdPnd`, bit 9). Watching for that frees exactly the waiters that are dying,
//! with stock fuser. It also means only fatal signals end a wait: with interrupts off, a program
//! that handles a signal (SIGCHLD, SIGWINCH, a SIGINT handler) is never handed an EINTR from
//! `open`, which the kernel would return even under `SA_RESTART`. The costs: one read of a small
//! `/proc` file per waiting request every 100 ms, and a requester regfs cannot see (pid 0, from
//! another pid namespace; a thread a `hidepid=2` /proc hides) is not freed early; its wait
//! stays bounded by the network's bounds and by unmounting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fuser::{Errno, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, ReplyXattr, Request};

use super::{FuseAdapter, errno};
use crate::error::Error;
use crate::fs::Fs;
use crate::sync;

/// Who asked: the FUSE request id and the requesting thread (what the watchdog looks at).
#[derive(Clone, Copy)]
pub(super) struct Caller {
    pub(super) unique: u64,
    pub(super) tid: u32,
}

impl Caller {
    pub(super) fn of(req: &Request) -> Caller {
        Caller { unique: req.unique().0, tid: req.pid() }
    }
}

/// Requests answered on threads of their own and not answered yet, by FUSE request id.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) pending: Mutex<HashMap<u64, Pending>>,
    /// Signalled when a request is entered or the adapter goes.
    pub(super) wake: Condvar,
    pub(super) cancelled: AtomicBool,
    pub(super) closed: AtomicBool,
    /// Where this filesystem is mounted, once known: its going away cancels.
    pub(super) mountpoint: Mutex<Option<std::path::PathBuf>>,
}

pub(super) struct Pending {
    /// The requesting thread.
    pub(super) tid: u32,
    /// Set once the request is answered without its worker: the worker then stops waiting for
    /// work in flight ([`crate::store::flight::for_requester`]) instead of holding its thread.
    pub(super) left: Arc<AtomicBool>,
    pub(super) what: String,
    /// Answers the request with this error, unless its worker already answered it.
    pub(super) abandon: Box<dyn FnOnce(&Error) + Send>,
}

/// A reply that only one of its worker and the watchdog gets to send.
pub(super) struct Ticket<R: Answer> {
    pub(super) unique: u64,
    pub(super) slot: Arc<Mutex<Option<R>>>,
    pub(super) waiting: Arc<Waiting>,
}

impl<R: Answer> Ticket<R> {
    /// The reply to send, or `None` if the request was answered already (its process was
    /// killed, or the mount is going): then whatever was done for it must be undone.
    pub(super) fn take(self) -> Option<R> {
        sync::lock(&self.waiting.pending).remove(&self.unique);
        sync::lock(&self.slot).take()
    }
}

impl<R: Answer> Drop for Ticket<R> {
    /// A worker that ends without taking its reply (a bug that panicked) answers EIO, so its
    /// requester is not left waiting, and its entry is not left for the watchdog.
    fn drop(&mut self) {
        sync::lock(&self.waiting.pending).remove(&self.unique);
        if let Some(reply) = sync::lock(&self.slot).take() {
            log::error!("request {}: its worker ended without answering; answered EIO", self.unique);
            reply.fail(Errno::EIO);
        }
    }
}

/// Every reply type the adapter answers on a thread of its own.
pub(super) trait Answer: Send + 'static {
    fn fail(self, errno: Errno);
}

macro_rules! answers {
    ($($t:ty),*) => {$(impl Answer for $t { fn fail(self, errno: Errno) { self.error(errno) } })*};
}
answers!(ReplyEntry, ReplyAttr, ReplyData, ReplyOpen, ReplyXattr);

/// Ends the mount's waiting: every waiter is answered with an error at once, new requests are
/// refused, and downloads in flight stop.
#[derive(Clone)]
pub struct Canceller {
    pub(super) waiting: Arc<Waiting>,
    pub(super) core: Arc<Fs>,
}

impl Canceller {
    pub fn cancel(&self) {
        self.waiting.cancel(&self.core);
    }

    /// Watch `mountpoint`: once it is no longer mounted (detached by `umount -l`) while
    /// requests wait, cancel. Only if it shows in `/proc/self/mountinfo` now, as mounted: where
    /// it does not (another mount namespace's view), its absence later would mean nothing.
    pub fn watch_mount(&self, mountpoint: &std::path::Path) {
        if crate::mountinfo::is_mount_point(mountpoint) != Some(true) {
            log::debug!("{} is not in /proc/self/mountinfo; not watching for a detach", mountpoint.display());
            return;
        }
        *sync::lock(&self.waiting.mountpoint) = Some(mountpoint.to_path_buf());
    }
}

impl Waiting {
    pub(super) fn cancel(&self, core: &Fs) {
        if !self.cancelled.swap(true, Ordering::SeqCst) {
            core.cancel();
            let left = sync::lock(&self.pending).len();
            if left > 0 {
                log::info!("unmounting: answering {left} waiting requests with an error");
            }
            self.wake.notify_all();
        }
    }

    /// Whether the mount point (if watched) is gone from this namespace's mounts.
    fn detached(&self) -> bool {
        let path = sync::lock(&self.mountpoint).clone();
        path.is_some_and(|p| crate::mountinfo::is_mount_point(&p) == Some(false))
    }

    /// Look at the waiting requests until the adapter goes.
    pub(super) fn watch(self: Arc<Self>, core: Arc<Fs>, every: Duration) {
        let mut ticks = 0u32;
        loop {
            {
                let mut pending = sync::lock(&self.pending);
                while pending.is_empty() && !self.closed.load(Ordering::SeqCst) {
                    pending = sync::wait(&self.wake, pending);
                }
            }
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            ticks = ticks.wrapping_add(1);
            if ticks % 10 == 0 && !self.cancelled.load(Ordering::SeqCst) && self.detached() {
                log::info!("the mount was detached with requests waiting");
                self.cancel(&core);
            }
            let cancelled = self.cancelled.load(Ordering::SeqCst);
            let tids: Vec<(u64, u32)> = sync::lock(&self.pending).iter().map(|(u, p)| (*u, p.tid)).collect();
            let leaving: Vec<(u64, Error)> = tids
                .into_iter()
                .filter_map(|(unique, tid)| {
                    if cancelled {
                        Some((unique, Error::Cancelled("the filesystem is being unmounted".into())))
                    } else if tid != 0 && fatal_signal_pending(tid) {
                        Some((unique, Error::Interrupted(format!("thread {tid} was killed while waiting"))))
                    } else {
                        None
                    }
                })
                .collect();
            for (unique, e) in leaving {
                let Some(p) = sync::lock(&self.pending).remove(&unique) else { continue };
                log::info!("{}: {e}; answered at once", p.what);
                p.left.store(true, Ordering::SeqCst);
                (p.abandon)(&e);
            }
            if !cancelled {
                std::thread::sleep(every);
            }
        }
    }
}

/// Whether thread `tid` is dying: SIGKILL pending for it or its process (a default-fatal signal
/// is turned into SIGKILL on every thread). A thread `/proc` does not show is not: a thread
/// waiting on a request cannot exit before it is answered, so a missing `/proc/<tid>` means
/// regfs cannot see it (`/proc` mounted `hidepid=2` with another user's reader under
/// `--allow-other`, or a `/proc` of another pid namespace), not that it was killed.
pub(super) fn fatal_signal_pending(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else { return false };
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let mask = l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok()).is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

impl FuseAdapter {
    /// Run `job` on its own thread, with the reply in a [`Ticket`] the watchdog can also answer
    /// (if the requester dies, or the mount goes). Refused at once once the mount is going.
    pub(super) fn spawn_waiting<R: Answer>(
        &self,
        req: &Request,
        what: String,
        reply: R,
        job: impl FnOnce(&Fs, Ticket<R>) + Send + 'static,
    ) {
        self.spawn_waiting_for(Caller::of(req), what, reply, job)
    }

    pub(super) fn spawn_waiting_for<R: Answer>(
        &self,
        caller: Caller,
        what: String,
        reply: R,
        job: impl FnOnce(&Fs, Ticket<R>) + Send + 'static,
    ) {
        if self.waiting.cancelled.load(Ordering::SeqCst) {
            reply.fail(errno(&self.core, &what, &Error::Cancelled("the filesystem is being unmounted".into())));
            return;
        }
        log::debug!("{what}: on a thread of its own");
        let unique = caller.unique;
        let slot = Arc::new(Mutex::new(Some(reply)));
        let for_watchdog = Arc::clone(&slot);
        let abandon = Box::new(move |e: &Error| {
            if let Some(r) = sync::lock(&for_watchdog).take() {
                r.fail(Errno::from_i32(e.errno()));
            }
        });
        let left = Arc::new(AtomicBool::new(false));
        let pending = Pending { tid: caller.tid, left: Arc::clone(&left), what, abandon };
        sync::lock(&self.waiting.pending).insert(unique, pending);
        self.waiting.wake.notify_all();
        let ticket = Ticket { unique, slot, waiting: Arc::clone(&self.waiting) };
        self.spawn(move |fs| crate::store::flight::for_requester(left, || job(fs, ticket)));
    }

    /// Run `job` on its own thread (inline if no thread can be had).
    pub(super) fn spawn(&self, job: impl FnOnce(&Fs) + Send + 'static) {
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let core = Arc::clone(&self.core);
        let slot = Arc::new(std::sync::Mutex::new(Some(job)));
        let for_thread = Arc::clone(&slot);
        let spawned = std::thread::Builder::new().name("regfs-op".into()).spawn(move || {
            let job = sync::lock(&for_thread).take();
            if let Some(job) = job {
                job(&core);
            }
        });
        if spawned.is_err() {
            let job = sync::lock(&slot).take();
            if let Some(job) = job {
                job(&self.core);
            }
        }
    }
}
