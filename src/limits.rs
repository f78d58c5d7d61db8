//! Bounds on what a registry, a layer or a user's input may make regfs hold or do: hostile-input
//! and protocol limits. The rule: a number belongs here when passing it would be an attack or a
//! breach of the protocol (a document too large, too many values, a name too long, a chain too
//! deep, a page loop) and regfs refuses, cuts or stops at it whatever the speed cost. A size
//! chosen for speed (how much is kept, how many run at once, how far ahead) does not: it is a
//! field of its layer's configuration (`StoreConfig`, `ViewsConfig`, `FsConfig`,
//! `ReadaheadConfig`, the registry's `Options`), with its default there and a row in
//! doc/CONFIGURATION.md. These sit here, at the bottom, so that the transport, the store, the
//! views and the dispatcher share them without importing one another; this module imports none.

use std::time::Duration;

/// Manifests larger than this are refused (the reference registry's own limit).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Descriptor sizes larger than this (1 TiB) are taken as hostile.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;
/// JSON values (strings, numbers, arrays, objects, …) one document (a manifest, a referrers
/// page) may hold: parsed JSON takes up to 16 times the bytes it came from (`manifest::json`).
pub const MAX_VALUES: usize = 100_000;
/// Image configs larger than this (16 MiB) are refused: real ones are a few KiB, with history.
pub const MAX_CONFIG: u64 = 16 << 20;

/// Characters of a repository name, all components together (the distribution grammar).
pub const MAX_REPO_LEN: usize = 255;
/// Characters of a tag (the distribution grammar).
pub const MAX_TAG_LEN: usize = 128;

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
/// Foreign layers remembered as logged refused, so each is said once and a manifest listing
/// many cannot flood the log.
pub const REFUSED_FOREIGN_LOGGED: usize = 1024;

/// Entries one subject's referrers list may hold, all pages together (past it: `TooLarge`).
pub const MAX_REFERRERS: usize = 10_000;
/// Bytes of one referrer's annotations kept, keys and values; past it they are dropped.
pub const MAX_REFERRER_ANNOTATIONS: usize = 16 << 10;

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

// `MOUNT/.regfs/status` (src/status.rs): what it holds stays bounded whatever the registry says.

/// Jobs in flight the status lists one by one; past it they are only counted.
pub const STATUS_JOBS_SHOWN: usize = 64;
/// Errors the status keeps (the last ones; every error is counted).
pub const STATUS_LAST_ERRORS: usize = 16;
/// Bytes of a kept error's message (and operation); a longer one is cut, marked `…`.
pub const STATUS_MESSAGE_BYTES: usize = 1024;
/// Digests kept of one error's message.
pub const STATUS_DIGESTS_PER_ERROR: usize = 4;

// Decoded layers and their indexes. `views::index::IndexLimits` and `views::tar::TarLimits`
// start from these and may be lowered per mount (tests use small ones); `views::ViewsConfig`
// starts from the entries, index bytes and rootfs layers, each with its option
// (`--layer-entries`, `--layer-index-size`, `--rootfs-layers`).

