//! Faults, through a real registry and the fault-injecting front, with real mounts.
//! Nothing wrong is ever served, no shell hangs, and the mount recovers by itself.

use std::time::{Duration, Instant};

use crate::common::front::{Bearer, Behavior, CUT_OFF, Fault, Front, STALL};
use crate::common::status_kib;
use crate::common::{Mount, Registry, is_mounted, sh_in, sha256sum, shared, start_forever};

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().expect("string").to_string()
}

/// The 3 MB layer of demo/docker: past the in-memory limit, so it streams to the disk cache.
fn big_layer() -> (String, String) {
    let img = crate::common::images(&shared().fixtures, "docker-schema2")[0];
    ("demo/docker/tags/v1/layers/2.tar.gz".to_string(), str_of(&img["layers"][2]["digest"]))
}

/// A front before the shared registry that holds the first GET of blob `digest` for `secs`
/// seconds, then answers it with `status` (`STALL`: the body after all; `CUT_OFF`: half of it).
fn stalled_front(digest: &str, status: u16, secs: u64) -> Front {
    let mut stall = Fault::status(&format!("/blobs/{digest}"), status, 1);
    stall.delay = Duration::from_secs(secs);
    Front::start(&shared().registry.url, Behavior { faults: vec![stall], ..Behavior::default() })
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
        let small = crate::common::images(&sh.fixtures, "oci-manifest")[0];
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
    assert_eq!(crate::common::stdout(&out), "0", "bytes were served from a cut-off body");
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
    let img = crate::common::images(&reg.1, "docker-schema2")[0];
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
    let img = crate::common::images(&reg.1, "oci-manifest")[0];
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
    let (path, digest) = big_layer();
    // Half the body, then a 3 s hold: regfs is killed with a half-written download.
    let front = stalled_front(&digest, CUT_OFF, 3);
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
    let front = stalled_front(&digest, STALL, 2);
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
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
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
    let listed: usize = crate::common::stdout(&large).parse().expect("a count");
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
    assert_eq!(crate::common::stdout(&tags), "v1", "{}", String::from_utf8_lossy(&tags.stderr));
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
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
    assert_eq!(crate::common::stdout(&root), "", "{}", String::from_utf8_lossy(&root.stderr));
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
    assert_eq!(crate::common::stdout(&tags), "v1", "{}", String::from_utf8_lossy(&tags.stderr));
}

/// A shell command's child, for tests that signal a reader.
fn spawn_reader(file: &std::path::Path) -> std::process::Child {
    std::process::Command::new("cat")
        .arg(file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cat")
}

/// Send each child its signal at once, and the time until each is reaped.
fn reaped_after(children: &mut [(&mut std::process::Child, i32)]) -> Vec<Duration> {
    let started = Instant::now();
    for (child, signal) in children.iter() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, *signal) };
    }
    let mut reaped = vec![None; children.len()];
    while reaped.iter().any(Option::is_none) && started.elapsed() < Duration::from_secs(30) {
        for (i, (child, _)) in children.iter_mut().enumerate() {
            if reaped[i].is_none() && child.try_wait().expect("wait").is_some() {
                reaped[i] = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reaped.into_iter().map(|r| r.unwrap_or_else(|| started.elapsed())).collect()
}

#[test]
fn a_trickling_body_is_abandoned_and_ends_in_eio_within_the_bound() {
    let sh = shared();
    let (path, digest) = big_layer();
    // One byte every 200 ms: every read returns well within --timeout, forever.
    let trickle = Fault::trickle(&format!("/blobs/{digest}"), 1, Duration::from_millis(200), 1000);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![trickle], ..Behavior::default() });
    let m = Mount::start(&front.url, &["--timeout", "1", "--min-speed", "1K", "--min-speed-time", "1"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let started = Instant::now();
    let out = sh_in(m.dir.path(), &format!("timeout 60 cat {path} | wc -c; exit ${{PIPESTATUS[0]}}"));
    let took = started.elapsed();
    eprintln!("a trickled blob failed after {took:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Input/output error"), "{out:?}");
    assert_eq!(crate::common::stdout(&out), "0", "bytes were served from a trickled body");
    // The bound: 6 attempts (5 resumes), each abandoned within --min-speed-time + --timeout.
    assert!(took < Duration::from_secs(6 * 2 + 3), "took {took:?}");
    let log = m.log();
    assert!(log.lines().any(|l| l.contains("slower than 1024 bytes/s") && l.contains(&digest)), "{log}");
    let gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(&digest)).count();
    assert_eq!(gets, 6, "one try and five resumes");
    // Nothing half-done is kept, and a registry that behaves again serves it.
    assert_eq!(std::fs::read_dir(m.cache.join("tmp")).expect("tmp").count(), 0);
    front.set(|b| b.faults.clear());
    assert_eq!(sha256sum(&m.path(&path)), digest);
}

