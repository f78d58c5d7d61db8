//! The dispatcher on the specifications' own example documents, and on hostile ones.

use super::*;
use crate::layout::{Node, image::entries};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the directory of `m` shows, but `referrers/` and `signatures/`: every manifest directory
/// shows them (checked here, once each), and the tests using this are about what the manifest
/// itself gives.
fn names(m: &Manifest) -> Vec<String> {
    let all = entries("r", &m.digest(Algorithm::Sha256), m);
    assert_eq!(all.iter().filter(|(_, n)| matches!(n, Node::Referrers(_))).count(), 1, "one referrers/");
    assert_eq!(all.iter().filter(|(_, n)| matches!(n, Node::Signatures(_))).count(), 1, "one signatures/");
    all.into_iter()
        .filter(|(_, node)| !matches!(node, Node::Referrers(_) | Node::Signatures(_)))
        .map(|(name, node)| match node {
            Node::IndexLink(l) => format!("{name} -> {}", l.target),
            _ => name,
        })
        .collect()
}

#[test]
fn oci_manifest_from_the_seed() {
    let m = parse(&fixture("oci-manifest-seed.json"), Some(media::OCI_MANIFEST), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::OciManifest);
    assert_eq!(names(&m), ["manifest.json", "config.json", "layers", "rootfs"]);
    let config = m.config.as_ref().expect("test input is valid");
    assert_eq!(config.size, Some(985));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].0, "0.tar.gz");
    assert_eq!(m.layers[0].1.size, Some(153263));
}

#[test]
fn oci_manifest_without_media_type_is_known_by_its_structure() {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("oci-manifest-seed.json")).expect("test input is valid");
    doc.as_object_mut().expect("test input is valid").remove("mediaType");
    let bytes = serde_json::to_vec(&doc).expect("test input is valid");
    let m = parse(&bytes, Some("application/json"), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::OciManifest);
    let m = parse(&bytes, None, "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::OciManifest);
}

#[test]
fn oci_index_without_media_type_is_known_by_its_structure() {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("oci-index-seed.json")).expect("test input is valid");
    doc.as_object_mut().expect("test input is valid").remove("mediaType");
    let bytes = serde_json::to_vec(&doc).expect("test input is valid");
    for content_type in [Some("application/json"), None] {
        let m = parse(&bytes, content_type, "t").expect("test input is valid");
        assert_eq!((m.kind, m.children.len()), (Kind::OciIndex, 3), "served as {content_type:?}");
    }
}

/// Without a media type in header or body, only a document with both `config` and `layers` is
/// read as an image manifest (and its parts required); one with either alone, or neither, is shown
/// for what its JSON has, like an artifact.
#[test]
fn without_media_type_only_config_and_layers_together_make_an_image_manifest() {
    let config = serde_json::json!({"mediaType": "x", "size": 2, "digest": format!("sha256:{}", "a".repeat(64))});
    let layers = serde_json::json!([{"mediaType": "x", "size": 10, "digest": format!("sha256:{}", "b".repeat(64))}]);
    for (doc, parts) in [
        (serde_json::json!({"schemaVersion": 2}), ["manifest.json"].as_slice()),
        (serde_json::json!({"schemaVersion": 2, "config": config}), &["manifest.json", "config.json"]),
        (serde_json::json!({"schemaVersion": 2, "layers": layers}), &["manifest.json", "layers"]),
    ] {
        let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), None, "t")
            .unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(m.kind, Kind::Other, "{doc}");
        assert_eq!(names(&m), parts, "{doc}");
    }
}

#[test]
fn oci_index_from_the_seed_names_links_uniquely() {
    let m = parse(&fixture("oci-index-seed.json"), Some(media::OCI_INDEX), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::OciIndex);
    assert_eq!(
        names(&m),
        [
            "manifest.json",
            "linux-amd64 -> sha256:1a9ec845ee94c202b2d5da74a24f0ed2058318bfa9879fa541efaecba272e86b",
            // Empty platform: named by its digest.
            "sha256:1a9ec845ee94c202b2d5da74a24f0ed2058318bfa9879fa541efaecba272e86b -> sha256:1a9ec845ee94c202b2d5da74a24f0ed2058318bfa9879fa541efaecba272e86b",
            "sunos-sun4m -> sha256:6346340964309634683409684360934680934608934608934608934068934608",
        ]
    );
}

