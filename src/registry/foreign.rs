//! Foreign layers: blobs a manifest says may be fetched from `urls` (non-distributable layers),
//! used only when the registry does not have them, under the seed's rules.
//!
//! # The rules ([`UrlRules`]), as the reference registry's
//! Ported from distribution's `ocimanifesthandler.go` (`verifyManifest`), the design seed, which
//! applies them to the `urls` of a pushed manifest's layers: every URL must parse, have the
//! scheme `http` or `https`, no fragment, match an allow pattern and no deny pattern. **Any** bad
//! URL refuses the descriptor: then none of its URLs is used, not even the good ones. Patterns
//! are regular expressions matched anywhere in the URL as written (Go's `MatchString` is
//! unanchored; the `regex` crate's syntax is RE2's, as Go's); several patterns are alternatives,
//! as the registry joins `validation.manifests.urls.allow` with `|`. One difference, on purpose:
//! the registry allows any URL when no allow pattern is configured; regfs allows none
//! (`--layer-url-allow` is required), since following a URL a manifest names sends a request
//! wherever the image's author chose. The fragment rule is Go's: `http://h/p#` (an empty
//! fragment) passes, as there; a fragment is never sent anyway.
//!
//! # Fetching ([`Foreign`])
//! Only after the registry answered 404 for the blob (`store/cache.rs`, `BlobCache::open_foreign`),
//! from each allowed URL in order until one gives the blob. Through a client of its own that
//! never sends an `Authorization` header (not the registry's credentials, not its tokens, not
//! a `user:password@` written in the URL, which is removed), even to the registry's own host.
//! Otherwise as a registry blob: the same `--timeout`, `--retries` (429, 5xx, transport faults),
//! progress rule ([`Paced`]), redirect cap ([`MAX_REDIRECTS`], http and https only), `Range`
//! resume, size bound and digest check (`store/download.rs`). URLs are logged and named in
//! errors without their query ([`shown`]).
//!
//! A URL is parsed with the WHATWG parser (`url` crate) rather than Go's `net/url`: the rare URL
//! Go accepts and it does not (`http://` with no host) is a bad URL here, so refused; a URL it
//! can parse is fetched as it serialises it.

use std::time::{Duration, Instant};

