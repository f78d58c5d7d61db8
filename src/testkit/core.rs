//! The core without FUSE or HTTP, as tests build it: [`Core`] (`Fs` and `Store` over the
//! in-memory registry behind the fault wrapper, on a cache directory of its own) made by
//! [`Builder`], and the bytes tests put in that registry: [`noise`], [`tar_of`], [`gzip`],
//! [`zstd`], and OCI images of given layers ([`put_image`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::digest::{Algorithm, Digest};
use crate::error::Result;
use crate::fs::{Attr, Fs, FsConfig};
use crate::media;
use crate::platform::Platform;
use crate::store::{Store, StoreConfig};
use crate::testkit::fake::Fake;
use crate::testkit::faulty::Faulty;
use crate::testkit::paths::Paths;

/// The media types of the three layer compressions.
pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

/// `Fs` and `Store` over `fake`, on the cache directory `cache`, driven by path through
/// [`Paths`] as `fs` is.
pub struct Core {
    pub fake: Arc<Faulty<Fake>>,
    pub store: Arc<Store>,
    pub fs: Arc<Fs>,
    pub cache: Cache,
}

/// A store over `fake` without an `Fs` above it, for tests of the layers below (views, store).
pub struct Bare {
    pub fake: Arc<Faulty<Fake>>,
    pub store: Arc<Store>,
    pub cache: Cache,
}

/// The cache directory of a core: a temporary one it owns (removed with it), or one the test
/// chose (to start another core on it, as a restart does).
pub enum Cache {
    Owned(tempfile::TempDir),
    Given(PathBuf),
}

impl From<tempfile::TempDir> for Cache {
    fn from(dir: tempfile::TempDir) -> Cache {
        Cache::Owned(dir)
    }
}

impl Cache {
    pub fn path(&self) -> &Path {
        match self {
            Cache::Owned(dir) => dir.path(),
            Cache::Given(path) => path,
        }
    }
}

/// How a [`Core`] is made: 1 GiB of cache on a fresh temporary directory, names trusted for
/// 60 s, every other setting the default.
pub struct Builder {
    fake: Arc<Faulty<Fake>>,
    cache: Option<Cache>,
    cache_size: u64,
    tag_ttl: Option<Duration>,
    fs: FsConfig,
    /// A signature policy to enforce (`policy::Gate`).
    policy: Option<crate::policy::Setup>,
}

impl Core {
    /// A core over `fake` with the defaults of [`Builder`].
    pub fn new(fake: Faulty<Fake>) -> Core {
        Core::builder(fake).build()
    }

    pub fn builder(fake: Faulty<Fake>) -> Builder {
        Builder::over(Arc::new(fake))
    }

    /// Stop the core, as its process ending would (the cache directory's lock is let go); its
    /// cache directory, kept.
    pub fn stop(self) -> Cache {
        let Core { fake: _, store, fs, cache } = self;
        drop(fs);
        drop(store);
        cache
    }
}

impl Paths for Core {
    fn walk(&self, path: &str) -> Result<Attr> {
        self.fs.walk(path)
    }

    fn cat(&self, path: &str) -> Result<Vec<u8>> {
        self.fs.cat(path)
    }

    fn ls(&self, path: &str) -> Result<Vec<String>> {
        self.fs.ls(path)
    }
}

impl Builder {
    /// A builder over a registry the test keeps a handle of (to build a second core on it).
    pub fn over(fake: Arc<Faulty<Fake>>) -> Builder {
        Builder { fake, cache: None, cache_size: 1 << 30, tag_ttl: None, fs: FsConfig::default(), policy: None }
    }

    /// At most `bytes` of blobs on disk.
    pub fn cache_size(mut self, bytes: u64) -> Builder {
        self.cache_size = bytes;
        self
    }

    /// On the cache directory `dir`, which the test owns.
    pub fn cache_at(mut self, dir: &Path) -> Builder {
        self.cache = Some(Cache::Given(dir.to_path_buf()));
        self
    }

    /// On `cache`: a temporary directory (owned by the core from now on), or the cache of a
    /// core stopped before ([`Core::stop`]), to start again on what it left.
    pub fn cache(mut self, cache: impl Into<Cache>) -> Builder {
        self.cache = Some(cache.into());
        self
    }

    /// Names (tags, listings) trusted for `ttl`, by the store and by the kernel (`Fs`).
    pub fn tag_ttl(mut self, ttl: Duration) -> Builder {
        self.tag_ttl = Some(ttl);
        self
    }

    /// `current` links chosen for `platform` (as `--platform` says it).
    pub fn platform(mut self, platform: &str) -> Builder {
        self.fs.platform = Platform::parse(platform).expect("test platform");
        self
    }

    /// The `Fs` settings (the tag TTL, if set, still applies).
    pub fn fs_config(mut self, config: FsConfig) -> Builder {
        self.fs = config;
        self
    }

    /// The store alone.
    pub fn bare(self) -> Bare {
        let (bare, _) = self.parts();
        bare
    }

    /// Enforce `setup`'s signature policy.
    pub fn policy(mut self, setup: crate::policy::Setup) -> Builder {
        self.policy = Some(setup);
        self
    }

