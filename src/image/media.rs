//! Media types orbit understands, and the compression each layer type implies.

use std::io::Read;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// cosign's simple-signing payload layer.
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation cosign keeps a signature in.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The OCI annotation naming an image in a layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// What is wrong with a layer's media type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaTypeError {
    /// Not a layer media type at all.
    #[error("unknown layer media type '{0}' (orbit reads OCI and Docker tar layers)")]
    Unknown(String),
    /// A tar layer with a compression orbit cannot read.
    #[error("unsupported layer compression in media type '{0}' (orbit reads uncompressed, gzip and zstd layers)")]
    UnsupportedCompression(String),
}

/// The compression a layer media type implies.
pub fn layer_compression(media_type: &str) -> Result<Compression, MediaTypeError> {
    let base = media_type.replace(".nondistributable", "").replace(
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
    );
    match base.as_str() {
        OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        OCI_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Ok(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            Ok(Compression::Zstd)
        }
        other
            if other.starts_with(OCI_LAYER_TAR)
                || other.starts_with("application/vnd.docker.image.rootfs.diff.tar") =>
        {
            Err(MediaTypeError::UnsupportedCompression(
                media_type.to_string(),
            ))
        }
        _ => Err(MediaTypeError::Unknown(media_type.to_string())),
    }
}

/// The media type of a layer with the given compression.
pub fn oci_layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => OCI_LAYER_TAR,
        Compression::Gzip => OCI_LAYER_GZIP,
        Compression::Zstd => OCI_LAYER_ZSTD,
    }
}

/// Wraps a compressed stream in its decompressor.
pub fn decompress<'a, R: Read + 'a>(c: Compression, r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(256 * 1024, r),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
    })
}

/// True for a media type that is an image manifest orbit reads.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The `mediaType` field of a JSON document (manifest or index), if it has one.
pub fn document_media_type(doc: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Head>(doc).ok()?.media_type
}

/// The media type of an image manifest, from its own `mediaType` field: Docker schema 2
/// when it says so, OCI otherwise (the field is optional in OCI manifests).
pub fn manifest_media_type(manifest: &[u8]) -> &'static str {
    match document_media_type(manifest).as_deref() {
        Some(DOCKER_MANIFEST) => DOCKER_MANIFEST,
        _ => OCI_MANIFEST,
    }
}

/// The media type of an image index: a Docker manifest list when it says so, else OCI.
pub fn index_media_type(index: &[u8]) -> &'static str {
    match document_media_type(index).as_deref() {
        Some(DOCKER_MANIFEST_LIST) => DOCKER_MANIFEST_LIST,
        _ => OCI_INDEX,
    }
}

/// True for a media type that is an index of manifests.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_media_type_comes_from_the_document() {
        let docker = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}"}}"#);
        assert_eq!(manifest_media_type(docker.as_bytes()), DOCKER_MANIFEST);
        assert_eq!(manifest_media_type(br#"{"schemaVersion":2}"#), OCI_MANIFEST);
        assert_eq!(manifest_media_type(b"junk"), OCI_MANIFEST);
        let list = format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}"}}"#);
        assert_eq!(index_media_type(list.as_bytes()), DOCKER_MANIFEST_LIST);
        assert_eq!(index_media_type(b"{}"), OCI_INDEX);
    }

    #[test]
    fn layer_types_map_to_compressions() {
        assert_eq!(layer_compression(OCI_LAYER_GZIP), Ok(Compression::Gzip));
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"),
            Ok(Compression::Zstd)
        );
        assert_eq!(layer_compression(OCI_LAYER_TAR), Ok(Compression::None));
        assert!(matches!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+bzip2"),
            Err(MediaTypeError::UnsupportedCompression(_))
        ));
        assert!(matches!(
            layer_compression("text/plain"),
            Err(MediaTypeError::Unknown(_))
        ));
    }
}
