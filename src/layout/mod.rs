//! The layout: what every name in the mount means and what every directory lists.
//!
//! ```text
//! /                                   Root        the catalog's top-level names
//!   .regfs/                           RegfsDir    lookup only: the mount's own files (regfs.rs)
//!     status, status.json             StatusFile  what the mount is doing now  (volatile)
//!   <ns>/…/<repo>/                    Namespace   one directory per repository-name component
//!   <name>/tags, manifests, blobs     OfficialLink -> ../library/<name>/…  (Docker Hub only)
//!     tags/                           Tags
//!       <tag>                         Tag         -> ../manifests/<digest>       (tag_ttl)
//!     manifests/                      Manifests   verified so far; any digest looks up
//!       <digest>/                     ManifestDir what the dispatcher found      (immutable below)
//!         manifest.json               ManifestJson
//!         config.json                 Blob
//!         layers/                     Layers
//!           <n>.<ext>                 Blob
//!           <n>.tar                   DecodedLayer the gzip/zstd layer decoded     (verified by diff_id)
//!         rootfs/                     RootfsDir   the layers applied, bottom to top (rootfs.rs)
//!           <path>/                   RootfsDir
//!           <path>                    RootfsFile, RootfsLink, RootfsSpecial (device, FIFO)
//!         <os>-<arch>[-<variant>]     IndexLink   -> ../<child digest>
//!         current                     CurrentLink -> <the link of the entry chosen for --platform>
//!         <title>                     Blob        a layer named by its title annotation
//!         signatures/                 Signatures  each signature found and the verdict (tag_ttl; signatures.rs)
//!           summary, verdict.json, …  SignatureFile
//!         referrers/                  Referrers   what refers to it (tag_ttl; referrers.rs)
//!           <digest>                  ReferrerLink -> ../../<digest>
//!           <type>/                   ReferrersType
//!             <subtype>/              ReferrersSubtype  by artifactType
//!               <digest>              ReferrerLink -> ../../../../<digest>
//!     blobs/                          Blobs       lookup only
//!       <digest>                      Blob
//! ```
//!
//! Each kind is one struct and one `impl` of [`Dir`], [`File`] or [`Link`], in `registry.rs`
//! (the names a registry gives: root to `blobs/`) or `image.rs` (what a verified manifest
//! shows). [`Node::shape`] is the one match over kinds, with no wildcard: adding a kind is one
//! struct, its impl, one variant and one arm here, plus a line in the map above. A fixed name
//! inside a manifest directory also goes into `manifest::DIR_NAMES` (a test guards it).
//! Calls of the wrong shape (a lookup in a file, `readlink` of a directory) cannot be written
//! against a kind; `fs` answers them with `NotADirectory`, `NotASymlink` and so on.
//!
//! # Costs (what each operation may ask the registry)
//! - `readdir /` and of a namespace: the catalog (cached for `tag_ttl`); none if it is cached.
//! - `lookup` of a path component, `manifests`, `blobs`: nothing. Any valid name is a
//!   directory: a catalog may add names to a listing but never denies one (a pull-through cache
//!   lists only what it has cached, others only what the caller may see).
//! - `lookup tags`: nothing if a fresh catalog or tag list lists the repository; else the first
//!   page of one tag of its tag list (one request however long the list), whose 404 makes
//!   `tags` ENOENT; the answer is kept for `tag_ttl`. So a lookup by name costs at most one
//!   request per repository per `tag_ttl`.
//! - On Docker Hub, `<name>/tags`, `manifests` and `blobs` of a one-component name are links
//!   to `library/<name>/…` (the rule docker applies to names as people type them): nothing.
//! - `readdir tags/`: the tag list pages; `lookup tags/<t>`: nothing when the list is fresh, else
//!   one HEAD; `readlink tags/<t>`: one HEAD (cached for `tag_ttl`); links read in order start a
//!   readahead of the next ones (`readahead.rs`).
//! - `lookup manifests/<d>` and everything inside it: the manifest, once (then memory).
//! - `stat` of config and layers: nothing; sizes come from the descriptor that named the file
//!   (schema1 layers and `blobs/<digest>`, which have none, take the verified length when the
//!   blob is cached, else cost one HEAD each, once).
//! - `open` of a blob: the download, once per digest, verified before the open returns.
//! - `stat` of `layers/<n>.tar`: nothing (size 0, uncached, until the layer is decoded); `open`:
//!   the config and the layer's blob, once, then the decode, once per diff_id.
//! - `.regfs/` and its files: nothing, ever (the status is taken from memory at each open).
//! - `stat rootfs`: the manifest only. `lookup` below it: the config, then layer indexes from
//!   the top down until one decides the path (a top-layer file needs only the top layer);
//!   `readdir`: every layer from the top down to the directory's floor (the root: all, asked for
//!   at once); `open` of a rootfs file: its own layer's decoded tar (see `views::merge`).
//! - `current` in an index directory and a layer's title name: nothing beyond the manifest (the
//!   platform is fixed per mount, the titles were read with the manifest).
//! - `stat` of `referrers/`: nothing. Listing it or any directory below it, and lookups there:
//!   the subject's referrers list, one request per `tag_ttl` (the API, or where it answered 404
//!   once, the `sha256-<hex>` tag); `find` over a mount so costs one per manifest directory.
//!
//! A node is a value naming what it shows, so the same thing gets the same inode while the
//! kernel holds it: a layer named with the same size by two manifests of a repository is one
//! inode, which shares one page cache. `blobs/<digest>` (no descriptor, so no claimed size) is an
//! inode of its own. Inode numbers are handed out on first lookup, freed when the kernel forgets
//! them, and never reused while mounted (the core's `fs::inodes`).

