//! Layers read by chunks (`views::lazy`) through the core, over the in-memory registry that can
//! ignore `Range` and count what it is asked: eStargz images written by the test harness
//! (`testkit::fixtures::estargz`), each file's bytes and the tree compared with the same layers
//! read whole, what each action fetches, and what every kind of lie ends in.

use std::sync::Arc;

use regfs::digest::{Algorithm, Digest};
use regfs::media;
use regfs::testkit::core::{Builder, Core, GZIP, sha256};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::fixtures::estargz::{self, Built, Options, Tamper};
use regfs::testkit::fixtures::tricky::{self, E, Kind};
use regfs::testkit::fixtures::zstd_chunked;
use regfs::testkit::paths::Paths;

/// 300,000 bytes with no chunk like another (chunks are kept by digest: repeated ones would be
/// fetched once).
fn big() -> Vec<u8> {
    let mut b = vec![0u8; 300_000];
    regfs::testkit::fixtures::layers::Noise::new("usr/big.bin").fill(&mut b);
    b
}

pub(crate) fn bin(name: &str, data: Vec<u8>) -> E {
    E { kind: Kind::File(data), ..tricky::file(name, "") }
}

/// Three layers: a base with a big chunked file, links and an empty file; a middle one that
/// whites a file out and adds a dir; a top one with a landmark.
fn layers() -> Vec<Vec<E>> {
    vec![
        vec![
            tricky::dir("bin"),
            tricky::file("bin/sh", "#!/bin/sh\n").mode(0o755),
            tricky::hardlink("bin/ash", "bin/sh"),
            tricky::symlink("bin/link", "sh"),
            tricky::dir("usr"),
            bin("usr/big.bin", big()),
            tricky::file("usr/empty", ""),
            tricky::file("etc/gone", "to be whited out\n"),
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

fn opts() -> Options {
    Options { chunk_size: 64 << 10, ..Options::default() }
}

struct Image {
    manifest: Digest,
    blobs: Vec<Digest>,
}

/// Put `built` as the layers of an OCI image `repo:tag`, each descriptor carrying `annotations`
/// as its layer's (`edit` may change them).
fn put(
    fake: &Fake,
    repo: &str,
    tag: &str,
    built: &[Built],
    edit: &dyn Fn(usize, &mut serde_json::Map<String, serde_json::Value>),
) -> Image {
    let layers: Vec<Layer> =
        built.iter().map(|b| Layer { blob: &b.blob, diff_id: &b.diff_id, annotations: &b.annotations }).collect();
    put_layers(fake, repo, tag, &layers, GZIP, edit)
}

/// One layer to put: its blob, diff_id and annotations.
struct Layer<'a> {
    blob: &'a [u8],
    diff_id: &'a Digest,
    annotations: &'a serde_json::Map<String, serde_json::Value>,
}

fn put_layers(
    fake: &Fake,
    repo: &str,
    tag: &str,
    built: &[Layer<'_>],
    media_type: &str,
    edit: &dyn Fn(usize, &mut serde_json::Map<String, serde_json::Value>),
) -> Image {
    let blobs: Vec<Digest> = built.iter().map(|b| fake.add_blob(b.blob)).collect();
    let diff_ids: Vec<String> = built.iter().map(|b| b.diff_id.to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config");
    let cfg = fake.add_blob(&config);
    let layers: Vec<serde_json::Value> = built
        .iter()
        .zip(&blobs)
        .enumerate()
        .map(|(i, (b, d))| {
            let mut a = b.annotations.clone();
            edit(i, &mut a);
            serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": b.blob.len(), "annotations": a})
        })
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": config.len()},
        "layers": layers,
    });
    let body = serde_json::to_vec(&m).expect("manifest");
    Image { manifest: fake.put_manifest(repo, Some(tag), media::OCI_MANIFEST, &body, Algorithm::Sha256), blobs }
}

fn built() -> Vec<Built> {
    layers().iter().map(|l| estargz::estargz(l, &opts()).expect("an eStargz layer")).collect()
}

pub(crate) fn ranges_of(fake: &Faulty<Fake>, d: &Digest) -> usize {
    let d = d.to_string();
    fake.calls().iter().filter(|c| c.starts_with("GET blob") && c.contains(&d) && c.contains(" range ")).count()
}

pub(crate) fn whole_gets_of(fake: &Faulty<Fake>, d: &Digest) -> usize {
    fake.gets_of(d) - ranges_of(fake, d)
}

/// Every path under `root` with what it is: a file's bytes, a link's target, a dir's listing,
/// and its mode and owner.
pub(crate) fn tree(c: &Core, root: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let path = if rel.is_empty() { root.to_string() } else { format!("{root}/{rel}") };
        let a = c.walk(&path).expect("walk");
        let what = match a.kind {
            regfs::layout::FileKind::Directory => {
                let names = c.ls(&path).expect("ls");
                for n in &names {
                    todo.push(if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") });
                }
                format!("dir {names:?}")
            }
            regfs::layout::FileKind::Symlink => format!("link {}", c.fs.readlink(a.ino).expect("readlink")),
            regfs::layout::FileKind::File => format!("file {}", sha256(&c.cat(&path).expect("cat"))),
            other => format!("{other:?}"),
        };
        out.push((
            rel,
            format!(
                "{what} mode {:o} {}:{} nlink {} size {} mtime {:?}",
                a.mode,
                a.uid.unwrap_or(0),
                a.gid.unwrap_or(0),
                a.nlink,
                a.size,
                a.mtime
            ),
        ));
    }
    out.sort();
    out
}

#[test]
fn an_estargz_rootfs_is_the_same_tree_as_its_layers_read_whole_and_costs_no_whole_blob() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let lazy = put(&c.fake, "r", "lazy", &built, &|_, _| {});
    // The same layers without their annotations: read whole, verified by diff_id.
    let whole = put(&c.fake, "r", "whole", &built, &|_, a| a.clear());
    let root = |m: &Digest| format!("r/manifests/{m}/rootfs");
    assert_eq!(c.ls(&root(&lazy.manifest)).expect("ls"), ["bin", "etc", "opt", "top", "usr"], "no TOC entry");
    for b in &lazy.blobs {
        assert!(ranges_of(&c.fake, b) <= 2, "at most two ranges for a layer's TOC: {:?}", c.fake.calls());
        assert_eq!(whole_gets_of(&c.fake, b), 0, "no whole blob to list rootfs/");
    }
    let lazy_tree = tree(&c, &root(&lazy.manifest));
    for b in &lazy.blobs {
        assert_eq!(whole_gets_of(&c.fake, b), 0, "no whole blob to read every file: {:?}", c.fake.calls());
    }
    // Read whole, the tar shows the TOC's own entry at the root, as umoci does; nothing else
    // differs.
    let mut whole_tree = tree(&c, &root(&whole.manifest));
    whole_tree.retain(|(p, _)| p != "stargz.index.json");
    for (p, w) in whole_tree.iter_mut() {
        if p.is_empty() {
            *w = w.replace("\"stargz.index.json\", ", "");
        }
    }
    assert_eq!(lazy_tree, whole_tree, "the TOC's tree is the tar's");
    assert!(lazy_tree.iter().any(|(p, w)| p == "usr/big.bin" && w.contains(&sha256(&big()).to_string())));
    assert!(lazy_tree.iter().any(|(p, w)| p == "top/setuid" && w.contains("mode 4755")), "{lazy_tree:?}");
    assert!(lazy_tree.iter().any(|(p, w)| p == "bin/sh" && w.contains("nlink 2")), "{lazy_tree:?}");
}

#[test]
fn a_file_costs_the_chunks_it_touches_and_a_warm_read_costs_nothing() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let path = format!("r/manifests/{}/rootfs/usr/big.bin", img.manifest);
    assert_eq!(c.cat(&path).expect("cat"), big());
    let chunks = 300_000usize.div_ceil(64 << 10);
    // The tail (footer and TOC: this layer's TOC fits its last 64 KiB) plus one per chunk.
    assert_eq!(ranges_of(&c.fake, &img.blobs[0]), 1 + chunks, "{:?}", c.fake.calls());
    let after = c.fake.calls().len();
    assert_eq!(c.cat(&path).expect("cat again"), big());
    assert_eq!(c.fake.calls().len(), after, "a warm read asks nothing: {:?}", &c.fake.calls()[after..]);
    assert_eq!(
        c.fake.gets_of(&img.blobs[1]) + c.fake.gets_of(&img.blobs[2]),
        ranges_of(&c.fake, &img.blobs[1]) + ranges_of(&c.fake, &img.blobs[2])
    );
    // The status shows the layer, read lazily, with what it cost.
    let status = String::from_utf8(c.cat(".regfs/status.json").expect("status")).expect("utf-8");
    assert!(status.contains("\"lazy_layers\"") && status.contains(&img.blobs[0].to_string()), "{status}");
    assert!(status.contains("\"chunks_verified\": 5"), "{status}");
}

