//! `manifests/<digest>/referrers/` in the core, over an in-memory registry that counts calls:
//! what is listed, where links point, and what it costs (one request per subject per `tag_ttl`,
//! through the API, or through the `sha256-<hex>` tag where the API answers 404).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use regfs::digest::{Algorithm, Digest};
use regfs::error::Result;
use regfs::fs::{Fs, FsConfig};
use regfs::manifest::referrers::Referrer;
use regfs::media;
use regfs::registry::{BlobReply, Client, Fetch, ManifestReply};
use regfs::store::{Store, StoreConfig};
use regfs::testkit::core::{self as kit};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// The kit's core, asked as these tests ask: listings sorted, failures as errno.
struct Core(kit::Core);

impl std::ops::Deref for Core {
    type Target = kit::Core;
    fn deref(&self) -> &kit::Core {
        &self.0
    }
}

fn core(fake: Faulty<Fake>, tag_ttl: Duration) -> Core {
    Core(kit::Core::builder(fake).tag_ttl(tag_ttl).build())
}

impl Core {
    fn ls(&self, path: &str) -> Vec<String> {
        let mut names = self.fs.ls(path).unwrap_or_else(|e| panic!("ls {path}: {e}"));
        names.sort();
        names
    }

    fn readlink(&self, path: &str) -> String {
        self.fs.readlink(self.fs.walk(path).expect(path).ino).expect("readlink")
    }

    /// Calls about referrers: the API, and reads of `sha256-…` tags.
    fn referrer_calls(&self) -> Vec<String> {
        self.fake.calls().into_iter().filter(|c| c.starts_with("referrers ") || c.contains(" sha256-")).collect()
    }

    fn errno(&self, path: &str) -> i32 {
        let (parent, name) = path.rsplit_once('/').expect("a path");
        let p = self.fs.walk(parent).expect(parent);
        self.fs.lookup(p.ino, OsStr::new(name)).map(|_| 0).unwrap_or_else(|e| e.errno())
    }
}

/// An artifact manifest referring to `subject`, stored by digest (not tagged), as `oras attach` pushes.
fn artifact(fake: &Fake, subject: &Digest, artifact_type: &str, payload: &[u8]) -> Digest {
    let empty = fake.add_blob(b"{}");
    let layer = fake.add_blob(payload);
    let subject_size = fake.stored_manifest("r", &subject.to_string()).expect("subject").body.len();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": layer.to_string(), "size": payload.len()}],
        "subject": {"mediaType": media::OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size},
        "annotations": {"org.opencontainers.image.created": "2026-12-04T08:00:00Z"}
    });
    fake.put_manifest("r", None, media::OCI_MANIFEST, m.to_string().as_bytes(), Algorithm::Sha256)
}

struct Signed {
    image: Digest,
    sbom: Digest,
    sig: Digest,
    odd: Digest,
    /// A signature of the SBOM: a second subject.
    sbom_sig: Digest,
}