pub(crate) mod image;
pub mod referrers;
mod registry;
pub mod rootfs;
pub mod signatures;

// `/.regfs/`: the mount's own files.
mod regfs;
pub use regfs::{REGFS_DIR, RegfsDir, STATUS, STATUS_JSON, StatusFile};

use std::sync::Arc;

use crate::error::Result;
use crate::platform::{Matcher, Platform};
use crate::policy::Gate;
use crate::readahead::{Readahead, ReadaheadConfig};
use crate::store::{Content, Store};
use crate::views::Views;

pub use image::{Blob, CurrentLink, DecodedLayer, IndexLink, Layers, ManifestDir, ManifestJson};
pub use referrers::{ReferrerLink, Referrers, ReferrersSubtype, ReferrersType};
pub use registry::{BLOBS, Blobs, MANIFESTS, Manifests, Namespace, OfficialLink, RESERVED, Root, TAGS, Tag, Tags};
pub use rootfs::{ImageLayers, RootfsDir, RootfsFile, RootfsLink, RootfsSpecial};
pub use signatures::{SignatureFile, Signatures};

/// What every rule may consult: the verified store, the views derived from it (decoded
/// layers), the readahead of tag links, and the layers of images as `rootfs/` reads them.
pub struct Layout {
    store: Arc<Store>,
    views: Arc<Views>,
    readahead: Arc<Readahead>,
    images: Arc<dyn ImageLayers>,
    /// `rootfs/`'s link counts of hard-linked inodes.
    links: Arc<rootfs::LinkCounts>,
    /// What `current` chooses by, in index directories (fixed per mount).
    platform: Matcher,
    /// Docker Hub's rule for one-component names (fixed per mount; [`OfficialLink`]).
    docker_hub: bool,
    /// Whether this is the layout of inline answers ([`Layout::at_hand`]).
    at_hand: bool,
    /// The signature policy's gate (one that lets everything through when there is none).
    gate: Arc<Gate>,
}

impl Layout {
    pub fn new(store: Arc<Store>, readahead: &ReadaheadConfig, bounds: crate::views::ViewsConfig) -> Layout {
        let views = Arc::new(Views::with_config(Arc::clone(&store), bounds));
        let images = rootfs::views_layers(&store, &views);
        Layout::from_parts(store, views, images, readahead)
    }

    /// A layout reading image layers through `images` (tests give their own).
    pub fn with_images(
        store: Arc<Store>,
        images: Arc<dyn ImageLayers>,
        readahead: &ReadaheadConfig,
        bounds: crate::views::ViewsConfig,
    ) -> Layout {
        let views = Arc::new(Views::with_config(Arc::clone(&store), bounds));
        Layout::from_parts(store, views, images, readahead)
    }

