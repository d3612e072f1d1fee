//! Public and private signing keys: ECDSA P-256 (cosign's default) and Ed25519.
//!
//! Public keys are PEM `PUBLIC KEY` blocks (X.509 SubjectPublicKeyInfo), exactly what
//! `cosign generate-key-pair` writes to `cosign.pub` and `openssl pkey -pubout` prints.
//! Private keys are unencrypted PKCS#8 (`PRIVATE KEY`) or, for ECDSA, SEC1 (`EC PRIVATE KEY`,
//! as `openssl ecparam -genkey` writes). All cryptography is done by `ring`.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use spki::der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use spki::der::{Encode, Reader, SliceReader, TagMode, TagNumber};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::error::KeyError;

/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1 / secp256r1 / NIST P-256 (RFC 5480).
const OID_PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// id-Ed25519 (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// PEM tags of encrypted private keys: PKCS#8, cosign's and sigstore's.
const ENCRYPTED_TAGS: &[&str] = &[
    "ENCRYPTED PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
    "ENCRYPTED SIGSTORE PRIVATE KEY",
];

/// A signature algorithm supported by orbit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256; signatures are ASN.1 DER. cosign's default.
    EcdsaP256,
    /// Ed25519 (pure, RFC 8032); signatures are 64 raw bytes.
    Ed25519,
}

impl KeyAlgorithm {
    /// A short lowercase name: `ecdsa-p256` or `ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA P-256",
            KeyAlgorithm::Ed25519 => "Ed25519",
        })
    }
}

/// A public key that can verify signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    /// The raw key: an uncompressed SEC1 point (65 bytes) or the 32 Ed25519 bytes.
    raw: Vec<u8>,
    /// Canonical SubjectPublicKeyInfo DER, rebuilt from `algorithm` and `raw`.
    der: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo). Other blocks in the file
    /// (comments, certificates) are ignored; exactly one `PUBLIC KEY` block must be present.
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(pem_text).map_err(KeyError::Pem)?;
        let mut keys = blocks.iter().filter(|b| b.tag() == "PUBLIC KEY");
        match (keys.next(), keys.next()) {
            (Some(block), None) => Self::from_der(block.contents()),
            (Some(_), Some(_)) => Err(KeyError::MultiplePem {
                tag: "PUBLIC KEY".into(),
                count: blocks.iter().filter(|b| b.tag() == "PUBLIC KEY").count(),
            }),
            (None, _) => {
                let private = blocks.iter().any(|b| b.tag().contains("PRIVATE KEY"));
                Err(KeyError::UnexpectedPem {
                    expected: "PUBLIC KEY",
                    found: describe_tags(&blocks),
                    hint: if private {
                        " (this is a private key: never share it; derive the public key with \
                         `openssl pkey -in KEY -pubout -out key.pub` or use cosign's `cosign.pub`)"
                    } else {
                        ""
                    },
                })
            }
        }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| KeyError::Der {
            what: "SubjectPublicKeyInfo",
            detail: e.to_string(),
        })?;
        let algorithm = algorithm_of(&spki.algorithm)?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or(KeyError::Rejected {
                algorithm,
                reason: "the public key bit string has unused bits".into(),
            })?;
        Self::from_raw(algorithm, raw)
    }

    /// Builds a key from its raw form: an uncompressed SEC1 point (`04 || X || Y`, 65 bytes)
    /// for ECDSA P-256, or the 32-byte public key for Ed25519.
    pub fn from_raw(algorithm: KeyAlgorithm, raw: &[u8]) -> Result<Self, KeyError> {
        let reject = |reason: &str| KeyError::Rejected {
            algorithm,
            reason: reason.into(),
        };
        match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                if raw.len() == 33 && matches!(raw[0], 2 | 3) {
                    return Err(reject(
                        "compressed EC points are not supported; export the key uncompressed \
                         (`openssl ec -pubin -in KEY -pubout -conv_form uncompressed`)",
                    ));
                }
                if raw.len() != 65 || raw[0] != 4 {
                    return Err(reject("expected a 65-byte uncompressed P-256 point"));
                }
            }
            KeyAlgorithm::Ed25519 => {
                if raw.len() != 32 {
                    return Err(reject("expected a 32-byte Ed25519 public key"));
                }
            }
        }
        let der = encode_spki(algorithm, raw).map_err(|e| KeyError::Der {
            what: "SubjectPublicKeyInfo",
            detail: e.to_string(),
        })?;
        Ok(PublicKey {
            algorithm,
            raw: raw.to_vec(),
            der,
        })
    }

    /// Serializes the key as a PEM `PUBLIC KEY` block (LF line endings, trailing newline).
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// The canonical SubjectPublicKeyInfo DER encoding.
    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// The raw public key (SEC1 uncompressed point or 32 Ed25519 bytes).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// `sha256:` followed by the lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", self.fingerprint_hex())
    }

    /// The hex part of [`PublicKey::fingerprint`], as used for key file names.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.der))
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Checks `sig` over `msg`: ECDSA P-256 / SHA-256 with a DER signature, or Ed25519.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn signature::VerificationAlgorithm = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::Ed25519 => &signature::ED25519,
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(msg, sig)
            .is_ok()
    }
}

