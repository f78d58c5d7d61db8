//! A manifest's verdict and what `signatures/` shows of it ([`Report`]), and the bookkeeping of
//! one decision ([`Judging`]): which requirements of which checks a signature satisfied, and the
//! first reason each unsatisfied one was refused for. Every reason kept is cut
//! (`signature::cut`): it may quote what the registry sent.

use serde_json::{Value, json};

use super::config::Requirement;
use super::reference::Reference;
use super::signature::{self, Signed, Status};
use std::path::PathBuf;

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

/// The requirements being decided and the signatures judged so far.
pub(super) struct Judging {
    /// Per check: (image, scope, requirements, which sigstoreSigned ones are satisfied).
    pub(super) checks: Vec<(Reference, String, Vec<Requirement>, Vec<bool>)>,
    /// Per check and requirement: the first signature that failed it, and why.
    refusals: Vec<Vec<Option<(String, String)>>>,
    pub(super) found: Vec<Found>,
}

impl Judging {
    pub(super) fn new(checks: &[(Reference, String, Vec<Requirement>)]) -> Judging {
        let checks: Vec<_> =
            checks.iter().map(|(r, s, q)| (r.clone(), s.clone(), q.clone(), vec![false; q.len()])).collect();
        let refusals = checks.iter().map(|c| vec![None; c.2.len()]).collect();
        Judging { checks, refusals, found: Vec::new() }
    }

    /// Whether a sigstoreSigned requirement is still unsatisfied, and nothing else refuses.
    pub(super) fn wants_signatures(&self) -> bool {
        let refuses = self.checks.iter().any(|(_, _, reqs, _)| {
            reqs.iter().any(|r| matches!(r, Requirement::Reject | Requirement::Unsupported { .. }))
        });
        !refuses
            && self
                .checks
                .iter()
                .any(|(_, _, reqs, done)| reqs.iter().zip(done).any(|(r, d)| r.needs_signatures() && !d))
    }

    pub(super) fn judge(
        &mut self,
        file: String,
        kind: &'static str,
        source: String,
        signed: std::result::Result<Signed, String>,
    ) {
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

    pub(super) fn verdict(&self) -> Verdict {
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
