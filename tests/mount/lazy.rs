//! Layers read by chunks (eStargz, zstd:chunked) and by spans (SOCI v2) through a real mount over the reference
//! registry: `rootfs/` of each lazy image compared file by file with `umoci unpack` of the same
//! image (skopeo re-compresses zstd:chunked to gzip for umoci 0.4), no whole layer fetched to do
//! so, and every tampered variant of the fixtures (`testkit::fixtures::lazy`) ending in `EIO`
//! for what it touches.

use std::path::Path;

use crate::common::{Mount, shared, status_json};
use crate::rootfs::{check, umoci_tree};

/// The names a TOC hides that a tar (so umoci) shows, at the root.
const HIDDEN: [&str; 3] = ["stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"];

fn errno(r: std::io::Result<Vec<u8>>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn lazy_images_match_umoci_file_by_file_without_a_whole_layer() {
    let s = shared();
    let m = Mount::start(&s.registry.url, &[]);
    let mut failures = Vec::new();
    let cases = [
        ("lazy/estargz", "oci"),
        ("lazy/estargz", "docker"),
        ("lazy/estargz", "index"),
        ("lazy/zstdchunked", "oci"),
        ("lazy/zstdchunked", "index"),
    ];
    for (repo, tag) in cases {
        // The index's linux/amd64 entry is the `oci` manifest (skopeo would not know to
        // re-compress the zstd layers an index names, for umoci 0.4).
        let oracle_tag = if tag == "index" { "oci" } else { tag };
        let (umoci, how) = umoci_tree(&s.registry.url, repo, oracle_tag);
        let mut want = match umoci {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{repo}:{tag}: umoci: {e}"));
                continue;
            }
        };
        for h in HIDDEN {
            want.remove(h);
        }
        // An index shows its platforms; `current` is the one this machine runs, as skopeo picks.
        let rootfs = if tag == "index" {
            format!("{repo}/tags/{tag}/current/rootfs")
        } else {
            format!("{repo}/tags/{tag}/rootfs")
        };
        failures.extend(check(&format!("{repo}:{tag}"), &m.path(&rootfs), &want, &how));
    }
    let st = status_json(&m);
    let r = &st["requests"];
    assert!(
        failures.is_empty(),
        "{} differences:\n{}\n--- regfs log:\n{}",
        failures.len(),
        failures.join("\n"),
        m.log()
    );
    assert_eq!(r["blob_gets"], r["blob_ranges"], "every blob GET was a range: no config, no whole layer: {st}");
    let lazy = st["lazy_layers"].as_array().expect("lazy_layers");
    assert!(lazy.len() >= 6, "the layers read lazily: {st}");
    assert!(lazy.iter().all(|l| l["poisoned"].is_null()), "{st}");
    for l in lazy {
        let (fetched, size) = (l["fetched_bytes"].as_u64().unwrap_or(0), l["size"].as_u64().unwrap_or(0));
        assert!(fetched <= size + (64 << 10), "a layer cost at most itself and its tail once more: {l}");
    }
}

#[test]
fn tampered_lazy_images_end_in_eio_for_what_they_touch() {
    let s = shared();
    let m = Mount::start(&s.registry.url, &[]);
    let read = |repo: &str, tag: &str, path: &str| std::fs::read(m.path(&format!("{repo}/tags/{tag}/rootfs/{path}")));
    // `position-outside` is `control`'s very blob with a position that lies: its TOC cannot be
    // found (EIO), and that failure is not `control`'s (read right after, within the time a
    // refused TOC is held).
    let outside = read("lazy/zstdchunked", "position-outside", "tamper/plain.txt");
    assert_eq!(errno(outside), Some(libc::EIO), "position-outside");
    for repo in ["lazy/estargz", "lazy/zstdchunked"] {
        assert_eq!(
            read(repo, "control", "tamper/plain.txt").map(|b| !b.is_empty()).ok(),
            Some(true),
            "{repo}: control"
        );
        assert_eq!(errno(read(repo, "bad-chunk", "tamper/chunked.bin")), Some(libc::EIO), "{repo}: bad-chunk");
        assert!(read(repo, "bad-chunk", "tamper/plain.txt").is_ok(), "{repo}: bad-chunk's other files are served");
        for tag in ["bad-toc-digest", "offset-past-blob", "footer-outside", "two-tocs", "overlap"] {
            let got = read(repo, tag, "tamper/plain.txt");
            if repo == "lazy/zstdchunked" && tag == "footer-outside" {
                // zstd:chunked reads its annotations, never the footer (as containers/storage).
                assert!(got.is_ok(), "{repo}:{tag}: the footer is not read");
                continue;
            }
            assert_eq!(errno(got), Some(libc::EIO), "{repo}:{tag}\n{}", m.log());
        }
        if repo == "lazy/zstdchunked" {
            // regfs does not read the tar-split (it serves files from the TOC's chunks): a
            // tar-split digest that lies changes nothing it serves.
            assert!(read(repo, "bad-tarsplit", "tamper/plain.txt").is_ok(), "{repo}: bad-tarsplit");
        }
        assert!(read(repo, "no-annotation", "tamper/plain.txt").is_ok(), "{repo}: no annotation reads the layer whole");
        // toc-lies: the first tier serves the TOC's word; the layer's tar, once read, poisons it.
        let plain = m.path(&format!("{repo}/tags/toc-lies/rootfs/tamper/plain.txt"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&plain).expect("stat").permissions());
        assert_eq!(mode & 0o7777, 0o4777, "{repo}: the TOC's mode is shown");
        std::fs::read(m.path(&format!("{repo}/tags/toc-lies/layers/2.tar")))
            .expect("layers/2.tar, verified by its diff_id");
        assert_eq!(errno(std::fs::read(&plain)), Some(libc::EIO), "{repo}: poisoned");
    }
    let status = std::fs::read_to_string(m.path(".regfs/status")).expect("status");
    assert!(status.contains("POISONED"), "{status}");
    assert!(Path::new(&m.path("")).exists(), "the mount stays up");
}

