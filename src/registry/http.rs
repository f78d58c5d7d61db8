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
//! the caller sees EIO; `doc/SEMANTICS.md` gives the figures. An attempt follows no redirect
//! once `timeout` has passed since it began (it is retried instead), so slow hops, each within
//! `timeout`, cost an attempt at most twice that, not `MAX_REDIRECTS + 1` times.
//!
//! A per-read timeout does not bound a body that trickles (a byte every few seconds). So every
//! body is also held to a [`Progress`] rule, as curl's `--speed-limit`/`--speed-time`: once
//! `window` has passed since the body (or the last check) began, fewer than `min_speed` bytes a
//! second over it is a fault, reported as a timed-out read ([`Paced`]). Manifests, tag-list pages
//! and tokens are then fetched again within the retry budget; a blob download is resumed with
//! `Range` (`store/download.rs`). An attempt thus lasts at most `window + timeout` once its headers
//! are in.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client as Reqwest, RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use super::auth::Authenticator;
use super::credentials::{Credentials, Login, Secret};
use super::{BlobReply, Client, Counters, Fetch, ManifestReply, Stats, link};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{
    LIST_ENTRY_OVERHEAD, LISTINGS_AT_ONCE, LOGGED_INVALID, MAX_LIST_BODY, MAX_LIST_HELD, MAX_MANIFEST_SIZE, MAX_PAGES,
    MAX_REDIRECTS, MAX_TOKEN_REPLY,
};
use crate::manifest::referrers::{self, Referrer};
use crate::media;
use crate::names;
use crate::sync;

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

/// The least a body must move: `min_speed` bytes a second, measured over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes a second; 0 turns the rule off.
    pub min_speed: u64,
    pub window: Duration,
}

impl Default for Progress {
    /// 1 KiB/s over 30 s. A registry or CDN that works moves hundreds of KiB a second at the very
    /// least; 1 KiB/s would take 17 minutes per MiB, which no reader waits for. 30 s rides out
    /// a congested link, a server's GC pause or a slow start, and with the default `--timeout`
    /// an abandoned attempt has cost at most 40 s.
    fn default() -> Self {
        Progress { min_speed: 1024, window: Duration::from_secs(30) }
    }
}

/// A body held to a [`Progress`] rule: a read that finds the body has moved too slowly over the
/// last window fails with [`std::io::ErrorKind::TimedOut`], naming what was read.
pub struct Paced<R> {
    inner: R,
    rule: Progress,
    what: String,
    since: std::time::Instant,
    moved: u64,
}

impl<R> Paced<R> {
    pub fn new(inner: R, rule: Progress, what: impl Into<String>) -> Self {
        Paced { inner, rule, what: what.into(), since: std::time::Instant::now(), moved: 0 }
    }
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 || self.rule.min_speed == 0 {
            return Ok(n);
        }
        self.moved += n as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= self.rule.window {
            if (self.moved as f64) < self.rule.min_speed as f64 * elapsed.as_secs_f64() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{}: slower than {} bytes/s over {} s ({} bytes in {:.1} s)",
                        self.what,
                        self.rule.min_speed,
                        self.rule.window.as_secs_f64(),
                        self.moved,
                        elapsed.as_secs_f64()
                    ),
                ));
            }
            self.since = std::time::Instant::now();
            self.moved = 0;
        }
        Ok(n)
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
    /// Listings being fetched now, at most [`LISTINGS_AT_ONCE`].
    listings: (std::sync::Mutex<usize>, std::sync::Condvar),
}

/// A turn to fetch a listing, given back when dropped.
struct ListingTurn<'a>(&'a (std::sync::Mutex<usize>, std::sync::Condvar));

impl<'a> ListingTurn<'a> {
    fn take(gate: &'a (std::sync::Mutex<usize>, std::sync::Condvar)) -> Self {
        let mut n = sync::lock(&gate.0);
        while *n >= LISTINGS_AT_ONCE {
            n = sync::wait(&gate.1, n);
        }
        *n += 1;
        ListingTurn(gate)
    }
}