    pub fn build(mut self) -> Core {
        let policy = self.policy.take();
        let (Bare { fake, store, cache }, fs) = self.parts();
        let fs = match policy {
            None => Fs::new(Arc::clone(&store), fs),
            Some(setup) => {
                let gate = crate::policy::Gate::new(Arc::clone(&store), setup);
                Fs::gated(Arc::clone(&store), fs, Arc::new(gate))
            }
        };
        Core { fake, fs: Arc::new(fs), store, cache }
    }

    fn parts(self) -> (Bare, FsConfig) {
        let cache = self.cache.unwrap_or_else(|| Cache::Owned(tempfile::tempdir().expect("cache")));
        let mut config = StoreConfig {
            cache_dir: cache.path().to_path_buf(),
            cache_size: self.cache_size,
            ..StoreConfig::default()
        };
        let mut fs = self.fs;
        if let Some(ttl) = self.tag_ttl {
            config.tag_ttl = ttl;
            fs.tag_ttl = ttl;
        }
        let store = Arc::new(Store::new(self.fake.clone(), &config).expect("store"));
        (Bare { fake: self.fake, store, cache }, fs)
    }
}

/// `n` bytes of a fixed pattern (one per `seed`), which compress poorly.
pub fn noise(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

/// A tar of regular files `(name, data)` in order (ustar, mode 0644, ended by the EOA).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).expect("name");
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zstd(raw: &[u8]) -> Vec<u8> {
    zstd::encode_all(raw, 3).expect("zstd")
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

/// Put an OCI image as `repo:tag` whose layers are the blobs `(digest, size, media type)`, bottom
/// first, already in `fake`, and whose config says `diff_ids`; (manifest digest, config digest).
pub fn put_image(
    fake: &Fake,
    repo: &str,
    tag: &str,
    layers: &[(Digest, usize, &str)],
    diff_ids: &[String],
) -> (Digest, Digest) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let cfg = fake.add_blob(&config);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, size, mt)| serde_json::json!({"mediaType": mt, "digest": d.to_string(), "size": size}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
        "layers": descs,
    });
    let body = serde_json::to_vec(&m).expect("manifest");
    (fake.put_manifest(repo, Some(tag), media::OCI_MANIFEST, &body, Algorithm::Sha256), cfg)
}

/// A gzip layer of the tar `raw` added to `fake`: (blob digest, blob size, diff_id).
pub fn add_gzip_layer(fake: &Fake, raw: &[u8]) -> (Digest, usize, Digest) {
    let blob = gzip(raw);
    (fake.add_blob(&blob), blob.len(), sha256(raw))
}

/// Put an OCI image as `repo:tag` whose layers are the gzip blobs `(digest, size)`, bottom first,
/// and whose config says `diff_ids`; its digest.
pub fn put_gzip_image(fake: &Fake, repo: &str, tag: &str, layers: &[(Digest, usize)], diff_ids: &[Digest]) -> Digest {
    let layers: Vec<(Digest, usize, &str)> = layers.iter().map(|(d, size)| (d.clone(), *size, GZIP)).collect();
    let ids: Vec<String> = diff_ids.iter().map(Digest::to_string).collect();
    put_image(fake, repo, tag, &layers, &ids).0
}

/// An `Fs` over `fake` on the cache directory `cache`, which the test owns (to start another on
/// it, as a restart does, once this one is dropped).
pub fn fs_on(fake: &Arc<Faulty<Fake>>, cache: &Path) -> Arc<Fs> {
    Builder::over(Arc::clone(fake)).cache_at(cache).build().fs
}

/// Everything the open handle `fh` reads, 4 KiB at a time; then the handle is released.
pub fn read_all(fs: &Fs, fh: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(fh, out.len() as u64, 4096)?;
        if chunk.is_empty() {
            break;
        }
        out.extend(chunk);
    }
    fs.release(fh);
    Ok(out)
}

/// `cat` the way the kernel reaches regfs: FUSE's `open` tries `open_now` first (a layer at
/// hand), and only then `open_file`.
pub fn cat_as_fuse(fs: &Fs, ino: u64) -> Result<Vec<u8>> {
    let fh = match fs.open_now(ino) {
        Some(opened) => opened?.fh,
        None => fs.open_file(ino)?.fh,
    };
    read_all(fs, fh)
}

/// Every file below directory `ino` in the order a walk meets them, each directory listed with
/// attributes (READDIRPLUS, as `find` lists it through the kernel), with its path under `path`.
pub fn walk_listed(fs: &Fs, ino: u64, path: &str, out: &mut Vec<(String, u64)>) {
    let fh = fs.opendir(ino).expect("opendir");
    let listing = fs.listing(fh).expect("listing");
    let at_hand = fs.lists_at_hand(ino);
    for i in 0..listing.len() {
        let e = &listing[i];
        let (a, _) = fs.entry_plus(at_hand, &listing, i).expect("an entry");
        if e.name == "." || e.name == ".." {
            continue;
        }
        let child = format!("{path}/{}", e.name);
        match a.kind {
            crate::layout::FileKind::Directory => walk_listed(fs, a.ino, &child, out),
            crate::layout::FileKind::File => out.push((child, a.ino)),
            _ => {}
        }
    }
    fs.releasedir(fh);
}
