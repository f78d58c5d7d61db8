//! What the mount is doing, for a person (`MOUNT/.regfs/status`) and for programs
//! (`MOUNT/.regfs/status.json`): the downloads and decodes in flight with their progress, the
//! cache against its limit, the requests made by kind, and the errors readers were given.
//!
//! # Where it comes from
//! - What `telemetry` recorded: the work in flight ([`Activity`](crate::telemetry::Activity)) and the errors readers were
//!   given ([`Errors`](crate::telemetry::Errors)).
//! - The request counters of the registry client ([`crate::registry::Stats`]) and the blob
//!   cache's figures.
//!
//! # What reading it costs
//! A [`Snapshot`] is taken from memory only (atomics and a few short locks): reading the status
//! never asks the registry anything. It is rendered when the file is opened, and the kernel is
//! told not to cache it (`layout::Stability::Volatile`: TTL 0, direct I/O), so every `cat` (and
//! `watch cat`) sees it as it is then.
//!
//! # Bounds
//! The jobs shown ([`STATUS_JOBS_SHOWN`]; the rest counted), the errors kept
//! ([`STATUS_LAST_ERRORS`]), each error's message ([`STATUS_MESSAGE_BYTES`]) and its digests
//! ([`STATUS_DIGESTS_PER_ERROR`]): registry text in a message cannot make the status grow.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use crate::limits::STATUS_JOBS_SHOWN;
use crate::registry::Stats;
use crate::store::Store;
use crate::telemetry::{ErrorsView, JobView, rfc3339};
use crate::views::lazy::{LayerReport, Lazy};

/// The version of `status.json`'s layout; a change that removes or renames a field bumps it.
pub const JSON_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    /// Bytes of verified files held.
    pub used: u64,
    /// `--cache-size`.
    pub limit: u64,
    /// Files held.
    pub files: usize,
}

/// The status at one moment, taken from memory only.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: String,
    pub uptime_seconds: u64,
    /// At most [`STATUS_JOBS_SHOWN`], oldest first.
    pub in_flight: Vec<JobView>,
    /// Jobs in flight past those shown.
    pub in_flight_not_shown: usize,
    pub cache: CacheView,
    pub requests: Stats,
    pub errors: ErrorsView,
    /// Layers read by chunks this run (most recent first): what each cost, and whether its tar
    /// was found to disagree with its TOC (then none of its files is served).
    pub lazy_layers: Vec<LayerReport>,
}

impl Snapshot {
    /// The status of the mount `store` serves, now. Never a request.
    pub fn take(store: &Store) -> Snapshot {
        let cache = store.blob_cache();
        let activity = cache.activity();
        let (in_flight, in_flight_not_shown) = activity.jobs(STATUS_JOBS_SHOWN);
        let errors = store.errors().view();
        Snapshot {
            version: JSON_VERSION,
            time: rfc3339(SystemTime::now()),
            uptime_seconds: activity.uptime().as_secs(),
            in_flight,
            in_flight_not_shown,
            cache: CacheView { used: cache.size(), limit: cache.limit(), files: cache.len() },
            requests: store.stats(),
            errors,
            lazy_layers: Vec::new(),
        }
    }

    /// This snapshot with the layers read by chunks.
    pub fn with_lazy(mut self, lazy: &Lazy) -> Snapshot {
        self.lazy_layers = lazy.report();
        self
    }

    /// `status.json`: the snapshot as pretty JSON, with a final newline.
    pub fn json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}").into());
        out.push(b'\n');
        out
    }

    /// `status`: the same, for a person.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "regfs status at {} (up {})", self.time, duration(self.uptime_seconds as f64));
        let _ = writeln!(o);
        let more = if self.in_flight_not_shown > 0 {
            format!(" ({} not shown)", self.in_flight_not_shown)
        } else {
            String::new()
        };
        let _ = writeln!(o, "In flight: {}{more}", self.in_flight.len() + self.in_flight_not_shown);
        for j in &self.in_flight {
            let progress = match j.total {
                Some(t) if t > 0 => {
                    format!("{} of {} ({:.0}%)", bytes(j.done), bytes(t), j.done as f64 * 100.0 / t as f64)
                }
                Some(t) => format!("{} of {}", bytes(j.done), bytes(t)),
                None => format!("{} so far", bytes(j.done)),
            };
            let eta = j.eta_seconds.map_or_else(String::new, |s| format!("  ETA {}", duration(s)));
            let _ = writeln!(
                o,
                "  {:<8}  {}  {}  {}  {}/s{eta}",
                j.kind.name(),
                j.repo,
                j.digest,
                progress,
                bytes(j.rate as u64)
            );
        }
        let c = &self.cache;
        let pct = if c.limit > 0 { c.used as f64 * 100.0 / c.limit as f64 } else { 0.0 };
        let _ = writeln!(o, "Cache: {} of {} ({pct:.0}%), {} files", bytes(c.used), bytes(c.limit), c.files);
        let r = &self.requests;
        let _ = writeln!(
            o,
            "Requests: {} (manifest GET {}, manifest HEAD {}, blob GET {}, blob HEAD {}, tag-list pages {}, \
             catalog pages {}, tokens {}, retries {}); {} of blobs downloaded",
            r.requests,
            r.manifest_gets,
            r.manifest_heads,
            r.blob_gets,
            r.blob_heads,
            r.tag_pages,
            r.catalog_pages,
            r.token_fetches,
            r.retries,
            bytes(r.blob_bytes)
        );
        if !self.lazy_layers.is_empty() {
            let _ = writeln!(
                o,
                "Read by chunks (verified against the TOC the manifest names): {} layers",
                self.lazy_layers.len()
            );
            for l in &self.lazy_layers {
                let _ = writeln!(
                    o,
                    "  {:<12}  {}  {}  {} of {} fetched in {} ranges, {} chunks verified, images {}{}",
                    l.format.name(),
                    l.repo,
                    l.blob,
                    bytes(l.stats.fetched_bytes),
                    bytes(l.size),
                    l.stats.ranges,
                    l.stats.chunks_verified,
                    l.images.join(" "),
                    l.poisoned.as_ref().map_or_else(String::new, |why| format!("; POISONED, no file served: {why}"))
                );
            }
        }
        let e = &self.errors;
        let counts =
            |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        if e.total == 0 {
            let _ = writeln!(o, "Errors: none");
        } else {
            let _ =
                writeln!(o, "Errors: {} (by errno: {}; by kind: {})", e.total, counts(&e.by_errno), counts(&e.by_kind));
        }
        if !e.last.is_empty() {
            let _ = writeln!(o, "Last errors, newest first:");
            for x in e.last.iter().rev() {
                let _ = writeln!(o, "  {}  {}  {}  {}", x.time, x.errno, x.op, x.message);
                if !x.digests.is_empty() {
                    let _ = writeln!(o, "    digests: {}", x.digests.join(" "));
                }
            }
        }
        o
    }
}

/// `n` bytes for a person: `512 B`, `1.5 KiB`, `2.9 MiB`, `10.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Seconds for a person: `4s`, `2m 5s`, `3h 0m`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_a_person_would_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(10 << 30), "10.0 GiB");
        assert_eq!(duration(4.4), "4s");
        assert_eq!(duration(125.0), "2m 5s");
        assert_eq!(duration(3.0 * 3600.0 + 61.0), "3h 1m");
    }
}
