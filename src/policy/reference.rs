//! Docker references as containers/image reads them (`docker/reference`'s
//! `ParseNormalizedNamed`), the scopes a policy names, and the `signedIdentity` rules that
//! compare a signature's claimed identity with the image's.
//!
//! A reference is `domain/path[:tag][@digest]`. As people type them they are normalized: a
//! first component without `.` or `:` that is not `localhost` is a path on `docker.io`, and a
//! one-component path there is under `library/` (`busybox` is `docker.io/library/busybox`).
//! A policy scope must be written fully expanded (`docker.io/library/busybox`), as
//! containers-policy.json(5) says; a signature's `docker-reference` is normalized.

use crate::digest::Digest;
use crate::names;

/// A parsed, normalized docker reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `domain/path`, normalized.
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Docker Hub's name in references.
pub const DOCKER_IO: &str = "docker.io";

impl Reference {
    /// `s` read as `ParseNormalizedNamed` reads it; why not, as a phrase.
    pub fn parse_normalized(s: &str) -> Result<Reference, String> {
        if s.is_empty() || s.len() > 4096 {
            return Err("an empty or overlong reference".into());
        }
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err("a 64-hex identifier is not a name".into());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let digest = d.parse::<Digest>().map_err(|_| format!("{d:?} is not a digest"))?;
                (r, Some(digest))
            }
            None => (s, None),
        };
        // A tag is after the last ':' past the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            names::check_tag(t).map_err(|_| format!("{t:?} is not a tag"))?;
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(domain) {
            return Err(format!("{domain:?} is not a registry host"));
        }
        let path =
            if domain == DOCKER_IO && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
        names::check_repo(&path).map_err(|_| format!("{path:?} is not a repository name"))?;
        let name = format!("{domain}/{path}");
        // distribution's NameTotalLengthMax: the whole name, host included.
        if name.len() > 255 {
            return Err(format!("a name of {} characters (at most 255)", name.len()));
        }
        Ok(Reference { name, tag, digest })
    }

    /// No tag and no digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// `name[:tag][@digest]`, as Go's `String()`.
    pub fn full(&self) -> String {
        let mut s = self.name.clone();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }
}

/// `(domain, path)` of a name as docker splits it.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (if first == "index.docker.io" { DOCKER_IO } else { first }, rest)
        }
        _ => (DOCKER_IO, name),
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `scope` is a docker scope a policy may name: `""` (the transport's default), a
/// fully expanded `domain[/path][:tag|@digest]`, or `*.domain`.
pub fn check_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if let Some(domain) = scope.strip_prefix("*.") {
        return if valid_domain(domain) && !domain.contains(':') {
            Ok(())
        } else {
            Err(format!("{scope:?}: a wildcard names a domain without a port"))
        };
    }
    // A bare host (`localhost:5000`, `registry.example.com`) is a scope of its own.
    if !scope.contains('/') {
        // As docker tells a host from a name: a `.` or `:`, or `localhost` (`busybox` is a name).
        let host = scope.contains(['.', ':']) || scope == "localhost";
        return if host && valid_domain(scope) {
            Ok(())
        } else {
            Err(format!(
                "{scope:?} is not a registry host (a repository is written fully expanded: docker.io/library/{scope})"
            ))
        };
    }
    let r = Reference::parse_normalized(scope)?;
    if r.full() != scope {
        return Err(format!("{scope:?} is not fully expanded (write {:?})", r.full()));
    }
    Ok(())
}

/// The scopes that may apply to `image` (a reference with a tag or a digest), most specific
/// first, as containers/image's `PolicyConfigurationNamespaces`: the reference itself, then its
/// name and each parent namespace up to the host, then `*.`-wildcards of the host (port cut).
pub fn scopes(image: &Reference) -> Vec<String> {
    let mut out = vec![image.full()];
    let mut name = image.name.as_str();
    loop {
        out.push(name.to_string());
        match name.rfind('/') {
            Some(i) => name = &name[..i],
            None => break,
        }
    }
    let mut host = name.rsplit_once(':').map_or(name, |(h, _)| h);
    while let Some(i) = host.find('.') {
        host = &host[i + 1..];
        out.push(format!("*.{host}"));
    }
    out
}

