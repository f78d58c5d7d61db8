//! The registry over HTTP: the one place requests are sent, retried, redirected and authenticated.
//!
//! # A request's life
//! 1. Sent to the registry's origin with the `Authorization` the [`Authenticator`] has for its
//!    scope (none at first).
//! 2. Redirects (301/302/303/307/308, as registries send blob GETs to object storage) are followed
//!    by hand, at most [`MAX_REDIRECTS`] hops. A hop to another origin never carries
//!    `Authorization`: the request is rebuilt without it.
//! 3. A 401 from the registry's origin is answered once (fetch a token, or switch to Basic) and
//!    the request sent again; a second 401 is final.
//! 4. 429, 500, 502, 503, 504 and transport failures (refused, reset, timed out) are retried
//!    [`RetryPolicy::retries`] times, waiting `Retry-After` when the registry says (capped), else
//!    an exponential backoff. After that the error is [`Error::Unavailable`].
//! 5. The final status maps to an error once: 404 → NotFound, 401/403 → Denied, other non-2xx →
//!    Protocol. Every error names the URL.
//!
//! # Bounded time
//! Each attempt is bounded by `timeout` per network operation (connect, headers, each body read),
//! so a stalled registry costs at most `(retries + 1) × timeout` plus the backoff delays before
//! the caller sees EIO; `doc/SEMANTICS.md` gives the figures.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client as Reqwest, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::auth::{Authenticator, Credentials};
use super::{BlobReply, Client, Counters, Fetch, ManifestReply, Stats, link};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{MAX_MANIFEST_SIZE, media};

pub const MAX_REDIRECTS: usize = 5;
/// Pages of a tag list or catalog followed at most (a registry that pages forever is cut off);
/// the default of [`HttpClient::with_max_pages`].
pub const MAX_PAGES: usize = 10_000;
/// Entries of one tag list or catalog kept at most: memory stays bounded whatever a registry sends.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff delay; doubles each retry.
    pub base_delay: Duration,
    /// Cap on any one delay, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { retries: 4, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub credentials: Option<Credentials>,
    pub retry: RetryPolicy,
    /// Per network operation: connect, response headers, each body read.
    pub timeout: Duration,
    /// Certificate authorities to trust besides the system's (PEM), for registries behind an
    /// internal CA.
    pub ca_certs: Vec<u8>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            credentials: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            ca_certs: Vec::new(),
        }
    }
}

pub struct HttpClient {
    base: Url,
    http: Reqwest,
    auth: Authenticator,
    retry: RetryPolicy,
    counters: Arc<Counters>,
    max_pages: usize,
}

/// What an attempt that did not produce a usable response means for the retry loop.
enum Attempt {
    Done(Response),
    /// Worth another try (transient); carries the error to report if no tries are left and the
    /// delay the registry asked for, if any.
    Retry(Error, Option<Duration>),
}