#[test]
fn docker_schema2_from_the_spec() {
    let m = parse(&fixture("docker-schema2-spec.json"), Some(media::DOCKER_SCHEMA2), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::DockerSchema2);
    let layer_names: Vec<_> = m.layers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(layer_names, ["0.tar.gz", "1.tar.gz", "2.tar.gz"]);
    assert_eq!(m.layers[2].1.size, Some(73109));
    assert_eq!(m.config.as_ref().expect("test input is valid").size, Some(7023));
    let sized: Vec<_> = m.sized_blobs().map(|(_, s)| s).collect();
    assert_eq!(sized, [7023, 32654, 16724, 73109]);
}

#[test]
fn docker_manifest_list_from_the_spec() {
    let m =
        parse(&fixture("docker-manifest-list-spec.json"), Some(media::DOCKER_LIST), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::DockerManifestList);
    let links: Vec<_> = m.children.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(links, ["linux-ppc64le", "linux-amd64"]);
    assert!(m.config.is_none() && m.layers.is_empty());
    assert_eq!(names(&m).len(), 3);
}

#[test]
fn signed_schema1_digest_is_over_the_canonical_payload() {
    let bytes = fixture("schema1-signed.json");
    let m = parse(&bytes, Some(media::DOCKER_SCHEMA1_SIGNED), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::DockerSchema1);
    assert_eq!(
        m.digest(Algorithm::Sha256).to_string(),
        "sha256:0a534baac48639fec296e096926bdca7880cf4e96bced6e17d0fada495f46f33"
    );
    assert_ne!(Digest::of(Algorithm::Sha256, &bytes), m.digest(Algorithm::Sha256));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].0, "0.tar.gz");
    assert_eq!(m.layers[0].1.size, None);
    assert_eq!(names(&m), ["manifest.json", "layers", "rootfs"]);
}

#[test]
fn schema1_layers_are_reversed_to_bottom_first() {
    let doc = serde_json::json!({
        "schemaVersion": 1, "name": "a", "tag": "b",
        "fsLayers": [
            {"blobSum": format!("sha256:{}", "1".repeat(64))},
            {"blobSum": format!("sha256:{}", "2".repeat(64))}
        ]
    });
    let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), Some(media::DOCKER_SCHEMA1), "t")
        .expect("test input is valid");
    assert_eq!(m.layers[0].1.digest.hex(), "2".repeat(64));
    assert_eq!(m.layers[1].1.digest.hex(), "1".repeat(64));
    // Unsigned: the digest is over the bytes themselves.
    let bytes = serde_json::to_vec(&doc).expect("test input is valid");
    assert_eq!(m.digest(Algorithm::Sha256), Digest::of(Algorithm::Sha256, &bytes));
}

#[test]
fn artifacts_show_what_their_json_has() {
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.example.artifact.v1+json",
        "config": {"mediaType": "application/vnd.example.config+json", "size": 2,
                   "digest": format!("sha256:{}", "a".repeat(64))},
        "layers": [{"mediaType": "application/vnd.example.sbom+json", "size": 10,
                    "digest": format!("sha256:{}", "b".repeat(64))}]
    });
    let bytes = serde_json::to_vec(&doc).expect("test input is valid");
    let m = parse(&bytes, Some("application/vnd.example.artifact.v1+json"), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::Other);
    assert_eq!(m.layers[0].0, "0");
    assert_eq!(names(&m), ["manifest.json", "config.json", "layers"]);

    let bare = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.example.thing"});
    let m = parse(&serde_json::to_vec(&bare).expect("test input is valid"), None, "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::Other);
    assert_eq!(names(&m), ["manifest.json"]);
}

#[test]
fn an_oci_manifest_with_an_artifact_config_is_still_an_image_manifest() {
    let doc = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/x.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": []
    });
    let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), Some(media::OCI_MANIFEST), "t")
        .expect("test input is valid");
    assert_eq!(m.kind, Kind::OciManifest);
    assert_eq!(names(&m), ["manifest.json", "config.json", "layers"]);
}

