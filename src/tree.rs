//! The layout: what each inode is, and stable inode numbers.
//!
//! ```text
//! /                                   Root: the catalog's top-level names
//!   <ns>/…/<repo>/                    Path: one directory per repository-name component
//!     tags/                           Tags
//!       <tag>                         Tag: symlink -> ../manifests/<digest>
//!     manifests/                      Manifests: the manifests verified so far; any digest looks up
//!       <digest>/                     ManifestDir: what the dispatcher says it holds
//!         manifest.json               ManifestJson
//!         config.json                 Blob
//!         layers/                     Layers
//!           <n>.<ext>                 Blob
//!         <os>-<arch>[-<variant>]     IndexLink: symlink -> ../<child digest>
//!     blobs/                          Blobs: lookup only
//!       <digest>                      Blob
//! ```
//!
//! A node is a value naming what it shows, so the same thing always gets the same inode: a layer
//! named with the same size by two manifests of a repository is one inode, which shares one page
//! cache. `blobs/<digest>` (no descriptor, so no claimed size) is an inode of its own.
//! Inode numbers are handed out on first sight and never reused while mounted.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::digest::Digest;

pub const ROOT_INO: u64 = 1;
pub const TAGS: &str = "tags";
pub const MANIFESTS: &str = "manifests";
pub const BLOBS: &str = "blobs";
/// Names a repository directory reserves for itself; no repository component may use them.
pub const RESERVED: [&str; 3] = [TAGS, MANIFESTS, BLOBS];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    /// A repository name or a prefix of one (`library`, `library/alpine`).
    Path(String),
    Tags(String),
    Tag {
        repo: String,
        tag: String,
    },
    Manifests(String),
    ManifestDir {
        repo: String,
        digest: Digest,
    },
    Layers {
        repo: String,
        digest: Digest,
    },
    ManifestJson {
        repo: String,
        digest: Digest,
    },
    /// A config or layer file, or `blobs/<digest>`. `size` is what the descriptor that named it
    /// claims (none for `blobs/<digest>` and schema1 layers): each manifest's claim is its own,
    /// so a wrong size in one manifest cannot change another's file.
    Blob {
        repo: String,
        digest: Digest,
        size: Option<u64>,
    },
    IndexLink {
        repo: String,
        parent: Digest,
        name: String,
        target: Digest,
    },
    Blobs(String),
}

impl Node {
    /// Whether the node is addressed by digest (immutable) rather than by name.
    pub fn is_immutable(&self) -> bool {
        matches!(
            self,
            Node::ManifestDir { .. }
                | Node::Layers { .. }
                | Node::ManifestJson { .. }
                | Node::Blob { .. }
                | Node::IndexLink { .. }
        )
    }

    /// The directory this node is listed in, for `..` (the root is its own parent; a blob
    /// reached through a layer is placed under `blobs/`).
    pub fn parent(&self) -> Node {
        match self {
            Node::Root => Node::Root,
            Node::Path(p) => match p.rsplit_once('/') {
                Some((up, _)) => Node::Path(up.to_string()),
                None => Node::Root,
            },
            Node::Tags(r) | Node::Manifests(r) | Node::Blobs(r) => Node::Path(r.clone()),
            Node::Tag { repo, .. } => Node::Tags(repo.clone()),
            Node::ManifestDir { repo, .. } => Node::Manifests(repo.clone()),
            Node::Layers { repo, digest } | Node::ManifestJson { repo, digest } => {
                Node::ManifestDir { repo: repo.clone(), digest: digest.clone() }
            }
            Node::IndexLink { repo, parent, .. } => Node::ManifestDir { repo: repo.clone(), digest: parent.clone() },
            Node::Blob { repo, .. } => Node::Blobs(repo.clone()),
        }
    }
}

/// Inode numbers for nodes, both ways.
pub struct Inodes {
    inner: RwLock<(HashMap<Node, u64>, Vec<Node>)>,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut map = HashMap::new();
        map.insert(Node::Root, ROOT_INO);
        // Index 0 is unused so that index == inode number.
        Inodes { inner: RwLock::new((map, vec![Node::Root, Node::Root])) }
    }
}

impl Inodes {
    pub fn ino(&self, node: &Node) -> u64 {
        if let Some(&ino) = self.inner.read().unwrap_or_else(|p| p.into_inner()).0.get(node) {
            return ino;
        }
        let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&ino) = w.0.get(node) {
            return ino;
        }
        let ino = w.1.len() as u64;
        w.1.push(node.clone());
        w.0.insert(node.clone(), ino);
        ino
    }

    pub fn node(&self, ino: u64) -> Option<Node> {
        if ino == 0 {
            return None;
        }
        self.inner.read().unwrap_or_else(|p| p.into_inner()).1.get(ino as usize).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_are_stable_and_unique() {
        let inodes = Inodes::default();
        assert_eq!(inodes.ino(&Node::Root), ROOT_INO);
        let a = inodes.ino(&Node::Path("a".into()));
        let b = inodes.ino(&Node::Tags("a".into()));
        assert_ne!(a, b);
        assert_eq!(inodes.ino(&Node::Path("a".into())), a);
        assert_eq!(inodes.node(a), Some(Node::Path("a".into())));
        assert_eq!(inodes.node(0), None);
        assert_eq!(inodes.node(9999), None);
    }

    #[test]
    fn parents() {
        assert_eq!(Node::Path("a/b".into()).parent(), Node::Path("a".into()));
        assert_eq!(Node::Path("a".into()).parent(), Node::Root);
        assert_eq!(Node::Tags("a/b".into()).parent(), Node::Path("a/b".into()));
    }
}
