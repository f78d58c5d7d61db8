//! Mirrors configured in files: containers-registries.conf(5), as podman, skopeo and buildah
//! read it, and containerd's `hosts.toml` (used when registries.conf gives the registry none).
//!
//! # Which files
//! `CONTAINERS_REGISTRIES_CONF` if set; else `~/.config/containers/registries.conf` if it exists
//! (and then only the user's drop-in directory); else `/etc/containers/registries.conf`. Then
//! the drop-ins, `*.conf` in name order: `/etc/containers/registries.conf.d/` (unless the
//! user's file was taken) and `~/.config/containers/registries.conf.d/`. A `[[registry]]` of a
//! later file replaces one of an earlier file with the same prefix. A missing file is passed
//! over; one that cannot be read or parsed stops the mount, naming it.
//!
//! # What is used
//! For the mount's registry (`host[:port]`; Docker Hub is `docker.io`), every `[[registry]]`
//! whose `prefix` (default: its `location`) is that host, a `*.domain` wildcard matching it, or
//! `host/namespace`: repositories under a namespace follow the entry with the longest prefix
//! that matches them. Of an entry:
//! - `[[registry.mirror]]` `location` (`host[:port][/namespace]`; a namespace is where the
//!   entry's repositories are at the mirror), `insecure = true` (http; regfs never skips TLS
//!   verification), `pull-from-mirror = "all" | "digest-only" | "tag-only"` (`tag-only` is read
//!   as `all`: regfs cannot tell which digests came from a tag);
//! - `mirror-by-digest-only = true`: none of its mirrors resolves tags;
//! - `blocked = true`: its repositories are refused (EACCES); the whole registry blocked refuses
//!   to mount;
//! - a `location` other than the prefix (the registry itself moved): logged, not applied (the
//!   mount reads the registry it was given).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Table;

use super::mirrors::MirrorSpec;
use crate::error::{Error, Result};

/// Where the files are looked for (injected, so tests need not change the process's).
#[derive(Debug, Clone, Default)]
pub struct ConfEnv {
    /// `CONTAINERS_REGISTRIES_CONF`.
    pub registries_conf: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// `/etc/containers` (another root in tests).
    pub etc: PathBuf,
}