fn refused(bytes: &[u8], content_type: Option<&str>) -> String {
    match parse(bytes, content_type, "repo@x") {
        Ok(m) => panic!("accepted as {:?}: {}", m.kind, String::from_utf8_lossy(&bytes[..bytes.len().min(300)])),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hostile_documents_are_refused_with_a_reason() {
    let dg = format!("sha256:{}", "c".repeat(64));
    let layer = |size: serde_json::Value, digest: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "x", "size": 1, "digest": dg},
            "layers": [{"mediaType": "x", "size": size, "digest": digest}]
        }))
        .expect("test input is valid")
    };
    assert!(refused(b"{not json", None).contains("not JSON"));
    assert!(refused(b"[1,2]", None).contains("not a JSON object"));
    assert!(refused(br#"{"schemaVersion": 3}"#, None).contains("schemaVersion 3"));
    assert!(refused(br#"{"config": {}}"#, None).contains("no schemaVersion"));
    assert!(refused(&layer((-1).into(), &dg), None).contains("layers[0]"));
    assert!(refused(&layer((1u64 << 50).into(), &dg), None).contains("larger than regfs accepts"));
    assert!(refused(&layer(1.into(), "md5:d41d8cd98f00b204e9800998ecf8427e"), None).contains("invalid digest"));
    assert!(refused(&layer(1.into(), "sha256:XYZ"), None).contains("invalid digest"));
    let no_config =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": media::DOCKER_SCHEMA2, "layers": []}))
            .expect("test input is valid");
    assert!(refused(&no_config, None).contains("no config"));
    let no_manifests = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX}))
        .expect("test input is valid");
    assert!(refused(&no_manifests, None).contains("no manifests"));
    // Header and body naming different manifest types.
    assert!(refused(&fixture("oci-index-seed.json"), Some(media::DOCKER_SCHEMA2)).contains("but mediaType"));
    // schemaVersion 2 served with a schema1 type.
    assert!(refused(&fixture("oci-manifest-seed.json"), Some(media::DOCKER_SCHEMA1)).contains("Content-Type"));
    let no_mt = br#"{"schemaVersion": 2, "config": {}, "layers": []}"#;
    assert!(refused(no_mt, Some(media::DOCKER_SCHEMA1)).contains("served as"));
    // A schema1 signature whose formatLength points past the document.
    let forged = br#"{"schemaVersion":1,"fsLayers":[],"signatures":[{"protected":"eyJmb3JtYXRMZW5ndGgiOjEwMDAwLCJmb3JtYXRUYWlsIjoiIn0"}]}"#;
    assert!(refused(forged, None).contains("formatLength"));
    let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
    assert!(matches!(parse(&big, None, "t"), Err(Error::TooLarge(_))));
}

/// A descriptor may claim up to 1 TiB ([`MAX_BLOB_SIZE`](crate::limits::MAX_BLOB_SIZE)), that size
/// itself included; one byte more makes its manifest malformed.
#[test]
fn a_descriptor_of_exactly_the_blob_size_limit_is_taken_and_one_byte_more_is_not() {
    use crate::limits::MAX_BLOB_SIZE;
    let dg = format!("sha256:{}", "c".repeat(64));
    let with_layer = |size: u64| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "x", "size": 1, "digest": dg},
            "layers": [{"mediaType": "x", "size": size, "digest": dg}]
        }))
        .expect("test input is valid")
    };
    let m = parse(&with_layer(MAX_BLOB_SIZE), None, "t").expect("a layer of exactly the limit is taken");
    assert_eq!(m.layers[0].1.size, Some(MAX_BLOB_SIZE));
    assert!(refused(&with_layer(MAX_BLOB_SIZE + 1), None).contains("larger than regfs accepts"));
}

/// The size limit is the reference registry's own (4 MiB): a manifest of exactly that many
/// bytes is read, one byte more is refused.
#[test]
fn a_manifest_of_exactly_the_size_limit_is_read_and_one_byte_more_is_not() {
    let mut edge = fixture("oci-manifest-seed.json");
    edge.resize(MAX_MANIFEST_SIZE, b' ');
    let m = parse(&edge, Some(media::OCI_MANIFEST), "t").expect("a manifest of exactly the limit is read");
    assert_eq!((m.kind, m.bytes().len()), (Kind::OciManifest, MAX_MANIFEST_SIZE));
    edge.push(b' ');
    assert!(matches!(parse(&edge, Some(media::OCI_MANIFEST), "t"), Err(Error::TooLarge(_))));
}

