//! What a verified manifest shows: its directory (`manifest.json`, `config.json`, `layers/`,
//! or one link per index entry), the layer files, and blobs. Everything here is addressed by
//! digest, so it is immutable. Names are computed once, when the manifest is parsed
//! (`manifest/`), and only read here.

use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{
    CONFIG_JSON, CURRENT_LINK, LAYERS_DIR, MANIFEST_JSON, Manifest, REFERRERS_DIR, ROOTFS_DIR, SIGNATURES_DIR,
};
use crate::platform::Matcher;
use crate::store::{Content, VerifiedManifest};
use crate::views::has_view;

use super::{Dir, File, Layout, Link, Manifests, Node, Stability};

/// `<repo>/manifests/<digest>/`: what the dispatcher found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestDir {
    pub repo: String,
    pub digest: Digest,
}

/// `manifest.json`: the manifest's bytes exactly as served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestJson {
    pub repo: String,
    pub digest: Digest,
}

/// `layers/`: one file per layer, bottom layer first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layers {
    pub repo: String,
    pub digest: Digest,
}

/// A config or layer file, or `blobs/<digest>`. `size` is what the descriptor that named it
/// claims (none for `blobs/<digest>` and schema1 layers): each manifest's claim is its own,
/// so a wrong size in one manifest cannot change another's file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blob {
    pub repo: String,
    pub digest: Digest,
    pub size: Option<u64>,
}

/// `layers/<n>.tar` beside a gzip or zstd layer `n` of an image manifest: the layer decoded,
/// served only once the whole decoded stream has hashed to its diff_id (`views`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecodedLayer {
    pub repo: String,
    pub manifest: Digest,
    pub n: usize,
}

/// An index entry: a symlink to `../<target>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexLink {
    pub repo: String,
    pub parent: Digest,
    pub name: String,
    pub target: Digest,
}

/// `current` in an index directory: a symlink to the link of the entry docker would pull for
/// the mount's platform (`platform::Matcher`), e.g. `current -> linux-amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CurrentLink {
    pub repo: String,
    pub parent: Digest,
    /// The chosen entry's link name.
    pub name: String,
}

/// The link name of the index entry `platform` chooses, if any: among the entries with a
/// platform, in index order (see `platform`'s note).
pub(crate) fn chosen(m: &Manifest, platform: &Matcher) -> Option<String> {
    let with_platform = m.children.iter().filter_map(|(name, d)| d.platform.as_ref().map(|p| (name, p)));
    platform.best(with_platform).cloned()
}

/// The names the directory of manifest `m` (`digest` in `repo`) shows, in listing order: image
/// manifests `manifest.json`, `config.json`, `layers/`, (if every layer is a tar) `rootfs/` and
/// the layers that have a safe, unique title under that title (`Manifest::titles`);
/// indexes `manifest.json` and one symlink per entry; every kind `referrers/`, after the fixed
/// names and titles. Fixed names are in `manifest::DIR_NAMES`, which link names avoid.
pub(crate) fn entries(repo: &str, digest: &Digest, m: &Manifest) -> Vec<(String, Node)> {
    let (repo, digest) = (repo.to_string(), digest.clone());
    let mut out = vec![(
        MANIFEST_JSON.to_string(),
        Node::ManifestJson(ManifestJson { repo: repo.clone(), digest: digest.clone() }),
    )];
    if let Some(c) = &m.config {
        out.push((
            CONFIG_JSON.to_string(),
            Node::Blob(Blob { repo: repo.clone(), digest: c.digest.clone(), size: c.size }),
        ));
    }
    if !m.layers.is_empty() || m.kind.is_image() {
        out.push((LAYERS_DIR.to_string(), Node::Layers(Layers { repo: repo.clone(), digest: digest.clone() })));
    }
    if super::rootfs::has_rootfs(m) {
        let root = super::RootfsDir { repo: repo.clone(), manifest: digest.clone(), path: String::new() };
        out.push((ROOTFS_DIR.to_string(), Node::RootfsDir(root)));
    }
    // Layers named by their title too (safe, unique names; see `manifest::title_names`).
    for (title, n) in &m.titles {
        if let Some((_, d)) = m.layers.get(*n) {
            out.push((title.clone(), Node::Blob(Blob { repo: repo.clone(), digest: d.digest.clone(), size: d.size })));
        }
    }
    let referrers = super::Referrers { repo: repo.clone(), subject: digest.clone() };
    out.push((REFERRERS_DIR.to_string(), Node::Referrers(referrers)));
    let signatures = super::Signatures { repo: repo.clone(), digest: digest.clone() };
    out.push((SIGNATURES_DIR.to_string(), Node::Signatures(signatures)));
    for (name, d) in &m.children {
        let link =
            IndexLink { repo: repo.clone(), parent: digest.clone(), name: name.clone(), target: d.digest.clone() };
        out.push((name.clone(), Node::IndexLink(link)));
    }
    out
}

