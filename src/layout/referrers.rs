//! `manifests/<digest>/referrers/`: what refers to a manifest (signatures, SBOMs, attestations).
//!
//! ```text
//! referrers/                    Referrers         one link per referrer, and a directory per type
//!   sha256:<hex>                ReferrerLink      -> ../../sha256:<hex>
//!   <type>/                     ReferrersType     e.g. application/
//!     <subtype>/                ReferrersSubtype  e.g. spdx+json/: the referrers of that artifactType
//!       sha256:<hex>            ReferrerLink      -> ../../../../sha256:<hex>
//! ```
//!
//! The list is a name the registry may change (`Store::referrers`: the OCI 1.1 API, or the
//! `sha256-<hex>` tag where the API is missing), so everything here is [`Stability::Named`]:
//! trusted for `tag_ttl`. Listing `referrers/` and any of its directories, and looking names up
//! in them, all read the one list the store holds: one request per subject per `tag_ttl`.
//! Each link only names a manifest by digest; following it verifies that manifest as any other.
//!
//! An `artifactType` makes directories only when both its names are RFC 6838 restricted names
//! (`manifest::referrers::media_type_parts`); a referrer without one, or with another, is
//! listed at the top only. Link names (`<alg>:<hex>`) hold a `:`, which no type name does, so
//! links and type directories never collide.

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::referrers::Referrer;

use super::{Dir, Layout, Link, ManifestDir, Node, Stability};

/// `<repo>/manifests/<subject>/referrers/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Referrers {
    pub repo: String,
    pub subject: Digest,
}

/// `referrers/<type>/`: the first name of the artifact types listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrersType {
    pub repo: String,
    pub subject: Digest,
    pub kind: String,
}

/// `referrers/<type>/<subtype>/`: the referrers whose `artifactType` is `<type>/<subtype>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrersSubtype {
    pub repo: String,
    pub subject: Digest,
    pub kind: String,
    pub subtype: String,
}

/// A referrer: a symlink `depth` directories up to `manifests/`, then to its manifest's directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrerLink {
    pub repo: String,
    pub subject: Digest,
    pub target: Digest,
    /// 2 in `referrers/`, 4 in `referrers/<type>/<subtype>/`.
    pub depth: u8,
}

fn list(cx: &Layout, repo: &str, subject: &Digest) -> Result<Arc<Vec<Referrer>>> {
    cx.store.referrers(repo, subject)
}

fn link(repo: &str, subject: &Digest, target: &Digest, depth: u8) -> (String, Node) {
    let node = ReferrerLink { repo: repo.to_string(), subject: subject.clone(), target: target.clone(), depth };
    (target.to_string(), Node::ReferrerLink(node))
}

/// Names in first-listed order, each once.
/// Linear: a lookup rebuilds the directory, and a list holds up to `MAX_REFERRERS` types.
fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.filter(|n| seen.insert(*n)).map(str::to_string).collect()
}

impl Referrers {
    fn entries(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let list = list(cx, &self.repo, &self.subject)?;
        let kinds = unique(list.iter().filter_map(|r| r.type_dirs()).map(|(k, _)| k));
        let mut out: Vec<(String, Node)> = kinds
            .into_iter()
            .map(|kind| {
                let node = ReferrersType { repo: self.repo.clone(), subject: self.subject.clone(), kind: kind.clone() };
                (kind, Node::ReferrersType(node))
            })
            .collect();
        out.extend(list.iter().map(|r| link(&self.repo, &self.subject, &r.digest, 2)));
        Ok(out)
    }
}

impl Dir for Referrers {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::ManifestDir(ManifestDir { repo: self.repo.clone(), digest: self.subject.clone() })
    }

    /// One scan of the list, nothing built but the node found (a lookup per name of a long
    /// list must not rebuild the directory).
    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let list = list(cx, &self.repo, &self.subject)?;
        if let Some(d) = link_digest(name) {
            if list.iter().any(|r| r.digest == d) {
                return Ok(link(&self.repo, &self.subject, &d, 2).1);
            }
        } else if list.iter().any(|r| r.type_dirs().is_some_and(|(k, _)| k == name)) {
            let node = ReferrersType { repo: self.repo.clone(), subject: self.subject.clone(), kind: name.to_string() };
            return Ok(Node::ReferrersType(node));
        }
        Err(Error::NotFound(name.to_string()))
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        self.entries(cx)
    }
}

