//! Referrers lists: what refers to a manifest (signatures, SBOMs, attestations), as the OCI 1.1
//! referrers API answers (`GET /v2/<name>/referrers/<digest>`, maybe in pages) or as the
//! `<alg>-<hex>` tag of the referrers tag schema holds it. Both are an image index whose
//! `manifests[]` are descriptors with an `artifactType` and annotations.
//!
//! # Trust
//! An API answer is not content-addressed: it is a name the registry may change (the store keeps
//! it for `tag_ttl`). Every entry only names a manifest by digest, and that manifest is verified
//! when it is followed, so a lying list can hide or invent links, never show wrong bytes.
//!
//! # Bounds
//! A page is a manifest-sized document (at most [`MAX_MANIFEST_SIZE`], [`MAX_VALUES`](crate::limits::MAX_VALUES)
//! values, no duplicate key). An entry that is not a valid descriptor (bad digest, size over
//! [`MAX_BLOB_SIZE`], no media type) is skipped with a log line and hides only itself; a digest
//! listed twice is shown once. Annotations of more than [`MAX_REFERRER_ANNOTATIONS`] bytes are
//! dropped (the entry stays). One subject's list, all pages together, holds at most
//! [`MAX_REFERRERS`] entries and [`MAX_LIST_HELD`] bytes; past either it is
//! [`Error::TooLarge`].
//!
//! # Artifact types as directories
//! `referrers/<type>/<subtype>/` filters by `artifactType`. Only a media type whose two names are
//! RFC 6838 restricted names (`[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}`) makes directories:
//! such a name is a safe file name (no `/`, NUL, `.` or `..`). Other entries are listed at the top only.

use std::collections::HashSet;

use super::json;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{
    LIST_ENTRY_OVERHEAD, LOGGED_INVALID, MAX_BLOB_SIZE, MAX_LIST_HELD, MAX_MANIFEST_SIZE, MAX_REFERRER_ANNOTATIONS,
    MAX_REFERRERS,
};
use crate::media;

/// One manifest that refers to the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// As the list gives it (any string); see [`Referrer::type_dirs`] for the directories.
    pub artifact_type: Option<String>,
    /// Key and value, sorted by key.
    pub annotations: Vec<(String, String)>,
}

impl Referrer {
    /// `(type, subtype)` of the artifact type, where both are RFC 6838 restricted names.
    pub fn type_dirs(&self) -> Option<(&str, &str)> {
        self.artifact_type.as_deref().and_then(media_type_parts)
    }

    /// Roughly the memory it holds.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Referrer>()
            + self.digest.hex().len()
            + self.media_type.len()
            + self.artifact_type.as_ref().map_or(0, String::len)
            + self.annotations.iter().map(|(k, v)| k.len() + v.len() + 2 * LIST_ENTRY_OVERHEAD).sum::<usize>()
    }
}

/// `type/subtype` split in two where each is an RFC 6838 restricted name (parameters and
/// anything else refused).
pub fn media_type_parts(media_type: &str) -> Option<(&str, &str)> {
    let (kind, subtype) = media_type.split_once('/')?;
    (restricted_name(kind) && restricted_name(subtype)).then_some((kind, subtype))
}

/// RFC 6838 section 4.2: `restricted-name = restricted-name-first *126restricted-name-chars`.
pub fn restricted_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 127
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c))
}

/// The entries of one list, gathered page by page within the bounds above.
pub struct Collect {
    what: String,
    entries: Vec<Referrer>,
    seen: HashSet<Digest>,
    held: usize,
    skipped: usize,
}

impl Collect {
    /// `what` names the list in errors and logs (a URL, or `repo@digest`).
    pub fn new(what: impl Into<String>) -> Collect {
        Collect { what: what.into(), entries: Vec::new(), seen: HashSet::new(), held: 0, skipped: 0 }
    }