#[test]
fn a_slow_but_steady_body_outlasting_the_timeout_still_succeeds() {
    let sh = shared();
    let (path, digest) = big_layer();
    // 64 KiB every 100 ms (about 640 KiB/s): 3 MB take about 5 s, five times --timeout.
    let slow = Fault::trickle(&format!("/blobs/{digest}"), 64 << 10, Duration::from_millis(100), 1000);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![slow], ..Behavior::default() });
    let m = Mount::start(&front.url, &["--timeout", "1", "--min-speed", "128K", "--min-speed-time", "1"]);
    let started = Instant::now();
    assert_eq!(sha256sum(&m.path(&path)), digest);
    assert!(started.elapsed() > Duration::from_secs(2), "the body was not slow: {:?}", started.elapsed());
    let gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(&digest)).count();
    assert_eq!(gets, 1, "a steady body was abandoned:\n{}", m.log());
}

#[test]
fn a_reader_waiting_on_a_stalled_download_can_be_killed_and_the_download_goes_on() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 6);
    let m = Mount::start(&front.url, &[]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let file = m.path(&path);
    let mut killed = spawn_reader(&file);
    let mut interrupted = spawn_reader(&file);
    let patient = std::thread::spawn(move || sha256sum(&file));
    std::thread::sleep(Duration::from_millis(800));
    assert!(killed.try_wait().expect("wait").is_none(), "the reader did not wait for the download");
    let times = reaped_after(&mut [(&mut killed, libc::SIGKILL), (&mut interrupted, libc::SIGINT)]);
    let (kill_9, sigint) = (times[0], times[1]);
    eprintln!("kill -9 of a waiting reader: reaped after {kill_9:?}; SIGINT: {sigint:?}");
    assert!(kill_9 < Duration::from_secs(1), "kill -9 took {kill_9:?}");
    assert!(sigint < Duration::from_secs(1), "SIGINT took {sigint:?}");
    // The download went on for the reader that stayed, and was made once; a killed reader left
    // no open file behind: the mount unmounts cleanly.
    downloaded_once_and_unmounts(&front, &digest, patient, m);
}

/// The reader that stayed got `digest`, the front served it once, and `m` unmounts cleanly.
fn downloaded_once_and_unmounts(front: &Front, digest: &str, patient: std::thread::JoinHandle<String>, mut m: Mount) {
    assert_eq!(patient.join().expect("reader"), digest);
    let gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with(digest)).count();
    assert_eq!(gets, 1);
    let status = m.unmount().expect("exit");
    assert!(status.success(), "{status:?}\n{}", m.log());
}

