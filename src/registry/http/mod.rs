//! The registry over HTTP: the one place requests are sent, retried, redirected and authenticated.
//! Listings (tag lists, the catalog, referrers) are paged and bounded in `listing.rs`; every body
//! is held to a least speed, and blob bytes counted, in `body.rs`.
//!
//! # A request's life
//! 1. Sent to the registry's origin with the `Authorization` the [`Authenticator`] has for its
//!    scope (none at first).
//! 2. Redirects (301/302/303/307/308, as registries send blob GETs to object storage) are followed
//!    by hand, at most [`MAX_REDIRECTS`] hops. A hop to another origin never carries
//!    `Authorization`: the request is rebuilt without it.
//! 3. A 401 from the registry's origin is answered once (fetch a token, or switch to Basic) and
//!    the request sent again; a second 401 is final. A realm that refuses the credentials it was
//!    asked with has them fetched again (`Login::refresh`) and is asked once more if they changed.
//! 4. 429, 500, 502, 503, 504 and transport failures (refused, reset, timed out) are retried
//!    [`RetryPolicy::retries`] times, waiting `Retry-After` when the registry says (capped), else
//!    an exponential backoff. After that the error is [`Error::Unavailable`]. A body that breaks
//!    while it is read inside the loop (`HttpClient::send_with`'s `finish`) is retried the same.
//! 5. The final status maps to an error once (`failure`, shared with foreign hosts): 404 →
//!    NotFound, 401/403 → Denied, other non-2xx → Protocol. Every error names the URL, and a URL
//!    off the registry's origin is named without its query (often a signature that works as a
//!    credential).
//! 6. Not retried, as no retry helps: a certificate nobody trusts (Denied, naming `--ca-cert`),
//!    and `https://` to a server that answers in plain HTTP (BadArgument, naming the `http://`
//!    URL to try).
//!
//! # Bounded time
//! Each attempt is bounded by `timeout` per network operation (connect, headers, each body read),
//! so a stalled registry costs at most `(retries + 1) × timeout` plus the backoff delays before
//! the caller sees EIO; `doc/SEMANTICS.md` gives the figures. An attempt follows no redirect
//! once `timeout` has passed since it began (it is retried instead), so slow hops, each within
//! `timeout`, cost an attempt at most twice that, not `MAX_REDIRECTS + 1` times. A body that
//! trickles within each read's `timeout` is the [`Progress`] rule's (`body.rs`).

mod body;
mod listing;

use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client as Reqwest, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};

use super::auth::Authenticator;
use super::credentials::{Credentials, Login, Secret};
use super::{BlobReply, Client, Counters, Fetch, ManifestReply, Stats};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{MAX_MANIFEST_SIZE, MAX_PAGES, MAX_REDIRECTS, MAX_TOKEN_REPLY};
use crate::manifest::referrers::Referrer;
use crate::media;
use crate::names;
use body::{CountingReader, read_limited};
pub use body::{Paced, Progress};

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The transport's configuration. `Default` is what regfs runs with; `cli.rs` builds it
/// (`Cli::http_options`: `--retries`, `--timeout`, `--min-speed`, `--min-speed-time`, and the
/// credentials and CA certificates read from the options that name them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where the credentials came from, fetched again when refused (`credentials::lookup`).
    pub login: Option<Login>,
    /// A username and password given as such (never fetched again); `login` wins.
    pub credentials: Option<Credentials>,
    pub retry: RetryPolicy,
    /// Per network operation: connect, response headers, each body read (10 s).
    pub timeout: Duration,
    /// Idle connections kept open to one host, for reuse (32).
    pub pool_idle: usize,
    /// The least any body must move.
    pub progress: Progress,
    /// Certificate authorities to trust besides the system's (PEM), for registries behind an
    /// internal CA.
    pub ca_certs: Vec<u8>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            login: None,
            credentials: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            pool_idle: 32,
            progress: Progress::default(),
            ca_certs: Vec::new(),
        }
    }
}