impl Drop for ListingTurn<'_> {
    fn drop(&mut self) {
        *sync::lock(&self.0.0) -= 1;
        self.0.1.notify_one();
    }
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
            listings: Default::default(),
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
        Counters::bump(&self.counters.token_fetches);
        Counters::bump(&self.counters.requests);
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

    /// GET every page of a list (tags or catalog), following `Link: <…>; rel="next"`, and return
    /// the names in `field` that pass `check`. Each page is parsed as it streams in, one name at
    /// a time, and a name is checked before it is kept: what the listing holds is its valid names
    /// and nothing else, within [`MAX_LIST_BODY`] bytes received and [`MAX_LIST_HELD`] bytes held.
    fn pages(
        &self,
        first: Url,
        scope: &str,
        counter: &std::sync::atomic::AtomicU64,
        field: &'static str,
        check: fn(&str) -> Result<()>,
    ) -> Result<Vec<String>> {
        // Memory is bounded per listing: a few at a time keep it bounded in all.
        let _turn = ListingTurn::take(&self.listings);
        let mut url = first.clone();
        let mut seen = std::collections::HashSet::new();
        let mut budget = ListBudget::new(first.clone());
        let mut all = Vec::new();
        for _ in 0..self.max_pages {
            if !seen.insert(url.clone()) {
                return Err(Error::Protocol(format!("GET {url}: pages loop back")));
            }
            Counters::bump(counter);
            // A page broken off mid-body is fetched again: its names count only once it is whole,
            // its bytes at every attempt.
            let (next, page) = self.send_with(Method::GET, url.clone(), scope, &[], |resp| {
                let next = resp.headers().get(LINK).and_then(|l| l.to_str().ok()).and_then(link::next);
                Ok((next, budget.page(resp, &url, field, check, self.progress)?))
            })?;
            budget.commit(&page);
            all.extend(page.names);
            match next {
                None => return Ok(all),
                Some(n) => {
                    let n = url.join(&n).map_err(|_| Error::Protocol(format!("GET {url}: bad Link {n:?}")))?;
                    if !self.same_origin(&n) {
                        return Err(Error::Protocol(format!(
                            "GET {url}: Link to another origin {}",
                            n.origin().ascii_serialization()
                        )));
                    }
                    // The URL is held (to spot loops) and sent: it counts like body bytes.
                    budget.follow(&n)?;
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

/// What one listing has taken so far, across its pages.
struct ListBudget {
    /// The listing's first URL, named in its errors.
    listing: Url,
    /// Bytes received, of every attempt at every page, whole or broken off: a page retried costs
    /// each time.
    received: std::cell::Cell<u64>,
    held: usize,
    invalid: usize,
}

/// One page's valid names, with what they cost.
struct Page {
    names: Vec<String>,
    held: usize,
    invalid: usize,
}

impl ListBudget {
    fn new(listing: Url) -> Self {
        ListBudget { listing, received: std::cell::Cell::new(0), held: 0, invalid: 0 }
    }

    fn too_large(&self, url: &Url, why: String) -> Error {
        Error::TooLarge(format!("listing {} (at page {url}): {why}", self.listing))
    }

    /// Parse one page's body as it arrives, keeping the names in `field` that pass `check`,
    /// within what is left of the budget.
    fn page(
        &self,
        resp: Response,
        url: &Url,
        field: &'static str,
        check: fn(&str) -> Result<()>,
        progress: Progress,
    ) -> Result<Page> {
        let left_to_receive = MAX_LIST_BODY.saturating_sub(self.received.get());
        if resp.content_length().is_some_and(|len| len > left_to_receive) {
            return Err(self.too_large(url, format!("over {} MiB of response bodies", MAX_LIST_BODY >> 20)));
        }
        let mut body = Metered { inner: Paced::new(resp, progress, url.as_str()), read: 0, limit: left_to_receive };
        let mut page = Page { names: Vec::new(), held: 0, invalid: 0 };
        let mut stop = None;
        let parsed = {
            let mut keep = |name: &str| {
                if check(name).is_err() {
                    if self.invalid + page.invalid < LOGGED_INVALID {
                        log::warn!("{url}: skipping invalid name {name:?}");
                    }
                    page.invalid += 1;
                    return true;
                }
                page.held += name.len() + LIST_ENTRY_OVERHEAD;
                if self.held + page.held > MAX_LIST_HELD {
                    stop = Some(self.too_large(url, format!("names over {} MiB", MAX_LIST_HELD >> 20)));
                    return false;
                }
                page.names.push(name.to_string());
                true
            };
            parse_list(std::io::BufReader::new(&mut body), field, &mut keep)
        };
        self.received.set(self.received.get() + body.read);
        if let Some(e) = stop {
            return Err(e);
        }
        if body.read > left_to_receive {
            return Err(self.too_large(url, format!("over {} MiB of response bodies", MAX_LIST_BODY >> 20)));
        }
        match parsed {
            Ok(()) => Ok(page),
            Err(e) if e.is_io() => Err(Error::Unavailable(format!("GET {url}: body cut off: {e}"))),
            Err(e) => Err(Error::malformed(format!("list {url}"), e)),
        }
    }

    /// Count the next page's URL (held to spot loops, up to 64 KiB each) against the bytes a
    /// listing may receive.
    fn follow(&mut self, next: &Url) -> Result<()> {
        self.received.set(self.received.get() + next.as_str().len() as u64);
        if self.received.get() > MAX_LIST_BODY {
            return Err(self.too_large(next, format!("over {} MiB of response bodies and links", MAX_LIST_BODY >> 20)));
        }
        Ok(())
    }

    fn commit(&mut self, page: &Page) {
        self.held += page.held;
        let before = self.invalid;
        self.invalid += page.invalid;
        if before < LOGGED_INVALID && self.invalid > LOGGED_INVALID {
            log::warn!("{}: more invalid names skipped; they are counted, not logged", self.listing);
        }
    }
}

/// A body that refuses to be read past `limit` bytes (one more is let through, to tell "exactly
/// the limit" from "over it").
struct Metered<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.limit {
            return Err(std::io::Error::other("listing over its byte budget"));
        }
        let room = (self.limit + 1 - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Stream-parse a list page, handing each name of `field` to `keep`.
fn parse_list(r: impl Read, field: &'static str, keep: &mut impl FnMut(&str) -> bool) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_reader(r);
    serde::de::DeserializeSeed::deserialize(ListSeed { field, keep }, &mut de)?;
    de.end()
}

/// Deserializes a list page (`{"name": …, "tags": [...]}`, `{"repositories": [...]}`) without
/// building it: each string of `field` goes to `keep` as it is parsed (and is dropped unless
/// `keep` copies it); every other field is skipped. `keep` returning false stops the parse.
struct ListSeed<'a, F> {
    field: &'static str,
    keep: &'a mut F,
}

impl<'de, F: FnMut(&str) -> bool> serde::de::DeserializeSeed<'de> for ListSeed<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(&str) -> bool> serde::de::Visitor<'de> for ListSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with a {:?} list", self.field)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 == self.field {
                map.next_value_seed(Names { keep: &mut *self.keep })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A map key, borrowed where the parser can lend it.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                // Keys are short in any real page; a long one is kept only to be compared.
                Ok(Key(if s.len() <= 64 { s.to_string() } else { String::new() }))
            }
        }
        d.deserialize_str(V)
    }
}

