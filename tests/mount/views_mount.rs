//! Decoded layers (`layers/<n>.tar`) through a real mount of a real registry: what `cat`, `cp`,
//! `tar -tvf` and `dd skip=` read from a layer regfs has never decoded (the kernel first saw its
//! size as 0) equals `gzip -dc` / `zstd -dc` of the blob as the registry stores it, by default (no
//! open) and with `--open`, with and without passthrough; a layer whose config names a wrong
//! diff_id is EIO and leaves nothing.

use std::path::Path;
use std::process::Command;

use crate::common::{Mount, images, sh_in, shared, stdout};
use crate::common::{s, sha256_of};

/// The blob as the registry stores it, decoded by the reference tool.
fn reference_decode(blob: &Path, media_type: &str) -> Vec<u8> {
    let tool = if media_type.ends_with("zstd") { "zstd" } else { "gzip" };
    let o = Command::new(tool).args(["-dc"]).arg(blob).output().expect(tool);
    assert!(o.status.success(), "{tool} -dc {}: {}", blob.display(), String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// Names in a directory of the cache (empty if it does not exist).
fn held(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn cat_cp_tar_and_dd_at_an_offset_of_a_never_read_layer_match_gzip_dc() {
    let sh = shared();
    let img = images(&sh.fixtures, "oci-manifest").into_iter().find(|i| i["repo"] == "demo/oci").expect("demo/oci");
    let work = tempfile::tempdir().expect("work");
    // (n, decoded as the reference tools decode the stored blob), for the gzip and zstd layers.
    let mut layers = Vec::new();
    for (n, l) in img["layers"].as_array().expect("layers").iter().enumerate() {
        let mt = s(&l["media_type"]);
        if mt.ends_with("gzip") || mt.ends_with("zstd") {
            let decoded = reference_decode(&sh.registry.blob_path(s(&l["digest"])), mt);
            let file = work.path().join(format!("{n}.reference.tar"));
            std::fs::write(&file, &decoded).expect("reference");
            layers.push((n, decoded, file));
        }
    }
    assert_eq!(layers.len(), 2, "demo/oci has a gzip and a zstd layer");
    let ops = ["cat", "cp", "tar", "dd"];
    for args in [&["--open"][..], &["--open", "--no-passthrough"][..], &[][..]] {
        for op in ops {
            // A fresh mount and cache for each: every layer is one regfs has never decoded.
            let m = Mount::start(&sh.registry.url, args);
            let dir = m.path("demo/oci/tags/v1/layers");
            let listing = sh_in(&dir, "ls -l");
            assert!(listing.status.success(), "ls -l: {}", String::from_utf8_lossy(&listing.stderr));
            for (n, decoded, reference) in &layers {
                let what = format!("{op} of {n}.tar {args:?}");
                let size = std::fs::metadata(dir.join(format!("{n}.tar"))).expect("stat").len();
                assert_eq!(size, 0, "{what}: the size before the layer is decoded");
                let out = match op {
                    "cat" => sh_in(&dir, &format!("cat {n}.tar | sha256sum")),
                    "cp" => {
                        let to = work.path().join(format!("{n}.copy"));
                        let o = sh_in(&dir, &format!("cp {n}.tar {} && sha256sum < {}", to.display(), to.display()));
                        let _ = std::fs::remove_file(&to);
                        o
                    }
                    "tar" => sh_in(&dir, &format!("tar -tvf {n}.tar")),
                    _ => sh_in(&dir, &format!("dd if={n}.tar bs=512 skip=3 count=2 status=none | sha256sum")),
                };
                assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
                let expected = match op {
                    "tar" => stdout(&sh_in(work.path(), &format!("tar -tvf {}", reference.display()))),
                    "dd" => format!("{}  -", sha256_of(&decoded[1536..2560]).trim_start_matches("sha256:")),
                    _ => format!("{}  -", sha256_of(decoded).trim_start_matches("sha256:")),
                };
                assert_eq!(stdout(&out), expected, "{what}");
                assert!(!expected.is_empty());
                let size = std::fs::metadata(dir.join(format!("{n}.tar"))).expect("stat").len();
                assert_eq!(size, decoded.len() as u64, "{what}: the size once decoded");
            }
        }
    }
}

#[test]
fn a_corrupt_diff_id_gives_eio_for_the_tar_view_and_caches_nothing() {
    let sh = shared();
    let case = &sh.fixtures["diffid"];
    let m = Mount::start(&sh.registry.url, &[]);
    let dir = m.path(&format!("{}/tags/{}/layers", s(&case["repo"]), s(&case["tag"])));
    let e = std::fs::read(dir.join("0.tar")).expect_err("a layer whose diff_id is wrong");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let e = std::fs::read(dir.join("0.tar")).expect_err("and again");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    for sub in ["decoded/sha256", "decoded-from/sha256", "index/sha256", "tmp"] {
        assert!(held(&m.cache.join(sub)).is_empty(), "{sub}: {:?}", held(&m.cache.join(sub)));
    }
    // The blob itself is valid by its digest: it reads, and it stays cached.
    let blob = std::fs::read(dir.join("0.tar.gz")).expect("the blob");
    assert_eq!(sha256_of(&blob), s(&case["layer"]));
    assert!(held(&m.cache.join("blobs/sha256")).contains(&s(&case["layer"]).trim_start_matches("sha256:").to_string()));
    let log = m.log();
    let line = log.lines().find(|l| l.contains("rootfs.diff_ids")).unwrap_or_else(|| panic!("no log line:\n{log}"));
    for part in [s(&case["manifest"]), s(&case["layer"]), s(&case["diff_id"]), s(&case["actual"])] {
        assert!(line.contains(part), "{line} does not name {part}");
    }
}
