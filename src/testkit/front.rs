//! A fault-injecting HTTP front for the registry, in the project's own code.
//!
//! It sits between regfs and a real registry on loopback and, as told through [`Behavior`]:
//! pages tag lists and the catalog in small pages (`Link` headers), hides the catalog (as Docker
//! Hub does), demands bearer tokens that expire, redirects blob GETs to another host name (as
//! registries redirect to object storage), answers with injected statuses (429 with
//! `Retry-After`, 500, 503), stalls, cuts bodies off half way, trickles them (a few bytes at a
//! time, a pause between), throttles each connection to a rate, ignores `Range`, serves altered manifests, and sends `Link` headers
//! no registry should (another origin, a loop, a chain too long to follow). It records every
//! request so tests can assert on what regfs sent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync;

#[derive(Debug, Clone)]
pub struct Fault {
    /// Applies to requests whose path contains this.
    pub path_contains: String,
    /// HTTP status to answer with; [`CUT_OFF`] cuts the real body off half way; [`STALL`]
    /// passes the request through after `delay`; [`TRICKLE`] sends the real body `chunk` bytes
    /// at a time, `delay` between chunks.
    pub status: u16,
    pub retry_after: Option<u64>,
    /// How many matching requests it applies to.
    pub times: usize,
    /// Wait this long before answering (a stall).
    pub delay: Duration,
    /// Bytes per write, for [`TRICKLE`].
    pub chunk: usize,
}

impl Fault {
    pub fn status(path_contains: &str, status: u16, times: usize) -> Fault {
        Fault { path_contains: path_contains.into(), status, retry_after: None, times, delay: Duration::ZERO, chunk: 1 }
    }

    /// The real body, `chunk` bytes every `every`, for `times` matching requests.
    pub fn trickle(path_contains: &str, chunk: usize, every: Duration, times: usize) -> Fault {
        Fault { delay: every, chunk: chunk.max(1), ..Fault::status(path_contains, TRICKLE, times) }
    }
}

pub const CUT_OFF: u16 = 0;
/// Bytes of one page of a [`Behavior::tag_floods`].
pub const FLOOD_PAGE: u64 = 1 << 20;
pub const STALL: u16 = 200;
pub const TRICKLE: u16 = 1;

#[derive(Debug, Default, Clone)]
pub struct Bearer {
    /// Seconds a token is good for (`expires_in`).
    pub lifetime: u64,
    /// Basic credentials the token endpoint demands, if any.
    pub basic: Option<(String, String)>,
}

/// What `Docker-Content-Digest` says on a manifest the front serves altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestHeader {
    /// Not sent at all.
    Omitted,
    /// The sha256 of the bytes actually served (a mirror that computes it): consistent, and wrong.
    OfServedBytes,
}

/// `Link` headers on tag lists that a registry must not be followed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLink {
    /// The first page links to the rest of the list on another origin (`localhost` for
    /// `127.0.0.1`: the same server under another name).
    OtherOrigin,
    /// The second page links back to the first.
    LoopBack,
    /// A chain of this many pages, each linking to a URL not seen before (as long as a client
    /// should never follow; a client without a cap would follow it to the end).
    Chain(u64),
}