    fn from_parts(
        store: Arc<Store>,
        views: Arc<Views>,
        images: Arc<dyn ImageLayers>,
        readahead: &ReadaheadConfig,
    ) -> Layout {
        let links = Arc::new(rootfs::LinkCounts::new(views.config().link_counts));
        let gate = Arc::new(Gate::open(Arc::clone(&store)));
        Layout {
            gate,
            views,
            store,
            readahead: Arc::new(Readahead::new(readahead)),
            images,
            links,
            platform: Matcher::new(&Platform::host()),
            docker_hub: false,
            at_hand: false,
        }
    }

    /// The same layout as an inline answer may use it: manifests only as the store holds them
    /// now ([`Layout::manifest`]), layers' indexes only as they are in memory now
    /// ([`rootfs::AtHand`]); whatever else would be needed is [`Error::NotAtHand`](crate::error::Error::NotAtHand), and
    /// the answer is asked again on a thread. Only kinds whose answers read nothing but those
    /// ([`Dir::looks_up_at_hand`]) are asked through it.
    pub fn at_hand(&self) -> Layout {
        Layout {
            store: Arc::clone(&self.store),
            views: Arc::clone(&self.views),
            readahead: Arc::clone(&self.readahead),
            images: Arc::new(rootfs::AtHand(Arc::clone(&self.images))),
            links: Arc::clone(&self.links),
            platform: self.platform.clone(),
            docker_hub: self.docker_hub,
            at_hand: true,
            gate: Arc::clone(&self.gate),
        }
    }

