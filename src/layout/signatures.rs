//! `manifests/<digest>/signatures/`: each signature found for a manifest and its verdict, as the
//! mount's policy judges it (`policy`).
//!
//! ```text
//! signatures/           Signatures     listed in the order found
//!   summary             SignatureFile  one line: accepted or refused, by which policy and scope, why
//!   verdict.json        SignatureFile  the same as JSON, with the notes and the signatures' files
//!   cosign-<n>.json     SignatureFile  layer n of the cosign sha256-<hex>.sig manifest
//!   bundle-<hex>.json   SignatureFile  a Sigstore bundle attached as a referrer
//! ```
//!
//! What is found is a name the registry may change (a `.sig` tag, a referrers list), so all is
//! [`Stability::Named`]: trusted for `tag_ttl`. Listing the directory, or reading any file,
//! reads every signature (`Gate::report`); nothing else here asks the registry. With no policy
//! the signatures are listed, not checked. Always readable, whatever the verdict: it says why.

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::policy::Report;
use crate::store::Content;

use super::{Dir, File, Layout, ManifestDir, Node, Stability};

pub const SUMMARY: &str = "summary";
pub const VERDICT_JSON: &str = "verdict.json";

/// `<repo>/manifests/<digest>/signatures/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signatures {
    pub repo: String,
    pub digest: Digest,
}

/// A file of `signatures/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignatureFile {
    pub repo: String,
    pub digest: Digest,
    pub name: String,
}

impl Signatures {
    fn names(report: &Report) -> Vec<String> {
        let mut out = vec![SUMMARY.to_string(), VERDICT_JSON.to_string()];
        out.extend(report.signatures.iter().map(|s| s.file.clone()));
        out
    }

    fn file(&self, name: String) -> Node {
        Node::SignatureFile(SignatureFile { repo: self.repo.clone(), digest: self.digest.clone(), name })
    }
}

impl Dir for Signatures {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::ManifestDir(ManifestDir { repo: self.repo.clone(), digest: self.digest.clone() })
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let report = cx.gate.report(&self.repo, &self.digest)?;
        if Signatures::names(&report).iter().any(|n| n == name) {
            Ok(self.file(name.to_string()))
        } else {
            Err(Error::NotFound(format!("signatures/{name} of {}@{}", self.repo, self.digest)))
        }
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let report = cx.gate.report(&self.repo, &self.digest)?;
        Ok(Signatures::names(&report).into_iter().map(|n| (n.clone(), self.file(n))).collect())
    }
}

impl SignatureFile {
    fn bytes(&self, cx: &Layout) -> Result<Arc<Vec<u8>>> {
        let report = cx.gate.report(&self.repo, &self.digest)?;
        let pretty = |v: serde_json::Value| {
            let mut b = serde_json::to_vec_pretty(&v).unwrap_or_default();
            b.push(b'\n');
            b
        };
        let bytes = match self.name.as_str() {
            SUMMARY => report.summary().into_bytes(),
            VERDICT_JSON => pretty(report.json()),
            name => match report.signatures.iter().find(|s| s.file == name) {
                Some(s) => pretty(s.json(&report.image)),
                None => {
                    return Err(Error::NotFound(format!(
                        "signatures/{name} of {}@{} (no longer found)",
                        self.repo, self.digest
                    )));
                }
            },
        };
        Ok(Arc::new(bytes))
    }
}

impl File for SignatureFile {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn size(&self, cx: &Layout) -> Result<u64> {
        Ok(self.bytes(cx)?.len() as u64)
    }

    fn open(&self, cx: &Layout) -> Result<Content> {
        Ok(Content::Memory(self.bytes(cx)?))
    }
}
