//! What the mount records as it works, for `.regfs/status` to show: the work in flight
//! ([`Activity`]) and the errors readers were given ([`Errors`]). A room at the bottom: the
//! store and the views record into it, the FUSE adapter records the errors it answers, and
//! `status` only reads it, so nothing that records depends on the status.
//!
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
//!   the digests the message names, each bounded ([`STATUS_MESSAGE_BYTES`],
//!   [`STATUS_DIGESTS_PER_ERROR`]): registry text in a message cannot make the record grow.
//! - [`Counter`]: a count that only grows (requests sent, bytes received, layers decoded), kept by
//!   the layer that counts and read at any time without a lock. A layer's counters and the plain
//!   snapshot they give are declared from one list of names by `counters!`: the registry
//!   client's (`registry::Stats`, shown in the status and the summary at unmount), the views'
//!   (`views::ViewsStats`: decodes, configs, index passes, indexes read back) and the blob
//!   cache's verified bytes are counted this way.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::Error;
use crate::limits::{STATUS_DIGESTS_PER_ERROR, STATUS_LAST_ERRORS, STATUS_MESSAGE_BYTES};
use crate::sync;

/// A count that only grows. Relaxed: a count orders nothing else, so whoever needs a write to be
/// seen before another (a generation, a sequence) keeps an atomic of its own, not a `Counter`.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// One more.
    pub fn bump(&self) {
        self.add(1);
    }

    /// `n` more.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A layer's counters and their snapshot, from one list of names:
///
/// ```ignore
/// counters! {
///     /// What is shown (a `u64` per name; `Serialize` writes them in this order).
///     pub struct Stats;
///     /// What counts (a [`Counter`] per name), kept by the layer.
///     pub struct Counters {
///         /// Requests sent.
///         requests,
///     }
/// }
/// ```
///
/// `Counters::snapshot` gives the `Stats` of now; `Stats::add` sums two (a registry's and its
/// mirrors').
macro_rules! counters {
    (
        $(#[$stats_meta:meta])* pub struct $stats:ident;
        $(#[$counters_meta:meta])* pub struct $counters:ident {
            $($(#[$field_meta:meta])* $field:ident),* $(,)?
        }
    ) => {
        $(#[$stats_meta])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct $stats {
            $($(#[$field_meta])* pub $field: u64,)*
        }

        impl $stats {
            /// Add `other`'s counts to these.
            pub fn add(&mut self, other: &$stats) {
                $(self.$field += other.$field;)*
            }
        }

        $(#[$counters_meta])*
        #[derive(Debug, Default)]
        pub struct $counters {
            $($(#[$field_meta])* pub $field: $crate::telemetry::Counter,)*
        }

        impl $counters {
            /// The counts now.
            pub fn snapshot(&self) -> $stats {
                $stats { $($field: self.$field.get(),)* }
            }
        }
    };
}
pub(crate) use counters;

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
    pub fn name(self) -> &'static str {
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

    /// The first `shown` jobs in flight, oldest first, and how many more there are.
    pub fn jobs(&self, shown: usize) -> (Vec<JobView>, usize) {
        let jobs: Vec<Arc<JobState>> = sync::lock(&self.jobs).iter().map(|e| Arc::clone(&e.state)).collect();
        let more = jobs.len().saturating_sub(shown);
        (jobs.iter().take(shown).map(|j| view(j)).collect(), more)
    }

    /// How long since the mount started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
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

    /// The counts and the errors kept, now.
    pub fn view(&self) -> ErrorsView {
        let s = sync::lock(&self.state);
        ErrorsView {
            total: s.total,
            by_errno: s.by_errno.clone(),
            by_kind: s.by_kind.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            last: s.last.iter().cloned().collect(),
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
pub struct ErrorsView {
    pub total: u64,
    pub by_errno: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    /// Oldest first.
    pub last: Vec<ErrorSeen>,
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

    counters! {
        /// Two counts, for the test.
        pub struct Pair;
        /// Their counters.
        pub struct PairCounters {
            /// The first.
            first,
            second,
        }
    }

    /// A snapshot has every count as it is now, in the order declared, and snapshots add up.
    #[test]
    fn counters_give_a_snapshot_in_the_order_declared() {
        let counters = PairCounters::default();
        counters.first.bump();
        counters.second.add(40);
        counters.second.bump();
        let mut seen = counters.snapshot();
        assert_eq!(seen, Pair { first: 1, second: 41 });
        assert_eq!(serde_json::to_string(&seen).expect("json"), r#"{"first":1,"second":41}"#);
        seen.add(&Pair { first: 2, second: 1 });
        assert_eq!(seen, Pair { first: 3, second: 42 });
        assert_eq!(counters.snapshot(), Pair { first: 1, second: 41 }, "a snapshot is a copy");
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
