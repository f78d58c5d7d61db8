//! `regfs-fixtures REGISTRY_URL [--bench]`: push regfs's sample images to a registry over the
//! distribution API, and print a JSON summary of what was pushed.
//!
//! The set covers every manifest type the dispatcher knows: an OCI image (gzip, zstd and
//! uncompressed layers), a Docker schema2 image, an OCI index (two platforms, a nested index, an
//! entry without a platform), a Docker manifest list, a signed schema1 manifest (the registry must
//! run with `compatibility.schema1.enabled`), an OCI artifact, nested repository names, a
//! repository with many tags, and an image whose layer the test harness corrupts on disk.
//! `--bench` adds the benchmark's large images.

mod layers;
mod push;
mod schema1;

use std::process::ExitCode;

use layers::Compression;
use push::{Pusher, Result};
use regfs::digest::{Algorithm, Digest};
use regfs::media;
use serde_json::{Value, json};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: regfs-fixtures REGISTRY_URL [--bench] [--load]");
        return ExitCode::from(2);
    };
    let bench = args.iter().any(|a| a == "--bench");
    let load = args.iter().any(|a| a == "--load");
    let run = || -> Result<Value> {
        let base = regfs::registry::endpoint::parse(url).map_err(|e| e.to_string())?;
        let p = Pusher::new(base)?;
        let mut summary = json!({"images": [], "many_tags": null, "corrupt": null, "bench": null});
        push_all(&p, &mut summary)?;
        if bench {
            summary["bench"] = push_bench(&p)?;
        }
        if load {
            summary["load"] = push_load(&p)?;
        }
        Ok(summary)
    };
    match run() {
        Ok(s) => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regfs-fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

struct Built {
    manifest: Vec<u8>,
    media_type: &'static str,
    layers: Vec<Value>,
}

/// Push an image's config and layers to `repo`; its manifest bytes (not yet pushed).
fn image(
    p: &Pusher,
    repo: &str,
    name: &str,
    oci: bool,
    layer_specs: &[(usize, Compression)],
    extra: Value,
) -> Result<Built> {
    let mut descs = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, (noise, c)) in layer_specs.iter().enumerate() {
        let (blob, raw) = layers::layer(&format!("{name}-{i}"), *noise, *c)?;
        let digest = p.blob(repo, &blob)?;
        let mt = match (oci, c) {
            (true, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (true, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (true, Compression::Plain) => "application/vnd.oci.image.layer.v1.tar",
            (false, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (false, _) => "application/vnd.docker.image.rootfs.diff.tar",
        };
        diff_ids.push(Digest::of(Algorithm::Sha256, &raw).to_string());
        descs.push(descriptor(mt, &digest, blob.len()));
        layers.push(json!({"digest": digest.to_string(), "size": blob.len(), "media_type": mt,
                           "files": [format!("regfs-fixture/{name}-{i}.txt"), format!("regfs-fixture/{name}-{i}.bin")]}));
    }
    let config = json!({
        "architecture": extra.get("arch").and_then(Value::as_str).unwrap_or("amd64"),
        "os": "linux",
        "config": {"Labels": {"org.regfs.fixture": name}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    });
    let config_bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let config_digest = p.blob(repo, &config_bytes)?;
    let (media_type, config_mt) =
        if oci { (media::OCI_MANIFEST, OCI_CONFIG) } else { (media::DOCKER_SCHEMA2, DOCKER_CONFIG) };
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_mt, &config_digest, config_bytes.len()),
        "layers": descs,
    });
    if let Some(a) = extra.get("annotations") {
        m["annotations"] = a.clone();
    }
    let manifest = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    Ok(Built { manifest, media_type, layers })
}

fn record(summary: &mut Value, repo: &str, tag: &str, kind: &str, digest: &Digest, b: Option<&Built>) {
    let layers = b.map(|b| b.layers.clone()).unwrap_or_default();
    if let Some(images) = summary["images"].as_array_mut() {
        images.push(json!({"repo": repo, "tag": tag, "kind": kind, "digest": digest.to_string(), "layers": layers}));
    }
}

fn tagged(p: &Pusher, summary: &mut Value, repo: &str, tag: &str, kind: &str, b: &Built) -> Result<Digest> {
    let d = p.manifest(repo, tag, b.media_type, &b.manifest)?;
    record(summary, repo, tag, kind, &d, Some(b));
    Ok(d)
}

fn push_all(p: &Pusher, summary: &mut Value) -> Result<()> {
    use Compression::*;
    let none = json!({});

    // An OCI image with one layer of each compression.
    let oci = image(p, "demo/oci", "oci", true, &[(40_000, Gzip), (30_000, Zstd), (20_000, Plain)], none.clone())?;
    tagged(p, summary, "demo/oci", "v1", "oci-manifest", &oci)?;

    // A Docker schema2 image.
    // The 3 MB layer is past the in-memory limit: it is read from the disk cache (or passthrough).
    let docker =
        image(p, "demo/docker", "docker", false, &[(50_000, Gzip), (10_000, Gzip), (3_000_000, Gzip)], none.clone())?;
    tagged(p, summary, "demo/docker", "v1", "docker-schema2", &docker)?;

    // An OCI index: two platforms, a nested index, and an entry without a platform.
    let amd = image(p, "demo/multi", "multi-amd64", true, &[(20_000, Gzip)], json!({"arch": "amd64"}))?;
    let arm = image(p, "demo/multi", "multi-arm64", true, &[(20_000, Gzip)], json!({"arch": "arm64"}))?;
    let amd_d = p.untagged("demo/multi", amd.media_type, &amd.manifest)?;
    let arm_d = p.untagged("demo/multi", arm.media_type, &arm.manifest)?;
    let inner = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [{"mediaType": media::OCI_MANIFEST, "digest": arm_d.to_string(), "size": arm.manifest.len(),
                       "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]
    }))
    .map_err(|e| e.to_string())?;
    let inner_d = p.untagged("demo/multi", media::OCI_INDEX, &inner)?;
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [
            {"mediaType": media::OCI_MANIFEST, "digest": amd_d.to_string(), "size": amd.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::OCI_MANIFEST, "digest": arm_d.to_string(), "size": arm.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": media::OCI_INDEX, "digest": inner_d.to_string(), "size": inner.len()},
            {"mediaType": media::OCI_MANIFEST, "digest": amd_d.to_string(), "size": amd.manifest.len(),
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
        ]
    }))
    .map_err(|e| e.to_string())?;
    let index_d = p.manifest("demo/multi", "latest", media::OCI_INDEX, &index)?;
    record(summary, "demo/multi", "latest", "oci-index", &index_d, None);
    summary["index_children"] = json!({
        "linux-amd64": amd_d.to_string(), "linux-arm64-v8": arm_d.to_string(),
        inner_d.to_string(): inner_d.to_string(), "unknown-unknown": amd_d.to_string()
    });

    // A Docker manifest list over two schema2 images.
    let l_amd = image(p, "demo/list", "list-amd64", false, &[(15_000, Gzip)], json!({"arch": "amd64"}))?;
    let l_arm = image(p, "demo/list", "list-arm", false, &[(15_000, Gzip)], json!({"arch": "arm"}))?;
    let l_amd_d = p.untagged("demo/list", l_amd.media_type, &l_amd.manifest)?;
    let l_arm_d = p.untagged("demo/list", l_arm.media_type, &l_arm.manifest)?;
    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": media::DOCKER_LIST,
        "manifests": [
            {"mediaType": media::DOCKER_SCHEMA2, "digest": l_amd_d.to_string(), "size": l_amd.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": media::DOCKER_SCHEMA2, "digest": l_arm_d.to_string(), "size": l_arm.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}
        ]
    }))
    .map_err(|e| e.to_string())?;
    let list_d = p.manifest("demo/list", "latest", media::DOCKER_LIST, &list)?;
    record(summary, "demo/list", "latest", "docker-manifest-list", &list_d, None);
    summary["list_children"] = json!({"linux-amd64": l_amd_d.to_string(), "linux-arm-v7": l_arm_d.to_string()});

    // A signed schema1 manifest (layers listed top first, as schema1 does).
    let mut s1_layers = Vec::new();
    for i in 0..2 {
        let (blob, _) = layers::layer(&format!("schema1-{i}"), 12_000, Gzip)?;
        let d = p.blob("demo/schema1", &blob)?;
        s1_layers.push(json!({"digest": d.to_string(), "size": blob.len(), "media_type": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                              "files": [format!("regfs-fixture/schema1-{i}.txt"), format!("regfs-fixture/schema1-{i}.bin")]}));
    }
    let top_first: Vec<String> =
        s1_layers.iter().rev().filter_map(|l| l["digest"].as_str().map(str::to_string)).collect();
    let s1 = schema1::signed("demo/schema1", "old", &top_first)?;
    let s1_d = p.manifest("demo/schema1", "old", media::DOCKER_SCHEMA1_SIGNED, &s1)?;
    let s1_built = Built { manifest: s1, media_type: media::DOCKER_SCHEMA1_SIGNED, layers: s1_layers };
    record(summary, "demo/schema1", "old", "docker-schema1", &s1_d, Some(&s1_built));

    // An OCI artifact: an SBOM with its own config and layer media types.
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"regfs-fixture"}"#;
    let sbom_d = p.blob("demo/artifact", sbom)?;
    let cfg = b"{}";
    let cfg_d = p.blob("demo/artifact", cfg)?;
    let art = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", &cfg_d, cfg.len()),
        "layers": [descriptor("application/spdx+json", &sbom_d, sbom.len())]
    }))
    .map_err(|e| e.to_string())?;
    let art_d = p.manifest("demo/artifact", "sbom", media::OCI_MANIFEST, &art)?;
    let art_layers = vec![
        json!({"digest": sbom_d.to_string(), "size": sbom.len(), "media_type": "application/spdx+json", "files": []}),
    ];
    record(
        summary,
        "demo/artifact",
        "sbom",
        "oci-artifact",
        &art_d,
        Some(&Built { manifest: art, media_type: media::OCI_MANIFEST, layers: art_layers }),
    );

    // Nested names: `nested/a` is a repository and a namespace at once.
    for repo in ["nested/a", "nested/a/b/c"] {
        let b = image(p, repo, &repo.replace('/', "-"), true, &[(5_000, Gzip)], none.clone())?;
        tagged(p, summary, repo, "v1", "oci-manifest", &b)?;
    }

    // Many tags over a few manifests: more than one page wherever pages are 50 or 100 long.
    let count = 130;
    let mut variants = Vec::new();
    for v in 0..5 {
        variants.push(image(
            p,
            "demo/many-tags",
            &format!("many-{v}"),
            true,
            &[(2_000, Gzip)],
            json!({"annotations": {"variant": v.to_string()}}),
        )?);
    }
    for i in 0..count {
        let b = &variants[i % variants.len()];
        p.manifest("demo/many-tags", &format!("t{i:03}"), b.media_type, &b.manifest)?;
    }
    summary["many_tags"] = json!({"repo": "demo/many-tags", "count": count, "distinct": variants.len()});

    // An image whose layer the harness corrupts on the registry's disk (unique bytes: blobs are
    // shared across repositories, so nothing else may use them).
    let broken = image(p, "broken/corrupt", "corrupt", true, &[(30_000, Gzip)], none)?;
    let broken_d = tagged(p, summary, "broken/corrupt", "v1", "oci-manifest", &broken)?;
    summary["corrupt"] = json!({"repo": "broken/corrupt", "tag": "v1", "manifest": broken_d.to_string(),
                                "layer": broken.layers[0]["digest"].clone()});
    Ok(())
}