#[test]
fn hostile_platform_names_cannot_escape_or_collide() {
    let d = |n: char, os: &str, arch: &str| {
        serde_json::json!({"mediaType": media::OCI_MANIFEST, "size": 1,
            "digest": format!("sha256:{}", n.to_string().repeat(64)),
            "platform": {"os": os, "architecture": arch}})
    };
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
        d('1', "../..", "x"), d('2', "linux", "amd64"), d('3', "linux", "amd64"),
        d('4', "a/b\u{0}", "c"), d('5', ".", ""), d('5', "", ""), d('5', "", "")
    ]});
    let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), None, "t").expect("test input is valid");
    let links: Vec<_> = m.children.iter().map(|(n, _)| n.clone()).collect();
    let unique: HashSet<_> = links.iter().collect();
    assert_eq!(unique.len(), links.len(), "{links:?}");
    for l in &links {
        assert!(!l.contains('/') && !l.contains('\0') && !l.starts_with('.'), "{l:?}");
    }
    assert_eq!(links[1], "linux-amd64");
    assert_eq!(links[2], format!("sha256:{}", "3".repeat(64)));
    assert_eq!(links[5], format!("sha256:{}-2", "5".repeat(64)));
    assert_eq!(links[6], format!("sha256:{}-3", "5".repeat(64)));
}

/// The fixture's JWS payload, its protected header's `formatLength`, and the fixture's bytes.
fn signed_schema1() -> (Vec<u8>, Vec<u8>, usize) {
    use base64::Engine as _;
    let bytes = fixture("schema1-signed.json");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("test input is valid");
    let protected = doc["signatures"][0]["protected"].as_str().expect("test input is valid");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(protected).expect("test input is valid"),
    )
    .expect("test input is valid");
    let len = header["formatLength"].as_u64().expect("test input is valid") as usize;
    let tail = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header["formatTail"].as_str().expect("test input is valid"))
        .expect("test input is valid");
    let payload = [&bytes[..len], &tail[..]].concat();
    (bytes, payload, len)
}

fn protected(format_length: usize, tail: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({"formatLength": format_length, "formatTail": b64.encode(tail)});
    b64.encode(serde_json::to_vec(&header).expect("test input is valid"))
}

#[test]
fn signed_schema1_shows_what_its_payload_says_and_nothing_else() {
    let (bytes, payload, len) = signed_schema1();
    let genuine = parse(&bytes, Some(media::DOCKER_SCHEMA1_SIGNED), "t").expect("test input is valid");
    let d = genuine.digest(Algorithm::Sha256);
    assert_eq!(d, Digest::of(Algorithm::Sha256, &payload));
    let evil = format!("sha256:{}", "e".repeat(64));

    // The payload carried whole in formatTail; the served fsLayers name another layer.
    let forged = format!(
        r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{evil}"}}],"signatures":[{{"protected":"{}"}}]}}"#,
        protected(0, &payload)
    );
    let why = refused(forged.as_bytes(), Some(media::DOCKER_SCHEMA1_SIGNED));
    assert!(why.contains("formatTail"), "{why}");

    // The genuine head, then a second member before the signatures.
    let rest = &bytes[len..];
    let extra = [&bytes[..len], br#","layers":[{"blobSum":"EVIL"}]"#.as_slice(), rest].concat();
    let extra = String::from_utf8(extra).expect("test input is valid").replace("EVIL", &evil);
    let why = refused(extra.as_bytes(), Some(media::DOCKER_SCHEMA1_SIGNED));
    assert!(why.contains("signatures"), "{why}");

    // Two signatures blocks (serde_json would keep the last).
    let sigs = &rest[rest.iter().position(|&b| b == b'[').expect("test input is valid")..];
    let sigs = &sigs[..sigs.len() - 2];
    let twice = [&bytes[..], b"".as_slice()].concat();
    let twice = [&twice[..twice.len() - 2], b",\"signatures\": ".as_slice(), sigs, b"\n}"].concat();
    let why = refused(&twice, Some(media::DOCKER_SCHEMA1_SIGNED));
    assert!(why.contains("duplicate"), "{why}");

    // Signatures that disagree on what the payload is.
    let p1 = protected(len, &payload[len..]);
    let p2 = protected(len - 1, &payload[len - 1..]);
    let head = std::str::from_utf8(&bytes[..len]).expect("test input is valid");
    let disagree = format!(r#"{head},"signatures":[{{"protected":"{p1}"}},{{"protected":"{p2}"}}]}}"#);
    let why = refused(disagree.as_bytes(), Some(media::DOCKER_SCHEMA1_SIGNED));
    assert!(why.contains("disagree"), "{why}");
    // The same one twice is fine, and shows the payload's layers.
    let agree = format!(r#"{head},"signatures":[{{"protected":"{p1}"}},{{"protected":"{p1}"}}]}}"#);
    let m = parse(agree.as_bytes(), Some(media::DOCKER_SCHEMA1_SIGNED), "t").expect("test input is valid");
    assert_eq!(m.digest(Algorithm::Sha256), d);
    assert_eq!(m.layers, genuine.layers);
}

#[test]
fn duplicate_keys_are_refused_wherever_they_are() {
    let dg = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    // A payload (unsigned schema1) that names its layers twice.
    let s1 = format!(
        r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}],"fsLayers":[{{"blobSum":"{}"}}]}}"#,
        dg('1'),
        dg('2')
    );
    assert!(refused(s1.as_bytes(), Some(media::DOCKER_SCHEMA1)).contains("duplicate key"));
    // An image manifest whose layer names its digest twice.
    let oci = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","size":1,"digest":"{}"}},
            "layers":[{{"mediaType":"x","size":1,"digest":"{}","digest":"{}"}}]}}"#,
        media::OCI_MANIFEST,
        dg('3'),
        dg('4'),
        dg('5')
    );
    assert!(refused(oci.as_bytes(), Some(media::OCI_MANIFEST)).contains("duplicate key"));
}