impl ConfEnv {
    pub fn from_process() -> ConfEnv {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        ConfEnv {
            registries_conf: var("CONTAINERS_REGISTRIES_CONF"),
            home: var("HOME"),
            etc: PathBuf::from("/etc/containers"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Entry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

/// What the files say for the mount's registry: one group per matching `[[registry]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Longest `repos` first.
    pub groups: Vec<Group>,
}

/// The repositories under `repos` (all of them for "") and their mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub repos: String,
    pub blocked: bool,
    pub mirrors: Vec<MirrorSpec>,
    /// The file it came from, for the log.
    pub from: PathBuf,
}

/// The registries.conf files to read, in order (see the module's notes).
pub fn registries_conf_files(env: &ConfEnv) -> Vec<PathBuf> {
    let user_dir = env.home.as_ref().map(|h| h.join(".config/containers"));
    let user_file = user_dir.as_ref().map(|d| d.join("registries.conf")).filter(|f| f.exists());
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    match (&env.registries_conf, user_file) {
        (Some(f), _) => {
            files.push(f.clone());
            dirs.push(env.etc.join("registries.conf.d"));
        }
        (None, Some(f)) => files.push(f),
        (None, None) => {
            files.push(env.etc.join("registries.conf"));
            dirs.push(env.etc.join("registries.conf.d"));
        }
    }
    dirs.extend(user_dir.map(|d| d.join("registries.conf.d")));
    for dir in dirs {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        let mut drop_ins: Vec<PathBuf> =
            read.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

/// Read `files` (missing ones passed over); the entries by prefix, later files winning.
fn read_all(files: &[PathBuf]) -> Result<BTreeMap<String, (Entry, PathBuf)>> {
    let mut by_prefix = BTreeMap::new();
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
        };
        let file: File = toml::from_str(&text).map_err(|e| Error::malformed(path.display(), e.message()))?;
        for entry in file.registry {
            let Some(prefix) = entry.prefix.clone().or_else(|| entry.location.clone()) else {
                return Err(Error::malformed(path.display(), "a [[registry]] with neither prefix nor location"));
            };
            by_prefix.insert(prefix.trim_end_matches('/').to_string(), (entry, path.clone()));
        }
    }
    Ok(by_prefix)
}

/// The namespace `prefix` gives repositories of `host`: `Some("")` for the whole registry,
/// `Some(ns)` for a namespace, `None` if it is about another registry.
fn namespace_of(prefix: &str, host: &str) -> Option<String> {
    let (first, rest) = prefix.split_once('/').unwrap_or((prefix, ""));
    let matches = match first.strip_prefix("*.") {
        Some(domain) => rest.is_empty() && host.split(':').next().is_some_and(|h| h.ends_with(&format!(".{domain}"))),
        None => first == host,
    };
    matches.then(|| rest.to_string())
}

/// The mirrors `files` give the registry `host` (`host[:port]`, `docker.io` for Docker Hub).
pub fn plan(files: &[PathBuf], host: &str) -> Result<Plan> {
    let mut groups = Vec::new();
    for (prefix, (entry, from)) in read_all(files)? {
        let Some(repos) = namespace_of(&prefix, host) else { continue };
        if let Some(location) = entry.location.as_deref().filter(|l| l.trim_end_matches('/') != prefix) {
            log::warn!(
                "{}: [[registry]] {prefix:?} has location {location:?}; regfs reads the registry it was given, not applied",
                from.display()
            );
        }
        let mut mirrors = Vec::new();
        for m in &entry.mirror {
            mirrors.push(mirror_spec(m, entry.mirror_by_digest_only).map_err(|e| in_file(e, &from))?);
        }
        groups.push((prefix.starts_with("*."), Group { repos, blocked: entry.blocked, mirrors, from: from.clone() }));
    }
    // A wildcard and an exact entry may name the same namespace: the exact one wins (sorted first).
    groups.sort_by_key(|(wild, g)| (std::cmp::Reverse(g.repos.len()), *wild));
    groups.dedup_by(|later, earlier| later.1.repos == earlier.1.repos);
    Ok(Plan { groups: groups.into_iter().map(|(_, g)| g).collect() })
}

fn in_file(e: Error, from: &Path) -> Error {
    Error::BadArgument(format!("{}: {}", from.display(), e.tell()))
}

fn mirror_spec(m: &MirrorEntry, digest_only: bool) -> Result<MirrorSpec> {
    let resolve = match m.pull_from_mirror.as_deref() {
        None | Some("all") | Some("tag-only") => !digest_only,
        Some("digest-only") => false,
        Some(other) => {
            return Err(Error::BadArgument(format!("pull-from-mirror {other:?}: not all, digest-only or tag-only")));
        }
    };
    let location = m.location.trim_end_matches('/');
    let (authority, path) = location.split_once('/').unwrap_or((location, ""));
    let given = if m.insecure { format!("http://{authority}") } else { authority.to_string() };
    let url =
        super::endpoint::parse(&given).map_err(|e| Error::BadArgument(format!("mirror {location:?}: {}", e.tell())))?;
    Ok(MirrorSpec { url, resolve, path: path.to_string(), ca: Vec::new() })
}

/// containerd's `hosts.toml` for the registry `host` (`host[:port]`, `docker.io` for Docker Hub):
/// `DIR/<host>/hosts.toml`, else `DIR/_default/hosts.toml`; the file read (if any) and its
/// `[host."URL"]` mirrors in file order. `capabilities` (default pull and resolve) without
/// `pull` leaves a host out; without `resolve` it is asked for digests only. `ca` (a path or a
/// list) is trusted for that host; `skip_verify = true` is logged and not honoured (regfs never
/// skips TLS verification); a host with a path or `override_path` is logged and left out (regfs
/// speaks to `/v2/` at a host's root). `server` is the registry itself: not a mirror.
pub fn hosts_toml(dir: &Path, host: &str) -> Result<Option<(PathBuf, Vec<MirrorSpec>)>> {
    let mut found = None;
    for name in [host, "_default"] {
        let path = dir.join(name).join("hosts.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                found = Some((path, text));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
        }
    }
    let Some((path, text)) = found else { return Ok(None) };
    let bad = |why: String| Error::malformed(path.display(), why);
    let doc: Table = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
    let mut specs = Vec::new();
    let hosts = match doc.get("host") {
        None => return Ok(Some((path, specs))),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(bad("host is not a table".into())),
    };
    for (location, v) in hosts {
        let toml::Value::Table(h) = v else { return Err(bad(format!("host {location:?} is not a table"))) };
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            match h.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| bad(format!("{location}: {key} holds a non-string")))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => Err(bad(format!("{location}: {key} is not a string or a list"))),
            }
        };
        let caps = strings("capabilities")?.unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
        if !caps.iter().any(|c| c == "pull") {
            log::info!("{}: {location} cannot pull; not a mirror for reads", path.display());
            continue;
        }
        if h.get("skip_verify").and_then(toml::Value::as_bool) == Some(true) {
            log::warn!(
                "{}: {location}: skip_verify = true is not honoured; its certificate is verified",
                path.display()
            );
        }
        let url = super::endpoint::parse(location).map_err(|e| bad(format!("{location}: {}", e.tell())))?;
        let given_path =
            reqwest::Url::parse(location).map(|u| u.path().trim_matches('/').to_string()).unwrap_or_default();
        let override_path = h.get("override_path").and_then(toml::Value::as_bool) == Some(true);
        if override_path || !(given_path.is_empty() || given_path == "v2") {
            log::warn!("{}: {location}: a path (or override_path) is not supported; left out", path.display());
            continue;
        }
        // Relative to the file that names it (`DIR/<host>/` or `DIR/_default/`), as containerd reads it.
        let beside = path.parent().unwrap_or(dir);
        let ca = strings("ca")?.unwrap_or_default().into_iter().map(|c| beside.join(c)).collect();
        specs.push(MirrorSpec { url, resolve: caps.iter().any(|c| c == "resolve"), path: String::new(), ca });
    }
    Ok(Some((path, specs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn hosts_toml_hosts_in_order_with_capabilities() {
        let t = tempfile::tempdir().expect("tempdir");
        write(
            t.path(),
            "reg.example:5000/hosts.toml",
            r#"
server = "https://reg.example:5000"
[host."https://z-first.example"]
  capabilities = ["pull"]
  ca = "/etc/ca.pem"
[host."http://a-second.example:8080"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
[host."https://push-only.example"]
  capabilities = ["push"]
[host."https://pathed.example/some/path"]
[host."https://defaults.example/v2"]
  ca = ["rel.pem"]
"#,
        );
        write(t.path(), "_default/hosts.toml", "[host.\"https://fallback.example\"]\n");
        let (file, specs) = hosts_toml(t.path(), "reg.example:5000").expect("read").expect("found");
        assert_eq!(file, t.path().join("reg.example:5000/hosts.toml"));
        let got: Vec<(String, bool, Vec<PathBuf>)> =
            specs.iter().map(|s| (s.url.to_string(), s.resolve, s.ca.clone())).collect();
        assert_eq!(
            got,
            [
                ("https://z-first.example/".to_string(), false, vec![PathBuf::from("/etc/ca.pem")]),
                ("http://a-second.example:8080/".to_string(), true, vec![]),
                ("https://defaults.example/".to_string(), true, vec![t.path().join("reg.example:5000/rel.pem")]),
            ],
            "file order kept; push-only and pathed hosts left out; no capabilities means pull and resolve"
        );
        let (file, specs) = hosts_toml(t.path(), "other.example").expect("read").expect("the _default");
        assert_eq!((file, specs.len()), (t.path().join("_default/hosts.toml"), 1));
        assert!(hosts_toml(&t.path().join("none"), "reg.example:5000").expect("no dir").is_none());
        write(t.path(), "bad.example/hosts.toml", "[host.\"https://x\"]\ncapabilities = 3\n");
        let err = hosts_toml(t.path(), "bad.example").expect_err("bad capabilities");
        assert!(err.to_string().contains("bad.example/hosts.toml"), "{err}");
    }

    #[test]
    fn registries_conf_mirrors_for_the_registry_by_longest_prefix() {
        let t = tempfile::tempdir().expect("tempdir");
        let etc = t.path().join("etc");
        write(
            &etc,
            "registries.conf",
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "reg.example:5000"
location = "reg.example:5000"
[[registry.mirror]]
location = "first.example"
[[registry.mirror]]
location = "second.example:8080/cache"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
prefix = "reg.example:5000/team"
mirror-by-digest-only = true
[[registry.mirror]]
location = "team.example"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "reg.example:5000/secret"
blocked = true

[[registry]]
prefix = "other.example"
[[registry.mirror]]
location = "never.example"
"#,
        );
        // A drop-in replaces the entry of the same prefix.
        write(
            &etc,
            "registries.conf.d/50-team.conf",
            "[[registry]]\nprefix = \"reg.example:5000/team\"\nlocation = \"moved.example/team\"\n[[registry.mirror]]\nlocation = \"team2.example\"\n",
        );
        write(&etc, "registries.conf.d/ignored.txt", "not toml");
        let env = ConfEnv { registries_conf: None, home: Some(t.path().join("home")), etc: etc.clone() };
        let files = registries_conf_files(&env);
        assert_eq!(files, [etc.join("registries.conf"), etc.join("registries.conf.d/50-team.conf")]);
        let plan = plan(&files, "reg.example:5000").expect("plan");
        type Summary = Vec<(String, bool, Vec<(String, bool, String)>)>;
        let summary: Summary = plan
            .groups
            .iter()
            .map(|g| {
                let m = g.mirrors.iter().map(|m| (m.url.to_string(), m.resolve, m.path.clone())).collect();
                (g.repos.clone(), g.blocked, m)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("secret".to_string(), true, vec![]),
                ("team".to_string(), false, vec![("https://team2.example/".to_string(), true, String::new())]),
                (
                    String::new(),
                    false,
                    vec![
                        ("https://first.example/".to_string(), true, String::new()),
                        ("http://second.example:8080/".to_string(), false, "cache".to_string()),
                    ]
                ),
            ]
        );
        // The user's file, when there is one, is the only main file; CONTAINERS_REGISTRIES_CONF
        // wins over both.
        let home = t.path().join("home");
        let user = write(
            &home,
            ".config/containers/registries.conf",
            "[[registry]]\nlocation = \"reg.example:5000\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"u.example\"\n",
        );
        let env = ConfEnv { registries_conf: None, home: Some(home.clone()), etc: etc.clone() };
        assert_eq!(registries_conf_files(&env), [user]);
        let p = super::plan(&registries_conf_files(&env), "reg.example:5000").expect("plan");
        assert!(!p.groups[0].mirrors[0].resolve, "mirror-by-digest-only: no tags at its mirrors");
        let given = write(t.path(), "given.conf", "");
        let env = ConfEnv { registries_conf: Some(given.clone()), home: Some(home), etc: etc.clone() };
        assert_eq!(registries_conf_files(&env), [given, etc.join("registries.conf.d/50-team.conf")]);
        // Wildcards match subdomains; other registries get nothing.
        let wild = write(
            t.path(),
            "wild.conf",
            "[[registry]]\nprefix = \"*.corp.example\"\n[[registry.mirror]]\nlocation = \"m.corp.example\"\n",
        );
        assert_eq!(super::plan(std::slice::from_ref(&wild), "r.corp.example").expect("plan").groups.len(), 1);
        assert!(super::plan(std::slice::from_ref(&wild), "corp.example").expect("plan").groups.is_empty());
        let exact = write(t.path(), "exact.conf", "[[registry]]\nprefix = \"r.corp.example\"\n");
        let both = super::plan(&[wild, exact], "r.corp.example").expect("plan");
        assert!(both.groups.len() == 1 && both.groups[0].mirrors.is_empty(), "the exact prefix wins over a wildcard");
        // A bad file stops with its name.
        let bad = write(
            t.path(),
            "bad.conf",
            "[[registry]]\nprefix = \"x\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
        );
        let err = super::plan(std::slice::from_ref(&bad), "x").expect_err("bad pull-from-mirror");
        assert!(err.to_string().contains("bad.conf") && err.to_string().contains("sometimes"), "{err}");
        let broken = write(t.path(), "broken.conf", "[[registry]\n");
        let err = super::plan(&[broken], "x").expect_err("not toml");
        assert!(err.to_string().contains("broken.conf"), "{err}");
    }
}
