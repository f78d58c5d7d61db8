//! SOCI v2 images (`views::lazy::soci`) through the core, over the in-memory registry that
//! counts what it is asked: ordinary gzip layers with zTOCs written by the test harness
//! (`testkit::fixtures::soci`, checkpoints found as soci-snapshotter finds them), bound to the
//! image by its manifest's `com.amazon.soci.index-digest`. Each tree compared with the same
//! layers read whole; what each read costs; what every lie ends in.

use regfs::digest::{Algorithm, Digest};
use regfs::media;
use regfs::testkit::core::{Core, GZIP, sha256};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::fixtures::soci::{self, Built, Doc, Options};
use regfs::testkit::fixtures::tricky::{self, E};
use regfs::testkit::paths::Paths;

use super::lazy::{bin, ranges_of, tree, whole_gets_of};

const SPAN: u64 = 64 << 10;

/// An edit of a zTOC before it is written.
type Edit = Box<dyn Fn(&mut Doc)>;

fn text(seed: &str, n: usize) -> Vec<u8> {
    soci::words(seed, n)
}

fn noise(seed: &str, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    regfs::testkit::fixtures::layers::Noise::new(seed).fill(&mut b);
    b
}

fn layers() -> Vec<Vec<E>> {
    vec![
        vec![
            tricky::dir("bin"),
            tricky::file("bin/sh", "#!/bin/sh\n").mode(0o755),
            tricky::hardlink("bin/ash", "bin/sh"),
            tricky::symlink("bin/link", "sh"),
            tricky::dir("usr"),
            bin("usr/words.txt", text("words", 900 << 10)),
            bin("usr/noise.bin", noise("soci-noise", 300_000)),
            tricky::file("usr/empty", ""),
            tricky::file("etc/gone", "to be whited out\n"),
            tricky::file("etc/attrs", "x\n").xattr("user.comment", b"soci"),
        ],
        vec![
            tricky::dir("opt"),
            tricky::file("opt/readme", "middle\n").owner(1000, 1000),
            tricky::whiteout("etc/gone"),
        ],
        vec![
            tricky::dir("top"),
            tricky::file("top/only-here.txt", "only here\n"),
            bin("top/setuid", b"x".to_vec()).mode(0o4755),
        ],
    ]
}

fn built() -> Vec<Built> {
    let o = Options { span_size: SPAN, ..Options::default() };
    layers().iter().map(|l| soci::layer(l, &o).expect("a gzip layer")).collect()
}

struct Image {
    manifest: Digest,
    blobs: Vec<Digest>,
    ztocs: Vec<Digest>,
}

/// How the image binds its SOCI index.
#[derive(Clone, Copy, PartialEq)]
enum Bind {
    /// The manifest names the index, which names a zTOC per layer.
    Soci,
    /// The manifest names an index the registry does not have.
    Missing,
    /// No annotation (the same layers, read whole).
    None,
    /// The index's config says v1.
    V1,
}

/// Put `built` as an image `repo:tag` (schema2 if `docker`) with a zTOC per layer (`docs[i]`,
/// none where `None`).
fn put(fake: &Fake, repo: &str, tag: &str, built: &[Built], docs: &[Option<Doc>], bind: Bind, docker: bool) -> Image {
    let blobs: Vec<Digest> = built.iter().map(|b| fake.add_blob(&b.blob)).collect();
    let layer_type = if docker { "application/vnd.docker.image.rootfs.diff.tar.gzip" } else { GZIP };
    let mut ztocs = Vec::new();
    let mut named = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let Some(doc) = doc else { continue };
        let bytes = doc.bytes();
        let z = fake.add_blob(&bytes);
        ztocs.push(z.clone());
        named.push((z, bytes.len(), blobs[i].clone(), layer_type));
    }
    let cfg = fake.add_blob(b"{}");
    let mut index = soci::index_manifest(&cfg, &named);
    if bind == Bind::V1 {
        index = String::from_utf8(index).expect("utf-8").replace("index.v2", "index.v1").into_bytes();
    }
    let index_d = match bind {
        Bind::Missing => Digest::of(Algorithm::Sha256, b"no such index"),
        _ => fake.put_manifest(repo, None, media::OCI_MANIFEST, &index, Algorithm::Sha256),
    };
    let diff_ids: Vec<String> = built.iter().map(|b| b.diff_id.to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let config_d = fake.add_blob(&config);
    let layers: Vec<serde_json::Value> = built
        .iter()
        .zip(&blobs)
        .map(|(b, d)| serde_json::json!({"mediaType": layer_type, "digest": d.to_string(), "size": b.blob.len()}))
        .collect();
    let (mt, cmt) = if docker {
        (media::DOCKER_SCHEMA2, "application/vnd.docker.container.image.v1+json")
    } else {
        (media::OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    };
    let mut m = serde_json::json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": cmt, "digest": config_d.to_string(), "size": config.len()},
        "layers": layers,
    });
    if bind != Bind::None {
        m["annotations"] = serde_json::json!({soci::INDEX_DIGEST: index_d.to_string()});
    }
    let body = serde_json::to_vec(&m).expect("manifest");
    Image { manifest: fake.put_manifest(repo, Some(tag), mt, &body, Algorithm::Sha256), blobs, ztocs }
}

