//! `manifests/<digest>/referrers/` through a real mount of the reference registry (distribution
//! 2.8, which has no referrers API) and of a front that answers the OCI 1.1 API: what is listed,
//! where the links lead, that what they lead to is verified, and what it costs in requests.

use std::path::Path;

use crate::common::front::{Behavior, Front, Recorded};
use crate::common::{Mount, sha256sum, shared};
use crate::common::{ls, s};
use serde_json::Value;

fn readlink(path: &Path) -> String {
    std::fs::read_link(path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display())).to_string_lossy().into()
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    v.sort();
    v
}

/// What `referrers/` of `demo/signed:v1` shows, and that a link's manifest is the verified one.
fn check_image_referrers(m: &Mount, f: &Value) {
    let (image, sbom, sig, odd) =
        (s(&f["image"]), s(&f["sbom"]["digest"]), s(&f["signature"]["digest"]), s(&f["odd"]["digest"]));
    let top = m.path(&format!("demo/signed/manifests/{image}/referrers"));
    assert_eq!(ls(&top), sorted(&["application", sbom, sig, odd]));
    assert_eq!(ls(&top.join("application")), ["spdx+json", "vnd.cncf.notary.signature"]);
    let sboms = top.join("application/spdx+json");
    assert_eq!(ls(&sboms), [sbom]);
    assert_eq!(ls(&top.join("application/vnd.cncf.notary.signature")), [sig]);
    assert_eq!(readlink(&top.join(sig)), format!("../../{sig}"));
    assert_eq!(readlink(&sboms.join(sbom)), format!("../../../../{sbom}"));
    // Through the link: the SBOM's manifest, hashing to its digest, and its layer.
    assert_eq!(sha256sum(&sboms.join(sbom).join("manifest.json")), sbom);
    let layer = std::fs::read_to_string(sboms.join(sbom).join("layers/0")).expect("the SBOM");
    assert_eq!(layer, s(&f["sbom_layer"]));
    // Through the tag too.
    let via_tag = m.path("demo/signed/tags/v1/referrers/application/spdx+json");
    assert_eq!(ls(&via_tag), [sbom]);
}

fn referrer_requests(requests: &[Recorded]) -> Vec<String> {
    requests.iter().filter(|r| r.path.contains("/referrers/")).map(|r| format!("{} {}", r.status, r.path)).collect()
}

/// Requests for a referrers tag (`…/manifests/sha256-<hex>`).
fn tag_requests(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path.contains("/manifests/sha256-"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn referrers_are_listed_through_the_api_with_one_request() {
    let sh = shared();
    let f = &sh.fixtures["signed"];
    let front = Front::start(&sh.registry.url, Behavior { referrers_api: true, ..Behavior::default() });
    let m = Mount::start(&front.url, &[]);
    check_image_referrers(&m, f);
    let requests = front.requests();
    // One unfiltered request served the top and every type directory; no tag was read.
    assert_eq!(referrer_requests(&requests), [format!("200 /v2/demo/signed/referrers/{}", s(&f["image"]))]);
    assert!(tag_requests(&requests).is_empty(), "{:?}", tag_requests(&requests));
}

#[test]
fn referrers_fall_back_to_the_sha256_tag_scheme() {
    let sh = shared();
    let f = &sh.fixtures["signed"];
    // The front passes everything through to the reference registry, which has no referrers API.
    let front = Front::start(&sh.registry.url, Behavior::default());
    let m = Mount::start(&front.url, &[]);
    check_image_referrers(&m, f);
    let requests = front.requests();
    let image_tag = s(&f["referrers_tags"]["image"]);
    assert_eq!(referrer_requests(&requests), [format!("404 /v2/demo/signed/referrers/{}", s(&f["image"]))]);
    assert_eq!(tag_requests(&requests), [format!("GET /v2/demo/signed/manifests/{image_tag}")]);

    // A second subject (the SBOM, signed too): the 404 is remembered, one tag request only.
    let sbom = s(&f["sbom"]["digest"]);
    let top = m.path(&format!("demo/signed/manifests/{sbom}/referrers"));
    assert_eq!(ls(&top), sorted(&["application", s(&f["sbom_signature"]["digest"])]));
    assert_eq!(ls(&top.join("application/vnd.cncf.notary.signature")), [s(&f["sbom_signature"]["digest"])]);
    let later = &front.requests()[requests.len()..];
    assert!(referrer_requests(later).is_empty(), "{:?}", referrer_requests(later));
    let sbom_tag = s(&f["referrers_tags"]["sbom"]);
    assert_eq!(tag_requests(later), [format!("GET /v2/demo/signed/manifests/{sbom_tag}")]);
}
