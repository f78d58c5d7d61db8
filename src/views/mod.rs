//! Views derived from an image's layers: the decoded tar of each layer (`layers/<n>.tar`) and the
//! flattened `rootfs/`. See doc/plans/issue-9.md. `tar` parses a decoded layer with bounds,
//! `index` is the per-layer index built from it and the query API the merge reads.

pub mod index;
pub mod tar;