    /// Add one page's entries.
    pub fn page(&mut self, bytes: &[u8]) -> Result<()> {
        let what = self.what.clone();
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge(format!(
                "referrers {what}: page of {} bytes (limit {MAX_MANIFEST_SIZE})",
                bytes.len()
            )));
        }
        let bad = |why: String| Error::malformed(format!("referrers {what}"), why);
        let doc = json::strict(bytes).map_err(bad)?;
        let doc = doc.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        if let Some(mt) = doc.get("mediaType") {
            if mt.as_str() != Some(media::OCI_INDEX) {
                return Err(bad(format!("mediaType {mt} is not an image index")));
            }
        }
        let manifests = match doc.get("manifests") {
            Some(serde_json::Value::Array(a)) => a,
            // An empty list may be written as null.
            Some(serde_json::Value::Null) => return Ok(()),
            Some(_) => return Err(bad("manifests is not an array".into())),
            None => return Err(bad("no manifests".into())),
        };
        for (i, entry) in manifests.iter().enumerate() {
            match entry_of(entry) {
                Ok(r) => self.add(r)?,
                Err(why) => {
                    if self.skipped < LOGGED_INVALID {
                        log::warn!("referrers {what}: skipping manifests[{i}]: {why}");
                    }
                    self.skipped += 1;
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, r: Referrer) -> Result<()> {
        if !self.seen.insert(r.digest.clone()) {
            return Ok(());
        }
        self.held += r.weight();
        if self.entries.len() >= MAX_REFERRERS || self.held > MAX_LIST_HELD {
            return Err(Error::TooLarge(format!(
                "referrers {}: over {MAX_REFERRERS} entries or {} MiB",
                self.what,
                MAX_LIST_HELD >> 20
            )));
        }
        self.entries.push(r);
        Ok(())
    }

    /// The entries, in the order listed.
    pub fn finish(self) -> Vec<Referrer> {
        if self.skipped > LOGGED_INVALID {
            log::warn!("referrers {}: {} invalid entries skipped in all", self.what, self.skipped);
        }
        self.entries
    }
}

/// One page, alone.
pub fn parse(bytes: &[u8], what: &str) -> Result<Vec<Referrer>> {
    let mut c = Collect::new(what);
    c.page(bytes)?;
    Ok(c.finish())
}

/// One descriptor, checked; the reason it is refused otherwise.
fn entry_of(v: &serde_json::Value) -> std::result::Result<Referrer, String> {
    let o = v.as_object().ok_or("not an object")?;
    let digest: Digest = o
        .get("digest")
        .and_then(|d| d.as_str())
        .ok_or("no digest")?
        .parse()
        .map_err(|_| format!("invalid digest {}", o.get("digest").map(|d| d.to_string()).unwrap_or_default()))?;
    let size = o.get("size").and_then(|s| s.as_u64()).ok_or("no size, or not a whole number")?;
    if size > MAX_BLOB_SIZE {
        return Err(format!("size {size} is larger than regfs accepts"));
    }
    let media_type = o.get("mediaType").and_then(|m| m.as_str()).ok_or("no mediaType")?.to_string();
    let artifact_type = o.get("artifactType").and_then(|a| a.as_str()).map(str::to_string);
    let mut annotations = Vec::new();
    if let Some(serde_json::Value::Object(a)) = o.get("annotations") {
        let mut bytes = 0;
        for (k, v) in a {
            let Some(v) = v.as_str() else { continue };
            bytes += k.len() + v.len();
            if bytes > MAX_REFERRER_ANNOTATIONS {
                log::info!("referrer {digest}: annotations over {MAX_REFERRER_ANNOTATIONS} bytes dropped");
                annotations.clear();
                break;
            }
            annotations.push((k.clone(), v.to_string()));
        }
    }
    Ok(Referrer { digest, media_type, size, artifact_type, annotations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index(entries: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries}))
            .expect("test input")
    }

    #[test]
    fn a_referrers_index_keeps_digest_media_type_size_artifact_type_and_annotations() {
        let bytes = index(json!([
            {"mediaType": media::OCI_MANIFEST, "digest": d('a'), "size": 10, "artifactType": "application/spdx+json",
             "annotations": {"org.opencontainers.image.created": "2026-12-04T08:00:00Z", "n": "1"}},
            // No artifactType (an index referrer): listed, in no type directory.
            {"mediaType": media::OCI_INDEX, "digest": d('b'), "size": 20}
        ]));
        let list = parse(&bytes, "t").expect("valid");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].digest.to_string(), d('a'));
        assert_eq!(list[0].media_type, media::OCI_MANIFEST);
        assert_eq!(list[0].size, 10);
        assert_eq!(list[0].type_dirs(), Some(("application", "spdx+json")));
        assert_eq!(
            list[0].annotations,
            [("n".into(), "1".into()), ("org.opencontainers.image.created".into(), "2026-12-04T08:00:00Z".into())]
        );
        assert_eq!(list[1].artifact_type, None);
        assert_eq!(list[1].type_dirs(), None);
        // An empty list, as the API answers for a subject nobody refers to; and without mediaType.
        assert!(parse(&index(json!([])), "t").expect("valid").is_empty());
        assert!(parse(br#"{"schemaVersion":2,"manifests":null}"#, "t").expect("valid").is_empty());
    }

    #[test]
    fn artifact_types_make_directories_only_when_both_names_are_rfc_6838_names() {
        for ok in ["application/spdx+json", "application/vnd.cncf.notary.signature", "a/b", "x-y/z!#$&^_.+-"] {
            assert!(media_type_parts(ok).is_some(), "{ok}");
        }
        let long = format!("application/{}", "a".repeat(128));
        for bad in [
            "",
            "application",
            "application/",
            "/json",
            "a/b/c",
            "../x",
            "a/..",
            "a/.hidden",
            "application/spdx+json; charset=utf-8",
            "app lication/x",
            "a/b\0",
            "a/b\n",
            "application/é",
            long.as_str(),
        ] {
            assert_eq!(media_type_parts(bad), None, "{bad:?}");
        }
        assert!(media_type_parts(&format!("application/{}", "a".repeat(127))).is_some());
    }

    #[test]
    fn hostile_entries_hide_only_themselves_and_hostile_pages_are_refused() {
        let bytes = index(json!([
            {"mediaType": media::OCI_MANIFEST, "digest": "sha256:../../etc", "size": 1},
            {"mediaType": media::OCI_MANIFEST, "digest": d('1'), "size": -1},
            {"mediaType": media::OCI_MANIFEST, "digest": d('2'), "size": MAX_BLOB_SIZE + 1},
            {"mediaType": media::OCI_MANIFEST, "digest": d('3'), "size": 1.5},
            {"digest": d('4'), "size": 1},
            {"mediaType": 7, "digest": d('5'), "size": 1},
            "not an object",
            {"mediaType": media::OCI_MANIFEST, "digest": d('a'), "size": 1, "artifactType": 12,
             "annotations": {"k": 1, "ok": "v"}},
            {"mediaType": media::OCI_MANIFEST, "digest": d('a'), "size": 2},
            {"mediaType": media::OCI_MANIFEST, "digest": d('b'), "size": MAX_BLOB_SIZE, "annotations": "no"}
        ]));
        let list = parse(&bytes, "t").expect("the valid entries");
        let digests: Vec<String> = list.iter().map(|r| r.digest.to_string()).collect();
        // A digest listed twice is shown once, as first listed.
        assert_eq!(digests, [d('a'), d('b')]);
        assert_eq!(list[0].size, 1);
        assert_eq!(list[0].artifact_type, None);
        assert_eq!(list[0].annotations, [("ok".to_string(), "v".to_string())]);
        assert!(list[1].annotations.is_empty());

        // Annotations over the bound are dropped, the entry kept.
        let big = json!({"k": "v".repeat(MAX_REFERRER_ANNOTATIONS)});
        let list = parse(&index(json!([{"mediaType": "m", "digest": d('c'), "size": 1, "annotations": big}])), "t")
            .expect("valid");
        assert!(list[0].annotations.is_empty());

        let refused = |bytes: &[u8]| parse(bytes, "t").expect_err("refused").to_string();
        assert!(refused(b"[]").contains("not a JSON object"));
        assert!(refused(b"{\"manifests\":[],\"manifests\":[]}").contains("duplicate key"));
        assert!(refused(b"{\"manifests\":{}}").contains("not an array"));
        assert!(refused(b"{\"schemaVersion\":2}").contains("no manifests"));
        assert!(refused(b"not json").contains("not JSON"));
        let image = format!(r#"{{"mediaType":"{}","manifests":[]}}"#, media::OCI_MANIFEST);
        assert!(refused(image.as_bytes()).contains("not an image index"));
        let mut huge = index(json!([]));
        huge.resize(MAX_MANIFEST_SIZE + 1, b' ');
        assert!(matches!(parse(&huge, "t"), Err(Error::TooLarge(_))));
    }

    #[test]
    fn a_list_over_its_entry_bound_across_pages_is_too_large() {
        // Pages of distinct entries: the bound holds over all pages together.
        let per_page = 4000;
        let page = |p: usize| {
            let entries: Vec<_> = (0..per_page)
                .map(|i| json!({"mediaType": "m", "digest": format!("sha256:{:064x}", p * per_page + i), "size": 1}))
                .collect();
            index(json!(entries))
        };
        let mut c = Collect::new("t");
        c.page(&page(0)).expect("first page");
        c.page(&page(1)).expect("second page");
        assert!(matches!(c.page(&page(2)), Err(Error::TooLarge(_))), "{MAX_REFERRERS} entries at most");
        // The same entries again add nothing.
        let mut c = Collect::new("t");
        for _ in 0..5 {
            c.page(&page(0)).expect("the same page again");
        }
        assert_eq!(c.finish().len(), per_page);
    }
}
