//! Which URL a `REGISTRY` argument means.
//!
//! `http://` and `https://` are honoured as given. A bare `host[:port]` means https, except on
//! loopback (`localhost`, 127.0.0.0/8, `::1`), which means http, as docker does. `docker.io`
//! and `index.docker.io` mean Docker Hub's API host, `registry-1.docker.io`.

use std::net::IpAddr;

use reqwest::Url;

use crate::error::{Error, Result};

pub fn parse(registry: &str) -> Result<Url> {
    // Messages name the registry as given, but never a password it may hold.
    let shown = redacted(registry);
    let bad = |why: &str| Error::BadArgument(format!("{shown}: {why}"));
    let with_scheme = match registry.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            _ => return Err(bad("regfs speaks http:// and https:// only")),
        },
        None => {
            let url = Url::parse(&format!("https://{registry}")).map_err(|_| bad("not a host[:port]"))?;
            let scheme = if url.host().is_some_and(|h| is_loopback(&h.to_string())) { "http" } else { "https" };
            format!("{scheme}://{registry}")
        }
    };
    let mut url = Url::parse(&with_scheme).map_err(|_| bad("not a URL"))?;
    if url.host_str().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("put credentials in --username/--password-stdin or the auth file, not the URL"));
    }
    if matches!(url.host_str(), Some("docker.io" | "index.docker.io")) {
        url.set_host(Some(DOCKER_HUB)).map_err(|_| bad("bad host"))?;
    }
    url.set_path("/");
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// Docker Hub's API host, which `docker.io` and `index.docker.io` name.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Whether `url` (as [`parse`] gives it) is Docker Hub, where a one-component name means an
/// official image (`alpine` is `library/alpine`; [`crate::names::docker_hub_repository`]).
/// Told by the host alone, whatever the scheme or port.
pub fn is_docker_hub(url: &Url) -> bool {
    url.host_str() == Some(DOCKER_HUB)
}

/// `registry` with any `user:password@` before its host shown as `***@`.
fn redacted(registry: &str) -> String {
    let (scheme, rest) = match registry.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), registry),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => registry.to_string(),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn schemes_follow_docker_conventions() {
        let p = |s: &str| parse(s).expect("test input is valid").to_string();
        assert_eq!(p("127.0.0.1:5000"), "http://127.0.0.1:5000/");
        assert_eq!(p("127.1.2.3:5000"), "http://127.1.2.3:5000/");
        assert_eq!(p("localhost:5000"), "http://localhost:5000/");
        assert_eq!(p("[::1]:5000"), "http://[::1]:5000/");
        assert_eq!(p("ghcr.io"), "https://ghcr.io/");
        assert_eq!(p("registry.example.com:8443"), "https://registry.example.com:8443/");
        assert_eq!(p("https://localhost:5000"), "https://localhost:5000/");
        assert_eq!(p("http://example.com/v2/"), "http://example.com/");
        assert_eq!(p("docker.io"), "https://registry-1.docker.io/");
        assert!(parse("https://user:pw@example.com").is_err());
        assert!(parse("").is_err());
        assert!(parse("http://").is_err());
    }

    #[test]
    fn docker_hub_is_told_by_its_host() {
        let hub = |s: &str| super::is_docker_hub(&parse(s).expect("test input is valid"));
        for h in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://docker.io",
            "http://registry-1.docker.io:5000",
        ] {
            assert!(hub(h), "{h}");
        }
        for h in ["ghcr.io", "127.0.0.1:5000", "mirror.gcr.io", "docker.io.example.com", "registry-2.docker.io"] {
            assert!(!hub(h), "{h}");
        }
    }

    #[test]
    fn other_schemes_and_passwords_are_refused_without_echoing_them() {
        let msg = |s: &str| parse(s).expect_err("must be refused").to_string();
        for url in ["ftp://registry.example.com", "file:///srv/registry", "ssh://host:22", "HTTP2://x"] {
            let m = msg(url);
            assert!(m.contains("http:// and https:// only"), "{url}: {m}");
        }
        for url in ["https://user:s3cret@example.com", "http://s3cret@127.0.0.1:5000", "user:s3cret@example.com"] {
            let m = msg(url);
            assert!(!m.contains("s3cret"), "the password is echoed: {m}");
            assert!(m.contains("--password-stdin"), "{url}: {m}");
        }
        // Uppercase schemes are schemes too (RFC 3986: case-insensitive).
        assert_eq!(parse("HTTP://127.0.0.1:5000").expect("valid").to_string(), "http://127.0.0.1:5000/");
    }
}
