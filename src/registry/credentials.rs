//! Where credentials come from, and fetching them again when the registry refuses them.
//!
//! # Lookup (once, before mounting)
//! `--username` with `--password-stdin` (read in `main.rs`) is used as given. Else the auth files
//! are searched in the order podman and skopeo use (containers-auth.json(5)), [`auth_files`]:
//! `--auth-file` alone if given; else `REGISTRY_AUTH_FILE` (in place of the next), else
//! `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/<uid>/auth.json` without it), then
//! `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), and the legacy `~/.dockercfg`. In each file, as docker reads its own:
//! the helper `credHelpers` names for the host, else the `credsStore` helper, else the `auths`
//! entry (`auth`, `username`/`password`, or an `identitytoken`). The first file with a credential
//! for the host wins (a helper that has none passes to the next file); the log names it. Keys
//! naming a namespace (`host/team`) are not used: one set of credentials per mount.
//!
//! Helpers are run through `helper.rs` (bounded in time and output).
//!
//! # Refreshing ([`Login`])
//! What was found is a [`Login`]: the secret and where it came from. When the registry refuses
//! it (`auth.rs`), [`Login::refresh`] reads the file again or asks the helper again, at most once
//! per [`CREDENTIAL_REFRESH_EVERY`] (concurrent refusals share one refresh), and says whether
//! the secret changed; only then is the request tried once more. Credentials given on the
//! command line are never refreshed. Where credentials are sent, and how, is `auth.rs`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::limits::CREDENTIAL_REFRESH_EVERY;
use crate::sync;

pub use super::secret::{Credentials, Secret};

/// The environment the lookup reads (injected, so tests need not change the process's).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub uid: u32,
}

impl Env {
    /// `REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR`, `XDG_CONFIG_HOME`, `DOCKER_CONFIG`, `HOME` (empty
    /// ones as unset), and the real user id.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Env {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
            uid: rustix::process::getuid().as_raw(),
        }
    }
}

/// One file to search, and whether it is in the legacy `~/.dockercfg` form (a bare host map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFile {
    pub path: PathBuf,
    pub legacy: bool,
    /// Named by the user (`--auth-file`, `REGISTRY_AUTH_FILE`), not implied by the search order.
    /// One the user cannot read is an error; an implied one they cannot read (podman run as root
    /// leaves `/run/containers` root's own, 0700) holds nothing for them, and is passed by.
    pub chosen: bool,
}

/// The files searched for credentials, in order (see the module's notes).
pub fn auth_files(given: Option<&Path>, env: &Env) -> Vec<AuthFile> {
    let file = |path: PathBuf| AuthFile { path, legacy: false, chosen: false };
    if let Some(g) = given {
        return vec![AuthFile { chosen: true, ..file(g.to_path_buf()) }];
    }
    let mut out = Vec::new();
    out.push(match (&env.registry_auth_file, &env.xdg_runtime_dir) {
        (Some(f), _) => AuthFile { chosen: true, ..file(f.clone()) },
        (None, Some(run)) => file(run.join("containers/auth.json")),
        (None, None) => file(PathBuf::from(format!("/run/containers/{}/auth.json", env.uid))),
    });
    match (&env.xdg_config_home, &env.home) {
        (Some(c), _) => out.push(file(c.join("containers/auth.json"))),
        (None, Some(h)) => out.push(file(h.join(".config/containers/auth.json"))),
        (None, None) => {}
    }
    match (&env.docker_config, &env.home) {
        (Some(d), _) => out.push(file(d.join("config.json"))),
        (None, Some(h)) => out.push(file(h.join(".docker/config.json"))),
        (None, None) => {}
    }
    if let Some(h) = &env.home {
        out.push(AuthFile { path: h.join(".dockercfg"), legacy: true, chosen: false });
    }
    out
}

#[derive(Deserialize, Default)]
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
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Where a [`Login`]'s secret came from, to fetch it again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The command line: never fetched again.
    Fixed,
    /// An `auths` entry of a file.
    File { file: AuthFile, host: String },
    /// A credential helper, asked for `server`.
    Helper { program: String, server: String, named_in: PathBuf },
}

/// Credentials found, and where from: shared by the transport, which asks for them again when
/// the registry refuses them ([`Login::refresh`]).
#[derive(Clone)]
pub struct Login(Arc<LoginState>);

struct LoginState {
    source: Source,
    helper_timeout: Duration,
    current: Mutex<Secret>,
    /// When it was last fetched again (not counting the first time); also the refresh lock.
    refreshed: Mutex<Option<Instant>>,
    every: Duration,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({})", self.from())
    }
}

