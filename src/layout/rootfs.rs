//! `rootfs/`: an image's layers applied bottom to top, as a container sees them.
//!
//! The kinds here only name things; what a path is comes from the merge ([`Merge`]) over the
//! image's layer indexes, and what a file holds from its layer's verified decoded tar. Both are
//! had through [`ImageLayers`] (`views::Views` in a mount; tests give their own).
//!
//! - A directory is a path ([`RootfsDir`]): its attributes and listing are merged.
//! - Every other kind is an inode, named by the layer and entry of its original data entry
//!   ([`RootfsFile`], [`RootfsLink`], [`RootfsSpecial`]): every name of a hard-linked file is the
//!   same node, so the same inode number, and `st_nlink` counts its names ([`Merge::nlink`]).
//! - A file opens as [`Content::Range`]: its bytes in its layer's decoded tar, which was verified
//!   against the layer's diff_id before any byte of it is served.
//! - `rootfs/` itself is 0755 root:root with mtime 0, whatever the layers say of `./`, so that
//!   `stat` of a manifest directory's entries costs the manifest only.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Kind, Manifest};
use crate::media;
use crate::store::{Content, Store};
use crate::views::Views;
use crate::views::index::{EntryKind, LayerIndex};
use crate::views::lazy::LazyLayer;
use crate::views::merge::{Found, Inode, LayerSource, Merge};
use crate::views::prefetch::{Prefetcher, Step};

use super::{Dir, File, FileKind, Layout, Link, ManifestDir, Meta, Node, Special, Stability};

