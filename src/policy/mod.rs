//! Who made it: the mount's signature policy, as containers' `policy.json` states it, and the
//! verdict on each manifest.
//!
//! # What is decided
//! A manifest directory `manifests/<digest>/` of `<repo>` is the image `<host>/<repo>@<digest>`
//! (`host` as references name the registry: `docker.io` for Docker Hub). Its requirements are
//! those of the most specific `docker` scope of the policy that names it (the reference, its
//! repository, each parent namespace, the host, `*.`-wildcards), else the transport's `""`,
//! else `default` (`config.rs`). A scope with a tag (`host/repo:tag`) or a digest applies too,
//! to the manifest that reference names (a tag: now, or when a `tags/` link of this mount
//! resolved it) and, when that is an index, to its platform manifests, as containers/image
//! judges each instance of an index under the reference pulled: then all must accept, so
//! reaching content through a tag is never looser than skopeo's pull by that tag, nor than its
//! pull by digest. Every requirement
//! must hold; `sigstoreSigned` holds when at least one signature found is verified by one of its
//! keys, is for this manifest's digest and names an identity its `signedIdentity` accepts
//! (`signature.rs`).
//!
//! An index (or manifest list) is not judged by its own signatures, as containers/image judges
//! none: a pull through an index checks the platform image it takes, by that image's own
//! signatures (each of them, with `--all`). So an index's links are always shown, and each
//! platform manifest opens only if it passes on its own; an index's `signatures/` still lists
//! and checks its own signatures, for the reader. (cosign signs only the index unless told
//! `--recursive`: such images are refused by podman and skopeo, and by regfs.)
//!
//! # The files
//! `config.rs` reads the policy, `keys.rs` its keys, `reference.rs` references, scopes and
//! `signedIdentity`, `registries_d.rs` where attachments are read; `signature.rs` judges bytes,
//! `gather.rs` finds and reads signatures, `pulled.rs` says which tag and digest scopes apply,
//! `verdict.rs` keeps a decision's bookkeeping and its report; this file is the gate and its
//! caches.
//!
//! # Where signatures are found
//! Only where `registries.d` turns on `use-sigstore-attachments` for the image's scope
//! (`registries_d.rs`), as containers/image: cosign's `<alg>-<hex>.sig` tag first (one GET by
//! tag; then each simple-signing payload, one blob each), then Sigstore bundles among the
//! manifest's referrers (the OCI 1.1 list, or its `<alg>-<hex>` tag; each bundle one manifest
//! and one blob). Verification stops at the first signature that satisfies every
//! `sigstoreSigned` requirement, so a signed image costs its signature manifest and the
//! payloads read up to the one that verifies; `signatures/` reads them all. With no policy the
//! gate asks nothing, ever.
//!
//! # Bounds (hostile registries)
//! At most [`MAX_SIGNATURES`](crate::limits::MAX_SIGNATURES) signatures are read per manifest
//! (a `.sig` of 8,000 layers is read to that many, said in the verdict; one of 10,000 is more
//! JSON values than a manifest may hold); a payload or bundle over
//! [`MAX_SIGNATURE_BLOB`](crate::limits::MAX_SIGNATURE_BLOB) bytes is refused before it is
//! fetched; a DSSE envelope has at most 4 signatures, hashed once; a reference scope's indexes
//! are searched to 64; every reason kept is cut; a signature manifest is a manifest (4 MiB); a
//! referrers list is the store's (10,000 entries, 16 MiB). A signature that cannot be read (its
//! blob missing, of the wrong digest, malformed) counts as refused and says why; a registry
//! fault while signatures are read fails the verdict for now (EIO, nothing served, not kept).
//!
//! # The cache
//! Verdicts are kept per manifest (the policy is the mount's, fixed), [`VERDICTS_KEPT`] of them,
//! for a third of `tag_ttl`, and each is decided from a `.sig` tag and a referrers list at most
//! that old (read again if older, whatever filled the store's caches); the kernel keeps a
//! manifest's names as long (`main.rs`). So a signature pushed or deleted counts within
//! `tag_ttl`.
//! A refusal is an [`Error::Refused`] (EACCES) naming the image, the scope and why, logged once
//! per decision.

pub mod config;
mod gather;
pub mod keys;
mod pulled;
pub mod reference;
pub mod registries_d;
pub mod signature;
mod verdict;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Kind;
use crate::store::Store;
use crate::store::flight::SingleFlight;
use crate::sync::lock;
pub use config::{Policy, Requirement};
use reference::Reference;
pub use registries_d::Attachments;
use verdict::Judging;
pub use verdict::{Found, INDEX_NOT_JUDGED, Report, Verdict};