#[test]
fn a_chunk_that_does_not_match_its_digest_is_eio_and_its_neighbours_are_served() {
    let c = Core::new(Faulty::new(Fake::default()));
    let mut built = built();
    let tamper = Tamper { flip_chunk: Some(("usr/big.bin".into(), 2)), ..Tamper::default() };
    built[0] = estargz::estargz_tampered(&layers()[0], &opts(), &tamper).expect("tampered");
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let err = c.cat(&format!("{root}/usr/big.bin")).map(|b| b.len()).expect_err("a chunk that lies");
    assert!(matches!(err, regfs::error::Error::DigestMismatch { .. }), "{err}");
    assert_eq!(c.cat(&format!("{root}/bin/sh")).expect("another file of the layer"), b"#!/bin/sh\n");
    // The first two chunks were good, and reading them alone still works.
    let fh = c.fs.open_file(c.walk(&format!("{root}/usr/big.bin")).expect("walk").ino).expect("open").fh;
    assert_eq!(c.fs.read(fh, 0, 4096).expect("chunk 0"), big()[..4096]);
    assert!(c.fs.read(fh, 2 * (64 << 10) + 10, 4096).is_err(), "chunk 2 is never served");
    c.fs.release(fh);
}

#[test]
fn a_toc_that_is_not_the_one_the_manifest_names_is_eio_for_that_layer() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let other = sha256(b"another TOC").to_string();
    let img = put(&c.fake, "r", "v1", &built, &|i, a| {
        if i == 0 {
            a.insert(estargz::TOC_DIGEST.into(), other.clone().into());
        }
    });
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert!(c.ls(&root).is_err(), "the base layer's TOC is refused: the merged root needs it");
    assert_eq!(c.cat(&format!("{root}/top/only-here.txt")).expect("a top layer file"), b"only here\n");
    assert_eq!(
        whole_gets_of(&c.fake, &img.blobs[0]),
        0,
        "a refused TOC is no reason to serve the layer by another proof"
    );
}

