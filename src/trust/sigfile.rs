//! Detached signature files: `<source>.sig` beside a local image source.
//!
//! The file is JSON. orbit writes an array,
//! `[{"payload": BASE64, "signature": BASE64, "keyid": "sha256:…"}]`, where `payload` holds the
//! exact signed bytes (a [`SimpleSigningPayload`]), `signature`
//! the raw signature (DER for ECDSA, as cosign's `--output-signature` after base64 decoding)
//! and `keyid` (optional, informational) the signer's key fingerprint. A single object is
//! accepted when reading too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::SigFileError;
use super::fsutil::atomic_write;
use super::keys::PrivateKey;
use super::payload::SimpleSigningPayload;

/// One detached signature over a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The exact bytes that were signed (a simple-signing JSON payload).
    pub payload: Vec<u8>,
    /// The signature bytes: ASN.1 DER for ECDSA, 64 bytes for Ed25519.
    pub signature: Vec<u8>,
    /// Fingerprint (`sha256:…`) of the signing key, if recorded. Informational only: it is
    /// never trusted, just used to explain failures and to try the named key first.
    pub key_id: Option<String>,
}

impl Signature {
    /// Signs `payload` with `key`, recording the key's fingerprint as key id.
    pub fn sign(key: &PrivateKey, payload: &SimpleSigningPayload) -> Self {
        let payload = payload.to_bytes();
        Signature {
            signature: key.sign(&payload),
            payload,
            key_id: Some(key.public_key().fingerprint()),
        }
    }

    /// `sha256:` + hex SHA-256 of the payload bytes.
    pub fn payload_digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.payload))
        )
    }
}

/// On-disk form of one entry.
#[derive(Serialize, Deserialize)]
struct Entry {
    payload: String,
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Entry>),
    One(Entry),
}

/// The signature file that belongs to `source`: the same path with `.sig` appended
/// (`busybox.oci.tar` → `busybox.oci.tar.sig`).
pub fn sig_path_for(source: &Path) -> PathBuf {
    let mut name = OsString::from(source.as_os_str());
    name.push(".sig");
    PathBuf::from(name)
}

/// Reads a signature file. A missing file is [`SigFileError::NotFound`] so the caller can
/// decide whether unsigned is acceptable.
pub fn read_sig_file(path: &Path) -> Result<Vec<Signature>, SigFileError> {
    let bytes = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SigFileError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            SigFileError::Io {
                path: path.to_path_buf(),
                error: source,
            }
        }
    })?;
    let entries = match serde_json::from_slice::<OneOrMany>(&bytes) {
        Ok(OneOrMany::Many(entries)) => entries,
        Ok(OneOrMany::One(entry)) => vec![entry],
        Err(untagged) => {
            // Untagged enums only say "did not match any variant"; re-parse as the shape the
            // file seems to have to report the precise problem.
            let single = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let precise = if single {
                serde_json::from_slice::<Entry>(&bytes).err()
            } else {
                serde_json::from_slice::<Vec<Entry>>(&bytes).err()
            };
            let source = precise.unwrap_or(untagged);
            return Err(SigFileError::Json {
                path: path.to_path_buf(),
                error: source,
            });
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let decode = |field: &'static str, text: &str| {
                STANDARD
                    .decode(text.trim())
                    .map_err(|source| SigFileError::Base64 {
                        path: path.to_path_buf(),
                        index,
                        field,
                        error: source,
                    })
            };
            Ok(Signature {
                payload: decode("payload", &entry.payload)?,
                signature: decode("signature", &entry.signature)?,
                key_id: entry.keyid,
            })
        })
        .collect()
}

