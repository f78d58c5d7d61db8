//! What indexing a layer of many entries costs in memory: the peak heap of the index builder
//! (parse, build, freeze) per entry, measured by this binary's counting allocator, and the
//! process's peak RSS (of the whole binary so far: run this test alone for the builder's own).
//!
//! `REGFS_INDEX_ENTRIES=1048576 cargo test --release --features testkit --test memory --
//! --nocapture index::` measures a layer at the entry bound (the figure in doc/SEMANTICS.md), and
//! `REGFS_INDEX_TAR=target/regfs-distro/<hash>/L0.tar` the distro fixture's base layer.

use std::io::Read;
use std::sync::atomic::Ordering;

use crate::{LIVE, PEAK};

use regfs::views::index::{IndexLimits, build_all};
use regfs::views::tar::TarLimits;

/// A tar made on the fly (never held whole): `n` entries shaped like a distribution's files,
/// 100 files per directory under `usr/share/pkgNNNN/`, one in ten a hard link to its
/// neighbour, one in ten a symlink; files hold no data, so the stream is 512 bytes per entry.
struct Synthetic {
    n: usize,
    next: usize,
    block: Vec<u8>,
    at: usize,
}

impl Synthetic {
    fn new(n: usize) -> Synthetic {
        Synthetic { n, next: 0, block: Vec::new(), at: 0 }
    }

    fn header(i: usize) -> [u8; 512] {
        let mut h = tar::Header::new_ustar();
        let (dir, f) = (i / 100, i % 100);
        let name = format!("usr/share/pkg{dir:05}/file-{f:03}.txt");
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        match f % 10 {
            9 => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(format!("usr/share/pkg{dir:05}/file-{:03}.txt", f - 1)).expect("link");
            }
            8 => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name("../common/target").expect("symlink");
            }
            _ => h.set_entry_type(tar::EntryType::Regular),
        }
        h.set_path(&name).expect("name");
        h.set_cksum();
        *h.as_bytes()
    }
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.block.len() {
            self.block.clear();
            self.at = 0;
            // 64 entries at a time.
            for _ in 0..64 {
                if self.next < self.n {
                    self.block.extend_from_slice(&Synthetic::header(self.next));
                } else if self.next < self.n + 2 {
                    self.block.extend_from_slice(&[0u8; 512]);
                } else {
                    break;
                }
                self.next += 1;
            }
        }
        let k = (self.block.len() - self.at).min(buf.len());
        buf[..k].copy_from_slice(&self.block[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The index builder's peak heap per entry (live capacity), names and all, stays within 200
/// bytes (566 before the builder kept records and names in arenas, 367 by an earlier count),
/// and the index it leaves is its records (96 bytes each) plus names.
#[test]
fn indexing_a_layer_of_many_entries_peaks_at_at_most_200_bytes_per_entry() {
    let _serial = crate::serial();
    let n: usize = std::env::var("REGFS_INDEX_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let limits = IndexLimits { max_entries: 1 << 21, max_bytes: 1 << 31, ..IndexLimits::default() };
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    // REGFS_INDEX_TAR=<a decoded layer> measures a real one instead (the distro fixture's).
    let index = match std::env::var_os("REGFS_INDEX_TAR") {
        Some(path) => {
            let tar = std::io::BufReader::new(std::fs::File::open(&path).expect("REGFS_INDEX_TAR"));
            build_all(tar, TarLimits::default(), limits).expect("index")
        }
        None => build_all(Synthetic::new(n), TarLimits::default(), limits).expect("index"),
    };
    let took = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = LIVE.load(Ordering::Relaxed) - before;
    let entries = index.len();
    let what = match std::env::var("REGFS_INDEX_TAR") {
        Ok(path) => path,
        Err(_) => format!("{n} synthetic tar entries"),
    };
    let per_entry = peak as f64 / entries as f64;
    eprintln!(
        "{what}: {entries} records: builder peak heap {:.1} MiB = {per_entry:.0} B/entry; index kept \
         {:.1} MiB = {:.0} B/entry (weight {:.0} B/entry); peak RSS {:?} KiB; {took:?}",
        peak as f64 / 1048576.0,
        kept as f64 / 1048576.0,
        kept as f64 / entries as f64,
        index.weight() as f64 / entries as f64,
        vm_hwm_kib(),
    );
    if std::env::var_os("REGFS_INDEX_TAR").is_none() {
        assert!(entries > n, "every entry and its directories indexed");
        assert!(index.get("usr/share/pkg00001/file-019.txt").is_some());
        assert!(per_entry <= 200.0, "{per_entry:.0} bytes of heap per entry at the peak");
    }
}
