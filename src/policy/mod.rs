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
//! At most [`MAX_SIGNATURES`] signatures are read per manifest (a `.sig` of 10,000 layers is
//! read to that many, said in the verdict); a payload or bundle over [`MAX_SIGNATURE_BLOB`]
//! bytes is refused before it is fetched; a signature manifest is a manifest (4 MiB); a
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
pub mod keys;
pub mod reference;
pub mod registries_d;
pub mod signature;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Kind;
use crate::manifest::json as strict_json;
use crate::store::flight::SingleFlight;
use crate::store::{Content, Store};
use crate::sync::lock;
pub use config::{Policy, Requirement};
use reference::Reference;
pub use registries_d::Attachments;
use signature::{Signed, Status};

use crate::limits::{MAX_SIGNATURE_B64, MAX_SIGNATURE_BLOB, MAX_SIGNATURES};

/// Verdicts and reports kept (a few KiB each: every registry string in them is cut to
/// `signature::SHOWN`; some MiB at most).
pub const VERDICTS_KEPT: usize = 4096;
/// Digests remembered per tag a scope names.
const TAGGED_KEPT: usize = 8;
/// How deep a reference scope's index is searched for the manifest judged.
const INDEX_DEPTH: usize = 4;
/// Indexes read, at most, to find whether a reference scope reaches the manifest judged.
pub const INDEX_MANIFESTS_READ: usize = 64;

/// One search of a reference scope's indexes.
struct Walk {
    seen: std::collections::HashSet<Digest>,
    budget: usize,
}

/// The verdict on an index: not judged itself; its platforms are, each on its own.
pub const INDEX_NOT_JUDGED: &str =
    "an index is not judged by its own signatures (as containers/image): each platform manifest is judged by its own";

/// A manifest's verdict: accepted (how) or refused (why).
pub type Verdict = std::result::Result<String, String>;

/// One signature found for a manifest, as `signatures/` shows it.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its file name in `signatures/`.
    pub file: String,
    pub kind: &'static str,
    /// Where it was found: the `.sig` manifest and layer, or the referrer.
    pub source: String,
    /// `verified`, `refused`, `unverifiable`, `not checked`.
    pub status: &'static str,
    pub detail: String,
    /// The identity it claims, once its signature verified.
    pub identity: Option<String>,
}

/// All that was found and decided for one manifest.
#[derive(Debug, Clone)]
pub struct Report {
    pub image: String,
    pub policy: Option<PathBuf>,
    pub scope: String,
    pub verdict: Option<Verdict>,
    pub signatures: Vec<Found>,
    pub notes: Vec<String>,
}

