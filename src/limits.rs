//! Bounds on what a registry may make regfs hold or do: hostile-input and protocol limits. They
//! are facts of the protocol or of safety, not tunables, and sit here so that the transport, the
//! store and the dispatcher share them without importing one another.

use std::time::Duration;

/// Manifests larger than this are refused (the reference registry's own limit).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Descriptor sizes larger than this (1 TiB) are taken as hostile.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

/// URLs one layer descriptor may list (`urls`, non-distributable layers): a descriptor with more
/// keeps none, so none is used (`registry/foreign.rs`).
pub const MAX_LAYER_URLS: usize = 16;
/// Bytes of one URL of a layer descriptor; a descriptor with a longer one keeps none.
pub const MAX_LAYER_URL_LEN: usize = 2048;

/// Redirect hops one request follows at most.
pub const MAX_REDIRECTS: usize = 5;
/// Pages of a tag list or catalog followed at most (a registry that pages forever is cut off).
pub const MAX_PAGES: usize = 10_000;
/// Bytes of response body one listing (a tag list or the catalog, all its pages together) may
/// receive, the URLs its `Link` headers name included; this is also the largest page. Past it
/// the listing fails with
/// [`Error::TooLarge`](crate::error::Error::TooLarge).
pub const MAX_LIST_BODY: u64 = 32 << 20;
/// Bytes the valid names of one listing may hold, each counted as its length plus
/// [`LIST_ENTRY_OVERHEAD`] (a `String` and its allocation). Past it the listing fails with
/// [`Error::TooLarge`](crate::error::Error::TooLarge). Invalid names are skipped as they are
/// parsed and never held.
pub const MAX_LIST_HELD: usize = 16 << 20;
/// Bytes a listed name is counted for besides its length (its `String` and allocation).
pub const LIST_ENTRY_OVERHEAD: usize = 32;
/// Listings (tag lists, the catalog) fetched at once, whatever the repository: each may hold
/// [`MAX_LIST_HELD`] of names and its parser a page's longest string.
pub const LISTINGS_AT_ONCE: usize = 2;
/// Invalid names of one listing logged one by one; past that, only counted.
pub const LOGGED_INVALID: usize = 10;

/// Bytes a token endpoint's reply may have.
pub const MAX_TOKEN_REPLY: usize = 1 << 20;
/// A token's lifetime when the reply does not say (the distribution spec's 60 s).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The shortest lifetime a token reply is taken to give.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(1);
/// The longest lifetime a token reply is taken to give (a day): the value comes from the network,
/// and `Instant + Duration` must not overflow.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// How long a credential helper (`docker-credential-<name> get`) may take before its process
/// group is killed, unless `--helper-timeout` says otherwise: a keyring may ask to be unlocked.
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a credential helper's stdout read; more is refused (the answer is a small JSON).
pub const MAX_HELPER_STDOUT: usize = 64 << 10;
/// Bytes of a credential helper's stderr kept to quote in the error; the rest is read and dropped.
pub const MAX_HELPER_STDERR: usize = 4 << 10;
/// Credentials refused while mounted are fetched again (the file re-read, the helper run again)
/// at most this often, so a registry refusing everything never has regfs call a helper in a loop.
pub const CREDENTIAL_REFRESH_EVERY: Duration = Duration::from_secs(10);

// Decoded layers and their indexes (PLAN-9 section 2.2). `views::index::IndexLimits` and
// `views::tar::TarLimits` start from these and may be lowered per mount (tests use small ones).

/// Entries one layer's index may hold (past it the layer's index is refused, `TooLarge`).
pub const MAX_LAYER_ENTRIES: usize = 1 << 20;
/// Bytes one layer's index may take in memory, records and arenas (past it: `TooLarge`).
pub const MAX_INDEX_BYTES: usize = 128 << 20;
/// Bytes of a PAX extended header's (`x`) records (past it the layer is `Malformed`, unread).
pub const MAX_PAX_HEADER: u64 = 1 << 20;
/// Bytes of a GNU long name or long link (`L`, `K`) (past it the layer is `Malformed`, unread).
pub const MAX_GNU_LONG_NAME: u64 = 64 << 10;
/// Bytes of an entry's path in a layer (as written in the tar); longer entries are left out.
pub const MAX_LAYER_PATH: usize = 4096;
/// Bytes of one component of an entry's path; entries with a longer one are left out.
pub const MAX_LAYER_COMPONENT: usize = 255;
/// Bytes of one entry's extended attributes, names and values together; past it they are dropped.
pub const MAX_ENTRY_XATTRS: usize = 64 << 10;
/// Bytes of one extended attribute's value; a longer one drops the entry's xattrs.
pub const MAX_XATTR_VALUE: usize = 64 << 10;

/// Layers `rootfs/` merges (past it `rootfs/` is `TooLarge`): the merge asks layers one by one.
pub const MAX_ROOTFS_LAYERS: usize = 512;