/// The benchmark's images: one 256 MiB incompressible layer, eight 32 MiB ones, 250 tags.
fn push_bench(p: &Pusher) -> Result<Value> {
    let mut big = vec![0u8; 256 << 20];
    layers::Noise::new("bench-big").fill(&mut big);
    let big_d = p.blob("bench/big", &big)?;
    drop(big);
    let mut eight = Vec::new();
    for i in 0..8 {
        let mut b = vec![0u8; 32 << 20];
        layers::Noise::new(&format!("bench-eight-{i}")).fill(&mut b);
        eight.push((p.blob("bench/eight", &b)?, b.len()));
    }
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut out = json!({"big": {"repo": "bench/big", "digest": big_d.to_string(), "size": 256 << 20}, "eight": {}});
    for (repo, layers) in [("bench/big", vec![(big_d.clone(), 256usize << 20)]), ("bench/eight", eight.clone())] {
        let cfg_d = p.blob(repo, cfg)?;
        let descs: Vec<Value> =
            layers.iter().map(|(d, s)| descriptor("application/vnd.oci.image.layer.v1.tar", d, *s)).collect();
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &cfg_d, cfg.len()), "layers": descs}))
        .map_err(|e| e.to_string())?;
        let d = p.manifest(repo, "latest", media::OCI_MANIFEST, &m)?;
        out[repo.trim_start_matches("bench/")]["manifest"] = json!(d.to_string());
    }
    out["eight"]["layers"] = json!(eight.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>());
    out["tags"] = many_tags(p, "bench/many", 250)?;
    Ok(out)
}

