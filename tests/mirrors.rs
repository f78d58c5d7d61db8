//! Mirrors and pull-through caches (issue 10), with real registries and real mounts: `--mirror`,
//! the reference registry as a pull-through proxy, registries.conf.

mod common;

use std::time::Instant;

use common::front::{Behavior, Front};
use common::{Mount, images, sha256sum, shared};

fn s(v: &serde_json::Value) -> &str {
    v.as_str().expect("a string in the fixtures")
}

/// An image of the fixtures that reads whole: (repo, tag, layer digests).
struct Image {
    repo: String,
    tag: String,
    layers: Vec<String>,
}

fn readable(fixtures: &serde_json::Value) -> Vec<Image> {
    let mut all = Vec::new();
    for kind in ["oci-manifest", "docker-schema2"] {
        for img in images(fixtures, kind) {
            let repo = s(&img["repo"]).to_string();
            if repo.starts_with("broken/") {
                continue;
            }
            let layers = img["layers"].as_array().expect("layers").iter().map(|l| s(&l["digest"]).to_string());
            all.push(Image { repo, tag: s(&img["tag"]).to_string(), layers: layers.collect() });
        }
    }
    assert!(all.len() >= 4, "too few fixture images to split");
    all
}

/// Read an image's config and every layer through the mount, each checked by `sha256sum`; the
/// blob digests read.
fn read_image(m: &Mount, img: &Image) -> Vec<String> {
    let dir = m.path(&format!("{}/tags/{}", img.repo, img.tag));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json")).expect("json");
    let config = s(&manifest["config"]["digest"]).to_string();
    assert_eq!(sha256sum(&dir.join("config.json")), config, "{}:{} config", img.repo, img.tag);
    for layer in &img.layers {
        let path = m.path(&format!("{}/blobs/{layer}", img.repo));
        assert_eq!(sha256sum(&path), *layer, "{}", path.display());
    }
    let mut read = img.layers.clone();
    read.push(config);
    read
}

fn blob_gets(front: &Front) -> Vec<String> {
    front
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .map(|r| r.path.clone())
        .collect()
}

fn asked_for(front: &Front, what: &str) -> usize {
    front.requests().iter().filter(|r| r.path.contains(what)).count()
}

#[test]
fn reads_go_to_the_first_mirror_that_answers_and_fall_back_to_the_registry() {
    let sh = shared();
    // Fronts only count: the registry regfs is given, a dead mirror (503), a live one.
    let registry = Front::start(&sh.registry.url, Behavior::default());
    let dead = Front::start(&sh.registry.url, Behavior { down: true, ..Behavior::default() });
    let mirror = Front::start(&sh.registry.url, Behavior::default());
    let started = Instant::now();
    let m = Mount::start(&registry.url, &["--mirror", &dead.url, "--mirror", &mirror.url]);
    let imgs = readable(&sh.fixtures);
    let (first, rest) = imgs.split_at(imgs.len() / 2);
    let mut read = Vec::new();
    for img in first {
        read.extend(read_image(&m, img));
    }
    let gets = blob_gets(&mirror);
    for d in &read {
        assert!(gets.iter().any(|p| p.ends_with(d.as_str())), "the mirror served {d}: {gets:?}");
    }
    assert_eq!(asked_for(&registry, "/blobs/"), 0, "the registry served no blob while the mirror answered");
    assert_eq!(asked_for(&registry, "/manifests/"), 0, "nor any manifest, by tag or digest");
    let cool_offs = started.elapsed().as_secs() / 30 + 1;
    assert!(
        dead.requests().len() as u64 <= cool_offs,
        "the dead mirror is asked once per cool-off: {:?}",
        dead.requests()
    );
    assert!(!dead.requests().is_empty(), "the dead mirror was tried first");

    // The mirror goes away: reads go to the registry, and no reader sees an error.
    drop(mirror);
    let mut later = Vec::new();
    for img in rest {
        later.extend(read_image(&m, img));
    }
    let gets = blob_gets(&registry);
    for d in later.iter().filter(|d| !read.contains(d)) {
        assert!(gets.iter().any(|p| p.ends_with(d.as_str())), "the registry served {d}: {gets:?}");
    }
    assert!(!m.log().contains(" ERROR "), "{}", m.log());
}
