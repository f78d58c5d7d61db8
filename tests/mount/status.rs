//! A status a person can read: `MOUNT/.regfs/status` and `status.json` on real mounts,
//! through the real registry and the fault-injecting front. The downloads in flight with their
//! progress, `watch cat` as a progress bar, the last errors with their digests, and reading them
//! costing no request.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::front::{Behavior, Fault, Front};
use crate::common::status_json;
use crate::common::{Mount, sh_in, shared};

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().expect("string").to_string()
}

fn status_text(m: &Mount) -> String {
    std::fs::read_to_string(m.path(".regfs/status")).expect("reading status")
}

/// The job in flight for `digest`, if the status shows one: (done, total).
fn job(status: &serde_json::Value, digest: &str) -> Option<(u64, Option<u64>)> {
    let job = status["in_flight"].as_array()?.iter().find(|j| j["digest"] == digest)?;
    assert_eq!(job["kind"], "download", "{job}");
    Some((job["done"].as_u64()?, job["total"].as_u64()))
}

#[test]
fn status_shows_downloads_in_flight_with_progress_and_costs_no_request() {
    let sh = shared();
    // The 3 MB layer of demo/docker, 16 KiB every 25 ms (about 640 KiB/s): about 5 s in flight.
    let img = crate::common::images(&sh.fixtures, "docker-schema2")[0];
    let digest = str_of(&img["layers"][2]["digest"]);
    let size = img["layers"][2]["size"].as_u64().expect("size");
    let path = "demo/docker/tags/v1/layers/2.tar.gz";
    let trickle = Fault::trickle(&format!("/blobs/{digest}"), 16 << 10, Duration::from_millis(25), 1);
    let front = Front::start(&sh.registry.url, Behavior { faults: vec![trickle], ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);

    // Not listed in the root, and there by name.
    let ls = sh_in(m.dir.path(), "ls -a");
    assert!(!crate::common::stdout(&ls).contains(".regfs"), "{ls:?}");
    assert!(m.path(".regfs/status").is_file() && m.path(".regfs/status.json").is_file());

    std::fs::metadata(m.path(path)).expect("stat");
    let mut cat = Command::new("cat").arg(m.path(path)).stdout(Stdio::null()).spawn().expect("cat");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (done, status) = loop {
        let status = status_json(&m);
        match job(&status, &digest) {
            Some((done, total)) if done > 0 => {
                assert!(done < size, "{status}");
                assert_eq!(total, Some(size), "{status}");
                break (done, status);
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the download never showed: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["version"], 1);
    let text = status_text(&m);
    eprintln!("{text}");
    let of = format!(" of {:.1} MiB", size as f64 / (1 << 20) as f64);
    assert!(text.lines().any(|l| l.contains(&digest) && l.contains(&of) && l.contains("demo/docker")), "{text}");

    // The README's example for programs.
    let jq = sh_in(m.dir.path(), "jq .in_flight .regfs/status.json");
    assert!(jq.status.success() && crate::common::stdout(&jq).contains(&digest), "{jq:?}");

    // Reading the status asks the registry nothing.
    let before = front.requests().len();
    for _ in 0..5 {
        status_json(&m);
        status_text(&m);
    }
    assert_eq!(front.requests().len(), before, "{:#?}", &front.requests()[before..]);

    // `watch cat`: each read is rendered anew (no page cache), and shows the download moving.
    std::thread::sleep(Duration::from_millis(200));
    let later = job(&status_json(&m), &digest).expect("still in flight 200 ms later").0;
    assert!(later > done, "the same progress 200 ms later: {done} then {later}");

    assert!(cat.wait().expect("cat").success());
    let after = status_json(&m);
    assert_eq!(job(&after, &digest), None, "a finished download is still shown: {after}");
    assert!(after["requests"]["blob_gets"].as_u64() >= Some(1), "{after}");
}

#[test]
fn status_shows_the_last_errors_with_their_digests_and_counts_by_errno() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let layer = str_of(&sh.fixtures["corrupt"]["layer"]);
    let empty = status_json(&m);
    assert_eq!(empty["errors"]["last"].as_array().map(Vec::len), Some(0), "{empty}");
    let file = m.path("broken/corrupt/tags/v1/layers/0.tar.gz");
    let err = std::fs::read(&file).expect_err("a corrupt blob");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));

    let status = status_json(&m);
    assert!(status["errors"]["by_errno"]["EIO"].as_u64() >= Some(1), "{status}");
    let last = status["errors"]["last"].as_array().expect("last errors");
    let mine = last.iter().find(|e| e["digests"].as_array().is_some_and(|d| d.iter().any(|d| d == &*layer)));
    let mine = mine.unwrap_or_else(|| panic!("no error names {layer}: {status}"));
    assert_eq!(mine["errno"], "EIO", "{mine}");
    // The read's: with no open (the default) the kernel sends none, and the first read finds it.
    assert!(mine["op"].as_str().is_some_and(|op| op.starts_with("read")), "{mine}");
    assert!(mine["message"].as_str().is_some_and(|s| s.contains("digest mismatch")), "{mine}");
    assert!(mine["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{mine}");
    let text = status_text(&m);
    assert!(text.contains("EIO") && text.contains(&layer), "{text}");
    assert!(!Path::new(&m.path(".regfs/status")).with_file_name("other").exists());
}