#[test]
fn unknown_media_types_show_their_manifest_json_whatever_fields_they_have() {
    let thing = "application/vnd.example.thing.v1+json";
    let desc = |c: char, size: i64| {
        serde_json::json!({"mediaType": "application/x.part", "size": size,
            "digest": format!("sha256:{}", c.to_string().repeat(64))})
    };
    let shown = |bytes: &[u8], ct: Option<&str>| {
        let m = parse(bytes, ct, "t").unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)));
        assert_eq!(m.kind, Kind::Other);
        assert_eq!(m.bytes(), bytes);
        assert_eq!(m.digest(Algorithm::Sha256), Digest::of(Algorithm::Sha256, bytes));
        names(&m)
    };
    // Whatever schemaVersion, or none, or not JSON at all, when the Content-Type names a type.
    assert_eq!(shown(br#"{"schemaVersion": 3, "x": 1}"#, Some(thing)), ["manifest.json"]);
    assert_eq!(shown(br#"{"x": 1}"#, Some(thing)), ["manifest.json"]);
    assert_eq!(shown(b"plain text, not JSON", Some(thing)), ["manifest.json"]);
    assert_eq!(shown(br#"{"a": 1, "a": 2}"#, Some(thing)), ["manifest.json"]);
    // The body's mediaType names it, under a generic Content-Type or none.
    let body = serde_json::json!({"mediaType": thing, "config": desc('1', 2)});
    let body = serde_json::to_vec(&body).expect("test input is valid");
    assert_eq!(shown(&body, Some("application/json")), ["manifest.json", "config.json"]);
    assert_eq!(shown(&body, None), ["manifest.json", "config.json"]);
    // Each optional part is shown only where it parses cleanly, independently of the other.
    let bad_config = serde_json::json!({"config": desc('1', -1), "layers": [desc('2', 5), desc('3', 6)]});
    let bytes = serde_json::to_vec(&bad_config).expect("test input is valid");
    assert_eq!(shown(&bytes, Some(thing)), ["manifest.json", "layers"]);
    let bad_layer = serde_json::json!({"config": desc('1', 2), "layers": [desc('2', 5), {"digest": "md5:x"}]});
    let bytes = serde_json::to_vec(&bad_layer).expect("test input is valid");
    assert_eq!(shown(&bytes, Some(thing)), ["manifest.json", "config.json"]);
    // A duplicate key anywhere: the document means different things to different readers, so
    // none of its parts is shown.
    let dup = format!(r#"{{"config": {}, "config": {}}}"#, desc('1', 2), desc('2', 3));
    assert_eq!(shown(dup.as_bytes(), Some(thing)), ["manifest.json"]);

    // Known types keep their strict checks.
    assert!(refused(br#"{"schemaVersion": 3}"#, Some(media::OCI_MANIFEST)).contains("schemaVersion 3"));
    assert!(refused(br#"{"schemaVersion": 3}"#, Some("application/json")).contains("schemaVersion 3"));
    assert!(refused(br#"{"layers": []}"#, None).contains("no schemaVersion"));
    assert!(refused(b"plain text", Some(media::OCI_INDEX)).contains("not JSON"));
    assert!(refused(b"plain text", None).contains("not JSON"));
}

/// One digest, one meaning: the Content-Type is not covered by the digest, so a document whose
/// bytes could be read as an image manifest or as an index (CVE-2021-41190) must not become
/// either depending on the header a registry or a man in the middle sends with it.
#[test]
fn a_document_that_is_both_index_and_image_manifest_is_refused_whatever_the_header() {
    let dg = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let both = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": dg('1')},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 3, "digest": dg('2')}],
        "manifests": [{"mediaType": media::OCI_MANIFEST, "size": 4, "digest": dg('3'),
                       "platform": {"os": "linux", "architecture": "amd64"}}]
    });
    let bytes = serde_json::to_vec(&both).expect("test input is valid");
    for ct in [
        Some(media::OCI_INDEX),
        Some(media::OCI_MANIFEST),
        Some(media::DOCKER_LIST),
        Some(media::DOCKER_SCHEMA2),
        Some("application/json"),
        None,
    ] {
        assert!(refused(&bytes, ct).contains("both"), "{ct:?}");
    }
    // `manifests` with either part of an image manifest is as ambiguous as with both.
    for part in ["config", "layers"] {
        let mut half = both.clone();
        half.as_object_mut().expect("test input is valid").remove(part);
        let bytes = serde_json::to_vec(&half).expect("test input is valid");
        for ct in [Some(media::OCI_INDEX), Some(media::OCI_MANIFEST), None] {
            assert!(refused(&bytes, ct).contains("both"), "without {part}, as {ct:?}");
        }
    }
    // A body that names itself an index (the digest covers that) is not shown as anything else
    // because a header says another type, known or not.
    let mut index = both.clone();
    index["mediaType"] = media::OCI_INDEX.into();
    let bytes = serde_json::to_vec(&index).expect("test input is valid");
    assert!(refused(&bytes, Some(media::OCI_INDEX)).contains("both"));
    assert!(refused(&bytes, Some("application/vnd.example.thing")).contains("but mediaType"));
    // Non-ambiguous documents are unaffected.
    let m = parse(&fixture("oci-index-seed.json"), Some(media::OCI_INDEX), "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::OciIndex);
}

/// Parsed JSON takes up to 16 times the bytes it came from (a 4 MiB array of zeros is 2 million
/// values of 32 bytes: 70 MB measured): a manifest may hold at most [`MAX_VALUES`](crate::limits::MAX_VALUES) JSON
/// values, so parsing one costs a few MiB whatever a registry serves.
#[test]
fn a_manifest_of_millions_of_json_values_is_refused_before_it_is_all_built() {
    let dg = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let mut doc = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": dg('1')},
        "layers": [],
    });
    doc["annotations"] = serde_json::Value::Object(
        (0..50).map(|i| (format!("k{i}"), serde_json::Value::String("v".repeat(64)))).collect(),
    );
    let honest = serde_json::to_vec(&doc).expect("test input is valid");
    parse(&honest, Some(media::OCI_MANIFEST), "t").expect("an ordinary manifest");
    let mut bytes = honest[..honest.len() - 1].to_vec();
    bytes.extend_from_slice(br#","x":["#);
    while bytes.len() < MAX_MANIFEST_SIZE - 8 {
        bytes.extend_from_slice(b"0,");
    }
    bytes.extend_from_slice(b"0]}");
    assert!(refused(&bytes, Some(media::OCI_MANIFEST)).contains("JSON values"));
    // An unknown type is still shown as its bytes, with no parts.
    let m = parse(&bytes, Some("application/vnd.example.thing"), "t").expect("shown");
    assert_eq!(names(&m), ["manifest.json"]);
}

#[test]
fn index_entries_keep_their_platform_for_the_matcher() {
    use crate::platform::Platform;
    let m = parse(&fixture("oci-index-seed.json"), Some(media::OCI_INDEX), "t").expect("test input is valid");
    let platforms: Vec<_> = m.children.iter().map(|(_, d)| d.platform.clone()).collect();
    let p = |os: &str, arch: &str| Some(Platform { os: os.into(), architecture: arch.into(), variant: String::new() });
    assert_eq!(platforms, [p("linux", "amd64"), None, p("sunos", "sun4m")]);
    let list =
        parse(&fixture("docker-manifest-list-spec.json"), Some(media::DOCKER_LIST), "t").expect("test input is valid");
    assert_eq!(list.children[0].1.platform, p("linux", "ppc64le"));
}

/// An artifact's layers titled `org.opencontainers.image.title` are also shown under that title
/// when it is one safe, unique name; the rest only under `layers/`.
#[test]
fn titles_name_layers_only_when_safe_and_unique() {
    let layer = |n: usize, title: Option<&str>| {
        let mut d = serde_json::json!({"mediaType": "application/octet-stream", "size": n + 1,
            "digest": format!("sha256:{n:064x}")});
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({"org.opencontainers.image.title": t, "other": "x"});
        }
        d
    };
    let long = "l".repeat(256);
    let longest = "m".repeat(255);
    let titles = [
        Some("sbom.spdx.json"),
        Some("../evil"),
        Some("manifest.json"),
        Some("dup.txt"),
        Some("dup.txt"),
        Some(".hidden"),
        Some("."),
        Some(".."),
        Some(""),
        Some("a\u{1}b"),
        Some("a\u{7f}b"),
        Some("nul\u{0}"),
        Some("current"),
        Some("layers"),
        Some(long.as_str()),
        Some(longest.as_str()),
        None,
        Some("naïve café.txt"),
    ];
    let mut layers: Vec<_> = titles.iter().enumerate().map(|(n, t)| layer(n, *t)).collect();
    // A title that is not a string is no title.
    layers.push(serde_json::json!({"mediaType": "x", "size": 1, "digest": format!("sha256:{:064x}", 99),
        "annotations": {"org.opencontainers.image.title": 7}}));
    let doc = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": layers
    });
    let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), Some(media::OCI_MANIFEST), "t")
        .expect("test input is valid");
    let titled: Vec<(&str, usize)> = m.titles.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(titled, [("sbom.spdx.json", 0), (longest.as_str(), 15), ("naïve café.txt", 17)]);
    let shown = names(&m);
    assert_eq!(shown[..4], ["manifest.json", "config.json", "layers", "sbom.spdx.json"]);
    assert_eq!(shown.len(), 6, "{shown:?}");
    // Under `layers/` every layer is still there by number.
    assert_eq!(m.layers.len(), titles.len() + 1);
    // The same names on an artifact of a type regfs does not know.
    let mut other = doc.clone();
    other["mediaType"] = serde_json::json!("application/vnd.example.thing");
    let m = parse(&serde_json::to_vec(&other).expect("test input is valid"), None, "t").expect("test input is valid");
    assert_eq!(m.kind, Kind::Other);
    assert_eq!(m.titles.len(), 3);
}

/// A platform part longer than a file name could be is no platform: the entry is named by its
/// digest and never chosen for `current`; one of exactly the limit is kept.
#[test]
fn overlong_platform_parts_make_no_platform() {
    use crate::limits::MAX_PLATFORM_PART;
    let entry = |n: char, arch: String| {
        serde_json::json!({"mediaType": media::OCI_MANIFEST, "size": 1,
            "digest": format!("sha256:{}", n.to_string().repeat(64)),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let doc = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [
        entry('1', "a".repeat(MAX_PLATFORM_PART + 1)), entry('2', "b".repeat(MAX_PLATFORM_PART))
    ]});
    let m = parse(&serde_json::to_vec(&doc).expect("test input is valid"), None, "t").expect("test input is valid");
    assert_eq!(m.children[0].1.platform, None);
    assert_eq!(m.children[0].0, format!("sha256:{}", "1".repeat(64)));
    assert_eq!(m.children[1].1.platform.as_ref().map(|p| p.architecture.len()), Some(MAX_PLATFORM_PART));
}

/// A layer's `urls` (non-distributable layers) are kept as given, in order, within
/// `limits::MAX_LAYER_URLS` URLs of `limits::MAX_LAYER_URL_LEN` bytes; a descriptor past either
/// bound keeps none (none of its URLs will be used, as for a descriptor with one bad URL). What
/// they hold is weighed in the manifest cache.
#[test]
fn layer_urls_are_kept_bounded_and_weighed() {
    use crate::limits::{MAX_LAYER_URL_LEN, MAX_LAYER_URLS};
    let doc = |urls: Vec<String>| {
        let layer = |n: u32, urls: &[String]| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                "digest": format!("sha256:{n:064x}"), "size": 10, "urls": urls})
        };
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{:064x}", 9), "size": 2},
            "layers": [layer(1, &urls), layer(2, &[])]});
        parse(&serde_json::to_vec(&m).expect("JSON"), Some(media::OCI_MANIFEST), "t").expect("test input is valid")
    };
    let urls = vec!["https://a.example/l".to_string(), "http://b.example/l?x=1".to_string()];
    let m = doc(urls.clone());
    assert_eq!(m.layers[0].1.urls, urls);
    assert!(m.layers[1].1.urls.is_empty());
    assert!(m.config.as_ref().expect("config").urls.is_empty());
    let many: Vec<String> =
        (0..MAX_LAYER_URLS).map(|i| format!("https://h/{i}{}", "x".repeat(MAX_LAYER_URL_LEN - 12))).collect();
    assert!(many.iter().all(|u| u.len() <= MAX_LAYER_URL_LEN));
    let full = doc(many.clone());
    assert_eq!(full.layers[0].1.urls.len(), MAX_LAYER_URLS);
    let held: usize = many.iter().map(String::len).sum();
    assert!(full.weight() >= m.weight() + held, "{} does not weigh the {held} bytes of URLs", full.weight());
    let mut too_many = many.clone();
    too_many.push("https://h/one-more".into());
    assert!(doc(too_many).layers[0].1.urls.is_empty(), "more than {MAX_LAYER_URLS} URLs: none kept");
    let too_long = vec![format!("https://h/{}", "x".repeat(MAX_LAYER_URL_LEN))];
    assert!(doc(too_long).layers[0].1.urls.is_empty(), "a URL over {MAX_LAYER_URL_LEN} bytes: none kept");
    // `urls` must be an array of strings, as for the registry.
    let bad = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "x", "digest": format!("sha256:{:064x}", 9), "size": 2},
        "layers": [{"mediaType": "x", "digest": format!("sha256:{:064x}", 1), "size": 1, "urls": "https://a/"}]});
    assert!(parse(&serde_json::to_vec(&bad).expect("JSON"), Some(media::OCI_MANIFEST), "t").is_err());
}