/// zstd frames may ask for a window of at most 2^27 bytes (128 MiB, zstd's own default limit); a
/// frame asking for more is refused rather than allocated.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Entries one layer's index may hold (past it the layer's index is refused, `TooLarge`).
pub const MAX_LAYER_ENTRIES: usize = 1 << 20;
/// Bytes one layer's index may take in memory, records and arenas (past it: `TooLarge`).
pub const MAX_INDEX_BYTES: usize = 128 << 20;
/// Bytes an index file in the cache may have past [`MAX_INDEX_BYTES`] (or the mount's bound):
/// room for its header and link tables. A longer file is not read.
pub const INDEX_FILE_SLACK: u64 = 1 << 20;
/// Bytes of an index build past which it takes the one slot for large builds: builds in
/// parallel (one per decoding layer) hold at most `(N - 1) ×` this `+ MAX_INDEX_BYTES` together.
/// The distro image's largest layer index takes about 1 MB.
pub const INDEX_BUILD_ALONE_ABOVE: usize = 16 << 20;
/// Bytes of a PAX extended header's (`x`) records (past it the layer is `Malformed`, unread).
pub const MAX_PAX_HEADER: u64 = 1 << 20;
/// Bytes of a GNU long name or long link (`L`, `K`) (past it the layer is `Malformed`, unread).
pub const MAX_GNU_LONG_NAME: u64 = 64 << 10;
/// Bytes of an entry's path in a layer (as written in the tar); longer entries are left out.
pub const MAX_LAYER_PATH: usize = 4096;
/// Bytes of one component of an entry's path; entries with a longer one are left out.
pub const MAX_LAYER_COMPONENT: usize = 255;
/// Symlinks followed to resolve one entry's parent path in its layer (containerd's `RootPath`
/// and umoci's securejoin allow 255; past it the entry is left out).
pub const MAX_LINK_HOPS: usize = 255;
/// Path components one layer may walk through symlinks, all its entries together (past it the
/// layer's index is refused, `TooLarge`): 16 per entry of the largest layer. Each entry's walk is
/// already bounded (`MAX_LINK_HOPS` links, `MAX_LAYER_PATH` bytes), but a million entries each
/// walking a long chain would not be. Spending the budget takes about as long as indexing a
/// layer of a million plain entries.
pub const MAX_LINK_STEPS: usize = 16 * MAX_LAYER_ENTRIES;
/// Bytes of one entry's extended attributes, names and values together; past it they are dropped.
pub const MAX_ENTRY_XATTRS: usize = 64 << 10;
/// Bytes of one extended attribute's value; a longer one drops the entry's xattrs.
pub const MAX_XATTR_VALUE: usize = 64 << 10;

/// Layers `rootfs/` merges (past it `rootfs/` is `TooLarge`): the merge asks layers one by one.
pub const MAX_ROOTFS_LAYERS: usize = 512;

// Platforms and artifact titles.

/// Bytes one part of a platform (OS, architecture, variant) may have on the command line.
pub const MAX_PLATFORM_ARG_PART: usize = 64;

/// Bytes one part of an index entry's platform (OS, architecture, variant) may have; an entry
/// with a longer one has no platform: it is named by its digest and never `current`.
pub const MAX_PLATFORM_PART: usize = 255;
/// Bytes an `org.opencontainers.image.title` may have to name a file (`NAME_MAX`); a longer title
/// is no title.
pub const MAX_TITLE: usize = 255;

// Lazy formats (eStargz, zstd:chunked): what a hostile TOC or registry could make regfs hold.

/// Bytes a lazy-format annotation's value may have (a digest, or `offset:len:len:type`); a
/// longer one is not kept, and the layer is not read lazily.
pub const MAX_LAZY_ANNOTATION: usize = 256;
/// Bytes of a TOC's JSON, compressed or not (containers/storage takes up to 150 MiB); a larger
/// one is refused and the layer is not read lazily.
pub const MAX_TOC_BYTES: usize = 64 << 20;
/// Bytes of one chunk's data, decompressed (eStargz writes 4 MiB): a TOC naming a larger chunk
/// is refused.
pub const MAX_LAZY_CHUNK: u64 = 64 << 20;
/// Compressed bytes fetched for one chunk at most (a chunk of incompressible data grows a
/// little): a TOC whose chunk spans more is refused.
pub const MAX_LAZY_CHUNK_FETCH: u64 = MAX_LAZY_CHUNK + (1 << 20);
/// Bytes one `Range` request may ask for outside a whole download (a TOC, a chunk).
pub const MAX_RANGE_FETCH: u64 = MAX_TOC_BYTES as u64 + (1 << 20);

/// Signatures read per manifest (a cosign `.sig` manifest's layers and Sigstore bundles among
/// its referrers, together): a `.sig` of 10,000 layers costs at most this many payloads.
pub const MAX_SIGNATURES: usize = 64;
/// What a simple-signing payload's or a Sigstore bundle's descriptor may claim; larger ones are
/// refused unread (cosign's are under 1 KiB; a bundle with a certificate chain a few KiB).
/// containers/image's own bound (`iolimits.MaxSignatureBodySize`), so regfs refuses no payload
/// skopeo would read.
pub const MAX_SIGNATURE_BLOB: u64 = 4 << 20;
/// A cosign signature annotation (base64 of a DER ECDSA signature, about 96 bytes) longer than
/// this is refused.
pub const MAX_SIGNATURE_B64: usize = 4096;
