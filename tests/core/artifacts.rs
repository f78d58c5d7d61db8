//! Platforms (`current`) and artifact titles through the core, over the in-memory registry:
//! what `ls`, `readlink` and `cat` see, and what each costs.

use std::sync::Arc;

use regfs::digest::{Algorithm, Digest};
use regfs::media;
use regfs::testkit::core::{self as kit, Builder};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// The kit's core, with the listings these tests compare.
struct Core(kit::Core);

impl std::ops::Deref for Core {
    type Target = kit::Core;
    fn deref(&self) -> &kit::Core {
        &self.0
    }
}

/// A core over `fake` choosing `platform` (`None`: the default, this machine's).
fn core(fake: &Arc<Faulty<Fake>>, platform: Option<&str>) -> Core {
    let b = Builder::over(fake.clone());
    Core(
        match platform {
            Some(p) => b.platform(p),
            None => b,
        }
        .build(),
    )
}

/// `referrers/`, which every manifest directory shows: these tests are about the names
/// platforms and titles add, so listings are compared without it.
const OTHER_TRACKS: [&str; 2] = ["referrers", "signatures"];

impl Core {
    /// The listing of `path`, without the names of [`OTHER_TRACKS`].
    fn ls(&self, path: &str) -> regfs::error::Result<Vec<String>> {
        Ok(self.fs.ls(path)?.into_iter().filter(|n| !OTHER_TRACKS.contains(&n.as_str())).collect())
    }

    fn readlink(&self, path: &str) -> regfs::error::Result<String> {
        self.fs.readlink(self.fs.walk(path)?.ino)
    }
}

/// `demo/platforms` as the fixtures push it: an index of linux/arm/v5, linux/arm/v6, linux/386
/// and linux/amd64 (each its own image), tagged `latest`; (index digest, the images' digests).
fn platforms_index(fake: &Fake) -> (Digest, Vec<Digest>) {
    let platforms = [("arm", Some("v5")), ("arm", Some("v6")), ("386", None), ("amd64", None)];
    let mut entries = Vec::new();
    let mut images = Vec::new();
    for (arch, variant) in platforms {
        let (d, _) = fake.image("demo/platforms", &format!("only-{arch}{}", variant.unwrap_or("")), arch.as_bytes());
        let size = fake.stored_manifest("demo/platforms", &d.to_string()).expect("stored").body.len();
        let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = serde_json::json!(v);
        }
        entries.push(serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": size,
                                        "platform": platform}));
        images.push(d);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": entries});
    let d = fake.put_manifest(
        "demo/platforms",
        Some("latest"),
        media::OCI_INDEX,
        index.to_string().as_bytes(),
        Algorithm::Sha256,
    );
    (d, images)
}

#[test]
fn current_links_to_the_entry_the_platform_matcher_chooses() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (index, images) = platforms_index(&fake);
    let dir = format!("demo/platforms/manifests/{index}");
    // (--platform, the link `current` names, the image it reaches)
    for (platform, link, image) in [
        ("linux/amd64", "linux-amd64", 3),
        ("linux/amd64/v3", "linux-amd64", 3),
        ("linux/arm/v7", "linux-arm-v6", 1),
        ("linux/arm64", "linux-arm-v6", 1),
        ("linux/arm/v5", "linux-arm-v5", 0),
        ("linux/386", "linux-386", 2),
    ] {
        let c = core(&fake, Some(platform));
        let names = c.ls(&dir).expect("ls");
        assert_eq!(names.last().map(String::as_str), Some("current"), "{platform}: {names:?}");
        assert_eq!(c.readlink(&format!("{dir}/current")).expect("readlink"), link, "{platform}");
        // Followed as the kernel would: the link it names, then that link's target.
        let target = c.readlink(&format!("{dir}/{link}")).expect("readlink");
        assert_eq!(target, format!("../{}", images[image]), "{platform}");
        // Through the tag too, and the chosen image's files are there.
        let chosen = format!("demo/platforms/manifests/{}", images[image]);
        assert_eq!(c.ls(&chosen).expect("ls"), ["manifest.json", "config.json", "layers", "rootfs"]);
        assert!(!c.ls(&chosen).expect("ls").contains(&"current".to_string()), "never in an image directory");
        assert_eq!(c.fs.walk(&format!("{chosen}/current")).expect_err("no current").errno(), libc::ENOENT);
    }
    // Nothing matches: no `current`, listed or looked up.
    let c = core(&fake, Some("linux/s390x"));
    assert!(!c.ls(&dir).expect("ls").contains(&"current".to_string()));
    assert_eq!(c.fs.walk(&format!("{dir}/current")).expect_err("no match").errno(), libc::ENOENT);
    // `current` costs nothing beyond the index itself.
    let c = core(&fake, Some("linux/arm/v7"));
    c.fs.walk(&dir).expect("index");
    let before = c.fake.calls().len();
    assert_eq!(c.readlink(&format!("{dir}/current")).expect("readlink"), "linux-arm-v6");
    assert_eq!(c.fake.calls().len(), before, "current cost a request");
}