/// A private signing key. Its `Debug` output shows only the public fingerprint.
pub struct PrivateKey {
    inner: Signer,
    /// Unencrypted PKCS#8 DER, kept for [`PrivateKey::to_pem`].
    pkcs8: Vec<u8>,
    public: PublicKey,
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.public.algorithm)
            .field("public_fingerprint", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a fresh key pair with the system random number generator.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            }
            KeyAlgorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| KeyError::Generate(algorithm))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// Parses an unencrypted private key in PEM: PKCS#8 `PRIVATE KEY` (ECDSA P-256 or Ed25519,
    /// PKCS#8 v1 as openssl writes or v2 as ring writes) or SEC1 `EC PRIVATE KEY` (P-256).
    /// An `EC PARAMETERS` block before the key (`openssl ecparam -genkey` without `-noout`)
    /// is ignored. Encrypted keys are rejected with [`KeyError::Encrypted`].
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(pem_text).map_err(KeyError::Pem)?;
        if let Some(enc) = blocks.iter().find(|b| ENCRYPTED_TAGS.contains(&b.tag())) {
            return Err(KeyError::Encrypted {
                tag: enc.tag().to_string(),
            });
        }
        let candidates: Vec<&pem::Pem> = blocks
            .iter()
            .filter(|b| b.tag() == "PRIVATE KEY" || b.tag() == "EC PRIVATE KEY")
            .collect();
        let block = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(KeyError::UnexpectedPem {
                    expected: "PRIVATE KEY",
                    found: describe_tags(&blocks),
                    hint: if blocks.iter().any(|b| b.tag().ends_with("PRIVATE KEY")) {
                        " (only ECDSA P-256 and Ed25519 keys in PKCS#8 or SEC1 form are \
                         supported; convert with `openssl pkcs8 -topk8 -nocrypt -in KEY -out \
                         key.pem`)"
                    } else {
                        ""
                    },
                })
            }
            many => {
                return Err(KeyError::MultiplePem {
                    tag: many[0].tag().to_string(),
                    count: many.len(),
                })
            }
        };
        // Legacy OpenSSL encryption (`openssl ec -aes256`) keeps the tag and adds headers.
        if let Some(proc_type) = block.headers().get("Proc-Type") {
            if proc_type.contains("ENCRYPTED") {
                return Err(KeyError::Encrypted {
                    tag: format!("{} with Proc-Type: {proc_type}", block.tag()),
                });
            }
        }
        if block.tag() == "EC PRIVATE KEY" {
            let pkcs8 = sec1_to_pkcs8(block.contents())?;
            Self::from_pkcs8(&pkcs8)
        } else {
            Self::from_pkcs8(block.contents())
        }
    }

    /// Parses an unencrypted PKCS#8 `PrivateKeyInfo` (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let (algorithm, private_key) = parse_pkcs8(der)?;
        let rejected = |e: ring::error::KeyRejected| KeyError::Rejected {
            algorithm,
            reason: match e.to_string().as_str() {
                "InconsistentComponents" => "the embedded public key does not match the \
                                             private key"
                    .into(),
                "InvalidComponent" => "a key component is out of range".into(),
                "InvalidEncoding" => "the key encoding is malformed".into(),
                "PublicKeyIsMissing" => "the key does not embed its public key; re-export \
                                         it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out \
                                         key.pem`"
                    .into(),
                "WrongAlgorithm" => "the key does not match its declared algorithm".into(),
                other => format!("rejected by ring ({other})"),
            },
        };
        let (inner, raw_public, pkcs8) = match algorithm {
            KeyAlgorithm::EcdsaP256 => {
                let kp = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map_err(rejected)?;
                let public = kp.public_key().as_ref().to_vec();
                (Signer::Ecdsa(kp), public, der.to_vec())
            }
            KeyAlgorithm::Ed25519 => {
                // openssl writes PKCS#8 v1 (no embedded public key); ring's checked parser
                // insists on v2, so use the variant that derives the public key itself.
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?;
                let public = kp.public_key().as_ref().to_vec();
                (Signer::Ed25519(kp), public, ed25519_pkcs8_v1(private_key))
            }
        };
        Ok(PrivateKey {
            inner,
            pkcs8,
            public: PublicKey::from_raw(algorithm, &raw_public)?,
        })
    }

    /// Serializes the key as an unencrypted PKCS#8 PEM `PRIVATE KEY` block (PKCS#8 v1, the
    /// form OpenSSL and cosign write and read).
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    /// Signs `msg`: ECDSA P-256 / SHA-256 returning an ASN.1 DER signature (what cosign and
    /// `openssl dgst -sha256 -sign` produce), or Ed25519 returning 64 bytes.
    ///
    /// # Panics
    ///
    /// ECDSA signing needs fresh randomness; if the operating system's random number
    /// generator fails (which ring reports as its only failure mode) this panics, since no
    /// signature can be produced safely.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.inner {
            Signer::Ecdsa(kp) => kp
                .sign(&SystemRandom::new(), msg)
                .expect("system random number generator failed during ECDSA signing")
                .as_ref()
                .to_vec(),
            Signer::Ed25519(kp) => kp.sign(msg).as_ref().to_vec(),
        }
    }
}