impl HttpClient {
    pub fn new(base: Url, options: Options) -> Result<Self> {
        // One client for the whole mount: its pool reuses connections (and TLS sessions) across
        // requests, which is most of the cost of a small request to a remote registry.
        let http = Reqwest::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .user_agent(concat!("regfs/", env!("CARGO_PKG_VERSION")));
        let http = if options.ca_certs.is_empty() {
            http
        } else {
            let certs = reqwest::Certificate::from_pem_bundle(&options.ca_certs)
                .map_err(|e| Error::InvalidName(format!("--ca-cert: not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(Error::InvalidName("--ca-cert: no certificate in the file".into()));
            }
            http.tls_certs_merge(certs)
        };
        let http = http.build().map_err(|e| Error::Io(format!("cannot build the HTTP client: {e}")))?;
        let allow_http_realm = base.scheme() == "http";
        Ok(HttpClient {
            base,
            http,
            auth: Authenticator::new(options.credentials, allow_http_realm),
            retry: options.retry,
            counters: Arc::new(Counters::default()),
            max_pages: MAX_PAGES,
        })
    }

    /// Follow at most `pages` pages of a tag list or catalog (default [`MAX_PAGES`]).
    pub fn with_max_pages(mut self, pages: usize) -> Self {
        self.max_pages = pages;
        self
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::InvalidName(format!("{path}: {e}")))
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// A URL as it may be logged: in full on the registry's origin. Elsewhere (object storage)
    /// without its query, which often carries a signature that works as a credential.
    fn shown(&self, url: &Url) -> String {
        if self.same_origin(url) {
            url.to_string()
        } else {
            format!("{}{}", url.origin().ascii_serialization(), url.path())
        }
    }

    /// Send with retries; the response is 2xx (or 206), else the mapped error.
    fn send(
        &self,
        method: Method,
        url: Url,
        scope: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<Response> {
        self.send_with(method, url, scope, headers, Ok)
    }

    /// Send with retries, and `finish` the response inside the retry loop: a body that breaks
    /// while `finish` reads it (`Error::Unavailable`) is retried like any other transient fault.
    fn send_with<T>(
        &self,
        method: Method,
        url: Url,
        scope: &str,
        headers: &[(reqwest::header::HeaderName, String)],
        finish: impl Fn(Response) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let (err, asked) = match self.attempt(&method, url.clone(), scope, headers)? {
                Attempt::Done(resp) => match finish(resp) {
                    Ok(v) => return Ok(v),
                    Err(e @ Error::Unavailable(_)) => (e, None),
                    Err(e) => return Err(e),
                },
                Attempt::Retry(err, asked) => (err, asked),
            };
            if attempt >= self.retry.retries {
                return Err(err);
            }
            let backoff = self.retry.base_delay.saturating_mul(1 << attempt.min(16));
            let delay = asked.unwrap_or(backoff).min(self.retry.max_delay);
            log::info!("{err}; retry {} of {} in {delay:?}", attempt + 1, self.retry.retries);
            Counters::bump(&self.counters.retries);
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// One attempt: redirects and one round of authentication inside it.
    fn attempt(
        &self,
        method: &Method,
        url: Url,
        scope: &str,
        headers: &[(reqwest::header::HeaderName, String)],
    ) -> Result<Attempt> {
        let mut url = url;
        let mut method = method.clone();
        let mut hops = 0;
        let mut authenticated = false;
        loop {
            let mut req: RequestBuilder = self.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let same_origin = self.same_origin(&url);
            if same_origin {
                if let Some(a) = self.auth.header(scope) {
                    req = req.header(AUTHORIZATION, a);
                }
            }
            Counters::bump(&self.counters.requests);
            let resp = match req.send() {
                Ok(r) => r,
                // A certificate nobody trusts is not a passing fault: say so, and do not retry.
                Err(e) if is_certificate_error(&e) => {
                    return Err(Error::Denied(format!(
                        "{method} {}: TLS: {}; for a registry behind an internal CA, pass it with --ca-cert",
                        self.shown(&url),
                        error_chain(&e.without_url())
                    )));
                }
                Err(e) => {
                    return Ok(Attempt::Retry(
                        // reqwest's own message would name the full URL, signature and all.
                        Error::Unavailable(format!("{method} {}: {}", self.shown(&url), error_chain(&e.without_url()))),
                        None,
                    ));
                }
            };
            let status = resp.status();
            if status.is_redirection() {
                if let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(Error::Protocol(format!(
                            "{method} {}: more than {MAX_REDIRECTS} redirects",
                            self.shown(&url)
                        )));
                    }
                    let next = url
                        .join(location)
                        .map_err(|_| Error::Protocol(format!("{method} {}: bad redirect", self.shown(&url))))?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(Error::Protocol(format!(
                            "{method} {}: redirect to a {} URL",
                            self.shown(&url),
                            next.scheme()
                        )));
                    }
                    log::debug!("{method} {} redirected to {}", self.shown(&url), self.shown(&next));
                    if status == StatusCode::SEE_OTHER {
                        method = Method::GET;
                    }
                    url = next;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED && same_origin && !authenticated {
                authenticated = true;
                self.auth.forget(scope);
                let challenge =
                    resp.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
                match self.auth.answer(&challenge, scope, url.as_str())? {
                    None => continue,
                    Some(token_req) => match self.fetch_token(token_req, scope) {
                        Ok(()) => continue,
                        // The token service failing for a moment is retried like the registry.
                        Err(e @ Error::Unavailable(_)) => return Ok(Attempt::Retry(e, None)),
                        Err(e) => return Err(e),
                    },
                }
            }
            return self.classify(resp, &method, &url);
        }
    }

    fn fetch_token(&self, req: super::auth::TokenRequest, scope: &str) -> Result<()> {
        Counters::bump(&self.counters.token_fetches);
        Counters::bump(&self.counters.requests);
        let mut r = self.http.get(req.url.clone());
        if let Some(a) = req.authorization {
            r = r.header(AUTHORIZATION, a);
        }
        // Token URLs carry no secret, but the realm is logged without its query all the same.
        let shown = format!("{}{}", req.url.origin().ascii_serialization(), req.url.path());
        let resp = r.send().map_err(|e| Error::Unavailable(format!("token {shown}: {}", error_chain(&e))))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Denied(format!("token {shown}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(Error::Unavailable(format!("token {shown}: HTTP {status}")));
        }
        let body = read_limited(resp, 1 << 20, &shown)?;
        self.auth.store_token(scope, &body, &shown)
    }

    /// A response's status, once: usable, worth retrying, or a final error.
    fn classify(&self, resp: Response, method: &Method, url: &Url) -> Result<Attempt> {
        let status = resp.status();
        let at = format!("{method} {}", self.shown(url));
        match status.as_u16() {
            200..=299 => Ok(Attempt::Done(resp)),
            429 | 500 | 502 | 503 | 504 => {
                let asked = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Ok(Attempt::Retry(Error::Unavailable(format!("{at}: HTTP {status}")), asked))
            }
            // Not retried: these are answers, not faults.
            404 => Err(Error::NotFound(at)),
            401 | 403 => Err(Error::Denied(format!("{at}: HTTP {status}"))),
            _ => Err(Error::Protocol(format!("{at}: HTTP {status}"))),
        }
    }

    /// GET every page of a list (tags or catalog), following `Link: <…>; rel="next"`.
    fn pages<T: for<'de> Deserialize<'de>>(
        &self,
        first: Url,
        scope: &str,
        counter: &std::sync::atomic::AtomicU64,
        mut each: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        let mut url = first;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..self.max_pages {
            if !seen.insert(url.clone()) {
                return Err(Error::Protocol(format!("GET {url}: pages loop back")));
            }
            Counters::bump(counter);
            let (next, body) = self.send_with(Method::GET, url.clone(), scope, &[], |resp| {
                let next = resp.headers().get(LINK).and_then(|l| l.to_str().ok()).and_then(link::next);
                Ok((next, read_limited(resp, 64 << 20, url.as_str())?))
            })?;
            let page: T = serde_json::from_slice(&body).map_err(|e| Error::malformed(format!("list {url}"), e))?;
            each(page)?;
            match next {
                None => return Ok(()),
                Some(n) => {
                    let n = url.join(&n).map_err(|_| Error::Protocol(format!("GET {url}: bad Link {n:?}")))?;
                    if !self.same_origin(&n) {
                        return Err(Error::Protocol(format!(
                            "GET {url}: Link to another origin {}",
                            n.origin().ascii_serialization()
                        )));
                    }
                    url = n;
                }
            }
        }
        Err(Error::Protocol(format!("GET {url}: more than {} pages", self.max_pages)))
    }
}

fn repo_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn bounded(entries: usize, url: &Url) -> Result<()> {
    if entries > MAX_LIST_ENTRIES {
        return Err(Error::TooLarge(format!("{url}: more than {MAX_LIST_ENTRIES} entries")));
    }
    Ok(())
}

/// Read a whole body, refusing more than `limit` bytes.
fn read_limited(resp: Response, limit: usize, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::TooLarge(format!("{what}: body of {len} bytes (limit {limit})")));
        }
    }
    let mut body = Vec::new();
    resp.take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Unavailable(format!("{what}: body cut off: {e}")))?;
    if body.len() > limit {
        return Err(Error::TooLarge(format!("{what}: body over {limit} bytes")));
    }
    Ok(body)
}