#[derive(Debug, Default, Clone)]
pub struct Behavior {
    pub tag_page: Option<usize>,
    pub catalog_page: Option<usize>,
    pub no_catalog: bool,
    /// The catalog lists only these repositories (as a pull-through cache lists what it has
    /// cached, or a registry what the caller may see), in one page; the rest are served by name.
    pub catalog_only: Option<Vec<String>>,
    pub bearer: Option<Bearer>,
    /// The token endpoint wants this refresh token (an identity token, as `docker login` keeps
    /// for some registries), POSTed as docker does (`grant_type=refresh_token`), and refuses GETs;
    /// each reply carries a new refresh token, good from then on as well.
    pub refresh_token: Option<String>,
    pub redirect_blobs: bool,
    pub ignore_range: bool,
    /// The upstream is unreachable: every request to /v2/ gets 503.
    pub down: bool,
    /// Added before every answer, as a registry that far away would be.
    pub latency: Duration,
    /// Bodies are sent at most this many bytes a second on each connection (each request has
    /// its own: the front closes every connection after one answer), as a CDN or proxy that
    /// throttles each connection would; `None`, as fast as loopback goes.
    pub rate: Option<u64>,
    /// A hostile registry: the tag list of each of these repositories is a flood of so many
    /// bytes of generated tag names, served in pages of about [`FLOOD_PAGE`] bytes, each made when
    /// asked for (the front never holds the flood). A few names per page break the grammar.
    pub tag_floods: Vec<(String, u64)>,
    /// The same for the catalog: this many bytes of generated repository names.
    pub catalog_flood: Option<u64>,
    /// Serve every manifest GET by digest altered (a space after its opening brace: the same JSON,
    /// other bytes), as a registry or mirror whose storage was changed, with this header.
    pub alter_manifests: Option<ManifestHeader>,
    /// Tag lists are served as made-up pages (tags `p0`, `p1`, …) linked like this.
    pub bad_links: Option<BadLink>,
    pub faults: Vec<Fault>,
    /// Answer the OCI 1.1 referrers API (`GET /v2/<r>/referrers/<d>`, which the reference
    /// registry 2.8 lacks) from the upstream's referrers tag schema index (`sha256-<hex>`), or
    /// with an empty index where there is none, as a registry with the API would.
    pub referrers_api: bool,
    /// Plain files served at these paths (the query ignored), with `Range: bytes=N-` honoured
    /// (206) unless `ignore_range`, and without any authentication: a foreign layer's host, or
    /// documents the registry would not take. Requests are recorded like any other.
    pub files: HashMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub host: String,
    pub authorization: Option<String>,
    pub range: Option<String>,
    pub status: u16,
    /// The request's body (token POSTs), at most 64 KiB of it.
    pub body: String,
}

#[derive(Default)]
pub struct State {
    pub behavior: Behavior,
    pub requests: Vec<Recorded>,
    tokens: HashMap<String, Instant>,
    /// Refresh tokens the token endpoint gave out.
    refresh_tokens: Vec<String>,
    /// Answers being written now, and the most there were at once.
    sending: usize,
    most_sending: usize,
}

pub struct Front {
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

impl Front {
    pub fn start(upstream: &str, behavior: Behavior) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State { behavior, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.trim_end_matches('/').to_string();
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let seq = Arc::new(AtomicU64::new(0));
        {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, http, upstream, seq) =
                        (Arc::clone(&state), http.clone(), upstream.clone(), Arc::clone(&seq));
                    std::thread::spawn(move || serve(conn, &state, &http, &upstream, port, &seq));
                }
            });
        }
        Front { url: format!("http://127.0.0.1:{port}"), port, state, stop }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    pub fn set(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.state().behavior);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The most answers (to /v2/ and tokens) the front was writing at once so far: more than one
    /// when a client downloads over several connections at once.
    pub fn most_at_once(&self) -> usize {
        self.state().most_sending
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    r.take(length.min(64 << 10)).read_to_end(&mut body).ok()?;
    Some(Request { method, path, headers, body })
}

/// Write a response; `cut` sends only the first half of the body, then holds the connection for
/// `hold` before closing it; `trickle` sends the body `(bytes, every)`; `rate` paces the body at
/// that many bytes a second.
fn write(
    mut stream: &TcpStream,
    resp: &Response,
    head: bool,
    cut: bool,
    hold: Duration,
    trickle: Option<(usize, Duration)>,
    rate: Option<u64>,
) {
    let reason = match resp.status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", resp.status);
    let mut has_len = false;
    for (k, v) in &resp.headers {
        has_len |= k.eq_ignore_ascii_case("content-length");
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes());
    if let (false, Some((chunk, every))) = (head, trickle) {
        for piece in resp.body.chunks(chunk) {
            if stream.write_all(piece).and_then(|()| stream.flush()).is_err() {
                break; // the client gave up
            }
            std::thread::sleep(every);
        }
    } else if !head {
        let body = if cut { &resp.body[..resp.body.len() / 2] } else { &resp.body[..] };
        match rate.filter(|r| *r > 0) {
            None => {
                let _ = stream.write_all(body);
            }
            Some(rate) => {
                // In slices of about 10 ms each, never ahead of `rate` since the first byte.
                let started = Instant::now();
                let mut sent = 0u64;
                for piece in body.chunks((rate / 100).max(1) as usize) {
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    if stream.write_all(piece).is_err() {
                        break; // the client gave up
                    }
                    sent += piece.len() as u64;
                }
            }
        }
        let _ = stream.flush();
        std::thread::sleep(hold);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn query(path: &str) -> HashMap<String, String> {
    path.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("%2F", "/")))
                .collect()
        })
        .unwrap_or_default()
}