impl PartialEq for Login {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Login {}

impl Login {
    fn new(source: Source, secret: Secret, helper_timeout: Duration) -> Login {
        Login(Arc::new(LoginState {
            source,
            helper_timeout,
            current: Mutex::new(secret),
            refreshed: Mutex::new(None),
            every: CREDENTIAL_REFRESH_EVERY,
        }))
    }

    /// Credentials given on the command line.
    pub fn fixed(secret: Secret) -> Login {
        Login::new(Source::Fixed, secret, Duration::ZERO)
    }

    /// The secret to send now.
    pub fn current(&self) -> Secret {
        sync::lock(&self.0.current).clone()
    }

    /// Where the secret came from, for messages (never the secret).
    pub fn from(&self) -> String {
        match &self.0.source {
            Source::Fixed => "--username".to_string(),
            Source::File { file, .. } => file.path.display().to_string(),
            Source::Helper { program, named_in, .. } => format!("{program} (named in {})", named_in.display()),
        }
    }

    /// The registry refused `refused`: fetch the credentials again, unless another request did
    /// since (then `true` at once) or the last refresh was less than the interval ago (`false`).
    /// `true`: there is another secret to try.
    pub fn refresh(&self, refused: &Secret) -> Result<bool> {
        let mut refreshed = sync::lock(&self.0.refreshed);
        if self.current() != *refused {
            return Ok(true);
        }
        if matches!(self.0.source, Source::Fixed) || refreshed.is_some_and(|at| at.elapsed() < self.0.every) {
            return Ok(false);
        }
        *refreshed = Some(Instant::now());
        let fresh = match &self.0.source {
            Source::Fixed => None,
            Source::File { file, host } => read_auth_file(file, host)?.and_then(|(_, found)| match found {
                Found::Secret(s) => Some(s),
                Found::Helper { .. } => None,
            }),
            Source::Helper { program, server, .. } => super::helper::run(program, server, self.0.helper_timeout)?,
        };
        log::info!("credentials refused; fetched again from {}", self.from());
        match fresh {
            Some(s) if s != *refused => {
                *sync::lock(&self.0.current) = s;
                Ok(true)
            }
            _ => {
                log::warn!("{} gave the same credentials again", self.from());
                Ok(false)
            }
        }
    }

