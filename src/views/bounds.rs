//! [`ViewsConfig`]: what decoded layers, their indexes and `rootfs/` may hold, per mount. Two
//! kinds of number: bounds against hostile layers, whose defaults are in [`crate::limits`] and
//! which a mount may lower or raise (`--layer-entries`, `--layer-index-size`, `--rootfs-layers`);
//! and sizes chosen for speed (what is kept, how many at once), whose defaults are here
//! (`--index-memory`; the others have no option). The hostile-input bounds of the tar format
//! itself (PAX and GNU header sizes, path and xattr lengths) stay fixed in `crate::limits`.

use crate::limits;
use crate::views::index::IndexLimits;

/// What a mount lets decoded layers, indexes and `rootfs/` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewsConfig {
    /// Bytes of layer indexes kept in memory, by `LayerIndex::weight` (least recently used out;
    /// the rest are read back from `index/` when needed): 64 MiB; a Debian base of 8,000 entries
    /// takes about 1 MB. `--index-memory`.
    pub index_memory: usize,
    /// Entries one layer's index may hold (implied directories included); past it the layer has
    /// no index (`EFBIG`), its `layers/<n>.tar` is still served. `--layer-entries`.
    pub layer_entries: usize,
    /// Bytes one layer's index may take in memory (records and arenas); past it, as above.
    /// `--layer-index-size`.
    pub layer_index_size: usize,
    /// Layers `rootfs/` merges at most; an image with more shows `rootfs/` as `EFBIG`.
    /// `--rootfs-layers`.
    pub rootfs_layers: usize,
    /// Bytes decoded (or read again), hashed and written at a time: 256 KiB.
    pub chunk: usize,
    /// Bytes of configs' diff_id lists kept (a list weighs its digests' bytes): 8 MiB.
    pub config_cache_bytes: usize,
    /// Decoded layer tars kept open after their last file is closed (the most recently handed
    /// out by `Views::ready`): a warm read of a rootfs, one file after another, then opens no
    /// file per file. Each pins its cache file's disk space while held, should the cache evict
    /// it meanwhile: 8.
    pub held_decoded_files: usize,
    /// Failed decodes remembered for the run, so the next read is `EIO` at once instead of
    /// decoding the whole blob again: 4096.
    pub failed_decodes: usize,
    /// Schema1 layers whose decoded digest this run knows (one forgotten is decoded again): 4096.
    pub schema1_derived: usize,
    /// Decodes whose start and end `Views::decode_intervals` keeps: 64.
    pub decodes_kept: usize,
    /// Layers `rootfs/` remembers as indexed this run, by blob digest (a listing starts no
    /// thread for them): 4096.
    pub indexed_layers: usize,
    /// Link counts of hard-linked inodes of `rootfs/` kept (by image and inode, about 100 bytes
    /// each): `ls -l` of K names of one inode counts its links once, not K times: 16384.
    pub link_counts: usize,
    /// Downloads of layers a `rootfs/` listing gets ready at once, for the whole mount: 4.
    pub prefetch_downloads: usize,
    /// Decodes (and indexing) of layers a `rootfs/` listing gets ready at once, for the whole
    /// mount: one per CPU (`available_parallelism`, 2 when unknown).
    pub prefetch_decodes: usize,
    /// Layers read by chunks (`views::lazy`): on or off, and what they may hold.
    pub lazy: crate::views::lazy::LazyConfig,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            index_memory: 64 << 20,
            layer_entries: limits::MAX_LAYER_ENTRIES,
            layer_index_size: limits::MAX_INDEX_BYTES,
            rootfs_layers: limits::MAX_ROOTFS_LAYERS,
            chunk: 256 << 10,
            config_cache_bytes: 8 << 20,
            held_decoded_files: 8,
            failed_decodes: 4096,
            schema1_derived: 4096,
            decodes_kept: 64,
            indexed_layers: 4096,
            link_counts: 16_384,
            prefetch_downloads: 4,
            prefetch_decodes: std::thread::available_parallelism().map_or(2, usize::from),
            lazy: crate::views::lazy::LazyConfig::default(),
        }
    }
}

impl ViewsConfig {
    /// The index builder's bounds: these, and the fixed ones of [`IndexLimits::default`].
    pub fn index_limits(&self) -> IndexLimits {
        IndexLimits { max_entries: self.layer_entries, max_bytes: self.layer_index_size, ..IndexLimits::default() }
    }
}