fn signed(fake: &Fake) -> Signed {
    let (image, _) = fake.image("r", "v1", b"layer");
    let sbom = artifact(fake, &image, "application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#);
    let sig = artifact(fake, &image, "application/vnd.cncf.notary.signature", b"signature");
    let odd = artifact(fake, &image, "not/a/media type", b"odd");
    let sbom_sig = artifact(fake, &sbom, "application/vnd.cncf.notary.signature", b"sbom signature");
    Signed { image, sbom, sig, odd, sbom_sig }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// What `referrers/` of the image shows, whichever way the list came.
fn check_listing(c: &Core, s: &Signed) {
    let top = format!("r/manifests/{}/referrers", s.image);
    let links = [&s.sbom, &s.sig, &s.odd].map(|d| d.to_string());
    let mut expected: Vec<String> = links.to_vec();
    expected.push("application".into());
    assert_eq!(c.ls(&top), sorted(expected));
    assert_eq!(c.ls(&format!("{top}/application")), ["spdx+json", "vnd.cncf.notary.signature"]);
    assert_eq!(c.ls(&format!("{top}/application/spdx+json")), [s.sbom.to_string()]);
    assert_eq!(c.ls(&format!("{top}/application/vnd.cncf.notary.signature")), [s.sig.to_string()]);
    assert_eq!(c.readlink(&format!("{top}/{}", s.sbom)), format!("../../{}", s.sbom));
    assert_eq!(c.readlink(&format!("{top}/application/spdx+json/{}", s.sbom)), format!("../../../../{}", s.sbom));
    // A type that is not an RFC 6838 media type is listed at the top only; nothing else looks up.
    assert_eq!(c.errno(&format!("{top}/not")), libc::ENOENT);
    assert_eq!(c.errno(&format!("{top}/{}", s.image)), libc::ENOENT);
    assert_eq!(c.errno(&format!("{top}/application/spdx+json/{}", s.sig)), libc::ENOENT);
    assert_eq!(c.errno(&format!("{top}/application/json")), libc::ENOENT);
}

#[test]
fn referrers_cost_one_request_per_tag_ttl() {
    let fake = Faulty::new(Fake::default());
    let s = signed(&fake);
    let ttl = Duration::from_millis(700);
    let c = core(fake, ttl);
    // A manifest directory shows `referrers/`; its stat asks nothing.
    assert!(c.ls(&format!("r/manifests/{}", s.image)).contains(&"referrers".to_string()));
    c.fs.walk(&format!("r/manifests/{}/referrers", s.image)).expect("stat referrers");
    assert!(c.referrer_calls().is_empty(), "{:?}", c.referrer_calls());

    let started = std::time::Instant::now();
    check_listing(&c, &s);
    // Following a link (the kernel resolves it) reads the referrer's manifest, verified as any other.
    let sbom = c.fs.cat(&format!("r/manifests/{}/manifest.json", s.sbom)).expect("sbom manifest");
    assert_eq!(Digest::of(Algorithm::Sha256, &sbom), s.sbom);
    assert!(started.elapsed() < ttl, "the listing took longer than tag_ttl: the count below means nothing");
    assert_eq!(c.referrer_calls(), [format!("referrers r {}", s.image)]);

    // Past tag_ttl the list is asked again, once.
    std::thread::sleep(ttl);
    check_listing(&c, &s);
    assert_eq!(c.referrer_calls().len(), 2, "{:?}", c.referrer_calls());
}

#[test]
fn without_the_api_the_tag_schema_is_read_one_request_per_subject() {
    let fake = Faulty::new(Fake::default());
    let s = signed(&fake);
    fake.without_referrers_api();
    fake.put_referrers_tag("r", &s.image);
    fake.put_referrers_tag("r", &s.sbom);
    let c = core(fake, Duration::from_secs(60));
    check_listing(&c, &s);
    let tag = |d: &Digest| format!("Get manifest r sha256-{}", d.hex());
    assert_eq!(c.referrer_calls(), [format!("referrers r {}", s.image), tag(&s.image)]);

    // A second subject: the 404 is remembered, the tag is read at once.
    assert_eq!(c.ls(&format!("r/manifests/{}/referrers", s.sbom)), ["application", &s.sbom_sig.to_string()]);
    assert_eq!(c.referrer_calls()[2..], [tag(&s.sbom)]);
    // A subject without a tag: nobody refers to it, at the cost of that one request.
    assert!(c.ls(&format!("r/manifests/{}/referrers", s.sig)).is_empty());
    assert_eq!(c.referrer_calls()[3..], [tag(&s.sig)]);
}

#[test]
fn a_tag_schema_index_that_lies_or_is_no_index_shows_no_referrers() {
    let fake = Faulty::new(Fake::default());
    let s = signed(&fake);
    fake.without_referrers_api();
    fake.put_referrers_tag("r", &s.image);
    // The tag's Docker-Content-Digest names other bytes: the index is refused (EIO), not shown.
    let other = Digest::of(Algorithm::Sha256, b"other");
    fake.claim_digest("r", &format!("sha256-{}", s.image.hex()), Some(&other));
    // The SBOM's tag names an image manifest, not an index: no referrers.
    let body = fake.stored_manifest("r", "v1").expect("image").body;
    fake.put_manifest("r", Some(&format!("sha256-{}", s.sbom.hex())), media::OCI_MANIFEST, &body, Algorithm::Sha256);
    let c = core(fake, Duration::from_secs(60));
    let e = c.fs.ls(&format!("r/manifests/{}/referrers", s.image)).expect_err("a lying index");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    assert!(c.ls(&format!("r/manifests/{}/referrers", s.sbom)).is_empty());
}

/// A registry (`Fake`) whose referrers API answers `list` for every subject.
struct ListsReferrers {
    inner: Arc<Faulty<Fake>>,
    list: Vec<Referrer>,
    /// A repository whose referrers API answers 404 (e.g. NAME_UNKNOWN: a repository gone).
    missing_in: &'static str,
}

impl Client for ListsReferrers {
    fn catalog(&self) -> Result<Vec<String>> {
        self.inner.catalog()
    }
    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        self.inner.tags(repo)
    }
    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        self.inner.manifest(repo, reference, fetch)
    }
    fn referrers(&self, repo: &str, _: &Digest) -> Result<Option<Vec<Referrer>>> {
        Ok((repo != self.missing_in).then(|| self.list.clone()))
    }
    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        self.inner.blob_size(repo, digest)
    }
    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        self.inner.blob(repo, digest, offset)
    }
}

