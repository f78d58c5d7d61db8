//! Under load: 64 concurrent readers over 16 blobs and 250 tags for a bounded time,
//! through a cache far smaller than what they read (so eviction runs under load). Every byte is
//! compared with what the registry serves directly; no EIO is allowed; RSS stays bounded; the
//! process's file descriptors come back to where they started, but for the one per blob read
//! that the default no-open mode keeps for its inode until the kernel forgets it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::status_kib;
use crate::common::{Mount, Registry, start_forever};

const READERS: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(8);
const RSS_LIMIT_MIB: u64 = 128;

/// (files, sockets) the process has open.
fn fds(pid: u32) -> (usize, usize) {
    let mut files = 0;
    let mut sockets = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").flatten() {
        match std::fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy().starts_with("socket:") => sockets += 1,
            Ok(_) => files += 1,
            Err(_) => {}
        }
    }
    (files, sockets)
}

#[test]
fn sixty_four_readers_over_sixteen_blobs_and_250_tags() {
    let reg = start_forever(|| {
        let r = Registry::start(None);
        let opts = regfs::testkit::fixtures::Opts { load: true, ..Default::default() };
        let f = regfs::testkit::fixtures::push(&r.url, &opts).unwrap_or_else(|e| panic!("fixtures: {e}"));
        (r, f)
    });
    let (registry, fixtures) = (&reg.0, &reg.1["load"]);

    // The oracle: every blob and every tag's manifest, straight from the registry.
    let http = reqwest::blocking::Client::new();
    let get = |path: &str| -> Vec<u8> {
        let r = http
            .get(format!("{}{path}", registry.url))
            .header("Accept", regfs::media::ACCEPT)
            .send()
            .expect("oracle GET");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().expect("body").to_vec()
    };
    let layers: Vec<(String, Vec<u8>)> = fixtures["blobs"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                format!("load/layers/tags/v1/layers/{i}.tar"),
                get(&format!("/v2/load/layers/blobs/{}", l["digest"].as_str().expect("d"))),
            )
        })
        .collect();
    assert_eq!(layers.len(), 16);
    let total: usize = layers.iter().map(|(_, b)| b.len()).sum();
    let manifests: HashMap<String, Vec<u8>> =
        (0..250).map(|i| (format!("v{i:03}"), get(&format!("/v2/load/many/manifests/v{i:03}")))).collect();

    // A cache a third the size of the blobs: eviction runs throughout.
    let cache_size = format!("{}", total / 3);
    let m = Mount::start(&registry.url, &["--cache-size", &cache_size]);
    let pid = m.pid().expect("pid");
    assert_eq!(std::fs::read_dir(m.path("load/many/tags")).expect("tags").count(), 250);
    let (files_before, _) = fds(pid);

    let layers = Arc::new(layers);
    let manifests = Arc::new(manifests);
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, bytes, failures) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak_rss));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let root = m.dir.path().to_path_buf();
    let started = Instant::now();
    let threads: Vec<_> = (0..READERS)
        .map(|t| {
            let (layers, manifests, stop) = (Arc::clone(&layers), Arc::clone(&manifests), Arc::clone(&stop));
            let (reads, bytes, failures) = (Arc::clone(&reads), Arc::clone(&bytes), Arc::clone(&failures));
            let root = root.clone();
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                while !stop.load(Ordering::SeqCst) {
                    let (path, want) = if next() % 2 == 0 {
                        let (p, b) = &layers[(next() % 16) as usize];
                        (p.clone(), b.clone())
                    } else {
                        let tag = format!("v{:03}", next() % 250);
                        (format!("load/many/tags/{tag}/manifest.json"), manifests[&tag].clone())
                    };
                    match std::fs::read(root.join(&path)) {
                        Ok(got) if got == want => {
                            reads.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
                        }
                        Ok(got) => panic!("{path}: {} bytes that are not the registry's", got.len()),
                        Err(e) => {
                            eprintln!("{path}: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(RUN_FOR);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a reader saw wrong bytes");
    }
    let _ = sampler.join();
    let elapsed = started.elapsed();
    // The kernel sends RELEASE after close() asynchronously: give it a moment to arrive.
    // With no open (the default) each inode's content stays open until the kernel forgets the
    // inode, and all that are of one blob share its one descriptor: at most one per blob read.
    let held = layers.len();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut files_after, mut sockets_after) = fds(pid);
    while files_after > files_before + held && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (files_after, sockets_after) = fds(pid);
    }
    let peak = peak_rss.load(Ordering::SeqCst) / 1024;
    eprintln!(
        "load: {READERS} readers, {:.1} s: {} reads, {} MiB compared byte for byte, {} failures; peak RSS {peak} MiB; \
         files open {files_before} -> {files_after}, sockets {sockets_after}; cache limit {} KiB",
        elapsed.as_secs_f64(),
        reads.load(Ordering::SeqCst),
        bytes.load(Ordering::SeqCst) >> 20,
        failures.load(Ordering::SeqCst),
        total / 3 / 1024,
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0, "reads failed without an injected fault:\n{}", m.log());
    assert!(reads.load(Ordering::SeqCst) > 500, "too few reads to mean anything");
    assert!(peak < RSS_LIMIT_MIB, "peak RSS {peak} MiB");
    assert!(files_after <= files_before + held, "file descriptors leaked: {files_before} -> {files_after}");
    assert!(sockets_after <= 64, "{sockets_after} sockets");
    let on_disk: u64 = std::fs::read_dir(m.cache.join("blobs/sha256"))
        .expect("cache")
        .map(|e| e.expect("e").metadata().expect("m").len())
        .sum();
    assert!(on_disk <= (total / 3) as u64, "cache holds {on_disk} bytes");
}
