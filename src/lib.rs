//! regfs: a container registry as a read-only, digest-verified filesystem.
//!
//! Data flows one way, each room naming only rooms below it (doc/ARCHITECTURE.md; checked by
//! `scripts/rooms`): `fuse` (the kernel adapter) → `fs` (the FUSE-free core: inodes, handles,
//! listings, attributes, reads with no open, reading ahead) → `layout` (what every name means
//! and what every directory lists) → `readahead` (tags resolved ahead), `status` (the status
//! snapshot) → `views` (what is derived from verified blobs) → `store` (verified caches) →
//! `registry` (HTTP, auth, paging) → `manifest` (the dispatcher) → `telemetry` (the recorders)
//! → `platform`, `names`, `digest`, `media`, `mountinfo`, `capacity`, `sync`, `limits` and
//! `error` at the bottom. `cli` and `daemon` serve the process around the mount. Everything
//! below `fuse` is testable without a mount, with the tools in `testkit` (only in tests, or
//! with the `testkit` feature).

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
pub mod policy;
pub mod readahead;
pub mod registry;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod views;
