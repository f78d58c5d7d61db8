//! `/.regfs/`: what the mount itself says, not the registry. Found only by lookup from the root
//! (never listed there: `ls MOUNT` shows the registry alone, and no repository can be named
//! `.regfs`, since a name component may not start with a dot), it holds `status` and
//! `status.json` ([`crate::status`]).
//!
//! The status files are [`Stability::Volatile`]: each open renders the status at that moment
//! into memory, the kernel caches neither their attributes nor their pages (direct I/O), and
//! nothing here ever asks the registry.

use crate::error::{Error, Result};
use crate::status::Snapshot;
use crate::store::Content;

use super::{Dir, File, Layout, Node, Stability};

/// The directory's name at the root.
pub const REGFS_DIR: &str = ".regfs";
/// The status as text.
pub const STATUS: &str = "status";
/// The status as JSON.
pub const STATUS_JSON: &str = "status.json";

/// `/.regfs/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegfsDir;

/// `/.regfs/status` (text) or `/.regfs/status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusFile {
    pub json: bool,
}

impl StatusFile {
    fn render(&self, cx: &Layout) -> Vec<u8> {
        let snapshot = Snapshot::take(cx.store());
        if self.json { snapshot.json() } else { snapshot.text().into_bytes() }
    }
}

impl Dir for RegfsDir {
    fn stability(&self) -> Stability {
        // Its names never change; what they show does.
        Stability::Immutable
    }

    fn parent(&self) -> Node {
        Node::Root(super::Root)
    }

    fn child(&self, _cx: &Layout, name: &str) -> Result<Node> {
        match name {
            STATUS => Ok(Node::StatusFile(StatusFile { json: false })),
            STATUS_JSON => Ok(Node::StatusFile(StatusFile { json: true })),
            _ => Err(Error::NotFound(format!("{REGFS_DIR}/{name}"))),
        }
    }

    fn children(&self, _cx: &Layout) -> Result<Vec<(String, Node)>> {
        Ok(vec![
            (STATUS.to_string(), Node::StatusFile(StatusFile { json: false })),
            (STATUS_JSON.to_string(), Node::StatusFile(StatusFile { json: true })),
        ])
    }
}

impl File for StatusFile {
    fn stability(&self) -> Stability {
        Stability::Volatile
    }

    /// The length of a rendering now: reads are direct I/O, so the kernel does not cut them to
    /// it, and a later open may be longer or shorter.
    fn size(&self, cx: &Layout) -> Result<u64> {
        Ok(self.render(cx).len() as u64)
    }

    fn settled(&self, _cx: &Layout) -> bool {
        false
    }

    fn open(&self, cx: &Layout) -> Result<Content> {
        Ok(Content::Memory(std::sync::Arc::new(self.render(cx))))
    }

    /// Rendered from memory: never a wait.
    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        Some(self.open(cx))
    }
}