/// Verdicts and reports kept (a few KiB each: every registry string in them is cut to
/// `signature::SHOWN`; some MiB at most).
pub const VERDICTS_KEPT: usize = 4096;
/// Digests remembered per tag a scope names.
const TAGGED_KEPT: usize = 8;
/// What the mount was given: a policy, where attachments are read, and the registry's name.
pub struct Setup {
    pub policy: Option<Policy>,
    pub attachments: Attachments,
    /// The registry as references name it (`localhost:5000`, `docker.io`).
    pub host: String,
}

/// Per manifest (repository, digest): when it was decided, and what.
type Kept<V> = Mutex<lru::LruCache<(String, Digest), (Instant, V)>>;

/// The gate `layout/` asks before it shows a manifest's content.
pub struct Gate {
    store: Arc<Store>,
    setup: Setup,
    verdicts: Kept<Verdict>,
    reports: Kept<Arc<Report>>,
    /// The digests `tags/` links resolved tags that a scope names to ([`Gate::note_tag`]).
    tagged: Mutex<lru::LruCache<(String, String), Vec<Digest>>>,
    flights: SingleFlight<(String, Digest), Verdict>,
    report_flights: SingleFlight<(String, Digest), Arc<Report>>,
}

impl Gate {
    pub fn new(store: Arc<Store>, setup: Setup) -> Gate {
        let cap = crate::capacity::nonzero(VERDICTS_KEPT);
        Gate {
            store,
            setup,
            verdicts: Mutex::new(lru::LruCache::new(cap)),
            reports: Mutex::new(lru::LruCache::new(cap)),
            tagged: Mutex::new(lru::LruCache::new(cap)),
            flights: SingleFlight::default(),
            report_flights: SingleFlight::default(),
        }
    }

    /// A gate that lets everything through and asks nothing.
    pub fn open(store: Arc<Store>) -> Gate {
        Gate::new(store, Setup { policy: None, attachments: Attachments::everywhere(), host: String::new() })
    }

    /// Whether a policy is enforced.
    pub fn enforcing(&self) -> bool {
        self.setup.policy.is_some()
    }

    fn image(&self, repo: &str, digest: &Digest) -> Reference {
        Reference { name: format!("{}/{repo}", self.setup.host), tag: None, digest: Some(digest.clone()) }
    }

    fn refusal(&self, repo: &str, digest: &Digest, why: &str) -> Error {
        Error::Refused(format!("{}: {why}", self.image(repo, digest).full()))
    }

    /// How long a verdict, and what it was decided from, is trusted: a third of `tag_ttl`.
    pub fn kept_for(&self) -> std::time::Duration {
        self.store.tag_ttl() / 3
    }

    fn fresh<V: Clone>(&self, cache: &Kept<V>, key: &(String, Digest)) -> Option<V> {
        let mut c = lock(cache);
        match c.get(key) {
            Some((at, v)) if at.elapsed() < self.kept_for() => Some(v.clone()),
            _ => None,
        }
    }

    /// A `tags/` link of this mount resolved `tag` of `repo` to `digest`: a scope of that tag
    /// applies to it (and its platforms) from now on, even if the tag moves before its content
    /// is read.
    pub fn note_tag(&self, repo: &str, tag: &str, digest: &Digest) {
        let Some(p) = &self.setup.policy else { return };
        let name = format!("{}/{repo}", self.setup.host);
        if !p.reference_scopes(&name).iter().any(|r| r.tag.as_deref() == Some(tag)) {
            return;
        }
        let mut seen = lock(&self.tagged);
        let key = (repo.to_string(), tag.to_string());
        let mut digests = seen.get(&key).cloned().unwrap_or_default();
        if !digests.contains(digest) {
            digests.push(digest.clone());
            if digests.len() > TAGGED_KEPT {
                digests.remove(0);
            }
            seen.put(key, digests);
            drop(seen);
            // A verdict kept for a manifest of this repository (or a platform of it) may have
            // been decided without this tag's scope: decide again.
            forget_repo(&self.verdicts, repo);
            forget_repo(&self.reports, repo);
        }
    }

    /// Whether the content of manifest `digest` of `repo` may be shown: `Ok` with no policy or
    /// an accepting verdict, [`Error::Refused`] with a refusing one, a registry's error where
    /// signatures could not be read.
    pub fn allows(&self, repo: &str, digest: &Digest) -> Result<()> {
        if self.setup.policy.is_none() {
            return Ok(());
        }
        self.verdict(repo, digest)?.map(drop).map_err(|why| self.refusal(repo, digest, &why))
    }

    /// [`Gate::allows`] if the verdict is kept and fresh; `None` if it must be decided.
    pub fn allows_now(&self, repo: &str, digest: &Digest) -> Option<Result<()>> {
        if self.setup.policy.is_none() {
            return Some(Ok(()));
        }
        let v = self.fresh(&self.verdicts, &(repo.to_string(), digest.clone()))?;
        Some(v.map(drop).map_err(|why| self.refusal(repo, digest, &why)))
    }

