//! Authentication: `WWW-Authenticate` challenges and bearer tokens. Where credentials come from
//! is `credentials.rs`.
//!
//! # Flow
//! Requests go out anonymous until the registry answers 401. Its challenge says how to
//! authenticate: `Basic` (send the credentials on every request from then on) or `Bearer realm=…,
//! service=…, scope=…` (fetch a token from the realm, with the credentials if we have them, and
//! send the token). Tokens are kept per scope (`repository:<name>:pull`, `registry:catalog:*`) and
//! reused until shortly before `expires_in` runs out; a 401 on a request that carried a token
//! drops it and authenticates once more. A second 401 in a row is final (EACCES): no loops.
//! Credentials refused (Basic, or by the token realm) are fetched again once through
//! [`Login::refresh`] (a rotated password, a helper's new token), at most once per
//! `CREDENTIAL_REFRESH_EVERY`, and only a changed secret is tried again.
//! A 401 is judged by what its own request carried: requests that went out anonymously at the
//! same time as the first one all retry with the credentials (or the token) the first answer
//! got, and only a request that carried the credentials and was refused fails.
//!
//! # Where credentials go
//! To the registry's own origin, and to the token realm it names, and nowhere else: redirects to
//! other hosts (object storage) never carry an `Authorization` header (see `http/mod.rs`). A
//! realm on plain http is refused unless the registry itself is plain http (loopback tests).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::credentials::{Login, Secret};
use crate::error::{Error, Result};
use crate::limits::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME, MIN_TOKEN_LIFETIME};
use crate::sync;

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower case: `basic`, `bearer`, …
    pub scheme: String,
    /// Parameter names lower case; values unquoted.
    pub params: HashMap<String, String>,
}

/// Parse a `WWW-Authenticate` header value into its challenges (RFC 7235 §4.1). Tolerant of
/// odd spacing, refuses nothing: a part it cannot read is skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let b = header.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    let skip = |i: &mut usize, set: &[u8]| {
        while *i < b.len() && set.contains(&b[*i]) {
            *i += 1;
        }
    };
    // Tokens are ASCII by definition, so any slice of them is valid UTF-8; working on bytes
    // means no index can land inside a character, whatever the registry sends.
    let token = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        String::from_utf8_lossy(&b[start..*i]).into_owned()
    };
    while i < b.len() {
        skip(&mut i, b" \t,");
        let word = token(&mut i);
        if word.is_empty() {
            i += 1; // a byte that starts nothing: skip it
            continue;
        }
        skip(&mut i, b" \t");
        if i < b.len() && b[i] == b'=' && !out.is_empty() {
            // `name=value` belongs to the current challenge.
            i += 1;
            skip(&mut i, b" \t");
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = Vec::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                i += 1;
                String::from_utf8_lossy(&v).into_owned()
            } else {
                token(&mut i)
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge { scheme: word.to_ascii_lowercase(), params: HashMap::new() });
        }
    }
    out
}

struct Token {
    value: String,
    good_until: Instant,
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    /// A new refresh token (identity token logins): used from now on.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Keeps what is needed to authenticate, and the tokens got so far.
pub struct Authenticator {
    login: Option<Login>,
    allow_http_realm: bool,
    /// The registry asked for Basic: send credentials up front from now on.
    basic: AtomicBool,
    tokens: Mutex<HashMap<String, Token>>,
}

/// What the HTTP layer must do to get a token: a request it performs itself, so that token
/// requests share its client, counters and error mapping. A GET of `url` (with `authorization`
/// if we have a username and password), or with an identity token a POST of `form` to `url` (the
/// realm), as docker does: `grant_type=refresh_token&refresh_token=…&service=…&scope=…&client_id=regfs`.
pub struct TokenRequest {
    pub url: reqwest::Url,
    pub authorization: Option<String>,
    /// The POST body, `application/x-www-form-urlencoded`.
    pub form: Option<String>,
    /// The secret this request carries, if any: what was refused if the realm says no.
    pub secret: Option<Secret>,
}

impl Authenticator {
    pub fn new(login: Option<Login>, allow_http_realm: bool) -> Self {
        Authenticator { login, allow_http_realm, basic: AtomicBool::new(false), tokens: Mutex::new(HashMap::new()) }
    }

    /// The `Authorization` header for a request in `scope`, if we have one.
    pub fn header(&self, scope: &str) -> Option<String> {
        let tokens = sync::lock(&self.tokens);
        if let Some(t) = tokens.get(scope).filter(|t| t.good_until > Instant::now()) {
            return Some(format!("Bearer {}", t.value));
        }
        drop(tokens);
        if self.basic.load(Ordering::Relaxed) {
            return self.basic_header();
        }
        None
    }

    /// `Basic …` for the current username and password, if that is what we have.
    fn basic_header(&self) -> Option<String> {
        match self.login.as_ref().map(Login::current) {
            Some(Secret::Basic(c)) => Some(c.basic_header()),
            _ => None,
        }
    }