/// With `--no-open` a reader waits in `read` (the kernel sends no open), on a thread the
/// watchdog answers for as it does for a waiting open: `kill -9` frees it at once, the download
/// goes on for the reader that stayed, and the mount then unmounts cleanly. SIGTERM frees the
/// readers left with an error.
#[test]
fn with_no_open_a_reader_waiting_in_read_can_be_killed_and_sigterm_frees_the_rest() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 4);
    let m = Mount::start(&front.url, &["--no-open"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let file = m.path(&path);
    let mut killed = spawn_reader(&file);
    let patient = std::thread::spawn(move || sha256sum(&file));
    std::thread::sleep(Duration::from_millis(800));
    assert!(killed.try_wait().expect("wait").is_none(), "the reader did not wait for the download");
    let kill_9 = reaped_after(&mut [(&mut killed, libc::SIGKILL)])[0];
    eprintln!("--no-open, kill -9 of a reader waiting in read: reaped after {kill_9:?}");
    assert!(kill_9 < Duration::from_secs(1), "kill -9 took {kill_9:?}\n{}", m.log());
    downloaded_once_and_unmounts(&front, &digest, patient, m);

    let front = stalled_front(&digest, STALL, 20);
    let mut m = Mount::start(&front.url, &["--no-open", "--timeout", "30"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let f = m.path(&path);
    let reader = std::thread::spawn(move || (std::fs::read(f).map(|b| b.len()), Instant::now()));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid().expect("pid") as i32, libc::SIGTERM) };
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", m.log());
    let (result, at) = reader.join().expect("reader");
    assert!(result.is_err(), "a reader got {result:?}");
    assert!(at.duration_since(started) < Duration::from_secs(3));
}

#[test]
fn sigterm_with_a_stalled_download_exits_within_seconds_and_its_readers_get_an_error() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 20);
    let mut m = Mount::start(&front.url, &["--timeout", "30"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let f = m.path(&path);
            std::thread::spawn(move || {
                let r = std::fs::read(f).map(|b| b.len());
                (r, Instant::now())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid().expect("pid") as i32, libc::SIGTERM) };
    let status = m.wait_exit(Duration::from_secs(10));
    let exited = started.elapsed();
    eprintln!("SIGTERM with a stalled download: regfs exited after {exited:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?} after {exited:?}\n{}", m.log());
    assert!(exited < Duration::from_secs(3), "exit took {exited:?}");
    for r in readers {
        let (result, at) = r.join().expect("reader");
        assert!(result.is_err(), "a reader got {result:?}");
        assert!(at.duration_since(started) < Duration::from_secs(3));
    }
    assert!(!is_mounted(m.dir.path()), "a stale mount is left");
}

#[test]
fn a_lazy_umount_with_a_stalled_download_frees_its_readers_and_regfs_exits() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 20);
    let mut m = Mount::start(&front.url, &["--timeout", "30"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let f = m.path(&path);
    let reader = std::thread::spawn(move || (std::fs::read(f).map(|b| b.len()), Instant::now()));
    std::thread::sleep(Duration::from_millis(500));
    // A reader is blocked in open: a plain umount is refused, so the operator detaches it.
    let started = Instant::now();
    let detached = std::process::Command::new("umount").arg("-l").arg(m.dir.path()).status().expect("umount");
    assert!(detached.success());
    let status = m.wait_exit(Duration::from_secs(10));
    let exited = started.elapsed();
    eprintln!("umount -l with a stalled download: regfs exited after {exited:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?} after {exited:?}\n{}", m.log());
    assert!(exited < Duration::from_secs(3), "exit took {exited:?}");
    let (result, at) = reader.join().expect("reader");
    assert!(result.is_err(), "the reader got {result:?}");
    assert!(at.duration_since(started) < Duration::from_secs(3));
}

#[test]
fn a_trickled_manifest_is_fetched_again_within_the_retry_budget() {
    let sh = shared();
    let img = crate::common::images(&sh.fixtures, "oci-manifest")[0];
    let digest = str_of(&img["digest"]);
    // Twice a byte every 200 ms, then whole: the progress rule cuts the first two off.
    let trickle = Fault::trickle(&format!("/manifests/{digest}"), 1, Duration::from_millis(200), 2);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![trickle], ..Behavior::default() });
    let m = Mount::start(&front.url, &["--timeout", "1", "--min-speed", "1K", "--min-speed-time", "1"]);
    let started = Instant::now();
    assert_eq!(sha256sum(&m.path(&format!("demo/oci/manifests/{digest}/manifest.json"))), digest);
    eprintln!("a twice-trickled manifest read after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let gets = front.requests().iter().filter(|r| r.method == "GET" && r.path.contains(&digest)).count();
    assert_eq!(gets, 3, "two trickled, then whole");
    assert!(m.log().contains("slower than 1024 bytes/s"), "{}", m.log());
}