impl ManifestDir {
    fn manifest(&self, cx: &Layout) -> Result<Arc<VerifiedManifest>> {
        cx.store.manifest(&self.repo, &self.digest)
    }

    /// What this directory shows here: [`entries`], then, in an index, `current` when an entry
    /// matches the mount's platform.
    fn shown(&self, cx: &Layout, doc: &VerifiedManifest) -> Vec<(String, Node)> {
        let mut out = entries(&self.repo, &doc.digest, &doc.manifest);
        if let Some(name) = chosen(&doc.manifest, &cx.platform) {
            let link = CurrentLink { repo: self.repo.clone(), parent: doc.digest.clone(), name };
            out.push((CURRENT_LINK.to_string(), Node::CurrentLink(link)));
        }
        out
    }
}

impl Dir for ManifestDir {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn parent(&self) -> Node {
        Node::Manifests(Manifests { repo: self.repo.clone() })
    }

    fn check(&self, cx: &Layout) -> Result<()> {
        self.manifest(cx).map(drop)
    }

    /// Under a signature policy, everything but `manifest.json`, `referrers/` and `signatures/`
    /// is the manifest's content: looked up only once the policy accepts it.
    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let doc = self.manifest(cx)?;
        let node = self
            .shown(cx, &doc)
            .into_iter()
            .find_map(|(n, node)| (n == name).then_some(node))
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if !matches!(node, Node::ManifestJson(_) | Node::Referrers(_) | Node::Signatures(_)) {
            cx.allowed(&self.repo, &self.digest)?;
        }
        Ok(node)
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let doc = self.manifest(cx)?;
        Ok(self.shown(cx, &doc))
    }
}

impl File for ManifestJson {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn size(&self, cx: &Layout) -> Result<u64> {
        Ok(cx.store.manifest(&self.repo, &self.digest)?.bytes().len() as u64)
    }

    fn open(&self, cx: &Layout) -> Result<Content> {
        Ok(Content::Manifest(cx.store.manifest(&self.repo, &self.digest)?))
    }

    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        cx.store.manifest_now(&self.repo, &self.digest).map(|m| Ok(Content::Manifest(m)))
    }
}

impl Dir for Layers {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn parent(&self) -> Node {
        Node::ManifestDir(ManifestDir { repo: self.repo.clone(), digest: self.digest.clone() })
    }

    fn check(&self, cx: &Layout) -> Result<()> {
        cx.store.manifest(&self.repo, &self.digest).map(drop)
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let doc = cx.store.manifest(&self.repo, &self.digest)?;
        cx.allowed(&self.repo, &self.digest)?;
        if let Some(layer) = doc.manifest.layer(name) {
            return Ok(Node::Blob(Blob { repo: self.repo.clone(), digest: layer.digest.clone(), size: layer.size }));
        }
        // `<n>.tar`, `n` in decimal as the layers are named (no sign, no leading zero).
        let n = name
            .strip_suffix(".tar")
            .filter(|n| n == &"0" || (!n.starts_with('0') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| has_view(&doc.manifest, *n))
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        Ok(self.decoded(n))
    }

    /// Each layer, and after each gzip or zstd one its decoded view `<n>.tar`.
    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let doc = cx.store.manifest(&self.repo, &self.digest)?;
        cx.allowed(&self.repo, &self.digest)?;
        let mut out = Vec::new();
        for (n, (name, d)) in doc.manifest.layers.iter().enumerate() {
            out.push((
                name.clone(),
                Node::Blob(Blob { repo: self.repo.clone(), digest: d.digest.clone(), size: d.size }),
            ));
            if has_view(&doc.manifest, n) {
                out.push((format!("{n}.tar"), self.decoded(n)));
            }
        }
        Ok(out)
    }
}

impl Layers {
    fn decoded(&self, n: usize) -> Node {
        Node::DecodedLayer(DecodedLayer { repo: self.repo.clone(), manifest: self.digest.clone(), n })
    }
}

