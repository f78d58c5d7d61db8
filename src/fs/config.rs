//! What the core tells the kernel to trust and for how long, and the sizes of what it keeps
//! ([`FsConfig`]); `cli.rs` builds it.

use std::time::Duration;

use crate::limits;
use crate::platform::Platform;
use crate::readahead::ReadaheadConfig;

/// What the core tells the kernel to trust, and for how long, and how tag links are read ahead.
/// `Default` is what regfs runs with; `cli.rs` builds it (`--tag-ttl`; the rest have no option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// How long the kernel may trust digest-addressed entries and attributes, and names the
    /// grammar rules out (a day).
    pub immutable_ttl: Duration,
    /// How long the kernel may trust entries and attributes of names the registry may move
    /// (tags, the catalog), and their absence (60 s; `--tag-ttl`).
    pub tag_ttl: Duration,
    pub readahead: ReadaheadConfig,
    /// Decoded layers', indexes' and `rootfs/`'s bounds (`--index-memory`, `--layer-entries`,
    /// `--layer-index-size`, `--rootfs-layers`).
    pub views: crate::views::ViewsConfig,
    /// Entries of immutable directories' listings kept after their handles close
    /// ([`limits::KEPT_LISTING_ENTRIES`]; tests lower it).
    pub kept_listing_entries: usize,
    /// Contents kept for reads by inode with `--no-open` ([`limits::INODE_HANDLES`]; tests
    /// lower it).
    pub inode_handles: usize,
    /// Files of a directory put in the kernel's page cache ahead of a walk that reads them in
    /// listing order (32; 0: none). See `fs::ahead`.
    pub ahead_files: usize,
    /// Files listed with attributes whose place in their listing is remembered for reading
    /// ahead (16,384).
    pub ahead_entries: usize,
    /// The platform `current` links choose for, in index directories (`--platform`; by default
    /// this machine's).
    pub platform: Platform,
    /// Whether the registry is Docker Hub, where a one-component name means an official image
    /// (`MOUNT/alpine/tags` links to `library/alpine/tags`; false).
    pub docker_hub: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            immutable_ttl: Duration::from_secs(24 * 3600),
            tag_ttl: Duration::from_secs(60),
            readahead: ReadaheadConfig::default(),
            views: crate::views::ViewsConfig::default(),
            kept_listing_entries: limits::KEPT_LISTING_ENTRIES,
            inode_handles: limits::INODE_HANDLES,
            ahead_files: 32,
            ahead_entries: 16_384,
            platform: Platform::host(),
            docker_hub: false,
        }
    }
}
