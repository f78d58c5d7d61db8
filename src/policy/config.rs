//! containers-policy.json(5), read as containers/image reads it: strictly. A field the format
//! does not have, a duplicate key, an empty requirement list, a scope not fully expanded, a
//! key that is not an ECDSA P-256 public key: each is an error naming the file, before
//! anything is mounted. Keys are read here, once.
//!
//! What regfs enforces of a valid file: `insecureAcceptAnything`, `reject`, and
//! `sigstoreSigned` with `keyPath`, `keyPaths`, `keyData` or `keyDatas` and any
//! `signedIdentity`. A requirement regfs cannot check (`signedBy`, GPG simple signing;
//! `sigstoreSigned` with `fulcio` or `pki`, keyless; with `rekorPublicKey…`, which asks for a
//! Rekor timestamp regfs does not verify) is accepted in the file and refuses every image it
//! applies to, saying which: failing closed, never open. Only the `docker` transport's scopes
//! apply; other transports' are checked for shape and otherwise ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::keys::{self, PublicKey};
use super::reference::{self, Reference, SignedIdentity};
use crate::manifest::json;

/// Bigger than any policy a person writes; refused past it.
const MAX_POLICY_FILE: u64 = 4 << 20;

/// One requirement: all of a scope's must hold.
#[derive(Debug, Clone)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SigstoreSigned {
        keys: Vec<PublicKey>,
        identity: SignedIdentity,
    },
    /// A requirement regfs reads but cannot check: refuses every image, saying `why`.
    Unsupported {
        why: String,
    },
}

impl Requirement {
    pub fn needs_signatures(&self) -> bool {
        matches!(self, Requirement::SigstoreSigned { .. })
    }
}

/// A parsed policy: the global default and the `docker` transport's scopes.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PathBuf,
    pub default: Vec<Requirement>,
    /// Scope (`""` is the transport's default) to its requirements.
    pub docker: BTreeMap<String, Vec<Requirement>>,
}

impl Policy {
    /// Read and check `file`; keys named by path are read relative to nothing (as c/image: as
    /// given).
    pub fn load(file: &Path) -> Result<Policy, String> {
        let shown = file.display();
        let meta = std::fs::metadata(file).map_err(|e| format!("{shown}: {e}"))?;
        if meta.len() > MAX_POLICY_FILE {
            return Err(format!("{shown}: {} bytes is not a policy", meta.len()));
        }
        let bytes = std::fs::read(file).map_err(|e| format!("{shown}: {e}"))?;
        Policy::parse(&bytes, file).map_err(|e| format!("{shown}: {e}"))
    }

    pub fn parse(bytes: &[u8], file: &Path) -> Result<Policy, String> {
        let doc = json::strict(bytes)?;
        let top = object(&doc, "the policy")?;
        only(top, "the policy", &["default", "transports"])?;
        let default = requirements(top.get("default").ok_or("no \"default\"")?, "default", "docker")?;
        let mut docker = BTreeMap::new();
        if let Some(t) = top.get("transports") {
            for (transport, scopes) in object(t, "transports")? {
                for (scope, reqs) in object(scopes, &format!("transports.{transport}"))? {
                    let at = format!("transports.{transport}.{scope:?}");
                    if transport == "docker" {
                        reference::check_scope(scope).map_err(|e| format!("{at}: {e}"))?;
                    }
                    let reqs = requirements(reqs, &at, transport)?;
                    if transport == "docker" {
                        docker.insert(scope.clone(), reqs);
                    }
                }
            }
        }
        Ok(Policy { file: file.to_path_buf(), default, docker })
    }

    /// The requirements for `image` and the scope they come from (`default` for the global
    /// default): the most specific docker scope that names it, as containers/image chooses.
    pub fn for_image(&self, image: &Reference) -> (&str, &[Requirement]) {
        for scope in reference::scopes(image) {
            if let Some((s, reqs)) = self.docker.get_key_value(&scope) {
                return (s, reqs);
            }
        }
        match self.docker.get_key_value("") {
            Some((_, reqs)) => ("transports.docker default", reqs),
            None => ("default", &self.default),
        }
    }

