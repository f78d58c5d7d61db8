//! Inside a manifest directory: what the dispatcher found, as names.

use crate::digest::Digest;
use crate::manifest::{CONFIG_JSON, Descriptor, Kind, LAYERS_DIR, MANIFEST_JSON, Manifest};
use crate::store::VerifiedManifest;

use super::Node;

/// One name in a manifest's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `manifest.json`: the manifest's bytes exactly as served.
    ManifestJson,
    /// `config.json`: the config blob.
    Config(Descriptor),
    /// `layers/`: one file per layer, in filesystem order.
    Layers,
    /// A symlink to `../<digest>`, for an index entry.
    Link { name: String, target: Digest },
}

/// The names a manifest's directory shows: image manifests `manifest.json`, `config.json` and
/// `layers/`; indexes `manifest.json` and one symlink per entry.
pub fn entries(m: &Manifest) -> Vec<Entry> {
    let mut out = vec![Entry::ManifestJson];
    if let Some(c) = &m.config {
        out.push(Entry::Config(c.clone()));
    }
    if !m.layers.is_empty() || matches!(m.kind, Kind::DockerSchema2 | Kind::OciManifest | Kind::DockerSchema1) {
        out.push(Entry::Layers);
    }
    for (name, d) in &m.children {
        out.push(Entry::Link { name: name.clone(), target: d.digest.clone() });
    }
    out
}

/// The node for `name` in the directory of manifest `doc`.
pub fn entry_node(repo: &str, doc: &VerifiedManifest, name: &str) -> Option<Node> {
    let repo = repo.to_string();
    let digest = doc.digest.clone();
    entries(&doc.manifest).into_iter().find_map(|e| match e {
        Entry::ManifestJson if name == MANIFEST_JSON => {
            Some(Node::ManifestJson { repo: repo.clone(), digest: digest.clone() })
        }
        Entry::Config(c) if name == CONFIG_JSON => {
            Some(Node::Blob { repo: repo.clone(), digest: c.digest, size: c.size })
        }
        Entry::Layers if name == LAYERS_DIR => Some(Node::Layers { repo: repo.clone(), digest: digest.clone() }),
        Entry::Link { name: n, target } if n == name => {
            Some(Node::IndexLink { repo: repo.clone(), parent: digest.clone(), name: n, target })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{DIR_NAMES, parse};
    use crate::media;

    /// Index link names avoid `manifest::DIR_NAMES` (`name_children`); a fixed name shown in a
    /// manifest directory but missing there could be shadowed by a link of the same name.
    #[test]
    fn every_fixed_name_of_a_manifest_directory_is_in_dir_names() {
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let docs = [
            ("oci-manifest-seed.json", media::OCI_MANIFEST),
            ("oci-index-seed.json", media::OCI_INDEX),
            ("docker-schema2-spec.json", media::DOCKER_SCHEMA2),
            ("docker-manifest-list-spec.json", media::DOCKER_LIST),
            ("schema1-signed.json", media::DOCKER_SCHEMA1_SIGNED),
        ];
        let mut seen = 0;
        for (file, media_type) in docs {
            let m = parse(&fixture(file), Some(media_type), file).expect("fixture");
            for e in entries(&m) {
                let fixed = match &e {
                    Entry::ManifestJson => Some(MANIFEST_JSON),
                    Entry::Config(_) => Some(CONFIG_JSON),
                    Entry::Layers => Some(LAYERS_DIR),
                    Entry::Link { .. } => None,
                };
                if let Some(name) = fixed {
                    assert!(DIR_NAMES.contains(&name), "{file}: {name} is not in manifest::DIR_NAMES");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "the fixtures show fixed names");
    }
}
