//! [`ViewsConfig`]: the bounds of decoded layers, their indexes and `rootfs/` that a mount may
//! set (`--index-memory`, `--layer-entries`, `--layer-index-size`, `--rootfs-layers`); their
//! defaults are in [`crate::limits`]. The hostile-input bounds of the tar format itself (PAX and
//! GNU header sizes, path and xattr lengths) stay fixed there.

use crate::limits;
use crate::views::index::IndexLimits;

/// What a mount lets decoded layers, indexes and `rootfs/` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewsConfig {
    /// Bytes of layer indexes kept in memory (least recently used out; the rest are read back
    /// from `index/` when needed). `--index-memory`.
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
}

impl Default for ViewsConfig {
    fn default() -> Self {
        ViewsConfig {
            index_memory: limits::INDEX_MEMORY,
            layer_entries: limits::MAX_LAYER_ENTRIES,
            layer_index_size: limits::MAX_INDEX_BYTES,
            rootfs_layers: limits::MAX_ROOTFS_LAYERS,
        }
    }
}

impl ViewsConfig {
    /// The index builder's bounds: these, and the fixed ones of [`IndexLimits::default`].
    pub fn index_limits(&self) -> IndexLimits {
        IndexLimits { max_entries: self.layer_entries, max_bytes: self.layer_index_size, ..IndexLimits::default() }
    }
}