    /// The references with a tag or a digest that scopes of the policy name in repository
    /// `name` (`host/path`): the pulls a manifest of it may be judged as besides its own digest.
    pub fn reference_scopes(&self, name: &str) -> Vec<Reference> {
        self.docker
            .keys()
            .filter(|scope| scope.strip_prefix(name).is_some_and(|rest| rest.starts_with([':', '@'])))
            .filter_map(|scope| Reference::parse_normalized(scope).ok())
            .filter(|r| r.name == name && !r.is_name_only())
            .collect()
    }

    /// Whether anything here ever needs a signature (else no signature is ever fetched).
    pub fn needs_signatures(&self) -> bool {
        self.default.iter().chain(self.docker.values().flatten()).any(Requirement::needs_signatures)
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what} is not an object"))
}

fn only(m: &Map<String, Value>, what: &str, allowed: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unknown field {k:?}")),
        None => Ok(()),
    }
}

fn string<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<Option<&'a str>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{what}: {key} is not a string")),
    }
}

fn strings<'a>(m: &'a Map<String, Value>, key: &str, what: &str) -> Result<Option<Vec<&'a str>>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().ok_or_else(|| format!("{what}: {key} holds a non-string")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{what}: {key} is not a non-empty array of strings")),
    }
}

fn requirements(v: &Value, at: &str, transport: &str) -> Result<Vec<Requirement>, String> {
    let list = v.as_array().ok_or_else(|| format!("{at} is not an array"))?;
    if list.is_empty() {
        return Err(format!("{at}: no requirements (write [{{\"type\":\"reject\"}}] to refuse)"));
    }
    list.iter().enumerate().map(|(i, r)| requirement(r, &format!("{at}[{i}]"), transport)).collect()
}

fn requirement(v: &Value, at: &str, transport: &str) -> Result<Requirement, String> {
    let m = object(v, at)?;
    let kind = string(m, "type", at)?.ok_or_else(|| format!("{at}: no \"type\""))?;
    match kind {
        "insecureAcceptAnything" => only(m, at, &["type"]).map(|()| Requirement::InsecureAcceptAnything),
        "reject" => only(m, at, &["type"]).map(|()| Requirement::Reject),
        "signedBy" => {
            only(m, at, &["type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"])?;
            if string(m, "keyType", at)?.is_none() {
                return Err(format!("{at}: signedBy without keyType"));
            }
            identity(m.get("signedIdentity"), at)?;
            Ok(Requirement::Unsupported { why: "signedBy (GPG simple signing) is not verified by regfs".into() })
        }
        "sigstoreSigned" => sigstore_signed(m, at, transport),
        other => Err(format!("{at}: unknown requirement type {other:?}")),
    }
}