#[test]
fn the_default_platform_is_this_machines() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (index, _) = platforms_index(&fake);
    let c = core(&fake, None);
    let link = c.readlink(&format!("demo/platforms/manifests/{index}/current"));
    match std::env::consts::ARCH {
        "x86_64" => assert_eq!(link.expect("amd64 host"), "linux-amd64"),
        "x86" => assert_eq!(link.expect("386 host"), "linux-386"),
        "aarch64" => assert_eq!(link.expect("arm64 host"), "linux-arm-v6"),
        _ => {}
    }
}

/// An oras-like artifact: `artifactType`, the empty config, layers titled `sbom.spdx.json`,
/// `../evil`, `manifest.json` and `dup.txt` twice; (manifest digest, the SBOM's bytes).
fn titled_artifact(fake: &Fake) -> (Digest, Vec<u8>) {
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"titled"}"#.to_vec();
    let empty = fake.add_blob(b"{}");
    let layer = |bytes: &[u8], title: &str| {
        let d = fake.add_blob(bytes);
        serde_json::json!({"mediaType": "application/octet-stream", "digest": d.to_string(), "size": bytes.len(),
                           "annotations": {"org.opencontainers.image.title": title}})
    };
    let doc = serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
        "layers": [layer(&sbom, "sbom.spdx.json"), layer(b"evil", "../evil"), layer(b"shadow", "manifest.json"),
                   layer(b"one", "dup.txt"), layer(b"two", "dup.txt")]
    });
    let d = fake.put_manifest(
        "demo/titled",
        Some("sbom"),
        media::OCI_MANIFEST,
        doc.to_string().as_bytes(),
        Algorithm::Sha256,
    );
    (d, sbom)
}

#[test]
fn artifact_layers_appear_under_their_title_when_safe_and_unique() {
    let fake = Arc::new(Faulty::new(Fake::default()));
    let (art, sbom) = titled_artifact(&fake);
    let c = core(&fake, None);
    let dir = format!("demo/titled/manifests/{art}");
    assert_eq!(c.ls(&dir).expect("ls"), ["manifest.json", "config.json", "layers", "sbom.spdx.json"]);
    assert_eq!(c.fs.cat(&format!("{dir}/sbom.spdx.json")).expect("cat"), sbom);
    assert_eq!(c.fs.walk(&format!("{dir}/sbom.spdx.json")).expect("stat").size, sbom.len() as u64);
    // The title's file is the layer's: one inode for both names.
    assert_eq!(
        c.fs.walk(&format!("{dir}/sbom.spdx.json")).expect("stat").ino,
        c.fs.walk(&format!("{dir}/layers/0")).expect("stat").ino
    );
    for absent in ["dup.txt", "evil", "..%2fevil"] {
        assert_eq!(c.fs.walk(&format!("{dir}/{absent}")).expect_err(absent).errno(), libc::ENOENT, "{absent}");
    }
    // `manifest.json` is still the manifest, not the layer titled so.
    let manifest = c.fs.cat(&format!("{dir}/manifest.json")).expect("cat");
    assert_eq!(Digest::of(Algorithm::Sha256, &manifest), art);
    // Every layer is still under layers/ by number.
    assert_eq!(c.ls(&format!("{dir}/layers")).expect("ls"), ["0", "1", "2", "3", "4"]);
    assert_eq!(c.fs.cat(&format!("{dir}/layers/4")).expect("cat"), b"two");
}
