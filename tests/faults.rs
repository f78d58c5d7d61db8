//! Issue 4: faults, through a real registry and the fault-injecting front, with real mounts.
//! Nothing wrong is ever served, no shell hangs, and the mount recovers by itself.

mod common;

use std::time::{Duration, Instant};

use common::front::{Bearer, Behavior, CUT_OFF, Fault, Front, STALL};
use common::{Mount, Registry, is_mounted, sh_in, sha256sum, shared, start_forever};

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().expect("string").to_string()
}

/// The 3 MB layer of demo/docker: past the in-memory limit, so it streams to the disk cache.
fn big_layer() -> (String, String) {
    let img = common::images(&shared().fixtures, "docker-schema2")[0];
    ("demo/docker/tags/v1/layers/2.tar.gz".to_string(), str_of(&img["layers"][2]["digest"]))
}

#[test]
fn tokens_that_expire_mid_session_are_renewed_without_loops() {
    let sh = shared();
    let front = Front::start(
        &sh.registry.url,
        Behavior { bearer: Some(Bearer { lifetime: 2, basic: None }), ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &["--tag-ttl", "1"]);
    let (path, digest) = big_layer();
    assert_eq!(sha256sum(&m.path(&path)), digest);
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(2500));
        // New work after the token expired: tag lists, manifests, blobs.
        let tags = sh_in(m.dir.path(), "ls demo/oci/tags demo/list/tags");
        assert!(tags.status.success(), "round {round}: {}", String::from_utf8_lossy(&tags.stderr));
        let small = common::images(&sh.fixtures, "oci-manifest")[0];
        assert_eq!(sha256sum(&m.path("demo/oci/tags/v1/layers/0.tar.gz")), str_of(&small["layers"][0]["digest"]));
    }
    let reqs = front.requests();
    let tokens = reqs.iter().filter(|r| r.path.starts_with("/token")).count();
    let unauthorized = reqs.iter().filter(|r| r.status == 401).count();
    // Each 401 is answered by exactly one token fetch: no request ever loops.
    assert!(tokens >= 3, "expired tokens were not renewed: {tokens}");
    assert!(unauthorized <= tokens, "{unauthorized} 401s for {tokens} tokens");
    assert!(reqs.len() < 80, "{} requests for a handful of reads", reqs.len());
}