/// Whether a connection failed on the server's certificate (rustls names it in its message;
/// reqwest does not expose the TLS error as a type).
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e);
    e.is_connect() && (chain.contains("certificate") || chain.contains("UnknownIssuer"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[derive(Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Client for HttpClient {
    fn ping(&self) -> Result<()> {
        let url = self.url("/v2/")?;
        match self.send(Method::GET, url.clone(), "", &[]) {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => Err(Error::Protocol(format!("{url}: not a registry (no /v2/ API)"))),
            Err(e) => Err(e),
        }
    }

    fn catalog(&self) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let url = self.url("/v2/_catalog")?;
        self.pages(url.clone(), "registry:catalog:*", &self.counters.catalog_pages, |p: CatalogPage| {
            all.extend(p.repositories.unwrap_or_default());
            bounded(all.len(), &url)
        })?;
        Ok(all)
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let url = self.url(&format!("/v2/{repo}/tags/list"))?;
        self.pages(url.clone(), &repo_scope(repo), &self.counters.tag_pages, |p: TagPage| {
            all.extend(p.tags.unwrap_or_default());
            bounded(all.len(), &url)
        })?;
        Ok(all)
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let method = match fetch {
            Fetch::Head => {
                Counters::bump(&self.counters.manifest_heads);
                Method::HEAD
            }
            Fetch::Get => {
                Counters::bump(&self.counters.manifest_gets);
                Method::GET
            }
        };
        let accept = [(ACCEPT, media::ACCEPT.to_string())];
        self.send_with(method, url.clone(), &repo_scope(repo), &accept, |resp| {
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let content_type = header(CONTENT_TYPE.as_str());
            let digest_header = header("docker-content-digest");
            let body = match fetch {
                Fetch::Head => None,
                Fetch::Get => Some(read_limited(resp, MAX_MANIFEST_SIZE, url.as_str())?),
            };
            Ok(ManifestReply { url: url.to_string(), content_type, digest_header, body })
        })
    }

    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        Counters::bump(&self.counters.blob_heads);
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, url.clone(), &repo_scope(repo), &[])?;
        resp.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("HEAD {url}: no Content-Length")))
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        Counters::bump(&self.counters.blob_gets);
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let headers = if offset > 0 { vec![(RANGE, format!("bytes={offset}-"))] } else { Vec::new() };
        let resp = self.send(Method::GET, url.clone(), &repo_scope(repo), &headers)?;
        let ranged = resp.status() == StatusCode::PARTIAL_CONTENT;
        let length = resp.content_length();
        let reader = CountingReader { inner: resp, counters: Arc::clone(&self.counters) };
        Ok(BlobReply { url: url.to_string(), reader: Box::new(reader), length, ranged })
    }

    fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// Counts blob bytes as they arrive, for `.regfs/stats` and the benchmark.
struct CountingReader<R> {
    inner: R,
    counters: Arc<Counters>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.blob_bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