/// SOCI v2 (`lazy/soci`): ordinary gzip layers read by spans through the zTOCs the manifest's
/// SOCI index names; `rootfs/` is umoci's file by file, and no layer is fetched whole.
#[test]
fn soci_images_match_umoci_file_by_file_by_spans() {
    let s = shared();
    let m = Mount::start(&s.registry.url, &[]);
    let mut failures = Vec::new();
    for (tag, oracle, rootfs) in [
        ("oci", "oci", "tags/oci/rootfs"),
        ("docker", "docker", "tags/docker/rootfs"),
        ("index", "oci", "tags/index/current/rootfs"),
    ] {
        let (umoci, how) = umoci_tree(&s.registry.url, "lazy/soci", oracle);
        match umoci {
            Ok(want) => failures.extend(check(
                &format!("lazy/soci:{tag}"),
                &m.path(&format!("lazy/soci/{rootfs}")),
                &want,
                &how,
            )),
            Err(e) => failures.push(format!("lazy/soci:{tag}: umoci: {e}")),
        }
    }
    let st = status_json(&m);
    assert!(
        failures.is_empty(),
        "{} differences:\n{}\n--- regfs log:\n{}",
        failures.len(),
        failures.join("\n"),
        m.log()
    );
    let r = &st["requests"];
    let whole = r["blob_gets"].as_u64().unwrap_or(0) - r["blob_ranges"].as_u64().unwrap_or(0);
    assert_eq!(whole, 3, "the three zTOCs are the only whole blobs (no layer, no config): {st}");
    let lazy = st["lazy_layers"].as_array().expect("lazy_layers");
    let soci: Vec<_> = lazy.iter().filter(|l| l["format"] == "soci").collect();
    // Three layers under two SOCI indexes (`oci` and `index` share one; `docker` names its
    // own): six lazy layers, whose spans are shared by zTOC (the same zTOC bytes), so each span
    // is fetched once.
    assert_eq!(soci.len(), 6, "{st}");
    let fetched: u64 = soci.iter().map(|l| l["fetched_bytes"].as_u64().unwrap_or(u64::MAX)).sum();
    let sizes: u64 = soci.iter().map(|l| l["size"].as_u64().unwrap_or(0)).sum();
    assert!(fetched <= sizes / 2, "each span once: {fetched} of {sizes} bytes");
    assert!(soci.iter().all(|l| l["poisoned"].is_null()), "{st}");
}

#[test]
fn tampered_soci_images_end_in_eio_for_what_they_touch() {
    let s = shared();
    let summary = &s.fixtures["lazy"]["soci"];
    assert!(summary["middle_span"].as_u64() < summary["spans"].as_u64().map(|n| n - 1), "{summary}");
    let m = Mount::start(&s.registry.url, &[]);
    let path = |tag: &str, p: &str| m.path(&format!("lazy/soci/tags/{tag}/{p}"));
    let read = |tag: &str, p: &str| std::fs::read(path(tag, &format!("rootfs/{p}")));
    assert_eq!(read("control", "tamper/plain.txt").expect("control"), b"plain\n");
    assert_eq!(errno(read("bad-span", "tamper/chunked.bin")), Some(libc::EIO), "bad-span");
    assert_eq!(read("bad-span", "tamper/plain.txt").expect("another span"), b"plain\n");
    for tag in ["no-index", "no-ztoc"] {
        assert_eq!(read(tag, "tamper/plain.txt").expect(tag), b"plain\n", "{tag}: read whole");
    }
    // The first tier serves the zTOC's word (or fails); the tar, once read, poisons the layer.
    for tag in ["offset-lies", "forged-window"] {
        let first = read(tag, "tamper/plain.txt");
        if tag == "offset-lies" {
            assert_ne!(first.expect("what the zTOC says"), b"plain\n", "{tag}: the zTOC's word");
        }
        std::fs::read(path(tag, "layers/2.tar")).expect("layers/2.tar, verified by its diff_id");
        assert_eq!(errno(read(tag, "tamper/short.txt")), Some(libc::EIO), "{tag}: poisoned\n{}", m.log());
    }
    let status = std::fs::read_to_string(m.path(".regfs/status")).expect("status");
    assert!(status.contains("POISONED") && status.contains("soci"), "{status}");
}
