//! `/.regfs/`: what the mount itself says, not the registry. Found only by lookup from the root
//! (never listed there: `ls MOUNT` shows the registry alone, and no repository can be named
//! `.regfs`, since a name component may not start with a dot), it holds `status` and
//! `status.json` ([`crate::status`]).
//!
//! The status files are [`Stability::Volatile`]: each open renders the status at that moment
//! into memory, the kernel caches neither their attributes nor their pages (direct I/O), and
//! nothing here ever asks the registry.
//!
//! With `--no-open` the kernel sends no open and keeps every file's pages (`FOPEN_KEEP_CACHE`
//! is implied), so there a lookup renders the status instead ([`StatusFile::rendered_now`]): the
//! node carries its rendering, is a node of its own (a new inode number), and its size is that
//! rendering's. See `Fs::lookup`.

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
    /// The status as rendered at a lookup (`--no-open`), which this node then always shows;
    /// `None`: rendered at each open.
    pub rendered: Option<Rendering>,
}

/// One rendering of the status, told apart from every other by its number (so two lookups
/// are two nodes, and two inode numbers, even when their bytes are the same).
#[derive(Debug, Clone)]
pub struct Rendering {
    id: u64,
    bytes: std::sync::Arc<Vec<u8>>,
}

impl PartialEq for Rendering {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Rendering {}

impl std::hash::Hash for Rendering {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl StatusFile {
    fn render(&self, cx: &Layout) -> Vec<u8> {
        let snapshot = Snapshot::take(cx.store()).with_lazy(cx.views().lazy());
        if self.json { snapshot.json() } else { snapshot.text().into_bytes() }
    }

    /// This file with the status rendered now, kept: what a lookup hands out with `--no-open`.
    pub fn rendered_now(&self, cx: &Layout) -> StatusFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = std::sync::Arc::new(self.render(cx));
        StatusFile { json: self.json, rendered: Some(Rendering { id, bytes }) }
    }

    fn bytes(&self, cx: &Layout) -> std::sync::Arc<Vec<u8>> {
        match &self.rendered {
            Some(r) => std::sync::Arc::clone(&r.bytes),
            None => std::sync::Arc::new(self.render(cx)),
        }
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
            STATUS => Ok(Node::StatusFile(StatusFile { json: false, rendered: None })),
            STATUS_JSON => Ok(Node::StatusFile(StatusFile { json: true, rendered: None })),
            _ => Err(Error::NotFound(format!("{REGFS_DIR}/{name}"))),
        }
    }

    fn children(&self, _cx: &Layout) -> Result<Vec<(String, Node)>> {
        Ok(vec![
            (STATUS.to_string(), Node::StatusFile(StatusFile { json: false, rendered: None })),
            (STATUS_JSON.to_string(), Node::StatusFile(StatusFile { json: true, rendered: None })),
        ])
    }
}

impl File for StatusFile {
    fn stability(&self) -> Stability {
        Stability::Volatile
    }

    /// The length of a rendering now: reads are direct I/O, so the kernel does not cut them to
    /// it, and a later open may be longer or shorter. A node rendered at lookup: its rendering's,
    /// exactly (the kernel keeps its pages and reads up to this size).
    fn size(&self, cx: &Layout) -> Result<u64> {
        Ok(self.bytes(cx).len() as u64)
    }

    fn settled(&self, _cx: &Layout) -> bool {
        false
    }

    fn open(&self, cx: &Layout) -> Result<Content> {
        Ok(Content::Memory(self.bytes(cx)))
    }

    /// Rendered from memory: never a wait.
    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        Some(self.open(cx))
    }
}
