//! What the core tells the kernel to trust and for how long, and the sizes of what it keeps
//! ([`FsConfig`]); `cli.rs` builds it.

use std::time::Duration;

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
    /// Entries of immutable directories' listings (a manifest's, a rootfs directory) kept after
    /// their handles close, all directories together (65,536; about 64 bytes each). A warm walk
    /// of a rootfs of up to this many paths opens every directory inline.
    pub kept_listing_entries: usize,
    /// No open: files whose content stays open for reads by inode (4,096). The kernel sends no
    /// open or release, so a content is kept per inode until the kernel forgets it, the most
    /// recently read kept; one let go opens again at its next read. Bounds the descriptors and
    /// the evicted cache files' disk space they can pin.
    pub inode_handles: usize,
    /// Inodes held at once past which listings read with attributes hand out no more references
    /// (32,768; about 1.7 KB each with what a `rootfs/` entry keeps): a `find` of an image of a
    /// million files then holds no more than lookups alone would.
    pub plus_inodes: usize,
    /// No open: bytes of in-memory contents (small blobs, manifests) kept for reads by inode, in
    /// all (32 MiB); past it the least recently read are let go.
    pub inode_memory: usize,
    /// No open: how long a failed open of an inode's content is the answer to the same reader's
    /// next reads of it, without trying again (1 s). One `read(2)` of a file the kernel has no
    /// pages of sends a readahead READ and, when that fails, a READ of the page itself; without
    /// this each would download (and retry) again. A killed reader's `EINTR` is never held.
    pub failed_open_hold: Duration,
    /// No open: inodes whose failed open is held at once, the oldest let go first (4,096).
    pub failed_opens: usize,
    /// Files put in the kernel's page cache ahead of a walk that reads a tree in listing order,
    /// per window (32; 0: none; `--read-ahead-files`). See `fs::ahead`.
    pub ahead_files: usize,
    /// The most bytes one window puts in the page cache (4 MiB).
    pub ahead_bytes: u64,
    /// The largest file a window puts in the page cache (1 MiB): larger ones are read as asked.
    pub ahead_file: u64,
    /// Files listed with attributes whose place in their listing is remembered for reading
    /// ahead (16,384), and the longest listing remembered (4,096 entries): what the remembered
    /// places keep alive is bounded.
    pub ahead_entries: usize,
    pub ahead_listing: usize,
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
            kept_listing_entries: 1 << 16,
            inode_handles: 4096,
            plus_inodes: 32_768,
            inode_memory: 32 << 20,
            failed_open_hold: Duration::from_secs(1),
            failed_opens: 4096,
            ahead_files: 32,
            ahead_bytes: 4 << 20,
            ahead_file: 1 << 20,
            ahead_entries: 16_384,
            ahead_listing: 4096,
            platform: Platform::host(),
            docker_hub: false,
        }
    }
}