/// The digest a link named `name` would point to: only a name exactly as links are named.
fn link_digest(name: &str) -> Option<Digest> {
    name.parse::<Digest>().ok().filter(|d| d.to_string() == name)
}

impl ReferrersType {
    fn entries(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let list = list(cx, &self.repo, &self.subject)?;
        let subtypes =
            unique(list.iter().filter_map(|r| r.type_dirs()).filter(|(k, _)| *k == self.kind).map(|(_, s)| s));
        Ok(subtypes
            .into_iter()
            .map(|subtype| {
                let node = ReferrersSubtype {
                    repo: self.repo.clone(),
                    subject: self.subject.clone(),
                    kind: self.kind.clone(),
                    subtype: subtype.clone(),
                };
                (subtype, Node::ReferrersSubtype(node))
            })
            .collect())
    }
}

impl Dir for ReferrersType {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::Referrers(Referrers { repo: self.repo.clone(), subject: self.subject.clone() })
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let list = list(cx, &self.repo, &self.subject)?;
        if !list.iter().any(|r| r.type_dirs() == Some((self.kind.as_str(), name))) {
            return Err(Error::NotFound(name.to_string()));
        }
        let node = ReferrersSubtype {
            repo: self.repo.clone(),
            subject: self.subject.clone(),
            kind: self.kind.clone(),
            subtype: name.to_string(),
        };
        Ok(Node::ReferrersSubtype(node))
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        self.entries(cx)
    }
}

impl ReferrersSubtype {
    fn entries(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let list = list(cx, &self.repo, &self.subject)?;
        Ok(list
            .iter()
            .filter(|r| r.type_dirs() == Some((self.kind.as_str(), self.subtype.as_str())))
            .map(|r| link(&self.repo, &self.subject, &r.digest, 4))
            .collect())
    }
}

impl Dir for ReferrersSubtype {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        let node = ReferrersType { repo: self.repo.clone(), subject: self.subject.clone(), kind: self.kind.clone() };
        Node::ReferrersType(node)
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let list = list(cx, &self.repo, &self.subject)?;
        let kind = Some((self.kind.as_str(), self.subtype.as_str()));
        match link_digest(name) {
            Some(d) if list.iter().any(|r| r.digest == d && r.type_dirs() == kind) => {
                Ok(link(&self.repo, &self.subject, &d, 4).1)
            }
            _ => Err(Error::NotFound(name.to_string())),
        }
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        self.entries(cx)
    }
}

impl ReferrerLink {
    fn target_path(&self) -> String {
        format!("{}{}", "../".repeat(usize::from(self.depth)), self.target)
    }
}

impl Link for ReferrerLink {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn size(&self, _: &Layout) -> u64 {
        self.target_path().len() as u64
    }

    fn target(&self, _: &Layout) -> Result<String> {
        Ok(self.target_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::layout::image::entries;
    use crate::manifest::parse;
    use crate::media;

    /// `referrers` is a fixed name (`manifest::DIR_NAMES`): an index entry whose platform would
    /// be called that is named by its digest, and `referrers/` stays the directory.
    #[test]
    fn an_index_entry_named_referrers_does_not_shadow_the_directory() {
        let child = format!("sha256:{}", "1".repeat(64));
        let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
            {"mediaType": media::OCI_MANIFEST, "size": 1, "digest": child, "platform": {"os": "referrers", "architecture": ""}}
        ]});
        let m = parse(&serde_json::to_vec(&doc).expect("test input"), None, "t").expect("an index");
        let shown = entries("r", &m.digest(Algorithm::Sha256), &m);
        let named: Vec<&Node> = shown.iter().filter(|(n, _)| n == "referrers").map(|(_, node)| node).collect();
        assert!(matches!(named[..], [Node::Referrers(_)]), "{named:?}");
        assert!(shown.iter().any(|(n, node)| *n == child && matches!(node, Node::IndexLink(_))), "{shown:?}");
    }
}
