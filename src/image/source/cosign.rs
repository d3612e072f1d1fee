//! The roles cosign gives the entries of an OCI layout's index.
//!
//! cosign names attached artifacts in two ways. In a registry, and in layouts copied from
//! one (skopeo, orbit's own store), the signature manifest of image `D` is tagged
//! `sha256-<hex of D>.sig` (`.att` for attestations, `.sbom` for SBOMs). `cosign save`
//! instead writes no names at all and marks each entry with a `kind` annotation:
//! `dev.cosignproject.cosign/image` (or `…/imageIndex`) for the image,
//! `dev.cosignproject.cosign/sigs` for its signature manifest and `…/atts` for its
//! attestations.

use oci_spec::image::Descriptor;

use crate::image::layout;

/// The annotation `cosign save` marks each index entry with.
pub const KIND_ANNOTATION: &str = "kind";
/// `kind` of the image `cosign save` saved.
pub const KIND_IMAGE: &str = "dev.cosignproject.cosign/image";
/// `kind` of the image index `cosign save` saved.
pub const KIND_IMAGE_INDEX: &str = "dev.cosignproject.cosign/imageIndex";
/// `kind` of the signature manifest `cosign save` saved.
pub const KIND_SIGS: &str = "dev.cosignproject.cosign/sigs";
/// The prefix of every `kind` cosign writes.
const KIND_PREFIX: &str = "dev.cosignproject.cosign/";

/// What an entry of a layout's index is, as far as orbit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRole {
    /// An image (or image index) a user may fetch.
    Image,
    /// A signature manifest tagged `sha256-<hex>.sig`: signatures for that one digest.
    TaggedSignatures,
    /// A signature manifest `cosign save` marked `kind: …/sigs`: signatures for the layout's
    /// image (each payload names the digest it signs).
    SavedSignatures,
    /// Another cosign attachment (attestations, SBOMs): not an image, not signatures.
    Attachment,
}

/// True for cosign's signature tag `sha256-<hex>.sig`.
fn is_signature_tag(name: &str) -> bool {
    name.starts_with("sha256-") && name.ends_with(".sig")
}

/// True for the ref names cosign uses for attached artifacts (signatures, attestations, SBOMs).
pub fn is_cosign_tag(name: &str) -> bool {
    name.starts_with("sha256-")
        && (name.ends_with(".sig") || name.ends_with(".att") || name.ends_with(".sbom"))
}

/// The `kind` annotation of an entry, if any.
pub fn kind(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()?
        .get(KIND_ANNOTATION)
        .map(String::as_str)
}

/// The role of an index entry: by its cosign tag, else by its `kind`, else an image.
pub fn role(d: &Descriptor) -> EntryRole {
    if let Some(name) = layout::ref_name(d).filter(|n| is_cosign_tag(n)) {
        return if is_signature_tag(name) {
            EntryRole::TaggedSignatures
        } else {
            EntryRole::Attachment
        };
    }
    match kind(d) {
        Some(KIND_SIGS) => EntryRole::SavedSignatures,
        Some(KIND_IMAGE | KIND_IMAGE_INDEX) | None => EntryRole::Image,
        Some(k) if k.starts_with(KIND_PREFIX) => EntryRole::Attachment,
        Some(_) => EntryRole::Image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType};
    use std::collections::HashMap;

    fn desc(annotations: &[(&str, &str)]) -> Descriptor {
        let ann: HashMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(
                "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .parse::<oci_spec::image::Digest>()
                    .unwrap(),
            )
            .size(1u64)
            .annotations(ann)
            .build()
            .unwrap()
    }

    const REF: &str = crate::image::media::REF_NAME_ANNOTATION;

    #[test]
    fn roles_by_tag_and_kind() {
        assert_eq!(role(&desc(&[])), EntryRole::Image);
        assert_eq!(role(&desc(&[(REF, "latest")])), EntryRole::Image);
        assert_eq!(
            role(&desc(&[(REF, "sha256-abcd.sig")])),
            EntryRole::TaggedSignatures
        );
        assert_eq!(
            role(&desc(&[(REF, "sha256-abcd.att")])),
            EntryRole::Attachment
        );
        assert_eq!(
            role(&desc(&[(REF, "sha256-abcd.sbom")])),
            EntryRole::Attachment
        );
        assert_eq!(
            role(&desc(&[(KIND_ANNOTATION, KIND_IMAGE)])),
            EntryRole::Image
        );
        assert_eq!(
            role(&desc(&[(KIND_ANNOTATION, KIND_IMAGE_INDEX)])),
            EntryRole::Image
        );
        assert_eq!(
            role(&desc(&[(KIND_ANNOTATION, KIND_SIGS)])),
            EntryRole::SavedSignatures
        );
        assert_eq!(
            role(&desc(&[(KIND_ANNOTATION, "dev.cosignproject.cosign/atts")])),
            EntryRole::Attachment
        );
        // Someone else's `kind` says nothing to orbit: still an image.
        assert_eq!(role(&desc(&[(KIND_ANNOTATION, "base")])), EntryRole::Image);
    }
}