    /// The registry's token service gave a new refresh token: use it from now on.
    pub fn replace_identity_token(&self, token: String) {
        let mut current = sync::lock(&self.0.current);
        if matches!(*current, Secret::IdentityToken(_)) {
            *current = Secret::IdentityToken(token);
        }
    }
}

/// What one file says for a host.
enum Found {
    Secret(Secret),
    /// Ask this helper (from `credHelpers` or `credsStore`).
    Helper {
        program: String,
    },
}

/// Look `host` (`host[:port]`) up in the auth files (see the module's notes): the first file
/// with a credential for it wins. A missing file is passed over; an unreadable or malformed one,
/// or a helper that fails, is an error naming the file.
pub fn lookup(host: &str, given: Option<&Path>, env: &Env, helper_timeout: Duration) -> Result<Option<Login>> {
    for file in auth_files(given, env) {
        let Some((path, found)) = read_auth_file(&file, host)? else { continue };
        match found {
            Found::Secret(secret) => {
                log::info!("credentials for {host} from {}", path.display());
                return Ok(Some(Login::new(Source::File { file, host: host.to_string() }, secret, helper_timeout)));
            }
            Found::Helper { program } => {
                let server = helper_server(host);
                let secret = super::helper::run(&program, &server, helper_timeout).map_err(|e| in_file(e, &path))?;
                match secret {
                    Some(secret) => {
                        log::info!("credentials for {host} from {program}, named in {}", path.display());
                        let source = Source::Helper { program, server, named_in: path };
                        return Ok(Some(Login::new(source, secret, helper_timeout)));
                    }
                    None => log::info!("{program} (named in {}) has no credentials for {host}", path.display()),
                }
            }
        }
    }
    Ok(None)
}

/// What docker sends a helper for a host: `https://index.docker.io/v1/` for Docker Hub.
fn helper_server(host: &str) -> String {
    if normalize(host) == "registry-1.docker.io" { "https://index.docker.io/v1/".to_string() } else { host.to_string() }
}

/// An error about a helper, with the file that named it.
fn in_file(e: Error, path: &Path) -> Error {
    let named = |d: String| format!("{d} (named in {})", path.display());
    match e {
        Error::BadArgument(d) => Error::BadArgument(named(d)),
        Error::Denied(d) => Error::Denied(named(d)),
        Error::TooLarge(d) => Error::TooLarge(named(d)),
        Error::Malformed { what, why } => Error::Malformed { what: named(what), why },
        other => other,
    }
}

/// What `file` holds for `host`, if anything (and the file's path).
fn read_auth_file(file: &AuthFile, host: &str) -> Result<Option<(PathBuf, Found)>> {
    let path = &file.path;
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !file.chosen => {
            log::warn!("{}: {e}: passed by (not named by --auth-file or REGISTRY_AUTH_FILE)", path.display());
            return Ok(None);
        }
        Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
    };
    let config: DockerConfig = if file.legacy {
        let auths: HashMap<String, DockerAuth> =
            serde_json::from_slice(&text).map_err(|e| Error::malformed(path.display(), e))?;
        DockerConfig { auths, ..DockerConfig::default() }
    } else {
        serde_json::from_slice(&text).map_err(|e| Error::malformed(path.display(), e))?
    };
    let wanted = normalize(host);
    let hub = wanted == "registry-1.docker.io";
    let matches = |key: &str| {
        let k = normalize(key);
        k == wanted || (hub && matches!(k.as_str(), "index.docker.io" | "docker.io" | "registry-1.docker.io"))
    };
    if let Some((_, name)) = config.cred_helpers.iter().find(|(k, _)| !is_namespace(k) && matches(k)) {
        return Ok(Some((path.clone(), Found::Helper { program: format!("docker-credential-{name}") })));
    }
    if let Some(name) = config.creds_store.as_deref().filter(|n| !n.is_empty()) {
        return Ok(Some((path.clone(), Found::Helper { program: format!("docker-credential-{name}") })));
    }
    let skipped: Vec<&str> =
        config.auths.keys().filter(|k| is_namespace(k) && matches(k)).map(String::as_str).collect();
    if !skipped.is_empty() {
        log::info!("{}: entries for a namespace are not used (one login per mount): {skipped:?}", path.display());
    }
    let Some((_, a)) = config.auths.iter().find(|(k, _)| !is_namespace(k) && matches(k)) else { return Ok(None) };
    Ok(entry(a, path, host)?.map(|s| (path.clone(), Found::Secret(s))))
}