/// The layers of images, as `rootfs/` reads them. Layer `n` counts from the bottom.
pub trait ImageLayers: Send + Sync {
    /// Layer `n`'s index (fetched, decoded, verified and indexed if need be).
    fn index(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<LayerIndex>>;
    /// Layer `n`'s decoded tar, verified against its diff_id: a cache file open for `pread`
    /// ([`Content::File`]), or its bytes (a small uncompressed layer kept in memory).
    fn decoded(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Content>;
    /// Layer `n`'s index and decoded tar if both are at hand now (nothing to fetch, decode or
    /// hash): a file of it then opens inline. By default never.
    fn ready(&self, repo: &str, manifest: &Digest, n: usize) -> Option<(Arc<LayerIndex>, Content)> {
        let _ = (repo, manifest, n);
        None
    }
    /// Layer `n`'s index if it is in memory now (nothing to fetch, decode or read). By default
    /// never.
    fn index_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Result<Arc<LayerIndex>>> {
        let _ = (repo, manifest, n);
        None
    }
    /// Layers `layers` (top first) are about to be needed: get them ready, in parallel if the
    /// source can. By default nothing.
    fn prefetch(&self, repo: &str, manifest: &Digest, layers: &[usize]) {
        let _ = (repo, manifest, layers);
    }
    /// Layer `n` read by chunks (`views::lazy`), if it is one: its index is the TOC's and its
    /// files open as parts. `None`: it is read whole. By default never.
    fn lazy(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Option<Arc<LazyLayer>>> {
        let _ = (repo, manifest, n);
        Ok(None)
    }
    /// [`ImageLayers::lazy`] if it is known now: `None` if finding out may wait.
    fn lazy_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Option<Arc<LazyLayer>>> {
        let _ = (repo, manifest, n);
        Some(None)
    }
}

/// Layers as an inline answer reads them ([`Layout::at_hand`]): an index only if it is in
/// memory now, else [`Error::NotAtHand`]; never a decoded tar that is not ready, never a
/// prefetch.
pub(crate) struct AtHand(pub(crate) Arc<dyn ImageLayers>);

impl ImageLayers for AtHand {
    fn index(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<LayerIndex>> {
        let not = || Err(Error::NotAtHand(format!("the index of layer {n} of {repo}@{manifest}")));
        self.0.index_now(repo, manifest, n).unwrap_or_else(not)
    }

    fn decoded(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Content> {
        match self.0.ready(repo, manifest, n) {
            Some((_, content)) => Ok(content),
            None => Err(Error::NotAtHand(format!("the decoded layer {n} of {repo}@{manifest}"))),
        }
    }

    fn ready(&self, repo: &str, manifest: &Digest, n: usize) -> Option<(Arc<LayerIndex>, Content)> {
        self.0.ready(repo, manifest, n)
    }

    fn index_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Result<Arc<LayerIndex>>> {
        self.0.index_now(repo, manifest, n)
    }

    fn lazy(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Option<Arc<LazyLayer>>> {
        let not = || Error::NotAtHand(format!("the TOC of layer {n} of {repo}@{manifest}"));
        self.0.lazy_now(repo, manifest, n).ok_or_else(not)
    }

    fn lazy_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Option<Arc<LazyLayer>>> {
        self.0.lazy_now(repo, manifest, n)
    }
}

/// The image layers a layout reads: decoded, verified and indexed by `views`.
pub(crate) fn views_layers(store: &Arc<Store>, views: &Arc<Views>) -> Arc<dyn ImageLayers> {
    Arc::new(ViewsLayers(Arc::new(LayersInner::new(Arc::clone(store), Arc::clone(views)))))
}

/// Layers as [`Views`] gives them (decoded, verified against their diff_ids, indexed in one
/// pass, indexes kept within their own bound), with what `rootfs/` adds: the parallel
/// preparation of a listing's layers. A layer whose index is still in the views' own bounded
/// LRU and whose decoded tar is verified this run is at hand ([`Views::ready`], by the diff_id
/// this image's config names): its files open inline; no table of its own holds indexes past
/// that bound.
struct ViewsLayers(Arc<LayersInner>);

struct LayersInner {
    store: Arc<Store>,
    views: Arc<Views>,
    /// Layers whose index this run has had, by blob digest (at most
    /// [`ViewsConfig::indexed_layers`](crate::views::ViewsConfig::indexed_layers)): a listing
    /// does not start threads for them.
    indexed: std::sync::Mutex<lru::LruCache<Digest, ()>>,
    prefetcher: Prefetcher,
    /// Lazy layers whose whole verification was started (`--lazy-verify`), by blob.
    verifying: std::sync::Mutex<lru::LruCache<Digest, ()>>,
    /// Whole verifications at once (`--lazy-verify`): as many as prefetch downloads.
    verify_turns: crate::sync::Semaphore,
}

impl LayersInner {
    fn new(store: Arc<Store>, views: Arc<Views>) -> LayersInner {
        let config = *views.config();
        LayersInner {
            store,
            views,
            indexed: std::sync::Mutex::new(lru::LruCache::new(crate::capacity::nonzero(config.indexed_layers))),
            prefetcher: Prefetcher::with_limits(config.prefetch_downloads, config.prefetch_decodes),
            verifying: std::sync::Mutex::new(lru::LruCache::new(crate::capacity::nonzero(4096))),
            verify_turns: crate::sync::Semaphore::new(config.prefetch_downloads.max(1)),
        }
    }

    /// Layer `n`'s blob digest.
    fn layer(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Digest> {
        let doc = self.store.manifest(repo, manifest)?;
        let layer = doc.manifest.layers.get(n).map(|(_, d)| d.digest.clone());
        layer.ok_or_else(|| Error::NotFound(format!("{repo}@{manifest}: no layer {n}")))
    }

    /// Layer `n` read by chunks, if it names a TOC (and Range is honoured, and `--lazy` is on).
    fn lazy(self: &Arc<Self>, repo: &str, manifest: &Digest, n: usize) -> Result<Option<Arc<LazyLayer>>> {
        let doc = self.store.manifest(repo, manifest)?;
        let layer = self.views.lazy().layer(repo, &doc, n)?;
        if let Some(l) = &layer {
            if self.views.lazy().config().verify_whole
                && crate::sync::lock(&self.verifying).put(l.blob.clone(), ()).is_none()
            {
                self.verify_whole(repo, manifest, n);
            }
        }
        Ok(layer)
    }

    /// `--lazy-verify`: layer `n`, read lazily, fetched whole on a thread of its own, verified
    /// by its diff_id, and its TOC checked against it (`views::lazy::check`).
    fn verify_whole(self: &Arc<Self>, repo: &str, manifest: &Digest, n: usize) {
        let (inner, repo, manifest) = (Arc::clone(self), repo.to_string(), manifest.clone());
        let spawned = std::thread::Builder::new().name("regfs-lazy-verify".into()).spawn(move || {
            let _turn = inner.verify_turns.acquire();
            if let Err(e) = inner.views.decoded_content(&repo, &manifest, n) {
                log::warn!("{repo}@{manifest}: layer {n}, read lazily, could not be verified whole: {e}");
            }
        });
        if let Err(e) = spawned {
            log::warn!("layer {n}: no thread to verify it whole: {e}");
        }
    }

    /// [`LayersInner::lazy`] if known now: a layer that names a TOC not read yet is not.
    fn lazy_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Option<Arc<LazyLayer>>> {
        let lazy = self.views.lazy();
        if lazy.reads_whole_now() {
            return Some(None);
        }
        let doc = self.store.manifest_now(repo, manifest)?;
        match lazy.layer_now(repo, &doc, n) {
            Some(l) => Some(Some(l)),
            None => lazy.reads_whole(repo, &doc, n).then_some(None),
        }
    }

    fn index(self: &Arc<Self>, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<LayerIndex>> {
        // A layer read by chunks has its TOC's index, always: its entries' numbers are inodes,
        // so one layer never has two indexes in one run.
        if let Some(l) = self.lazy(repo, manifest, n)? {
            return Ok(Arc::clone(&l.index));
        }
        let index = self.views.index(repo, manifest, n)?;
        if let Ok(d) = self.layer(repo, manifest, n) {
            crate::sync::lock(&self.indexed).put(d, ());
        }
        Ok(index)
    }

    fn decoded(self: &Arc<Self>, repo: &str, manifest: &Digest, n: usize) -> Result<Content> {
        let content = self.views.decoded_content(repo, manifest, n)?;
        // Indexed too, so that the layer is at hand for the next open.
        self.index(repo, manifest, n)?;
        Ok(content)
    }
}

impl ImageLayers for ViewsLayers {
    fn index(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Arc<LayerIndex>> {
        self.0.index(repo, manifest, n)
    }

    fn decoded(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Content> {
        self.0.decoded(repo, manifest, n)
    }

    /// Never a layer read by chunks (its files open as parts, [`ImageLayers::lazy_now`]).
    fn ready(&self, repo: &str, manifest: &Digest, n: usize) -> Option<(Arc<LayerIndex>, Content)> {
        let doc = self.0.store.manifest_now(repo, manifest)?;
        let lazy = self.0.views.lazy();
        if !lazy.reads_whole_now() && !lazy.reads_whole(repo, &doc, n) {
            return None;
        }
        self.0.views.ready(&doc, n)
    }

    fn index_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Result<Arc<LayerIndex>>> {
        match self.0.lazy_now(repo, manifest, n)? {
            Some(l) => Some(Ok(Arc::clone(&l.index))),
            None => self.0.views.index_now(repo, manifest, n),
        }
    }

    fn lazy(&self, repo: &str, manifest: &Digest, n: usize) -> Result<Option<Arc<LazyLayer>>> {
        self.0.lazy(repo, manifest, n)
    }

    fn lazy_now(&self, repo: &str, manifest: &Digest, n: usize) -> Option<Option<Arc<LazyLayer>>> {
        self.0.lazy_now(repo, manifest, n)
    }

    /// Layers not indexed yet this run are downloaded and decoded at once (two at least: one
    /// alone gains nothing from a thread).
    fn prefetch(&self, repo: &str, manifest: &Digest, layers: &[usize]) {
        let Ok(doc) = self.0.store.manifest(repo, manifest) else { return };
        let missing: Vec<(usize, crate::manifest::Descriptor)> = layers
            .iter()
            .filter_map(|&n| doc.manifest.layers.get(n).map(|(_, d)| (n, d.clone())))
            .filter(|(_, d)| !crate::sync::lock(&self.0.indexed).contains(&d.digest))
            .collect();
        if missing.len() < 2 {
            return;
        }
        log::debug!("{repo}@{manifest}: getting {} layers ready at once", missing.len());
        let ns: Vec<usize> = missing.iter().map(|(n, _)| *n).collect();
        let (inner, repo2, m2) = (Arc::clone(&self.0), repo.to_string(), manifest.clone());
        let descs: std::collections::HashMap<usize, crate::manifest::Descriptor> = missing.into_iter().collect();
        // A layer read by chunks downloads nothing: getting it ready is reading its TOC.
        let lazily: std::collections::HashSet<usize> =
            ns.iter().copied().filter(|&n| !self.0.views.lazy().reads_whole(repo, &doc, n)).collect();
        let download: Step = Arc::new(move |n| {
            if lazily.contains(&n) {
                return;
            }
            if let Some(d) = descs.get(&n) {
                if let Err(e) = inner.store.blob(&repo2, &d.digest, d.size) {
                    log::debug!("{repo2}@{m2}: prefetch of layer {n}: {e}");
                }
            }
        });
        let (inner, repo, manifest) = (Arc::clone(&self.0), repo.to_string(), manifest.clone());
        let decode: Step = Arc::new(move |n| {
            if let Err(e) = inner.index(&repo, &manifest, n) {
                log::debug!("{repo}@{manifest}: prefetch of layer {n}: {e}");
            }
        });
        drop(self.0.prefetcher.start(&ns, download, decode));
    }
}

/// Whether manifest `m` shows `rootfs/`: an image manifest (Docker schema2 or OCI with an image
/// config, where the diff_ids are; or schema1) whose every layer is an image layer that is a tar,
/// plain, gzip or zstd. Decided from the manifest alone. Artifacts (a signature, a Helm chart)
/// get none.
pub fn has_rootfs(m: &Manifest) -> bool {
    let image_config = match &m.config {
        Some(c) => matches!(
            media::bare(&c.media_type).as_str(),
            "application/vnd.oci.image.config.v1+json" | "application/vnd.docker.container.image.v1+json"
        ),
        None => m.kind == Kind::DockerSchema1,
    };
    m.kind.is_image()
        && image_config
        && m.layers.iter().all(|(_, d)| {
            let mt = media::bare(&d.media_type);
            let layer = mt.starts_with("application/vnd.oci.image.layer.")
                || mt.starts_with("application/vnd.docker.image.rootfs.");
            layer && matches!(media::layer_extension(&mt), ".tar" | ".tar.gz" | ".tar.zst")
        })
}

/// `rootfs/` and every directory below it: a path in the merged tree (`""` is `rootfs/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootfsDir {
    pub repo: String,
    pub manifest: Digest,
    pub path: String,
}

/// A regular file of the merged tree: the inode of entry `entry` of layer `layer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootfsFile {
    pub repo: String,
    pub manifest: Digest,
    pub layer: u16,
    pub entry: u32,
}

/// A symbolic link of the merged tree (links can be hard-linked too: same key as a file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootfsLink {
    pub repo: String,
    pub manifest: Digest,
    pub layer: u16,
    pub entry: u32,
}

/// A character or block device or a FIFO of the merged tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RootfsSpecial {
    pub repo: String,
    pub manifest: Digest,
    pub layer: u16,
    pub entry: u32,
    pub kind: FileKind,
}

/// One image's layers as the merge reads them.
struct Source<'a> {
    images: &'a dyn ImageLayers,
    repo: &'a str,
    manifest: &'a Digest,
    len: usize,
}

impl LayerSource for Source<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn index(&self, i: usize) -> Result<Arc<LayerIndex>> {
        self.images.index(self.repo, self.manifest, i)
    }

    fn prefetch(&self, layers: &[usize]) {
        self.images.prefetch(self.repo, self.manifest, layers)
    }
}

/// Run `f` over the merged tree of `manifest` (its manifest, once, gives the layer count).
fn with_merge<T>(
    cx: &Layout,
    repo: &str,
    manifest: &Digest,
    f: impl FnOnce(&Merge<'_, Source<'_>>) -> Result<T>,
) -> Result<T> {
    let doc = cx.manifest(repo, manifest)?;
    let len = doc.manifest.layers.len();
    let most = cx.views().config().rootfs_layers;
    if len > most {
        return Err(Error::TooLarge(format!("{repo}@{manifest}: {len} layers, rootfs/ merges at most {most}")));
    }
    let source = Source { images: cx.images(), repo, manifest, len };
    f(&Merge::new(&source))
}

/// The node a merged path is, named `path` (for errors).
fn node_of(repo: &str, manifest: &Digest, path: &str, found: Found) -> Result<Node> {
    let (repo, manifest) = (repo.to_string(), manifest.clone());
    let Found::Inode(i) = found else {
        return Ok(Node::RootfsDir(RootfsDir { repo, manifest, path: path.to_string() }));
    };
    let layer = u16::try_from(i.layer).map_err(|_| Error::TooLarge(format!("layer {} of {path}", i.layer)))?;
    let entry = i.entry;
    Ok(match i.kind {
        EntryKind::File => Node::RootfsFile(RootfsFile { repo, manifest, layer, entry }),
        EntryKind::Symlink => Node::RootfsLink(RootfsLink { repo, manifest, layer, entry }),
        EntryKind::CharDevice => {
            Node::RootfsSpecial(RootfsSpecial { repo, manifest, layer, entry, kind: FileKind::CharDevice })
        }
        EntryKind::BlockDevice => {
            Node::RootfsSpecial(RootfsSpecial { repo, manifest, layer, entry, kind: FileKind::BlockDevice })
        }
        EntryKind::Fifo => Node::RootfsSpecial(RootfsSpecial { repo, manifest, layer, entry, kind: FileKind::Fifo }),
        EntryKind::Dir | EntryKind::Hardlink | EntryKind::Whiteout => {
            return Err(Error::malformed(
                format!("rootfs/{path} of {repo}@{manifest}"),
                format!("an inode of kind {:?}", i.kind),
            ));
        }
    })
}

/// A reader of `tar` from `at` (a whole decoded layer: a file or bytes).
fn reader_at(tar: &Content, at: u64) -> Result<Box<dyn std::io::Read + Send>> {
    struct At(Arc<std::fs::File>, u64);
    impl std::io::Read for At {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = std::os::unix::fs::FileExt::read_at(&*self.0, buf, self.1)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    match tar {
        Content::File(f) => Ok(Box::new(At(Arc::clone(f), at))),
        Content::Memory(b) => {
            let start = usize::try_from(at).ok().filter(|s| *s <= b.len()).unwrap_or(b.len());
            Ok(Box::new(std::io::Cursor::new(b[start..].to_vec())))
        }
        Content::Range { .. } | Content::Manifest(_) | Content::Parts(_) => {
            Err(Error::Io("a layer that is not a whole file".into()))
        }
    }
}

/// Seconds and nanoseconds since the epoch (either side of it) as a time.
fn time_of((secs, ns): (i64, u32)) -> SystemTime {
    let ns = Duration::from_nanos(u64::from(ns.min(999_999_999)));
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(ns)).unwrap_or(UNIX_EPOCH)
}

/// The link counts of hard-linked inodes, by image and inode: counting costs a look-up per
/// name of the inode, and `ls -l` of a directory of K names of one inode stats each of them, so
/// the count is worked out once and kept (at most [`ViewsConfig::link_counts`](crate::views::ViewsConfig::link_counts), least recently used
/// first out). Exact: an image's layers never change, and the count is of its merged tree.
/// Counts of 1 are not kept (the common case, and cheap but for an inode whose other names are
/// all gone, which then has only that one name to stat).
pub struct LinkCounts {
    counts: std::sync::Mutex<lru::LruCache<(Digest, usize, u32), u32>>,
    computed: std::sync::atomic::AtomicU64,
}

impl LinkCounts {
    /// Room for `kept` counts.
    pub fn new(kept: usize) -> LinkCounts {
        LinkCounts {
            counts: std::sync::Mutex::new(lru::LruCache::new(crate::capacity::nonzero(kept))),
            computed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts worked out (not found kept) so far.
    pub fn computed(&self) -> u64 {
        self.computed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Inode `i`'s count in `manifest`'s tree: kept, or counted by `count` and kept.
    fn get(&self, manifest: &Digest, i: Inode, count: impl FnOnce() -> Result<u32>) -> Result<u32> {
        let key = (manifest.clone(), i.layer, i.entry);
        if let Some(&n) = crate::sync::lock(&self.counts).get(&key) {
            return Ok(n);
        }
        self.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = count()?;
        if n > 1 {
            crate::sync::lock(&self.counts).put(key, n);
        }
        Ok(n)
    }
}

/// The metadata of inode `i`: its original entry's, and the names of it that survive.
fn inode_meta(cx: &Layout, repo: &str, manifest: &Digest, i: Inode) -> Result<Meta> {
    with_merge(cx, repo, manifest, |m| {
        let meta = m.inode(i)?;
        let nlink = cx.link_counts().get(manifest, i, || m.nlink(i))?;
        let rdev = match meta.kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => meta.rdev,
            _ => (0, 0),
        };
        Ok(Meta {
            mode: (meta.mode & 0o7777) as u16,
            uid: meta.uid,
            gid: meta.gid,
            mtime: time_of(meta.mtime),
            nlink,
            rdev,
            xattrs: meta.xattrs,
        })
    })
}

/// `rootfs/` itself: fixed, so that `stat` costs nothing below the manifest.
fn root_meta() -> Meta {
    Meta { mode: 0o755, uid: 0, gid: 0, mtime: UNIX_EPOCH, nlink: 1, rdev: (0, 0), xattrs: Vec::new() }
}

impl RootfsDir {
    fn join(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}/{name}", self.path) }
    }
}

impl Dir for RootfsDir {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn parent(&self) -> Node {
        let (repo, manifest) = (self.repo.clone(), self.manifest.clone());
        match self.path.rsplit_once('/') {
            _ if self.path.is_empty() => Node::ManifestDir(ManifestDir { repo, digest: manifest }),
            Some((up, _)) => Node::RootfsDir(RootfsDir { repo, manifest, path: up.to_string() }),
            None => Node::RootfsDir(RootfsDir { repo, manifest, path: String::new() }),
        }
    }

    fn check(&self, cx: &Layout) -> Result<()> {
        cx.manifest(&self.repo, &self.manifest).map(drop)
    }

    /// A merged path: its lookup and attributes read the manifest and the layers' indexes only.
    fn looks_up_at_hand(&self) -> bool {
        true
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(Error::NotFound(format!("rootfs/{}: {name:?}", self.path)));
        }
        cx.allowed(&self.repo, &self.manifest)?;
        let path = self.join(name);
        match with_merge(cx, &self.repo, &self.manifest, |m| m.lookup(&path))? {
            Some(found) => node_of(&self.repo, &self.manifest, &path, found),
            None => Err(Error::NotFound(format!("rootfs/{path} of {}@{}", self.repo, self.manifest))),
        }
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        cx.allowed(&self.repo, &self.manifest)?;
        let listed = with_merge(cx, &self.repo, &self.manifest, |m| m.list(&self.path))?;
        listed
            .into_iter()
            .map(|(name, found)| {
                let node = node_of(&self.repo, &self.manifest, &self.join(&name), found)?;
                Ok((name, node))
            })
            .collect()
    }

    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        if self.path.is_empty() {
            return Ok(Some(root_meta()));
        }
        let dir = with_merge(cx, &self.repo, &self.manifest, |m| m.dir(&self.path))?;
        let dir = dir.ok_or_else(|| Error::NotFound(format!("rootfs/{} is no longer a directory", self.path)))?;
        Ok(Some(Meta {
            mode: (dir.mode & 0o7777) as u16,
            uid: dir.uid,
            gid: dir.gid,
            mtime: time_of(dir.mtime),
            nlink: 1,
            rdev: (0, 0),
            xattrs: dir.xattrs,
        }))
    }
}

impl RootfsFile {
    fn inode(&self) -> Inode {
        Inode { layer: usize::from(self.layer), entry: self.entry, kind: EntryKind::File }
    }

    /// The headers at the entry's header offset in `tar`: a regular file of its size, its name,
    /// its data where the index says. Once per index and entry: found to agree, the index
    /// remembers it ([`LayerIndex::set_header_checked`]; `tar` is the verified decoded tar that
    /// index was made or checked for, which never changes).
    fn check_header(&self, index: &LayerIndex, tar: &Content) -> Result<()> {
        if index.header_checked(self.entry) {
            return Ok(());
        }
        let what = || format!("rootfs entry {} of layer {} of {}@{}", self.entry, self.layer, self.repo, self.manifest);
        let e = index.entry(self.entry).ok_or_else(|| Error::malformed(what(), "no such entry"))?;
        let at = e.header_offset();
        let raw = crate::views::tar::Parser::new(reader_at(tar, at)?)
            .next_entry()
            .map_err(|err| Error::malformed(what(), format!("no header at {at}: {err}")))?
            .ok_or_else(|| Error::malformed(what(), format!("no header at {at}")))?;
        let name = String::from_utf8_lossy(&raw.name).into_owned();
        let parts = crate::views::index::normalise(&name);
        // The whole path, not only its last part: an index pointing `etc/passwd` at
        // `opt/passwd`'s header must not pass. A hidden entry (a link's original whose name a
        // later entry of its layer took) has no live path: its own name is what is left. A file
        // placed through a symlink of its layer has its name as written kept beside its path.
        let same_name = match e.tar_name() {
            _ if e.is_hidden() => parts.last() == Some(&e.name()),
            Some(written) => parts.join("/") == written && parts.last() == Some(&e.name()),
            None => parts.join("/") == e.path(),
        };
        let agrees = raw.kind == crate::views::tar::RawKind::File
            && raw.size == e.size()
            && raw.header_offset == 0
            && at.checked_add(raw.data_offset) == Some(e.data_offset())
            && same_name;
        if !agrees {
            log::warn!("{}: the layer's index disagrees with the tar's header at {at} ({name:?}); refused", what());
            return Err(Error::malformed(what(), format!("the index disagrees with the tar's header at {at}")));
        }
        index.set_header_checked(self.entry);
        Ok(())
    }

    /// Its chunks, in its layer read by chunks: each verified against the TOC before a byte of
    /// it is served.
    fn open_lazily(&self, lazy: &Arc<LazyLayer>) -> Result<Content> {
        let what = || format!("rootfs entry {} of layer {} of {}@{}", self.entry, self.layer, self.repo, self.manifest);
        let e = lazy.index.entry(self.entry).ok_or_else(|| Error::malformed(what(), "no such entry"))?;
        lazy.open(e.data_offset())
    }

    /// Its bytes in its layer's decoded tar, checked to lie inside it.
    fn range(&self, index: &LayerIndex, tar: Content) -> Result<Content> {
        let what = || format!("rootfs entry {} of layer {} of {}@{}", self.entry, self.layer, self.repo, self.manifest);
        let e = index.entry(self.entry).ok_or_else(|| Error::malformed(what(), "no such entry"))?;
        let (start, len) = (e.data_offset(), e.size());
        let end = start.checked_add(len).ok_or_else(|| Error::malformed(what(), "data past 2^64"))?;
        if end > index.decoded_len() {
            return Err(Error::malformed(
                what(),
                format!("data ends at {end}, past the layer's {} bytes", index.decoded_len()),
            ));
        }
        match tar {
            Content::File(file) => Ok(Content::Range { file, start, len }),
            Content::Memory(bytes) => {
                let slice = bytes
                    .get(start as usize..end as usize)
                    .ok_or_else(|| Error::malformed(what(), "past its layer"))?;
                Ok(Content::Memory(Arc::new(slice.to_vec())))
            }
            Content::Range { .. } | Content::Manifest(_) | Content::Parts(_) => {
                Err(Error::malformed(what(), "a layer that is not a whole file"))
            }
        }
    }
}

impl File for RootfsFile {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn size(&self, cx: &Layout) -> Result<u64> {
        let index = cx.images().index(&self.repo, &self.manifest, usize::from(self.layer))?;
        index
            .entry(self.entry)
            .map(|e| e.size())
            .ok_or_else(|| Error::malformed(format!("layer {}", self.layer), "no such entry"))
    }

    /// Its own layer's decoded tar only (verified before this returns). The entry's headers
    /// there are parsed again and must agree with the index, which may have been read back from
    /// disk: so the bytes served are the entry's, whatever the index file says.
    fn open(&self, cx: &Layout) -> Result<Content> {
        cx.allowed(&self.repo, &self.manifest)?;
        let n = usize::from(self.layer);
        if let Some(lazy) = cx.images().lazy(&self.repo, &self.manifest, n)? {
            return self.open_lazily(&lazy);
        }
        let index = cx.images().index(&self.repo, &self.manifest, n)?;
        let tar = cx.images().decoded(&self.repo, &self.manifest, n)?;
        self.check_header(&index, &tar)?;
        self.range(&index, tar)
    }

    /// The same check as `open`, inline: a layer at hand is no reason to trust its index.
    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        // Inline only with a verdict at hand (else the open goes to a thread, which decides).
        if let Err(e) = cx.gate.allows_now(&self.repo, &self.manifest)? {
            return Some(Err(e));
        }
        if let Some(lazy) = cx.images().lazy_now(&self.repo, &self.manifest, usize::from(self.layer))? {
            return Some(self.open_lazily(&lazy));
        }
        let (index, file) = cx.images().ready(&self.repo, &self.manifest, usize::from(self.layer))?;
        Some(self.check_header(&index, &file).and_then(|()| self.range(&index, file)))
    }

    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        inode_meta(cx, &self.repo, &self.manifest, self.inode()).map(Some)
    }
}

impl RootfsLink {
    fn inode(&self) -> Inode {
        Inode { layer: usize::from(self.layer), entry: self.entry, kind: EntryKind::Symlink }
    }
}

impl Link for RootfsLink {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    /// The target's length; 0 if the layer cannot be had (then `meta`, asked with it, fails).
    fn size(&self, cx: &Layout) -> u64 {
        self.target(cx).map(|t| t.len() as u64).unwrap_or(0)
    }