    fn verdict(&self, repo: &str, digest: &Digest) -> Result<Verdict> {
        let key = (repo.to_string(), digest.clone());
        if let Some(v) = self.fresh(&self.verdicts, &key) {
            return Ok(v);
        }
        self.flights.run(&key, || {
            if let Some(v) = self.fresh(&self.verdicts, &key) {
                return Ok(v);
            }
            // Kept from when it started to read, not from when it ended.
            let started = Instant::now();
            let kind = self.store.manifest(repo, digest)?.manifest.kind;
            let verdict = if !matches!(kind, Kind::OciIndex | Kind::DockerManifestList) {
                self.judge(repo, digest, false)?.verdict.unwrap_or_else(|| Ok("no policy".into()))
            } else {
                Ok(INDEX_NOT_JUDGED.to_string())
            };
            match &verdict {
                Ok(how) => log::info!("{}: accepted: {how}", self.image(repo, digest).full()),
                Err(why) => log::warn!("{}: refused by the signature policy: {why}", self.image(repo, digest).full()),
            }
            lock(&self.verdicts).put(key.clone(), (started, verdict.clone()));
            Ok(verdict)
        })
    }

    /// Everything found for `signatures/`, kept for `tag_ttl`.
    pub fn report(&self, repo: &str, digest: &Digest) -> Result<Arc<Report>> {
        let key = (repo.to_string(), digest.clone());
        if let Some(r) = self.fresh(&self.reports, &key) {
            return Ok(r);
        }
        self.report_flights.run(&key, || {
            let mut report = self.judge(repo, digest, true)?;
            if self.setup.policy.is_some() && report.verdict.is_some() {
                // What is enforced (an index: nothing) is the gate's verdict; its own signatures
                // are still shown as checked.
                let enforced = self.verdict(repo, digest)?;
                if enforced.as_deref() == Ok(INDEX_NOT_JUDGED) {
                    report.notes.push(format!(
                        "its own signatures would say: {}",
                        match &report.verdict {
                            Some(Ok(how)) => format!("accepted ({how})"),
                            Some(Err(why)) => format!("refused ({why})"),
                            None => String::new(),
                        }
                    ));
                    report.verdict = Some(enforced);
                }
            }
            let report = Arc::new(report);
            lock(&self.reports).put(key.clone(), (Instant::now(), Arc::clone(&report)));
            Ok(report)
        })
    }

    /// Decide for `digest` of `repo`; `full` reads every signature (else it stops at the first
    /// that satisfies every requirement).
    fn judge(&self, repo: &str, digest: &Digest, full: bool) -> Result<Report> {
        let image = self.image(repo, digest);
        let mut checks: Vec<(Reference, String, Vec<Requirement>)> = Vec::new();
        let mut early_notes = Vec::new();
        if let Some(p) = &self.setup.policy {
            let (scope, reqs) = p.for_image(&image);
            checks.push((image.clone(), scope.to_string(), reqs.to_vec()));
            for pulled in p.reference_scopes(&image.name) {
                if pulled.digest.as_ref() == Some(digest) {
                    continue; // the image's own scope, already the most specific
                }
                if self.names(repo, &pulled, digest, &mut early_notes)? {
                    let (scope, reqs) = p.for_image(&pulled);
                    checks.push((pulled, scope.to_string(), reqs.to_vec()));
                }
            }
        }
        let scope = checks.iter().map(|c| c.1.clone()).collect::<Vec<_>>().join(" and ");
        let mut judging = Judging::new(&checks);
        let mut notes = early_notes;
        let wanted = full || judging.wants_signatures();
        let (enabled, said) =
            if self.setup.policy.is_some() { self.setup.attachments.enabled(&image) } else { (true, String::new()) };
        if wanted && !enabled {
            notes.push(format!(
                "sigstore attachments are not read for this image ({said}: set use-sigstore-attachments: true)"
            ));
        }
        if wanted && enabled {
            self.cosign(repo, digest, full, &mut judging, &mut notes)?;
            if full || judging.wants_signatures() {
                self.bundles(repo, digest, full, &mut judging, &mut notes)?;
            }
        }
        let notes: Vec<String> = notes.iter().map(|n| signature::cut(n)).collect();
        let verdict = self.setup.policy.as_ref().map(|_| {
            judging.verdict().map_err(|why| if notes.is_empty() { why } else { format!("{why}; {}", notes.join("; ")) })
        });
        Ok(Report {
            image: image.full(),
            policy: self.setup.policy.as_ref().map(|p| p.file.clone()),
            scope,
            verdict,
            signatures: judging.found,
            notes,
        })
    }
}

/// Drop what `cache` keeps for manifests of `repo`.
fn forget_repo<V>(cache: &Kept<V>, repo: &str) {
    let mut c = lock(cache);
    let stale: Vec<(String, Digest)> = c.iter().filter(|((r, _), _)| r == repo).map(|(k, _)| k.clone()).collect();
    for k in stale {
        c.pop(&k);
    }
}