/// A lookup in `referrers/` costs no scan of the whole list per name: a list of 10 000 referrers
/// (within `MAX_REFERRERS`), each with its own type, which anyone who can push artifacts to the
/// repository can make, would otherwise cost seconds of CPU per name looked up, and `ls -l
/// referrers/` (one lookup per name) would hold FUSE threads for hours.
#[test]
fn looking_up_names_in_a_long_referrers_list_is_not_quadratic() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (image, _) = fake.image("r", "v1", b"layer");
    let list: Vec<Referrer> = (0..10_000)
        .map(|i| Referrer {
            digest: Digest::of(Algorithm::Sha256, format!("referrer {i}").as_bytes()),
            media_type: media::OCI_MANIFEST.into(),
            size: 100,
            artifact_type: Some(format!("t{i}/x")),
            annotations: Vec::new(),
        })
        .collect();
    let names: Vec<String> = list.iter().take(20).map(|r| r.digest.to_string()).collect();
    let client = Arc::new(ListsReferrers { inner: fake, list, missing_in: "" });
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let fs = Fs::new(Arc::new(Store::new(client, &config).expect("store")), FsConfig::default());
    let top = fs.walk(&format!("r/manifests/{image}/referrers")).expect("referrers/");
    let started = std::time::Instant::now();
    for name in &names {
        fs.lookup(top.ino, std::ffi::OsStr::new(name)).expect("a listed referrer");
    }
    let each = started.elapsed() / names.len() as u32;
    // A linear directory would take well under a millisecond per name here.
    assert!(
        each < std::time::Duration::from_millis(20),
        "{each:?} per lookup; 20 000 names would take {:?}",
        each * 20_000
    );
}

/// A 404 from the referrers API in one repository does not turn the API off for the others:
/// one repository deleted or renamed since its manifest was read, a per-repository proxy rule
/// or a registry hiccup must not make every subject of every repository read the `sha256-<hex>`
/// tag instead,
/// hiding referrers pushed through the API (no tag, as `oras attach` does on an OCI 1.1
/// registry) until the next mount.
#[test]
fn a_404_in_one_repository_does_not_hide_the_referrers_of_every_other() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (image, _) = fake.image("r", "v1", b"layer");
    let (other, _) = fake.image("gone", "v1", b"other layer");
    let sig = Referrer {
        digest: Digest::of(Algorithm::Sha256, b"a signature"),
        media_type: media::OCI_MANIFEST.into(),
        size: 100,
        artifact_type: Some("application/vnd.cncf.notary.signature".into()),
        annotations: Vec::new(),
    };
    let client = Arc::new(ListsReferrers { inner: fake, list: vec![sig.clone()], missing_in: "gone" });
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), ..StoreConfig::default() };
    let fs = Fs::new(Arc::new(Store::new(client, &config).expect("store")), FsConfig::default());
    assert!(fs.ls(&format!("gone/manifests/{other}/referrers")).expect("ls").is_empty());
    let shown = fs.ls(&format!("r/manifests/{image}/referrers")).expect("ls");
    assert!(shown.contains(&sig.digest.to_string()), "r's signature is hidden: {shown:?}");
}
