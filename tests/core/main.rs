//! The tests of the core without FUSE: `Fs`, `Store` and the views over the in-memory registry
//! (`regfs::testkit::core`), and the parsers under property tests. No registry process, no
//! mount: what the kernel would ask, asked directly.

mod adversary;
mod artifacts;
mod foreign;
mod fs;
mod fuzz;
mod lazy;
mod mirrors;
mod referrers;
mod rootfs;
mod signatures;
mod soci;
mod status;
mod views;