/// Writes `signatures` to `path` atomically (a temporary file in the same directory, then a
/// rename), mode 0644, as a JSON array.
pub fn write_sig_file(path: &Path, signatures: &[Signature]) -> Result<(), SigFileError> {
    let entries: Vec<Entry> = signatures
        .iter()
        .map(|s| Entry {
            payload: STANDARD.encode(&s.payload),
            signature: STANDARD.encode(&s.signature),
            keyid: s.key_id.clone(),
        })
        .collect();
    let mut json = serde_json::to_vec_pretty(&entries).expect("serializing strings cannot fail");
    json.push(b'\n');
    atomic_write(path, &json, 0o644, None).map_err(|source| SigFileError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    Ok(())
}

/// Adds `new` to `signatures`, replacing an existing entry over the same payload (same
/// [`Signature::payload_digest`]) with the same key id, so re-signing does not pile up
/// duplicates. Returns `true` if an entry was replaced, `false` if `new` was appended.
pub fn merge(signatures: &mut Vec<Signature>, new: Signature) -> bool {
    let digest = new.payload_digest();
    match signatures
        .iter_mut()
        .find(|s| s.key_id == new.key_id && s.payload_digest() == digest)
    {
        Some(existing) => {
            *existing = new;
            true
        }
        None => {
            signatures.push(new);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::KeyAlgorithm;
    use std::os::unix::fs::PermissionsExt;

    fn sample(payload: &str, key: Option<&str>) -> Signature {
        Signature {
            payload: payload.as_bytes().to_vec(),
            signature: vec![1, 2, 3, payload.len() as u8],
            key_id: key.map(str::to_string),
        }
    }

    #[test]
    fn write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = sig_path_for(&dir.path().join("busybox.oci.tar"));
        assert_eq!(path, dir.path().join("busybox.oci.tar.sig"));
        let sigs = vec![sample("one", Some("sha256:aa")), sample("two", None)];
        write_sig_file(&path, &sigs).unwrap();
        assert_eq!(read_sig_file(&path).unwrap(), sigs);

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json[0]["payload"], STANDARD.encode("one"));
        assert_eq!(json[0]["keyid"], "sha256:aa");
        assert!(json[1].get("keyid").is_none(), "absent key id is omitted");
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn reads_single_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sig");
        std::fs::write(
            &path,
            format!(
                r#"{{"payload":"{}","signature":"{}"}}"#,
                STANDARD.encode("p"),
                STANDARD.encode([9u8, 9])
            ),
        )
        .unwrap();
        let sigs = read_sig_file(&path).unwrap();
        assert_eq!(
            sigs,
            vec![Signature {
                payload: b"p".to_vec(),
                signature: vec![9, 9],
                key_id: None
            }]
        );
    }

    #[test]
    fn read_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sig");
        assert!(matches!(
            read_sig_file(&missing),
            Err(SigFileError::NotFound { path }) if path == missing
        ));

        let bad = dir.path().join("bad.sig");
        std::fs::write(&bad, "[{\"payload\": 1}]").unwrap();
        let err = read_sig_file(&bad).unwrap_err();
        assert!(matches!(err, SigFileError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.sig"), "{err}");

        std::fs::write(&bad, r#"[{"payload":"cA==","signature":"not base64!"}]"#).unwrap();
        let err = read_sig_file(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                SigFileError::Base64 {
                    index: 0,
                    field: "signature",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn merge_replaces_same_payload_and_key() {
        let mut sigs = vec![sample("a", Some("k1")), sample("b", Some("k1"))];
        let mut replacement = sample("a", Some("k1"));
        replacement.signature = vec![42];
        assert!(merge(&mut sigs, replacement.clone()));
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0], replacement);

        // Same payload, other key: appended.
        assert!(!merge(&mut sigs, sample("a", Some("k2"))));
        // Other payload, same key: appended.
        assert!(!merge(&mut sigs, sample("c", Some("k1"))));
        assert_eq!(sigs.len(), 4);
    }

    #[test]
    fn sign_records_key_id() {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let payload = SimpleSigningPayload::new("a/b", "sha256:00");
        let sig = Signature::sign(&key, &payload);
        assert_eq!(sig.payload, payload.to_bytes());
        assert_eq!(sig.key_id, Some(key.public_key().fingerprint()));
        assert!(key.public_key().verify(&sig.payload, &sig.signature));
    }
}
