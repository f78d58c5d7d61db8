//! The manifest-type dispatcher: manifest bytes (plus the response's Content-Type) in, one
//! [`Manifest`] out, which knows what its directory shows.
//!
//! # How the kind is decided
//! Three witnesses, in order of trust:
//! 1. the response's `Content-Type` (the registry stored it with the manifest);
//! 2. the body's `mediaType` (OCI manifests may omit it; Docker ones always carry it);
//! 3. the body's structure: `manifests` makes an index, `config` + `layers` an image manifest.
//!
//! `schemaVersion` 1 is Docker schema1 whatever else is said. When the body names a known manifest
//! type and the header names another type (known or not), the document is refused: the digest
//! covers the body, not the header, so serving it either way could show a directory the registry
//! did not mean. For the same reason a document that is both an index (`manifests`) and an image
//! manifest (`config` or `layers`) is refused under any known or generic header (CVE-2021-41190):
//! otherwise the header alone would pick which directory one digest shows.
//!
//! # Types regfs does not know
//! A Content-Type that is not a known manifest type (an artifact, a vendor type), or, under a
//! generic Content-Type, a body `mediaType` that is not one, makes a [`Kind::Other`]. It is shown
//! as its verified `manifest.json` whatever it holds: any `schemaVersion` or none, even bytes that
//! are not JSON. `config.json` is added where `config` is a valid descriptor, and `layers/` where
//! `layers` is an array of valid descriptors, all of them (a partial list would renumber the
//! layers); each part is judged alone, so a malformed one hides only itself, and a document with
//! a duplicate key shows neither. Known types keep every strict check below.
//!
//! # What a directory holds
//! The layout (`layout/image.rs`) shows it: image manifests show `manifest.json`, `config.json` and
//! `layers/<n><ext>`; indexes show `manifest.json` and one symlink per entry, named
//! `<os>-<arch>[-<variant>]` or by digest, always unique.
//!
//! # Limits
//! Documents over 4 MiB (the reference registry's own limit) are refused; so are descriptors
//! with sizes over [`MAX_BLOB_SIZE`](crate::limits::MAX_BLOB_SIZE) or negative, digests other
//! than sha256/sha512, any missing required field, any object naming a key twice, and documents
//! of more than [`MAX_VALUES`](crate::limits::MAX_VALUES) JSON values (`json::strict`).
//!
//! # What is shown is what was hashed
//! A [`Manifest`] holds the very bytes its digest was computed over and everything it shows was
//! parsed from them; for signed schema1, from the JWS payload (see `schema1`), which must be all
//! the served document says besides its signatures. Refusal is an [`Error::Malformed`] naming what was wrong.

mod image;
pub mod json;
pub mod referrers;
mod schema1;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, Result};
use crate::limits::MAX_MANIFEST_SIZE;
use crate::media;
use crate::platform::Platform;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DockerSchema1,
    DockerSchema2,
    DockerManifestList,
    OciManifest,
    OciIndex,
    /// Artifacts and media types regfs does not know.
    Other,
}

impl Kind {
    /// An image manifest (schema1, schema2, OCI): it lists layers, which have decoded views and
    /// may make a `rootfs/`. Indexes, lists and artifacts are not.
    pub fn is_image(self) -> bool {
        matches!(self, Kind::DockerSchema2 | Kind::OciManifest | Kind::DockerSchema1)
    }