fn docs(built: &[Built]) -> Vec<Option<Doc>> {
    built.iter().map(|b| Some(Doc::of(b))).collect()
}

fn root(img: &Image) -> String {
    format!("r/manifests/{}/rootfs", img.manifest)
}

fn status(c: &Core) -> String {
    String::from_utf8(c.cat(".regfs/status").expect("status")).expect("utf-8")
}

#[test]
fn a_soci_rootfs_is_the_same_tree_as_its_layers_read_whole_and_costs_no_whole_blob() {
    for docker in [false, true] {
        let c = Core::new(Faulty::new(Fake::default()));
        let built = built();
        let lazy = put(&c.fake, "r", "lazy", &built, &docs(&built), Bind::Soci, docker);
        let whole = put(&c.fake, "r", "whole", &built, &docs(&built), Bind::None, docker);
        assert_eq!(c.ls(&root(&lazy)).expect("ls"), ["bin", "etc", "opt", "top", "usr"]);
        for b in &lazy.blobs {
            assert_eq!(ranges_of(&c.fake, b), 0, "listing costs the zTOCs only: {:?}", c.fake.calls());
            assert_eq!(whole_gets_of(&c.fake, b), 0);
        }
        let lazy_tree = tree(&c, &root(&lazy));
        for b in &lazy.blobs {
            assert_eq!(whole_gets_of(&c.fake, b), 0, "no whole blob to read every file: {:?}", c.fake.calls());
        }
        let whole_tree = tree(&c, &root(&whole));
        assert_eq!(lazy_tree, whole_tree, "docker {docker}: the zTOC's tree is the tar's");
        assert!(
            lazy_tree
                .iter()
                .any(|(p, w)| p == "usr/words.txt" && w.contains(&sha256(&text("words", 900 << 10)).to_string()))
        );
        assert!(lazy_tree.iter().any(|(p, w)| p == "top/setuid" && w.contains("mode 4755")), "{lazy_tree:?}");
        assert!(built[0].points.iter().any(|p| p.bits != 0), "some span starts mid-byte");
        let s = status(&c);
        assert!(s.contains("soci"), "{s}");
    }
}

#[test]
fn a_file_costs_the_spans_it_touches_and_a_warm_read_costs_nothing() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &docs(&built), Bind::Soci, false);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&img))).expect("cat"), b"#!/bin/sh\n");
    assert_eq!(ranges_of(&c.fake, &img.blobs[0]), 1, "a small file: its one span: {:?}", c.fake.calls());
    let words = format!("{}/usr/words.txt", root(&img));
    assert_eq!(c.cat(&words).expect("cat"), text("words", 900 << 10));
    let b = &built[0];
    let f = b.files.iter().find(|f| f.name == "usr/words.txt").expect("words");
    let spans = (0..b.points.len())
        .filter(|i| {
            let start = b.points[*i].output;
            let end = b.points.get(i + 1).map_or(b.tar.len() as u64, |p| p.output);
            start < f.offset + f.size && end > f.offset
        })
        .count();
    let sh = b.files.iter().find(|f| f.name == "bin/sh").expect("sh");
    let shared = usize::from(
        b.points.iter().rposition(|p| p.output <= sh.offset) == b.points.iter().rposition(|p| p.output <= f.offset),
    );
    assert_eq!(ranges_of(&c.fake, &img.blobs[0]), 1 + spans - shared, "one range per span: {:?}", c.fake.calls());
    assert!(spans < b.points.len(), "not every span of the layer");
    let after = c.fake.calls().len();
    assert_eq!(c.cat(&words).expect("again"), text("words", 900 << 10));
    assert_eq!(c.fake.calls().len(), after, "a warm read asks nothing");
    let s = String::from_utf8(c.cat(".regfs/status.json").expect("status")).expect("utf-8");
    assert!(s.contains(&img.blobs[0].to_string()) && s.contains("\"soci\""), "{s}");
}