#[test]
fn a_cut_off_body_is_resumed_with_range_and_never_served_half() {
    let sh = shared();
    let (path, digest) = big_layer();
    let front = Front::start(
        &sh.registry.url,
        Behavior { faults: vec![Fault::status(&format!("/blobs/{digest}"), CUT_OFF, 2)], ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    assert_eq!(sha256sum(&m.path(&path)), digest);
    let gets: Vec<_> =
        front.requests().into_iter().filter(|r| r.method == "GET" && r.path.ends_with(&digest)).collect();
    assert_eq!(gets.len(), 3, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    assert!(gets[1].range.as_deref().is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-"), "{gets:#?}");
    assert!(m.log().contains("cut off"), "{}", m.log());
}

#[test]
fn a_registry_that_ignores_range_gets_the_download_restarted() {
    let sh = shared();
    let (path, digest) = big_layer();
    let front = Front::start(
        &sh.registry.url,
        Behavior {
            faults: vec![Fault::status(&format!("/blobs/{digest}"), CUT_OFF, 1)],
            ignore_range: true,
            ..Behavior::default()
        },
    );
    let m = Mount::start(&front.url, &[]);
    assert_eq!(sha256sum(&m.path(&path)), digest);
    assert!(m.log().contains("Range not honoured"), "{}", m.log());
}

#[test]
fn bodies_cut_off_every_time_end_in_eio_and_nothing_is_kept() {
    let sh = shared();
    let (path, digest) = big_layer();
    let front = Front::start(
        &sh.registry.url,
        Behavior { faults: vec![Fault::status(&format!("/blobs/{digest}"), CUT_OFF, 1000)], ..Behavior::default() },
    );
    let m = Mount::start(&front.url, &[]);
    let out = sh_in(m.dir.path(), &format!("cat {path} | wc -c; exit ${{PIPESTATUS[0]}}"));
    assert!(!out.status.success());
    assert_eq!(common::stdout(&out), "0", "bytes were served from a cut-off body");
    assert!(!m.cache.join("blobs/sha256").join(digest.trim_start_matches("sha256:")).exists());
    assert_eq!(std::fs::read_dir(m.cache.join("tmp")).expect("tmp").count(), 0);
    // When the registry behaves again, the same file reads.
    front.set(|b| b.faults.clear());
    assert_eq!(sha256sum(&m.path(&path)), digest);
}

#[test]
fn a_registry_that_goes_down_and_comes_back_needs_no_restart() {
    let mut reg = start_forever(|| {
        let r = Registry::start(None);
        let f = r.push_fixtures(None);
        (r, f)
    });
    let m = Mount::start(&reg.0.url, &["--tag-ttl", "0", "--retries", "1"]);
    assert!(sh_in(m.dir.path(), "ls demo/oci/tags").status.success());
    reg.0.stop();
    let started = Instant::now();
    let down = sh_in(m.dir.path(), "ls demo/docker/tags");
    assert!(!down.status.success(), "listing worked with the registry down");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let img = common::images(&reg.1, "docker-schema2")[0];
    assert!(std::fs::read(m.path("demo/docker/tags/v1/layers/0.tar.gz")).is_err());
    reg.0.restart();
    let up = sh_in(m.dir.path(), "ls demo/docker/tags");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert_eq!(sha256sum(&m.path("demo/docker/tags/v1/layers/0.tar.gz")), str_of(&img["layers"][0]["digest"]));
    assert!(m.log().contains("registry unavailable"), "{}", m.log());
}

#[test]
fn a_manifest_altered_in_the_registry_s_storage_is_refused() {
    let reg = start_forever(|| {
        let r = Registry::start(None);
        let f = r.push_fixtures(None);
        (r, f)
    });
    let img = common::images(&reg.1, "oci-manifest")[0];
    let digest = str_of(&img["digest"]);
    // Change one character inside a string: still valid JSON, so the registry serves it.
    let path = reg.0.blob_path(&digest);
    let text = std::fs::read_to_string(&path).expect("stored manifest");
    let altered =
        text.replacen("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip ", 1);
    assert_ne!(altered, text);
    std::fs::write(&path, altered).expect("alter");
    let m = Mount::start(&reg.0.url, &[]);
    let repo = str_of(&img["repo"]);
    let e = std::fs::read_dir(m.path(&format!("{repo}/manifests/{digest}")))
        .map(|d| d.count())
        .expect_err("altered manifest");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let e = std::fs::read(m.path(&format!("{repo}/tags/v1/manifest.json"))).expect_err("through the tag");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let log = m.log();
    assert!(log.lines().any(|l| l.contains("digest mismatch") && l.contains(&digest)), "{log}");
}

#[test]
fn sigkill_mid_download_then_restart_on_the_same_cache_serves_only_verified_bytes() {
    let sh = shared();
    let (path, digest) = big_layer();
    // Half the body, then a 3 s hold: regfs is killed with a half-written download.
    let mut stall = Fault::status(&format!("/blobs/{digest}"), CUT_OFF, 1);
    stall.delay = Duration::from_secs(3);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![stall], ..Behavior::default() });
    let cache = tempfile::tempdir().expect("cache");
    let cache_dir = cache.path().join("c");
    let mut m = Mount::start_with_cache(&front.url, &[], cache_dir.clone(), None);
    std::fs::metadata(m.path(&path)).expect("stat");
    let file = m.path(&path);
    let reader = std::thread::spawn(move || std::fs::read(file).map(|b| b.len()));
    // Kill regfs while the download is under way.
    std::thread::sleep(Duration::from_millis(700));
    let partial: u64 = std::fs::read_dir(cache_dir.join("tmp"))
        .expect("tmp")
        .map(|e| e.expect("e").metadata().expect("m").len())
        .sum();
    assert!(partial > 0, "no download in progress to kill");
    let pid = m.pid().expect("pid");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = m.wait_exit(Duration::from_secs(5));
    let read = reader.join().expect("reader");
    assert!(read.is_err(), "a read succeeded from a killed filesystem: {read:?}");
    let _ = std::process::Command::new("umount").arg("-l").arg(m.dir.path()).status();
    assert!(!is_mounted(m.dir.path()));
    // Whatever was left is never served: a new regfs on the same cache reads the right bytes.
    let leftovers = std::fs::read_dir(cache_dir.join("tmp")).map(|d| d.count()).unwrap_or(0);
    let m2 = Mount::start_with_cache(&front.url, &[], cache_dir.clone(), None);
    assert_eq!(std::fs::read_dir(cache_dir.join("tmp")).expect("tmp").count(), 0, "{leftovers} left, none after start");
    assert_eq!(sha256sum(&m2.path(&path)), digest);
}

#[test]
fn unmounting_while_reads_are_in_flight_leaves_no_stale_mount() {
    let sh = shared();
    let (path, digest) = big_layer();
    let mut stall = Fault::status(&format!("/blobs/{digest}"), STALL, 1);
    stall.delay = Duration::from_secs(2);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![stall], ..Behavior::default() });
    let mut m = Mount::start(&front.url, &[]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let f = m.path(&path);
            std::thread::spawn(move || std::fs::read(f).map(|b| b.len()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let pid = m.pid().expect("pid");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(m.dir.path()) {
        assert!(Instant::now() < deadline, "still mounted:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in readers {
        // Each reader got the whole verified file or an error, never a part.
        if let Ok(n) = r.join().expect("reader") {
            assert_eq!(n as u64, std::fs::metadata(sh.registry.blob_path(&digest)).expect("stored").len());
        }
    }
    let status = m.wait_exit(Duration::from_secs(15)).expect("regfs did not exit");
    assert!(status.success(), "{status:?}\n{}", m.log());
}

#[test]
fn cut_off_manifests_and_tag_lists_are_fetched_again() {
    let sh = shared();
    let img = common::images(&sh.fixtures, "oci-manifest")[0];
    let digest = str_of(&img["digest"]);
    let faults = vec![
        Fault::status(&format!("/manifests/{digest}"), CUT_OFF, 2),
        Fault::status("/v2/demo/oci/tags/list", CUT_OFF, 2),
    ];
    let front = Front::start(&sh.registry.url, Behavior { faults, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    assert_eq!(sha256sum(&m.path("demo/oci/tags/v1/manifest.json")), digest);
    let tags: Vec<String> = std::fs::read_dir(m.path("demo/oci/tags"))
        .expect("tags")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(tags, ["v1"]);
    let gets = |p: &str| front.requests().iter().filter(|r| r.method == "GET" && r.path.contains(p)).count();
    assert_eq!(gets(&format!("/manifests/{digest}")), 3, "two cut off, then whole");
    assert_eq!(gets("/v2/demo/oci/tags/list"), 3);
}

/// A process's `/proc/<pid>/status` field in KiB (`VmHWM:` is its peak resident set).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_registry_flooding_a_tag_list_gets_a_clear_error_and_memory_stays_bounded() {
    let sh = shared();
    // 150 MiB of tag names in 1 MiB pages, made up by the front as regfs asks for them; and a
    // large tag list within the budget (10 MiB, about 100,000 names of 100 characters).
    let floods = vec![("demo/flood".to_string(), 150 << 20), ("demo/large".to_string(), 10 << 20)];
    let front = Front::start(&sh.registry.url, Behavior { tag_floods: floods, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let pid = m.pid().expect("pid");
    let large = sh_in(m.dir.path(), "ls demo/large/tags | wc -l; exit ${PIPESTATUS[0]}");
    assert!(large.status.success(), "{}", String::from_utf8_lossy(&large.stderr));
    let listed: usize = common::stdout(&large).parse().expect("a count");
    assert!(listed > 100_000, "{listed} tags listed");
    let large_peak_mib = status_kib(pid, "VmHWM:") / 1024;
    let out = sh_in(m.dir.path(), "ls demo/flood/tags | wc -l; exit ${PIPESTATUS[0]}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak_mib = status_kib(pid, "VmHWM:") / 1024;
    let pages = front.requests().iter().filter(|r| r.path.contains("/v2/demo/flood/tags/list")).count();
    eprintln!(
        "tag flood: {listed} tags of 10 MiB listed with a peak RSS of {large_peak_mib} MiB; \
         150 MiB: ls failed with {stderr:?} after {pages} pages; regfs peak RSS {peak_mib} MiB"
    );
    assert!(!out.status.success(), "a 150 MiB tag list was listed");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(peak_mib > 0 && peak_mib < 96, "peak RSS {peak_mib} MiB");
    let log = m.log();
    assert!(
        log.lines().any(|l| l.contains("too large") && l.contains("/v2/demo/flood/tags/list")),
        "no log line names the listing:\n{log}"
    );
    // The invalid names among them are skipped with a warning each, up to a few, then counted.
    let warned = log.lines().filter(|l| l.contains("skipping invalid name") && l.contains("/v2/demo/flood/")).count();
    assert!((1..=10).contains(&warned), "{warned} invalid names logged");
    // The mount goes on serving everything else.
    let tags = sh_in(m.dir.path(), "ls demo/oci/tags");
    assert_eq!(common::stdout(&tags), "v1", "{}", String::from_utf8_lossy(&tags.stderr));
    let img = common::images(&sh.fixtures, "oci-manifest")[0];
    assert_eq!(sha256sum(&m.path("demo/oci/tags/v1/layers/0.tar.gz")), str_of(&img["layers"][0]["digest"]));
}

#[test]
fn a_registry_flooding_its_catalog_is_cut_off_and_memory_stays_bounded() {
    let sh = shared();
    let front = Front::start(&sh.registry.url, Behavior { catalog_flood: Some(150 << 20), ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    let pid = m.pid().expect("pid");
    // Without a usable catalog the root lists nothing, and every repository is still reachable.
    let root = sh_in(m.dir.path(), "ls");
    assert_eq!(common::stdout(&root), "", "{}", String::from_utf8_lossy(&root.stderr));
    let peak_mib = status_kib(pid, "VmHWM:") / 1024;
    let pages = front.requests().iter().filter(|r| r.path.starts_with("/v2/_catalog")).count();
    eprintln!("catalog flood: cut off after {pages} pages; regfs peak RSS {peak_mib} MiB");
    assert!(peak_mib > 0 && peak_mib < 96, "peak RSS {peak_mib} MiB");
    assert!(pages < 40, "{pages} pages read");
    let log = m.log();
    assert!(
        log.lines().any(|l| l.contains("WARN") && l.contains("too large") && l.contains("/v2/_catalog")),
        "no warning names the catalog:\n{log}"
    );
    let tags = sh_in(m.dir.path(), "ls demo/oci/tags");
    assert_eq!(common::stdout(&tags), "v1", "{}", String::from_utf8_lossy(&tags.stderr));
}
