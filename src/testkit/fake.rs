//! An in-memory registry behind the `Client` trait, for testing the core without FUSE or HTTP.
//!
//! It is an honest registry, except where a test says otherwise through its methods (a corrupt
//! blob, an altered manifest, a `Docker-Content-Digest` that lies). Faults of the transport (bodies
//! cut off, `Range` ignored, slow reads, HEAD refused or lying) are [`super::faulty::Faulty`]'s,
//! which wraps this or any other `Client`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::manifest::referrers::Referrer;
use crate::registry::{BlobReply, Client, Fetch, ManifestReply};
use crate::sync::lock;

#[derive(Clone)]
pub struct StoredManifest {
    pub content_type: String,
    pub body: Vec<u8>,
    /// What `Docker-Content-Digest` says (None: not sent).
    pub digest_header: Option<String>,
}

/// What `Docker-Content-Digest` says when a registry or mirror serves altered manifest bytes.
#[derive(Clone, Copy, Debug)]
pub enum DigestHeader {
    /// Not sent at all.
    Omitted,
    /// The hash of the bytes actually served (a mirror that computes it): consistent, and wrong.
    OfServedBytes,
}

/// The config blob of [`Fake::image`] and [`Fake::image_claiming`].
pub const IMAGE_CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

#[derive(Default)]
pub struct Fake {
    manifests: Mutex<HashMap<(String, String), StoredManifest>>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// Bytes served by GET instead of a blob's own (a registry whose storage went bad).
    corrupt: Mutex<HashMap<String, Vec<u8>>>,
    tags: Mutex<HashMap<String, Vec<String>>>,
    /// Answer the referrers API with 404, as a registry without it (distribution 2.8).
    no_referrers_api: std::sync::atomic::AtomicBool,
}

impl Fake {
    /// Store a blob under its sha256 digest.
    pub fn add_blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, bytes);
        lock(&self.blobs).insert(d.to_string(), bytes.to_vec());
        d
    }

    /// From now on serve `bytes` for GET of blob `digest` (HEAD still says its own size).
    pub fn corrupt_blob(&self, digest: &Digest, bytes: Vec<u8>) {
        lock(&self.corrupt).insert(digest.to_string(), bytes);
    }

    /// Store a manifest under its digest (and `tag`, if given), served as the registry would.
    pub fn put_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        content_type: &str,
        body: &[u8],
        alg: Algorithm,
    ) -> Digest {
        let d = Digest::of(alg, body);
        let stored = StoredManifest {
            content_type: content_type.into(),
            body: body.to_vec(),
            digest_header: Some(d.to_string()),
        };
        let mut m = lock(&self.manifests);
        m.insert((repo.into(), d.to_string()), stored.clone());
        if let Some(t) = tag {
            m.insert((repo.into(), t.into()), stored);
            lock(&self.tags).entry(repo.into()).or_default().push(t.into());
        }
        d
    }

    /// What `reference` of `repo` is served as, if anything.
    pub fn stored_manifest(&self, repo: &str, reference: &str) -> Option<StoredManifest> {
        lock(&self.manifests).get(&(repo.to_string(), reference.to_string())).cloned()
    }

    /// Serve `stored` for `reference` of `repo`, whatever it hashes to (the tag list is untouched).
    pub fn serve_stored_manifest(&self, repo: &str, reference: &str, stored: StoredManifest) {
        lock(&self.manifests).insert((repo.to_string(), reference.to_string()), stored);
    }

    /// Append `tags` to the tag list of `repo` (they need not name any manifest).
    pub fn add_tags(&self, repo: &str, tags: &[&str]) {
        lock(&self.tags).entry(repo.into()).or_default().extend(tags.iter().map(|t| t.to_string()));
    }

    /// Replace the tag list of `repo` (the repository then appears in the catalog).
    pub fn set_tags(&self, repo: &str, tags: Vec<String>) {
        lock(&self.tags).insert(repo.into(), tags);
    }

    /// A small OCI image of one layer; (manifest digest, layer digest).
    pub fn image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Digest, Digest) {
        let l = self.add_blob(layer);
        (self.image_claiming(repo, tag, &l, layer.len() as u64), l)
    }

    /// An OCI image whose one layer is `layer` (already stored) with the size `claimed`.
    pub fn image_claiming(&self, repo: &str, tag: &str, layer: &Digest, claimed: u64) -> Digest {
        let cfg = self.add_blob(IMAGE_CONFIG);
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": IMAGE_CONFIG.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": claimed}]
        });
        let body = serde_json::to_vec(&m).expect("json");
        self.put_manifest(repo, Some(tag), crate::media::OCI_MANIFEST, &body, Algorithm::Sha256)
    }

    /// From now on serve `reference` of `repo` altered by `alter`, with `header` saying what a
    /// registry or mirror whose storage was changed would say.
    pub fn serve_altered_manifest(
        &self,
        repo: &str,
        reference: &str,
        alter: impl FnOnce(&mut Vec<u8>),
        header: DigestHeader,
    ) {
        let mut m = lock(&self.manifests);
        let stored = m.get_mut(&(repo.to_string(), reference.to_string())).expect("no such manifest to alter");
        alter(&mut stored.body);
        stored.digest_header = match header {
            DigestHeader::Omitted => None,
            DigestHeader::OfServedBytes => Some(Digest::of(Algorithm::Sha256, &stored.body).to_string()),
        };
    }

    /// From now on send `claim` as the `Docker-Content-Digest` of `reference` (None: no header).
    pub fn claim_digest(&self, repo: &str, reference: &str, claim: Option<&Digest>) {
        let mut m = lock(&self.manifests);
        let stored = m.get_mut(&(repo.to_string(), reference.to_string())).expect("no such manifest");
        stored.digest_header = claim.map(Digest::to_string);
    }
}