/// `n` tags in `repo`, each its own manifest (distinct annotations), for listings and reads.
fn many_tags(p: &Pusher, repo: &str, n: usize) -> Result<Value> {
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg_d = p.blob(repo, cfg)?;
    for i in 0..n {
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &cfg_d, cfg.len()), "layers": [],
            "annotations": {"n": i.to_string()}}))
        .map_err(|e| e.to_string())?;
        p.manifest(repo, &format!("v{i:03}"), media::OCI_MANIFEST, &m)?;
    }
    Ok(json!({"repo": repo, "count": n}))
}

/// The load test's images: sixteen layers from 256 KiB to 4 MiB (either side of the in-memory
/// limit) in one image, and 250 tags.
fn push_load(p: &Pusher) -> Result<Value> {
    let specs: Vec<(usize, Compression)> =
        (0..16).map(|i| ((256 << 10) * (i % 4 + 1) * (1 + i / 4), Compression::Plain)).collect();
    let b = image(p, "load/layers", "load", true, &specs, json!({}))?;
    let d = p.manifest("load/layers", "v1", b.media_type, &b.manifest)?;
    Ok(json!({"blobs": {"repo": "load/layers", "tag": "v1", "manifest": d.to_string(), "layers": b.layers},
              "tags": many_tags(p, "load/many", 250)?}))
}
