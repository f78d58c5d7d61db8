//! The registry protocol, through the fault-injecting front and a real registry: paging,
//! a registry without a catalog, bearer tokens, Basic auth, credentials from the auth file,
//! redirects that must not carry credentials, retries, and one download however many readers.

use std::time::{Duration, Instant};

use crate::common::front::{BadLink, Bearer, Behavior, Fault, Front, ManifestHeader, STALL};
use crate::common::{Mount, Registry, sh_in, sha256sum, shared, start_forever, stdout};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn layer_of(kind: &str) -> (String, String, String) {
    let img = crate::common::images(&shared().fixtures, kind)[0];
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_string();
    (s(&img["repo"]), s(&img["tag"]), s(&img["layers"][0]["digest"]))
}

#[test]
fn tag_lists_and_the_catalog_follow_link_pages_to_the_end() {
    let sh = shared();
    let front =
        Front::start(&sh.registry.url, Behavior { tag_page: Some(50), catalog_page: Some(3), ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let tags = names(&m.path("demo/many-tags/tags"));
    let count = sh.fixtures["many_tags"]["count"].as_u64().expect("count") as usize;
    assert_eq!(tags.len(), count);
    assert_eq!(tags.first().map(String::as_str), Some("t000"));
    assert_eq!(tags.last().map(String::as_str), Some("t129"));
    assert_eq!(names(m.dir.path()), ["broken", "demo", "lazy", "nested", "rootfs-cases", "sig"]);
    assert_eq!(names(&m.path("demo")).len(), 10);
    let reqs = front.requests();
    // The lookup of `tags/` asks for one tag (no catalog was fetched yet to say it is a
    // repository); the listing follows every page.
    let tag_lists: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/v2/demo/many-tags/tags/list")).collect();
    assert_eq!(tag_lists.len(), 1 + count.div_ceil(50), "{reqs:?}");
    assert!(tag_lists[0].path.ends_with("?n=1"), "{tag_lists:?}");
    let catalog_pages = reqs.iter().filter(|r| r.path.starts_with("/v2/_catalog")).count();
    assert!(catalog_pages >= 4, "{catalog_pages} catalog pages");
    // A second listing within --tag-ttl asks nothing.
    let before = front.requests().len();
    assert_eq!(names(&m.path("demo/many-tags/tags")).len(), count);
    assert_eq!(front.requests().len(), before);
}

#[test]
fn without_a_catalog_repositories_are_still_reachable_by_name() {
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior { no_catalog: true, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    assert!(names(m.dir.path()).is_empty());
    // The registry's "no catalog" is an answer: not asked again within --tag-ttl.
    assert!(names(m.dir.path()).is_empty());
    // `demo` is no repository: its tag list answers NAME_UNKNOWN, so no `tags/` (`manifests/`
    // and `blobs/` cost nothing and are not asked about).
    assert_eq!(names(&m.path("demo")), ["blobs", "manifests"]);
    let catalogs = front.requests().iter().filter(|r| r.path.starts_with("/v2/_catalog")).count();
    assert_eq!(catalogs, 1);
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    assert_eq!(names(&m.path("demo/oci")), ["blobs", "manifests", "tags"]);
    let (repo, tag, digest) = layer_of("oci-manifest");
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"))), digest);
}

/// A name that is not a repository is ENOENT when the registry can say so: its tag list answers
/// 404 (NAME_UNKNOWN), and `tags/` is not there. A catalog only adds names: with one or without,
/// every valid name looks up as a namespace, and a repository the catalog does not list (a
/// partial catalog: a pull-through cache, a registry listing only what the caller may see) is
/// found by its tag list.
#[test]
fn paths_that_are_not_repositories_are_enoent_when_the_registry_can_say_so() {
    let sh = shared();
    let enoent = |p: &std::path::Path| match std::fs::symlink_metadata(p) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{}: {e}", p.display()),
        Ok(_) => panic!("{} exists", p.display()),
    };
    let is_dir = |p: &std::path::Path| {
        assert!(std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).is_dir())
    };
    // With the catalog, and without one.
    let front = Front::start(&sh.registry.url, Behavior { no_catalog: true, ..Behavior::default() });
    for url in [&sh.registry.url, &front.url] {
        let m = Mount::start(url, &[]);
        for p in ["nosuch", "demo/nosuch", "demo/oci/nosuch"] {
            is_dir(&m.path(p));
        }
        // Namespaces of the catalog, but no repositories: their tag lists say so.
        for p in ["nosuch/tags", "demo/tags", "demo/oci/nosuch/tags"] {
            enoent(&m.path(p));
        }
        for p in ["demo", "demo/oci", "demo/oci/tags", "nested/a/b", "nested/a/tags", "nested/a/b/c/tags"] {
            is_dir(&m.path(p));
        }
        assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    }
}

/// A catalog that lists some repositories and not others hides none: the ones it leaves out
/// are found by name, and those it lists cost no tag list to look up.
#[test]
fn a_catalog_that_leaves_repositories_out_hides_none_of_them() {
    let sh = shared();
    let front = Front::start(
        &sh.registry.url,
        Behavior { catalog_only: Some(vec!["demo/docker".into()]), ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    assert_eq!(names(m.dir.path()), ["demo"]);
    assert_eq!(names(&m.path("demo")), ["docker"]);
    let tag_lists = || front.requests().iter().filter(|r| r.path.ends_with("/tags/list")).count();
    // Listed: known to be a repository, so `tags/` costs nothing until it is listed.
    assert!(std::fs::symlink_metadata(m.path("demo/docker/tags")).expect("tags/").is_dir());
    assert_eq!(tag_lists(), 0);
    // Left out: found by its tag list.
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    assert_eq!(tag_lists(), 1);
    let (repo, tag, digest) = layer_of("oci-manifest");
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"))), digest);
}

#[test]
fn the_anonymous_bearer_token_flow_gets_and_reuses_tokens() {
    let sh = shared();
    let front = Front::start(
        &sh.registry.url,
        Behavior { bearer: Some(Bearer { lifetime: 300, basic: None }), ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    let (repo, tag, digest) = layer_of("oci-manifest");
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"))), digest);
    assert_eq!(
        sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/1.tar.zst"))),
        crate::common::images(&sh.fixtures, "oci-manifest")[0]["layers"][1]["digest"]
    );
    let reqs = front.requests();
    let tokens: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/token")).collect();
    // One token for the ping (no scope), one for demo/oci, reused for everything after (a
    // lookup by name never asks the catalog).
    assert_eq!(tokens.len(), 2, "{reqs:#?}");
    assert!(!tokens[0].path.contains("scope="), "{}", tokens[0].path);
    assert!(tokens[1].path.contains("scope=repository%3Ademo%2Foci%3Apull"), "{}", tokens[1].path);
    let unauthorized = reqs.iter().filter(|r| r.status == 401).count();
    assert_eq!(unauthorized, 2, "one 401 per scope, then tokens are reused: {reqs:#?}");
    assert!(
        reqs.iter()
            .filter(|r| r.path.starts_with("/v2/demo"))
            .skip(1)
            .all(|r| r.authorization.as_deref().is_some_and(|a| a.starts_with("Bearer tok-")))
    );
}

#[test]
fn token_realms_that_demand_credentials_get_them_and_refusals_are_eacces() {
    let sh = shared();
    let bearer = Bearer { lifetime: 300, basic: Some(("alice".into(), "s3cret".into())) };
    let front = Front::start(&sh.registry.url, Behavior { bearer: Some(bearer), ..Behavior::default() });
    let cache = tempfile::tempdir().expect("cache");
    let m = Mount::start_as(&front.url, "alice", "s3cret", cache.path().join("c"));
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    drop(m);
    // No credentials: the token endpoint refuses, so regfs refuses to mount, saying why.
    let out = refused_mount(&front.url, &[], None);
    assert!(out.contains("access denied") && out.contains("token"), "{out}");
}

/// Run regfs in the background mode and expect it to fail before mounting; its stderr.
fn refused_mount(url: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("mountpoint");
    let cache = tempfile::tempdir().expect("cache");
    let mut child = std::process::Command::new(crate::common::regfs_bin())
        .arg(url)
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .env("HOME", cache.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("regfs");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("regfs");
    assert!(!out.status.success(), "regfs mounted anyway");
    assert!(!crate::common::is_mounted(dir.path()));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn basic_auth_on_the_reference_registry_from_the_command_line_and_the_auth_file() {
    let htpasswd = std::process::Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(htpasswd.status.success());
    let reg = start_forever(move || {
        let r = Registry::start(Some(&String::from_utf8_lossy(&htpasswd.stdout)));
        let f = r.push_fixtures(Some(("alice", "s3cret")));
        (r, f)
    });
    let (registry, fixtures) = (&reg.0, &reg.1);
    let img = crate::common::images(fixtures, "docker-schema2")[0];
    let digest = img["layers"][0]["digest"].as_str().expect("digest");

    let cache = tempfile::tempdir().expect("cache");
    let m = Mount::start_as(&registry.url, "alice", "s3cret", cache.path().join("a"));
    assert_eq!(sha256sum(&m.path("demo/docker/tags/v1/layers/0.tar.gz")), digest);
    assert_eq!(names(m.dir.path()), ["broken", "demo", "lazy", "nested", "rootfs-cases", "sig"]);
    drop(m);

    // A wrong password, or none, is refused when mounting, as `docker login` would refuse it.
    let out = refused_mount(&registry.url, &["--username", "alice", "--password-stdin"], Some("nope\n"));
    assert!(out.contains("access denied"), "{out}");
    let out = refused_mount(&registry.url, &[], None);
    assert!(out.contains("username and password"), "{out}");

    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = cache.path().join("config.json");
    std::fs::write(&config, format!(r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"{auth}"}}}}}}"#, registry.port))
        .expect("config");
    let m = Mount::start_with_cache(
        &registry.url,
        &["--auth-file", &config.to_string_lossy()],
        cache.path().join("c"),
        None,
    );
    assert_eq!(sha256sum(&m.path("demo/docker/tags/v1/layers/0.tar.gz")), digest);
    // The password never reaches the log.
    assert!(!m.log().contains("s3cret") && !m.log().contains(&auth));
    drop(m);

    // Without --auth-file: $DOCKER_CONFIG/config.json, then ~/.docker/config.json.
    let docker_config = cache.path().join("dc");
    std::fs::create_dir_all(&docker_config).expect("dir");
    std::fs::copy(&config, docker_config.join("config.json")).expect("copy");
    let c = cache.path().join("d");
    let m = Mount::start_env(
        &registry.url,
        &["--cache-dir", &c.to_string_lossy()],
        &[("DOCKER_CONFIG", &docker_config), ("HOME", cache.path())],
        c.clone(),
        c.with_extension("log"),
    );
    assert_eq!(names(&m.path("demo/docker/tags")), ["v1"]);
    drop(m);
    let home = cache.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).expect("dir");
    std::fs::copy(&config, home.join(".docker/config.json")).expect("copy");
    let c = cache.path().join("e");
    let m = Mount::start_env(
        &registry.url,
        &["--cache-dir", &c.to_string_lossy()],
        &[("HOME", &home)],
        c.clone(),
        c.with_extension("log"),
    );
    assert_eq!(names(&m.path("demo/docker/tags")), ["v1"]);
}

#[test]
fn unreachable_hosts_and_non_registries_are_refused_at_mount_time() {
    let port = crate::common::registry::free_port();
    let out = refused_mount(&format!("http://127.0.0.1:{port}"), &["--retries", "1"], None);
    assert!(out.contains("registry unavailable") && out.contains(&port.to_string()), "{out}");
    // Something that answers HTTP but is not a registry.
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior::default());
    front.set(|b| b.faults = vec![Fault::status("/v2/", 404, 1)]);
    let out = refused_mount(&front.url, &[], None);
    assert!(out.contains("not a registry"), "{out}");
}

#[test]
fn redirected_blobs_are_read_and_credentials_never_follow_to_another_host() {
    let sh = shared();
    let front = Front::start(
        &sh.registry.url,
        Behavior { bearer: Some(Bearer { lifetime: 300, basic: None }), redirect_blobs: true, ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    let (repo, tag, digest) = layer_of("docker-schema2");
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"))), digest);
    let reqs = front.requests();
    let storage: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/_storage/")).collect();
    assert!(!storage.is_empty(), "no redirect followed: {reqs:#?}");
    for r in &storage {
        assert!(r.host.starts_with("localhost:"), "{r:?}");
        assert_eq!(r.authorization, None, "credentials followed a redirect to another host: {r:?}");
    }
    // When storage refuses, the error names the storage URL without its signature.
    let other = crate::common::images(&sh.fixtures, "docker-schema2")[0]["layers"][1]["digest"]
        .as_str()
        .expect("d")
        .to_string();
    front.set(|b| b.faults = vec![Fault::status(&format!("/_storage/demo/docker/{other}"), 403, 10)]);
    let e = std::fs::read(m.path(&format!("{repo}/tags/{tag}/layers/1.tar.gz"))).expect_err("storage refuses");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    let log = m.log();
    assert!(log.contains(&format!("/_storage/demo/docker/{other}")), "{log}");
    assert!(!log.contains("X-Amz-Signature") && !log.contains("sig-"), "a storage signature reached the log:\n{log}");
}

#[test]
fn throttling_and_server_errors_are_retried_and_persistent_failure_is_a_bounded_eio() {
    let sh = shared();
    let (repo, tag, digest) = layer_of("docker-schema2");
    let blob_path = format!("/blobs/{digest}");
    let mut throttled = Fault::status(&blob_path, 429, 1);
    throttled.retry_after = Some(1);
    let faults = vec![throttled, Fault::status(&blob_path, 503, 1), Fault::status(&blob_path, 500, 1)];
    let front = Front::start(&sh.registry.url, Behavior { faults, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let file = m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"));
    let started = Instant::now();
    assert_eq!(sha256sum(&file), digest);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    let gets = front.requests().iter().filter(|r| r.path.ends_with(&blob_path) && r.method == "GET").count();
    assert_eq!(gets, 4, "three injected failures, then the blob");

    // A blob that always fails: EIO, in bounded time, and the mount stays usable.
    let other = crate::common::images(&sh.fixtures, "docker-schema2")[0]["layers"][1]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    front.set(|b| b.faults = vec![Fault::status(&format!("/blobs/{other}"), 503, 1000)]);
    let started = Instant::now();
    let e = std::fs::read(m.path(&format!("{repo}/tags/{tag}/layers/1.tar.gz"))).expect_err("persistent 503");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(m.log().contains(&format!("/blobs/{other}: HTTP 503")), "{}", m.log());
    front.set(|b| b.faults.clear());
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/1.tar.gz"))), other);
}

#[test]
fn many_readers_of_one_blob_cause_one_download_and_a_slow_one_never_blocks_ls() {
    let sh = shared();
    let (repo, tag, digest) = layer_of("oci-manifest");
    let mut stall = Fault::status(&format!("/blobs/{digest}"), STALL, 1);
    stall.delay = Duration::from_secs(3);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![stall], ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let file = m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"));
    std::fs::metadata(&file).expect("stat");
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let f = file.clone();
            std::thread::spawn(move || sha256sum(&f))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // While the download stalls, other directories answer at once.
    let started = Instant::now();
    let out =
        sh_in(m.dir.path(), "ls demo/docker/tags nested/a/tags && cat demo/list/tags/latest/manifest.json >/dev/null");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_millis(1500), "ls waited {:?} behind a download", started.elapsed());
    for r in readers {
        assert_eq!(r.join().expect("reader"), digest);
    }
    let gets =
        front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}"))).count();
    assert_eq!(gets, 1, "16 readers, one download");
    assert_eq!(stdout(&sh_in(m.dir.path(), "ls demo/docker/tags")), "v1");
}

#[test]
fn missing_names_are_remembered_as_negative_entries() {
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior::default());
    let m = Mount::start(&front.url, &[]);
    let heads = |path: &str| {
        front
            .requests()
            .iter()
            .filter(|r| r.method == "HEAD" && r.path.ends_with(&format!("{path}/manifests/nope")))
            .count()
    };
    let missing = || {
        let e = std::fs::metadata(m.path("demo/oci/tags/nope")).expect_err("missing tag");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    };
    // The first lookup asks the first page of the tag list (to find `tags/`), and `nope`.
    missing();
    let after_first = front.requests().len();
    for _ in 0..4 {
        missing();
    }
    assert_eq!(front.requests().len(), after_first, "the kernel should remember the missing tag");
    // A repository the catalog lists needs no tag list to find `tags/`: then a missing tag
    // costs one HEAD, and is remembered as well.
    assert!(names(&m.path("demo")).contains(&"docker".to_string()));
    for _ in 0..5 {
        let e = std::fs::metadata(m.path("demo/docker/tags/nope")).expect_err("missing tag");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
    assert_eq!(heads("/demo/docker"), 1, "the kernel should remember the missing tag");
    // Inside a manifest nothing can appear: remembered too, and no request at all after the first.
    let before = front.requests().len();
    for _ in 0..5 {
        assert!(std::fs::metadata(m.path("demo/oci/tags/v1/nope.json")).is_err());
    }
    assert!(front.requests().len() - before <= 2, "{:#?}", &front.requests()[before..]);
}

/// A registry of its own (tests here move its tags) with the fixtures, the manifest of
/// `demo/oci:v1` and the same with an annotation added (another digest, the same blobs), and a
/// way to point tag `tag` of `demo/oci` at either.
struct MovingTag {
    registry: Registry,
    first: Vec<u8>,
    second: Vec<u8>,
}

impl MovingTag {
    fn new() -> MovingTag {
        let (registry, _) = start_forever(|| {
            let r = Registry::start(None);
            let f = r.push_fixtures(None);
            (r, f)
        });
        let first = reqwest::blocking::Client::new()
            .get(format!("{}/v2/demo/oci/manifests/v1", registry.url))
            .header("Accept", regfs::media::OCI_MANIFEST)
            .send()
            .expect("get")
            .bytes()
            .expect("body")
            .to_vec();
        let mut doc: serde_json::Value = serde_json::from_slice(&first).expect("a manifest");
        doc["annotations"] = serde_json::json!({ "org.example.moved": "yes" });
        let second = serde_json::to_vec(&doc).expect("json");
        MovingTag { registry, first, second }
    }

    fn point(&self, tag: &str, manifest: &[u8]) {
        let put = reqwest::blocking::Client::new()
            .put(format!("{}/v2/demo/oci/manifests/{tag}", self.registry.url))
            .header("Content-Type", regfs::media::OCI_MANIFEST)
            .body(manifest.to_vec())
            .send()
            .expect("put");
        assert!(put.status().is_success(), "{}", put.status());
    }

    /// The link a tag pointing at `manifest` shows.
    fn target(manifest: &[u8]) -> std::path::PathBuf {
        let digest = regfs::digest::Digest::of(regfs::digest::Algorithm::Sha256, manifest);
        std::path::Path::new("../manifests").join(digest.to_string())
    }
}

/// The kernel keeps each link's target for the life of its inode (`FUSE_CACHE_SYMLINKS`), and
/// a tag's target moves: a tag that moved is another inode, so once `--tag-ttl` has passed
/// every path walk through the tag, and `readlink`, follow it to the manifest it names now.
#[test]
fn a_tag_that_moves_is_followed_by_path_walks_after_tag_ttl() {
    let t = MovingTag::new();
    t.point("moving", &t.first);
    let m = Mount::start(&t.registry.url, &["--tag-ttl", "1"]);
    let through = m.path("demo/oci/tags/moving/manifest.json");
    for _ in 0..3 {
        assert_eq!(std::fs::read(&through).expect("read through the tag"), t.first);
    }
    let link = std::fs::read_link(m.path("demo/oci/tags/moving")).expect("readlink");
    assert_eq!(link, MovingTag::target(&t.first));
    t.point("moving", &t.second);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(std::fs::read(&through).expect("read through the moved tag"), t.second, "a walk kept the old link");
    let link = std::fs::read_link(m.path("demo/oci/tags/moving")).expect("readlink");
    assert_eq!(link, MovingTag::target(&t.second));
}

#[test]
fn tags_are_trusted_for_tag_ttl_then_asked_again() {
    let reg = start_forever(|| {
        let r = Registry::start(None);
        let f = r.push_fixtures(None);
        (r, f)
    });
    let registry = &reg.0;
    let m = Mount::start(&registry.url, &["--tag-ttl", "1"]);
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    // Push a new tag behind regfs's back.
    let http = reqwest::blocking::Client::new();
    let url = format!("{}/v2/demo/oci/manifests/v1", registry.url);
    let manifest =
        http.get(&url).header("Accept", regfs::media::OCI_MANIFEST).send().expect("get").bytes().expect("body");
    let put = http
        .put(format!("{}/v2/demo/oci/manifests/v2", registry.url))
        .header("Content-Type", regfs::media::OCI_MANIFEST)
        .body(manifest.to_vec())
        .send()
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    // Within the TTL the old list stands; after it, the new tag shows.
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1"]);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(names(&m.path("demo/oci/tags")), ["v1", "v2"]);
    assert_eq!(
        std::fs::read_link(m.path("demo/oci/tags/v2")).expect("readlink"),
        std::fs::read_link(m.path("demo/oci/tags/v1")).expect("readlink")
    );
}

#[test]
fn forbidden_is_eacces_and_missing_blobs_are_enoent_without_retries() {
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "docker-schema2")[0];
    let (d0, d1) = (img["layers"][0]["digest"].as_str().expect("d"), img["layers"][1]["digest"].as_str().expect("d"));
    let faults = vec![Fault::status(&format!("/blobs/{d0}"), 403, 10), Fault::status(&format!("/blobs/{d1}"), 404, 10)];
    let front = Front::start(&sh.registry.url, Behavior { faults, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let e = std::fs::read(m.path("demo/docker/tags/v1/layers/0.tar.gz")).expect_err("403");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    let e = std::fs::read(m.path("demo/docker/tags/v1/layers/1.tar.gz")).expect_err("404");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let tries = |d: &str| front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(d)).count();
    assert_eq!((tries(d0), tries(d1)), (1, 1), "answers are not retried");
}

#[test]
fn https_is_verified_and_an_internal_ca_can_be_trusted_with_ca_cert() {
    let mut reg = start_forever(|| {
        let r = Registry::start(None);
        let f = r.push_fixtures(None);
        (r, f)
    });
    let ca = reg.0.enable_tls();
    let url = reg.0.url.clone();
    assert!(url.starts_with("https://"));
    // An unknown CA: refused at mount time, at once (not retried), saying what to do.
    let started = Instant::now();
    let out = refused_mount(&url, &[], None);
    assert!(out.contains("certificate") && out.contains("--ca-cert"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(3), "a certificate error was retried");
    // Trusted with --ca-cert: everything works over TLS, verified as ever.
    let m = Mount::start(&url, &["--ca-cert", &ca.to_string_lossy()]);
    let img = crate::common::images(&reg.1, "docker-schema2")[0];
    assert_eq!(
        sha256sum(&m.path("demo/docker/tags/v1/layers/2.tar.gz")),
        img["layers"][2]["digest"].as_str().expect("d")
    );
    assert_eq!(names(&m.path("demo")).len(), 10);
    // A file that holds no certificate is refused before mounting.
    let bogus = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(bogus.path(), "not a certificate").expect("write");
    let out = refused_mount(&url, &["--ca-cert", &bogus.path().to_string_lossy()], None);
    assert!(out.contains("--ca-cert"), "{out}");
}

#[test]
fn a_first_basic_challenge_met_by_concurrent_requests_lets_every_one_through() {
    use regfs::registry::Client as _;
    use regfs::registry::credentials::Credentials;
    use regfs::registry::http::{HttpClient, Options};
    let htpasswd = std::process::Command::new("htpasswd").args(["-Bbn", "alice", "s3cret"]).output().expect("htpasswd");
    assert!(htpasswd.status.success());
    let registry = start_forever(move || Registry::start(Some(&String::from_utf8_lossy(&htpasswd.stdout))));
    let url = reqwest::Url::parse(&registry.url).expect("url");
    const THREADS: usize = 8;
    let mut failures = Vec::new();
    // Each round a fresh client, so its very first requests all meet the challenge at once.
    for round in 0..10 {
        let credentials = Credentials { username: "alice".into(), password: "s3cret".into() };
        let client = std::sync::Arc::new(
            HttpClient::new(url.clone(), Options { credentials: Some(credentials), ..Options::default() })
                .expect("client"),
        );
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (client, barrier) = (client.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 { client.ping() } else { client.catalog().map(drop) }
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().expect("thread") {
                failures.push(format!("round {round}: {e} (errno {})", e.errno()));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} first requests failed: {failures:#?}", failures.len(), 10 * THREADS);
}

#[test]
fn a_manifest_served_altered_must_hash_to_its_digest_whatever_docker_content_digest_says() {
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
    let s = |v: &serde_json::Value| v.as_str().expect("string").to_string();
    let (repo, tag, digest) = (s(&img["repo"]), s(&img["tag"]), s(&img["digest"]));
    // A registry or mirror whose stored manifest changed: one that sends no Docker-Content-Digest,
    // and one that sends the hash of the bytes it actually serves.
    for header in [ManifestHeader::Omitted, ManifestHeader::OfServedBytes] {
        let front = Front::start(&sh.registry.url, Behavior { alter_manifests: Some(header), ..Behavior::default() });
        let m = Mount::start(&front.url, &[]);
        let e = std::fs::read_dir(m.path(&format!("{repo}/manifests/{digest}")))
            .map(|d| d.count())
            .expect_err("an altered manifest by digest");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{header:?}");
        // Through the tag: HEAD names the true digest, the GET by that digest is altered.
        let out = m.sh(&format!("cat {repo}/tags/{tag}/manifest.json | wc -c; exit ${{PIPESTATUS[0]}}"));
        assert!(!out.status.success(), "{header:?}: the altered manifest was read");
        assert_eq!(stdout(&out), "0", "{header:?}: bytes of an altered manifest were shown");
        let log = m.log();
        assert!(log.lines().any(|l| l.contains("digest mismatch") && l.contains(&digest)), "{header:?}: {log}");
        // Both reads reached the registry as GETs by that digest (directly, and after the tag's HEAD).
        let gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(&digest)).count();
        assert!(gets >= 2, "{header:?}: {:#?}", front.requests());
    }
}

#[test]
fn a_link_to_another_origin_or_back_to_a_page_already_read_is_an_error() {
    let sh = shared();
    for (bad, says, pages) in
        [(BadLink::OtherOrigin, "Link to another origin", 1), (BadLink::LoopBack, "pages loop back", 2)]
    {
        let front = Front::start(&sh.registry.url, Behavior { bad_links: Some(bad), ..Behavior::default() });
        let m = Mount::start(&front.url, &[]);
        let e = std::fs::read_dir(m.path("demo/oci/tags")).map(|d| d.count()).expect_err("a bad Link");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{bad:?}");
        let log = m.log();
        assert!(log.lines().any(|l| l.contains(says) && l.contains("/v2/demo/oci/tags/list")), "{bad:?}: {log}");
        let reqs = front.requests();
        // The lookup of `tags/` asks for its first page only (following no link), the listing
        // for the list, stopping at the bad link.
        let lists: Vec<_> = reqs.iter().filter(|r| r.path.contains("/tags/list")).collect();
        assert_eq!(lists.len(), 1 + pages, "{bad:?}: {lists:#?}");
        assert!(lists[0].path.ends_with("?n=1"), "{bad:?}: {lists:#?}");
        // Nothing was sent to the other origin (the same front, named `localhost`).
        assert!(reqs.iter().all(|r| !r.host.starts_with("localhost")), "{bad:?}: {reqs:#?}");
    }
}

#[test]
fn a_registry_that_pages_on_and_on_is_cut_off_at_the_page_cap() {
    use regfs::limits::MAX_PAGES;
    use regfs::registry::Client;
    use regfs::registry::http::{HttpClient, Options};
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior { bad_links: Some(BadLink::Chain(60)), ..Behavior::default() });
    let url = reqwest::Url::parse(&front.url).expect("url");
    // 60 pages, each with a fresh URL, against a cap of 25 (the default cap, MAX_PAGES = 10,000,
    // costs half a minute of requests: the same loop, only longer).
    assert_eq!(MAX_PAGES, 10_000, "doc/SEMANTICS.md gives the cap");
    let client = HttpClient::new(url, Options::default()).expect("client").with_max_pages(25);
    let err = match client.tags("demo/oci") {
        Ok(tags) => panic!("{} tags from a chain of pages past the cap", tags.len()),
        Err(e) => e,
    };
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("more than 25 pages"), "{err}");
    let pages = front.requests().iter().filter(|r| r.path.contains("/tags/list")).count();
    assert_eq!(pages, 25);
}

/// `https://` to the (plain-http) shared registry: a mistake in the URL, said as such on the
/// terminal with the `http://` URL to try, at once, and never retried (before: 4 retries over
/// about 3 s, then "registry unavailable: … received corrupt message of type InvalidContentType").
#[test]
fn https_to_a_plain_http_registry_says_to_try_http_and_is_not_retried() {
    // A registry of its own: the shared one's request log also holds the other tests' requests,
    // which run at the same time.
    let registry = Registry::start(None);
    let port = registry.port;
    let mnt = tempfile::tempdir().expect("mountpoint");
    let cache = tempfile::tempdir().expect("cache");
    let before = registry.requests().len();
    let started = Instant::now();
    // In the background (the default): the message must reach the terminal from the daemon.
    let out = std::process::Command::new(crate::common::regfs_bin())
        .arg(format!("https://127.0.0.1:{port}"))
        .arg(mnt.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .env("HOME", cache.path())
        .output()
        .expect("regfs runs");
    let took = started.elapsed();
    let _unmount = crate::common::UnmountOnDrop(mnt.path().to_path_buf());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted over plain HTTP: {err}");
    assert!(
        err.contains("the server answered in plain HTTP") && err.contains(&format!("try http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("retry") && !err.contains("bad argument"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    // The TLS hello is no HTTP request: the registry logged none.
    assert_eq!(registry.requests().len(), before, "a request reached the registry");
}

/// `skopeo copy` of `src` (`host:port/repo:tag`) to `dest`, both plain-HTTP loopback registries.
fn skopeo_copy(src: &str, dest: &str) {
    let o = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{src}"))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo copy {src} {dest}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A foreground regfs of `registry` on `dir`, in a mount namespace of its own where
/// `/etc/hosts` is `hosts`: so a loopback registry can be reached by a public host name
/// (Docker Hub's), without touching the machine's `/etc/hosts`. Its mounts are seen through
/// `/proc/<pid>/root`.
struct NamespacedMount {
    child: std::process::Child,
    dir: tempfile::TempDir,
    _cache: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl NamespacedMount {
    fn start(registry: &str, hosts: &std::path::Path) -> NamespacedMount {
        let dir = tempfile::tempdir().expect("mountpoint");
        let cache = tempfile::tempdir().expect("cache");
        let log = cache.path().with_extension("log");
        // `unshare` execs `sh`, which execs regfs: the child's pid is regfs's.
        let script = r#"mount --bind "$1" /etc/hosts && exec "$2" "$3" "$4" --foreground --cache-dir "$5""#;
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(hosts)
            .arg(crate::common::regfs_bin())
            .arg(registry)
            .arg(dir.path())
            .arg(cache.path())
            .env("RUST_LOG", "regfs=debug")
            .env("HOME", cache.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        crate::common::die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("unshare");
        let m = NamespacedMount { child, dir, _cache: cache, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !std::fs::read_to_string(format!("/proc/{}/mountinfo", m.child.id()))
            .unwrap_or_default()
            .contains(&format!(" {} ", m.dir.path().display()))
        {
            assert!(Instant::now() < deadline, "regfs did not mount:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        let inside = self.dir.path().strip_prefix("/").expect("an absolute mountpoint");
        std::path::Path::new(&format!("/proc/{}/root", self.child.id())).join(inside).join(rel)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NamespacedMount {
    fn drop(&mut self) {
        // SIGTERM unmounts a foreground regfs; the namespace goes with its last process.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback registry holding the first OCI fixture image under each of `names`
/// (`repo:tag`), and a mount of it as Docker Hub's API host (its port, plain HTTP), reached by
/// that name through `/etc/hosts` in the mount's own namespace.
fn docker_hub_with(names: &[&str]) -> (Registry, NamespacedMount) {
    let sh = shared();
    let hub = Registry::start(None);
    let from = sh.registry.url.trim_start_matches("http://");
    let to = hub.url.trim_start_matches("http://");
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
    let (repo, tag) = (img["repo"].as_str().expect("repo"), img["tag"].as_str().expect("tag"));
    for name in names {
        skopeo_copy(&format!("{from}/{repo}:{tag}"), &format!("{to}/{name}"));
    }
    let hosts = tempfile::NamedTempFile::new().expect("hosts");
    std::fs::write(hosts.path(), "127.0.0.1 localhost\n127.0.0.1 registry-1.docker.io\n").expect("hosts");
    let port = hub.url.rsplit(':').next().expect("a port");
    let m = NamespacedMount::start(&format!("http://registry-1.docker.io:{port}"), hosts.path());
    // The mount has bind-mounted its hosts file by now: the file may go.
    drop(hosts);
    (hub, m)
}

/// On Docker Hub a one-component name is an official image, as docker, podman, crane and
/// skopeo read it: `MOUNT/busybox/tags` is `library/busybox/tags`, and `busybox/` stays a
/// namespace for `busybox/<name>`. Anywhere else a name means what it says.
#[test]
fn on_docker_hub_one_component_names_are_official_images_and_nowhere_else() {
    let (hub, m) = docker_hub_with(&["library/busybox:1.36", "busybox/extra:v1"]);
    let digest = crate::common::skopeo_raw(&hub.url, "library/busybox", "1.36");
    let digest = regfs::digest::Digest::of(regfs::digest::Algorithm::Sha256, &digest).to_string();
    for dir in ["tags", "manifests", "blobs"] {
        let link =
            std::fs::read_link(m.path(&format!("busybox/{dir}"))).unwrap_or_else(|e| panic!("{dir}: {e}\n{}", m.log()));
        assert_eq!(link.to_string_lossy(), format!("../library/busybox/{dir}"));
    }
    assert_eq!(names(&m.path("busybox/tags")), ["1.36"]);
    let through = m.path("busybox/tags/1.36/manifest.json");
    assert_eq!(sha256sum(&through), digest);
    assert_eq!(
        std::fs::read_link(m.path("busybox/tags/1.36")).expect("the tag").to_string_lossy(),
        format!("../manifests/{digest}")
    );
    assert_eq!(sha256sum(&m.path("library/busybox/tags/1.36/manifest.json")), digest);
    let config = m.path(&format!("busybox/manifests/{digest}/config.json"));
    assert!(std::fs::metadata(&config).expect("config.json").len() > 0);
    // `busybox/` is a namespace too: the catalog's `busybox/extra` is beside the links.
    assert_eq!(names(&m.path("busybox")), ["blobs", "extra", "manifests", "tags"]);
    assert_eq!(names(&m.path("busybox/extra/tags")), ["v1"]);
    // Two components are whole: `busybox/extra` is not `library/busybox/extra`.
    assert!(std::fs::symlink_metadata(m.path("busybox/extra/tags")).expect("tags/").is_dir());
    drop(m);

    // The same registry under another name: `busybox` is what it says, and no repository.
    let plain = Mount::start(&hub.url, &[]);
    let e = std::fs::symlink_metadata(plain.path("busybox/tags")).expect_err("no busybox repository");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(names(&plain.path("library/busybox/tags")), ["1.36"]);
}

/// Reading one tag by name asks for that tag, not for the whole tag list: a repository of many
/// tags (here 130, in pages of 10) costs one request to tell it is a repository, not a page
/// per ten tags. Before the catalog stopped denying names, the catalog told (one request for
/// the whole mount); a repository's tag list can be far longer than the catalog (a list past
/// the listing budget is 64 MiB downloaded for one `cat`).
#[test]
fn reading_one_tag_by_name_does_not_fetch_the_whole_tag_list() {
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior { tag_page: Some(10), ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let link = std::fs::read_link(m.path("demo/many-tags/tags/t005")).expect("tags/t005");
    assert!(link.to_string_lossy().starts_with("../manifests/sha256:"), "{link:?}");
    let manifest = m.path("demo/many-tags/tags/t005/manifest.json");
    assert!(std::fs::metadata(&manifest).expect("manifest.json").len() > 0);
    let reqs = front.requests();
    let pages = reqs.iter().filter(|r| r.path.starts_with("/v2/demo/many-tags/tags/list")).count();
    assert!(pages <= 1, "{pages} tag-list requests to read one tag: {reqs:#?}");
    // A name that is no repository is still told apart, at one request.
    let e = std::fs::symlink_metadata(m.path("demo/nosuch/tags")).expect_err("no such repository");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let asked = front.requests().iter().filter(|r| r.path.starts_with("/v2/demo/nosuch/")).count();
    assert_eq!(asked, 1);
    // And listing the tags still lists them all.
    assert_eq!(names(&m.path("demo/many-tags/tags")).len(), 130);
}

/// A registry that refuses the tag list (401/403: the caller may pull but not list, as some
/// registries' read-only tokens allow) still serves each tag by name: `tags/` looks up, a tag
/// resolves with a HEAD, and the refusal is asked once per `--tag-ttl`, not once per `ls`.
#[test]
fn a_refused_tag_list_still_serves_tags_by_name_and_is_asked_once() {
    let sh = shared();
    let faults = vec![Fault::status("/v2/demo/oci/tags/list", 403, usize::MAX)];
    let front = Front::start(&sh.registry.url, Behavior { no_catalog: true, faults, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let (repo, tag, digest) = layer_of("oci-manifest");
    assert_eq!(sha256sum(&m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"))), digest);
    let ls = sh_in(m.dir.path(), &format!("ls {repo}/tags"));
    assert!(String::from_utf8_lossy(&ls.stderr).contains("Permission denied"), "{ls:?}");
    for _ in 0..5 {
        assert_eq!(names(&m.path(&repo)), ["blobs", "manifests", "tags"]);
        assert!(std::fs::symlink_metadata(m.path(&format!("{repo}/tags"))).expect("tags/").is_dir());
    }
    let reqs = front.requests();
    let refused = reqs.iter().filter(|r| r.path.starts_with(&format!("/v2/{repo}/tags/list"))).count();
    assert!(refused <= 2, "{refused} refused tag-list requests: {reqs:#?}");
}

/// An official image named like a repository's own directory (`tags`, `manifests`, `blobs`) is
/// `library/<that name>`, which no path reaches (inside a repository directory those names are
/// its own directories): so `MOUNT/tags/tags` must not be a link into `library/tags/tags`,
/// which the links of `library/` lead into `library/library`: the official image `tags` must
/// not read as `library/library`'s tag `tags`.
#[test]
fn on_docker_hub_an_official_image_named_tags_is_not_another_repository() {
    // `library/library` (docker's `library`), with a tag named `tags`.
    let (_hub, m) = docker_hub_with(&["library/library:tags"]);
    // Docker's `library` is `library/library`, through the links of `library/`.
    assert!(std::fs::metadata(m.path("library/tags/tags/manifest.json")).is_ok(), "{}", m.log());
    let wrong = m.path("tags/tags/manifest.json");
    assert!(std::fs::metadata(&wrong).is_err(), "the official image `tags` reads as library/library:tags");
    for dir in ["tags", "manifests", "blobs"] {
        let p = m.path(&format!("{dir}/{dir}"));
        if let Ok(target) = std::fs::read_link(&p) {
            panic!("{dir}/{dir} links to {target:?}, which is not library/{dir}/{dir}");
        }
    }
}

/// A partial catalog that lists a repository under another (`nested/a/b/c`) but not the one
/// above it (`nested/a`, which a pull-through cache has not cached yet) must not hide from
/// `ls nested/a` the `tags`, `manifests` and `blobs` of a repository found by name: what the
/// registry said of `nested/a` outweighs what the catalog leaves out.
#[test]
fn a_partial_catalog_does_not_hide_a_repository_from_the_listing_of_its_directory() {
    let sh = shared();
    let front = Front::start(
        &sh.registry.url,
        Behavior { catalog_only: Some(vec!["nested/a/b/c".into()]), ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    assert!(std::fs::symlink_metadata(m.path("nested/a/tags")).expect("nested/a/tags by name").is_dir());
    assert!(!names(&m.path("nested/a/tags")).is_empty());
    let listed = names(&m.path("nested/a"));
    assert!(listed.contains(&"tags".to_string()), "ls nested/a: {listed:?}");
}

/// A registry whose catalog lists a repository but whose tag list of it answers 404 (tag
/// listing disabled, or a hostile registry contradicting itself) still serves its tags by name,
/// as it did when the catalog decided: the catalog may add a name, whether or not `ls /` was
/// run first, and the answer does not depend on what was listed before.
#[test]
fn a_repository_the_catalog_lists_is_one_even_if_its_tag_list_answers_404() {
    let sh = shared();
    let (repo, tag, digest) = layer_of("oci-manifest");
    let faults = vec![Fault::status(&format!("/v2/{repo}/tags/list"), 404, usize::MAX)];
    let front = Front::start(&sh.registry.url, Behavior { faults, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let layer = m.path(&format!("{repo}/tags/{tag}/layers/0.tar.gz"));
    let first = std::fs::metadata(&layer).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(names(m.dir.path()), ["broken", "demo", "lazy", "nested", "rootfs-cases", "sig"]);
    assert_eq!(sha256sum(&layer), digest, "after ls /");
    assert_eq!(first, Ok(()), "before ls /: {}", m.log());
    // A name neither listed nor with a tag list is still ENOENT.
    let e = std::fs::symlink_metadata(m.path("demo/nosuch/tags")).expect_err("no such repository");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
}

/// A local user looking up hundreds of names that are no repositories costs one request per
/// name (its first tag-list page) and one catalog for all of them, and a name asked again
/// within `--tag-ttl` costs nothing, once the kernel forgot it as well.
#[test]
fn many_lookups_of_names_that_are_not_repositories_cost_one_request_each() {
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior::default());
    let m = Mount::start(&front.url, &[]);
    let n = 500;
    let out = sh_in(m.dir.path(), &format!("for i in $(seq {n}); do stat demo/n$i/tags 2>/dev/null; done; true"));
    assert!(out.status.success());
    let reqs = front.requests();
    let probes = reqs.iter().filter(|r| r.path.starts_with("/v2/demo/n") && r.path.ends_with("/tags/list?n=1")).count();
    let catalogs = reqs.iter().filter(|r| r.path.starts_with("/v2/_catalog")).count();
    assert_eq!(probes, n, "one request per name");
    assert_eq!(catalogs, 1, "one catalog for all of them");
    // Asked again, with the kernel's entries dropped: the store's answers hold (4,096 names).
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop the kernel's dentries");
    let before = front.requests().len();
    let again = sh_in(m.dir.path(), &format!("for i in $(seq {n}); do stat demo/n$i/tags 2>/dev/null; done; true"));
    assert!(again.status.success());
    assert_eq!(front.requests().len(), before, "remembered for --tag-ttl");
}

/// A listing with attributes (READDIRPLUS) names inodes the kernel may already hold, open and
/// mapped: an entry whose attributes are not at hand (here a manifest directory's, outside
/// `rootfs/`) must not tell the kernel a size of 0, which truncates the page cache of the open
/// file and makes a mapping of it fault with SIGBUS. A reader maps `manifest.json`, the
/// directory is listed for the first time, and the mapping reads the same bytes.
#[test]
fn listing_a_directory_leaves_a_mapped_file_of_it_as_it_was() {
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
    let (repo, digest) = (img["repo"].as_str().expect("repo"), img["digest"].as_str().expect("digest"));
    let m = Mount::start(&sh.registry.url, &[]);
    let dir = m.path(&format!("{repo}/manifests/{digest}"));
    let script = r#"
import mmap, os, sys
d = sys.argv[1]
with open(os.path.join(d, "manifest.json"), "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    before = bytes(m[:])
    names = os.listdir(d)
    after = bytes(m[:])
    print(len(before), len(after), before == after, os.fstat(f.fileno()).st_size, sorted(names))
"#;
    let out =
        std::process::Command::new("python3").args(["-c", script, &dir.to_string_lossy()]).output().expect("python3");
    let size = std::fs::metadata(dir.join("manifest.json")).expect("stat").len();
    assert!(out.status.success(), "the mapping of manifest.json after listing its directory: {out:?}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with(&format!("{size} {size} True {size} ")), "{line}");
}

/// A tag listed before it was resolved is a link of its own (no target in its identity), and
/// the kernel keeps the target it reads of it (`FUSE_CACHE_SYMLINKS`). Once the tag moves and
/// `--tag-ttl` passes, a listing and then `readlink` (the tag listed again, not resolved
/// again yet) read the manifest it names now, not the target the kernel kept.
#[test]
fn a_tag_listed_before_it_was_resolved_is_followed_to_where_it_moved() {
    let t = MovingTag::new();
    t.point("drifting", &t.first);
    let m = Mount::start(&t.registry.url, &["--tag-ttl", "1"]);
    let link = m.path("demo/oci/tags/drifting");
    assert!(names(&m.path("demo/oci/tags")).contains(&"drifting".to_string()));
    assert_eq!(std::fs::read_link(&link).expect("readlink"), MovingTag::target(&t.first));
    t.point("drifting", &t.second);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(names(&m.path("demo/oci/tags")).contains(&"drifting".to_string()));
    assert_eq!(
        std::fs::read_link(&link).expect("readlink"),
        MovingTag::target(&t.second),
        "the kernel kept the old target"
    );
    let read = std::fs::read(link.join("manifest.json")).expect("read through the tag");
    assert_eq!(read, t.second, "a walk followed the old target");
}

/// The number a listing with attributes gives each entry (`d_ino`) is the one `stat` gives
/// right after, outside `rootfs/` too: the root, a repository, its tags (listed before they are
/// resolved), its manifests, an image's directory and its layers. (Not `.regfs/`: with
/// `--no-open` every lookup of a status file is an inode of its own, rendered then.)
#[test]
fn listed_numbers_are_the_numbers_stat_gives_in_every_kind_of_directory() {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
    let (repo, digest) = (img["repo"].as_str().expect("repo"), img["digest"].as_str().expect("digest"));
    let m = Mount::start(&sh.registry.url, &[]);
    for dir in [
        "",
        repo,
        &format!("{repo}/tags"),
        &format!("{repo}/manifests/{digest}"),
        &format!("{repo}/manifests/{digest}/layers"),
    ] {
        let path = m.path(dir);
        for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("ls {}: {e}", path.display())) {
            let entry = entry.expect("an entry");
            let stat = std::fs::symlink_metadata(entry.path()).expect("stat");
            assert_eq!(entry.ino(), stat.ino(), "{:?}", entry.path());
        }
    }
    let manifests = m.path(&format!("{repo}/manifests"));
    for entry in std::fs::read_dir(&manifests).expect("ls manifests") {
        let entry = entry.expect("an entry");
        assert_eq!(entry.ino(), std::fs::symlink_metadata(entry.path()).expect("stat").ino(), "{:?}", entry.path());
    }
}
