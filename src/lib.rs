//! regfs: a container registry as a read-only, digest-verified filesystem.
//!
//! Data flows one way: `fuse` (the kernel adapter) → `fs` (the FUSE-free core: inodes, handles,
//! attributes) → `layout` (what every name means and what every directory lists) → `store`
//! (verified caches) → `manifest` (the dispatcher) and `registry` (HTTP, auth, paging). `layout`
//! also reads what `manifest` parsed; `inodes`, `media`, `limits`, `sync`, `digest`, `names` and
//! `error` sit underneath; `daemon` and `mountinfo` serve the process around the mount. Everything below `fuse` is testable without a mount, with the tools in
//! `testkit` (only in tests, or with the `testkit` feature).

pub mod capacity;
pub mod cli;
pub mod daemon;
pub mod digest;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod media;
pub mod mountinfo;
pub mod names;
pub mod platform;
pub mod readahead;
pub mod registry;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod views;
