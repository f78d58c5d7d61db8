//! Talking to a registry: the [`Client`] trait the filesystem core depends on, and its one real
//! implementation, [`http::HttpClient`].
//!
//! The trait speaks in registry terms (catalog, tags, manifests, blobs) and returns raw bytes and
//! headers: it does not parse manifests or check digests, which is the store's job. So the core's
//! tests put an in-memory registry behind it (`testkit::fake`), wrapped in `testkit::faulty`,
//! which injects faults (cut bodies, ignored `Range`, lying sizes) around any client, and the
//! store's verification runs unchanged.

pub mod auth;
pub mod credentials;
pub mod endpoint;
pub mod foreign;
pub mod helper;
pub mod http;
pub mod link;
pub mod mirror_config;
pub mod mirrors;
pub mod secret;

use std::io::Read;

use crate::digest::Digest;
use crate::error::Result;
use crate::manifest::referrers::Referrer;

/// HEAD or GET, for manifests: HEAD when only the digest is needed (Docker Hub does not count
/// HEADs against its pull limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Head,
    Get,
}

/// A manifest response.
#[derive(Debug)]
pub struct ManifestReply {
    /// The URL that answered, for error messages.
    pub url: String,
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header as sent (not yet trusted).
    pub digest_header: Option<String>,
    /// The body, for GET.
    pub body: Option<Vec<u8>>,
}

/// A blob response body, streaming.
pub struct BlobReply {
    pub url: String,
    pub reader: Box<dyn Read + Send>,
    /// Whether the registry honoured the `Range` asked for (206); if not, the body starts at 0.
    pub ranged: bool,
}

/// The registry, as the filesystem core sees it.
pub trait Client: Send + Sync {
    /// `GET /v2/`: the registry is there, speaks the v2 API, and takes our credentials (a 401
    /// is answered as for any request, so wrong credentials fail here rather than on first use).
    fn ping(&self) -> Result<()> {
        Ok(())
    }
    /// Every repository name in the catalog, all pages followed.
    fn catalog(&self) -> Result<Vec<String>>;
    /// Every tag of `repo`, all pages followed.
    fn tags(&self, repo: &str) -> Result<Vec<String>>;
    /// Whether `repo` has a tag list, i.e. is a repository: `Err(NotFound)` for 404
    /// (NAME_UNKNOWN), `Err(Denied)` for a refusal. Over HTTP it costs one request whatever the
    /// list's length (the first page of one tag), and gives no list (`None`); by default it is
    /// [`Client::tags`], whose list is given to be kept.
    fn has_tag_list(&self, repo: &str) -> Result<Option<Vec<String>>> {
        self.tags(repo).map(Some)
    }
    /// A manifest by tag or digest.
    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply>;
    /// What refers to manifest `digest` (OCI 1.1 `GET /v2/<repo>/referrers/<digest>`, every page,
    /// unfiltered), parsed and bounded by `manifest::referrers`; `None` when the registry answers
    /// 404, i.e. it has no referrers API (the store then reads the `<alg>-<hex>` tag instead).
    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        let _ = (repo, digest);
        Ok(None)
    }
    /// A blob's size, from a HEAD.
    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64>;
    /// A blob's bytes from `offset` on (a `Range` request when `offset > 0`).
    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply>;
    /// Bytes `start..end` of a blob (`Range: bytes=start-(end-1)`): the reply's body is those
    /// bytes when `ranged`, else the whole blob from 0 (a registry that does not honour `Range`),
    /// for the caller to fall back on. Nothing here is trusted: the caller checks the length and
    /// the bytes. By default [`Client::blob`] from `start`, read no further than `end`.
    fn blob_range(&self, repo: &str, digest: &Digest, start: u64, end: u64) -> Result<BlobReply> {
        let reply = self.blob(repo, digest, start)?;
        if !reply.ranged && start > 0 {
            return Ok(reply);
        }
        let len = end.saturating_sub(start);
        Ok(BlobReply { url: reply.url, reader: Box::new(Read::take(reply.reader, len)), ranged: true })
    }
    /// Bytes from `url` (a reply of this client's) did not hash to their digest: stop trusting
    /// its source, if another can be asked instead. True if the same request is worth sending
    /// again (a mirror served it; the next source will answer); false for a plain registry.
    fn distrust(&self, url: &str) -> bool {
        let _ = url;
        false
    }
    /// What this client has sent so far.
    fn stats(&self) -> Stats {
        Stats::default()
    }
}

crate::telemetry::counters! {
    /// Request counters, for the summary regfs logs at unmount and `.regfs/status`.
    pub struct Stats;
    /// Lock-free counters behind [`Stats`], kept by a client.
    pub struct Counters {
        requests,
        catalog_pages,
        tag_pages,
        manifest_heads,
        manifest_gets,
        blob_heads,
        blob_gets,
        token_fetches,
        retries,
        blob_bytes,
        referrers_pages,
        /// Ranged GETs of part of a blob (lazy formats' TOCs and chunks), counted in `blob_gets` too.
        blob_ranges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status.json` shows these under `requests`, and its layout (`status::JSON_VERSION`) holds
    /// them by these names, in this order; the summary at unmount and mirrors add them up.
    #[test]
    fn request_counts_keep_their_names_and_order() {
        let counters = Counters::default();
        counters.requests.add(3);
        counters.blob_bytes.add(1 << 20);
        counters.referrers_pages.bump();
        let mut stats = counters.snapshot();
        assert_eq!(
            serde_json::to_string(&stats).expect("json"),
            r#"{"requests":3,"catalog_pages":0,"tag_pages":0,"manifest_heads":0,"manifest_gets":0,"blob_heads":0,"blob_gets":0,"token_fetches":0,"retries":0,"blob_bytes":1048576,"referrers_pages":1,"blob_ranges":0}"#
        );
        stats.add(&Stats { requests: 2, retries: 1, ..Stats::default() });
        assert_eq!((stats.requests, stats.retries, stats.referrers_pages), (5, 1, 1));
    }
}
