//! Backing files registered with the kernel for passthrough (`--open`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use fuser::BackingId;

use super::OpenAnswer;
use crate::sync;

/// Backing files registered with the kernel for passthrough. The kernel wants one backing id per
/// inode for as long as any handle of it is open: `by_ino` finds the live one, `by_fh` keeps it
/// alive until the handle's release.
#[derive(Default)]
pub(super) struct Backing {
    pub(super) state: std::sync::Mutex<BackingState>,
}

#[derive(Default)]
pub(super) struct BackingState {
    pub(super) by_ino: HashMap<u64, Weak<BackingId>>,
    pub(super) by_fh: HashMap<u64, Arc<BackingId>>,
}

impl Backing {
    /// The backing id for `ino` (registering `file` if none is live), held for handle `fh`.
    pub(super) fn register(
        &self,
        ino: u64,
        fh: u64,
        file: &std::fs::File,
        reply: &impl OpenAnswer,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut st = sync::lock(&self.state);
        let id = match st.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => {
                let id = Arc::new(reply.backing(file)?);
                st.by_ino.insert(ino, Arc::downgrade(&id));
                id
            }
        };
        st.by_fh.insert(fh, Arc::clone(&id));
        // Forget inodes whose handles are all closed (their ids are already gone in the kernel).
        st.by_ino.retain(|_, w| w.strong_count() > 0);
        Ok(id)
    }

    pub(super) fn release(&self, fh: u64) {
        sync::lock(&self.state).by_fh.remove(&fh);
    }
}