pub struct HttpClient {
    base: Url,
    http: Reqwest,
    auth: Authenticator,
    retry: RetryPolicy,
    progress: Progress,
    /// `--timeout`: also how long one try may spend following redirects before it gives up.
    timeout: Duration,
    counters: Arc<Counters>,
    max_pages: usize,
    /// Listings being fetched now, at most [`LISTINGS_AT_ONCE`](crate::limits::LISTINGS_AT_ONCE) ([`listing`]).
    listings: crate::sync::Semaphore,
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
        let http = reqwest_client(&options)?;
        let allow_http_realm = base.scheme() == "http";
        Ok(HttpClient {
            base,
            http,
            auth: Authenticator::new(
                options.login.or(options.credentials.map(|c| Login::fixed(Secret::Basic(c)))),
                allow_http_realm,
            ),
            retry: options.retry,
            timeout: options.timeout,
            progress: options.progress,
            counters: Arc::new(Counters::default()),
            listings: crate::sync::Semaphore::new(crate::limits::LISTINGS_AT_ONCE),
            max_pages: MAX_PAGES,
        })
    }

    /// Follow at most `pages` pages of a tag list or catalog (default [`MAX_PAGES`]).
    pub fn with_max_pages(mut self, pages: usize) -> Self {
        self.max_pages = pages;
        self
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base.join(path).map_err(|e| Error::BadArgument(format!("{path}: {e}")))
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
            self.counters.retries.bump();
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
        let started = std::time::Instant::now();
        loop {
            let mut req: RequestBuilder = self.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let same_origin = self.same_origin(&url);
            let sent = if same_origin { self.auth.header(scope) } else { None };
            if let Some(a) = &sent {
                req = req.header(AUTHORIZATION, a);
            }
            self.counters.requests.bump();
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
                // https:// to a registry that speaks plain HTTP: the URL is wrong, no retry helps.
                Err(e) if same_origin && url.scheme() == "https" && is_plain_http(&e) => {
                    let host = url.host_str().unwrap_or("");
                    let try_url = match url.port() {
                        Some(p) => format!("http://{host}:{p}"),
                        None => format!("http://{host}"),
                    };
                    return Err(Error::BadArgument(format!(
                        "{method} {}: the server answered in plain HTTP; try {try_url}",
                        self.shown(&url)
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
                    // Each hop may take `timeout`; all of a try's hops together not much more.
                    if started.elapsed() >= self.timeout {
                        return Ok(Attempt::Retry(
                            Error::Unavailable(format!(
                                "{method} {}: {hops} redirects took longer than {:?}",
                                self.shown(&url),
                                self.timeout
                            )),
                            None,
                        ));
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
                self.auth.forget(scope, sent.as_deref());
                // Another request authenticated while this one was out: retry with what it got.
                if self.auth.header(scope).is_some_and(|now| Some(&now) != sent.as_ref()) {
                    continue;
                }
                let challenge =
                    resp.headers().get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
                match self.auth.answer(&challenge, scope, url.as_str(), sent.as_deref())? {
                    None => continue,
                    Some(token_req) => match self.fetch_token_refreshing(token_req, &challenge, scope, &url, &sent) {
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

    /// Fetch a token; if the realm refuses the credentials it was asked with, fetch them again
    /// (`Login::refresh`: a rotated password, rate-limited) and, if they changed, ask once more.
    fn fetch_token_refreshing(
        &self,
        req: super::auth::TokenRequest,
        challenge: &str,
        scope: &str,
        url: &Url,
        sent: &Option<String>,
    ) -> Result<()> {
        let secret = req.secret.clone();
        match (self.fetch_token(req, scope), secret) {
            (Err(e @ Error::Denied(_)), Some(refused)) => {
                if !self.auth.refresh(&refused)? {
                    return Err(e);
                }
                log::info!("{e}; asking again with the credentials fetched again");
                match self.auth.answer(challenge, scope, url.as_str(), sent.as_deref())? {
                    Some(again) => self.fetch_token(again, scope),
                    None => Ok(()),
                }
            }
            (result, _) => result,
        }
    }

    fn fetch_token(&self, req: super::auth::TokenRequest, scope: &str) -> Result<()> {
        self.counters.token_fetches.bump();
        self.counters.requests.bump();
        let mut r = match req.form {
            Some(form) => {
                self.http.post(req.url.clone()).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form)
            }
            None => self.http.get(req.url.clone()),
        };
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
        let body = read_limited(resp, MAX_TOKEN_REPLY, &shown, self.progress)?;
        self.auth.store_token(scope, &body, &shown)
    }

    /// A response's status, once: usable, worth retrying, or a final error.
    fn classify(&self, resp: Response, method: &Method, url: &Url) -> Result<Attempt> {
        let status = resp.status();
        let at = format!("{method} {}", self.shown(url));
        if status.is_success() {
            return Ok(Attempt::Done(resp));
        }
        let (e, asked) = failure(&resp, at)?;
        Ok(Attempt::Retry(e, asked))
    }
}

fn repo_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The HTTP client of `options` (timeouts, pool, CA certificates; redirects are followed by hand,
/// never by it), for the registry and for foreign layers (`foreign.rs`).
pub(crate) fn reqwest_client(options: &Options) -> Result<Reqwest> {
    // One client for the whole mount: its pool reuses connections (and TLS sessions) across
    // requests, which is most of the cost of a small request to a remote registry.
    let http = Reqwest::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(options.timeout)
        .connect_timeout(options.timeout)
        .pool_max_idle_per_host(options.pool_idle)
        .tcp_nodelay(true)
        .user_agent(concat!("regfs/", env!("CARGO_PKG_VERSION")));
    let http = if options.ca_certs.is_empty() {
        http
    } else {
        let certs = reqwest::Certificate::from_pem_bundle(&options.ca_certs)
            .map_err(|e| Error::BadArgument(format!("--ca-cert: not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::BadArgument("--ca-cert: no certificate in the file".into()));
        }
        http.tls_certs_merge(certs)
    };
    http.build().map_err(|e| Error::Io(format!("cannot build the HTTP client: {e}")))
}

/// Whether a connection failed on the server's certificate (rustls names it in its message;
/// reqwest does not expose the TLS error as a type).
pub(crate) fn is_certificate_error(e: &reqwest::Error) -> bool {
    let chain = error_chain(e);
    e.is_connect() && (chain.contains("certificate") || chain.contains("UnknownIssuer"))
}

/// Whether a TLS connection failed because the server answered in plain HTTP: rustls reads the
/// reply's first bytes (`HTTP/1.…`) as a record of an unknown type ("received corrupt message of
/// type InvalidContentType"; checked against the reference registry and Go's server, which
/// answer a TLS hello with an HTTP 400).
fn is_plain_http(e: &reqwest::Error) -> bool {
    e.is_connect() && error_chain(e).contains("InvalidContentType")
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
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
        let url = self.url("/v2/_catalog")?;
        self.pages(url, "registry:catalog:*", &self.counters.catalog_pages, "repositories", names::check_repo)
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let url = self.url(&format!("/v2/{repo}/tags/list"))?;
        self.pages(url, &repo_scope(repo), &self.counters.tag_pages, "tags", names::check_tag)
    }

    /// The first page of one tag only, its status the answer (the body is not read: a page is
    /// the registry's to size, and nothing of it is kept).
    fn has_tag_list(&self, repo: &str) -> Result<Option<Vec<String>>> {
        let url = self.url(&format!("/v2/{repo}/tags/list?n=1"))?;
        self.counters.tag_pages.bump();
        self.send(Method::GET, url, &repo_scope(repo), &[]).map(|_| None)
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let method = match fetch {
            Fetch::Head => {
                self.counters.manifest_heads.bump();
                Method::HEAD
            }
            Fetch::Get => {
                self.counters.manifest_gets.bump();
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
                Fetch::Get => Some(read_limited(resp, MAX_MANIFEST_SIZE, url.as_str(), self.progress)?),
            };
            Ok(ManifestReply { url: url.to_string(), content_type, digest_header, body })
        })
    }

    /// Every page of the referrers list, bounded as a listing is (`listing.rs`); a 404 to the
    /// first page means the registry has no referrers API.
    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        self.referrer_pages(repo, digest)
    }

    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        self.counters.blob_heads.bump();
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let resp = self.send(Method::HEAD, url.clone(), &repo_scope(repo), &[])?;
        resp.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("HEAD {url}: no Content-Length")))
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        self.counters.blob_gets.bump();
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let headers = if offset > 0 { vec![(RANGE, format!("bytes={offset}-"))] } else { Vec::new() };
        let resp = self.send(Method::GET, url.clone(), &repo_scope(repo), &headers)?;
        let ranged = resp.status() == StatusCode::PARTIAL_CONTENT;
        let paced = Paced::new(resp, self.progress, format!("{url}"));
        let reader = CountingReader { inner: paced, counters: Arc::clone(&self.counters) };
        Ok(BlobReply { url: url.to_string(), reader: Box::new(reader), ranged })
    }

    fn blob_range(&self, repo: &str, digest: &Digest, start: u64, end: u64) -> Result<BlobReply> {
        self.counters.blob_gets.bump();
        self.counters.blob_ranges.bump();
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let last = end.checked_sub(1).filter(|l| *l >= start);
        let last = last.ok_or_else(|| Error::Io(format!("GET {url}: an empty range {start}..{end}")))?;
        let headers = vec![(RANGE, format!("bytes={start}-{last}"))];
        let resp = self.send(Method::GET, url.clone(), &repo_scope(repo), &headers)?;
        let ranged = resp.status() == StatusCode::PARTIAL_CONTENT;
        let paced = Paced::new(resp, self.progress, format!("{url}"));
        let reader = CountingReader { inner: paced, counters: Arc::clone(&self.counters) };
        Ok(BlobReply { url: url.to_string(), reader: Box::new(reader), ranged })
    }

    fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// What a status other than 2xx means, for the registry's requests and a foreign host's alike
/// (one place): `Ok((error, Retry-After))` for a fault worth trying again (429, 500, 502, 503,
/// 504), `Err` for an answer (404, 401, 403, anything else), which is not retried. `at` names the
/// request in the message.
pub(crate) fn failure(resp: &Response, at: String) -> Result<(Error, Option<Duration>)> {
    let status = resp.status();
    match status.as_u16() {
        429 | 500 | 502 | 503 | 504 => {
            let asked = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Ok((Error::Unavailable(format!("{at}: HTTP {status}")), asked))
        }
        404 => Err(Error::NotFound(at)),
        401 | 403 => Err(Error::Denied(format!("{at}: HTTP {status}"))),
        _ => Err(Error::Protocol(format!("{at}: HTTP {status}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync;
    use std::io::Read;

    /// A registry whose every answer is a redirect, each sent just within `--timeout`, and whose
    /// last hop never answers: each hop alone is within the timeout, but a try must not last
    /// (redirects + 1) timeouts. A try follows no redirect once `--timeout` has passed since it
    /// began, so it ends within twice the timeout.
    #[test]
    fn slow_redirect_hops_are_bounded_per_try() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for (hop, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    if hop % 6 == 5 {
                        std::thread::sleep(Duration::from_secs(30)); // the last hop says nothing
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(700));
                    let reply = format!(
                        "HTTP/1.1 302 Found\r\nLocation: /v2/hop{hop}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(reply.as_bytes());
                });
            }
        });
        let timeout = Duration::from_secs(1);
        let retry = RetryPolicy { retries: 1, base_delay: Duration::from_millis(200), ..RetryPolicy::default() };
        let options = Options { timeout, retry, ..Options::default() };
        let client = HttpClient::new(format!("http://{addr}/").parse().expect("url"), options).expect("client");
        let started = std::time::Instant::now();
        let result = client.ping();
        let took = started.elapsed();
        assert!(result.is_err(), "{result:?}");
        // Two tries of at most 2 s each, and 0.2 s between them.
        let bound = 2 * 2 * timeout + Duration::from_millis(200);
        assert!(
            took < bound + Duration::from_millis(500),
            "slow redirects took {took:?} (bound {bound:?}): {result:?}"
        );
    }

    /// A registry on loopback that answers every request with `answer(path)` (status line and
    /// headers, then the body), one connection per request; the number of requests it served.
    pub(super) fn serve(
        answer: impl Fn(&str) -> (String, Vec<u8>) + Send + Sync + 'static,
    ) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = Url::parse(&format!("http://{}/", listener.local_addr().expect("address"))).expect("url");
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&served);
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (count, answer) = (Arc::clone(&count), Arc::clone(&answer));
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(&stream);
                    let mut request = String::new();
                    if reader.read_line(&mut request).is_err() {
                        return;
                    }
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (head, body) = answer(&path);
                    let mut out = &stream;
                    // A head that names its own Content-Length may promise more than it sends.
                    let length = if head.contains("Content-Length") {
                        String::new()
                    } else {
                        format!("Content-Length: {}\r\n", body.len())
                    };
                    let _ = write!(out, "{head}{length}Connection: close\r\n\r\n");
                    let _ = out.write_all(&body);
                });
            }
        });
        (url, served)
    }

    /// `https://` to a server that speaks plain HTTP (answering the TLS hello with an HTTP 400, as
    /// Go's server and the reference registry do; rustls reports "received corrupt message of type
    /// InvalidContentType") is a mistake in the URL, not a passing fault: said so, with the
    /// `http://` URL to try, on the first connection, without retrying.
    #[test]
    fn https_to_a_plain_http_server_says_to_try_http_and_is_not_retried() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut hello = [0u8; 1024];
                let _ = stream.read(&mut hello);
                let _ = stream
                    .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
            }
        });
        let url = Url::parse(&format!("https://127.0.0.1:{port}/")).expect("url");
        let client = HttpClient::new(url, Options::default()).expect("client");
        let started = std::time::Instant::now();
        let err = client.ping().expect_err("plain HTTP is no TLS");
        let msg = err.tell();
        assert!(matches!(err, Error::BadArgument(_)), "{err:?}");
        assert!(
            msg.contains("the server answered in plain HTTP") && msg.contains(&format!("try http://127.0.0.1:{port}")),
            "{msg}"
        );
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "not retried");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    /// Asked for a token without a scope of its own, regfs asks the realm for the one the
    /// request needs: pull on that repository, not more, not another.
    #[test]
    fn a_token_is_asked_for_pull_on_the_repository_listed() {
        use std::sync::Mutex;
        let base_url: Arc<std::sync::OnceLock<Url>> = Arc::new(std::sync::OnceLock::new());
        let token_paths: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let (url_of, asked) = (Arc::clone(&base_url), Arc::clone(&token_paths));
        let (base, _) = serve(move |path| {
            if path.starts_with("/token") {
                sync::lock(&asked).push(path.to_string());
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
                return (head, br#"{"token":"t"}"#.to_vec());
            }
            if sync::lock(&asked).is_empty() {
                let realm = url_of.get().map(|u| u.join("/token").expect("url").to_string()).unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"reg\"\r\n"
                );
                return (head, Vec::new());
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            (head, br#"{"name":"a/b","tags":["v1"]}"#.to_vec())
        });
        base_url.set(base.clone()).expect("set once");
        let client = HttpClient::new(base, Options::default()).expect("client");
        assert_eq!(client.tags("a/b").expect("tags once authenticated"), ["v1"]);
        assert_eq!(*sync::lock(&token_paths), ["/token?service=reg&scope=repository%3Aa%2Fb%3Apull"]);
    }
}
