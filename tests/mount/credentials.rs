//! Credentials where people keep them: docker's credential helpers (`credHelpers`, `credsStore`)
//! run through the `docker-credential-<name> get` protocol, containers' `auth.json` looked up as
//! podman and skopeo do, identity tokens exchanged as docker does, and credentials that expire
//! while mounted fetched again. Against the reference registry with htpasswd, or the HTTP front
//! demanding bearer tokens; the helpers are real programs the tests put on `PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{Mount, Registry, sha256sum, shared, start_forever};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

/// A registry demanding Basic auth (htpasswd), with the fixtures pushed; shared by this file.
fn locked() -> &'static (Registry, serde_json::Value) {
    static LOCKED: OnceLock<(Registry, serde_json::Value)> = OnceLock::new();
    LOCKED.get_or_init(|| {
        start_forever(|| {
            let htpasswd = Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]).output().expect("htpasswd");
            assert!(htpasswd.status.success());
            let r = Registry::start(Some(&String::from_utf8_lossy(&htpasswd.stdout)));
            let f = r.push_fixtures(Some((USER, PASSWORD)));
            (r, f)
        })
    })
}

/// The first layer of the first docker-schema2 image: (path in the mount, digest).
fn a_layer(fixtures: &serde_json::Value) -> (String, String) {
    let img = crate::common::images(fixtures, "docker-schema2")[0];
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_string();
    (format!("{}/tags/{}/layers/0.tar.gz", s(&img["repo"]), s(&img["tag"])), s(&img["layers"][0]["digest"]))
}