#[test]
fn footers_and_offsets_that_point_outside_are_refused() {
    for (what, tamper) in [
        ("footer past the blob", Tamper { footer_offset: Some(1 << 40), ..Tamper::default() }),
        ("footer at the footer", Tamper { footer_offset: Some(u64::MAX >> 8), ..Tamper::default() }),
    ] {
        let c = Core::new(Faulty::new(Fake::default()));
        let mut built = built();
        built[2] = estargz::estargz_tampered(&layers()[2], &opts(), &tamper).expect("tampered");
        let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
        assert!(c.cat(&format!("r/manifests/{}/rootfs/top/only-here.txt", img.manifest)).is_err(), "{what}");
    }
    let c = Core::new(Faulty::new(Fake::default()));
    let mut built = built();
    built[2] = estargz::estargz_edited(&layers()[2], &opts(), |toc| {
        for e in toc["entries"].as_array_mut().expect("entries") {
            if e["name"] == "top/only-here.txt" {
                e["offset"] = serde_json::json!(1u64 << 40);
            }
        }
    })
    .expect("edited");
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    assert!(
        c.cat(&format!("r/manifests/{}/rootfs/top/only-here.txt", img.manifest)).is_err(),
        "an offset past the blob"
    );
}

#[test]
fn a_layer_naming_two_tocs_is_refused() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &|i, a| {
        if i == 2 {
            a.insert("io.github.containers.zstd-chunked.manifest-checksum".into(), sha256(b"x").to_string().into());
        }
    });
    assert!(c.cat(&format!("r/manifests/{}/rootfs/top/only-here.txt", img.manifest)).is_err());
}

#[test]
fn a_registry_that_ignores_range_gets_the_layer_read_whole_and_verified() {
    let fake = Faulty::new(Fake::default());
    fake.ignore_range();
    let c = Core::new(fake);
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/usr/big.bin")).expect("cat"), big());
    assert_eq!(
        c.ls(&root).expect("ls"),
        ["bin", "etc", "opt", "stargz.index.json", "top", "usr"],
        "the tar's own view"
    );
    // One range asked (answered whole), then the blob read whole, once.
    assert!(whole_gets_of(&c.fake, &img.blobs[0]) >= 1);
    assert!(ranges_of(&c.fake, &img.blobs[0]) <= 1, "{:?}", c.fake.calls());
}

