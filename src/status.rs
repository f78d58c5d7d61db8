//! What the mount is doing, for a person (`MOUNT/.regfs/status`) and for programs
//! (`MOUNT/.regfs/status.json`): the downloads and decodes in flight with their progress, the
//! cache against its limit, the requests made by kind, and the errors readers were given.
//!
//! # Where it comes from
//! - [`Activity`]: one entry per piece of work in flight (a kind of work on a digest), shown while
//!   any [`Shown`] guard of it lives, however the work ends. Whoever waits for a download says
//!   what it is ([`Activity::show`]: `store/cache.rs` `open`, once the blob is not at hand), and
//!   the cache's progress hook, which every download into the cache runs before each chunk, sets
//!   its bytes done ([`Activity::progress`], one line in `fill`). So one download waited for by
//!   many readers is one entry. Decodes are shown and advanced by `views` around the decoder
//!   (the tee's hook), by the layer's blob digest.
//! - [`Errors`]: every error the FUSE adapter turns into an errno (`fuse.rs`, one place) is
//!   counted by errno and by kind; the last [`STATUS_LAST_ERRORS`] that were not ENOENT (a name
//!   that is not there is an answer, not a fault) are kept with their time, operation, message and
//!   the digests the message names.
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::Error;
use crate::limits::{STATUS_DIGESTS_PER_ERROR, STATUS_JOBS_SHOWN, STATUS_LAST_ERRORS, STATUS_MESSAGE_BYTES};
use crate::registry::Stats;
use crate::store::Store;
use crate::sync;

/// The version of `status.json`'s layout; a change that removes or renames a field bumps it.
pub const JSON_VERSION: u32 = 1;

/// What a job in flight is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Work {
    /// A blob coming from the registry into the cache.
    Download,
    /// A layer being decoded (gunzip, zstd) into the cache; its total is not known ahead.
    Decode,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Download => "download",
            Work::Decode => "decode",
        }
    }
}

struct JobState {
    work: Work,
    repo: String,
    digest: Digest,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
}

/// A job in flight and how many guards show it.
struct Entry {
    state: Arc<JobState>,
    holders: usize,
}

/// The work in flight, oldest first, and when the mount started. Few at once (one per download
/// or decode in flight), so they are looked up by a scan.
pub struct Activity {
    started: Instant,
    jobs: Mutex<Vec<Entry>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { started: Instant::now(), jobs: Mutex::default() }
    }
}

impl Activity {
    /// Show `work` on `digest` of `repo` (`total` bytes, if known) while the guard lives. Shown
    /// already (another reader waits for the same download): the same entry, held once more.
    pub fn show(&self, work: Work, repo: &str, digest: &Digest, total: Option<u64>) -> Shown<'_> {
        let mut jobs = sync::lock(&self.jobs);
        if let Some(e) = jobs.iter_mut().find(|e| e.state.work == work && e.state.digest == *digest) {
            e.holders += 1;
        } else {
            let state = JobState {
                work,
                repo: repo.to_string(),
                digest: digest.clone(),
                total,
                done: AtomicU64::new(0),
                started: Instant::now(),
            };
            jobs.push(Entry { state: Arc::new(state), holders: 1 });
        }
        Shown { activity: self, work, digest: digest.clone() }
    }

    /// `work` on `digest` has `done` bytes so far (a download started over says 0 again); nothing
    /// if it is not shown.
    pub fn progress(&self, work: Work, digest: &Digest, done: u64) {
        let jobs = sync::lock(&self.jobs);
        if let Some(e) = jobs.iter().find(|e| e.state.work == work && e.state.digest == *digest) {
            e.state.done.store(done, Ordering::Relaxed);
        }
    }

    /// Jobs in flight now.
    pub fn len(&self) -> usize {
        sync::lock(&self.jobs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shows a job in flight until it goes (with the job's other guards).
pub struct Shown<'a> {
    activity: &'a Activity,
    work: Work,
    digest: Digest,
}

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        let mut jobs = sync::lock(&self.activity.jobs);
        if let Some(i) = jobs.iter().position(|e| e.state.work == self.work && e.state.digest == self.digest) {
            jobs[i].holders -= 1;
            if jobs[i].holders == 0 {
                jobs.remove(i);
            }
        }
    }
}

/// An error as kept for the status.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSeen {
    /// When, in RFC 3339 (UTC).
    pub time: String,
    /// The operation that failed, as the log names it (`open 42`, `lookup "x"`).
    pub op: String,
    /// The errno's name (`EIO`).
    pub errno: String,
    /// The error's kind (`digest mismatch`).
    pub kind: String,
    /// The message on one line, cut to [`STATUS_MESSAGE_BYTES`].
    pub message: String,
    /// The digests the message names, in order, at most [`STATUS_DIGESTS_PER_ERROR`].
    pub digests: Vec<String>,
}