impl File for DecodedLayer {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    /// The decoded length once this process has it verified; 0 before (never a request).
    fn size(&self, cx: &Layout) -> Result<u64> {
        let doc = cx.store.manifest(&self.repo, &self.manifest)?;
        Ok(cx.views.decoded_len_if_known(&doc, self.n).unwrap_or(0))
    }

    fn settled(&self, cx: &Layout) -> bool {
        cx.store
            .manifest(&self.repo, &self.manifest)
            .is_ok_and(|doc| cx.views.decoded_len_if_known(&doc, self.n).is_some())
    }

    /// The decode, once per diff_id, verified before this returns.
    fn open(&self, cx: &Layout) -> Result<Content> {
        cx.allowed(&self.repo, &self.manifest)?;
        Ok(Content::File(cx.views.decoded(&self.repo, &self.manifest, self.n)?))
    }
}

impl File for Blob {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    /// The claimed size; without one, the verified length or one HEAD, once.
    fn size(&self, cx: &Layout) -> Result<u64> {
        cx.store.blob_size(&self.repo, &self.digest, self.size)
    }

    /// A descriptor's claim is final (content of another length fails this node's every open);
    /// a HEAD's word is not until the content is verified: an open may find it wrong, drop it,
    /// and succeed on the next, and the kernel must not keep reading only up to the HEAD's size.
    fn settled(&self, cx: &Layout) -> bool {
        self.size.is_some() || cx.store.blob_cache().verified_len(&self.digest).is_some()
    }

    /// The download, once per digest, verified before this returns.
    fn open(&self, cx: &Layout) -> Result<Content> {
        cx.store.blob(&self.repo, &self.digest, self.size)
    }

    fn open_now(&self, cx: &Layout) -> Option<Result<Content>> {
        cx.store.blob_now(&self.repo, &self.digest, self.size)
    }
}

fn link_target(d: &Digest) -> String {
    format!("../{d}")
}

impl Link for IndexLink {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn size(&self, _: &Layout) -> u64 {
        link_target(&self.target).len() as u64
    }

    fn target(&self, _: &Layout) -> Result<String> {
        Ok(link_target(&self.target))
    }

    fn target_now(&self, cx: &Layout) -> Option<Result<String>> {
        Some(self.target(cx))
    }
}

impl Link for CurrentLink {
    fn stability(&self) -> Stability {
        Stability::Immutable
    }

    fn size(&self, _: &Layout) -> u64 {
        self.name.len() as u64
    }

    fn target(&self, _: &Layout) -> Result<String> {
        Ok(self.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::manifest::{DIR_NAMES, parse};
    use crate::media;

    /// Index link names avoid `manifest::DIR_NAMES` (`name_children`); a fixed name shown in a
    /// manifest directory but missing there could be shadowed by a link of the same name.
    #[test]
    fn every_fixed_name_of_a_manifest_directory_is_in_dir_names() {
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let docs = [
            ("oci-manifest-seed.json", media::OCI_MANIFEST),
            ("oci-index-seed.json", media::OCI_INDEX),
            ("docker-schema2-spec.json", media::DOCKER_SCHEMA2),
            ("docker-manifest-list-spec.json", media::DOCKER_LIST),
            ("schema1-signed.json", media::DOCKER_SCHEMA1_SIGNED),
        ];
        let mut seen = 0;
        for (file, media_type) in docs {
            let m = parse(&fixture(file), Some(media_type), file).expect("fixture");
            for (name, node) in entries("r", &m.digest(Algorithm::Sha256), &m) {
                // Every name that is not an index entry's link or a layer's title is a fixed one.
                if !matches!(node, Node::IndexLink(_)) && !m.titles.iter().any(|(t, _)| *t == name) {
                    assert!(DIR_NAMES.contains(&name.as_str()), "{file}: {name} is not in manifest::DIR_NAMES");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "the fixtures show fixed names");
        // `current`, added beside the entries of an index (`ManifestDir::shown`), is fixed too.
        let index = parse(&fixture("oci-index-seed.json"), Some(media::OCI_INDEX), "index").expect("fixture");
        let amd64 = crate::platform::Platform::parse("linux/amd64").expect("platform");
        assert_eq!(chosen(&index, &Matcher::new(&amd64)).as_deref(), Some("linux-amd64"));
        assert!(DIR_NAMES.contains(&CURRENT_LINK));
    }
}
