//! Manifest and layer media types, the Accept header, and file extensions for layers.

pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Every manifest type regfs understands, most capable first. The reference registry refuses to
/// serve an OCI manifest or index to a client that does not name it here, and rewrites schema2
/// to schema1 for clients that do not name schema2, so all of them are always sent. The (withdrawn)
/// OCI artifact manifest is named too, so registries that stored one serve it; the dispatcher
/// shows it as an unknown type.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws, \
application/vnd.docker.distribution.manifest.v1+json, \
application/vnd.oci.artifact.manifest.v1+json";

/// The bare media type of a Content-Type header: parameters dropped, lower case.
pub fn bare(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Content types that say nothing about which manifest this is.
pub fn is_generic(media_type: &str) -> bool {
    matches!(media_type, "" | "application/json" | "text/plain" | "application/octet-stream")
}

/// The file extension a layer of this media type gets in `layers/`.
///
/// Covers Docker's `…rootfs.diff.tar.gzip` (and the foreign variant), OCI's `…layer.v1.tar`,
/// `+gzip`, `+zstd` and their non-distributable forms. Other media types get no extension, so
/// nothing suggests the bytes are a tarball when nobody said so.
pub fn layer_extension(media_type: &str) -> &'static str {
    let mt = bare(media_type);
    let is_tar = mt.ends_with(".tar") || mt.contains(".tar+") || mt.contains(".tar.");
    if !is_tar {
        ""
    } else if mt.ends_with("gzip") {
        ".tar.gz"
    } else if mt.ends_with("zstd") {
        ".tar.zst"
    } else if mt.ends_with(".tar") {
        ".tar"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_extensions_follow_the_media_type() {
        let cases = [
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", ".tar.gz"),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ".tar.gz"),
            ("application/vnd.oci.image.layer.v1.tar+gzip", ".tar.gz"),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", ".tar.gz"),
            ("application/vnd.oci.image.layer.v1.tar+zstd", ".tar.zst"),
            ("application/vnd.oci.image.layer.v1.tar", ".tar"),
            ("application/vnd.docker.image.rootfs.diff.tar", ".tar"),
            ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", ".tar.gz"),
            ("application/vnd.example.sbom+json", ""),
            ("application/octet-stream", ""),
            ("application/vnd.example.startar", ""),
        ];
        for (mt, ext) in cases {
            assert_eq!(layer_extension(mt), ext, "{mt}");
        }
    }

    #[test]
    fn bare_strips_parameters() {
        assert_eq!(bare("Application/JSON; charset=utf-8"), "application/json");
    }
}