    fn target(&self, cx: &Layout) -> Result<String> {
        let index = cx.images().index(&self.repo, &self.manifest, usize::from(self.layer))?;
        index.entry(self.entry).and_then(|e| e.symlink_target().map(str::to_string)).ok_or_else(|| {
            Error::malformed(format!("layer {} of {}@{}", self.layer, self.repo, self.manifest), "no such symlink")
        })
    }

    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        inode_meta(cx, &self.repo, &self.manifest, self.inode()).map(Some)
    }
}

impl Special for RootfsSpecial {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn kind(&self) -> FileKind {
        self.kind
    }

    fn meta(&self, cx: &Layout) -> Result<Option<Meta>> {
        let kind = match self.kind {
            FileKind::CharDevice => EntryKind::CharDevice,
            FileKind::BlockDevice => EntryKind::BlockDevice,
            _ => EntryKind::Fifo,
        };
        let inode = Inode { layer: usize::from(self.layer), entry: self.entry, kind };
        inode_meta(cx, &self.repo, &self.manifest, inode).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::fs::File as StdFile;
    use std::sync::Mutex;

    use super::*;
    use crate::fs::{Attr, Fs, FsConfig, Xattr};
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;
    use crate::views::index::Entry;

    /// What a file entry named `name` holds in these tests.
    fn content(name: &str, size: u64) -> Vec<u8> {
        name.bytes().cycle().take(size as usize).collect()
    }

    /// Layers given whole: each an index (offsets invented by `from_entries`) and a decoded
    /// "tar" holding every file's content at its data offset.
    struct Fixed {
        layers: Vec<(Arc<LayerIndex>, Arc<StdFile>)>,
        ready: bool,
        asked: Mutex<Vec<usize>>,
    }

    impl Fixed {
        fn new(layers: Vec<Vec<Entry>>) -> Fixed {
            let layers = layers
                .into_iter()
                .map(|entries| {
                    let tar = tar_of(&entries);
                    let limits = (crate::views::tar::TarLimits::default(), crate::views::index::IndexLimits::default());
                    let index = crate::views::index::build_all(&tar[..], limits.0, limits.1).expect("index");
                    let mut file = tempfile::tempfile().expect("tmp");
                    std::io::Write::write_all(&mut file, &tar).expect("write");
                    (Arc::new(index), Arc::new(file))
                })
                .collect();
            Fixed { layers, ready: false, asked: Mutex::new(Vec::new()) }
        }
    }

    /// A real tar of `entries` (each file holding [`content`]; xattrs and a negative mtime as PAX
    /// records), so that indexes and headers are the parser's.
    fn tar_of(entries: &[Entry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut pax: Vec<(String, Vec<u8>)> =
                e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
            if e.mtime < 0 {
                pax.push(("mtime".into(), e.mtime.to_string().into_bytes()));
            }
            if !pax.is_empty() {
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).expect("pax");
            }
            let kind = match e.kind {
                EntryKind::File | EntryKind::Whiteout => tar::EntryType::Regular,
                EntryKind::Dir => tar::EntryType::Directory,
                EntryKind::Symlink => tar::EntryType::Symlink,
                EntryKind::Hardlink => tar::EntryType::Link,
                EntryKind::CharDevice => tar::EntryType::Char,
                EntryKind::BlockDevice => tar::EntryType::Block,
                EntryKind::Fifo => tar::EntryType::Fifo,
            };
            let data = if kind == tar::EntryType::Regular { content(&e.name, e.size) } else { Vec::new() };
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_path(&e.name).expect("name");
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mtime(e.mtime.max(0) as u64);
            h.set_size(data.len() as u64);
            if !e.link_target.is_empty() {
                h.set_link_name(&e.link_target).expect("link");
            }
            if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
                h.set_device_major(e.dev_major).expect("major");
                h.set_device_minor(e.dev_minor).expect("minor");
            }
            h.set_cksum();
            b.append(&h, data.as_slice()).expect("append");
        }
        b.into_inner().expect("tar")
    }

    impl ImageLayers for Fixed {
        fn index(&self, _: &str, _: &Digest, n: usize) -> Result<Arc<LayerIndex>> {
            crate::sync::lock(&self.asked).push(n);
            self.layers.get(n).map(|l| Arc::clone(&l.0)).ok_or_else(|| Error::NotFound(format!("layer {n}")))
        }

        fn decoded(&self, _: &str, _: &Digest, n: usize) -> Result<Content> {
            let file = self.layers.get(n).map(|l| Arc::clone(&l.1));
            file.map(Content::File).ok_or_else(|| Error::NotFound(format!("layer {n}")))
        }

        fn ready(&self, _: &str, _: &Digest, n: usize) -> Option<(Arc<LayerIndex>, Content)> {
            let layer = self.ready.then(|| self.layers.get(n).cloned()).flatten()?;
            Some((layer.0, Content::File(layer.1)))
        }

        fn index_now(&self, _: &str, _: &Digest, n: usize) -> Option<Result<Arc<LayerIndex>>> {
            let layer = self.ready.then(|| self.layers.get(n).cloned()).flatten()?;
            Some(Ok(layer.0))
        }
    }

    /// A core over image `r:v1` of `layers` layers whose contents `images` gives.
    fn core(layers: usize, images: Arc<Fixed>) -> (Fs, tempfile::TempDir, String) {
        let client = Faulty::new(Fake::default());
        let blobs: Vec<Digest> = (0..layers).map(|i| client.add_blob(format!("layer {i}").as_bytes())).collect();
        let cfg = client.add_blob(crate::testkit::fake::IMAGE_CONFIG);
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": crate::testkit::fake::IMAGE_CONFIG.len()},
            "layers": blobs.iter().map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": 7})).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&m).expect("json");
        let d =
            client.put_manifest("r", Some("v1"), crate::media::OCI_MANIFEST, &body, crate::digest::Algorithm::Sha256);
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Store::new(Arc::new(client), &config).expect("store");
        (Fs::with_images(Arc::new(store), FsConfig::default(), images), cache, d.to_string())
    }

    fn walk(fs: &Fs, path: &str) -> Result<Attr> {
        let mut at = fs.getattr(fs.root_ino())?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = fs.lookup(at.ino, OsStr::new(part))?;
        }
        Ok(at)
    }

    fn cat(fs: &Fs, ino: u64) -> Vec<u8> {
        let fh = fs.open_file(ino).expect("open").fh;
        let mut out = Vec::new();
        loop {
            let chunk = fs.read(fh, out.len() as u64, 7).expect("read");
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        fs.release(fh);
        out
    }

    fn two_layers() -> Vec<Vec<Entry>> {
        vec![
            vec![
                Entry::dir("etc").with_mode(0o750).with_owner(3, 4).with_mtime(100),
                Entry::file("etc/passwd", 20),
                Entry::file("bin/ping", 30)
                    .with_mode(0o4755)
                    .with_xattr("security.capability", b"\x01\x00\x00\x02")
                    .with_xattr("user.k", b"v"),
                Entry::special("dev/null", EntryKind::CharDevice, 1, 3).with_mode(0o666),
                Entry::special("dev/sda1", EntryKind::BlockDevice, 8, 1).with_mode(0o660).with_owner(0, 6),
                Entry::special("run/fifo", EntryKind::Fifo, 0, 0).with_mode(0o600),
                Entry::symlink("bin/sh", "dash"),
                Entry::file("bin/dash", 10).with_mode(0o755),
                Entry::hardlink("bin/rbash", "bin/dash"),
            ],
            vec![
                Entry::file("etc/motd", 5).with_mode(0o600).with_owner(7, 7).with_mtime(-5),
                Entry::whiteout("etc/passwd"),
                Entry::hardlink("usr/bin/dash", "bin/dash"),
            ],
        ]
    }

    /// Every kind a layer can hold shows as the layers say, through the core: modes with
    /// setuid, owners, mtimes, devices, FIFOs, symlinks, hard links (one inode, nlink), xattrs,
    /// whiteouts, and file bytes read from the layer's decoded tar.
    #[test]
    fn rootfs_shows_what_the_layers_say_through_the_core() {
        let (fs, _cache, d) = core(2, Arc::new(Fixed::new(two_layers())));
        let root = format!("r/manifests/{d}/rootfs");
        let at = |p: &str| walk(&fs, &format!("{root}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"));
        let r = at("");
        assert_eq!((r.kind, r.mode, r.uid, r.gid, r.nlink), (FileKind::Directory, 0o755, Some(0), Some(0), 1));
        let etc = at("etc");
        assert_eq!(
            (etc.mode, etc.uid, etc.gid, etc.mtime),
            (0o750, Some(3), Some(4), UNIX_EPOCH + Duration::from_secs(100))
        );
        let motd = at("etc/motd");
        assert_eq!((motd.kind, motd.mode, motd.uid, motd.size, motd.nlink), (FileKind::File, 0o600, Some(7), 5, 1));
        assert_eq!(motd.mtime, UNIX_EPOCH - Duration::from_secs(5), "mtimes before 1970 too");
        assert_eq!(cat(&fs, motd.ino), content("etc/motd", 5));
        assert_eq!(walk(&fs, &format!("{root}/etc/passwd")).expect_err("whited out").errno(), libc::ENOENT);
        let listed: Vec<String> = fs.readdir(etc.ino).expect("ls etc").into_iter().map(|e| e.name).collect();
        assert_eq!(listed, [".", "..", "motd"]);

        let ping = at("bin/ping");
        assert_eq!((ping.mode, ping.size), (0o4755, 30));
        assert_eq!(cat(&fs, ping.ino), content("bin/ping", 30));
        let cap = fs.getxattr(ping.ino, OsStr::new("security.capability"), 64).expect("capability");
        assert_eq!(cap, Xattr::Data(b"\x01\x00\x00\x02".to_vec()));
        assert_eq!(fs.listxattr(ping.ino, 64).expect("list"), Xattr::Data(b"security.capability\0user.k\0".to_vec()));
        assert_eq!(fs.getxattr(motd.ino, OsStr::new("user.k"), 0).expect_err("none").errno(), libc::ENODATA);

        let null = at("dev/null");
        assert_eq!((null.kind, null.mode, u64::from(null.rdev)), (FileKind::CharDevice, 0o666, libc::makedev(1, 3)));
        let sda = at("dev/sda1");
        assert_eq!((sda.kind, sda.gid, u64::from(sda.rdev)), (FileKind::BlockDevice, Some(6), libc::makedev(8, 1)));
        assert_eq!(at("run/fifo").kind, FileKind::Fifo);
        assert_eq!(fs.open_file(null.ino).map(drop).expect_err("a device").errno(), libc::EINVAL);
        let kinds: Vec<(String, FileKind)> =
            fs.readdir(at("dev").ino).expect("ls dev").into_iter().skip(2).map(|e| (e.name, e.kind)).collect();
        assert_eq!(kinds, [("null".into(), FileKind::CharDevice), ("sda1".into(), FileKind::BlockDevice)]);

        let sh = at("bin/sh");
        assert_eq!((sh.kind, sh.size), (FileKind::Symlink, 4));
        assert_eq!(fs.readlink(sh.ino).expect("readlink"), "dash");

        let names = ["bin/dash", "bin/rbash", "usr/bin/dash"].map(at);
        assert!(names.iter().all(|a| a.ino == names[0].ino), "one inode for every name: {names:?}");
        assert!(names.iter().all(|a| a.nlink == 3 && a.mode == 0o755 && a.size == 10), "{names:?}");
        assert_eq!(cat(&fs, names[2].ino), content("bin/dash", 10));
        let listed = fs.readdir(at("bin").ino).expect("ls bin");
        let rbash = listed.iter().find(|e| e.name == "rbash").expect("rbash listed");
        assert_eq!(rbash.ino, names[0].ino, "a listing gives the same inode");
    }

    /// An open checks the entry's headers in the decoded tar against its index (an index read
    /// back from disk is trusted on its checksum only): one that names other offsets, another
    /// size or another name is refused, not served from the wrong bytes.
    #[test]
    fn an_index_that_disagrees_with_the_tar_s_header_is_refused_at_open() {
        let honest = two_layers();
        let (fs, _cache, d) = core(2, Arc::new(Fixed::new(honest.clone())));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        assert_eq!(cat(&fs, motd.ino), content("etc/motd", 5), "the honest index opens");
        // The top layer's index from another tar (a file of another size and name first):
        // same entry ids, other offsets.
        let mut lying = Fixed::new(honest.clone());
        let mut shifted = honest[1].clone();
        shifted.insert(0, Entry::file("aaa", 700));
        let other = Fixed::new(vec![honest[0].clone(), shifted]);
        lying.layers[1].1 = Arc::clone(&other.layers[1].1);
        let (fs, _cache, d) = core(2, Arc::new(lying));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        let e = fs.open_file(motd.ino).map(drop).expect_err("headers disagree");
        assert_eq!(e.errno(), libc::EIO, "{e}");
    }

    /// A file placed through a symlink of its layer is checked against its name as written
    /// (`ln/passwd` for `etc/passwd`): it opens, and a tar whose header there names another
    /// file of the same size and place is refused.
    #[test]
    fn a_file_placed_through_a_symlink_is_checked_against_its_name_as_written() {
        let layer = |name: &str| vec![vec![Entry::dir("etc"), Entry::symlink("ln", "/etc"), Entry::file(name, 20)]];
        let honest = Fixed::new(layer("ln/passwd"));
        let (fs, _cache, d) = core(1, Arc::new(Fixed::new(layer("ln/passwd"))));
        let passwd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/passwd")).expect("passwd");
        assert_eq!(cat(&fs, passwd.ino), content("ln/passwd", 20));
        let other = Fixed::new(layer("ln/shadow"));
        let lying = Fixed {
            layers: vec![(Arc::clone(&honest.layers[0].0), Arc::clone(&other.layers[0].1))],
            ready: false,
            asked: Mutex::new(Vec::new()),
        };
        let (fs, _cache, d) = core(1, Arc::new(lying));
        let passwd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/passwd")).expect("passwd");
        let e = fs.open_file(passwd.ino).map(drop).expect_err("another name in the header");
        assert_eq!(e.errno(), libc::EIO, "{e}");
    }

    /// An entry's headers are parsed once per index: found to agree, later opens through the
    /// same index read no header (a warm `xargs cat` does no `pread` and parse per file). The
    /// mark goes with the index: another copy of it (an index read back from disk again after
    /// the LRU dropped it) checks for itself, and refuses headers that do not agree.
    #[test]
    fn an_entry_s_headers_are_parsed_once_per_index() {
        use std::os::unix::fs::FileExt;
        let fixed = Arc::new(Fixed::new(two_layers()));
        let (fs, _cache, d) = core(2, Arc::clone(&fixed));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        assert_eq!(cat(&fs, motd.ino), content("etc/motd", 5));
        let (index, tar) = fixed.layers[1].clone();
        let crate::views::index::Says::Present(e) = index.says("etc/motd") else { panic!("motd is in the top layer") };
        assert!(index.header_checked(e.id()), "the check was not remembered");
        // Its header spoiled in the tar: the same index does not parse it again.
        tar.write_at(&[0u8; 512], e.header_offset()).expect("spoil the header");
        assert_eq!(cat(&fs, motd.ino), content("etc/motd", 5), "the header was parsed again");
        // Another copy of the index checks for itself.
        let copy = Fixed {
            layers: vec![fixed.layers[0].clone(), (Arc::new((*index).clone()), tar)],
            ready: false,
            asked: Mutex::new(Vec::new()),
        };
        let (fs, _cache, d) = core(2, Arc::new(copy));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        let err = fs.open_file(motd.ino).map(drop).expect_err("a spoiled header, not checked by this index");
        assert_eq!(err.errno(), libc::EIO, "{err}");
    }

    /// A rootfs file whose layer is at hand opens inline (no thread), and only then.
    #[test]
    fn a_rootfs_file_of_a_ready_layer_opens_now() {
        let mut fixed = Fixed::new(two_layers());
        let (fs, _cache, d) = core(2, Arc::new(Fixed::new(two_layers())));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        assert!(fs.open_now(motd.ino).is_none(), "a layer not at hand may wait");
        fixed.ready = true;
        let (fs, _cache, d) = core(2, Arc::new(fixed));
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        let opened = fs.open_now(motd.ino).expect("ready").expect("opened");
        assert!(opened.file.is_none(), "a range is never passed through");
        assert_eq!(fs.read(opened.fh, 0, 100).expect("read"), content("etc/motd", 5));
    }

    /// A lookup in `rootfs/` is answered now (inline) when the layers' indexes are in memory,
    /// with what `lookup` answers: the same inode and attributes for a file, a directory and a
    /// link, and not found for a name that is not there. Not at hand, it is not answered now.
    #[test]
    fn a_rootfs_lookup_of_layers_at_hand_is_answered_now() {
        let (fs, _cache, d) = core(2, Arc::new(Fixed::new(two_layers())));
        let etc = walk(&fs, &format!("r/manifests/{d}/rootfs/etc")).expect("etc");
        assert!(fs.lookup_now(etc.ino, OsStr::new("motd")).is_none(), "layers not at hand may wait");
        let root = walk(&fs, &format!("r/manifests/{d}")).expect("manifest dir");
        assert!(fs.lookup_now(root.ino, OsStr::new("rootfs")).is_none(), "only rootfs/ looks up now");

        let mut fixed = Fixed::new(two_layers());
        fixed.ready = true;
        let fixed = Arc::new(fixed);
        let (fs, _cache, d) = core(2, Arc::clone(&fixed));
        let rootfs = walk(&fs, &format!("r/manifests/{d}/rootfs")).expect("rootfs");
        let etc = fs.lookup_now(rootfs.ino, OsStr::new("etc")).expect("at hand").expect("etc");
        assert_eq!(etc.kind, FileKind::Directory);
        let bin = fs.lookup_now(rootfs.ino, OsStr::new("bin")).expect("at hand").expect("bin");
        let dev = fs.lookup_now(rootfs.ino, OsStr::new("dev")).expect("at hand").expect("dev");
        let seen = |a: Attr| (a.ino, a.kind, a.size, a.mode, a.uid, a.gid, a.nlink, a.rdev, a.mtime);
        for (dir, name) in [(&etc, "motd"), (&bin, "sh"), (&bin, "dash"), (&bin, "rbash"), (&dev, "null")] {
            let now = fs.lookup_now(dir.ino, OsStr::new(name)).map(|r| r.map(seen));
            let waited = fs.lookup(dir.ino, OsStr::new(name)).map(seen);
            match (now, waited) {
                (Some(Ok(now)), Ok(waited)) => assert_eq!(now, waited, "{name}"),
                (now, waited) => panic!("{name}: now {now:?}, by lookup {waited:?}"),
            }
        }
        for name in ["passwd", "nothing-here"] {
            let missing = fs.lookup_now(etc.ino, OsStr::new(name)).expect("answered now");
            assert!(matches!(missing, Err(Error::NotFound(_))), "{name}: {missing:?}");
        }
        let motd = fs.lookup_now(etc.ino, OsStr::new("motd")).expect("now").expect("motd");
        assert_eq!(cat(&fs, motd.ino), content("etc/motd", 5));
    }

    /// `stat rootfs` and `ls` of the manifest directory read no layer; a file of the top layer
    /// reads the top layer's index only, when that layer names its parents explicitly (as
    /// image builders write them: a parent only implied takes its attributes from below).
    #[test]
    fn stat_of_rootfs_reads_no_layer_and_a_top_file_only_the_top_one() {
        let mut layers = two_layers();
        layers[1].insert(0, Entry::dir("etc"));
        let fixed = Arc::new(Fixed::new(layers));
        let (fs, _cache, d) = core(2, Arc::clone(&fixed));
        let dir = walk(&fs, &format!("r/manifests/{d}")).expect("manifest dir");
        let names: Vec<String> = fs.readdir(dir.ino).expect("ls").into_iter().map(|e| e.name).collect();
        assert_eq!(names, [".", "..", "manifest.json", "config.json", "layers", "rootfs", "referrers", "signatures"]);
        walk(&fs, &format!("r/manifests/{d}/rootfs")).expect("stat rootfs");
        assert!(crate::sync::lock(&fixed.asked).is_empty(), "no layer for `stat rootfs`");
        walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        assert!(crate::sync::lock(&fixed.asked).iter().all(|&n| n == 1), "the top layer only");
    }

    /// `ls -l` of a directory of K names of one inode: its link count is worked out once (each
    /// name's stat after the first is a look-up of the count), and every name shows it exactly.
    #[test]
    fn ls_l_of_many_hard_links_counts_the_links_once() {
        const K: usize = 300;
        let mut layer = vec![Entry::file("bin/busybox", 4)];
        layer.extend((0..K).map(|i| Entry::hardlink(&format!("bin/l{i:04}"), "bin/busybox")));
        let mut upper = vec![Entry::file("etc/motd", 3)];
        upper.extend((0..5).map(|i| Entry::hardlink(&format!("usr/bin/u{i}"), "bin/busybox")));
        let (fs, _cache, d) = core(2, Arc::new(Fixed::new(vec![layer, upper])));
        let bin = walk(&fs, &format!("r/manifests/{d}/rootfs/bin")).expect("bin");
        let names: Vec<String> = fs.readdir(bin.ino).expect("ls bin").into_iter().skip(2).map(|e| e.name).collect();
        assert_eq!(names.len(), K + 1);
        for name in &names {
            let a = fs.lookup(bin.ino, OsStr::new(name)).expect(name);
            assert_eq!(a.nlink as usize, K + 1 + 5, "{name}");
        }
        assert_eq!(fs.layout().link_counts().computed(), 1, "one count for the {} names of one inode", K + 1);
        let motd = walk(&fs, &format!("r/manifests/{d}/rootfs/etc/motd")).expect("motd");
        assert_eq!(motd.nlink, 1);
    }
    /// The sizes `rootfs/` keeps are the mount's (`ViewsConfig`), not constants: the layers
    /// remembered as indexed and the link counts kept.
    #[test]
    fn what_rootfs_keeps_is_sized_by_the_mount_s_views_config() {
        let cache = tempfile::tempdir().expect("cache");
        let config = crate::store::StoreConfig { cache_dir: cache.path().to_path_buf(), ..Default::default() };
        let store = Arc::new(Store::new(Arc::new(Fake::default()), &config).expect("store"));
        let sizes = crate::views::ViewsConfig { indexed_layers: 3, link_counts: 5, ..Default::default() };
        let views = Arc::new(Views::with_config(Arc::clone(&store), sizes));
        let inner = LayersInner::new(Arc::clone(&store), views);
        assert_eq!(crate::sync::lock(&inner.indexed).cap().get(), 3);
        let layout = crate::layout::Layout::new(store, &crate::readahead::ReadaheadConfig::default(), sizes);
        assert_eq!(crate::sync::lock(&layout.link_counts().counts).cap().get(), 5);
        let defaults = crate::views::ViewsConfig::default();
        assert_eq!((defaults.indexed_layers, defaults.link_counts), (4096, 16_384), "today's defaults");
    }
}