/// Lists the PEM tags found, for error messages.
fn describe_tags(blocks: &[pem::Pem]) -> String {
    if blocks.is_empty() {
        "no PEM block".to_string()
    } else {
        let tags: Vec<String> = blocks.iter().map(|b| format!("`{}`", b.tag())).collect();
        tags.join(", ")
    }
}

/// Maps an AlgorithmIdentifier to a supported algorithm.
fn algorithm_of(alg: &AlgorithmIdentifierRef<'_>) -> Result<KeyAlgorithm, KeyError> {
    if alg.oid == OID_ED25519 {
        if alg.parameters.is_some() {
            return Err(KeyError::Rejected {
                algorithm: KeyAlgorithm::Ed25519,
                reason: "Ed25519 algorithm identifiers must not have parameters (RFC 8410)".into(),
            });
        }
        return Ok(KeyAlgorithm::Ed25519);
    }
    if alg.oid == OID_EC_PUBLIC_KEY {
        return match alg.parameters_oid() {
            Ok(curve) if curve == OID_PRIME256V1 => Ok(KeyAlgorithm::EcdsaP256),
            Ok(curve) => Err(KeyError::UnsupportedAlgorithm {
                description: format!("EC key on curve {}", curve_name(curve)),
            }),
            Err(_) => Err(KeyError::UnsupportedAlgorithm {
                description: "EC key without a named curve".into(),
            }),
        };
    }
    Err(KeyError::UnsupportedAlgorithm {
        description: algorithm_name(alg.oid),
    })
}

fn curve_name(curve: ObjectIdentifier) -> String {
    match curve.to_string().as_str() {
        "1.3.132.0.34" => "secp384r1 (1.3.132.0.34)".into(),
        "1.3.132.0.35" => "secp521r1 (1.3.132.0.35)".into(),
        "1.3.132.0.10" => "secp256k1 (1.3.132.0.10)".into(),
        other => other.to_string(),
    }
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA (1.2.840.113549.1.1.1)".into(),
        "1.3.101.113" => "Ed448 (1.3.101.113)".into(),
        other => format!("with algorithm OID {other}"),
    }
}

/// Encodes a SubjectPublicKeyInfo for a raw key.
fn encode_spki(algorithm: KeyAlgorithm, raw: &[u8]) -> Result<Vec<u8>, spki::der::Error> {
    let algorithm = match algorithm {
        KeyAlgorithm::EcdsaP256 => AlgorithmIdentifierRef {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&OID_PRIME256V1)),
        },
        KeyAlgorithm::Ed25519 => AlgorithmIdentifierRef {
            oid: OID_ED25519,
            parameters: None,
        },
    };
    SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(raw)?,
    }
    .to_der()
}

/// Reads the algorithm and the `privateKey` OCTET STRING contents of a PKCS#8
/// `PrivateKeyInfo` / `OneAsymmetricKey` (RFC 5958): `SEQUENCE { version INTEGER,
/// privateKeyAlgorithm AlgorithmIdentifier, privateKey OCTET STRING, [0] attributes OPTIONAL,
/// [1] publicKey OPTIONAL }`. ring validates the key material itself.
fn parse_pkcs8(der: &[u8]) -> Result<(KeyAlgorithm, &[u8]), KeyError> {
    let malformed = |e: spki::der::Error| KeyError::Der {
        what: "PKCS#8 private key",
        detail: e.to_string(),
    };
    let mut reader = SliceReader::new(der).map_err(malformed)?;
    let (alg, private_key) = reader
        .sequence(|r| {
            let _version: u8 = r.decode()?;
            let alg: AlgorithmIdentifierRef<'_> = r.decode()?;
            let private_key: OctetStringRef<'_> = r.decode()?;
            // Skip the optional attributes and public key; ring parses them.
            let rest = r.remaining_len();
            r.read_slice(rest)?;
            Ok((alg, private_key.as_bytes()))
        })
        .map_err(malformed)?;
    reader.finish(()).map_err(malformed)?;
    Ok((algorithm_of(&alg)?, private_key))
}

