//! Image verification: does any signature bind this image's manifest to its name with a key
//! the user trusts for it?

use super::error::TrustError;
use super::payload::{repository_of, SimpleSigningPayload};
use super::sigfile::Signature;
use super::store::{TrustStore, TrustedKey};

/// A successful verification.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The trusted key that made the accepted signature.
    pub key: TrustedKey,
    /// Zero-based index of the accepted signature in the slice given to [`verify_image`].
    pub signature_index: usize,
    /// The accepted signature's payload.
    pub payload: SimpleSigningPayload,
}

/// Verifies that one of `signatures` is valid for image `image_name` (e.g.
/// `example.com/busybox:latest`) with manifest `manifest_digest` (`sha256:…`).
///
/// A signature is accepted only if its bytes verify with one of
/// [`TrustStore::keys_for`]`(image_name)`, its payload parses as a simple-signing payload, its
/// `docker-manifest-digest` equals `manifest_digest`, and its `docker-reference` equals the
/// repository of `image_name` (or `image_name` itself). The key id recorded with a signature
/// is only a hint: it decides which key is tried first, never whether one is trusted.
///
/// Errors are [`TrustError::NoSignature`], [`TrustError::NoTrustedKey`],
/// [`TrustError::Untrusted`] (with one explanation per signature) or
/// [`TrustError::Store`] if the key store cannot be read.
pub fn verify_image(
    store: &TrustStore,
    image_name: &str,
    manifest_digest: &str,
    signatures: &[Signature],
) -> Result<Verified, TrustError> {
    let repository = repository_of(image_name);
    if signatures.is_empty() {
        return Err(TrustError::NoSignature {
            image: image_name.to_string(),
        });
    }
    let keys = store.keys_for(image_name)?;
    if keys.is_empty() {
        return Err(TrustError::NoTrustedKey {
            image: image_name.to_string(),
            repository: repository.to_string(),
        });
    }

    // Computed only when needed to explain a failure.
    let mut all_keys: Option<Vec<TrustedKey>> = None;
    let mut details = Vec::new();
    for (index, sig) in signatures.iter().enumerate() {
        let n = index + 1;
        let hinted = sig.key_id.as_deref().map(normalize_key_id);
        let mut ordered: Vec<&TrustedKey> = keys.iter().collect();
        // Stable sort: the hinted key first, the rest in store order.
        ordered.sort_by_key(|k| Some(k.fingerprint.as_str()) != hinted.as_deref());

        let Some(key) = ordered
            .into_iter()
            .find(|k| k.key.verify(&sig.payload, &sig.signature))
        else {
            if all_keys.is_none() {
                all_keys = Some(store.list()?);
            }
            let all = all_keys.as_deref().unwrap_or_default();
            details.push(explain_bad_signature(
                n,
                sig,
                hinted.as_deref(),
                &keys,
                all,
                repository,
            ));
            continue;
        };

        let payload = match SimpleSigningPayload::parse(&sig.payload) {
            Ok(p) => p,
            Err(e) => {
                details.push(format!(
                    "signature {n} was made by trusted key {} but its payload is unusable: {e}",
                    key.fingerprint
                ));
                continue;
            }
        };
        if payload.digest() != manifest_digest {
            details.push(format!(
                "signature {n} (key {}) signs manifest digest {}, but this image's manifest \
                 digest is {}",
                key.fingerprint,
                payload.digest(),
                manifest_digest
            ));
            continue;
        }
        if payload.reference() != repository && payload.reference() != image_name {
            details.push(format!(
                "signature {n} (key {}) signs the identity {}, but this image is {}",
                key.fingerprint,
                payload.reference(),
                repository
            ));
            continue;
        }
        return Ok(Verified {
            key: key.clone(),
            signature_index: index,
            payload,
        });
    }

    let mut expected: Vec<String> = Vec::new();
    for k in &keys {
        if !expected.contains(&k.fingerprint) {
            expected.push(k.fingerprint.clone());
        }
    }
    Err(TrustError::Untrusted {
        image: image_name.to_string(),
        repository: repository.to_string(),
        expected,
        details,
    })
}

/// Key ids are fingerprints; accept them with or without `sha256:` and in any case.
fn normalize_key_id(id: &str) -> String {
    let id = id.trim().to_ascii_lowercase();
    if id.starts_with("sha256:") {
        id
    } else {
        format!("sha256:{id}")
    }
}

/// Says why signature `n` verified with none of `tried`, using the whole store to spot keys
/// that are trusted, but for other prefixes.
fn explain_bad_signature(
    n: usize,
    sig: &Signature,
    hinted: Option<&str>,
    tried: &[TrustedKey],
    all: &[TrustedKey],
    repository: &str,
) -> String {
    let subject = match SimpleSigningPayload::parse(&sig.payload) {
        Ok(p) => format!("signature {n} (for {}@{})", p.reference(), p.digest()),
        Err(_) => format!("signature {n}"),
    };
    let elsewhere: Vec<&TrustedKey> = all
        .iter()
        .filter(|k| !tried.iter().any(|t| t.fingerprint == k.fingerprint))
        .filter(|k| k.key.verify(&sig.payload, &sig.signature))
        .collect();
    if let Some(first) = elsewhere.first() {
        let scopes: Vec<String> = elsewhere.iter().map(|k| k.scope.to_string()).collect();
        return format!(
            "{subject} was made by key {}, which is trusted only for {}, not for {repository}",
            first.fingerprint,
            scopes.join(" and ")
        );
    }
    match hinted {
        Some(id) if tried.iter().any(|k| k.fingerprint == id) => format!(
            "{subject} is bad: it names trusted key {id} but does not verify with it, so the \
             payload or signature was modified"
        ),
        Some(id) => format!(
            "{subject} was made by key {id}, which is not trusted for {repository}, or the \
             signature is bad"
        ),
        None => format!(
            "{subject} does not verify with any key trusted for {repository}: it was made by \
             an unknown key, or the payload or signature was modified"
        ),
    }
}