fn sigstore_signed(m: &Map<String, Value>, at: &str, transport: &str) -> Result<Requirement, String> {
    let sources = ["keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "pki"];
    let rekor = ["rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData", "rekorPublicKeyDatas"];
    let allowed: Vec<&str> = ["type", "signedIdentity"].iter().chain(&sources).chain(&rekor).copied().collect();
    only(m, at, &allowed)?;
    let given: Vec<&str> = sources.iter().copied().filter(|k| m.contains_key(*k)).collect();
    if given.len() != 1 {
        return Err(format!("{at}: sigstoreSigned needs exactly one of {} (has {})", sources.join(", "), given.len()));
    }
    let identity = identity(m.get("signedIdentity"), at)?;
    // Keys are read even for another transport: a bad key is an error wherever it is named.
    let mut pems: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(p) = string(m, "keyPath", at)? {
        pems.push(read_key(p, at)?);
    }
    for p in strings(m, "keyPaths", at)?.unwrap_or_default() {
        pems.push(read_key(p, at)?);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |d: &str, n: usize| {
        b64.decode(d).map(|b| (format!("keyData #{n}"), b)).map_err(|e| format!("{at}: keyData is not base64: {e}"))
    };
    if let Some(d) = string(m, "keyData", at)? {
        pems.push(decode(d, 1)?);
    }
    for (i, d) in strings(m, "keyDatas", at)?.unwrap_or_default().into_iter().enumerate() {
        pems.push(decode(d, i + 1)?);
    }
    if given[0] == "fulcio" || given[0] == "pki" {
        let _ = transport;
        return Ok(Requirement::Unsupported {
            why: format!("sigstoreSigned with {} (keyless) is not verified by regfs", given[0]),
        });
    }
    let keys = pems
        .into_iter()
        .map(|(name, pem)| keys::parse(&pem, &name).map_err(|e| format!("{at}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(k) = rekor.iter().find(|k| m.contains_key(**k)) {
        return Ok(Requirement::Unsupported {
            why: format!("sigstoreSigned with {k}: regfs does not verify Rekor timestamps"),
        });
    }
    Ok(Requirement::SigstoreSigned { keys, identity })
}

fn read_key(path: &str, at: &str) -> Result<(String, Vec<u8>), String> {
    if !Path::new(path).is_absolute() {
        return Err(format!("{at}: keyPath {path:?} is not absolute"));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{at}: key {path}: {e}"))?;
    if meta.len() > 64 << 10 {
        return Err(format!("{at}: key {path}: {} bytes is not a public key", meta.len()));
    }
    std::fs::read(path).map(|b| (path.to_string(), b)).map_err(|e| format!("{at}: key {path}: {e}"))
}

fn identity(v: Option<&Value>, at: &str) -> Result<SignedIdentity, String> {
    let Some(v) = v else { return Ok(SignedIdentity::MatchRepoDigestOrExact) };
    let at = format!("{at}.signedIdentity");
    let m = object(v, &at)?;
    let kind = string(m, "type", &at)?.ok_or_else(|| format!("{at}: no \"type\""))?;
    let reference = |key: &str| -> Result<Reference, String> {
        let s = string(m, key, &at)?.ok_or_else(|| format!("{at}: {kind} without {key}"))?;
        Reference::parse_normalized(s).map_err(|e| format!("{at}: {key} {s:?}: {e}"))
    };
    Ok(match kind {
        "matchExact" => only(m, &at, &["type"]).map(|()| SignedIdentity::MatchExact)?,
        "matchRepoDigestOrExact" => only(m, &at, &["type"]).map(|()| SignedIdentity::MatchRepoDigestOrExact)?,
        "matchRepository" => only(m, &at, &["type"]).map(|()| SignedIdentity::MatchRepository)?,
        "exactReference" => {
            only(m, &at, &["type", "dockerReference"])?;
            let r = reference("dockerReference")?;
            if r.is_name_only() {
                return Err(format!("{at}: exactReference needs a tag or digest"));
            }
            SignedIdentity::ExactReference(r)
        }
        "exactRepository" => {
            only(m, &at, &["type", "dockerRepository"])?;
            SignedIdentity::ExactRepository(reference("dockerRepository")?)
        }
        "remapIdentity" => {
            only(m, &at, &["type", "prefix", "signedPrefix"])?;
            let get = |k: &str| {
                string(m, k, &at)?.map(str::to_string).ok_or_else(|| format!("{at}: remapIdentity without {k}"))
            };
            let (prefix, signed_prefix) = (get("prefix")?, get("signedPrefix")?);
            for p in [&prefix, &signed_prefix] {
                reference::check_prefix(p).map_err(|e| format!("{at}: {e}"))?;
            }
            SignedIdentity::RemapIdentity { prefix, signed_prefix }
        }
        other => return Err(format!("{at}: unknown identity type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Policy, String> {
        Policy::parse(s.as_bytes(), Path::new("policy.json"))
    }

    fn key_data() -> String {
        base64::engine::general_purpose::STANDARD.encode(super::keys::tests::key_pair("config").1)
    }

    #[test]
    fn debian_s_default_policy_reads_and_accepts_anything() {
        let p = parse(r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}"#)
            .expect("the stock file");
        let img = Reference::parse_normalized("localhost:5000/a:v1").expect("ref");
        assert_eq!(p.for_image(&img).0, "default");
        assert!(!p.needs_signatures());
    }

    #[test]
    fn the_most_specific_docker_scope_wins() {
        let data = key_data();
        let doc = format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{
                "localhost:5000":[{{"type":"insecureAcceptAnything"}}],
                "localhost:5000/sig":[{{"type":"sigstoreSigned","keyData":"{data}","signedIdentity":{{"type":"matchRepository"}}}}],
                "localhost:5000/sig/app:v1":[{{"type":"reject"}}]}}}}}}"#
        );
        let p = parse(&doc).expect("policy");
        let d = format!("sha256:{}", "a".repeat(64));
        let at = |s: &str| p.for_image(&Reference::parse_normalized(s).expect("ref")).0.to_string();
        assert_eq!(at(&format!("localhost:5000/sig/app@{d}")), "localhost:5000/sig");
        assert_eq!(at("localhost:5000/sig/app:v1"), "localhost:5000/sig/app:v1");
        assert_eq!(at("localhost:5000/other:v1"), "localhost:5000");
        assert_eq!(at("docker.io/library/busybox:1"), "default");
        let tags: Vec<String> = p.reference_scopes("localhost:5000/sig/app").iter().map(Reference::full).collect();
        assert_eq!(tags, ["localhost:5000/sig/app:v1"]);
        assert!(p.needs_signatures());
    }

    #[test]
    fn files_are_read_strictly() {
        let data = key_data();
        let bad = [
            r#"{}"#.to_string(),
            r#"{"default":[]}"#.to_string(),
            r#"{"default":[{"type":"reject"}],"extra":1}"#.to_string(),
            r#"{"default":[{"type":"reject","keyPath":"/x"}]}"#.to_string(),
            r#"{"default":[{"type":"reject"}],"default":[{"type":"reject"}]}"#.to_string(),
            r#"{"default":[{"type":"acceptEverything"}]}"#.to_string(),
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"busybox":[{"type":"reject"}]}}}"#.to_string(),
            r#"{"default":[{"type":"sigstoreSigned"}]}"#.to_string(),
            format!(r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{data}","keyPath":"/k"}}]}}"#),
            r#"{"default":[{"type":"sigstoreSigned","keyData":"bm90IGEga2V5"}]}"#.to_string(),
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"relative.pub"}]}"#.to_string(),
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/key.pub"}]}"#.to_string(),
            format!(
                r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{data}","signedIdentity":{{"type":"exactReference","dockerReference":"localhost:5000/a"}}}}]}}"#
            ),
            format!(
                r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{data}","signedIdentity":{{"type":"matchAnything"}}}}]}}"#
            ),
        ];
        for b in bad {
            assert!(parse(&b).is_err(), "accepted {b}");
        }
        let unsupported = [
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k.gpg"}]}"#.to_string(),
            r#"{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/ca","oidcIssuer":"x","subjectEmail":"y"},"rekorPublicKeyPath":"/r"}]}"#.to_string(),
            format!(r#"{{"default":[{{"type":"sigstoreSigned","keyData":"{data}","rekorPublicKeyData":"{data}"}}]}}"#),
        ];
        for u in unsupported {
            let p = parse(&u).unwrap_or_else(|e| panic!("{u}: {e}"));
            assert!(matches!(p.default[0], Requirement::Unsupported { .. }), "{u}");
        }
    }
}