/// An `application/x-www-form-urlencoded` body, decoded.
fn form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn repo_of(path: &str) -> Option<String> {
    let p = path.split('?').next()?.strip_prefix("/v2/")?;
    for marker in ["/tags/", "/manifests/", "/blobs/", "/referrers/"] {
        if let Some(i) = p.rfind(marker) {
            return Some(p[..i].to_string());
        }
    }
    None
}

fn serve(
    stream: TcpStream,
    state: &Mutex<State>,
    http: &reqwest::blocking::Client,
    upstream: &str,
    port: u16,
    seq: &AtomicU64,
) {
    let Some(req) = read_request(&stream) else { return };
    let lock = || sync::lock(state);
    let behavior = lock().behavior.clone();
    let head = req.method == "HEAD";
    let mut cut = false;
    let mut trickle = None;
    let (resp, delay) = decide(&req, &behavior, state, http, upstream, port, seq, &mut cut, &mut trickle);
    if !behavior.latency.is_zero() && !req.path.starts_with("/_front/") {
        std::thread::sleep(behavior.latency);
    }
    if !delay.is_zero() && !cut {
        std::thread::sleep(delay);
    }
    if req.path.starts_with("/_front/") {
        write(&stream, &resp, head, cut, Duration::ZERO, None, None);
        return;
    }
    lock().requests.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        host: req.header("host").unwrap_or_default(),
        authorization: req.header("authorization"),
        range: req.header("range"),
        status: resp.status,
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    {
        let mut st = lock();
        st.sending += 1;
        st.most_sending = st.most_sending.max(st.sending);
    }
    write(&stream, &resp, head, cut, if cut { delay } else { Duration::ZERO }, trickle, behavior.rate);
    lock().sending -= 1;
}