    /// Forget the token for `scope`, if it is the one `sent` carried (the registry refused it). A
    /// token another request got since is kept: the refusal was not about it.
    pub fn forget(&self, scope: &str, sent: Option<&str>) {
        let mut tokens = sync::lock(&self.tokens);
        if tokens.get(scope).is_some_and(|t| sent.and_then(|s| s.strip_prefix("Bearer ")) == Some(t.value.as_str())) {
            tokens.remove(scope);
        }
    }

    /// Read a 401's challenges, for a request that carried the `Authorization` header `sent`.
    /// `Ok(None)`: Basic, nothing to fetch, retry with credentials. `Ok(Some(req))`: fetch a
    /// token with `req`, then call [`Authenticator::store_token`].
    ///
    /// Only a 401 to a request that carried the credentials means they were refused. Requests
    /// sent anonymously before the first challenge was answered get their 401 after it: each of
    /// them is told to retry with the credentials, not refused.
    pub fn answer(
        &self,
        www_authenticate: &str,
        scope: &str,
        url: &str,
        sent: Option<&str>,
    ) -> Result<Option<TokenRequest>> {
        let challenges = parse_challenges(www_authenticate);
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = c
                .params
                .get("realm")
                .ok_or_else(|| Error::Protocol(format!("{url}: bearer challenge without realm")))?;
            let token_url =
                reqwest::Url::parse(realm).map_err(|_| Error::Protocol(format!("{url}: bad token realm {realm:?}")))?;
            if token_url.scheme() != "https" && !(token_url.scheme() == "http" && self.allow_http_realm) {
                return Err(Error::Denied(format!("{url}: token realm {realm} is not https")));
            }
            let scope = c.params.get("scope").map_or(scope, String::as_str);
            return Ok(Some(self.token_request(token_url, c.params.get("service").map(String::as_str), scope)));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(basic) = self.basic_header() else {
                return Err(Error::Denied(format!("{url}: the registry wants a username and password")));
            };
            if sent == Some(basic.as_str()) {
                // Refused: perhaps changed since (a rotated password). Fetched again, tried once.
                let refused = self.login.as_ref().map(Login::current);
                if let Some(refused) = refused {
                    if self.refresh(&refused)? {
                        self.basic.store(true, Ordering::Relaxed);
                        return Ok(None);
                    }
                }
                return Err(Error::Denied(format!("{url}: credentials refused")));
            }
            self.basic.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Err(Error::Denied(format!("{url}: unsupported authentication challenge {www_authenticate:?}")))
    }

    /// `refused` was refused: fetch the credentials again (see [`Login::refresh`]). `true`:
    /// there are others to try, once.
    pub fn refresh(&self, refused: &Secret) -> Result<bool> {
        match &self.login {
            Some(login) => login.refresh(refused),
            None => Ok(false),
        }
    }

