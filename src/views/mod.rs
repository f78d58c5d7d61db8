//! Views derived from an image's layers: the decoded tar of each layer (`layers/<n>.tar`) and the
//! flattened `rootfs/`. See doc/plans/issue-9.md.
//!
//! - `config`: the image config's `rootfs.diff_ids`, strict and bounded.
//! - `decode`: compression sniffed by magic, the decoders, and the [`decode::Tee`] that hashes,
//!   writes and charges every decoded byte.
//! - `layers`: [`Views`], which turns a manifest's layer into a verified decoded file in the cache.
//! - `tar` parses a decoded layer with bounds; `index` is the per-layer index built from it and
//!   the query API the merge reads.

pub mod config;
pub mod decode;
pub mod index;
mod layers;
pub mod tar;

pub use layers::{Views, ViewsStats, has_view};