/// The secret of one `auths` entry: an identity token first (as docker), then `username` and
/// `password`, then `auth` (base64 of `user:password`). An entry without any is none.
fn entry(a: &DockerAuth, path: &Path, host: &str) -> Result<Option<Secret>> {
    if let Some(t) = a.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Secret::IdentityToken(t.to_string())));
    }
    if let (Some(u), Some(p)) = (&a.username, &a.password) {
        return Ok(Some(Secret::Basic(Credentials { username: u.clone(), password: p.clone() })));
    }
    if let Some(auth) = a.auth.as_deref().filter(|a| !a.trim().is_empty()) {
        let decoded = STANDARD
            .decode(auth.trim())
            .map_err(|_| Error::malformed(path.display(), format!("auth for {host} is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| Error::malformed(path.display(), format!("auth for {host} is not UTF-8")))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| Error::malformed(path.display(), format!("auth for {host} is not user:password")))?;
        return Ok(Some(Secret::Basic(Credentials { username: u.to_string(), password: p.to_string() })));
    }
    Ok(None)
}

/// `host/namespace[/repo]`: a key for part of a registry (containers-auth.json(5)); a URL
/// (`https://index.docker.io/v1/`) is docker's way of naming a whole registry.
fn is_namespace(key: &str) -> bool {
    !key.contains("://") && key.trim_end_matches('/').contains('/')
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
    fn auth_files_are_searched_in_podmans_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        let env = Env {
            registry_auth_file: p("/r/auth.json"),
            xdg_runtime_dir: p("/run/user/7"),
            xdg_config_home: None,
            docker_config: None,
            home: p("/home/u"),
            uid: 7,
        };
        let files = |env: &Env, given: Option<&Path>| -> Vec<String> {
            auth_files(given, env)
                .iter()
                .map(|f| {
                    let legacy = if f.legacy { " (legacy)" } else { "" };
                    let chosen = if f.chosen { " (chosen)" } else { "" };
                    format!("{}{legacy}{chosen}", f.path.display())
                })
                .collect()
        };
        // REGISTRY_AUTH_FILE takes the runtime file's place (as podman's --authfile); the rest follow.
        assert_eq!(
            files(&env, None),
            [
                "/r/auth.json (chosen)",
                "/home/u/.config/containers/auth.json",
                "/home/u/.docker/config.json",
                "/home/u/.dockercfg (legacy)"
            ]
        );
        let env = Env { registry_auth_file: None, xdg_config_home: p("/cfg"), docker_config: p("/dc"), ..env };
        assert_eq!(
            files(&env, None),
            [
                "/run/user/7/containers/auth.json",
                "/cfg/containers/auth.json",
                "/dc/config.json",
                "/home/u/.dockercfg (legacy)"
            ]
        );
        let env = Env { xdg_runtime_dir: None, home: None, ..env };
        assert_eq!(files(&env, None), ["/run/containers/7/auth.json", "/cfg/containers/auth.json", "/dc/config.json"]);
        // --auth-file: that file alone. A file the user named and cannot read is an error; one
        // only the search order implies is passed by (`read_auth_file`).
        assert_eq!(files(&env, Some(Path::new("/mine.json"))), ["/mine.json (chosen)"]);

        // The first file with a credential for the host wins; files without it are passed over,
        // namespace keys (`host/ns`) are not used, a legacy ~/.dockercfg is a bare host map.
        let dir = tempfile::tempdir().expect("test input is valid");
        let d = dir.path();
        let auth = |pw: &str| STANDARD.encode(format!("u:{pw}"));
        std::fs::create_dir_all(d.join("run/containers")).expect("test input is valid");
        std::fs::create_dir_all(d.join("home/.docker")).expect("test input is valid");
        std::fs::write(
            d.join("run/containers/auth.json"),
            format!(
                r#"{{"auths":{{"other:1":{{"auth":"{}"}},"reg:5000/team":{{"auth":"{}"}}}}}}"#,
                auth("x"),
                auth("ns")
            ),
        )
        .expect("test input is valid");
        std::fs::write(
            d.join("home/.docker/config.json"),
            format!(r#"{{"auths":{{"reg:5000":{{"auth":"{}"}}}}}}"#, auth("docker")),
        )
        .expect("test input is valid");
        std::fs::write(
            d.join("home/.dockercfg"),
            format!(r#"{{"legacy:1":{{"auth":"{}","email":"e"}}}}"#, auth("old")),
        )
        .expect("test input is valid");
        let env = Env {
            registry_auth_file: None,
            xdg_runtime_dir: Some(d.join("run")),
            xdg_config_home: None,
            docker_config: None,
            home: Some(d.join("home")),
            uid: 7,
        };
        let t = Duration::from_secs(5);
        let found = |host: &str| lookup(host, None, &env, t).expect("test input is valid").map(|l| l.current());
        let basic = |pw: &str| Some(Secret::Basic(Credentials { username: "u".into(), password: pw.into() }));
        assert_eq!(found("reg:5000"), basic("docker"));
        assert_eq!(found("other:1"), basic("x"));
        assert_eq!(found("legacy:1"), basic("old"));
        assert_eq!(found("nowhere:1"), None);
        // An identity token is one.
        std::fs::write(
            d.join("run/containers/auth.json"),
            r#"{"auths":{"reg:5000":{"auth":"dTo=","identitytoken":"idt"}}}"#,
        )
        .expect("test input is valid");
        assert_eq!(found("reg:5000"), Some(Secret::IdentityToken("idt".into())));
        // A malformed file is an error naming it, not passed over.
        std::fs::write(d.join("run/containers/auth.json"), "{").expect("test input is valid");
        let e = lookup("reg:5000", None, &env, t).expect_err("malformed").to_string();
        assert!(e.contains("auth.json"), "{e}");
    }

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
        let t = Duration::from_secs(5);
        let env = Env::default();
        let found = |p: &Path, host: &str| lookup(host, Some(p), &env, t).map(|l| l.map(|l| l.current()));
        let basic = |u: &str, p: &str| Some(Secret::Basic(Credentials { username: u.into(), password: p.into() }));
        assert_eq!(
            found(&path, "registry-1.docker.io").expect("test input is valid"),
            basic("alice", "s3cret:with:colons")
        );
        assert_eq!(found(&path, "localhost:5000").expect("test input is valid"), basic("bob", "pw"));
        assert!(found(&path, "ghcr.io").expect("test input is valid").is_none());
        assert!(found(&dir.path().join("missing.json"), "x").expect("test input is valid").is_none());
        std::fs::write(&path, "{").expect("test input is valid");
        assert!(found(&path, "x").is_err());
    }
}
