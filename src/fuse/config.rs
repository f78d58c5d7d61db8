//! How the mount is made and what the kernel is told at init ([`MountConfig`]).

use std::time::Duration;

/// How the mount is made and what the kernel is told at init. `Default` is what regfs runs with;
/// `cli.rs` builds it (`--fuse-threads`, `--allow-other`, `--no-passthrough`, `--open`; the
/// rest have no option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Threads reading requests from the kernel (4); at least one.
    pub fuse_threads: usize,
    /// Let users other than the one mounting read the mount (off).
    pub allow_other: bool,
    /// Try FUSE passthrough (on, but only asked for when `no_open` is off; the kernel may still
    /// refuse it at init, and it needs root).
    pub passthrough: bool,
    /// Ask the kernel to send no OPEN and RELEASE of files (`FUSE_NO_OPEN_SUPPORT`, on; off with
    /// `--open`): see "No open, no release" above. Passthrough is not asked for then.
    pub no_open: bool,
    /// Requests the kernel keeps in the background at once (64: the load test runs 64 readers).
    pub max_background: u16,
    /// Background requests past which the kernel holds back readahead and writeback (48).
    pub congestion_threshold: u16,
    /// The most the kernel reads ahead of a reader, in bytes (1 MiB).
    pub max_readahead: u32,
    /// `st_blksize` of every entry (the I/O size `stat` suggests), and the block size `statfs`
    /// reports (128 KiB).
    pub blksize: u32,
    /// How often the watchdog looks at waiting requests (100 ms).
    pub watch_every: Duration,
    /// How long regfs waits for another process starting on the same mountpoint before going on
    /// without its lock (60 s): that start (the registry's first answer, then the mount) is
    /// bounded by `--timeout` and `--retries`. Used by `main.rs`.
    pub lock_wait: Duration,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            fuse_threads: 4,
            allow_other: false,
            passthrough: true,
            no_open: true,
            max_background: 64,
            congestion_threshold: 48,
            max_readahead: 1 << 20,
            blksize: 128 << 10,
            watch_every: Duration::from_millis(100),
            lock_wait: Duration::from_secs(60),
        }
    }
}

impl MountConfig {
    /// The session's configuration: read-only, no devices or setuid, the kernel checking
    /// permissions, shown in the mount table as `source` (`Cli::mount_source`) of type
    /// `fuse.regfs`.
    pub fn session(&self, source: &str) -> fuser::Config {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::FSName(source.to_string()),
            // As a kernel option, not fuser's `Subtype` (which only fusermount3 is told): a
            // mount by root then shows as `fuse.regfs` too, as its fstab line names it
            // (tests/mount/mount_helper.rs). fusermount3 takes `subtype=` from `-o` the same way.
            fuser::MountOption::CUSTOM("subtype=regfs".into()),
        ];
        if self.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        config.n_threads = Some(self.fuse_threads.max(1));
        config.clone_fd = true;
        config
    }
}
