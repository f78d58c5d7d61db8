//! The filesystem core, free of FUSE: lookup, getattr, readdir, readlink, open, read and release
//! over inode numbers, answering with plain Rust values or an [`Error`]. `fuse.rs` is a thin
//! adapter over this; tests drive it directly with a fake registry client.
//!
//! # Costs (what each operation may ask the registry)
//! - `readdir /` and of a namespace: the catalog (cached for `tag_ttl`); none if it is cached.
//! - `lookup` of a path component, `tags`, `manifests`, `blobs`: nothing (any valid name is a
//!   directory: a registry without a catalog must still be browsable by name).
//! - `readdir tags/`: the tag list pages; `lookup tags/<t>`: nothing when the list is fresh, else
//!   one HEAD; `readlink tags/<t>`: one HEAD (cached for `tag_ttl`); links read in order start a
//!   readahead of the next ones (`readahead.rs`).
//! - `lookup manifests/<d>` and everything inside it: the manifest, once (then memory).
//! - `stat` of config and layers: nothing; sizes come from the descriptor that named the file
//!   (schema1 layers and `blobs/<digest>`, which have none, take the verified length when the
//!   blob is cached, else cost one HEAD each, once).
//! - `open` of a blob: the download, once per digest, verified before the open returns.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::HashMap;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::inodes::{Inodes, ROOT_INO};
use crate::layout::{BLOBS, MANIFESTS, Node, RESERVED, TAGS};
use crate::manifest::{CONFIG_JSON, Entry, LAYERS_DIR, MANIFEST_JSON};
use crate::names;
use crate::readahead::Readahead;
use crate::store::{Content, Store, VerifiedManifest};
use crate::sync;

/// How long the kernel may trust digest-addressed entries and attributes.
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Length of `../manifests/sha256:<64 hex>`, reported before a tag is resolved.
const SHA256_TAG_LINK_LEN: u64 = 83;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (read-only: 0555 directories, 0444 files, 0777 links).
    pub perm: u16,
    /// How long the kernel may cache this entry and its attributes.
    pub ttl: Duration,
    pub mtime: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: String,
}

pub struct Fs {
    store: Arc<Store>,
    readahead: Readahead,
    inodes: Inodes,
    tag_ttl: Duration,
    mounted_at: SystemTime,
    handles: Mutex<HashMap<u64, Content>>,
    /// Listings of open directories, by handle.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
}