#[test]
fn lazy_off_reads_every_layer_whole() {
    let mut config = regfs::fs::FsConfig::default();
    config.views.lazy.enabled = false;
    let c = Builder::over(Arc::new(Faulty::new(Fake::default()))).fs_config(config).build();
    let built = built();
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    assert_eq!(c.cat(&format!("r/manifests/{}/rootfs/top/only-here.txt", img.manifest)).expect("cat"), b"only here\n");
    assert_eq!(ranges_of(&c.fake, &img.blobs[2]), 0, "{:?}", c.fake.calls());
}

/// A TOC whose entries disagree with the tar it sits in, as `edit` makes it, in layer 0.
fn lying(edit: impl FnOnce(&mut serde_json::Value)) -> (Core, Image) {
    let c = Core::new(Faulty::new(Fake::default()));
    let mut built = built();
    built[0] = estargz::estargz_edited(&layers()[0], &opts(), edit).expect("edited");
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    (c, img)
}

fn entry_of<'a>(toc: &'a mut serde_json::Value, name: &str) -> &'a mut serde_json::Value {
    let entries = toc["entries"].as_array_mut().expect("entries");
    entries.iter_mut().find(|e| e["name"] == name).expect("the entry")
}

#[test]
fn a_toc_that_disagrees_with_its_tar_poisons_the_layer_once_the_tar_is_verified() {
    let (c, img) = lying(|toc| {
        entry_of(toc, "bin/sh")["mode"] = serde_json::json!(0o104755);
    });
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    // Read lazily, the TOC is all there is: its word is served (the first tier).
    assert_eq!(c.walk(&format!("{root}/bin/sh")).expect("walk").mode, 0o4755);
    assert_eq!(c.cat(&format!("{root}/bin/sh")).expect("cat"), b"#!/bin/sh\n");
    // The layer's tar, verified by its diff_id (the second tier), tells otherwise.
    c.cat(&format!("r/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar, verified by its diff_id");
    let err = c.cat(&format!("{root}/usr/big.bin")).map(|b| b.len()).expect_err("poisoned");
    assert!(err.to_string().contains("disagrees with its TOC"), "{err}");
    let status = String::from_utf8(c.cat(".regfs/status").expect("status")).expect("utf-8");
    assert!(status.contains("POISONED") && status.contains("bin/sh"), "{status}");
}

#[test]
fn a_toc_pointing_a_file_at_another_file_s_bytes_is_refused_or_caught_by_the_tar() {
    let b = b"bbbbbbbbbbbbbbbbbbbb\n".to_vec();
    let entries =
        vec![tricky::dir("etc"), bin("etc/passwd", b"aaaaaaaaaaaaaaaaaaaa\n".to_vec()), bin("etc/other", b.clone())];
    let image = |edit: &dyn Fn(&mut serde_json::Value)| {
        let c = Core::new(Faulty::new(Fake::default()));
        let built = vec![estargz::estargz_edited(&entries, &opts(), edit).expect("edited")];
        let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
        (c, img)
    };
    let moved = ["offset", "chunkDigest", "digest"];
    // etc/passwd's entry takes etc/other's member: two chunks of one member, overlapping.
    let (c, img) = image(&|toc| {
        let other = entry_of(toc, "etc/other").clone();
        let passwd = entry_of(toc, "etc/passwd");
        for k in moved {
            passwd[k] = other[k].clone();
        }
    });
    assert!(
        c.cat(&format!("r/manifests/{}/rootfs/etc/passwd", img.manifest)).is_err(),
        "overlapping chunks refuse the TOC"
    );
    // The two swap members: every chunk verifies, nothing overlaps; only the tar can tell.
    let (c, img) = image(&|toc| {
        let (p, o) = (entry_of(toc, "etc/passwd").clone(), entry_of(toc, "etc/other").clone());
        for k in moved {
            entry_of(toc, "etc/passwd")[k] = o[k].clone();
            entry_of(toc, "etc/other")[k] = p[k].clone();
        }
    });
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(
        c.cat(&format!("{root}/etc/passwd")).expect("what the TOC says"),
        b,
        "the first tier serves the TOC's word"
    );
    c.cat(&format!("r/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar");
    let err = c.cat(&format!("{root}/etc/other")).map(|b| b.len()).expect_err("poisoned");
    assert!(err.to_string().contains("disagrees with its TOC"), "{err}");
}

#[test]
fn an_honest_toc_checked_against_its_tar_keeps_serving() {
    let c = Core::new(Faulty::new(Fake::default()));
    let img = put(&c.fake, "r", "v1", &built(), &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/bin/sh")).expect("cat"), b"#!/bin/sh\n");
    for n in 0..3 {
        c.cat(&format!("r/manifests/{}/layers/{n}.tar", img.manifest)).expect("layers/n.tar");
    }
    assert_eq!(c.cat(&format!("{root}/usr/big.bin")).expect("cat after the check"), big());
    let status = String::from_utf8(c.cat(".regfs/status").expect("status")).expect("utf-8");
    assert!(!status.contains("POISONED"), "{status}");
}

#[test]
fn lazy_verify_fetches_a_layer_read_lazily_whole_and_poisons_a_lying_toc_unasked() {
    let mut config = regfs::fs::FsConfig::default();
    config.views.lazy.verify_whole = true;
    let c = Builder::over(Arc::new(Faulty::new(Fake::default()))).fs_config(config).build();
    let mut built = built();
    built[0] = estargz::estargz_edited(&layers()[0], &opts(), |toc| {
        entry_of(toc, "bin/sh")["uid"] = serde_json::json!(4242);
    })
    .expect("edited");
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let sh = format!("r/manifests/{}/rootfs/bin/sh", img.manifest);
    // The first read builds the layer from its TOC and starts the whole fetch, which may
    // already have poisoned the layer by the time a second read comes.
    if let Ok(first) = c.cat(&sh) {
        assert_eq!(first, b"#!/bin/sh\n", "what the TOC says, while it is not yet checked");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.cat(&sh).is_ok() {
        assert!(std::time::Instant::now() < deadline, "never poisoned: {:?}", c.fake.calls());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(whole_gets_of(&c.fake, &img.blobs[0]) >= 1, "the layer was fetched whole");
}

// zstd:chunked: the same reader over its other TOC and frames.

fn zstd_opts() -> zstd_chunked::Options {
    zstd_chunked::Options { chunk_size: 64 << 10, ..zstd_chunked::Options::default() }
}

fn holey() -> Vec<u8> {
    let mut holey = big();
    holey[100_000..200_000].fill(0);
    holey
}

/// What makes the first layer instead of the plain writer.
type FirstLayer<'a> = &'a dyn Fn(&[E]) -> zstd_chunked::Built;

fn zstd_layers(edit_first: Option<FirstLayer<'_>>) -> Vec<zstd_chunked::Built> {
    let mut ls = layers();
    // A file with a hole: a run of zeros is a chunk of its own, which costs no request.
    ls[1].push(bin("opt/holey", holey()));
    ls.iter()
        .enumerate()
        .map(|(i, l)| match (i, edit_first) {
            (0, Some(f)) => f(l),
            _ => zstd_chunked::zstd_chunked(l, &zstd_opts()).expect("a zstd:chunked layer"),
        })
        .collect()
}

fn zstd_put(
    fake: &Fake,
    tag: &str,
    built: &[zstd_chunked::Built],
    edit: &dyn Fn(usize, &mut serde_json::Map<String, serde_json::Value>),
) -> Image {
    let layers: Vec<Layer> =
        built.iter().map(|b| Layer { blob: &b.blob, diff_id: &b.diff_id, annotations: &b.annotations }).collect();
    put_layers(fake, "z", tag, &layers, regfs::testkit::core::ZSTD, edit)
}

#[test]
fn a_zstd_chunked_rootfs_is_the_same_tree_as_its_layers_read_whole() {
    let c = Core::new(Faulty::new(Fake::default()));
    let built = zstd_layers(None);
    let lazy = zstd_put(&c.fake, "lazy", &built, &|_, _| {});
    let whole = zstd_put(&c.fake, "whole", &built, &|_, a| a.clear());
    let root = |m: &Digest| format!("z/manifests/{m}/rootfs");
    let lazy_tree = tree(&c, &root(&lazy.manifest));
    for b in &lazy.blobs {
        assert_eq!(whole_gets_of(&c.fake, b), 0, "no whole blob: {:?}", c.fake.calls());
        assert!(ranges_of(&c.fake, b) >= 1);
    }
    assert_eq!(lazy_tree, tree(&c, &root(&whole.manifest)), "the TOC's tree is the tar's");
    assert!(
        lazy_tree.iter().any(|(p, w)| p == "opt/holey" && w.contains(&sha256(&holey()).to_string())),
        "{lazy_tree:?}"
    );
}

#[test]
fn a_zstd_chunked_chunk_that_lies_is_eio_and_a_toc_whose_checksum_is_not_the_manifest_s_is_refused() {
    let c = Core::new(Faulty::new(Fake::default()));
    let tamper = zstd_chunked::Tamper { flip_chunk: Some(("usr/big.bin".into(), 1)), ..Default::default() };
    let flip = |l: &[E]| zstd_chunked::zstd_chunked_tampered(l, &zstd_opts(), &tamper).expect("tampered");
    let built = zstd_layers(Some(&flip));
    let img = zstd_put(&c.fake, "v1", &built, &|_, _| {});
    let root = format!("z/manifests/{}/rootfs", img.manifest);
    assert!(matches!(c.cat(&format!("{root}/usr/big.bin")), Err(regfs::error::Error::DigestMismatch { .. })));
    assert_eq!(c.cat(&format!("{root}/bin/sh")).expect("another file"), b"#!/bin/sh\n");
    // The checksum annotation of another TOC: the layer is refused, nothing read whole.
    let c = Core::new(Faulty::new(Fake::default()));
    let img = zstd_put(&c.fake, "v1", &zstd_layers(None), &|i, a| {
        if i == 2 {
            a.insert(zstd_chunked::MANIFEST_CHECKSUM.into(), sha256(b"another").to_string().into());
        }
    });
    assert!(c.cat(&format!("z/manifests/{}/rootfs/top/only-here.txt", img.manifest)).is_err());
    assert_eq!(whole_gets_of(&c.fake, &img.blobs[2]), 0);
}

#[test]
fn the_files_before_a_prefetch_landmark_are_fetched_in_one_range_and_then_cost_nothing() {
    let c = Core::new(Faulty::new(Fake::default()));
    let entries = vec![
        tricky::dir("app"),
        bin("app/first", big()),
        tricky::file("app/second", "second\n"),
        bin("app/later", b"not prioritised\n".to_vec()),
    ];
    // The landmark after the first three entries: app/, app/first and app/second come first.
    let built = vec![estargz::estargz(&entries, &Options { prefetch_landmark: Some(3), ..opts() }).expect("eStargz")];
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.ls(&root).expect("ls"), ["app"], "the landmark is hidden");
    // One range for the tail, then one for the prioritised files, on a thread of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let verified = |c: &Core| String::from_utf8(c.cat(".regfs/status.json").expect("status")).expect("utf-8");
    // app/first's 5 chunks and app/second's one.
    while !verified(&c).contains("\"chunks_verified\": 6") {
        assert!(std::time::Instant::now() < deadline, "no prefetch: {:?} {}", c.fake.calls(), verified(&c));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(ranges_of(&c.fake, &img.blobs[0]), 2, "the tail, then the prioritised files: {:?}", c.fake.calls());
    let asked = c.fake.calls().len();
    assert_eq!(c.cat(&format!("{root}/app/first")).expect("cat"), big());
    assert_eq!(c.cat(&format!("{root}/app/second")).expect("cat"), b"second\n");
    assert_eq!(c.fake.calls().len(), asked, "prioritised files cost nothing more: {:?}", &c.fake.calls()[asked..]);
    assert_eq!(c.cat(&format!("{root}/app/later")).expect("cat"), b"not prioritised\n");
    assert_eq!(c.fake.calls().len(), asked + 1, "a later file costs its chunk");
}

/// A core on cache directory `dir` once the last one on it has let go of it (threads of its own
/// may hold it a moment after it is dropped: the cache directory is one process's at a time).
fn reopen(fake: &Arc<Faulty<Fake>>, dir: &std::path::Path) -> Core {
    for _ in 0..400 {
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Builder::over(Arc::clone(fake)).cache_at(dir).build()
        }));
        if let Ok(c) = built {
            return c;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the cache directory stayed held");
}

#[test]
fn verified_chunks_are_kept_in_the_cache_directory_and_read_back_after_a_remount() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let img = put(&fake, "r", "v1", &built(), &|_, _| {});
    let path = format!("r/manifests/{}/rootfs/usr/big.bin", img.manifest);
    {
        let c = Builder::over(Arc::clone(&fake)).cache_at(cache.path()).build();
        assert_eq!(c.cat(&path).expect("cold"), big());
    }
    let cold = ranges_of(&fake, &img.blobs[0]);
    let c = reopen(&fake, cache.path());
    assert_eq!(c.cat(&path).expect("after a remount"), big());
    assert_eq!(
        ranges_of(&fake, &img.blobs[0]) - cold,
        1,
        "only the tail again (its TOC), no chunk: {:?}",
        fake.calls()
    );
    // A chunk altered on disk between runs is hashed again before use, found wrong, and fetched.
    let dir = cache.path().join("chunks/sha256");
    let victim = std::fs::read_dir(&dir).expect("chunks/").next().expect("a chunk").expect("entry").path();
    drop(c);
    let mut bytes = std::fs::read(&victim).expect("chunk");
    bytes[0] ^= 1;
    std::fs::write(&victim, bytes).expect("alter");
    let before = ranges_of(&fake, &img.blobs[0]);
    let c = reopen(&fake, cache.path());
    assert_eq!(c.cat(&path).expect("after the alteration"), big());
    assert_eq!(ranges_of(&fake, &img.blobs[0]) - before, 2, "the tail and the altered chunk: {:?}", fake.calls());
}

#[test]
fn a_toc_naming_a_kept_chunk_s_digest_with_a_shorter_size_is_not_served_a_prefix() {
    let c = Core::new(Faulty::new(Fake::default()));
    let entries = vec![tricky::dir("etc"), bin("etc/f", b"0123456789 the whole file".to_vec())];
    let honest = vec![estargz::estargz(&entries, &opts()).expect("eStargz")];
    let a = put(&c.fake, "r", "honest", &honest, &|_, _| {});
    assert_eq!(
        c.cat(&format!("r/manifests/{}/rootfs/etc/f", a.manifest)).expect("honest"),
        b"0123456789 the whole file"
    );
    let short = vec![
        estargz::estargz_edited(&entries, &opts(), |toc| {
            entry_of(toc, "etc/f")["size"] = serde_json::json!(10);
        })
        .expect("edited"),
    ];
    let b = put(&c.fake, "r", "short", &short, &|_, _| {});
    let got = c.cat(&format!("r/manifests/{}/rootfs/etc/f", b.manifest));
    assert!(got.is_err(), "a prefix of a chunk is not the chunk its digest names: {got:?}");
}

// Holes found by the adversary (advlazy).

#[test]
fn a_chunk_of_data_the_toc_calls_zeros_poisons_the_layer_once_the_tar_is_verified() {
    let c = Core::new(Faulty::new(Fake::default()));
    // usr/big.bin's second chunk, data in the tar, called a hole: served as zeros, whatever its
    // digest says (a hole is never fetched). Its digest is still the tar's bytes'.
    let calls_it_zeros = |l: &[E]| {
        zstd_chunked::zstd_chunked_edited(l, &zstd_opts(), |toc| {
            let entries = toc["entries"].as_array_mut().expect("entries");
            let second = entries
                .iter_mut()
                .find(|e| e["type"] == "chunk" && e["name"] == "usr/big.bin" && e["chunkOffset"] == 65536)
                .expect("the second chunk");
            second["chunkType"] = serde_json::json!("zeros");
        })
        .expect("edited")
    };
    let img = zstd_put(&c.fake, "v1", &zstd_layers(Some(&calls_it_zeros)), &|_, _| {});
    let big_path = format!("z/manifests/{}/rootfs/usr/big.bin", img.manifest);
    let served = c.cat(&big_path).expect("the first tier serves the TOC's word");
    assert_eq!(served[65536..2 * 65536], [0u8; 65536], "zeros where the tar has data");
    c.cat(&format!("z/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar, verified by its diff_id");
    let err = c.cat(&big_path).map(|b| b.len()).expect_err("zeros the tar does not hold: poisoned");
    assert!(err.to_string().contains("disagrees with its TOC"), "{err}");
}

#[test]
fn a_hard_link_to_an_original_whose_name_was_replaced_is_checked_against_the_tar_too() {
    // `b` links to the first `a`, whose name the second `a` takes: `b` is the only way to the
    // first `a`, a hidden original in both indexes.
    let entries = vec![tricky::file("a", "original\n"), tricky::hardlink("b", "a"), tricky::file("a", "replaced\n")];
    let zeros = sha256(&[0u8; 9]).to_string();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: [(&str, Edit); 2] = [
        ("its mode", Box::new(|toc| entry_of(toc, "a")["mode"] = serde_json::json!(0o104755))),
        (
            "its bytes",
            // 9 bytes of the padding after its data, in its own member: no chunk overlaps.
            Box::new(move |toc| {
                let a = entry_of(toc, "a");
                a["innerOffset"] = serde_json::json!(9);
                a["chunkDigest"] = serde_json::json!(zeros);
                a["digest"] = serde_json::json!(zeros);
            }),
        ),
    ];
    for (what, edit) in edits {
        let c = Core::new(Faulty::new(Fake::default()));
        let built = vec![estargz::estargz_edited(&entries, &opts(), edit).expect("edited")];
        let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
        let b = format!("r/manifests/{}/rootfs/b", img.manifest);
        let first = (c.walk(&b).expect("walk").mode, c.cat(&b).expect("the first tier serves the TOC's word"));
        assert_ne!(first, (0o644, b"original\n".to_vec()), "{what}: the TOC's lie is served at first");
        c.cat(&format!("r/manifests/{}/layers/0.tar", img.manifest)).expect("layers/0.tar");
        let err = c.cat(&b).map(|b| b.len()).expect_err("poisoned");
        assert!(err.to_string().contains("disagrees with its TOC"), "{what}: {err}");
    }
}

#[test]
fn a_layer_read_lazily_keeps_its_toc_index_when_the_registry_stops_honouring_range() {
    let mut config = regfs::fs::FsConfig::default();
    // One lazy layer kept: the merge of three rebuilds the others from their TOCs.
    config.views.lazy.layers = 1;
    let c = Builder::over(Arc::new(Faulty::new(Fake::default()))).fs_config(config).build();
    let img = put(&c.fake, "r", "v1", &built(), &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let listed = c.ls(&root).expect("ls");
    assert_eq!(listed, ["bin", "etc", "opt", "top", "usr"]);
    let sh = c.walk(&format!("{root}/bin/sh")).expect("walk");
    c.fake.ignore_range();
    // Its entries are inode numbers: the tar's index must never stand in for the TOC's now.
    if let Ok(again) = c.ls(&root) {
        assert_eq!(again, listed, "the same tree, or none: {:?}", c.fake.calls());
    }
    if let Ok(again) = c.walk(&format!("{root}/bin/sh")) {
        assert_eq!((again.ino, again.mode, again.size), (sh.ino, sh.mode, sh.size));
    }
    if let Ok(bytes) = c.fs.open_file(sh.ino).and_then(|h| {
        let got = c.fs.read(h.fh, 0, 4096);
        c.fs.release(h.fh);
        got
    }) {
        assert_eq!(bytes, b"#!/bin/sh\n", "bin/sh's inode is still bin/sh");
    }
}

#[test]
fn an_honest_zstd_chunked_toc_with_holes_checked_against_its_tar_keeps_serving() {
    let c = Core::new(Faulty::new(Fake::default()));
    let img = zstd_put(&c.fake, "v1", &zstd_layers(None), &|_, _| {});
    for n in 0..3 {
        c.cat(&format!("z/manifests/{}/layers/{n}.tar", img.manifest)).expect("layers/n.tar");
    }
    let root = format!("z/manifests/{}/rootfs", img.manifest);
    assert_eq!(c.cat(&format!("{root}/opt/holey")).expect("a file with a hole, after the check"), holey());
    assert_eq!(c.cat(&format!("{root}/bin/ash")).expect("a hard link, after the check"), b"#!/bin/sh\n");
}

#[test]
fn a_layer_made_again_from_its_toc_does_not_fetch_its_prioritised_files_again() {
    let mut config = regfs::fs::FsConfig::default();
    config.views.lazy.layers = 1;
    let c = Builder::over(Arc::new(Faulty::new(Fake::default()))).fs_config(config).build();
    let entries = vec![tricky::dir("app"), bin("app/first", big()), bin("app/later", b"later\n".to_vec())];
    let built = vec![estargz::estargz(&entries, &Options { prefetch_landmark: Some(2), ..opts() }).expect("eStargz")];
    let img = put(&c.fake, "r", "v1", &built, &|_, _| {});
    let other = put(&c.fake, "o", "v1", &self::built()[2..], &|_, _| {});
    let root = format!("r/manifests/{}/rootfs", img.manifest);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    c.ls(&root).expect("ls");
    let verified = |c: &Core| String::from_utf8(c.cat(".regfs/status.json").expect("status")).expect("utf-8");
    while !verified(&c).contains("\"chunks_verified\": 5") {
        assert!(std::time::Instant::now() < deadline, "no prefetch: {:?}", c.fake.calls());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let before = ranges_of(&c.fake, &img.blobs[0]);
    // Another layer takes its place; then it is made again from its TOC.
    c.ls(&format!("o/manifests/{}/rootfs", other.manifest)).expect("ls");
    assert_eq!(c.cat(&format!("{root}/app/first")).expect("cat"), big());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        ranges_of(&c.fake, &img.blobs[0]) <= before + 1,
        "the TOC again, not the prioritised files' range: {:?}",
        c.fake.calls()
    );
}
