//! Pushing over the distribution API: monolithic blob uploads and manifest PUTs.

use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, LOCATION};

use regfs::digest::{Algorithm, Digest};

pub struct Pusher {
    pub base: reqwest::Url,
    http: Client,
}

pub type Result<T> = std::result::Result<T, String>;

impl Pusher {
    pub fn new(base: reqwest::Url) -> Result<Pusher> {
        // REGFS_FIXTURES_AUTH=user:password pushes to a registry with Basic auth.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(up) = std::env::var("REGFS_FIXTURES_AUTH") {
            use base64::Engine as _;
            let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(up));
            headers.insert(reqwest::header::AUTHORIZATION, value.parse().map_err(|_| "bad REGFS_FIXTURES_AUTH")?);
        }
        let http = Client::builder().timeout(None).default_headers(headers).build().map_err(|e| e.to_string())?;
        Ok(Pusher { base, http })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url> {
        self.base.join(path).map_err(|e| format!("{path}: {e}"))
    }

    /// Upload `bytes` as a blob of `repo` (skipped when the registry has it); its digest.
    pub fn blob(&self, repo: &str, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(Algorithm::Sha256, bytes);
        let head =
            self.http.head(self.url(&format!("/v2/{repo}/blobs/{digest}"))?).send().map_err(|e| e.to_string())?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start =
            self.http.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))?).send().map_err(|e| e.to_string())?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(format!("starting an upload to {repo}: HTTP {}", start.status()));
        }
        let location =
            start.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or("upload without Location")?.to_string();
        let mut put = self.base.join(&location).map_err(|e| e.to_string())?;
        put.query_pairs_mut().append_pair("digest", &digest.to_string());
        self.put(put, "application/octet-stream", bytes, &format!("uploading {digest} to {repo}"))?;
        Ok(digest)
    }

    /// PUT a manifest under its own digest (no tag), as index children are pushed.
    pub fn untagged(&self, repo: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        self.manifest(repo, &Digest::of(Algorithm::Sha256, bytes).to_string(), media_type, bytes)
    }

    /// PUT a manifest under `reference` (a tag or its digest); the digest the registry reports.
    pub fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Digest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let resp = self.put(url, media_type, bytes, &format!("PUT manifest {repo}:{reference}"))?;
        resp.headers()
            .get("docker-content-digest")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("PUT manifest {repo}:{reference}: no Docker-Content-Digest"))
    }

    /// PUT `bytes`, expecting 201 Created; `what` names the request in the error.
    fn put(
        &self,
        url: reqwest::Url,
        content_type: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<reqwest::blocking::Response> {
        let resp = self
            .http
            .put(url)
            .header(CONTENT_TYPE, content_type)
            .body(bytes.to_vec())
            .send()
            .map_err(|e| format!("{what}: {e}"))?;
        if resp.status() != StatusCode::CREATED {
            return Err(format!("{what}: HTTP {} {}", resp.status(), resp.text().unwrap_or_default()));
        }
        Ok(resp)
    }
}