impl Fs {
    pub fn new(store: Arc<Store>, tag_ttl: Duration) -> Fs {
        Fs {
            store,
            readahead: Readahead::default(),
            inodes: Inodes::default(),
            tag_ttl,
            mounted_at: SystemTime::now(),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node behind `ino`. An unknown number is `NotFound` (ENOENT), which is what the kernel
    /// sees for a forgotten inode today; nothing asks for ESTALE.
    fn node(&self, ino: u64) -> Result<Node> {
        self.inodes.node(ino).ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// Attributes of `node`, under inode number 0: the caller puts in the number (the one asked
    /// about, or the one a lookup hands out).
    fn attr(&self, node: &Node, kind: FileKind, size: u64) -> Attr {
        let perm = match kind {
            FileKind::Directory => 0o555,
            FileKind::File => 0o444,
            FileKind::Symlink => 0o777,
        };
        Attr {
            ino: 0,
            kind,
            size,
            perm,
            ttl: if node.is_immutable() { IMMUTABLE_TTL } else { self.tag_ttl },
            mtime: self.mounted_at,
        }
    }

    fn dir(&self, node: Node) -> Attr {
        self.attr(&node, FileKind::Directory, 0)
    }

    /// The attributes of `node`; may ask the registry for what it does not know yet.
    fn attr_of(&self, node: &Node) -> Result<Attr> {
        Ok(match node {
            Node::Root | Node::Path(_) | Node::Tags(_) | Node::Manifests(_) | Node::Blobs(_) => self.dir(node.clone()),
            Node::ManifestDir { repo, digest } | Node::Layers { repo, digest } => {
                self.store.manifest(repo, digest)?;
                self.dir(node.clone())
            }
            Node::ManifestJson { repo, digest } => {
                let doc = self.store.manifest(repo, digest)?;
                self.attr(node, FileKind::File, doc.bytes().len() as u64)
            }
            Node::Blob { repo, digest, size } => {
                let size = self.store.blob_size(repo, digest, *size)?;
                self.attr(node, FileKind::File, size)
            }
            Node::Tag { repo, tag } => {
                // Exact once resolved; until then the sha256 length, so `ls -l` costs no HEAD.
                let size = self
                    .store
                    .resolve_tag_if_known(repo, tag)
                    .map_or(SHA256_TAG_LINK_LEN, |d| tag_target(&d).len() as u64);
                self.attr(node, FileKind::Symlink, size)
            }
            Node::IndexLink { target, .. } => self.attr(node, FileKind::Symlink, link_target(target).len() as u64),
        })
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        Ok(Attr { ino, ..self.attr_of(&self.node(ino)?)? })
    }

    /// How long the kernel may remember that `parent` has no entry called `name` (a negative
    /// entry): a day where the answer cannot change (inside a manifest, or a name the grammar
    /// rules out), `tag_ttl` where it can (a tag may be pushed).
    pub fn negative_ttl(&self, parent: u64, error: &Error) -> Duration {
        match (self.inodes.node(parent), error) {
            (_, Error::InvalidName(_)) => IMMUTABLE_TTL,
            (Some(p), _) if p.is_immutable() => IMMUTABLE_TTL,
            _ => self.tag_ttl,
        }
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let name = name.to_str().ok_or_else(|| Error::InvalidName(name.to_string_lossy().into_owned()))?;
        let child = self.child(&self.node(parent)?, name)?;
        let attr = self.attr_of(&child)?;
        // Counted only once the answer is sure: the kernel holds a reference from this reply on.
        Ok(Attr { ino: self.inodes.lookup(&child), ..attr })
    }

    /// The kernel dropped `n` references to `ino` (FUSE `forget`): at none, its inode is freed.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Inodes held now (the root included), and the most held at once.
    pub fn inodes_held(&self) -> (usize, usize) {
        self.inodes.held()
    }

    /// The node called `name` inside `parent`, checked to exist as far as that is cheap.
    fn child(&self, parent: &Node, name: &str) -> Result<Node> {
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

    /// Open a directory: its listing is taken here, once, and every `readdir` of the handle reads
    /// that snapshot. So a listing is consistent however the registry changes while it is read,
    /// a large one is built once rather than once per kernel buffer, and a failure surfaces here,
    /// where it is visible: glibc reads ENOENT from getdents as the end of the directory.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let entries = Arc::new(self.readdir(ino)?);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        sync::lock(&self.dirs).insert(fh, entries);
        Ok(fh)
    }

    /// The listing taken when `fh` was opened.
    pub fn listing(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        sync::lock(&self.dirs).get(&fh).cloned().ok_or_else(|| Error::BadHandle(format!("no open directory {fh}")))
    }

    pub fn releasedir(&self, fh: u64) {
        sync::lock(&self.dirs).remove(&fh);
    }

    /// The entries of a directory, `.` and `..` first, as they are now.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        let mut out = vec![
            DirEntry { ino, kind: FileKind::Directory, name: ".".into() },
            DirEntry { ino: self.inodes.listed(&node.parent()), kind: FileKind::Directory, name: "..".into() },
        ];
        let mut push =
            |n: Node, kind: FileKind, name: String| out.push(DirEntry { ino: self.inodes.listed(&n), kind, name });
        match &node {
            Node::Root | Node::Path(_) => {
                let prefix = match &node {
                    Node::Path(p) => Some(p.as_str()),
                    _ => None,
                };
                let listing = self.namespace(prefix);
                if prefix.is_some() && listing.maybe_repo {
                    for r in RESERVED {
                        if let Ok(n) = self.child(&node, r) {
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
                for e in doc.manifest.entries() {
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
            _ => return Err(Error::NotADirectory(format!("inode {ino}"))),
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

    pub fn readlink(&self, ino: u64) -> Result<String> {
        match self.node(ino)? {
            Node::Tag { repo, tag } => {
                let target = tag_target(&self.store.resolve_tag(&repo, &tag)?);
                self.readahead.note_read(&self.store, &repo, &tag);
                Ok(target)
            }
            Node::IndexLink { target, .. } => Ok(link_target(&target)),
            _ => Err(Error::NotASymlink(format!("inode {ino}"))),
        }
    }

    /// The mount is going: downloads in flight stop, and their waiters get an error.
    pub fn cancel(&self) {
        self.store.blob_cache().cancel();
    }

    /// Open a file: its verified content is ready (downloaded if need be) when this returns. The
    /// verified cache file behind it, if it has one, is handed out too, so the adapter can let the
    /// kernel read that file directly (FUSE passthrough).
    pub fn open_file(&self, ino: u64) -> Result<Opened> {
        let content = match self.node(ino)? {
            Node::ManifestJson { repo, digest } => Content::Manifest(self.store.manifest(&repo, &digest)?),
            Node::Blob { repo, digest, size } => self.store.blob(&repo, &digest, size)?,
            Node::Tag { .. } | Node::IndexLink { .. } => {
                return Err(Error::BadArgument(format!("inode {ino}: a symlink is not opened, its target is")));
            }
            _ => return Err(Error::IsADirectory(format!("inode {ino}"))),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = match &content {
            Content::File(f) => Some(Arc::clone(f)),
            _ => None,
        };
        sync::lock(&self.handles).insert(fh, content);
        Ok(Opened { fh, file })
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let content = sync::lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::BadHandle(format!("no open file {fh}")))?;
        let slice = |bytes: &[u8]| {
            let start = (offset.min(bytes.len() as u64)) as usize;
            let end = start.saturating_add(size as usize).min(bytes.len());
            bytes[start..end].to_vec()
        };
        match content {
            Content::Manifest(doc) => Ok(slice(doc.bytes())),
            Content::Memory(bytes) => Ok(slice(&bytes)),
            Content::File(file) => {
                let mut buf = vec![0u8; size as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            }
        }
    }

    pub fn release(&self, fh: u64) {
        sync::lock(&self.handles).remove(&fh);
    }

    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }
}

/// An open file: its handle, and the verified cache file behind it when the content is on disk.
pub struct Opened {
    pub fh: u64,
    pub file: Option<Arc<std::fs::File>>,
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

/// The node for `name` in the directory of manifest `doc`.
fn entry_node(repo: &str, doc: &VerifiedManifest, name: &str) -> Option<Node> {
    let repo = repo.to_string();
    let digest = doc.digest.clone();
    doc.manifest.entries().into_iter().find_map(|e| match e {
        Entry::ManifestJson if name == MANIFEST_JSON => {
            Some(Node::ManifestJson { repo: repo.clone(), digest: digest.clone() })
        }
        Entry::Config(c) if name == CONFIG_JSON => {
            Some(Node::Blob { repo: repo.clone(), digest: c.digest, size: c.size })
        }
        Entry::Layers if name == LAYERS_DIR => Some(Node::Layers { repo: repo.clone(), digest: digest.clone() }),
        Entry::Link { name: n, target } if n == name => {
            Some(Node::IndexLink { repo: repo.clone(), parent: digest.clone(), name: n, target })
        }
        _ => None,
    })
}
