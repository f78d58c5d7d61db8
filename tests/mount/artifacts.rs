//! Platforms and artifacts through a real mount of the reference registry: the `current` link of
//! an index (`--platform`, default this machine's) and layers named by their title annotation.

use std::path::Path;
use std::process::Command;

use crate::common::s;
use crate::common::{Mount, regfs_bin, sha256sum, shared};

/// `referrers/`, which every manifest directory shows: these tests are about the names
/// platforms and titles add, so listings are compared without it.
const OTHER_TRACKS: [&str; 2] = ["referrers", "signatures"];

/// The sorted listing of `dir`, without the names of [`OTHER_TRACKS`].
fn ls(dir: &Path) -> Vec<String> {
    crate::common::ls(dir).into_iter().filter(|n| !OTHER_TRACKS.contains(&n.as_str())).collect()
}

fn link(path: &Path) -> String {
    std::fs::read_link(path).unwrap_or_else(|e| panic!("readlink {}: {e}", path.display())).to_string_lossy().into()
}

fn enoent(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The link name docker's matcher picks among demo/platforms' entries on this machine.
fn host_choice() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("linux-amd64"),
        "x86" => Some("linux-386"),
        "aarch64" => Some("linux-arm-v6"),
        _ => None,
    }
}

#[test]
fn current_links_to_the_entry_docker_would_pull_here() {
    let sh = shared();
    let fx = &sh.fixtures["platforms"];
    let children = &fx["children"];
    let latest = format!("{}/tags/latest", s(&fx["repo"]));

    // The default: this machine's platform.
    let m = Mount::start(&sh.registry.url, &[]);
    if let Some(chosen) = host_choice() {
        assert_eq!(link(&m.path(&format!("{latest}/current"))), chosen);
        // Through the links as any program follows them: the chosen image's config and files.
        let config = std::fs::read(m.path(&format!("{latest}/current/config.json"))).expect("cat config.json");
        let stored = std::fs::read(sh.registry.blob_path(s(&children[chosen]["config"]))).expect("stored config");
        assert_eq!(config, stored);
        let file = s(&children[chosen]["file"]);
        let shown = std::fs::read(m.path(&format!("{latest}/current/rootfs/{file}"))).expect("cat a rootfs file");
        assert!(!shown.is_empty(), "{file}");
        let listing = ls(&m.path(&format!("{latest}/current/rootfs/regfs-fixture")));
        assert!(listing.iter().any(|n| file.ends_with(n.as_str())), "{listing:?}");
    }
    let index = ls(&m.path(&latest));
    assert!(index.contains(&"current".to_string()) == host_choice().is_some(), "{index:?}");
    for l in ["linux-arm-v5", "linux-arm-v6", "linux-386", "linux-amd64", "manifest.json"] {
        assert!(index.contains(&l.to_string()), "{l} in {index:?}");
    }
    // Never in an image manifest's directory.
    assert_eq!(ls(&m.path("demo/oci/tags/v1")), ["config.json", "layers", "manifest.json", "rootfs"]);
    assert!(enoent(&m.path("demo/oci/tags/v1/current")));
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(link(&m.path("demo/multi/tags/latest/current")), "linux-amd64");
        assert_eq!(link(&m.path("demo/list/tags/latest/current")), "linux-amd64");
    }
    drop(m);

    // arm64 runs arm64 first, else 32-bit arm v8 down to v5.
    let m = Mount::start(&sh.registry.url, &["--platform", "linux/arm64"]);
    assert_eq!(link(&m.path("demo/multi/tags/latest/current")), "linux-arm64-v8");
    assert_eq!(link(&m.path(&format!("{latest}/current"))), "linux-arm-v6");
    assert_eq!(link(&m.path("demo/list/tags/latest/current")), "linux-arm-v7");
    drop(m);

    // arm/v7 falls back to v6 (there is no v7 entry), and its rootfs is the v6 image's.
    let m = Mount::start(&sh.registry.url, &["--platform", "linux/arm/v7"]);
    assert_eq!(link(&m.path(&format!("{latest}/current"))), "linux-arm-v6");
    let file = s(&children["linux-arm-v6"]["file"]);
    assert!(m.path(&format!("{latest}/current/rootfs/{file}")).is_file(), "{file}");
    let manifest = m.path(&format!("{latest}/current/manifest.json"));
    assert_eq!(sha256sum(&manifest), s(&children["linux-arm-v6"]["manifest"]));
    assert!(enoent(&m.path("demo/multi/tags/latest/current")), "arm/v7 runs neither amd64 nor arm64");
    drop(m);

    // Nothing matches: no `current` at all.
    let m = Mount::start(&sh.registry.url, &["--platform", "linux/s390x"]);
    assert!(enoent(&m.path(&format!("{latest}/current"))));
    assert!(!ls(&m.path(&latest)).contains(&"current".to_string()));
    drop(m);

    // A platform regfs cannot read is refused before mounting, saying how to write one.
    let dir = tempfile::tempdir().expect("mountpoint");
    let out = Command::new(regfs_bin())
        .args([&sh.registry.url, "--platform", "arm64"])
        .arg(dir.path())
        .output()
        .expect("regfs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("os/arch[/variant]"), "{err}");
}

#[test]
fn artifact_layers_appear_under_their_title() {
    let sh = shared();
    let fx = &sh.fixtures["titled"];
    let m = Mount::start(&sh.registry.url, &[]);
    let dir = m.path(&format!("{}/tags/{}", s(&fx["repo"]), s(&fx["tag"])));
    assert_eq!(ls(&dir), ["config.json", "layers", "manifest.json", "sbom.spdx.json"]);
    let layers = fx["layers"].as_array().expect("layers");
    // `cat .../sbom.spdx.json` is the pushed bytes, verified by digest like any blob.
    let sbom = &layers[0];
    assert_eq!(s(&sbom["title"]), "sbom.spdx.json");
    let shown = std::fs::read(dir.join("sbom.spdx.json")).expect("cat sbom.spdx.json");
    assert_eq!(String::from_utf8_lossy(&shown), s(&sbom["text"]));
    assert_eq!(sha256sum(&dir.join("sbom.spdx.json")), s(&sbom["digest"]));
    // The hostile and the duplicated titles name nothing; manifest.json is still the manifest.
    for absent in ["dup.txt", "evil", "..evil"] {
        assert!(enoent(&dir.join(absent)), "{absent}");
    }
    assert!(enoent(&dir.parent().expect("tags").join("evil")));
    assert_eq!(sha256sum(&dir.join("manifest.json")), s(&fx["manifest"]));
    // Every layer is still under layers/ by number, the duplicates too.
    assert_eq!(ls(&dir.join("layers")), ["0", "1", "2", "3", "4"]);
    for (n, l) in layers.iter().enumerate() {
        assert_eq!(sha256sum(&dir.join(format!("layers/{n}"))), s(&l["digest"]), "layers/{n}");
    }
    // The empty config is `{}`.
    assert_eq!(std::fs::read(dir.join("config.json")).expect("cat config.json"), b"{}");
}