/// Descriptors of `pid` that are not sockets (pooled connections come and go), and its threads.
fn files_and_threads(pid: u32) -> (Vec<String>, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| !t.starts_with("socket:"))
        .collect();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").count();
    (fds, threads)
}

#[test]
fn many_readers_killed_in_lookup_opendir_and_open_leave_nothing_behind() {
    let sh = shared();
    let (path, digest) = big_layer();
    let stalls = [format!("/blobs/{digest}"), "/v2/demo/oci/manifests/v1".into(), "/v2/demo/oci/tags/list".into()];
    let faults = stalls
        .iter()
        .map(|p| {
            let mut f = Fault::status(p, STALL, 1);
            f.delay = Duration::from_secs(4);
            f
        })
        .collect();
    let front = Front::start(&sh.registry.url, Behavior { faults, ..Behavior::default() });
    // With `--open`, readers wait in `open` and nothing of a file is held once it is closed.
    // (Without it they wait in `read`, and each inode's content is held until the kernel
    // forgets it: `with_no_open_a_reader_waiting_in_read_can_be_killed_and_sigterm_frees_the_rest`.)
    let mut m = Mount::start(&front.url, &["--open"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let pid = m.pid().expect("pid");
    let (mut fds_before, threads_before) = files_and_threads(pid);
    let mut readers: Vec<std::process::Child> = Vec::new();
    for _ in 0..24 {
        readers.push(spawn_reader(&m.path(&path)));
    }
    for _ in 0..8 {
        // lookup of a tag whose manifest stalls, opendir of a tag list that stalls
        readers.push(spawn_reader(&m.path("demo/oci/tags/v1/manifest.json")));
        let mut ls = std::process::Command::new("ls");
        ls.arg(m.path("demo/oci/tags")).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        readers.push(ls.spawn().expect("ls"));
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(readers.iter_mut().all(|r| r.try_wait().expect("wait").is_none()), "a reader did not wait");
    let mut signalled: Vec<_> = readers.iter_mut().map(|r| (r, libc::SIGKILL)).collect();
    let times = reaped_after(&mut signalled);
    let slowest = times.iter().max().copied().unwrap_or_default();
    eprintln!("{} readers killed while waiting: the last reaped after {slowest:?}", times.len());
    assert!(slowest < Duration::from_secs(1), "a killed reader took {slowest:?}");
    // The work they left goes on and ends; then regfs holds what it held before.
    assert_eq!(sha256sum(&m.path(&path)), digest);
    assert_eq!(crate::common::stdout(&m.sh("cat demo/oci/tags/v1/manifest.json | head -c 1")), "{");
    assert_eq!(crate::common::stdout(&m.sh("ls demo/oci/tags")), "v1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut fds_after, mut threads_after) = files_and_threads(pid);
    while (fds_after.len() > fds_before.len() || threads_after > threads_before) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (fds_after, threads_after) = files_and_threads(pid);
    }
    fds_before.sort();
    fds_after.sort();
    eprintln!(
        "regfs: {} files and {threads_before} threads before, {} and {threads_after} after",
        fds_before.len(),
        fds_after.len()
    );
    assert!(fds_after.len() <= fds_before.len(), "descriptors left open: {fds_after:?}, before {fds_before:?}");
    assert!(threads_after <= threads_before, "threads left: {threads_after}, before {threads_before}");
    let status = m.unmount().expect("exit");
    assert!(status.success(), "{status:?}\n{}", m.log());
}

/// One reader at a time opens a blob whose download stalls and is killed as soon as it waits,
/// over and over: each open leaves regfs a thread that waits for the download. Those threads
/// are root's when regfs runs as root, so a user limited to a few processes could grow them
/// without bound. A thread whose requester was answered must stop waiting.
#[test]
fn readers_killed_one_after_another_do_not_pile_up_threads() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 12);
    let mut m = Mount::start(&front.url, &["--timeout", "30"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let pid = m.pid().expect("pid");
    let (_, threads_before) = files_and_threads(pid);
    let mut most = threads_before;
    for _ in 0..20 {
        let mut reader = spawn_reader(&m.path(&path));
        std::thread::sleep(Duration::from_millis(150));
        let took = reaped_after(&mut [(&mut reader, libc::SIGKILL)])[0];
        assert!(took < Duration::from_secs(1), "a killed reader took {took:?}");
        std::thread::sleep(Duration::from_millis(100));
        most = most.max(files_and_threads(pid).1);
    }
    eprintln!("20 readers killed in turn: regfs had {threads_before} threads before, at most {most} while they left");
    // The download itself holds one thread; the leavers none.
    assert!(most <= threads_before + 3, "{most} threads while the download stalls, {threads_before} before");
    assert_eq!(sha256sum(&m.path(&path)), digest);
    let status = m.unmount().expect("exit");
    assert!(status.success(), "{status:?}\n{}", m.log());
}

/// /proc/self/mountinfo escapes a space, a tab, a newline and a backslash in a mount point's
/// name: regfs must still find its own mount there, to refuse a second one and to notice a
/// lazy unmount while readers wait.
#[test]
fn a_mountpoint_named_with_spaces_newlines_and_backslashes_is_watched_and_guarded() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 20);
    let mut m = Mount::start_named(&front.url, &["--timeout", "30"], "a b\\134c\td\ne ");
    // The mount is live before regfs logs that it is: give the line a moment.
    let logged = Instant::now();
    while !m.log().contains("mounted on") && logged.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m.log().contains("mounted on"), "{}", m.log());
    let cache = tempfile::tempdir().expect("cache");
    let second = std::process::Command::new(crate::common::regfs_bin())
        .arg(&front.url)
        .arg(m.dir.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .env("HOME", cache.path())
        .output()
        .expect("regfs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains("already a mount point"), "{err}");
    std::fs::metadata(m.path(&path)).expect("stat");
    let f = m.path(&path);
    let reader = std::thread::spawn(move || (std::fs::read(f).map(|b| b.len()), Instant::now()));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let detached = std::process::Command::new("umount").arg("-l").arg(m.dir.path()).status().expect("umount");
    assert!(detached.success());
    let status = m.wait_exit(Duration::from_secs(10));
    let exited = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?} after {exited:?}\n{}", m.log());
    assert!(exited < Duration::from_secs(3), "exit took {exited:?}\n{}", m.log());
    let (result, _) = reader.join().expect("reader");
    assert!(result.is_err(), "the reader got {result:?}");
}

/// A reader in a pid namespace of its own (a container's `cat`) is seen by regfs under its pid
/// in regfs's namespace, so killing it frees it as fast as any other.
#[test]
fn a_reader_in_another_pid_namespace_can_be_killed_while_waiting() {
    let (path, digest) = big_layer();
    let front = stalled_front(&digest, STALL, 8);
    let mut m = Mount::start(&front.url, &["--timeout", "30"]);
    std::fs::metadata(m.path(&path)).expect("stat");
    let mut unshare = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "cat"])
        .arg(m.path(&path))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    std::thread::sleep(Duration::from_millis(800));
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let inner: i32 = std::fs::read_to_string(&children)
        .expect("children")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the reader inside the namespace");
    let syscall = std::fs::read_to_string(format!("/proc/{inner}/syscall")).expect("syscall");
    let nr = syscall.split(' ').next().and_then(|n| n.parse::<i64>().ok());
    // Waiting in `read`: the kernel sends no open (the default).
    assert_eq!(nr, Some(libc::SYS_read), "the reader is not waiting in read: {syscall}");
    let started = Instant::now();
    // SAFETY: signalling the reader this test started (pid 1 of its namespace).
    unsafe { libc::kill(inner, libc::SIGKILL) };
    let status = unshare.wait().expect("unshare");
    let took = started.elapsed();
    eprintln!("kill -9 of a reader in another pid namespace: gone after {took:?}");
    assert!(!status.success());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let status = m.unmount().expect("exit");
    assert!(status.success(), "{status:?}\n{}", m.log());
}

