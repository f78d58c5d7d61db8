//! Where credentials come from: `--username` with `--password-stdin` (read in `main.rs`), else
//! the docker `config.json` (`--auth-file`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), whose `auths` entry for the registry's host is used.
//!
//! Credential helpers (`credsStore`, `credHelpers`) are not run: one that would apply is named in
//! a warning. Where credentials are sent, and how, is `auth.rs`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:{}", self.username, self.password)))
    }
}

/// What a source of credentials gives: a username and password, or an identity token (docker's
/// `identitytoken`, a helper's `<token>` user), a refresh token exchanged at the token realm.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Basic(Credentials),
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic(c) => c.fmt(f),
            Secret::IdentityToken(_) => write!(f, "IdentityToken(<hidden>)"),
        }
    }
}

/// The default auth file: `$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`.
pub fn default_auth_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials a docker `config.json` holds for `host` (`host[:port]`), if any. A missing
/// file is not an error; an unreadable or malformed one is.
pub fn from_docker_config(path: &Path, host: &str) -> Result<Option<Credentials>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
    };
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| Error::malformed(path.display(), e))?;
    let wanted = normalize(host);
    let hub = wanted == "registry-1.docker.io";
    let matches = |key: &str| {
        let k = normalize(key);
        k == wanted || (hub && matches!(k.as_str(), "index.docker.io" | "docker.io" | "registry-1.docker.io"))
    };
    if let Some((_, a)) = config.auths.iter().find(|(k, _)| matches(k)) {
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(Some(Credentials { username: u.clone(), password: p.clone() }));
        }
        if let Some(auth) = &a.auth {
            let decoded = STANDARD
                .decode(auth.trim())
                .map_err(|_| Error::malformed(path.display(), format!("auth for {host} is not base64")))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| Error::malformed(path.display(), format!("auth for {host} is not UTF-8")))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| Error::malformed(path.display(), format!("auth for {host} is not user:password")))?;
            return Ok(Some(Credentials { username: u.to_string(), password: p.to_string() }));
        }
    }
    if config.creds_store.is_some() || config.cred_helpers.keys().any(|k| matches(k)) {
        log::warn!(
            "{}: credential helpers are not supported; use --username with --password-stdin for {host}",
            path.display()
        );
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:443` stays as written.
fn normalize(key: &str) -> String {
    let k = key.trim().trim_start_matches("https://").trim_start_matches("http://");
    k.split('/').next().unwrap_or("").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().expect("test input is valid");
        let path = dir.path().join("config.json");
        let auth = STANDARD.encode("alice:s3cret:with:colons");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"localhost:5000":{{"username":"bob","password":"pw"}}}}}}"#),
        )
        .expect("test input is valid");
        let hub = from_docker_config(&path, "registry-1.docker.io")
            .expect("test input is valid")
            .expect("test input is valid");
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("alice", "s3cret:with:colons"));
        let local =
            from_docker_config(&path, "localhost:5000").expect("test input is valid").expect("test input is valid");
        assert_eq!(local.username, "bob");
        assert!(from_docker_config(&path, "ghcr.io").expect("test input is valid").is_none());
        assert!(from_docker_config(&dir.path().join("missing.json"), "x").expect("test input is valid").is_none());
        std::fs::write(&path, "{").expect("test input is valid");
        assert!(from_docker_config(&path, "x").is_err());
    }
}
