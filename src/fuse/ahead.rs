//! Putting the next files of a walk in the kernel's page cache (`FUSE_NOTIFY_STORE`), on a
//! thread of its own: the core says what ([`Fs::read_ahead_of`]), this hands it to the kernel.
//!
//! Rules:
//! - Reads of a file's first page are told here ([`Ahead::read`]); a bounded queue takes them,
//!   and what does not fit is dropped (reading ahead is never owed).
//! - The store is written by this thread alone, never by a thread that answers requests: the
//!   kernel locks each page it fills, and a page under a READ in flight stays locked until that
//!   READ is answered, which the request threads are always free to do.
//! - An inode the kernel has forgotten meanwhile refuses the store (ENOENT): nothing to do.
//! - Until the session's notifier is attached ([`AheadHandle::attach`]), nothing is stored.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use fuser::{INodeNo, Notifier};

use crate::fs::Fs;

/// Reads told and not yet looked at, at most.
const QUEUE: usize = 64;

/// The adapter's end: tells the thread of first-page reads.
pub(super) struct Ahead {
    tx: Option<SyncSender<u64>>,
    notifier: Arc<OnceLock<Notifier>>,
}

/// What `main` attaches the session's notifier with, once the session exists.
#[derive(Clone)]
pub struct AheadHandle(Arc<OnceLock<Notifier>>);

impl AheadHandle {
    pub fn attach(&self, notifier: Notifier) {
        let _ = self.0.set(notifier);
    }
}

impl Ahead {
    /// The thread, started (none where the core reads nothing ahead, or no thread can be had).
    pub(super) fn start(core: &Arc<Fs>) -> Ahead {
        let notifier: Arc<OnceLock<Notifier>> = Arc::default();
        if !core.reads_ahead() {
            return Ahead { tx: None, notifier };
        }
        let (tx, rx) = sync_channel(QUEUE);
        let (core, for_thread) = (Arc::clone(core), Arc::clone(&notifier));
        let spawned =
            std::thread::Builder::new().name("regfs-ahead".into()).spawn(move || run(&core, &rx, &for_thread));
        match spawned {
            Ok(_) => Ahead { tx: Some(tx), notifier },
            Err(e) => {
                log::warn!("no read-ahead thread ({e}): walks of a tree read each file from regfs");
                Ahead { tx: None, notifier }
            }
        }
    }

    pub(super) fn handle(&self) -> AheadHandle {
        AheadHandle(Arc::clone(&self.notifier))
    }

    /// The first page of `ino` was asked for.
    pub(super) fn read(&self, ino: u64) {
        if let Some(tx) = &self.tx {
            match tx.try_send(ino) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => log::debug!("the read-ahead thread is gone"),
            }
        }
    }
}

/// Until the adapter goes (the queue's sender dropped).
fn run(core: &Fs, rx: &Receiver<u64>, notifier: &OnceLock<Notifier>) {
    while let Ok(ino) = rx.recv() {
        let Some(notifier) = notifier.get() else { continue };
        for (held, data) in core.read_ahead_of(ino) {
            if let Err(e) = notifier.store(INodeNo(held), 0, &data) {
                log::debug!("read ahead: inode {held}: {e}");
            }
        }
    }
}