#[derive(Default)]
struct ErrorsState {
    total: u64,
    by_errno: BTreeMap<String, u64>,
    by_kind: BTreeMap<&'static str, u64>,
    last: VecDeque<ErrorSeen>,
}

/// The errors readers were given: counted by errno and kind, the last few kept.
#[derive(Default)]
pub struct Errors {
    state: Mutex<ErrorsState>,
}

impl Errors {
    /// A reader was given `e` for `op`.
    pub fn record(&self, op: &str, e: &Error) {
        let errno = errno_name(e.errno());
        let kept = (!e.is_not_found()).then(|| {
            let message = e.to_string();
            ErrorSeen {
                time: rfc3339(SystemTime::now()),
                op: cut(op, STATUS_MESSAGE_BYTES),
                errno: errno.clone(),
                kind: e.kind().to_string(),
                digests: digests_in(&message, STATUS_DIGESTS_PER_ERROR),
                message: cut(&message, STATUS_MESSAGE_BYTES),
            }
        });
        let mut s = sync::lock(&self.state);
        s.total += 1;
        *s.by_errno.entry(errno).or_default() += 1;
        *s.by_kind.entry(e.kind()).or_default() += 1;
        if let Some(seen) = kept {
            if s.last.len() >= STATUS_LAST_ERRORS {
                s.last.pop_front();
            }
            s.last.push_back(seen);
        }
    }
}

/// One job as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub kind: Work,
    pub repo: String,
    pub digest: String,
    /// Bytes done so far.
    pub done: u64,
    /// Bytes in all, when known (a download's descriptor size); `null` for decodes.
    pub total: Option<u64>,
    pub elapsed_seconds: f64,
    /// Bytes per second since the job started.
    pub rate: f64,
    /// Seconds left at that rate, when the total is known and the rate is not 0.
    pub eta_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    /// Bytes of verified files held.
    pub used: u64,
    /// `--cache-size`.
    pub limit: u64,
    /// Files held.
    pub files: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorsView {
    pub total: u64,
    pub by_errno: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    /// Oldest first.
    pub last: Vec<ErrorSeen>,
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
}