/// Referrers, as a registry computes them from what it stores.
impl Fake {
    /// From now on answer the referrers API with 404 (a registry without it).
    pub fn without_referrers_api(&self) {
        self.no_referrers_api.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The referrers index of `subject` in `repo`, as the OCI 1.1 API answers it: one descriptor
    /// per manifest stored by digest whose `subject` names it (sorted by digest), with its
    /// `artifactType` (else its config's media type) and annotations.
    pub fn referrers_index(&self, repo: &str, subject: &Digest) -> Vec<u8> {
        let mut entries: Vec<(String, serde_json::Value)> = lock(&self.manifests)
            .iter()
            .filter(|((r, reference), _)| r == repo && reference.parse::<Digest>().is_ok())
            .filter_map(|((_, reference), m)| {
                let doc: serde_json::Value = serde_json::from_slice(&m.body).ok()?;
                (doc["subject"]["digest"].as_str()? == subject.to_string()).then_some(())?;
                let mut d = serde_json::json!({"mediaType": m.content_type, "digest": reference, "size": m.body.len()});
                let artifact_type = doc.get("artifactType").or_else(|| doc["config"].get("mediaType"));
                if let Some(t) = artifact_type {
                    d["artifactType"] = t.clone();
                }
                if let Some(a) = doc.get("annotations") {
                    d["annotations"] = a.clone();
                }
                Some((reference.clone(), d))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let manifests: Vec<serde_json::Value> = entries.into_iter().map(|(_, d)| d).collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": crate::media::OCI_INDEX, "manifests": manifests});
        serde_json::to_vec(&index).expect("json")
    }

    /// Store the referrers index of `subject` under its referrers-tag-schema tag
    /// (`sha256-<hex>`), as a client pushing to a registry without the API does; its digest.
    pub fn put_referrers_tag(&self, repo: &str, subject: &Digest) -> Digest {
        let tag = format!("{}-{}", subject.algorithm().name(), subject.hex());
        let index = self.referrers_index(repo, subject);
        self.put_manifest(repo, Some(&tag), crate::media::OCI_INDEX, &index, Algorithm::Sha256)
    }
}

impl Client for Fake {
    /// Every repository something was pushed to (tags or manifests), as a registry lists them.
    fn catalog(&self) -> Result<Vec<String>> {
        let mut repos: Vec<String> = lock(&self.tags).keys().cloned().collect();
        repos.extend(lock(&self.manifests).keys().map(|(repo, _)| repo.clone()));
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        lock(&self.tags).get(repo).cloned().ok_or_else(|| Error::NotFound(format!("tags of {repo}")))
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        let m = self.stored_manifest(repo, reference).ok_or_else(|| Error::NotFound(format!("{repo}:{reference}")))?;
        Ok(ManifestReply {
            url: format!("fake://{repo}/manifests/{reference}"),
            content_type: Some(m.content_type),
            digest_header: m.digest_header,
            body: (fetch == Fetch::Get).then_some(m.body),
        })
    }

    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<Referrer>>> {
        if self.no_referrers_api.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        let what = format!("fake://{repo}/referrers/{digest}");
        crate::manifest::referrers::parse(&self.referrers_index(repo, digest), &what).map(Some)
    }

    fn blob_size(&self, _repo: &str, digest: &Digest) -> Result<u64> {
        lock(&self.blobs)
            .get(&digest.to_string())
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::NotFound(digest.to_string()))
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        let bytes = match lock(&self.corrupt).get(&digest.to_string()) {
            Some(b) => b.clone(),
            None => lock(&self.blobs)
                .get(&digest.to_string())
                .cloned()
                .ok_or_else(|| Error::NotFound(digest.to_string()))?,
        };
        let ranged = offset > 0;
        let body = if ranged { bytes[(offset as usize).min(bytes.len())..].to_vec() } else { bytes };
        Ok(BlobReply {
            url: format!("fake://{repo}/blobs/{digest}"),
            reader: Box::new(std::io::Cursor::new(body)),
            ranged,
        })
    }
}
