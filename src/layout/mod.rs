//! The layout: what every name in the mount means and what every directory lists.
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
//! A node is a value naming what it shows, so the same thing gets the same inode while the
//! kernel holds it: a layer named with the same size by two manifests of a repository is one
//! inode, which shares one page cache. `blobs/<digest>` (no descriptor, so no claimed size) is an
//! inode of its own. Inode numbers are handed out on first lookup, freed when the kernel forgets
//! them, and never reused while mounted ([`Inodes`](crate::inodes::Inodes)).

use crate::digest::Digest;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(Node::Path("a/b".into()).parent(), Node::Path("a".into()));
        assert_eq!(Node::Path("a".into()).parent(), Node::Root);
        assert_eq!(Node::Tags("a/b".into()).parent(), Node::Path("a/b".into()));
    }
}