/// Re-encodes an Ed25519 key as PKCS#8 v1 (RFC 8410 section 7: version 0, no public key).
///
/// ring generates PKCS#8 v2 (with the public key), which OpenSSL 3.0 — Debian bookworm's —
/// cannot read; v1 is what `openssl genpkey` and Go's `x509.MarshalPKCS8PrivateKey` (cosign)
/// write, and ring reads it with `from_pkcs8_maybe_unchecked`. `curve_private_key` is the
/// `privateKey` OCTET STRING contents (itself an OCTET STRING holding the 32-byte seed).
fn ed25519_pkcs8_v1(curve_private_key: &[u8]) -> Vec<u8> {
    let mut body = der_tlv(0x02, &[0]); // version 0 (v1)
    body.extend(der_tlv(0x30, &der_tlv(0x06, OID_ED25519.as_bytes())));
    body.extend(der_tlv(0x04, curve_private_key));
    der_tlv(0x30, &body)
}

/// Wraps a SEC1 `ECPrivateKey` (RFC 5915, `-----BEGIN EC PRIVATE KEY-----`) into PKCS#8.
///
/// ring only loads EC private keys from PKCS#8, and a PKCS#8 `PrivateKeyInfo` for an EC key
/// is nothing but the unchanged SEC1 structure in an OCTET STRING next to the algorithm
/// identifier (RFC 5915 section 3). No crate in our dependency set builds PKCS#8 (ring does
/// not expose it; `spki` covers only public keys), and the structure is three fixed fields,
/// so we write the DER by hand:
///
/// ```text
/// PrivateKeyInfo ::= SEQUENCE {
///   version             INTEGER 0,
///   privateKeyAlgorithm SEQUENCE { id-ecPublicKey, prime256v1 },
///   privateKey          OCTET STRING (the SEC1 DER) }
/// ```
///
/// The curve in the SEC1 `[0] parameters` is checked first so a key on another curve gets
/// a clear error rather than ring's generic rejection.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>, KeyError> {
    let malformed = |e: spki::der::Error| KeyError::Der {
        what: "SEC1 EC private key",
        detail: e.to_string(),
    };
    let mut reader = SliceReader::new(sec1).map_err(malformed)?;
    let (curve, has_public) = reader
        .sequence(|r| {
            let _version: u8 = r.decode()?;
            let _private: OctetStringRef<'_> = r.decode()?;
            let curve: Option<ObjectIdentifier> =
                r.context_specific(TagNumber::N0, TagMode::Explicit)?;
            let public: Option<BitStringRef<'_>> =
                r.context_specific(TagNumber::N1, TagMode::Explicit)?;
            Ok((curve, public.is_some()))
        })
        .map_err(malformed)?;
    reader.finish(()).map_err(malformed)?;
    if let Some(curve) = curve {
        if curve != OID_PRIME256V1 {
            return Err(KeyError::UnsupportedAlgorithm {
                description: format!("EC key on curve {}", curve_name(curve)),
            });
        }
    }
    if !has_public {
        return Err(KeyError::Rejected {
            algorithm: KeyAlgorithm::EcdsaP256,
            reason: "the SEC1 key does not embed its public key; re-export it with \
                     `openssl pkcs8 -topk8 -nocrypt -in KEY -out key.pem`"
                .into(),
        });
    }

    let mut algorithm_id = Vec::new();
    algorithm_id.extend(der_tlv(0x06, OID_EC_PUBLIC_KEY.as_bytes()));
    algorithm_id.extend(der_tlv(0x06, OID_PRIME256V1.as_bytes()));

    let mut body = der_tlv(0x02, &[0]); // version 0
    body.extend(der_tlv(0x30, &algorithm_id));
    body.extend(der_tlv(0x04, sec1));
    Ok(der_tlv(0x30, &body))
}

/// Encodes one DER tag-length-value with a definite length (short or long form).
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_tlv_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        assert_eq!(long.len(), 203);
        let longer = der_tlv(0x30, &[0; 300]);
        assert_eq!(&longer[..4], &[0x30, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn spki_encoding_matches_known_prefixes() {
        // Fixed DER headers of P-256 and Ed25519 SubjectPublicKeyInfo.
        let ec = encode_spki(KeyAlgorithm::EcdsaP256, &[4; 65]).unwrap();
        assert_eq!(
            hex::encode(&ec[..26]),
            "3059301306072a8648ce3d020106082a8648ce3d030107034200"
        );
        let ed = encode_spki(KeyAlgorithm::Ed25519, &[7; 32]).unwrap();
        assert_eq!(hex::encode(&ed[..12]), "302a300506032b6570032100");
    }
}