/// How a signature's claimed identity must relate to the image's (`signedIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(Reference),
    ExactRepository(Reference),
    RemapIdentity { prefix: String, signed_prefix: String },
}

impl SignedIdentity {
    /// Whether a signature claiming `signed` (its `docker-reference`, as written) may stand for
    /// `image`; why not, as a phrase.
    pub fn accepts(&self, image: &Reference, signed: &str) -> Result<(), String> {
        let sig = Reference::parse_normalized(signed).map_err(|e| format!("the signed identity {signed:?}: {e}"))?;
        let refused =
            || Err(format!("the signed identity {signed:?} does not match {} by {}", image.full(), self.name()));
        let ok = match self {
            SignedIdentity::MatchExact => !image.is_name_only() && !sig.is_name_only() && sig.full() == image.full(),
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(image, &sig),
            SignedIdentity::MatchRepository => sig.name == image.name,
            SignedIdentity::ExactReference(r) => !sig.is_name_only() && sig.full() == r.full(),
            SignedIdentity::ExactRepository(r) => sig.name == r.name,
            SignedIdentity::RemapIdentity { prefix, signed_prefix } => match remap(image, prefix, signed_prefix) {
                Ok(remapped) => repo_digest_or_exact(&remapped, &sig),
                Err(why) => return Err(why),
            },
        };
        if ok { Ok(()) } else { refused() }
    }

    fn name(&self) -> &'static str {
        match self {
            SignedIdentity::MatchExact => "matchExact",
            SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            SignedIdentity::MatchRepository => "matchRepository",
            SignedIdentity::ExactReference(_) => "exactReference",
            SignedIdentity::ExactRepository(_) => "exactRepository",
            SignedIdentity::RemapIdentity { .. } => "remapIdentity",
        }
    }
}

/// c/image's `matchRepoDigestOrExact`: a digested image accepts any identity of its repository
/// that has a tag or digest; a tagged one only itself.
fn repo_digest_or_exact(image: &Reference, sig: &Reference) -> bool {
    if sig.is_name_only() {
        return false;
    }
    if image.tag.is_some() {
        sig.full() == image.full()
    } else if image.digest.is_some() {
        sig.name == image.name
    } else {
        false
    }
}

/// `image` with `prefix` replaced by `signed_prefix`, as containers/image's `remapIdentity`:
/// the prefix matches the image's name (never its tag or digest) whole or up to a `/` (a host
/// `reg` does not match `reg:5000`); the rewritten reference must be canonical as written (no
/// normalization: `docker.io/busybox` is refused), and one that is not valid refuses.
fn remap(image: &Reference, prefix: &str, signed_prefix: &str) -> Result<Reference, String> {
    let name = image.name.as_str();
    let matches = name == prefix || name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'));
    if !matches {
        return Ok(image.clone());
    }
    let full = image.full();
    let rewritten = full.replacen(prefix, signed_prefix, 1);
    match Reference::parse_normalized(&rewritten) {
        Ok(r) if r.full() == rewritten => Ok(r),
        Ok(r) => Err(format!("remapIdentity rewrites {full} to {rewritten}, which is not canonical ({})", r.full())),
        Err(e) => Err(format!("remapIdentity rewrites {full} to {rewritten}: {e}")),
    }
}

