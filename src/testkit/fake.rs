//! An in-memory registry behind the `Client` trait, for testing the core without FUSE or HTTP,
//! with knobs for what a real registry is hard to make do (lie, cut bodies off, ignore Range).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
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

#[derive(Default)]
pub struct Knobs {
    /// Cut every blob body off after this many bytes, this many times.
    pub cut_after: Option<(usize, usize)>,
    /// End every blob body cleanly (no error, as a server whose body is short) after this many
    /// bytes, this many times.
    pub end_early: Option<(usize, usize)>,
    /// Fail one read of every blob body with `Interrupted` (EINTR: to be retried, not a fault)
    /// after this many bytes.
    pub interrupt_after: Option<usize>,
    pub ignore_range: bool,
    /// Serve these bytes instead of a blob's own.
    pub substitute: HashMap<String, Vec<u8>>,
    /// Answer HEAD of manifests with an unexpected status (as a proxy that refuses HEAD).
    pub refuse_head: bool,
    /// Answer HEAD of these blobs with this size instead of their own.
    pub head_sizes: HashMap<String, u64>,
    /// Sleep this long before each read of a blob body (so that downloads overlap).
    pub slow_reads: Option<std::time::Duration>,
    /// Called before each read of a blob body, while the download is under way.
    pub on_read: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
pub struct Fake {
    pub manifests: Mutex<HashMap<(String, String), StoredManifest>>,
    pub blobs: Mutex<HashMap<String, Vec<u8>>>,
    pub tags: Mutex<HashMap<String, Vec<String>>>,
    pub knobs: Mutex<Knobs>,
    pub calls: Mutex<Vec<String>>,
    pub blob_gets: AtomicUsize,
}

impl Fake {
    pub fn blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, bytes);
        lock(&self.blobs).insert(d.to_string(), bytes.to_vec());
        d
    }

    /// Store a manifest under its digest (and `tag`, if given), served as the registry would.
    pub fn manifest(&self, repo: &str, tag: Option<&str>, content_type: &str, body: &[u8], alg: Algorithm) -> Digest {
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

    /// A small OCI image of one layer; (manifest digest, layer digest).
    pub fn image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Digest, Digest) {
        let l = self.blob(layer);
        let cfg = self.blob(br#"{"architecture":"amd64","os":"linux"}"#);
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 38},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.to_string(), "size": layer.len()}]
        });
        let body = serde_json::to_vec(&m).expect("json");
        (self.manifest(repo, Some(tag), crate::media::OCI_MANIFEST, &body, Algorithm::Sha256), l)
    }

    /// An OCI image whose one layer is `layer` (already stored) with the size `claimed`.
    pub fn image_claiming(&self, repo: &str, tag: &str, layer: &Digest, claimed: u64) -> Digest {
        let cfg = self.blob(br#"{"architecture":"amd64","os":"linux"}"#);
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 38},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": claimed}]
        });
        let body = serde_json::to_vec(&m).expect("json");
        self.manifest(repo, Some(tag), crate::media::OCI_MANIFEST, &body, Algorithm::Sha256)
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

    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }
}

struct CutReader {
    inner: std::io::Cursor<Vec<u8>>,
    left: Option<usize>,
    slow: Option<std::time::Duration>,
    on_read: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    /// At `left == 0`, end the body (Ok(0)) rather than fail.
    clean: bool,
    /// Bytes before one `Interrupted` error.
    interrupt_in: Option<usize>,
}

impl Read for CutReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        if let Some(f) = &self.on_read {
            f();
        }
        match self.interrupt_in {
            Some(0) => {
                self.interrupt_in = None;
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "injected EINTR"));
            }
            Some(n) => {
                let max = buf.len().min(n);
                let got = self.inner.read(&mut buf[..max])?;
                self.interrupt_in = Some(n - got);
                return Ok(got);
            }
            None => {}
        }
        if let Some(left) = self.left {
            if left == 0 {
                if self.clean {
                    return Ok(0);
                }
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected cut-off"));
            }
            let max = buf.len().min(left);
            let n = self.inner.read(&mut buf[..max])?;
            self.left = Some(left - n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl Client for Fake {
    fn catalog(&self) -> Result<Vec<String>> {
        lock(&self.calls).push("catalog".into());
        Ok(lock(&self.tags).keys().cloned().collect())
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        lock(&self.calls).push(format!("tags {repo}"));
        lock(&self.tags).get(repo).cloned().ok_or_else(|| Error::NotFound(format!("tags of {repo}")))
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        lock(&self.calls).push(format!("{fetch:?} manifest {repo} {reference}"));
        if fetch == Fetch::Head && lock(&self.knobs).refuse_head {
            return Err(Error::Protocol(format!("HEAD fake://{repo}/manifests/{reference}: HTTP 405")));
        }
        let m = lock(&self.manifests)
            .get(&(repo.to_string(), reference.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{repo}:{reference}")))?;
        Ok(ManifestReply {
            url: format!("fake://{repo}/manifests/{reference}"),
            content_type: Some(m.content_type),
            digest_header: m.digest_header,
            body: (fetch == Fetch::Get).then_some(m.body),
        })
    }

    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        lock(&self.calls).push(format!("HEAD blob {repo} {digest}"));
        if let Some(&lie) = lock(&self.knobs).head_sizes.get(&digest.to_string()) {
            return Ok(lie);
        }
        lock(&self.blobs)
            .get(&digest.to_string())
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::NotFound(digest.to_string()))
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        lock(&self.calls).push(format!("GET blob {repo} {digest} from {offset}"));
        self.blob_gets.fetch_add(1, Ordering::SeqCst);
        let mut knobs = lock(&self.knobs);
        let bytes = match knobs.substitute.get(&digest.to_string()) {
            Some(b) => b.clone(),
            None => lock(&self.blobs)
                .get(&digest.to_string())
                .cloned()
                .ok_or_else(|| Error::NotFound(digest.to_string()))?,
        };
        let ranged = offset > 0 && !knobs.ignore_range;
        let body = if ranged { bytes[(offset as usize).min(bytes.len())..].to_vec() } else { bytes };
        let left = match knobs.cut_after.as_mut() {
            Some((after, times)) if *times > 0 => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        let short = match knobs.end_early.as_mut() {
            Some((after, times)) if *times > 0 && left.is_none() => {
                *times -= 1;
                Some(*after)
            }
            _ => None,
        };
        let (left, clean) = if short.is_some() { (short, true) } else { (left, false) };
        Ok(BlobReply {
            url: format!("fake://{repo}/blobs/{digest}"),
            reader: Box::new(CutReader {
                inner: std::io::Cursor::new(body),
                left,
                slow: knobs.slow_reads,
                on_read: knobs.on_read.clone(),
                clean,
                interrupt_in: knobs.interrupt_after,
            }),
            ranged,
        })
    }
}
