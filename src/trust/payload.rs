//! The simple-signing payload that cosign (and containers/image "atomic" signatures) sign:
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"example.com/busybox"},
//!  "image":{"docker-manifest-digest":"sha256:…"},
//!  "type":"cosign container image signature"},"optional":null}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::PayloadError;

/// The `critical.type` cosign writes.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// The `critical.type` of containers/image (atomic / simple signing) signatures, also accepted.
pub const ATOMIC_SIGNATURE_TYPE: &str = "atomic container signature";

/// A parsed or to-be-signed simple-signing payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimpleSigningPayload {
    critical: Critical,
    /// Free-form annotations; cosign writes `null` unless annotations were given.
    #[serde(default)]
    optional: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

impl SimpleSigningPayload {
    /// A cosign-type payload binding `reference` (a repository such as `example.com/busybox`,
    /// see [`repository_of`]) to a manifest digest (`sha256:<hex>`).
    pub fn new(reference: impl Into<String>, digest: impl Into<String>) -> Self {
        SimpleSigningPayload {
            critical: Critical {
                identity: Identity {
                    docker_reference: reference.into(),
                },
                image: Image {
                    docker_manifest_digest: digest.into(),
                },
                kind: COSIGN_SIGNATURE_TYPE.to_string(),
            },
            optional: None,
        }
    }

    /// Serializes to compact JSON, byte-for-byte what cosign produces for the same input
    /// (fields in cosign's order; `optional` object keys sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializing a payload of plain strings cannot fail")
    }

    /// Parses a payload, accepting the cosign and atomic signature types only.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        let payload: SimpleSigningPayload =
            serde_json::from_slice(bytes).map_err(PayloadError::Json)?;
        let kind = payload.critical.kind.as_str();
        if kind != COSIGN_SIGNATURE_TYPE && kind != ATOMIC_SIGNATURE_TYPE {
            return Err(PayloadError::UnsupportedType {
                found: payload.critical.kind,
            });
        }
        Ok(payload)
    }

    /// The signed image identity, `critical.identity.docker-reference`.
    pub fn reference(&self) -> &str {
        &self.critical.identity.docker_reference
    }

    /// The signed manifest digest, `critical.image.docker-manifest-digest`.
    pub fn digest(&self) -> &str {
        &self.critical.image.docker_manifest_digest
    }

    /// The signature type, `critical.type`.
    pub fn signature_type(&self) -> &str {
        &self.critical.kind
    }

    /// The `optional` annotations, if any.
    pub fn optional(&self) -> Option<&Map<String, Value>> {
        self.optional.as_ref()
    }

    /// Sets the `optional` annotations (cosign's `-a key=value`).
    pub fn with_optional(mut self, optional: Option<Map<String, Value>>) -> Self {
        self.optional = optional;
        self
    }
}

/// The repository part of an image name: strips `@digest` and `:tag`, keeping a registry
/// port (`localhost:5000/x:tag` → `localhost:5000/x`).
pub fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(repo, _)| repo);
    let last_component_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_component_start..].rfind(':') {
        Some(colon) => &name[..last_component_start + colon],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4f3a1c7d2a1a7bd2fdbd1d9bbdb3e5f0a0d9b8c6f1e2d3c4b5a69788796a5b4c";

    #[test]
    fn serialization_is_cosigns() {
        let p = SimpleSigningPayload::new("example.com/busybox", DIGEST);
        let expected = format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"example.com/busybox\"}},\
             \"image\":{{\"docker-manifest-digest\":\"{DIGEST}\"}},\
             \"type\":\"cosign container image signature\"}},\"optional\":null}}"
        );
        assert_eq!(String::from_utf8(p.to_bytes()).unwrap(), expected);
        // Stable: serializing a parsed payload gives the same bytes.
        let again = SimpleSigningPayload::parse(expected.as_bytes()).unwrap();
        assert_eq!(again.to_bytes(), expected.as_bytes());
        assert_eq!(again.reference(), "example.com/busybox");
        assert_eq!(again.digest(), DIGEST);
        assert_eq!(again.signature_type(), COSIGN_SIGNATURE_TYPE);
        assert!(again.optional().is_none());
    }

    #[test]
    fn parse_accepts_atomic_and_optional_annotations() {
        let json = format!(
            r#"{{"critical":{{"type":"atomic container signature",
                "image":{{"docker-manifest-digest":"{DIGEST}"}},
                "identity":{{"docker-reference":"quay.io/x/y"}}}},
               "optional":{{"creator":"atomic","timestamp":1}}}}"#
        );
        let p = SimpleSigningPayload::parse(json.as_bytes()).unwrap();
        assert_eq!(p.signature_type(), ATOMIC_SIGNATURE_TYPE);
        assert_eq!(p.reference(), "quay.io/x/y");
        assert_eq!(p.optional().unwrap()["creator"], "atomic");
        // Missing `optional` is fine too.
        let json = format!(
            r#"{{"critical":{{"type":"cosign container image signature",
                "image":{{"docker-manifest-digest":"{DIGEST}"}},
                "identity":{{"docker-reference":"a/b"}}}}}}"#
        );
        assert!(SimpleSigningPayload::parse(json.as_bytes()).is_ok());
    }

    #[test]
    fn parse_rejects_other_types_and_garbage() {
        let json = SimpleSigningPayload::new("a/b", DIGEST)
            .to_bytes()
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .replace("cosign container image signature", "something else");
        let err = SimpleSigningPayload::parse(json.as_bytes()).unwrap_err();
        assert!(
            matches!(err, PayloadError::UnsupportedType { ref found } if found == "something else")
        );
        assert!(err.to_string().contains("something else"));

        assert!(matches!(
            SimpleSigningPayload::parse(b"not json"),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            SimpleSigningPayload::parse(
                br#"{"critical":{"type":"cosign container image signature"}}"#
            ),
            Err(PayloadError::Json(_))
        ));
    }

    #[test]
    fn repository_of_strips_tag_and_digest() {
        assert_eq!(
            repository_of("example.com/busybox:latest"),
            "example.com/busybox"
        );
        assert_eq!(repository_of("example.com/busybox"), "example.com/busybox");
        assert_eq!(repository_of("busybox:1.36"), "busybox");
        assert_eq!(repository_of("localhost:5000/x:tag"), "localhost:5000/x");
        assert_eq!(repository_of("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(
            repository_of(&format!("localhost:5000/a/b@{DIGEST}")),
            "localhost:5000/a/b"
        );
        assert_eq!(
            repository_of(&format!("example.com/busybox:1.0@{DIGEST}")),
            "example.com/busybox"
        );
        assert_eq!(repository_of(""), "");
    }
}