    /// How to ask the realm `realm` for a token for `scope`, with the secret we have now.
    pub fn token_request(&self, realm: reqwest::Url, service: Option<&str>, scope: &str) -> TokenRequest {
        let secret = self.login.as_ref().map(Login::current);
        let mut url = realm;
        if let Some(Secret::IdentityToken(refresh)) = &secret {
            // The form is serialised as a query string is: the same encoding.
            let mut body = reqwest::Url::parse("http://form.invalid/").ok();
            if let Some(b) = &mut body {
                let mut q = b.query_pairs_mut();
                q.append_pair("grant_type", "refresh_token");
                q.append_pair("refresh_token", refresh);
                if let Some(service) = service {
                    q.append_pair("service", service);
                }
                if !scope.is_empty() {
                    q.append_pair("scope", scope);
                }
                q.append_pair("client_id", "regfs");
            }
            let form = body.and_then(|b| b.query().map(str::to_string));
            return TokenRequest { url, authorization: None, form, secret };
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        let authorization = self.basic_header();
        TokenRequest { url, authorization, form: None, secret: secret.filter(|s| matches!(s, Secret::Basic(_))) }
    }

    /// Keep a token reply for `scope`. Reused until 90% of its lifetime (at most 30 s early).
    pub fn store_token(&self, scope: &str, body: &[u8], url: &str) -> Result<()> {
        let reply: TokenReply =
            serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("{url}: bad token reply: {e}")))?;
        if let (Some(login), Some(refresh)) = (&self.login, reply.refresh_token.filter(|t| !t.is_empty())) {
            login.replace_identity_token(refresh);
        }
        let value = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Protocol(format!("{url}: token reply without a token")))?;
        let lifetime = reply
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .clamp(MIN_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME);
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        let good_until = Instant::now() + lifetime - margin;
        sync::lock(&self.tokens).insert(scope.to_string(), Token { value, good_until });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::credentials::Credentials;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["scope"], "repository:library/alpine:pull");
        let c = parse_challenges(r#"Basic realm="Registry Realm", Bearer realm="https://x/t", error="invalid_token""#);
        assert_eq!(c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["basic", "bearer"]);
        assert_eq!(c[1].params["error"], "invalid_token");
        let c = parse_challenges(r#"Bearer realm="a\"b",  scope = x"#);
        assert_eq!(c[0].params["realm"], "a\"b");
        assert_eq!(c[0].params["scope"], "x");
        for junk in ["", "=", "\"", "Bearer realm=\"unterminated", "=x,,=", "Bearer é=\"ü\""] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn tokens_are_reused_per_scope_and_can_be_forgotten() {
        let a = Authenticator::new(None, true);
        assert_eq!(a.header("s"), None);
        a.store_token("s", br#"{"token":"abc","expires_in":300}"#, "u").expect("test input is valid");
        assert_eq!(a.header("s").as_deref(), Some("Bearer abc"));
        assert_eq!(a.header("other"), None);
        // Forgotten only when the refused request carried that very token.
        a.forget("s", None);
        a.forget("s", Some("Bearer old"));
        assert_eq!(a.header("s").as_deref(), Some("Bearer abc"));
        a.forget("s", Some("Bearer abc"));
        assert_eq!(a.header("s"), None);
        a.store_token("s", br#"{"access_token":"xyz"}"#, "u").expect("test input is valid");
        assert_eq!(a.header("s").as_deref(), Some("Bearer xyz"));
        assert!(a.store_token("s", br#"{"token":""}"#, "u").is_err());
        // Absurd lifetimes from the network neither panic nor last forever.
        a.store_token("s", br#"{"token":"t","expires_in":18446744073709551615}"#, "u").expect("huge expires_in");
        assert_eq!(a.header("s").as_deref(), Some("Bearer t"));
        a.store_token("s", br#"{"token":"t","expires_in":0}"#, "u").expect("zero expires_in");
        assert!(a.store_token("s", b"nope", "u").is_err());
    }

    #[test]
    fn a_bearer_challenge_becomes_a_token_request() {
        let creds = Credentials { username: "u".into(), password: "p".into() };
        let a = Authenticator::new(Some(Login::fixed(Secret::Basic(creds))), false);
        let req = a
            .answer(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull""#,
                "ignored",
                "u",
                None,
            )
            .expect("test input is valid")
            .expect("test input is valid");
        assert_eq!(req.url.as_str(), "https://auth.example/token?service=reg&scope=repository%3Aa%2Fb%3Apull");
        assert!(req.authorization.expect("test input is valid").starts_with("Basic "));
        assert!(a.answer(r#"Bearer realm="http://auth.example/token""#, "s", "u", None).is_err());
        // Basic: an anonymous request is told to retry with the credentials ...
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", None).expect("test input is valid").is_none());
        let basic = a.header("s").expect("test input is valid");
        assert!(basic.starts_with("Basic "));
        // ... and so is one that was sent anonymously before that answer and refused after it.
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", None).expect("test input is valid").is_none());
        // A refusal of a request that carried the credentials is final.
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", Some(&basic)).is_err());
    }

    /// A realm on plain http is taken only from a registry that is itself plain http (loopback),
    /// and then only http or https: never another scheme.
    #[test]
    fn a_plain_http_realm_is_taken_only_from_a_plain_http_registry() {
        let asked = |allow_http_realm: bool, realm: &str| {
            Authenticator::new(None, allow_http_realm)
                .answer(&format!("Bearer realm=\"{realm}\""), "s", "u", None)
                .map(|r| r.map(|r| r.url.to_string()))
        };
        assert_eq!(
            asked(true, "http://127.0.0.1:5000/token").ok().flatten().as_deref(),
            Some("http://127.0.0.1:5000/token?scope=s")
        );
        assert_eq!(
            asked(true, "https://auth.example/token").ok().flatten().as_deref(),
            Some("https://auth.example/token?scope=s")
        );
        assert!(matches!(asked(false, "http://127.0.0.1:5000/token"), Err(Error::Denied(_))));
        assert!(matches!(asked(true, "ftp://auth.example/token"), Err(Error::Denied(_))));
        assert!(matches!(asked(false, "ftp://auth.example/token"), Err(Error::Denied(_))));
    }

    #[test]
    fn refused_basic_credentials_are_read_again_once_and_not_in_a_loop() {
        use crate::registry::credentials::{Env, lookup};
        let dir = tempfile::tempdir().expect("test input is valid");
        let file = dir.path().join("auth.json");
        let write = |pw: &str| {
            std::fs::write(&file, format!(r#"{{"auths":{{"reg:1":{{"username":"u","password":"{pw}"}}}}}}"#))
                .expect("test input is valid")
        };
        write("old");
        let login = lookup("reg:1", Some(&file), &Env::default(), Duration::from_secs(5))
            .expect("test input is valid")
            .expect("test input is valid");
        let a = Authenticator::new(Some(login), false);
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", None).expect("test input is valid").is_none());
        let old = a.header("s").expect("test input is valid");
        // The password was changed in the file: the refusal reads it again, and says retry.
        write("new");
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", Some(&old)).expect("refreshed").is_none());
        let new = a.header("s").expect("test input is valid");
        assert_ne!(new, old);
        assert_eq!(new, Credentials { username: "u".into(), password: "new".into() }.basic_header());
        // Refused again at once: not read again (rate-limited), final.
        write("newer");
        assert!(a.answer(r#"Basic realm="x""#, "s", "u", Some(&new)).is_err());
        assert_eq!(a.header("s").as_deref(), Some(new.as_str()));
    }
}