/// A blob of 8 MiB over a front adding 20 ms and holding each connection to 4 MiB/s, with ranges
/// of 1 MiB above 1 MiB, 4 at once, against the same blob as one stream: the ranges are what
/// was asked for (each piece once, by a `Range` of exactly it), several were sent at once, and
/// the blob is right; one stream is one GET. The times are shown, not asserted.
#[test]
fn a_big_blob_over_a_throttled_link_is_fetched_by_ranges_at_once() {
    use regfs::registry::Client as _;
    use regfs::registry::http::{HttpClient, Options};
    use regfs::store::StoreConfig;
    use regfs::store::cache::BlobCache;
    use regfs::store::download::DownloadConfig;
    const MIB: u64 = 1 << 20;
    // A registry of its own: a repository pushed to the shared one would show in every test's
    // catalog.
    let registry = Registry::start(None);
    let data = regfs::testkit::core::noise(8 * MIB as usize, 77);
    let pusher = regfs::testkit::fixtures::push::Pusher::new(reqwest::Url::parse(&registry.url).expect("url"), None)
        .expect("pusher");
    let digest = pusher.blob("ranged/big", &data).expect("push");
    let fetch = |at_once: usize| {
        let front = Front::start(
            &registry.url,
            Behavior { latency: Duration::from_millis(20), rate: Some(4 * MIB), ..Behavior::default() },
        );
        let client =
            HttpClient::new(reqwest::Url::parse(&front.url).expect("url"), Options::default()).expect("client");
        let cache = tempfile::tempdir().expect("cache");
        let download =
            DownloadConfig { ranged_above: MIB, range: MIB, ranges_at_once: at_once, ..DownloadConfig::default() };
        let config = StoreConfig { cache_dir: cache.path().to_path_buf(), download, ..StoreConfig::default() };
        let blobs = BlobCache::new(&config).expect("cache");
        let started = Instant::now();
        let file = blobs.open(&client, "ranged/big", &digest, Some(data.len() as u64)).expect("downloaded");
        let took = started.elapsed();
        let mut got = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut got, 0).expect("read");
        assert!(got == data, "the cached file is not the blob");
        let gets: Vec<_> = front
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&digest.to_string()))
            .collect();
        (gets, front.most_at_once(), client.stats().blob_ranges, took)
    };
    let (ranged, at_once, counted, ranged_took) = fetch(4);
    let mut asked: Vec<String> = ranged.iter().map(|r| r.range.clone().unwrap_or_default()).collect();
    asked.sort();
    let mut want: Vec<String> = (0..8).map(|k| format!("bytes={}-{}", k * MIB, (k + 1) * MIB - 1)).collect();
    want.sort();
    assert_eq!(asked, want, "each piece once, by a Range of exactly it");
    assert_eq!(counted, 8, "ranged GETs counted by the client");
    assert!(at_once >= 2, "the ranges were sent one after another (at most {at_once} at once)");
    let (single, _, counted, single_took) = fetch(1);
    assert_eq!(single.len(), 1, "{single:#?}");
    assert_eq!((single[0].range.as_deref(), counted), (None, 0));
    eprintln!("8 MiB at 4 MiB/s a connection: {ranged_took:?} by 8 ranges, 4 at once; {single_took:?} as one stream");
}