use regex::RegexSet;
use reqwest::blocking::Client as Reqwest;
use reqwest::header::{LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use super::BlobReply;
use super::http::{Options, Paced, Progress, RetryPolicy, error_chain, is_certificate_error, reqwest_client};
use crate::error::{Error, Result};
use crate::limits::MAX_REDIRECTS;

/// Which layer URLs may be used: `--layer-url-allow` / `--layer-url-deny`. `Default` allows none.
#[derive(Debug, Clone, Default)]
pub struct UrlRules {
    allow: Option<RegexSet>,
    deny: Option<RegexSet>,
}

impl UrlRules {
    /// The rules of `allow` and `deny` patterns; a pattern that does not compile is a
    /// [`Error::BadArgument`] naming the option and the pattern.
    pub fn new(allow: &[String], deny: &[String]) -> Result<UrlRules> {
        Ok(UrlRules { allow: set("--layer-url-allow", allow)?, deny: set("--layer-url-deny", deny)? })
    }

    /// Whether any URL can pass (an allow pattern was given).
    pub fn allows_any(&self) -> bool {
        self.allow.is_some()
    }

    /// Whether a `--layer-url-deny` pattern matches `url` (also checked on each redirect).
    pub fn denies(&self, url: &str) -> bool {
        self.deny.as_ref().is_some_and(|d| d.is_match(url))
    }

    /// The URLs to fetch from, in order, if every one of `urls` passes; else why not (naming
    /// the first bad URL, without its query). An empty list passes and gives nothing.
    pub fn check(&self, urls: &[String]) -> std::result::Result<Vec<Url>, String> {
        let mut out = Vec::with_capacity(urls.len());
        for u in urls {
            let parsed = Url::parse(u).map_err(|e| format!("{}: not a URL ({e})", shown_raw(u)))?;
            let refuse = |why: &str| Err(format!("{}: {why}", shown(&parsed)));
            if !matches!(parsed.scheme(), "http" | "https") {
                return refuse("not http or https");
            }
            if parsed.fragment().is_some_and(|f| !f.is_empty()) {
                return refuse("has a fragment");
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                // Never sent (`anonymous`), and the classic way past a host-prefix pattern.
                return refuse("has a user@ before its host");
            }
            // The patterns must hold for the URL as written and as it is fetched (the parser
            // drops tabs and newlines and resolves `..`, which the text as written hides).
            let fetched = parsed.as_str();
            match &self.allow {
                None => return refuse("no --layer-url-allow pattern given"),
                Some(allow) if !(allow.is_match(u) && allow.is_match(fetched)) => {
                    return refuse("matches no --layer-url-allow pattern");
                }
                Some(_) => {}
            }
            if self.denies(u) || self.denies(fetched) {
                return refuse("matches a --layer-url-deny pattern");
            }
            out.push(parsed);
        }
        Ok(out)
    }
}

/// The rules, and the client foreign layers are fetched with.
pub struct Foreign {
    rules: UrlRules,
    http: Reqwest,
    retry: RetryPolicy,
    progress: Progress,
    timeout: Duration,
}

/// What one try gave: a body, or an error and whether another try may help.
enum Tried {
    Body(BlobReply),
    Again(Error, Option<Duration>),
}

impl Foreign {
    /// `options` are the registry's transport options: their timeouts, retries, progress rule
    /// and CA certificates are used; their credentials never are.
    pub fn new(rules: UrlRules, options: &Options) -> Result<Foreign> {
        let anonymous = Options { login: None, credentials: None, ..options.clone() };
        Ok(Foreign {
            rules,
            http: reqwest_client(&anonymous)?,
            retry: options.retry.clone(),
            progress: options.progress,
            timeout: options.timeout,
        })
    }

    pub fn rules(&self) -> &UrlRules {
        &self.rules
    }

    /// The body of `url` from `offset` on (`Range` when it is not 0), retried as a registry
    /// request is; the reply's `url` is [`shown`].
    pub fn get(&self, url: &Url, offset: u64) -> Result<BlobReply> {
        let mut attempt = 0;
        loop {
            let (err, asked) = match self.try_once(url, offset)? {
                Tried::Body(reply) => return Ok(reply),
                Tried::Again(err, asked) => (err, asked),
            };
            if attempt >= self.retry.retries {
                return Err(err);
            }
            let backoff = self.retry.base_delay.saturating_mul(1 << attempt.min(16));
            let delay = asked.unwrap_or(backoff).min(self.retry.max_delay);
            log::info!("{err}; retry {} of {} in {delay:?}", attempt + 1, self.retry.retries);
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// One try: redirects followed by hand, within [`MAX_REDIRECTS`] hops and `timeout`.
    fn try_once(&self, url: &Url, offset: u64) -> Result<Tried> {
        let mut url = anonymous(url);
        let started = Instant::now();
        let mut hops = 0;
        loop {
            let at = format!("GET {}", shown(&url));
            let mut req = self.http.get(url.clone());
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) if is_certificate_error(&e) => {
                    return Err(Error::Denied(format!("{at}: TLS: {}", error_chain(&e.without_url()))));
                }
                Err(e) => {
                    return Ok(Tried::Again(
                        Error::Unavailable(format!("{at}: {}", error_chain(&e.without_url()))),
                        None,
                    ));
                }
            };
            let status = resp.status();
            if status.is_redirection() {
                if let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    hops += 1;
                    if hops > MAX_REDIRECTS {
                        return Err(Error::Protocol(format!("{at}: more than {MAX_REDIRECTS} redirects")));
                    }
                    if started.elapsed() >= self.timeout {
                        let why = format!("{at}: {hops} redirects took longer than {:?}", self.timeout);
                        return Ok(Tried::Again(Error::Unavailable(why), None));
                    }
                    let next = url.join(location).map_err(|_| Error::Protocol(format!("{at}: bad redirect")))?;
                    if !matches!(next.scheme(), "http" | "https") {
                        return Err(Error::Protocol(format!("{at}: redirect to a {} URL", next.scheme())));
                    }
                    if self.rules.denies(next.as_str()) {
                        let why =
                            format!("{at}: redirect to {}, which a --layer-url-deny pattern matches", shown(&next));
                        return Err(Error::Denied(why));
                    }
                    log::debug!("{at} redirected to {}", shown(&next));
                    url = anonymous(&next);
                    continue;
                }
            }
            return match status.as_u16() {
                200..=299 => {
                    let ranged = status == StatusCode::PARTIAL_CONTENT;
                    let what = shown(&url);
                    let reader = Paced::new(resp, self.progress, what.clone());
                    Ok(Tried::Body(BlobReply { url: what, reader: Box::new(reader), ranged }))
                }
                _ => {
                    let (e, asked) = super::http::failure(&resp, at)?;
                    Ok(Tried::Again(e, asked))
                }
            };
        }
    }
}

