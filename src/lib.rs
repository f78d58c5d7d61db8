//! regfs: a container registry as a read-only, digest-verified filesystem.
//!
//! Data flows one way: `fuse` (the kernel adapter) → `fs` (the FUSE-free core) → `tree` (what an
//! inode is) → `manifest` (what a manifest directory holds) → `store` (verified caches) →
//! `registry` (HTTP, auth, paging). Everything below `fuse` is testable without a mount.

pub mod cli;
pub mod digest;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod inodes;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod media;
pub mod names;
pub mod readahead;
pub mod registry;
pub mod store;
pub mod sync;