impl Snapshot {
    /// The status of the mount `store` serves, now. Never a request.
    pub fn take(store: &Store) -> Snapshot {
        let cache = store.blob_cache();
        let activity = cache.activity();
        let jobs: Vec<Arc<JobState>> = sync::lock(&activity.jobs).iter().map(|e| Arc::clone(&e.state)).collect();
        let in_flight_not_shown = jobs.len().saturating_sub(STATUS_JOBS_SHOWN);
        let in_flight = jobs.iter().take(STATUS_JOBS_SHOWN).map(|j| view(j)).collect();
        let errors = {
            let s = sync::lock(&store.errors().state);
            ErrorsView {
                total: s.total,
                by_errno: s.by_errno.clone(),
                by_kind: s.by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                last: s.last.iter().cloned().collect(),
            }
        };
        Snapshot {
            version: JSON_VERSION,
            time: rfc3339(SystemTime::now()),
            uptime_seconds: activity.started.elapsed().as_secs(),
            in_flight,
            in_flight_not_shown,
            cache: CacheView { used: cache.size(), limit: cache.limit(), files: cache.len() },
            requests: store.stats(),
            errors,
        }
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

fn view(j: &JobState) -> JobView {
    let done = j.done.load(Ordering::Relaxed);
    let elapsed = j.started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
    let eta_seconds = j.total.filter(|_| rate > 0.0).map(|t| t.saturating_sub(done) as f64 / rate);
    JobView {
        kind: j.work,
        repo: j.repo.clone(),
        digest: j.digest.to_string(),
        done,
        total: j.total,
        elapsed_seconds: elapsed,
        rate,
        eta_seconds,
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

/// The name of the errnos regfs answers with; others as `E<n>`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EFBIG => "EFBIG",
        libc::EIO => "EIO",
        libc::EINTR => "EINTR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EISDIR => "EISDIR",
        libc::EBADF => "EBADF",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::EROFS => "EROFS",
        other => return format!("E{other}"),
    };
    name.to_string()
}

/// `s` on one line (control characters, a registry's newlines included, as spaces), cut at a
/// character boundary to at most `max` bytes (`…` marks a cut).
fn cut(s: &str, max: usize) -> String {
    let s = &s.replace(char::is_control, " ");
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The digests (`sha256:` and 64 hex digits, `sha512:` and 128) named in `text`, each once, in
/// order, at most `max`.
fn digests_in(text: &str, max: usize) -> Vec<String> {
    let hexes: HashMap<&str, usize> = [("sha256:", 64), ("sha512:", 128)].into_iter().collect();
    let mut found: Vec<String> = Vec::new();
    let mut at = 0;
    while at < text.len() && found.len() < max {
        let rest = &text[at..];
        let next = hexes.iter().filter_map(|(p, n)| rest.find(p).map(|i| (i, *p, *n))).min();
        let Some((i, prefix, n)) = next else { break };
        let start = at + i + prefix.len();
        let hex_len = text[start..].bytes().take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)).count();
        if hex_len == n {
            let d = text[at + i..start + n].to_string();
            if !found.contains(&d) {
                found.push(d);
            }
        }
        at = start + hex_len;
    }
    found
}

/// `t` in RFC 3339, UTC, to the second (`2026-12-04T08:30:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_796_372_999)), "2026-12-04T08:29:59Z");
    }

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

    /// Digests are found whole, each once, within the bound; look-alikes are not digests.
    #[test]
    fn the_digests_an_error_names_are_found_within_the_bound() {
        let a = Digest::of(Algorithm::Sha256, b"a").to_string();
        let b = Digest::of(Algorithm::Sha512, b"b").to_string();
        let text = format!("blob {a} should be {b} but hashes to sha256:abc and {a}; sha256:{}", "0".repeat(65));
        assert_eq!(digests_in(&text, 4), [a.clone(), b]);
        assert_eq!(digests_in(&text, 1), [a]);
        assert!(digests_in("nothing here: sha256:", 4).is_empty());
    }

    /// The last errors are bounded in number and in length, ENOENT is counted but not kept, and
    /// every error counts by errno and kind.
    #[test]
    fn errors_are_counted_and_the_last_kept_within_bounds() {
        let errors = Errors::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        errors.record("lookup \"nope\"", &Error::NotFound("nope".into()));
        for i in 0..STATUS_LAST_ERRORS + 3 {
            let e = Error::DigestMismatch { what: format!("blob {i}"), expected: d.to_string(), actual: "x".into() };
            errors.record(&format!("open {i}"), &e);
        }
        errors.record("open 98", &Error::Protocol("a body\nwith\r\ta forged line".into()));
        errors.record("open 99", &Error::Unavailable("é".repeat(STATUS_MESSAGE_BYTES)));
        let s = sync::lock(&errors.state);
        assert_eq!(s.total, STATUS_LAST_ERRORS as u64 + 6);
        assert_eq!(s.by_errno.get("ENOENT"), Some(&1));
        assert_eq!(s.by_errno.get("EIO"), Some(&(STATUS_LAST_ERRORS as u64 + 5)));
        assert_eq!(s.by_kind.get("digest mismatch"), Some(&(STATUS_LAST_ERRORS as u64 + 3)));
        assert_eq!(s.last.len(), STATUS_LAST_ERRORS);
        assert!(s.last.iter().all(|e| e.errno == "EIO"), "ENOENT kept");
        assert_eq!(s.last[0].op, "open 5", "the oldest went first");
        assert_eq!(s.last[STATUS_LAST_ERRORS - 2].message, "protocol error: a body with  a forged line");
        assert_eq!(s.last[0].digests, [d.to_string()]);
        let long = s.last.back().expect("last");
        assert!(long.message.len() <= STATUS_MESSAGE_BYTES && long.message.ends_with('…'), "{}", long.message.len());
    }

    /// A job shows while any of its guards lives, once however many wait for it, with its
    /// progress, rate and ETA; progress of what is not shown changes nothing.
    #[test]
    fn a_job_is_shown_while_its_guard_lives() {
        let activity = Activity::default();
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let other = Digest::of(Algorithm::Sha256, b"other");
        activity.progress(Work::Download, &other, 5);
        {
            let first = activity.show(Work::Download, "r", &d, Some(1000));
            let second = activity.show(Work::Download, "r", &d, Some(1000));
            activity.progress(Work::Download, &d, 250);
            activity.progress(Work::Decode, &d, 999);
            std::thread::sleep(Duration::from_millis(20));
            let jobs: Vec<JobView> = sync::lock(&activity.jobs).iter().map(|e| view(&e.state)).collect();
            assert_eq!(jobs.len(), 1, "one download, two readers: {jobs:?}");
            let j = &jobs[0];
            assert_eq!(
                (j.kind, j.repo.as_str(), j.digest.clone(), j.done, j.total),
                (Work::Download, "r", d.to_string(), 250, Some(1000))
            );
            assert!(j.rate > 0.0 && j.eta_seconds.is_some_and(|s| s > 0.0), "{j:?}");
            let _decode = activity.show(Work::Decode, "r", &d, None);
            assert_eq!(activity.len(), 2);
            drop(first);
            assert_eq!(activity.len(), 2, "gone while a reader still waits");
            drop(second);
            assert_eq!(activity.len(), 1);
        }
        assert!(activity.is_empty(), "a job outlived its guard");
    }
}