impl Report {
    /// One line a person reads.
    pub fn summary(&self) -> String {
        let n = self.signatures.len();
        let verified = self.signatures.iter().filter(|s| s.status == "verified").count();
        let counts = format!("{verified} of {n} signature(s) verified");
        // A refusal says its notes already.
        let refused = matches!(self.verdict, Some(Err(_)));
        let notes =
            if self.notes.is_empty() || refused { String::new() } else { format!("; {}", self.notes.join("; ")) };
        match (&self.verdict, &self.policy) {
            (Some(Ok(how)), Some(p)) if how == INDEX_NOT_JUDGED => {
                format!("not judged: {} by {}: {how}; {counts}{notes}\n", self.image, p.display())
            }
            (Some(Ok(how)), Some(p)) => {
                format!(
                    "accepted: {} by {} (scope {:?}): {how}; {counts}{notes}\n",
                    self.image,
                    p.display(),
                    self.scope
                )
            }
            (Some(Err(why)), Some(p)) => {
                format!("refused: {} by {} (scope {:?}): {why}; {counts}{notes}\n", self.image, p.display(), self.scope)
            }
            _ => format!(
                "no signature policy on this mount: {}: {n} signature(s) found, not checked{notes}\n",
                self.image
            ),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "image": self.image,
            "policy": self.policy.as_ref().map(|p| p.display().to_string()),
            "scope": self.scope,
            "verdict": match &self.verdict {
                Some(Ok(how)) if how == INDEX_NOT_JUDGED => "not judged",
                Some(Ok(_)) => "accepted",
                Some(Err(_)) => "refused",
                None => "no policy",
            },
            "why": match &self.verdict { Some(Ok(w) | Err(w)) => Some(w.clone()), None => None },
            "signatures": self.signatures.iter().map(|s| s.file.clone()).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

impl Found {
    pub fn json(&self, image: &str) -> Value {
        json!({
            "image": image, "kind": self.kind, "source": self.source,
            "status": self.status, "detail": self.detail, "identity": self.identity,
        })
    }
}

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

    /// Whether a pull of `pulled` (a tag or digest of `repo`) reaches manifest `digest`: it names
    /// it, or an index it names lists it (nested indexes to [`INDEX_DEPTH`]). A tag names what
    /// it resolves to now (within [`Gate::kept_for`]) and what `tags/` links of this mount
    /// resolved it to. Only index children are opened, each once, at most
    /// [`INDEX_MANIFESTS_READ`] per call: past that the scope is taken to apply (fail closed).
    fn names(&self, repo: &str, pulled: &Reference, digest: &Digest, notes: &mut Vec<String>) -> Result<bool> {
        let mut targets: Vec<Digest> = Vec::new();
        if let Some(d) = &pulled.digest {
            targets.push(d.clone());
        } else if let Some(tag) = &pulled.tag {
            match self.store.resolve_tag_within(repo, tag, self.kept_for()) {
                Ok(d) => targets.push(d),
                Err(Error::NotFound(_) | Error::InvalidName(_)) => {}
                Err(e) => return Err(e),
            }
            if let Some(seen) = lock(&self.tagged).get(&(repo.to_string(), tag.clone())) {
                targets.extend(seen.iter().filter(|d| !targets.contains(d)).cloned().collect::<Vec<_>>());
            }
        }
        let mut walk = Walk { seen: std::collections::HashSet::new(), budget: INDEX_MANIFESTS_READ };
        for t in targets {
            match self.reaches(repo, &t, digest, INDEX_DEPTH, &mut walk)? {
                Some(true) => return Ok(true),
                Some(false) => {}
                None => {
                    notes.push(format!(
                        "{} names more than {INDEX_MANIFESTS_READ} indexes: its scope is taken to apply",
                        pulled.full()
                    ));
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether `digest` is `from` or listed under it; `None` when the walk's budget ran out.
    fn reaches(
        &self,
        repo: &str,
        from: &Digest,
        digest: &Digest,
        depth: usize,
        walk: &mut Walk,
    ) -> Result<Option<bool>> {
        if from == digest {
            return Ok(Some(true));
        }
        if depth == 0 || !walk.seen.insert(from.clone()) {
            return Ok(Some(false));
        }
        if walk.budget == 0 {
            return Ok(None);
        }
        walk.budget -= 1;
        let doc = match self.store.manifest(repo, from) {
            Ok(doc) => doc,
            Err(e) if unreadable(&e) => return Ok(Some(false)),
            Err(e) => return Err(e),
        };
        if doc.manifest.children.iter().any(|(_, c)| c.digest == *digest) {
            return Ok(Some(true));
        }
        for (_, child) in &doc.manifest.children {
            let index = child.media_type == crate::media::OCI_INDEX || child.media_type == crate::media::DOCKER_LIST;
            if index {
                match self.reaches(repo, &child.digest, digest, depth - 1, walk)? {
                    Some(false) => {}
                    other => return Ok(other),
                }
            }
        }
        Ok(Some(false))
    }

    /// cosign's `.sig` tag: one GET, then payloads one by one.
    fn cosign(&self, repo: &str, digest: &Digest, full: bool, j: &mut Judging, notes: &mut Vec<String>) -> Result<()> {
        let tag = format!("{}-{}.sig", digest.algorithm().name(), digest.hex());
        let doc = match self.store.manifest_of_tag_within(repo, &tag, self.kept_for()) {
            Ok(d) => d,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) if unreadable(&e) => {
                notes.push(format!("{repo}:{tag} cannot be read: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let at = format!("{repo}:{tag}@{}", doc.digest);
        // containers/image reads it as an OCI image manifest only.
        if doc.manifest.media_type != crate::media::OCI_MANIFEST {
            let media = signature::shown(&Value::from(doc.manifest.media_type.as_str()));
            notes.push(format!("{at} is not an OCI image manifest ({media}): no signature read from it"));
            return Ok(());
        }
        let parsed = match strict_json::strict(doc.bytes()) {
            Ok(v) => v,
            Err(why) => {
                notes.push(format!("{at}: {why}"));
                return Ok(());
            }
        };
        let layers = parsed["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
        if layers.len() > MAX_SIGNATURES.saturating_sub(j.found.len()) {
            notes
                .push(format!("{at} has {} layers: only the first {MAX_SIGNATURES} signatures are read", layers.len()));
        }
        for (i, layer) in layers.iter().enumerate() {
            if j.found.len() >= MAX_SIGNATURES || (!full && !j.wants_signatures()) {
                break;
            }
            let file = format!("cosign-{i}.json");
            let source = format!("{at} layer {i}");
            let signed = self.cosign_layer(repo, layer);
            j.judge(file, "cosign simple signing", source, signed?);
        }
        Ok(())
    }

    /// One layer of a `.sig` manifest: its payload and signature, or why not.
    fn cosign_layer(&self, repo: &str, layer: &Value) -> Result<std::result::Result<Signed, String>> {
        if layer["mediaType"].as_str() != Some(signature::SIMPLE_SIGNING) {
            return Ok(Err(format!(
                "mediaType {} is not {}",
                signature::shown(&layer["mediaType"]),
                signature::SIMPLE_SIGNING
            )));
        }
        let sig = match layer["annotations"][signature::SIGNATURE_ANNOTATION].as_str() {
            Some(s) if s.len() <= MAX_SIGNATURE_B64 => s,
            Some(s) => return Ok(Err(format!("a signature annotation of {} bytes", s.len()))),
            None => return Ok(Err(format!("no {} annotation", signature::SIGNATURE_ANNOTATION))),
        };
        use base64::Engine as _;
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(sig) else {
            return Ok(Err("the signature annotation is not base64".into()));
        };
        self.small_blob(repo, layer).map(|r| r.map(|payload| Signed::Cosign { payload, signature: der }))
    }

    /// The blob a descriptor names, if it is small enough, verified; why not.
    fn small_blob(&self, repo: &str, desc: &Value) -> Result<std::result::Result<Vec<u8>, String>> {
        let Some(digest) = desc["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) else {
            return Ok(Err(format!("no valid digest: {}", signature::shown(&desc["digest"]))));
        };
        let Some(size) = desc["size"].as_u64() else { return Ok(Err(format!("{digest}: no size"))) };
        if size > MAX_SIGNATURE_BLOB {
            return Ok(Err(format!("{digest}: {size} bytes, over the {MAX_SIGNATURE_BLOB} a signature may take")));
        }
        let content = match self.store.blob(repo, &digest, Some(size)) {
            Ok(c) => c,
            Err(e) if unreadable(&e) => return Ok(Err(format!("{digest}: {e}"))),
            Err(e) => return Err(e),
        };
        Ok(read_small(&content, size).map_err(|e| format!("{digest}: {e}")))
    }

    /// Sigstore bundles among the referrers.
    fn bundles(&self, repo: &str, digest: &Digest, full: bool, j: &mut Judging, notes: &mut Vec<String>) -> Result<()> {
        let list = match self.store.referrers_within(repo, digest, self.kept_for()) {
            Ok(l) => l,
            Err(e) if unreadable(&e) => {
                notes.push(format!("the referrers of {digest} cannot be read: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let bundles: Vec<_> =
            list.iter().filter(|r| r.artifact_type.as_deref().is_some_and(signature::is_bundle_type)).collect();
        let mut judged: std::collections::HashMap<Digest, usize> = std::collections::HashMap::new();
        for r in bundles {
            if j.found.len() >= MAX_SIGNATURES {
                notes.push(format!("more bundles refer to {digest}: only {MAX_SIGNATURES} signatures are read"));
                break;
            }
            if !full && !j.wants_signatures() {
                break;
            }
            let file = format!("bundle-{}.json", &r.digest.hex()[..r.digest.hex().len().min(16)]);
            let source = format!("referrer {repo}@{}", r.digest);
            let (blob, signed) = self.bundle(repo, digest, &r.digest)?;
            // A bundle blob many referrers name is judged once: the others say what it said.
            if let Some(first) = blob.as_ref().and_then(|b| judged.get(b)) {
                let mut again = j.found[*first].clone();
                again.detail = format!("the same bundle as {}", again.file);
                again.file = file;
                again.source = source;
                j.found.push(again);
                continue;
            }
            if let Some(b) = blob {
                judged.insert(b, j.found.len());
            }
            j.judge(file, "sigstore bundle", source, signed);
        }
        Ok(())
    }

    /// The bundle referrer `d` of `subject` attaches: its blob's digest, and the bundle or why not.
    fn bundle(
        &self,
        repo: &str,
        subject: &Digest,
        d: &Digest,
    ) -> Result<(Option<Digest>, std::result::Result<Signed, String>)> {
        let doc = match self.store.manifest(repo, d) {
            Ok(doc) => doc,
            Err(e) if unreadable(&e) => return Ok((None, Err(format!("{e}")))),
            Err(e) => return Err(e),
        };
        let Ok(m) = strict_json::strict(doc.bytes()) else { return Ok((None, Err("the referrer is not JSON".into()))) };
        if m["subject"]["digest"].as_str() != Some(subject.to_string().as_str()) {
            let why = format!("its subject is {}, not this manifest", signature::shown(&m["subject"]["digest"]));
            return Ok((None, Err(why)));
        }
        let layers = m["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
        let Some(layer) = layers.iter().find(|l| l["mediaType"].as_str().is_some_and(signature::is_bundle_type)) else {
            return Ok((None, Err("no layer holds a Sigstore bundle".into())));
        };
        let blob = layer["digest"].as_str().and_then(|d| d.parse::<Digest>().ok());
        Ok((blob, self.small_blob(repo, layer)?.map(|bytes| Signed::Bundle { bytes })))
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

/// Errors of one signature's own (it is missing, lies, or is malformed): it counts as refused.
/// Anything else (the registry unreachable, local I/O) fails the verdict for now.
fn unreadable(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound(_)
            | Error::DigestMismatch { .. }
            | Error::Malformed { .. }
            | Error::TooLarge(_)
            | Error::InvalidName(_)
    )
}

fn read_small(c: &Content, size: u64) -> std::io::Result<Vec<u8>> {
    match c {
        Content::Memory(b) => Ok(b.to_vec()),
        Content::File(f) => {
            let mut out = vec![0u8; size as usize];
            std::os::unix::fs::FileExt::read_exact_at(&**f, &mut out, 0)?;
            Ok(out)
        }
        _ => Err(std::io::Error::other("not a whole blob")),
    }
}

/// The requirements being decided and the signatures judged so far.
struct Judging {
    /// Per check: (image, scope, requirements, which sigstoreSigned ones are satisfied).
    checks: Vec<(Reference, String, Vec<Requirement>, Vec<bool>)>,
    /// Per check and requirement: the first signature that failed it, and why.
    refusals: Vec<Vec<Option<(String, String)>>>,
    found: Vec<Found>,
}

impl Judging {
    fn new(checks: &[(Reference, String, Vec<Requirement>)]) -> Judging {
        let checks: Vec<_> =
            checks.iter().map(|(r, s, q)| (r.clone(), s.clone(), q.clone(), vec![false; q.len()])).collect();
        let refusals = checks.iter().map(|c| vec![None; c.2.len()]).collect();
        Judging { checks, refusals, found: Vec::new() }
    }

    /// Whether a sigstoreSigned requirement is still unsatisfied, and nothing else refuses.
    fn wants_signatures(&self) -> bool {
        let refuses = self.checks.iter().any(|(_, _, reqs, _)| {
            reqs.iter().any(|r| matches!(r, Requirement::Reject | Requirement::Unsupported { .. }))
        });
        !refuses
            && self
                .checks
                .iter()
                .any(|(_, _, reqs, done)| reqs.iter().zip(done).any(|(r, d)| r.needs_signatures() && !d))
    }

    fn judge(&mut self, file: String, kind: &'static str, source: String, signed: std::result::Result<Signed, String>) {
        // Every reason kept is cut: it may quote what the registry sent.
        let signed = signed.map_err(|why| signature::cut(&why));
        let digest = self.checks.first().and_then(|c| c.0.digest.clone());
        let (status, detail, identity) = match (signed, digest) {
            (Err(why), _) => {
                for refusal in self.refusals.iter_mut().flatten().filter(|r| r.is_none()) {
                    *refusal = Some((file.clone(), why.clone()));
                }
                ("refused", why, None)
            }
            (Ok(_), None) => ("not checked", "no signature policy on this mount".to_string(), None),
            (Ok(s), Some(digest)) => {
                let mut verdict: Option<(&'static str, String, Option<String>)> = None;
                for ((image, _, reqs, done), refusals) in self.checks.iter_mut().zip(self.refusals.iter_mut()) {
                    for ((r, d), refusal) in reqs.iter().zip(done.iter_mut()).zip(refusals.iter_mut()) {
                        let Requirement::SigstoreSigned { keys, identity } = r else { continue };
                        let (st, claimed) = s.check(keys, identity, image, &digest);
                        let v = match st {
                            Status::Verified { key } => {
                                *d = true;
                                ("verified", format!("by key {key}"), claimed)
                            }
                            Status::Refused(why) => ("refused", why, claimed),
                            Status::Unverifiable(why) => ("unverifiable", why, claimed),
                        };
                        let v = (v.0, signature::cut(&v.1), v.2.map(|i| signature::cut(&i)));
                        if v.0 != "verified" && refusal.is_none() {
                            *refusal = Some((file.clone(), v.1.clone()));
                        }
                        if verdict.as_ref().is_none_or(|cur| cur.0 != "verified") {
                            verdict = Some(v);
                        }
                    }
                }
                verdict.unwrap_or(("not checked", "no requirement here asks for a signature".into(), None))
            }
        };
        self.found.push(Found { file, kind, source, status, detail, identity });
    }

    fn verdict(&self) -> Verdict {
        let mut how = Vec::new();
        for ((image, scope, reqs, done), refusals) in self.checks.iter().zip(&self.refusals) {
            for ((r, d), refusal) in reqs.iter().zip(done).zip(refusals) {
                match r {
                    Requirement::InsecureAcceptAnything => how.push(format!("{scope}: insecureAcceptAnything")),
                    Requirement::Reject => return Err(format!("scope {scope:?} rejects {}", image.full())),
                    Requirement::Unsupported { why } => return Err(format!("scope {scope:?}: {why}")),
                    Requirement::SigstoreSigned { .. } if *d => how.push(format!("{scope}: sigstoreSigned, verified")),
                    Requirement::SigstoreSigned { .. } => {
                        let why = match (refusal, self.found.is_empty()) {
                            (_, true) => "no signature was found".to_string(),
                            (Some((file, detail)), false) => {
                                format!("no signature verified ({} found; {file}: {detail})", self.found.len())
                            }
                            (None, false) => {
                                format!("none of the {} signature(s) found satisfies it", self.found.len())
                            }
                        };
                        return Err(format!("scope {scope:?} requires sigstoreSigned: {why}"));
                    }
                }
            }
        }
        Ok(how.join(", "))
    }
}