    /// Enforce `gate`'s policy (before the layout of inline answers is taken from this one).
    pub fn set_gate(&mut self, gate: Arc<Gate>) {
        self.gate = gate;
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Whether `node`, if it is part of a manifest's content, may be shown now: what the core
    /// asks before it hands out a listing it kept or an entry with attributes without a lookup
    /// (a verdict may have turned since). `Ok` for everything else.
    pub fn check_gate(&self, node: &Node) -> Result<()> {
        let gated = match node {
            Node::Layers(n) => Some((&n.repo, &n.digest)),
            Node::DecodedLayer(n) => Some((&n.repo, &n.manifest)),
            Node::RootfsDir(n) => Some((&n.repo, &n.manifest)),
            Node::RootfsFile(n) => Some((&n.repo, &n.manifest)),
            Node::RootfsLink(n) => Some((&n.repo, &n.manifest)),
            Node::RootfsSpecial(n) => Some((&n.repo, &n.manifest)),
            _ => None,
        };
        match gated {
            Some((repo, digest)) => self.allowed(repo, digest),
            None => Ok(()),
        }
    }

    /// Whether manifest `digest` of `repo` may show its content (`policy::Gate::allows`); in
    /// the layout of inline answers only if the verdict is kept.
    pub fn allowed(&self, repo: &str, digest: &crate::digest::Digest) -> Result<()> {
        if !self.at_hand {
            return self.gate.allows(repo, digest);
        }
        self.gate
            .allows_now(repo, digest)
            .unwrap_or_else(|| Err(crate::error::Error::NotAtHand(format!("the verdict on {repo}@{digest}"))))
    }

    /// The verified manifest `digest` of `repo`: fetched if need be, but in the layout of
    /// inline answers only if the store holds it now.
    pub fn manifest(&self, repo: &str, digest: &crate::digest::Digest) -> Result<Arc<crate::store::VerifiedManifest>> {
        if !self.at_hand {
            return self.store.manifest(repo, digest);
        }
        self.store
            .manifest_now(repo, digest)
            .ok_or_else(|| crate::error::Error::NotAtHand(format!("manifest {repo}@{digest}")))
    }

    /// `rootfs/`'s link counts, kept per image and inode.
    pub fn link_counts(&self) -> &rootfs::LinkCounts {
        &self.links
    }

    /// `current` links (in index directories) name the entry chosen for `platform`.
    pub fn choose_platform(&mut self, platform: &Platform) {
        self.platform = Matcher::new(platform);
    }

    /// On Docker Hub, a one-component name is also an official image: `alpine/tags`,
    /// `alpine/manifests` and `alpine/blobs` link to `library/alpine`'s ([`OfficialLink`]).
    pub fn read_names_as_docker_hub(&mut self, docker_hub: bool) {
        self.docker_hub = docker_hub;
    }

    pub fn images(&self) -> &dyn ImageLayers {
        &*self.images
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn views(&self) -> &Views {
        &self.views
    }

    /// Repositories whose tag-reading position readahead remembers now.
    pub fn readahead_streams(&self) -> usize {
        self.readahead.streams()
    }
}

/// How long what a node shows stays true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stability {
    /// Addressed by digest: it can never change.
    Immutable,
    /// Addressed by a name the registry may move (a tag, the catalog): trusted for `tag_ttl`.
    Named,
    /// What the mount is doing now (`.regfs/status`): never cached by the kernel (TTL 0,
    /// opened for direct I/O, never passthrough), rendered at each open.
    Volatile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// What a kind may say of itself beyond its shape and size: the metadata an image's layer gives
/// its entries. Kinds that say nothing ([`Dir::meta`] and the others default to `None`) show
/// what regfs always showed: 0555/0444/0777, the mounting user, the mount's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (12 bits).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: std::time::SystemTime,
    /// Names of this inode (hard links); directories say 1 (unknown, as btrfs does).
    pub nlink: u32,
    /// The device number of a character or block device, `(major, minor)` as the layer gives
    /// it; `(0, 0)` for anything else.
    pub rdev: (u32, u32),
    /// Extended attributes, by name, in the order the layer gave them.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root(Root),
    RegfsDir(RegfsDir),
    StatusFile(StatusFile),
    Namespace(Namespace),
    OfficialLink(OfficialLink),
    Tags(Tags),
    Tag(Tag),
    Manifests(Manifests),
    Blobs(Blobs),
    ManifestDir(ManifestDir),
    ManifestJson(ManifestJson),
    Layers(Layers),
    Blob(Blob),
    DecodedLayer(DecodedLayer),
    IndexLink(IndexLink),
    CurrentLink(CurrentLink),
    RootfsDir(RootfsDir),
    RootfsFile(RootfsFile),
    RootfsLink(RootfsLink),
    RootfsSpecial(RootfsSpecial),
    Referrers(Referrers),
    ReferrersType(ReferrersType),
    ReferrersSubtype(ReferrersSubtype),
    ReferrerLink(ReferrerLink),
    Signatures(Signatures),
    SignatureFile(SignatureFile),
}

/// A node seen as what it is: the operations its kind has.
pub enum Shape<'a> {
    Dir(&'a dyn Dir),
    File(&'a dyn File),
    Link(&'a dyn Link),
    /// A character or block device or a FIFO: attributes only (the mount is `nodev`, and the
    /// kernel opens FIFOs itself).
    Special(&'a dyn Special),
}

pub trait Dir: Send + Sync {
    fn stability(&self) -> Stability;
    /// `..`; the root is its own parent. (Only directories have one: a file may have many names.)
    fn parent(&self) -> Node;
    /// That it exists, as far as `stat` may cost (a manifest directory: its manifest, once).
    /// By default nothing: a name that looked up is a directory.
    fn check(&self, cx: &Layout) -> Result<()> {
        let _ = cx;
        Ok(())
    }
    /// What `name` means here, checked to exist as far as that is cheap. `InvalidName` only
    /// where the grammar forbids the name.
    fn child(&self, cx: &Layout, name: &str) -> Result<Node>;
    /// What is listed, in listing order, as it is now (a name may look up without being listed).
    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>>;
    /// Whether a lookup here, and the attributes of what it finds, read nothing but manifests
    /// and layers' indexes: then it is tried inline through [`Layout::at_hand`], which has them
    /// only if they are in memory. By default no.
    fn looks_up_at_hand(&self) -> bool {
        false
    }
    /// Its own metadata, if it has any (see [`Meta`]); by default none.
    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        let _ = cx;
        Ok(None)
    }
}

pub trait File: Send + Sync {
    fn stability(&self) -> Stability;
    /// `st_size`; where it comes from is the kind's rule (descriptor, HEAD, verified length).
    fn size(&self, cx: &Layout) -> Result<u64>;
    /// Whether `size` is final. An unsettled size (a decoded layer not decoded yet shows 0) is
    /// not cached by the kernel (TTL 0), so it asks again and sees the real size once known.
    /// Ask before `size`: a size read after `true` is final. Never costs a request.
    fn settled(&self, cx: &Layout) -> bool {
        let _ = cx;
        true
    }
    /// The verified content, ready (downloaded if need be) when this returns.
    fn open(&self, cx: &Layout) -> Result<Content>;
    /// [`File::open`] if it needs no waiting (nothing to fetch, decode or hash): the adapter
    /// then answers the open inline instead of on a thread. `None` (the default): it may wait.
    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        let _ = cx;
        None
    }
    /// Its own metadata, if it has any (see [`Meta`]); by default none.
    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        let _ = cx;
        Ok(None)
    }
}

pub trait Link: Send + Sync {
    fn stability(&self) -> Stability;
    /// `st_size`, without resolving what need not be.
    fn size(&self, cx: &Layout) -> u64;
    /// Whether `size` is final; one that is not is not cached by the kernel (TTL 0). Yes by
    /// default.
    fn settled(&self) -> bool {
        true
    }
    fn target(&self, cx: &Layout) -> Result<String>;
    /// [`Link::target`] if it needs no waiting (nothing to fetch or resolve): the adapter then
    /// answers the readlink inline instead of on a thread. `None` (the default): it may wait.
    fn target_now(&self, cx: &Layout) -> Option<Result<String>> {
        let _ = cx;
        None
    }
    /// Its own metadata, if it has any (see [`Meta`]); by default none.
    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        let _ = cx;
        Ok(None)
    }
}