/// `url` without a `user:password@`, which reqwest would send as Basic credentials.
fn anonymous(url: &Url) -> Url {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u
}

/// The hint logged for a layer whose URLs are not allowed: the pattern that would allow its first
/// URL's origin.
pub fn allow_hint(urls: &[String]) -> Option<String> {
    let u = Url::parse(urls.first()?).ok()?;
    let origin = u.origin();
    origin
        .is_tuple()
        .then(|| format!("--layer-url-allow '^{}'", regex::escape(&format!("{}/", origin.ascii_serialization()))))
}

fn set(option: &str, patterns: &[String]) -> Result<Option<RegexSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    for p in patterns {
        regex::Regex::new(p)
            .map_err(|e| Error::BadArgument(format!("{option} {p:?}: not a regular expression: {e}")))?;
    }
    RegexSet::new(patterns)
        .map(Some)
        .map_err(|e| Error::BadArgument(format!("{option}: the patterns do not compile together: {e}")))
}

/// A URL as it may be logged: without its query or fragment (a query often carries a signature
/// that works as a credential).
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    // Not possible for URLs without a host (`file:`), which have no credentials to hide.
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// [`shown`] for a string that did not parse: cut at the first `?` or `#`, and bounded.
fn shown_raw(u: &str) -> String {
    let cut = &u[..u.find(['?', '#']).unwrap_or(u.len())];
    let mut end = cut.len().min(200);
    while !cut.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &cut[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> UrlRules {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        UrlRules::new(&s(allow), &s(deny)).expect("the seed's patterns compile")
    }

    /// The seed's table (distribution's `TestVerifyOCIManifestNonDistributableLayer`, allow
    /// `^https?://foo`, deny `^https?://foo/nope`), inputs verbatim: `Ok` where the seed's
    /// registry accepts the descriptor's URLs, `Err` where it answers `errInvalidURL`. Its first
    /// case (no URLs, blob unknown) is a descriptor with nothing to fetch from; its second (a
    /// distributable layer with `http://foo/bar`) is accepted like any other.
    #[test]
    fn urls_follow_the_seed_rules() {
        let r = rules(&["^https?://foo"], &["^https?://foo/nope"]);
        let cases: [(&[&str], bool); 11] = [
            (&[], true),
            (&["http://foo/bar"], true),
            (&["file:///local/file"], false),
            (&["http://foo/bar#baz"], false),
            (&[""], false),
            (&["https://foo/bar", ""], false),
            (&["", "https://foo/bar"], false),
            (&["http://nope/bar"], false),
            (&["http://foo/nope"], false),
            (&["http://foo/bar"], true),
            (&["https://foo/bar"], true),
        ];
        for (urls, valid) in cases {
            let urls: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
            let got = r.check(&urls);
            assert_eq!(got.is_ok(), valid, "{urls:?}: {got:?}");
            if let Ok(ok) = got {
                // What is fetched is every URL given, in order.
                assert_eq!(ok.iter().map(|u| u.as_str()).collect::<Vec<_>>(), urls, "{urls:?}");
            }
        }
        // Any bad URL refuses all of them, wherever it is, and the refusal names it.
        let err = r.check(&["https://foo/a".into(), "ftp://foo/b".into()]).expect_err("ftp is refused");
        assert!(err.contains("ftp://foo/b"), "{err}");
        // Patterns match anywhere (Go's MatchString is unanchored), and any of several does.
        let r = rules(&["example\\.com/", "^http://mirror/"], &["secret"]);
        assert!(r.check(&["https://cdn.example.com/x".into()]).is_ok());
        assert!(r.check(&["http://mirror/x".into()]).is_ok());
        assert!(r.check(&["http://other/x".into()]).is_err());
        assert!(r.check(&["https://cdn.example.com/secret".into()]).is_err());
    }

    /// regfs's default is stricter than the seed's registry (which allows any URL when no
    /// pattern is configured): without `--layer-url-allow`, no URL is used.
    #[test]
    fn without_an_allow_pattern_no_url_is_used() {
        let r = UrlRules::default();
        assert!(!r.allows_any());
        let err = r.check(&["https://foo/bar".into()]).expect_err("nothing is allowed by default");
        assert!(err.contains("--layer-url-allow"), "{err}");
        assert!(rules(&[], &["x"]).check(&["https://foo/bar".into()]).is_err());
        assert!(rules(&["."], &[]).allows_any());
    }

    #[test]
    fn a_bad_pattern_is_refused_naming_it() {
        let err = UrlRules::new(&["^https://ok/".into(), "(unclosed".into()], &[]).expect_err("bad regex");
        let msg = err.tell();
        assert!(msg.contains("--layer-url-allow") && msg.contains("(unclosed"), "{msg}");
        let err = UrlRules::new(&[], &["[z-a]".into()]).expect_err("bad regex");
        assert!(err.tell().contains("--layer-url-deny") && err.tell().contains("[z-a]"), "{}", err.tell());
    }

    /// The hint for a refused layer allows its first URL's origin, escaped, anchored.
    #[test]
    fn the_hint_allows_the_first_urls_origin() {
        let hint = allow_hint(&["https://cdn.example.com:8443/a/b?sig=x".into(), "http://other/".into()]);
        assert_eq!(hint.as_deref(), Some(r"--layer-url-allow '^https://cdn\.example\.com:8443/'"));
        let pattern = r"^https://cdn\.example\.com:8443/";
        let rules = rules(&[pattern], &[]);
        assert!(rules.check(&["https://cdn.example.com:8443/a/b?sig=x".into()]).is_ok());
        assert!(rules.check(&["https://cdnXexample.com:8443/a".into()]).is_err());
        assert_eq!(allow_hint(&["not a url".into()]), None);
        assert_eq!(allow_hint(&[]), None);
    }

    /// A URL is logged without its query (often a signature that works as a credential).
    #[test]
    fn urls_are_shown_without_their_query() {
        let u = Url::parse("https://cdn.example.com/layer?X-Amz-Signature=secret").expect("test URL");
        assert_eq!(shown(&u), "https://cdn.example.com/layer");
        let u = Url::parse("http://user:pw@h:8/p#f").expect("test URL");
        assert_eq!(shown(&u), "http://h:8/p");
        let err = UrlRules::default().check(&["file:///local/file".into()]).expect_err("file: is refused");
        assert!(err.contains("file:///local/file"), "{err}");
    }
}
