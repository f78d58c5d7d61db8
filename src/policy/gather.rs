//! Where a manifest's signatures are found, and reading them within their bounds: cosign's
//! `<alg>-<hex>.sig` tag (one GET by tag, then one blob per payload) and Sigstore bundles among
//! the referrers (one manifest and one blob each; a blob many referrers share judged once).
//! A signature that cannot be read counts as refused and says why ([`own`]); a registry
//! fault fails the verdict for now.

use serde_json::Value;

use super::Gate;
use super::signature::{self, Signed};
use super::verdict::Judging;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{MAX_SIGNATURE_B64, MAX_SIGNATURE_BLOB, MAX_SIGNATURES};
use crate::manifest::json as strict_json;
use crate::store::Content;

impl Gate {
    /// cosign's `.sig` tag: one GET, then payloads one by one.
    pub(super) fn cosign(
        &self,
        repo: &str,
        digest: &Digest,
        full: bool,
        j: &mut Judging,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let tag = format!("{}-{}.sig", digest.algorithm().name(), digest.hex());
        let doc = match own(self.store.manifest_of_tag_within(repo, &tag, self.kept_for()))? {
            Ok(d) => d,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => {
                notes.push(format!("{repo}:{tag} cannot be read: {e}"));
                return Ok(());
            }
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
        let content = match own(self.store.blob(repo, &digest, Some(size)))? {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("{digest}: {e}"))),
        };
        Ok(read_small(&content, size).map_err(|e| format!("{digest}: {e}")))
    }

    /// Sigstore bundles among the referrers.
    pub(super) fn bundles(
        &self,
        repo: &str,
        digest: &Digest,
        full: bool,
        j: &mut Judging,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let list = match own(self.store.referrers_within(repo, digest, self.kept_for()))? {
            Ok(l) => l,
            Err(e) => {
                notes.push(format!("the referrers of {digest} cannot be read: {e}"));
                return Ok(());
            }
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
        let doc = match own(self.store.manifest(repo, d))? {
            Ok(doc) => doc,
            Err(e) => return Ok((None, Err(format!("{e}")))),
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

/// What a signature's read gave, with its own failures (it is missing, lies, or is malformed:
/// `Ok(Err)`, it counts as refused) set apart from the faults that fail the verdict for now
/// (`Err`: the registry unreachable, local I/O).
pub(super) fn own<T>(read: Result<T>) -> Result<std::result::Result<T, Error>> {
    match read {
        Ok(v) => Ok(Ok(v)),
        Err(
            e @ (Error::NotFound(_)
            | Error::DigestMismatch { .. }
            | Error::Malformed { .. }
            | Error::TooLarge(_)
            | Error::InvalidName(_)),
        ) => Ok(Err(e)),
        Err(e) => Err(e),
    }
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