#[test]
fn a_span_that_does_not_match_its_digest_is_eio_and_the_other_spans_serve() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let mut docs = docs(&built);
    let b = &built[0];
    let f = b.files.iter().find(|f| f.name == "usr/noise.bin").expect("noise");
    let i = b.points.iter().rposition(|p| p.output <= f.offset + f.size / 2).expect("a span");
    if let Some(d) = docs[0].as_mut() {
        d.span_digests[i] = sha256(b"other bytes").to_string();
    }
    let img = put(&c.fake, "r", "v1", &built, &docs, Bind::Soci, false);
    let err = c.cat(&format!("{}/usr/noise.bin", root(&img))).map(|b| b.len()).expect_err("a span that lies");
    assert!(matches!(err, regfs::error::Error::DigestMismatch { .. }), "{err}");
    assert_eq!(c.cat(&format!("{}/top/only-here.txt", root(&img))).expect("another layer"), b"only here\n");
    let last = b.files.iter().find(|f| f.name == "etc/attrs").expect("attrs");
    if b.points.iter().rposition(|p| p.output <= last.offset) != Some(i) {
        assert_eq!(c.cat(&format!("{}/etc/attrs", root(&img))).expect("a file of another span"), b"x\n");
    }
}

#[test]
fn ztocs_that_lie_about_their_spans_are_refused_for_their_layer() {
    let built = built();
    let edits: Vec<(&str, Edit)> = vec![
        ("a checkpoint past the blob", Box::new(|d| d.points[1].input = d.compressed_size as u64 + 5)),
        ("checkpoints out of order", Box::new(|d| d.points.swap(1, 2))),
        ("another blob's size", Box::new(|d| d.compressed_size -= 1)),
    ];
    for (what, edit) in edits {
        let c = Core::new(Faulty::new(Fake::default()));
        let mut docs = docs(&built);
        if let Some(d) = docs[0].as_mut() {
            edit(d);
        }
        let img = put(&c.fake, "r", "v1", &built, &docs, Bind::Soci, false);
        assert!(c.ls(&root(&img)).is_err(), "{what}: the base layer's zTOC is refused");
        assert_eq!(c.cat(&format!("{}/top/only-here.txt", root(&img))).expect("a top layer file"), b"only here\n");
        assert_eq!(whole_gets_of(&c.fake, &img.blobs[0]), 0, "{what}: not read by another proof");
    }
    // An index that is not v2, or two zTOCs for one layer: refused too.
    let c = Core::new(Faulty::new(Fake::default()));
    let img = put(&c.fake, "r", "v1", &built, &docs(&built), Bind::V1, false);
    assert!(c.ls(&root(&img)).is_err(), "a v1 index named by the manifest is refused");
    let c = Core::new(Faulty::new(Fake::default()));
    let twice: Vec<Option<Doc>> = vec![Some(Doc::of(&built[0])), Some(Doc::of(&built[0])), Some(Doc::of(&built[2]))];
    let mut b2 = built.clone();
    b2[1] = built[0].clone();
    let img = put(&c.fake, "r", "v1", &b2, &twice, Bind::Soci, false);
    assert!(c.ls(&format!("r/manifests/{}/layers", img.manifest)).is_ok());
    assert!(c.cat(&format!("{}/bin/sh", root(&img))).is_err(), "two zTOCs for one layer are refused");
}

