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

pub(crate) mod image;

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{CONFIG_JSON, LAYERS_DIR, MANIFEST_JSON};
use crate::names;
use crate::readahead::Readahead;
use crate::store::{Content, Store};

use image::{Entry, entry_node};

/// Length of `../manifests/sha256:<64 hex>`, reported before a tag is resolved.
const SHA256_TAG_LINK_LEN: u64 = 83;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
}

/// What every rule may consult: the verified store, and the readahead of tag links.
pub struct Layout {
    store: Arc<Store>,
    readahead: Readahead,
}

impl Layout {
    pub fn new(store: Arc<Store>) -> Layout {
        Layout { store, readahead: Readahead::default() }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The kind and size of `node`; may ask the registry for what it does not know yet.
    pub fn stat(&self, node: &Node) -> Result<(FileKind, u64)> {
        Ok(match node {
            Node::Root | Node::Path(_) | Node::Tags(_) | Node::Manifests(_) | Node::Blobs(_) => {
                (FileKind::Directory, 0)
            }
            Node::ManifestDir { repo, digest } | Node::Layers { repo, digest } => {
                self.store.manifest(repo, digest)?;
                (FileKind::Directory, 0)
            }
            Node::ManifestJson { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                (FileKind::File, doc.bytes().len() as u64)
            }
            Node::Blob { repo, digest, size } => (FileKind::File, self.store.blob_size(repo, digest, *size)?),
            Node::Tag { repo, tag } => {
                // Exact once resolved; until then the sha256 length, so `ls -l` costs no HEAD.
                let size = self
                    .store
                    .resolve_tag_if_known(repo, tag)
                    .map_or(SHA256_TAG_LINK_LEN, |d| tag_target(&d).len() as u64);
                (FileKind::Symlink, size)
            }
            Node::IndexLink { target, .. } => (FileKind::Symlink, link_target(target).len() as u64),
        })
    }

    /// The node called `name` inside `parent`, checked to exist as far as that is cheap.
    pub fn child(&self, parent: &Node, name: &str) -> Result<Node> {
        let missing = || Error::NotFound(name.to_string());
        match parent {
            Node::Root | Node::Path(_) => {
                let prefix = match parent {
                    Node::Path(p) => Some(p.as_str()),
                    _ => None,
                };
                if let Some(repo) = prefix {
                    match name {
                        TAGS => return Ok(Node::Tags(repo.to_string())),
                        MANIFESTS => return Ok(Node::Manifests(repo.to_string())),
                        BLOBS => return Ok(Node::Blobs(repo.to_string())),
                        _ => {}
                    }
                }
                // `tags`, `manifests` and `blobs` are taken inside a repository directory (above);
                // at the root they are ordinary names.
                if !names::is_component(name) {
                    return Err(Error::InvalidName(name.to_string()));
                }
                let path = prefix.map_or_else(|| name.to_string(), |p| format!("{p}/{name}"));
                names::check_repo(&path)?;
                Ok(Node::Path(path))
            }
            Node::Tags(repo) => {
                names::check_tag(name)?;
                match self.store.tag_listed(repo, name) {
                    Some(true) => {}
                    Some(false) => return Err(missing()),
                    None => {
                        self.store.resolve_tag(repo, name)?;
                    }
                }
                Ok(Node::Tag { repo: repo.clone(), tag: name.to_string() })
            }
            Node::Manifests(repo) => {
                let digest: Digest = name.parse()?;
                self.store.manifest(repo, &digest)?;
                Ok(Node::ManifestDir { repo: repo.clone(), digest })
            }
            Node::ManifestDir { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                entry_node(repo, &doc, name).ok_or_else(missing)
            }
            Node::Layers { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                let layer = doc.manifest.layer(name).ok_or_else(missing)?;
                Ok(Node::Blob { repo: repo.clone(), digest: layer.digest.clone(), size: layer.size })
            }
            Node::Blobs(repo) => {
                let digest: Digest = name.parse()?;
                Ok(Node::Blob { repo: repo.clone(), digest, size: None })
            }
            _ => Err(Error::NotADirectory(format!("looking up {name}"))),
        }
    }

    /// What directory `node` lists, in listing order, as it is now (without `.` and `..`).
    pub fn children(&self, node: &Node) -> Result<Vec<(String, FileKind, Node)>> {
        let mut out = Vec::new();
        let mut push = |n: Node, kind: FileKind, name: String| out.push((name, kind, n));
        match node {
            Node::Root | Node::Path(_) => {
                let prefix = match node {
                    Node::Path(p) => Some(p.as_str()),
                    _ => None,
                };
                let listing = self.namespace(prefix);
                if prefix.is_some() && listing.maybe_repo {
                    for r in RESERVED {
                        if let Ok(n) = self.child(node, r) {
                            push(n, FileKind::Directory, r.to_string());
                        }
                    }
                }
                for c in listing.children {
                    let path = prefix.map_or_else(|| c.clone(), |p| format!("{p}/{c}"));
                    push(Node::Path(path), FileKind::Directory, c);
                }
            }
            Node::Tags(repo) => {
                for t in self.store.tags(repo)?.iter() {
                    push(Node::Tag { repo: repo.clone(), tag: t.clone() }, FileKind::Symlink, t.clone());
                }
            }
            Node::Manifests(repo) => {
                for d in self.store.seen_manifests(repo) {
                    let name = d.to_string();
                    push(Node::ManifestDir { repo: repo.clone(), digest: d }, FileKind::Directory, name);
                }
            }
            Node::ManifestDir { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                for e in image::entries(&doc.manifest) {
                    let (name, kind) = match &e {
                        Entry::ManifestJson => (MANIFEST_JSON.to_string(), FileKind::File),
                        Entry::Config(_) => (CONFIG_JSON.to_string(), FileKind::File),
                        Entry::Layers => (LAYERS_DIR.to_string(), FileKind::Directory),
                        Entry::Link { name, .. } => (name.clone(), FileKind::Symlink),
                    };
                    if let Some(n) = entry_node(repo, &doc, &name) {
                        push(n, kind, name);
                    }
                }
            }
            Node::Layers { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                for (name, d) in &doc.manifest.layers {
                    let n = Node::Blob { repo: repo.clone(), digest: d.digest.clone(), size: d.size };
                    push(n, FileKind::File, name.clone());
                }
            }
            Node::Blobs(_) => {}
            _ => return Err(Error::NotADirectory(format!("{node:?}"))),
        }
        Ok(out)
    }

    /// What the root or a namespace directory lists, from the catalog. Without a catalog (the
    /// registry has none, or refuses it) nothing is listed but every name still looks up.
    fn namespace(&self, prefix: Option<&str>) -> Listing {
        let catalog = match self.store.catalog() {
            Ok(c) => c,
            // A registry without a catalog for us (404, 401, 403) is ordinary; anything else
            // (a catalog over its byte budget, a registry failing) is worth a warning.
            Err(e @ (Error::NotFound(_) | Error::Denied(_))) => {
                log::info!("no catalog ({e}); listing only what is looked up by name");
                return Listing { children: Vec::new(), maybe_repo: true };
            }
            Err(e) => {
                log::warn!("no catalog ({e}); listing only what is looked up by name");
                return Listing { children: Vec::new(), maybe_repo: true };
            }
        };
        let mut children: Vec<String> = Vec::new();
        let mut is_repo = false;
        for repo in catalog.iter() {
            let rest = match prefix {
                None => Some(repo.as_str()),
                Some(p) if repo == p => {
                    is_repo = true;
                    None
                }
                Some(p) => repo.strip_prefix(p).and_then(|r| r.strip_prefix('/')),
            };
            if let Some(first) = rest.and_then(|r| r.split('/').next()) {
                // Inside a repository directory the reserved names are taken by its own dirs.
                let hidden = prefix.is_some() && RESERVED.contains(&first);
                if !hidden && children.last().map(String::as_str) != Some(first) {
                    children.push(first.to_string());
                }
            }
        }
        children.dedup();
        // A name the catalog does not know may still be a repository it does not show.
        let maybe_repo = is_repo || children.is_empty();
        Listing { children, maybe_repo }
    }

    /// A link's target; reading a tag's may start a readahead of the next ones.
    pub fn target(&self, node: &Node) -> Result<String> {
        match node {
            Node::Tag { repo, tag } => {
                let target = tag_target(&self.store.resolve_tag(repo, tag)?);
                self.readahead.note_read(&self.store, repo, tag);
                Ok(target)
            }
            Node::IndexLink { target, .. } => Ok(link_target(target)),
            _ => Err(Error::NotASymlink(format!("{node:?}"))),
        }
    }

    /// A file's verified content, ready (downloaded if need be) when this returns.
    pub fn content(&self, node: &Node) -> Result<Content> {
        match node {
            Node::ManifestJson { repo, digest } => Ok(Content::Manifest(self.store.manifest(repo, digest)?)),
            Node::Blob { repo, digest, size } => self.store.blob(repo, digest, *size),
            Node::Tag { .. } | Node::IndexLink { .. } => {
                Err(Error::BadArgument(format!("{node:?}: a symlink is not opened, its target is")))
            }
            _ => Err(Error::IsADirectory(format!("{node:?}"))),
        }
    }
}

struct Listing {
    children: Vec<String>,
    maybe_repo: bool,
}

fn tag_target(d: &Digest) -> String {
    format!("../{MANIFESTS}/{d}")
}

fn link_target(d: &Digest) -> String {
    format!("../{d}")
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