pub trait Special: Send + Sync {
    fn stability(&self) -> Stability;
    /// Which of [`FileKind::CharDevice`], [`FileKind::BlockDevice`], [`FileKind::Fifo`].
    fn kind(&self) -> FileKind;
    /// Its metadata (device numbers included).
    fn meta(&self, cx: &Layout) -> Result<Option<Meta>>;
}

impl Node {
    /// The one match over kinds.
    pub fn shape(&self) -> Shape<'_> {
        match self {
            Node::Root(n) => Shape::Dir(n),
            Node::RegfsDir(n) => Shape::Dir(n),
            Node::StatusFile(n) => Shape::File(n),
            Node::Namespace(n) => Shape::Dir(n),
            Node::OfficialLink(n) => Shape::Link(n),
            Node::Tags(n) => Shape::Dir(n),
            Node::Tag(n) => Shape::Link(n),
            Node::Manifests(n) => Shape::Dir(n),
            Node::Blobs(n) => Shape::Dir(n),
            Node::ManifestDir(n) => Shape::Dir(n),
            Node::ManifestJson(n) => Shape::File(n),
            Node::Layers(n) => Shape::Dir(n),
            Node::Blob(n) => Shape::File(n),
            Node::DecodedLayer(n) => Shape::File(n),
            Node::IndexLink(n) => Shape::Link(n),
            Node::CurrentLink(n) => Shape::Link(n),
            Node::RootfsDir(n) => Shape::Dir(n),
            Node::RootfsFile(n) => Shape::File(n),
            Node::RootfsLink(n) => Shape::Link(n),
            Node::RootfsSpecial(n) => Shape::Special(n),
            Node::Referrers(n) => Shape::Dir(n),
            Node::ReferrersType(n) => Shape::Dir(n),
            Node::ReferrersSubtype(n) => Shape::Dir(n),
            Node::ReferrerLink(n) => Shape::Link(n),
            Node::Signatures(n) => Shape::Dir(n),
            Node::SignatureFile(n) => Shape::File(n),
        }
    }
}

impl Shape<'_> {
    pub fn kind(&self) -> FileKind {
        match self {
            Shape::Dir(_) => FileKind::Directory,
            Shape::File(_) => FileKind::File,
            Shape::Link(_) => FileKind::Symlink,
            Shape::Special(s) => s.kind(),
        }
    }

    pub fn stability(&self) -> Stability {
        match self {
            Shape::Dir(d) => d.stability(),
            Shape::File(f) => f.stability(),
            Shape::Link(l) => l.stability(),
            Shape::Special(s) => s.stability(),
        }
    }

    /// The kind's own metadata, if it has any.
    pub fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        match self {
            Shape::Dir(d) => d.meta(cx),
            Shape::File(f) => f.meta(cx),
            Shape::Link(l) => l.meta(cx),
            Shape::Special(s) => s.meta(cx),
        }
    }
}