/// Whether a `remapIdentity` prefix is one c/image accepts: a host, or host/namespace, or a
/// `*.`-wildcard is not allowed; written fully expanded.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with("*.") || prefix.contains(['@']) {
        return Err(format!("{prefix:?} is not a host or a host/namespace"));
    }
    check_scope(prefix).and_then(|()| if prefix.is_empty() { Err("an empty prefix".into()) } else { Ok(()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse_normalized(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn references_normalize_as_docker_reads_them() {
        assert_eq!(r("busybox").full(), "docker.io/library/busybox");
        assert_eq!(r("busybox:1.36").full(), "docker.io/library/busybox:1.36");
        assert_eq!(r("me/app").full(), "docker.io/me/app");
        assert_eq!(r("index.docker.io/me/app").name, "docker.io/me/app");
        assert_eq!(r("localhost:5000/a/b:v1").full(), "localhost:5000/a/b:v1");
        assert_eq!(r("localhost/a").name, "localhost/a");
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!("registry.example.com/x@{d}"));
        assert_eq!((x.tag, x.digest.map(|d| d.to_string())), (None, Some(d.clone())));
        assert!(r("localhost:5000/a").is_name_only());
        for bad in ["", "a/B", "localhost:5000/a:bad tag", "x@sha256:zz", &"a".repeat(64), "-x.com/a"] {
            assert!(Reference::parse_normalized(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_run_from_the_reference_to_wildcards_of_its_host() {
        let d = format!("sha256:{}", "b".repeat(64));
        let img = r(&format!("reg.example.com:5000/ns/app@{d}"));
        assert_eq!(
            scopes(&img),
            [
                format!("reg.example.com:5000/ns/app@{d}"),
                "reg.example.com:5000/ns/app".into(),
                "reg.example.com:5000/ns".into(),
                "reg.example.com:5000".into(),
                "*.example.com".into(),
                "*.com".into(),
            ]
        );
        assert_eq!(scopes(&r("localhost:5000/a:t")), ["localhost:5000/a:t", "localhost:5000/a", "localhost:5000"]);
        for ok in
            ["", "docker.io", "docker.io/library/busybox", "localhost:5000/a:v1", "*.example.com", "localhost:5000"]
        {
            check_scope(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["busybox", "docker.io/busybox", "*.example.com:5000", "a b", "localhost:5000/A"] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_identities_match_as_containers_image_matches_them() {
        let d = format!("sha256:{}", "c".repeat(64));
        let by_digest = r(&format!("localhost:5000/sig/app@{d}"));
        let by_tag = r("localhost:5000/sig/app:v1");
        use SignedIdentity::*;
        // The default: a digested image, any tagged identity of its repository; never a bare name.
        assert!(MatchRepoDigestOrExact.accepts(&by_digest, "localhost:5000/sig/app:v2").is_ok());
        assert!(MatchRepoDigestOrExact.accepts(&by_digest, "localhost:5000/sig/app").is_err());
        assert!(MatchRepoDigestOrExact.accepts(&by_digest, "localhost:5000/sig/other:v1").is_err());
        assert!(MatchRepoDigestOrExact.accepts(&by_tag, "localhost:5000/sig/app:v1").is_ok());
        assert!(MatchRepoDigestOrExact.accepts(&by_tag, "localhost:5000/sig/app:v2").is_err());
        // matchRepository: the repository alone (cosign signs bare names).
        assert!(MatchRepository.accepts(&by_digest, "localhost:5000/sig/app").is_ok());
        assert!(MatchRepository.accepts(&by_digest, "localhost:5000/sig/apps").is_err());
        assert!(MatchExact.accepts(&by_tag, "localhost:5000/sig/app:v1").is_ok());
        assert!(MatchExact.accepts(&by_digest, "localhost:5000/sig/app:v1").is_err());
        let elsewhere = r("registry.example.com/team/app");
        assert!(ExactRepository(elsewhere.clone()).accepts(&by_digest, "registry.example.com/team/app:v9").is_ok());
        assert!(ExactRepository(elsewhere).accepts(&by_digest, "localhost:5000/sig/app:v1").is_err());
        let exact = r("registry.example.com/team/app:v9");
        assert!(ExactReference(exact.clone()).accepts(&by_digest, "registry.example.com/team/app:v9").is_ok());
        assert!(ExactReference(exact).accepts(&by_digest, "registry.example.com/team/app:v8").is_err());
        // remapIdentity: the image's prefix rewritten, then matchRepoDigestOrExact.
        let remap =
            RemapIdentity { prefix: "localhost:5000/sig".into(), signed_prefix: "registry.example.com/team".into() };
        assert!(remap.accepts(&by_digest, "registry.example.com/team/app:v1").is_ok());
        assert!(remap.accepts(&by_digest, "localhost:5000/sig/app:v1").is_err());
        let partial =
            RemapIdentity { prefix: "localhost:5000/si".into(), signed_prefix: "registry.example.com/team".into() };
        assert!(partial.accepts(&by_digest, "localhost:5000/sig/app:v1").is_ok(), "a prefix matches on / only");
        assert!(MatchRepository.accepts(&by_digest, "not a reference").is_err());
    }
}
