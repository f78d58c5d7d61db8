//! Views derived from an image's verified blobs: layers decoded to plain tar (`layers/<n>.tar`),
//! the per-layer index and the flattened `rootfs/`. The modules import one way: `kind`, `tar`,
//! `config` and `decode` import none of the others; `rootpath` imports `kind`; `index` imports
//! those two and `tar`; `bounds` and `merge` import `index`; `layers` imports `bounds`, `config`,
//! `decode`, `index` and `tar`; `prefetch` imports none of them.
//!
//! - `bounds`: [`ViewsConfig`], what a mount lets views hold: hostile-input bounds (defaults in
//!   `crate::limits`) and sizes chosen for speed (defaults in `bounds` itself).
//! - `config`: the image config's `rootfs.diff_ids`, strict and bounded.
//! - `decode`: compression sniffed by magic, the decoders, and the [`decode::Tee`] that hashes,
//!   writes and charges every decoded byte.
//! - `layers`: [`Views`], which turns a manifest's layer into a verified decoded file in the cache.
//! - `kind`: what a layer's entry is, and the whiteout and AUFS names.
//! - `tar`: a bounded streaming parser of a decoded layer.
//! - `index`: the per-layer index built from the parsed tar, its file, and the query API the
//!   merge reads.
//! - `rootpath`: where an entry lands when its parent path crosses a symlink of its layer.
//! - `merge`: the lazy top-down merge of a stack of indexes, which `rootfs/` shows.
//! - `lazy`: layers read by chunks (eStargz, zstd:chunked): their TOCs as an index, and files
//!   served chunk by chunk, each verified against the TOC the manifest names.
//! - `prefetch`: the pool that gets a listing's layers ready at once, downloads and decodes each
//!   bounded.

pub mod bounds;
pub mod config;
pub mod decode;
pub mod index;
pub mod kind;
mod layers;
pub mod lazy;
pub mod merge;
pub mod prefetch;
mod rootpath;
pub mod tar;

pub use bounds::ViewsConfig;
pub use layers::{Materialised, Views, ViewsCounters, ViewsStats, has_view};
