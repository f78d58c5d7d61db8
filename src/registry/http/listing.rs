//! Listings: the pages of a tag list, of the catalog and of a referrers answer, each listing
//! within its budgets.
//!
//! # Rules
//! - A listing follows `Link: <…>; rel="next"` only on the registry's own origin (a `Link`
//!   elsewhere is an error, and the other origin is never asked) and never to a page it has read
//!   (a loop is an error); at most the client's `max_pages` pages ([`MAX_PAGES`](crate::limits::MAX_PAGES) by default).
//! - Bytes received count against [`MAX_LIST_BODY`] at every attempt at every page, whole or
//!   broken off (a page retried costs each time), and so does every `Link` URL followed, as it is
//!   held to spot loops and sent.
//! - A tag list or catalog page is parsed as it streams in, one name at a time ([`parse_list`]);
//!   a name is checked before it is kept, and an invalid one skipped (logged up to
//!   [`LOGGED_INVALID`] times, then counted). The names kept, at [`LIST_ENTRY_OVERHEAD`] bytes
//!   each besides their own, stay within [`MAX_LIST_HELD`]. A page's names count only once the
//!   page is whole.
//! - A referrers page is read whole, at most a manifest's size ([`MAX_MANIFEST_SIZE`]) and what
//!   is left of [`MAX_LIST_BODY`], and handed to `manifest::referrers`, which bounds its entries;
//!   a 404 to the first page means the registry has no referrers API (`None`), not an error.
//! - At most [`crate::limits::LISTINGS_AT_ONCE`] listings are fetched at a time, so the memory each may hold is
//!   not multiplied by the repositories listed at once; the others wait their turn (a
//!   [`crate::sync::Semaphore`]).

use std::io::Read;

use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, LINK};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::body::{Metered, Paced, Progress, read_limited};
use super::{HttpClient, repo_scope};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{LIST_ENTRY_OVERHEAD, LOGGED_INVALID, MAX_LIST_BODY, MAX_LIST_HELD, MAX_MANIFEST_SIZE};
use crate::manifest::referrers::{self, Referrer};
use crate::media;
use crate::registry::link;

use crate::telemetry::Counter;

impl HttpClient {
    /// GET every page of a list (tags or catalog), following `Link: <…>; rel="next"`, and return
    /// the names in `field` that pass `check`. Each page is parsed as it streams in, one name at
    /// a time, and a name is checked before it is kept: what the listing holds is its valid names
    /// and nothing else, within [`MAX_LIST_BODY`] bytes received and [`MAX_LIST_HELD`] bytes held.
    pub(super) fn pages(
        &self,
        first: Url,
        scope: &str,
        counter: &Counter,
        field: &'static str,
        check: fn(&str) -> Result<()>,
    ) -> Result<Vec<String>> {
        // Memory is bounded per listing: a few at a time keep it bounded in all.
        let _turn = self.listings.acquire();
        let mut url = first.clone();
        let mut seen = std::collections::HashSet::new();
        let mut budget = ListBudget::new(first.clone());
        let mut all = Vec::new();
        for _ in 0..self.max_pages {
            if !seen.insert(url.clone()) {
                return Err(Error::Protocol(format!("GET {url}: pages loop back")));
            }
            counter.bump();
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

    /// Every page of the referrers list, as [`ListBudget`] bounds a listing: each page at most a
    /// manifest's size and all of them (and their `Link` URLs) within [`MAX_LIST_BODY`], on the
    /// registry's origin only, never a page twice; entries bounded by `manifest::referrers`.
    /// A 404 to the first page means the registry has no referrers API.
    pub(super) fn referrer_pages(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        let first = self.url(&format!("/v2/{repo}/referrers/{digest}"))?;
        let scope = repo_scope(repo);
        let accept = [(ACCEPT, media::OCI_INDEX.to_string())];
        // Memory is bounded per listing: a few at a time keep it bounded in all.
        let _turn = self.listings.acquire();
        let mut collect = referrers::Collect::new(first.as_str());
        let mut url = first.clone();
        let mut seen = std::collections::HashSet::new();
        let mut received: u64 = 0;
        for page in 0..self.max_pages {
            if !seen.insert(url.clone()) {
                return Err(Error::Protocol(format!("GET {url}: pages loop back")));
            }
            self.counters.referrers_pages.bump();
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

#[cfg(test)]
mod tests {
    use super::super::tests::serve;
    use super::super::{HttpClient, Options, RetryPolicy};
    use super::*;
    use crate::limits::LISTINGS_AT_ONCE;
    use crate::registry::Client;
    use crate::sync;
    use std::sync::Arc;
    use std::time::Duration;

    fn names(body: &str) -> serde_json::Result<Vec<String>> {
        let mut out = Vec::new();
        parse_list(body.as_bytes(), "tags", &mut |n: &str| {
            out.push(n.to_string());
            true
        })?;
        Ok(out)
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