#[test]
fn a_missing_index_or_ztoc_or_another_version_reads_the_layer_whole() {
    let built = built();
    let c = Core::new(Faulty::new(Fake::default()));
    let img = put(&c.fake, "r", "v1", &built, &docs(&built), Bind::Missing, false);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&img))).expect("read whole"), b"#!/bin/sh\n");
    assert_eq!(whole_gets_of(&c.fake, &img.blobs[0]), 1);
    let c = Core::new(Faulty::new(Fake::default()));
    let mut docs2 = docs(&built);
    docs2[0] = None;
    if let Some(d) = docs2[1].as_mut() {
        d.version = "1.0".into();
    }
    let img = put(&c.fake, "r", "v1", &built, &docs2, Bind::Soci, false);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&img))).expect("no zTOC: whole"), b"#!/bin/sh\n");
    assert_eq!(c.cat(&format!("{}/opt/readme", root(&img))).expect("another version: whole"), b"middle\n");
    assert_eq!((whole_gets_of(&c.fake, &img.blobs[0]), whole_gets_of(&c.fake, &img.blobs[1])), (1, 1));
    assert_eq!(c.cat(&format!("{}/top/only-here.txt", root(&img))).expect("lazily"), b"only here\n");
    assert_eq!(whole_gets_of(&c.fake, &img.blobs[2]), 0, "the layer with a zTOC is read by spans");
}

/// A zTOC whose every span digest is true but that says a file is elsewhere, or forges a
/// window: the first tier serves its word; the tar, once verified, poisons the layer.
#[test]
fn a_ztoc_that_disagrees_with_its_tar_poisons_the_layer_once_the_tar_is_verified() {
    let built = built();
    let b = &built[0];
    // Where usr/words.txt's text starts mid-stream: a span past the first that decodes
    // otherwise with another window.
    let f = b.files.iter().find(|f| f.name == "usr/words.txt").expect("words");
    let forged = (1..b.points.len())
        .find(|i| b.points[*i].output > f.offset && b.points[*i].output < f.offset + f.size)
        .expect("a span inside usr/words.txt");
    let edits: Vec<(&str, &str, Edit)> = vec![
        (
            "a file moved",
            "puts the data of",
            Box::new(|d| {
                let sh = d.files.iter_mut().find(|f| f.name == "bin/sh").expect("sh");
                sh.offset -= 512;
            }),
        ),
        ("a forged window", "span ", Box::new(move |d| d.points[forged].window = vec![b'Z'; soci::WINDOW])),
    ];
    for (what, why, edit) in edits {
        let c = Core::new(Faulty::new(Fake::default()));
        let mut docs = docs(&built);
        if let Some(d) = docs[0].as_mut() {
            edit(d);
        }
        let img = put(&c.fake, "r", "v1", &built, &docs, Bind::Soci, false);
        let _ = c.cat(&format!("{}/bin/sh", root(&img)));
        c.cat(&format!("r/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar, verified by its diff_id");
        let err = c.cat(&format!("{}/usr/noise.bin", root(&img))).map(|b| b.len()).expect_err("poisoned");
        assert!(err.to_string().contains("disagrees with its TOC") && err.to_string().contains(why), "{what}: {err}");
        assert!(status(&c).contains("POISONED"), "{what}");
    }
}

#[test]
fn an_honest_ztoc_checked_against_its_tar_keeps_serving_and_spans_come_from_the_cache() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &docs(&built), Bind::Soci, false);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&img))).expect("cat"), b"#!/bin/sh\n");
    for n in 0..3 {
        c.cat(&format!("r/manifests/{}/layers/{n}.tar", img.manifest)).expect("layers/n.tar");
    }
    let before = c.fake.calls().len();
    assert_eq!(c.cat(&format!("{}/usr/words.txt", root(&img))).expect("after the check"), text("words", 900 << 10));
    assert_eq!(c.fake.calls().len(), before, "the verified blob is cached: spans are read from it");
    let s = status(&c);
    assert!(!s.contains("POISONED"), "{s}");
    assert!(img.ztocs.len() == 3);
}