#[allow(clippy::too_many_arguments)]
fn decide(
    req: &Request,
    b: &Behavior,
    state: &Mutex<State>,
    http: &reqwest::blocking::Client,
    upstream: &str,
    port: u16,
    seq: &AtomicU64,
    cut: &mut bool,
    trickle: &mut Option<(usize, Duration)>,
) -> (Response, Duration) {
    let lock = || sync::lock(state);
    let path = req.path.as_str();

    // What the front has seen, for scripts (the benchmark counts requests with it).
    if path.starts_with("/_front/requests") {
        let st = lock();
        let list: Vec<serde_json::Value> = st
            .requests
            .iter()
            .map(|r| serde_json::json!({"method": r.method, "path": r.path, "status": r.status, "range": r.range}))
            .collect();
        return (Response::new(200, serde_json::to_vec(&list).unwrap_or_default()), Duration::ZERO);
    }

    // The token endpoint.
    if path.starts_with("/token") {
        let Some(bearer) = &b.bearer else { return (Response::new(404, "no tokens here"), Duration::ZERO) };
        if let Some(wanted) = &b.refresh_token {
            let form = form(&req.body);
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            let known = given == *wanted || lock().refresh_tokens.contains(&given);
            if req.method != "POST" || form.get("grant_type").map(String::as_str) != Some("refresh_token") || !known {
                return (Response::new(401, r#"{"error":"invalid_grant"}"#), Duration::ZERO);
            }
            let n = seq.fetch_add(1, Ordering::SeqCst);
            let (token, refresh) = (format!("tok-{n}"), format!("rt-{n}"));
            let mut st = lock();
            st.tokens.insert(token.clone(), Instant::now() + Duration::from_secs(bearer.lifetime));
            st.refresh_tokens.push(refresh.clone());
            let body =
                format!(r#"{{"access_token":"{token}","refresh_token":"{refresh}","expires_in":{}}}"#, bearer.lifetime);
            return (Response::new(200, body).header("Content-Type", "application/json"), Duration::ZERO);
        }
        if let Some((u, p)) = &bearer.basic {
            use base64::Engine as _;
            let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
            if req.header("authorization").as_deref() != Some(want.as_str()) {
                return (Response::new(401, "{}"), Duration::ZERO);
            }
        }
        let token = format!("tok-{}", seq.fetch_add(1, Ordering::SeqCst));
        lock().tokens.insert(token.clone(), Instant::now() + Duration::from_secs(bearer.lifetime));
        let body = format!(r#"{{"token":"{token}","expires_in":{}}}"#, bearer.lifetime);
        return (Response::new(200, body).header("Content-Type", "application/json"), Duration::ZERO);
    }

    if b.down && path.starts_with("/v2/") {
        return (Response::new(503, "down"), Duration::ZERO);
    }

    // Injected faults, in order.
    let mut stall = Duration::ZERO;
    {
        let mut st = lock();
        if let Some(f) = st.behavior.faults.iter_mut().find(|f| f.times > 0 && path.contains(&f.path_contains)) {
            f.times -= 1;
            let f = f.clone();
            drop(st);
            if f.status == CUT_OFF {
                *cut = true;
                stall = f.delay; // held after the first half is sent, before the cut
            } else if f.status == STALL {
                stall = f.delay;
            } else if f.status == TRICKLE {
                *trickle = Some((f.chunk, f.delay));
            } else {
                let mut r = Response::new(f.status, r#"{"errors":[{"code":"INJECTED"}]}"#);
                if let Some(s) = f.retry_after {
                    r = r.header("Retry-After", s.to_string());
                }
                return (r, f.delay);
            }
        }
    }

    // Files served as they are: a foreign layer's host.
    if let Some(bytes) = b.files.get(path.split('?').next().unwrap_or(path)) {
        let from = req
            .header("range")
            .and_then(|r| {
                r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<usize>().ok())
            })
            .filter(|_| !b.ignore_range);
        return match from {
            Some(n) if n <= bytes.len() => (
                Response::new(206, bytes[n..].to_vec())
                    .header("Content-Range", format!("bytes {n}-{}/{}", bytes.len().saturating_sub(1), bytes.len())),
                stall,
            ),
            Some(_) => (Response::new(416, ""), Duration::ZERO),
            None => (Response::new(200, bytes.clone()), stall),
        };
    }

    // Object storage, where blob GETs are redirected: no auth needed, any given is recorded.
    if let Some(rest) = path.strip_prefix("/_storage/") {
        let rest = rest.split('?').next().unwrap_or(rest);
        let (repo, digest) = rest.rsplit_once('/').unwrap_or(("", ""));
        return (
            forward(http, "GET", &format!("{upstream}/v2/{repo}/blobs/{digest}"), req, b.ignore_range),
            Duration::ZERO,
        );
    }

    if let Some(bearer) = &b.bearer {
        if path.starts_with("/v2/") {
            let token = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string));
            let valid = token.is_some_and(|t| lock().tokens.get(&t).is_some_and(|exp| *exp > Instant::now()));
            if !valid {
                let scope = match repo_of(path) {
                    Some(r) => format!("repository:{r}:pull"),
                    None if path.starts_with("/v2/_catalog") => "registry:catalog:*".to_string(),
                    None => String::new(),
                };
                let _ = bearer;
                let challenge =
                    format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="regfs-front",scope="{scope}""#);
                return (
                    Response::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header("WWW-Authenticate", challenge),
                    Duration::ZERO,
                );
            }
        }
    }

    if b.no_catalog && path.starts_with("/v2/_catalog") {
        return (Response::new(404, r#"{"errors":[{"code":"UNSUPPORTED"}]}"#), Duration::ZERO);
    }

    if let (Some(only), true) = (&b.catalog_only, path.starts_with("/v2/_catalog")) {
        return (Response::new(200, serde_json::json!({ "repositories": only }).to_string()), Duration::ZERO);
    }

    if b.redirect_blobs && req.method == "GET" && path.contains("/blobs/sha256:") {
        if let Some(repo) = repo_of(path) {
            let digest = path.rsplit('/').next().unwrap_or("");
            // Another host name for the same server: another origin, as object storage is.
            // With a signature in the query, as object storage URLs have: it must never be logged.
            let location = format!(
                "http://localhost:{port}/_storage/{repo}/{digest}?X-Amz-Signature=sig-{}",
                seq.fetch_add(1, Ordering::SeqCst)
            );
            return (Response::new(307, "").header("Location", location), Duration::ZERO);
        }
    }

    let bare = path.split('?').next().unwrap_or(path);
    for (repo, bytes) in &b.tag_floods {
        if bare == format!("/v2/{repo}/tags/list") {
            return (flood_page(bare, "tags", *bytes, &query(path)), Duration::ZERO);
        }
    }
    if let (Some(bytes), "/v2/_catalog") = (b.catalog_flood, bare) {
        return (flood_page(bare, "repositories", bytes, &query(path)), Duration::ZERO);
    }
    // The repositories whose tags are made up here are in the catalog too, as a registry
    // lists every repository it serves.
    if let (false, "/v2/_catalog", None) = (b.tag_floods.is_empty(), bare, b.catalog_page) {
        let full = forward(http, "GET", &format!("{upstream}{bare}?n=1000"), req, false);
        return (with_repositories(full, b.tag_floods.iter().map(|(r, _)| r.as_str())), Duration::ZERO);
    }
    if let (Some(bad), true) = (b.bad_links, bare.ends_with("/tags/list")) {
        return (bad_page(bad, bare, &query(path), port), Duration::ZERO);
    }
    if let (Some(header), "GET", true) = (b.alter_manifests, req.method.as_str(), path.contains("/manifests/sha256:")) {
        let resp = forward(http, &req.method, &format!("{upstream}{path}"), req, false);
        return (altered_manifest(resp, header), stall);
    }
    if let (Some(n), true) = (b.tag_page, bare.ends_with("/tags/list")) {
        let full = forward(http, "GET", &format!("{upstream}{bare}"), req, false);
        return (page(full, "tags", n, bare, &query(path)), Duration::ZERO);
    }
    if let (Some(n), "/v2/_catalog") = (b.catalog_page, bare) {
        let full = forward(http, "GET", &format!("{upstream}{bare}?n=1000"), req, false);
        return (page(full, "repositories", n, bare, &query(path)), Duration::ZERO);
    }
    if let (true, "GET", Some((repo, digest))) = (b.referrers_api, req.method.as_str(), referrers_path(bare)) {
        return (referrers(http, upstream, req, repo, digest), stall);
    }
    (forward(http, &req.method, &format!("{upstream}{path}"), req, b.ignore_range), stall)
}

/// `/v2/<repo>/referrers/<alg>:<hex>` as `(repo, digest)`.
fn referrers_path(bare: &str) -> Option<(&str, &str)> {
    let (repo, digest) = bare.strip_prefix("/v2/")?.rsplit_once("/referrers/")?;
    digest.split_once(':').map(|_| (repo, digest))
}

/// The referrers API's answer, made from the upstream's referrers tag schema.
fn referrers(http: &reqwest::blocking::Client, upstream: &str, req: &Request, repo: &str, digest: &str) -> Response {
    let tag = digest.replacen(':', "-", 1);
    let found = forward(http, "GET", &format!("{upstream}/v2/{repo}/manifests/{tag}"), req, false);
    let body = match found.status {
        200 => found.body,
        404 => serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": crate::media::OCI_INDEX, "manifests": []}),
        )
        .unwrap_or_default(),
        _ => return found,
    };
    Response::new(200, body).header("Content-Type", crate::media::OCI_INDEX)
}

/// A catalog answer with `extra` repositories added (sorted, as registries list them).
fn with_repositories<'a>(resp: Response, extra: impl Iterator<Item = &'a str>) -> Response {
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&resp.body) else {
        return resp;
    };
    let Some(list) = doc.get_mut("repositories").and_then(|v| v.as_array_mut()) else {
        return resp;
    };
    list.extend(extra.map(|r| serde_json::Value::String(r.to_string())));
    let mut names: Vec<String> = list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    names.sort();
    names.dedup();
    let body = serde_json::json!({ "repositories": names }).to_string();
    Response::new(200, body).header("Content-Type", "application/json")
}

/// Page `?page=<k>` of a flood of `total` bytes in `field`: about [`FLOOD_PAGE`] bytes of long
/// names, valid as tags and as repository names (and a few invalid ones), with a `Link` to the
/// next page until `total` is served.
fn flood_page(bare: &str, field: &str, total: u64, q: &HashMap<String, String>) -> Response {
    let k: u64 = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = Vec::with_capacity(FLOOD_PAGE as usize + 256);
    body.extend_from_slice(format!("{{\"name\":\"flood\",\"{field}\":[").as_bytes());
    let mut i = 0u64;
    while (body.len() as u64) < FLOOD_PAGE {
        if i > 0 {
            body.push(b',');
        }
        // 100-character names, all distinct; every 1000th starts with '-', which no tag may.
        let lead = if i % 1000 == 999 { "-" } else { "t" };
        body.extend_from_slice(format!("\"{lead}{k:08}.{i:08}.{}\"", "x".repeat(82)).as_bytes());
        i += 1;
    }
    body.extend_from_slice(b"]}");
    let mut r = Response::new(200, body).header("Content-Type", "application/json");
    if (k + 1) * FLOOD_PAGE < total {
        r = r.header("Link", format!(r#"<{bare}?n={i}&page={}>; rel="next""#, k + 1));
    }
    r
}

/// A manifest with a space inserted after its opening brace, and `Docker-Content-Digest` as
/// `header` says.
fn altered_manifest(mut resp: Response, header: ManifestHeader) -> Response {
    if resp.status != 200 || resp.body.first() != Some(&b'{') {
        return resp;
    }
    resp.body.insert(1, b' ');
    resp.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("docker-content-digest") && !k.eq_ignore_ascii_case("content-length"));
    if header == ManifestHeader::OfServedBytes {
        let served = crate::digest::Digest::of(crate::digest::Algorithm::Sha256, &resp.body);
        resp.headers.push(("docker-content-digest".into(), served.to_string()));
    }
    resp
}

/// A made-up page `?page=K` of a tag list (one tag, `pK`), linked as `bad` says.
fn bad_page(bad: BadLink, bare: &str, q: &HashMap<String, String>, port: u16) -> Response {
    let k: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let name = bare.strip_prefix("/v2/").and_then(|p| p.strip_suffix("/tags/list")).unwrap_or("");
    let body = serde_json::json!({"name": name, "tags": [format!("p{k}")]});
    let next = match bad {
        BadLink::OtherOrigin => format!("http://localhost:{port}{bare}?page={}", k + 1),
        BadLink::LoopBack if k == 0 => format!("{bare}?page=1"),
        BadLink::LoopBack => bare.to_string(),
        BadLink::Chain(n) if k + 1 >= n => String::new(),
        BadLink::Chain(_) => format!("{bare}?page={}", k + 1),
    };
    let r =
        Response::new(200, serde_json::to_vec(&body).unwrap_or_default()).header("Content-Type", "application/json");
    if next.is_empty() { r } else { r.header("Link", format!(r#"<{next}>; rel="next""#)) }
}

/// One page of a list response, with a `Link` to the next.
fn page(full: Response, field: &str, n: usize, bare: &str, q: &HashMap<String, String>) -> Response {
    if full.status != 200 {
        return full;
    }
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&full.body) else { return full };
    let mut items: Vec<String> = doc[field]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    items.sort();
    let n = q.get("n").and_then(|v| v.parse().ok()).unwrap_or(n).min(n);
    let start = q.get("last").map_or(0, |last| items.partition_point(|t| t.as_str() <= last.as_str()));
    let slice: Vec<String> = items.iter().skip(start).take(n).cloned().collect();
    let more = start + slice.len() < items.len();
    doc[field] = serde_json::json!(slice);
    let mut r =
        Response::new(200, serde_json::to_vec(&doc).unwrap_or_default()).header("Content-Type", "application/json");
    if more {
        if let Some(last) = slice.last() {
            r = r.header("Link", format!(r#"<{bare}?n={n}&last={last}>; rel="next""#));
        }
    }
    r
}

fn forward(http: &reqwest::blocking::Client, method: &str, url: &str, req: &Request, ignore_range: bool) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut r = http.request(method, url);
    for name in ["accept", "authorization"] {
        // A client may send a header in several lines (Go's sends one `Accept` per media type).
        let all: Vec<&str> =
            req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        if let Some(v) = (!all.is_empty()).then(|| all.join(", ")) {
            if name == "authorization" && v.starts_with("Bearer tok-") {
                continue; // the front's own tokens mean nothing upstream
            }
            r = r.header(name, v);
        }
    }
    if !ignore_range {
        if let Some(v) = req.header("range") {
            r = r.header("range", v);
        }
    }
    let resp = match r.send() {
        Ok(r) => r,
        Err(e) => return Response::new(502, format!("upstream: {e}")),
    };
    let mut out = Response::new(resp.status().as_u16(), Vec::new());
    for name in [
        "content-type",
        "docker-content-digest",
        "link",
        "location",
        "content-range",
        "accept-ranges",
        "www-authenticate",
        "content-length",
    ] {
        if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
            out.headers.push((name.to_string(), v.to_string()));
        }
    }
    let mut body = Vec::new();
    let mut resp = resp;
    let _ = resp.read_to_end(&mut body);
    if !body.is_empty() || out.headers.iter().all(|(k, _)| k != "content-length") {
        out.headers.retain(|(k, _)| k != "content-length");
    }
    out.body = body;
    out
}