/// The list itself: `null` or an array of strings.
struct Names<'a, F> {
    keep: &'a mut F,
}

impl<'de, F: FnMut(&str) -> bool> serde::de::DeserializeSeed<'de> for Names<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, F: FnMut(&str) -> bool> serde::de::Visitor<'de> for Names<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of names")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Name { keep: &mut *self.keep })?.is_some() {}
        Ok(())
    }
}

/// One name, handed to `keep` from the parser's scratch buffer.
struct Name<'a, F> {
    keep: &'a mut F,
}

impl<'de, F: FnMut(&str) -> bool> serde::de::DeserializeSeed<'de> for Name<'_, F> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, F: FnMut(&str) -> bool> serde::de::Visitor<'de> for Name<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        if (self.keep)(s) { Ok(()) } else { Err(E::custom("listing over its budget")) }
    }
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

/// Read a whole body, refusing more than `limit` bytes and one slower than `progress`.
fn read_limited(resp: Response, limit: usize, what: &str, progress: Progress) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::TooLarge(format!("{what}: body of {len} bytes (limit {limit})")));
        }
    }
    let mut body = Vec::new();
    Paced::new(resp, progress, what)
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::Unavailable(format!("{what}: body cut off: {e}")))?;
    if body.len() > limit {
        return Err(Error::TooLarge(format!("{what}: body over {limit} bytes")));
    }
    Ok(body)
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
        Counters::bump(&self.counters.tag_pages);
        self.send(Method::GET, url, &repo_scope(repo), &[]).map(|_| None)
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
                Fetch::Get => Some(read_limited(resp, MAX_MANIFEST_SIZE, url.as_str(), self.progress)?),
            };
            Ok(ManifestReply { url: url.to_string(), content_type, digest_header, body })
        })
    }

    /// Every page of the referrers list, as [`ListBudget`] bounds a listing: each page at most a
    /// manifest's size and all of them (and their `Link` URLs) within [`MAX_LIST_BODY`], on the
    /// registry's origin only, never a page twice; entries bounded by `manifest::referrers`.
    /// A 404 to the first page means the registry has no referrers API.
    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        let first = self.url(&format!("/v2/{repo}/referrers/{digest}"))?;
        let scope = repo_scope(repo);
        let accept = [(ACCEPT, media::OCI_INDEX.to_string())];
        // Memory is bounded per listing: a few at a time keep it bounded in all.
        let _turn = ListingTurn::take(&self.listings);
        let mut collect = referrers::Collect::new(first.as_str());
        let mut url = first.clone();
        let mut seen = std::collections::HashSet::new();
        let mut received: u64 = 0;
        for page in 0..self.max_pages {
            if !seen.insert(url.clone()) {
                return Err(Error::Protocol(format!("GET {url}: pages loop back")));
            }
            Counters::bump(&self.counters.referrers_pages);
            let limit = MAX_LIST_BODY.saturating_sub(received).min(MAX_MANIFEST_SIZE as u64) as usize;
            let got = self.send_with(Method::GET, url.clone(), &scope, &accept, |resp| {
                let next = resp.headers().get(LINK).and_then(|l| l.to_str().ok()).and_then(link::next);
                Ok((next, read_limited(resp, limit, url.as_str(), self.progress)?))
            });
            let (next, body) = match got {
                Err(Error::NotFound(e)) if page == 0 => {
                    log::debug!("{e}: no referrers API");
                    return Ok(None);
                }
                other => other?,
            };
            received += body.len() as u64;
            collect.page(&body)?;
            let Some(n) = next else { return Ok(Some(collect.finish())) };
            let n = url.join(&n).map_err(|_| Error::Protocol(format!("GET {url}: bad Link {n:?}")))?;
            if !self.same_origin(&n) {
                return Err(Error::Protocol(format!(
                    "GET {url}: Link to another origin {}",
                    n.origin().ascii_serialization()
                )));
            }
            received += n.as_str().len() as u64;
            if received > MAX_LIST_BODY {
                return Err(Error::TooLarge(format!("referrers {first}: over {} MiB of pages", MAX_LIST_BODY >> 20)));
            }
            url = n;
        }
        Err(Error::Protocol(format!("GET {url}: more than {} pages", self.max_pages)))
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
        let paced = Paced::new(resp, self.progress, format!("{url}"));
        let reader = CountingReader { inner: paced, counters: Arc::clone(&self.counters) };
        Ok(BlobReply { url: url.to_string(), reader: Box::new(reader), ranged })
    }

    fn stats(&self) -> Stats {
        self.counters.snapshot()
    }
}