/// Which kinds are images (layers with decoded views, maybe a `rootfs/`) and which carry
/// diff_ids in their config: asked of the kind, so layout and views decide alike.
#[test]
fn kinds_say_whether_they_are_images_and_carry_diff_ids() {
    let all = [
        (Kind::DockerSchema1, true, false),
        (Kind::DockerSchema2, true, true),
        (Kind::OciManifest, true, true),
        (Kind::DockerManifestList, false, false),
        (Kind::OciIndex, false, false),
        (Kind::Other, false, false),
    ];
    for (kind, image, diff_ids) in all {
        assert_eq!((kind.is_image(), kind.has_diff_ids()), (image, diff_ids), "{kind:?}");
    }
    let schema1 = parse(&fixture("schema1-signed.json"), Some(media::DOCKER_SCHEMA1_SIGNED), "t").expect("valid");
    let schema2 = parse(&fixture("docker-schema2-spec.json"), Some(media::DOCKER_SCHEMA2), "t").expect("valid");
    let list = parse(&fixture("docker-manifest-list-spec.json"), Some(media::DOCKER_LIST), "t").expect("valid");
    assert_eq!((schema1.kind.is_image(), schema1.kind.has_diff_ids()), (true, false));
    assert_eq!((schema2.kind.is_image(), schema2.kind.has_diff_ids()), (true, true));
    assert!(!list.kind.is_image());
}