/// Poison is a zTOC's, not a blob's: a SOCI index outside the blob can be published by anyone
/// for a popular base layer, so one that lies must not make an honest image over the same blob
/// `EIO` once the lying one is checked against the tar.
#[test]
fn a_lying_ztoc_for_a_shared_blob_poisons_only_the_image_that_names_it() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let honest = put(&c.fake, "r", "honest", &built, &docs(&built), Bind::Soci, false);
    let mut lying = docs(&built);
    if let Some(d) = lying[0].as_mut() {
        let sh = d.files.iter_mut().find(|f| f.name == "bin/sh").expect("sh");
        sh.offset -= 512;
    }
    let liar = put(&c.fake, "r", "liar", &built, &lying, Bind::Soci, true);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&honest))).expect("honest"), b"#!/bin/sh\n");
    let _ = c.cat(&format!("{}/bin/sh", root(&liar)));
    c.cat(&format!("r/manifests/{}/layers/0.tar", liar.manifest)).expect("the liar's layers/0.tar");
    assert!(c.cat(&format!("{}/usr/noise.bin", root(&liar))).is_err(), "the liar is poisoned");
    assert_eq!(
        c.cat(&format!("{}/usr/noise.bin", root(&honest))).expect("the honest image still serves"),
        noise("soci-noise", 300_000)
    );
}

/// A hard link's original whose name a later entry took is reached by its links only: the
/// cross-check compares it with the tar's, as for the other formats.
#[test]
fn a_hidden_hard_link_original_that_lies_is_caught_by_the_tar() {
    let entries = vec![
        tricky::dir("etc"),
        tricky::file("etc/a", "first a\n"),
        tricky::hardlink("etc/b", "etc/a"),
        tricky::file("etc/a", "second a\n"),
    ];
    let b = soci::layer(&entries, &Options { span_size: SPAN, ..Options::default() }).expect("layer");
    let mut doc = Doc::of(&b);
    let first = doc.files.iter_mut().find(|f| f.name == "etc/a").expect("the first etc/a");
    first.mode = 0o4755;
    let c = Core::new(Faulty::new(Fake::default()));
    let img = put(&c.fake, "r", "v1", std::slice::from_ref(&b), &[Some(doc)], Bind::Soci, false);
    assert_eq!(c.walk(&format!("{}/etc/b", root(&img))).expect("walk").mode & 0o7777, 0o4755, "the zTOC's word");
    c.cat(&format!("r/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar");
    let err = c.cat(&format!("{}/etc/b", root(&img))).map(|b| b.len()).expect_err("poisoned");
    assert!(err.to_string().contains("disagrees with its TOC"), "{err}");
}

/// A SOCI span is kept in memory under a key of its zTOC and number, never where a chunk of
/// another format is looked up by its digest: an eStargz TOC that names that key as a chunk's
/// digest is not served the span.
#[test]
fn a_chunk_digest_that_names_a_kept_span_s_key_is_not_served_the_span() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &docs(&built), Bind::Soci, false);
    assert_eq!(c.cat(&format!("{}/bin/sh", root(&img))).expect("cat"), b"#!/bin/sh\n");
    // Span 0 of layer 0 is kept now: its key and length.
    let b = &built[0];
    let len = (b.points[1].output - b.points[0].output) as usize;
    let ztoc = img.ztocs[0].to_string();
    let key = sha256(format!("regfs soci span {ztoc} 0").as_bytes()).to_string();
    let entries = vec![tricky::dir("x"), bin("x/f", vec![b'f'; len])];
    let opts = regfs::testkit::fixtures::estargz::Options { chunk_size: len + 1, ..Default::default() };
    let e = regfs::testkit::fixtures::estargz::estargz_edited(&entries, &opts, |toc| {
        for en in toc["entries"].as_array_mut().expect("entries") {
            if en["name"] == "x/f" {
                en["digest"] = serde_json::json!(key);
                en["chunkDigest"] = serde_json::json!(key);
            }
        }
    })
    .expect("eStargz");
    let d = c.fake.add_blob(&e.blob);
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [e.diff_id.to_string()]}}))
    .expect("config");
    let cd = c.fake.add_blob(&config);
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": GZIP, "digest": d.to_string(), "size": e.blob.len(), "annotations": e.annotations}]});
    let body = serde_json::to_vec(&m).expect("manifest");
    let other = c.fake.put_manifest("r", Some("estargz"), media::OCI_MANIFEST, &body, Algorithm::Sha256);
    let got = c.cat(&format!("r/manifests/{other}/rootfs/x/f"));
    assert!(got.is_err(), "the eStargz chunk's own bytes do not hash to the key it names");
}