/// A user's world: a home, a runtime dir, a config home, a bin dir on `PATH`, a cache.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let w = World { dir: tempfile::tempdir().expect("world") };
        for d in ["home/.docker", "home/.config/containers", "run/containers", "bin"] {
            std::fs::create_dir_all(w.dir.path().join(d)).expect("dir");
        }
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// A `docker-credential-<name>` on this world's `PATH`.
    fn helper(&self, name: &str, body: &str) {
        let p = self.write(&format!("bin/docker-credential-{name}"), &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The environment regfs runs in: the variables the lookup reads set to this world, but
    /// `REGISTRY_AUTH_FILE`, which would hide the runtime dir's file (it is unset here).
    fn env(&self, extra: &[(&'static str, PathBuf)]) -> Vec<(&'static str, PathBuf)> {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut env = vec![
            ("HOME", self.path("home")),
            ("PATH", PathBuf::from(path)),
            ("XDG_RUNTIME_DIR", self.path("run")),
            ("XDG_CONFIG_HOME", self.path("home/.config")),
            ("DOCKER_CONFIG", self.path("home/.docker")),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k, v.clone()));
        }
        env
    }

    fn mount(&self, url: &str, args: &[&str], extra: &[(&'static str, PathBuf)]) -> Mount {
        // Inside the world, so it goes with it.
        static MOUNTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MOUNTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cache = self.path(&format!("cache-{n}"));
        let mut all = vec!["--cache-dir".to_string(), cache.to_string_lossy().into_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let env = self.env(extra);
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        Mount::start_env(url, &all, &env, cache.clone(), cache.with_extension("log"))
    }

    /// Run regfs in the background mode, expecting it to refuse to mount: its stderr, and how
    /// long it took.
    fn refused(&self, url: &str, args: &[&str]) -> (String, Duration) {
        let mnt = tempfile::tempdir().expect("mountpoint");
        let cache = tempfile::tempdir().expect("cache");
        let started = Instant::now();
        let out = Command::new(crate::common::regfs_bin())
            .arg(url)
            .arg(mnt.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .envs(self.env(&[]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("regfs");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "regfs mounted anyway: {stderr}");
        assert!(!crate::common::is_mounted(mnt.path()));
        (stderr, took)
    }
}

/// Gone, or a zombie nobody reaped yet.
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A helper that logs the server it was asked for and answers with the password in `pw`.
fn logging_helper(w: &World, name: &str) {
    w.write("pw", PASSWORD);
    w.helper(
        name,
        &format!(
            r#"[ "$1" = get ] || exit 9
server=$(cat)
echo "$server" >> {log}
printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"%s"}}' "$server" "$(cat {pw})""#,
            log = w.path("helper.log").display(),
            pw = w.path("pw").display()
        ),
    );
}

#[test]
fn credential_helpers_named_in_the_docker_config_are_run_with_the_host_on_stdin() {
    let (registry, fixtures) = locked();
    let (layer, digest) = a_layer(fixtures);
    let host = format!("127.0.0.1:{}", registry.port);
    let w = World::new();
    logging_helper(&w, "regfstest");

    // credHelpers: the helper named for this host.
    w.write("home/.docker/config.json", &format!(r#"{{"credHelpers":{{"{host}":"regfstest"}}}}"#));
    let m = w.mount(&registry.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    let log = m.log();
    assert!(!log.contains("not supported"), "{log}");
    assert!(!log.contains(PASSWORD), "the password reached the log: {log}");
    drop(m);
    let asked = std::fs::read_to_string(w.path("helper.log")).expect("the helper was run");
    assert_eq!(asked.lines().collect::<Vec<_>>(), [host.as_str()]);

    // credsStore: the helper for every host.
    std::fs::remove_file(w.path("helper.log")).expect("rm");
    w.write("home/.docker/config.json", r#"{"credsStore":"regfstest","auths":{"ignored.example":{}}}"#);
    let m = w.mount(&registry.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    drop(m);
    let asked = std::fs::read_to_string(w.path("helper.log")).expect("the helper was run");
    assert_eq!(asked.lines().collect::<Vec<_>>(), [host.as_str()]);
}

#[test]
fn a_missing_slow_or_failing_helper_is_reported_and_never_hangs() {
    let (registry, _) = locked();
    let host = format!("127.0.0.1:{}", registry.port);
    let w = World::new();
    let config = w.path("home/.docker/config.json");
    let use_helper = |name: &str| {
        w.write("home/.docker/config.json", &format!(r#"{{"credHelpers":{{"{host}":"{name}"}}}}"#));
    };

    // Missing: named, with the file that names it.
    use_helper("nosuch");
    let (out, _) = w.refused(&registry.url, &[]);
    assert!(out.contains("docker-credential-nosuch") && out.contains(&config.display().to_string()), "{out}");

    // Hung (and its child holding the pipes): refused once --helper-timeout has passed, and no
    // process of it left behind.
    let pids = w.path("pids");
    w.helper("hangs", &format!("echo $$ > {0}; sleep 600 & echo $! >> {0}; wait", pids.display()));
    use_helper("hangs");
    let (out, took) = w.refused(&registry.url, &["--helper-timeout", "2"]);
    assert!(out.contains("docker-credential-hangs") && out.contains("2 s"), "{out}");
    assert!(took < Duration::from_secs(3), "refusing a hung helper took {took:?}");
    let pids = std::fs::read_to_string(&pids).expect("the helper ran");
    assert_eq!(pids.lines().count(), 2, "{pids}");
    std::thread::sleep(Duration::from_millis(100));
    for pid in pids.lines() {
        assert!(gone(pid), "process {pid} of the hung helper is still there");
    }

    // Failing: its stderr quoted, its stdout never.
    w.helper("fails", "echo 'stdout-secret-xyz'; echo 'the keyring is locked' >&2; exit 3");
    use_helper("fails");
    let (out, _) = w.refused(&registry.url, &[]);
    assert!(out.contains("docker-credential-fails") && out.contains("the keyring is locked"), "{out}");
    assert!(!out.contains("stdout-secret-xyz"), "{out}");

    // Not found: no credentials, so anonymous, which this registry refuses as such ...
    w.helper("empty", "cat >/dev/null; echo 'credentials not found in native keychain'; exit 1");
    use_helper("empty");
    let (out, _) = w.refused(&registry.url, &[]);
    assert!(out.contains("username and password"), "{out}");
    // ... and a registry open to all mounts.
    let sh = shared();
    let (layer, digest) = a_layer(&sh.fixtures);
    let open = format!("127.0.0.1:{}", sh.registry.port);
    w.write("home/.docker/config.json", &format!(r#"{{"credHelpers":{{"{open}":"empty"}}}}"#));
    let m = w.mount(&sh.registry.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
}

#[test]
fn auth_json_is_found_where_podman_and_skopeo_put_it() {
    use base64::Engine as _;
    let (registry, fixtures) = locked();
    let (layer, digest) = a_layer(fixtures);
    let host = format!("127.0.0.1:{}", registry.port);
    let auths = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)
    };
    let w = World::new();
    // Docker's file has a wrong password: it comes last.
    w.write("home/.docker/config.json", &auths("wrong"));

    // $XDG_RUNTIME_DIR/containers/auth.json (podman login's default) comes first.
    let runtime = w.write("run/containers/auth.json", &auths(PASSWORD));
    let m = w.mount(&registry.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    let log = m.log();
    assert!(log.contains(&runtime.display().to_string()), "the file chosen is not logged: {log}");
    drop(m);

    // ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json next, before docker's.
    std::fs::remove_file(&runtime).expect("rm");
    let config_home = w.write("home/.config/containers/auth.json", &auths(PASSWORD));
    let m = w.mount(&registry.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    assert!(m.log().contains(&config_home.display().to_string()));
    drop(m);

    // REGISTRY_AUTH_FILE (skopeo's and podman's override) before the runtime dir's file, which
    // now holds a wrong password; a file without this host is passed over.
    w.write("run/containers/auth.json", &auths("wrong"));
    w.write("home/.config/containers/auth.json", r#"{"auths":{"other.example":{"auth":"eDp5"}}}"#);
    let chosen = w.write("chosen.json", &auths(PASSWORD));
    let m = w.mount(&registry.url, &[], &[("REGISTRY_AUTH_FILE", chosen.clone())]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    assert!(m.log().contains(&chosen.display().to_string()));
    drop(m);

    // With none right, the first that has the host is the one used: refused.
    let (out, _) = w.refused(&registry.url, &[]);
    assert!(out.contains("access denied"), "{out}");
}

#[test]
fn an_identity_token_is_exchanged_for_bearer_tokens_as_docker_does() {
    use crate::common::front::{Bearer, Behavior, Front};
    let sh = shared();
    let (layer, digest) = a_layer(&sh.fixtures);
    let identity = "idt-refresh-7f3a";
    let front = Front::start(
        &sh.registry.url,
        Behavior {
            bearer: Some(Bearer { lifetime: 300, basic: None }),
            refresh_token: Some(identity.into()),
            ..Behavior::default()
        },
    );
    let host = format!("127.0.0.1:{}", front.port);
    let w = World::new();
    // From an auth file's `identitytoken` ...
    w.write("run/containers/auth.json", &format!(r#"{{"auths":{{"{host}":{{"identitytoken":"{identity}"}}}}}}"#));
    let m = w.mount(&front.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    let log = m.log();
    drop(m);
    // ... and from a helper answering `<token>` as the user.
    std::fs::remove_file(w.path("run/containers/auth.json")).expect("rm");
    w.helper(
        "idt",
        &format!(r#"cat >/dev/null; echo '{{"ServerURL":"x","Username":"<token>","Secret":"{identity}"}}'"#),
    );
    w.write("home/.docker/config.json", &format!(r#"{{"credHelpers":{{"{host}":"idt"}}}}"#));
    let m = w.mount(&front.url, &[], &[]);
    assert_eq!(sha256sum(&m.path(&layer)), digest);
    let log = log + &m.log();
    drop(m);

    let reqs = front.requests();
    let tokens: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/token")).collect();
    assert!(tokens.len() >= 4, "a token for the ping and one for the repository, per mount: {tokens:#?}");
    for t in &tokens {
        assert_eq!((t.method.as_str(), t.status), ("POST", 200), "{t:#?}");
        assert_eq!(t.authorization, None, "a token POST carried Authorization: {t:#?}");
        assert!(t.body.contains("grant_type=refresh_token") && t.body.contains("client_id=regfs"), "{t:#?}");
        assert!(t.body.contains("service=regfs-front"), "{t:#?}");
    }
    // The refresh token is the identity token, or the one the token service gave back.
    assert!(tokens[0].body.contains(&format!("refresh_token={identity}")), "{:#?}", tokens[0]);
    assert!(tokens.iter().any(|t| t.body.contains("refresh_token=rt-")), "the new refresh token went unused");
    assert!(tokens.iter().any(|t| t.body.contains("scope=repository%3Ademo%2F")), "{tokens:#?}");
    assert!(!log.contains(identity), "the identity token reached the log");
}

#[test]
fn credentials_that_expire_while_mounted_are_fetched_again() {
    use crate::common::front::{Bearer, Behavior, Front};
    let sh = shared();
    let images = crate::common::images(&sh.fixtures, "docker-schema2");
    let img = images[0];
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_string();
    let layers = img["layers"].as_array().expect("layers");
    assert!(layers.len() >= 2, "the test needs an image with two layers");
    // docker-schema2 layers are gzip.
    let layer =
        |i: usize| (format!("{}/tags/{}/layers/{i}.tar.gz", s(&img["repo"]), s(&img["tag"])), s(&layers[i]["digest"]));
    let basic = |pw: &str| Some(Bearer { lifetime: 2, basic: Some((USER.to_string(), pw.to_string())) });
    let front = Front::start(&sh.registry.url, Behavior { bearer: basic("first-pw"), ..Behavior::default() });
    let host = format!("127.0.0.1:{}", front.port);
    let w = World::new();
    logging_helper(&w, "rotating");
    w.write("pw", "first-pw");
    w.write("home/.docker/config.json", &format!(r#"{{"credHelpers":{{"{host}":"rotating"}}}}"#));
    let calls = || std::fs::read_to_string(w.path("helper.log")).map(|l| l.lines().count()).unwrap_or(0);

    let m = w.mount(&front.url, &[], &[]);
    let (first, digest) = layer(0);
    assert_eq!(sha256sum(&m.path(&first)), digest);
    assert_eq!(calls(), 1);
    // The password is rotated (the registry's and the helper's), and the token expires.
    front.set(|b| b.bearer = basic("second-pw"));
    w.write("pw", "second-pw");
    std::thread::sleep(Duration::from_secs(3));
    let (second, digest) = layer(1);
    assert_eq!(sha256sum(&m.path(&second)), digest, "{}", m.log());
    assert_eq!(calls(), 2, "the helper is asked again once, when the old password is refused");
    assert!(!m.log().contains("second-pw") && !m.log().contains("first-pw"));
    drop(m);

    // A registry that refuses everything does not have regfs ask the helper in a loop.
    std::fs::remove_file(w.path("helper.log")).expect("rm");
    let m = w.mount(&front.url, &[], &[]);
    assert_eq!(calls(), 1);
    front.set(|b| b.bearer = basic("nobody-knows-this"));
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..20 {
        let (path, _) = layer(i % 2);
        match std::fs::read(m.path(&path)) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => refused += 1,
            other => panic!("read {i}: {:?}", other.map(|b| b.len())),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(refused, 20);
    assert!(started.elapsed() < Duration::from_secs(10), "20 refused reads took {:?}", started.elapsed());
    assert!(calls() <= 2, "the helper was called {} times for 20 refused reads", calls());
}