/// Counts blob bytes as they arrive, for the summary regfs logs at unmount.
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

    /// A body that gives `chunk` bytes every `every`, forever.
    struct Drip {
        chunk: usize,
        every: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.every);
            let n = self.chunk.min(buf.len());
            buf[..n].fill(b'x');
            Ok(n)
        }
    }

    fn read_for(body: Drip, rule: Progress, total: usize) -> std::io::Result<usize> {
        let mut paced = Paced::new(body, rule, "test body");
        let mut buf = [0u8; 4096];
        let mut got = 0;
        while got < total {
            got += paced.read(&mut buf)?;
        }
        Ok(got)
    }

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

    #[test]
    fn a_body_slower_than_the_rule_fails_once_its_window_has_passed() {
        let rule = Progress { min_speed: 1000, window: Duration::from_millis(200) };
        let started = std::time::Instant::now();
        let e = read_for(Drip { chunk: 10, every: Duration::from_millis(20) }, rule, usize::MAX).expect_err("trickle");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("test body: slower than 1000 bytes/s"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(400), "{:?}", started.elapsed());
    }

    #[test]
    fn a_steady_body_above_the_rule_reads_for_many_windows() {
        let rule = Progress { min_speed: 1000, window: Duration::from_millis(100) };
        // 4 KiB every 10 ms: 400 KB/s for 0.5 s, five windows.
        let got = read_for(Drip { chunk: 4096, every: Duration::from_millis(10) }, rule, 200 << 10).expect("steady");
        assert!(got >= 200 << 10);
        // Off: any speed goes.
        let off = Progress { min_speed: 0, window: Duration::from_millis(10) };
        assert!(read_for(Drip { chunk: 1, every: Duration::from_millis(15) }, off, 5).is_ok());
    }

    fn names(body: &str) -> serde_json::Result<Vec<String>> {
        let mut out = Vec::new();
        parse_list(body.as_bytes(), "tags", &mut |n: &str| {
            out.push(n.to_string());
            true
        })?;
        Ok(out)
    }

    /// A registry on loopback that answers every request with `answer(path)` (status line and
    /// headers, then the body), one connection per request; the number of requests it served.
    fn serve(
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

    /// Bytes received count whether or not the page they belong to arrives whole: a registry that
    /// breaks every page off near its end, and serves it whole on the last retry, must hit the
    /// listing's 32 MiB, not make regfs download 4 times that per page, page after page.
    #[test]
    fn pages_broken_off_and_retried_count_against_the_listing_budget() {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
        const CUT: usize = 1 << 20;
        let attempts = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (tries, bytes) = (Arc::clone(&attempts), Arc::clone(&sent));
        let (base, _) = serve(move |path| {
            let page: usize = path.rsplit("p=").next().and_then(|p| p.parse().ok()).unwrap_or(0);
            // Of every five attempts, four are broken off after 1 MiB of a 2 MiB body.
            if tries.fetch_add(1, SeqCst) % 5 != 4 {
                bytes.fetch_add(CUT as u64, SeqCst);
                let head =
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", 2 * CUT);
                let mut body = br#"{"name":"r","tags":["#.to_vec();
                body.resize(CUT, b' ');
                return (head, body);
            }
            let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            if page < 20 {
                head += &format!("Link: </v2/r/tags/list?p={}>; rel=\"next\"\r\n", page + 1);
            }
            (head, format!(r#"{{"name":"r","tags":["t{page}"]}}"#).into_bytes())
        });
        let options = Options {
            retry: RetryPolicy {
                retries: 4,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            ..Options::default()
        };
        let client = HttpClient::new(base, options).expect("client");
        let result = client.tags("r");
        let sent = sent.load(SeqCst);
        let shown = result.as_ref().map(Vec::len).map_err(|e| e.to_string().chars().take(200).collect::<String>());
        assert!(matches!(result, Err(Error::TooLarge(_))), "{shown:?} after {} MiB sent", sent >> 20);
        assert!(sent <= MAX_LIST_BODY + 2 * CUT as u64, "{} MiB sent for a 32 MiB budget", sent >> 20);
    }

    /// Each listing holds up to 16 MiB of names (and its parser up to a page's longest string):
    /// listings of many repositories at once must not multiply that. At most
    /// [`LISTINGS_AT_ONCE`] are fetched at a time; the others wait their turn.
    #[test]
    fn listings_are_fetched_a_few_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (now, peak) = (Arc::clone(&in_flight), Arc::clone(&most));
        let (base, _) = serve(move |path| {
            let n = now.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(n, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(150));
            now.fetch_sub(1, SeqCst);
            let repo = path.split('/').nth(2).unwrap_or("r").to_string();
            let page: usize = path.rsplit("p=").next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            if page < 2 {
                head += &format!("Link: </v2/{repo}/tags/list?p={}>; rel=\"next\"\r\n", page + 1);
            }
            (head, format!(r#"{{"name":"{repo}","tags":["t{page}"]}}"#).into_bytes())
        });
        let client = Arc::new(HttpClient::new(base, Options::default()).expect("client"));
        let listers: Vec<_> = (0..8)
            .map(|i| {
                let client = Arc::clone(&client);
                std::thread::spawn(move || client.tags(&format!("r{i}")))
            })
            .collect();
        for l in listers {
            assert_eq!(l.join().expect("lister").expect("tags"), ["t0", "t1", "t2"]);
        }
        let most = most.load(SeqCst);
        assert!(most <= LISTINGS_AT_ONCE, "{most} listings fetched at once (at most {LISTINGS_AT_ONCE})");
    }

    /// The URLs a listing follows cost bytes too: a registry whose `Link` headers name huge URLs
    /// (up to 64 KiB, the most a URI may hold) must hit the listing's byte budget, not make regfs
    /// hold 10,000 of them (600 MiB).
    #[test]
    fn link_urls_count_against_the_listing_budget() {
        const PAD: usize = 60 << 10;
        const PAGES: usize = 1200;
        let (base, served) = serve(|path| {
            let page: usize = path.rsplit("p=").next().and_then(|p| p.split('&').next()?.parse().ok()).unwrap_or(0);
            let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            if page < PAGES {
                head += &format!("Link: </v2/r/tags/list?p={}&pad={}>; rel=\"next\"\r\n", page + 1, "a".repeat(PAD));
            }
            (head, br#"{"name":"r","tags":[]}"#.to_vec())
        });
        let client = HttpClient::new(base, Options::default()).expect("client");
        let result = client.tags("r");
        let pages = served.load(std::sync::atomic::Ordering::SeqCst);
        let shown = result.as_ref().map(Vec::len).map_err(|e| e.to_string().chars().take(200).collect::<String>());
        assert!(matches!(result, Err(Error::TooLarge(_))), "{shown:?} after {pages} pages");
        let budget = (MAX_LIST_BODY as usize).div_ceil(PAD);
        assert!(pages <= budget + 1, "{pages} pages of {PAD}-byte links followed (budget {budget})");
    }

    #[test]
    fn list_pages_are_parsed_name_by_name() {
        assert_eq!(
            names(r#"{"name":"a","tags":["v1","v\u0032"],"x":{"tags":[1]}}"#).expect("a valid page"),
            ["v1", "v2"]
        );
        assert_eq!(names(r#"{"name":"a","tags":null}"#).expect("a valid page"), Vec::<String>::new());
        assert_eq!(names(r#"{"name":"a"}"#).expect("a valid page"), Vec::<String>::new());
        assert!(names(r#"{"tags":[1]}"#).is_err());
        assert!(names(r#"{"tags":["a"]} trailing"#).is_err());
        assert!(names(r#"["a"]"#).is_err());
        assert!(names(r#"{"tags":["a""#).is_err());
        // `keep` saying no stops the parse.
        let mut seen = 0;
        let r = parse_list(&br#"{"tags":["a","b","c"]}"#[..], "tags", &mut |_: &str| {
            seen += 1;
            seen < 2
        });
        assert!(r.is_err());
        assert_eq!(seen, 2);
    }

    /// A `Link` is followed only on the registry's own origin, and only to a page not read yet:
    /// a link elsewhere, or back, ends the listing in an error, and the other origin is never
    /// asked (it would get the request, and any credentials, of a listing it was never part of).
    #[test]
    fn a_link_to_another_origin_or_back_is_an_error_and_the_other_origin_is_never_asked() {
        use std::sync::atomic::Ordering::SeqCst;
        let (elsewhere, asked_elsewhere) = serve(|_| {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            (head, br#"{"name":"r","tags":["planted"]}"#.to_vec())
        });
        let other = elsewhere.join("/v2/r/tags/list?p=1").expect("url").to_string();
        let (base, _) = serve(move |path| {
            let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n".to_string();
            let next = match path {
                // repository "away": its first page links to another origin.
                "/v2/away/tags/list" => other.clone(),
                // repository "round": page 1 links to 2, and 2 back to 1.
                "/v2/round/tags/list" => "/v2/round/tags/list?p=2".to_string(),
                _ => "/v2/round/tags/list".to_string(),
            };
            head += &format!("Link: <{next}>; rel=\"next\"\r\n");
            (head, br#"{"name":"r","tags":["t"]}"#.to_vec())
        });
        let client = HttpClient::new(base, Options::default()).expect("client");
        match client.tags("away") {
            Err(Error::Protocol(e)) => assert!(e.contains("another origin"), "{e}"),
            other => panic!("a Link to another origin gave {other:?}"),
        }
        assert_eq!(asked_elsewhere.load(SeqCst), 0, "the other origin was asked");
        match client.tags("round") {
            Err(Error::Protocol(e)) => assert!(e.contains("loop back"), "{e}"),
            other => panic!("a Link back to a page already read gave {other:?}"),
        }
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

    /// A registry without the referrers API answers 404: that is an answer (`None`, the store
    /// then reads the tag schema), asked once, not retried and not an error.
    #[test]
    fn referrers_404_means_no_api() {
        let (base, served) = serve(|path| {
            let status = if path.contains("/referrers/") { "404 Not Found" } else { "500 Internal Server Error" };
            (format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"), br#"{"errors":[]}"#.to_vec())
        });
        let client = HttpClient::new(base, Options::default()).expect("client");
        let subject = Digest::of(crate::digest::Algorithm::Sha256, b"subject");
        assert_eq!(client.referrers("a/b", &subject).expect("an answer"), None);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(client.stats().referrers_pages, 1);
    }

    /// The API's answer is read whole: every page its `Link` headers name, on the registry's
    /// origin only, never one already read; no `artifactType` filter is sent (one unfiltered
    /// answer serves every type directory).
    #[test]
    fn referrers_pages_are_followed_unfiltered_on_the_registry_s_origin() {
        use std::sync::Mutex;
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&asked);
        let entry = |c: char, t: &str| {
            format!(
                r#"{{"mediaType":"{}","digest":"sha256:{}","size":3,"artifactType":"{t}"}}"#,
                media::OCI_MANIFEST,
                c.to_string().repeat(64)
            )
        };
        let pages = [entry('a', "application/spdx+json"), entry('b', "application/vnd.cncf.notary.signature")];
        let (base, _) = serve(move |path| {
            sync::lock(&log).push(path.to_string());
            let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: {}\r\n", media::OCI_INDEX);
            let (body, next) = match path.split_once('?').map_or("", |(_, q)| q) {
                "" if path.starts_with("/v2/loop/") => (pages[0].clone(), Some(path.to_string())),
                "" if path.starts_with("/v2/away/") => (pages[0].clone(), Some("http://localhost:1/x".to_string())),
                "" => (pages[0].clone(), Some(format!("{path}?page=2"))),
                _ => (pages[1].clone(), None),
            };
            if let Some(n) = next {
                head += &format!("Link: <{n}>; rel=\"next\"\r\n");
            }
            (head, format!(r#"{{"schemaVersion":2,"manifests":[{body}]}}"#).into_bytes())
        });
        let client = HttpClient::new(base, Options::default()).expect("client");
        let subject = Digest::of(crate::digest::Algorithm::Sha256, b"subject");
        let list = client.referrers("a/b", &subject).expect("an answer").expect("the API");
        let types: Vec<_> = list.iter().map(|r| r.artifact_type.clone().unwrap_or_default()).collect();
        assert_eq!(types, ["application/spdx+json", "application/vnd.cncf.notary.signature"]);
        let first = format!("/v2/a/b/referrers/{subject}");
        assert_eq!(*sync::lock(&asked), [first.clone(), format!("{first}?page=2")]);
        assert_eq!(client.stats().referrers_pages, 2);
        match client.referrers("loop", &subject) {
            Err(Error::Protocol(e)) => assert!(e.contains("loop back"), "{e}"),
            other => panic!("a page linking to itself gave {other:?}"),
        }
        match client.referrers("away", &subject) {
            Err(Error::Protocol(e)) => assert!(e.contains("another origin"), "{e}"),
            other => panic!("a Link to another origin gave {other:?}"),
        }
    }

    /// A registry whose referrers pages go on and on (each under the 4 MiB a page may have)
    /// must hit the listing's byte budget, not make regfs read page after page: all of them
    /// together may bring at most [`MAX_LIST_BODY`] bytes, however many pages are allowed.
    #[test]
    fn referrers_pages_count_against_the_listing_budget() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        const PAGE: usize = 3 << 20;
        let sent = Arc::new(AtomicU64::new(0));
        let bytes = Arc::clone(&sent);
        let (base, _) = serve(move |path| {
            let page: usize = path.rsplit("p=").next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let bare = path.split('?').next().unwrap_or(path);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nLink: <{bare}?p={}>; rel=\"next\"\r\n",
                media::OCI_INDEX,
                page + 1
            );
            let body = format!(r#"{{"schemaVersion":2,"manifests":[],"pad":"{}"}}"#, "x".repeat(PAGE));
            bytes.fetch_add(body.len() as u64, SeqCst);
            (head, body.into_bytes())
        });
        let client = HttpClient::new(base, Options::default()).expect("client").with_max_pages(40);
        let subject = Digest::of(crate::digest::Algorithm::Sha256, b"subject");
        let result = client.referrers("r", &subject);
        let sent = sent.load(SeqCst);
        assert!(matches!(result, Err(Error::TooLarge(_))), "{result:?} after {} MiB", sent >> 20);
        assert!(sent <= MAX_LIST_BODY + 2 * PAGE as u64, "{} MiB sent for a 32 MiB budget", sent >> 20);
    }
}