    /// An image manifest whose config lists the layers' diff_ids (schema2, OCI): what a decoded
    /// or plain layer must hash to. Schema1 has none; its decoded layers are trusted by the blob.
    pub fn has_diff_ids(self) -> bool {
        matches!(self, Kind::DockerSchema2 | Kind::OciManifest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    /// Unknown only for schema1 layers, which carry no sizes.
    pub size: Option<u64>,
    /// The platform of an index entry, as the registry wrote it (none when it names neither an
    /// OS nor an architecture). Link names and `current` are computed from it.
    pub platform: Option<Platform>,
    /// The `org.opencontainers.image.title` annotation, when it is a string of at most
    /// [`MAX_TITLE`] bytes (a longer one could never be a file name).
    pub title: Option<String>,
    /// Where the blob may also be fetched from when the registry lacks it (non-distributable
    /// layers), as listed, unchecked (`registry::foreign::UrlRules` judges them); within
    /// `limits::MAX_LAYER_URLS` of `MAX_LAYER_URL_LEN` bytes, else empty.
    pub urls: Vec<String>,
    /// The annotations a lazy format reads ([`LAZY_ANNOTATIONS`]) that the descriptor carries as
    /// strings of at most [`MAX_LAZY_ANNOTATION`] bytes, in that list's order; others are not kept.
    /// Covered by the manifest's digest, so they are as trusted as the manifest.
    pub lazy: Vec<(&'static str, String)>,
}

/// The layer annotations lazy formats read: eStargz's TOC digest and uncompressed size,
/// SOCI's layer a zTOC is for (on a SOCI index's zTOC descriptors), zstd:chunked's TOC checksum and positions (and the early stargz-snapshotter variant's key,
/// kept only to refuse it).
pub const LAZY_ANNOTATIONS: [&str; 7] = [
    "containerd.io/snapshot/stargz/toc.digest",
    "com.amazon.soci.image-layer-digest",
    "io.containers.estargz.uncompressed-size",
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.github.containers.zstd-chunked.manifest-position",
    "io.github.containers.zstd-chunked.tarsplit-position",
    "io.containers.zstd-chunked.manifest-checksum",
];
pub use crate::limits::MAX_LAZY_ANNOTATION;

impl Descriptor {
    /// The value of lazy annotation `key` (one of [`LAZY_ANNOTATIONS`]), if it carries it.
    pub fn lazy_annotation(&self, key: &str) -> Option<&str> {
        self.lazy.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// The annotation naming a layer's file (as `oras push` writes it and `oras pull` reads it).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
pub use crate::limits::MAX_TITLE;

pub const MANIFEST_JSON: &str = "manifest.json";
pub const CONFIG_JSON: &str = "config.json";
pub const LAYERS_DIR: &str = "layers";
pub const ROOTFS_DIR: &str = "rootfs";
/// In an index directory: a link to the entry chosen for `--platform` (`layout/image.rs`).
pub const CURRENT_LINK: &str = "current";
pub const REFERRERS_DIR: &str = "referrers";
pub const SIGNATURES_DIR: &str = "signatures";
/// Every fixed name a manifest directory may show: index link names and layer titles never take
/// one of these. The layout's guard test fails if a fixed name it shows is missing here.
pub const DIR_NAMES: [&str; 7] =
    [MANIFEST_JSON, CONFIG_JSON, LAYERS_DIR, ROOTFS_DIR, CURRENT_LINK, REFERRERS_DIR, SIGNATURES_DIR];

#[derive(Debug, Clone)]
pub struct Manifest {
    pub kind: Kind,
    /// The media type the dispatcher settled on (empty when nobody named one).
    pub media_type: String,
    pub config: Option<Descriptor>,
    /// Layers with their file names (`0.tar.gz`, …), bottom layer first.
    pub layers: Vec<(String, Descriptor)>,
    /// Index entries with their unique link names.
    pub children: Vec<(String, Descriptor)>,
    /// Layers also shown in the manifest directory under their title: `(title, index in
    /// layers)`, only safe and unique titles ([`title_names`]), in layer order.
    pub titles: Vec<(String, usize)>,
    /// The bytes as served: what `manifest.json` shows.
    bytes: Vec<u8>,
    /// For signed schema1 only: the JWS payload, which the digest covers and every field shown
    /// was read from (the served bytes are that payload plus its signatures).
    payload: Option<Vec<u8>>,
    /// An image manifest's `com.amazon.soci.index-digest` annotation (a SOCI v2 index naming
    /// zTOCs for its layers, `views/lazy/soci.rs`), when it is a valid digest.
    pub soci_index: Option<Digest>,
}

impl Manifest {
    /// The layer file called `name`, if any.
    pub fn layer(&self, name: &str) -> Option<&Descriptor> {
        self.layers.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// Every blob this manifest names with a known size (config and layers).
    pub fn sized_blobs(&self) -> impl Iterator<Item = (&Digest, u64)> {
        self.config.iter().chain(self.layers.iter().map(|(_, d)| d)).filter_map(|d| d.size.map(|s| (&d.digest, s)))
    }

    /// Roughly the memory this value holds: its bytes, the payload, and every parsed descriptor
    /// and name (with their fixed parts), for caches that are bounded in bytes.
    pub fn weight(&self) -> usize {
        use std::mem::size_of;
        let desc = |d: &Descriptor| {
            d.media_type.capacity()
                + d.digest.hex().len()
                + d.platform.as_ref().map_or(0, |p| p.os.capacity() + p.architecture.capacity() + p.variant.capacity())
                + d.title.as_ref().map_or(0, String::capacity)
                + d.urls.capacity() * size_of::<String>()
                + d.urls.iter().map(String::capacity).sum::<usize>()
                + d.lazy.capacity() * size_of::<(&str, String)>()
                + d.lazy.iter().map(|(_, v)| v.capacity()).sum::<usize>()
        };
        let named = |v: &[(String, Descriptor)]| {
            v.iter().map(|(n, d)| size_of::<(String, Descriptor)>() + n.capacity() + desc(d)).sum::<usize>()
        };
        size_of::<Manifest>()
            + self.bytes.capacity()
            + self.payload.as_ref().map_or(0, Vec::capacity)
            + self.media_type.capacity()
            + self.config.as_ref().map_or(0, desc)
            + named(&self.layers)
            + named(&self.children)
            + self.titles.iter().map(|(t, _)| size_of::<(String, usize)>() + t.capacity()).sum::<usize>()
    }

    /// The bytes as served, which `manifest.json` shows.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest of the served bytes under `algorithm`, computed as the registry does: over the
    /// bytes, except for signed schema1, over the canonical JWS payload.
    pub fn digest(&self, algorithm: Algorithm) -> Digest {
        Digest::of(algorithm, self.payload.as_deref().unwrap_or(&self.bytes))
    }
}

fn known_manifest_type(mt: &str) -> Option<&'static str> {
    [
        media::DOCKER_SCHEMA1,
        media::DOCKER_SCHEMA1_SIGNED,
        media::DOCKER_SCHEMA2,
        media::DOCKER_LIST,
        media::OCI_MANIFEST,
        media::OCI_INDEX,
    ]
    .into_iter()
    .find(|k| *k == mt)
}

/// The dispatcher. `what` names the document in errors (a URL, or `repo@digest`).
pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<Manifest> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(Error::TooLarge(format!("{what}: manifest of {} bytes (limit {MAX_MANIFEST_SIZE})", bytes.len())));
    }
    let bad = |why: String| Error::malformed(format!("manifest {what}"), why);
    let parsed = json::strict(bytes).and_then(|d| match d {
        serde_json::Value::Object(_) => Ok(d),
        _ => Err("not a JSON object".to_string()),
    });
    let version = parsed.as_ref().ok().and_then(|d| d.get("schemaVersion")).and_then(|v| v.as_u64());
    let header = content_type.map(media::bare).unwrap_or_default();
    let header_known = known_manifest_type(&header);
    let body = parsed.as_ref().ok().and_then(|d| d.get("mediaType")).and_then(|m| m.as_str()).unwrap_or("");
    let body_known = known_manifest_type(body);

    let mut m = Manifest {
        kind: Kind::Other,
        media_type: String::new(),
        config: None,
        layers: Vec::new(),
        children: Vec::new(),
        titles: Vec::new(),
        bytes: bytes.to_vec(),
        payload: None,
        soci_index: None,
    };
    // A type regfs does not know, named by the Content-Type or else by the body: shown as its
    // verified bytes whatever fields it has (schema1 aside: its digest rule is needed to verify
    // it at all, so `schemaVersion` 1 stays schema1 whatever else is said).
    // The body is covered by the digest, the header is not: a body naming a known type is never
    // read as another because of a header, known or not.
    if let Some(b) = body_known.filter(|_| version != Some(1)) {
        if !media::is_generic(&header) && header_known != Some(b) {
            return Err(bad(format!("Content-Type {header} but mediaType {b}")));
        }
    }
    let unknown = if version == Some(1) {
        None
    } else if header_known.is_none() && !media::is_generic(&header) {
        Some(header.clone())
    } else if header_known.is_none() && body_known.is_none() && !body.is_empty() {
        Some(body.to_string())
    } else {
        None
    };
    if let Some(media_type) = unknown {
        m.media_type = media_type;
        if let Ok(doc) = &parsed {
            let (config, layers) = image::optional_parts(doc, what);
            m.config = config;
            m.layers = name_layers(layers);
            m.titles = title_names(&m.layers);
        }
        return Ok(m);
    }

    // A known type, or nothing named: the strict checks.
    let doc = parsed.map_err(bad)?;
    let (kind, media_type) = match version {
        Some(1) => {
            if let Some(h) = header_known.filter(|h| !h.starts_with("application/vnd.docker.distribution.manifest.v1"))
            {
                return Err(bad(format!("schemaVersion 1 served as {h}")));
            }
            (Kind::DockerSchema1, header_known.unwrap_or(media::DOCKER_SCHEMA1).to_string())
        }
        Some(2) => {
            if let (Some(h), Some(b)) = (header_known, body_known) {
                if h != b {
                    return Err(bad(format!("Content-Type {h} but mediaType {b}")));
                }
            }
            let named = header_known.or(body_known);
            let kind = match named {
                Some(media::DOCKER_SCHEMA2) => Kind::DockerSchema2,
                Some(media::DOCKER_LIST) => Kind::DockerManifestList,
                Some(media::OCI_MANIFEST) => Kind::OciManifest,
                Some(media::OCI_INDEX) => Kind::OciIndex,
                Some(other) => return Err(bad(format!("schemaVersion 2 served as {other}"))),
                None if doc.get("manifests").is_some() => Kind::OciIndex,
                None if doc.get("config").is_some() && doc.get("layers").is_some() => Kind::OciManifest,
                None => Kind::Other,
            };
            (kind, named.unwrap_or_default().to_string())
        }
        Some(v) => return Err(bad(format!("unsupported schemaVersion {v}"))),
        None => return Err(bad("no schemaVersion".into())),
    };
    m.kind = kind;
    m.media_type = media_type;

    let wrap = |e: Error| match e {
        Error::Malformed { what: w, why } => Error::Malformed { what: format!("manifest {what}: {w}"), why },
        other => other,
    };
    let layers = match kind {
        Kind::DockerSchema1 => match schema1::signed_payload(bytes, &doc).map_err(wrap)? {
            // Every field shown comes from the payload the digest covers.
            Some((payload, parsed)) => {
                m.payload = Some(payload);
                schema1::layers(&parsed).map_err(wrap)?
            }
            None => schema1::layers(&doc).map_err(wrap)?,
        },
        Kind::DockerSchema2 | Kind::OciManifest | Kind::DockerManifestList | Kind::OciIndex
            if doc.get("manifests").is_some() && (doc.get("config").is_some() || doc.get("layers").is_some()) =>
        {
            return Err(bad("both an index (manifests) and an image manifest (config, layers)".into()));
        }
        Kind::DockerSchema2 | Kind::OciManifest => {
            let (config, layers) = image::image(&doc).map_err(wrap)?;
            m.config = Some(config);
            m.soci_index = image::soci_index(&doc, what);
            layers
        }
        Kind::DockerManifestList | Kind::OciIndex => {
            m.children = name_children(image::index(&doc).map_err(wrap)?);
            Vec::new()
        }
        Kind::Other => {
            let (config, layers) = image::optional_parts(&doc, what);
            m.config = config;
            layers
        }
    };
    m.layers = name_layers(layers);
    m.titles = title_names(&m.layers);
    Ok(m)
}

/// The layers shown under their title too: those whose title is one safe name (not empty, at
/// most [`MAX_TITLE`] bytes, no `/`, NUL or other control character, not `.` or `..`, not
/// hidden, not a fixed name of the directory) that no other layer also claims. A title two
/// layers share names neither: which file is meant is ambiguous.
fn title_names(layers: &[(String, Descriptor)]) -> Vec<(String, usize)> {
    let safe = |t: &str| {
        !t.is_empty()
            && t.len() <= MAX_TITLE
            && !t.starts_with('.')
            && !t.chars().any(|c| c == '/' || c.is_control())
            && !DIR_NAMES.contains(&t)
    };
    let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for t in layers.iter().filter_map(|(_, d)| d.title.as_deref()) {
        *count.entry(t).or_default() += 1;
    }
    layers
        .iter()
        .enumerate()
        .filter_map(|(n, (_, d))| d.title.as_deref().map(|t| (t, n)))
        .filter(|(t, _)| safe(t) && count.get(t) == Some(&1))
        .map(|(t, n)| (t.to_string(), n))
        .collect()
}

/// Layer file names: the index, bottom layer first, and an extension from the media type.
fn name_layers(layers: Vec<Descriptor>) -> Vec<(String, Descriptor)> {
    layers.into_iter().enumerate().map(|(i, d)| (format!("{i}{}", media::layer_extension(&d.media_type)), d)).collect()
}

/// Unique, safe link names for index entries: `os-arch[-variant]` where the entry has a
/// platform, else its digest; a name already taken falls back to the digest, then to
/// `digest-N`. Platform strings come from the network, so anything outside `[A-Za-z0-9._-]`
/// becomes `_`, and a name that would be hidden or reserved is not used.
fn name_children(entries: Vec<Descriptor>) -> Vec<(String, Descriptor)> {
    let mut taken: HashSet<String> = DIR_NAMES.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::with_capacity(entries.len());
    for d in entries {
        let platform = d.platform.as_ref().map(|p| {
            let mut parts = vec![p.os.as_str(), p.architecture.as_str()];
            parts.retain(|p| !p.is_empty());
            parts.extend(Some(p.variant.as_str()).filter(|v| !v.is_empty()));
            parts
                .join("-")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
                .take(200)
                .collect::<String>()
        });
        let by_digest = d.digest.to_string();
        let mut name = match platform {
            Some(p) if !p.starts_with('.') && !taken.contains(&p) => p,
            _ => by_digest.clone(),
        };
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{by_digest}-{n}");
            n += 1;
        }
        taken.insert(name.clone());
        out.push((name, d));
    }
    out
}
