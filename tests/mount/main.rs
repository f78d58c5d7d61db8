//! The tests through real mounts: the `regfs` binary this build made, mounted on a real
//! reference registry (started by `common::registry`, the fixtures pushed once for the whole
//! binary by `common::shared`), with independent clients (skopeo, umoci, containerd, GNU tar,
//! sha256sum) as oracles.

mod common;

mod artifacts;
mod basics;
mod cache;
mod credentials;
mod demo;
mod faults;
mod foreign;
mod lazy;
mod load;
mod mirrors;
mod mount_helper;
mod no_open;
mod protocol;
mod referrers;
mod rootfs;
mod rootfs_mount;
mod run_rootfs;
mod signatures;
mod status;
mod views_mount;
