//! Cross-module tests of the trust module: key round trips, interoperability with the real
//! `openssl` CLI, the on-disk key store and image verification.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::*;
use crate::config::ConfigDirs;

const DIGEST: &str = "sha256:9d1fd6b4c2a0e8f3b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4";
const OTHER_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const REPO: &str = "example.com/busybox";
const IMAGE: &str = "example.com/busybox:latest";

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs `openssl ARGS` (split on white space; no argument has any) in `dir`.
fn run_openssl(dir: &Path, args: &str) -> std::process::Output {
    Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed to run the interop tests")
}

/// Runs `openssl ARGS` in `dir`, failing the test with its stderr if it fails; returns stdout.
fn openssl(dir: &Path, args: &str) -> String {
    let out = run_openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`openssl`] but returns whether it succeeded (for verification commands).
fn openssl_ok(dir: &Path, args: &str) -> bool {
    run_openssl(dir, args).status.success()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn payload_bytes() -> Vec<u8> {
    SimpleSigningPayload::new(REPO, DIGEST).to_bytes()
}

struct Env {
    _tmp: TempDir,
    dirs: ConfigDirs,
    store: TrustStore,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = ConfigDirs {
        vendor: tmp.path().join("vendor"),
        system: tmp.path().join("system"),
        user: tmp.path().join("user"),
        net_dirs: Vec::new(),
    };
    Env {
        store: TrustStore::new(dirs.clone()),
        dirs,
        _tmp: tmp,
    }
}

fn prefix(p: &str) -> TrustScope {
    TrustScope::Prefix(p.to_string())
}

fn sign(key: &PrivateKey, reference: &str, digest: &str) -> Signature {
    Signature::sign(key, &SimpleSigningPayload::new(reference, digest))
}

fn untrusted(err: TrustError) -> (String, Vec<String>, Vec<String>) {
    let msg = err.to_string();
    match err {
        TrustError::Untrusted {
            expected, details, ..
        } => (msg, expected, details),
        other => panic!("expected Untrusted, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// keys: round trips

#[test]
fn keygen_sign_verify_both_algorithms() {
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(alg).unwrap();
        let public = key.public_key();
        assert_eq!(key.algorithm(), alg);
        assert_eq!(public.algorithm(), alg);
        let msg = payload_bytes();
        let sig = key.sign(&msg);
        if alg == KeyAlgorithm::EcdsaP256 {
            assert_eq!(sig[0], 0x30, "ECDSA signatures are DER sequences");
        } else {
            assert_eq!(sig.len(), 64);
        }
        assert!(public.verify(&msg, &sig), "{alg}");

        let mut tampered_msg = msg.clone();
        tampered_msg[10] ^= 1;
        assert!(
            !public.verify(&tampered_msg, &sig),
            "{alg}: tampered message"
        );
        let mut tampered_sig = sig.clone();
        let last = tampered_sig.len() - 1;
        tampered_sig[last] ^= 1;
        assert!(
            !public.verify(&msg, &tampered_sig),
            "{alg}: tampered signature"
        );
        let other = PrivateKey::generate(alg).unwrap().public_key();
        assert!(!other.verify(&msg, &sig), "{alg}: other key");
        assert!(!public.verify(&msg, &[]), "{alg}: empty signature");
    }
}

#[test]
fn pem_round_trips_and_stable_fingerprints() {
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(alg).unwrap();
        let reloaded = PrivateKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(reloaded.public_key(), key.public_key());
        assert_eq!(reloaded.to_pem(), key.to_pem());
        assert!(key.public_key().verify(b"m", &reloaded.sign(b"m")));
        assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));

        let public = key.public_key();
        let pem = public.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        let parsed = PublicKey::from_pem(&pem).unwrap();
        assert_eq!(parsed, public);
        assert_eq!(parsed.to_pem(), pem);
        assert_eq!(parsed.fingerprint(), public.fingerprint());
        assert_eq!(PublicKey::from_der(public.to_der()).unwrap(), public);

        let fp = public.fingerprint();
        assert!(fp.starts_with("sha256:"));
        assert_eq!(fp.len(), 7 + 64);
        assert_eq!(&fp[7..], public.fingerprint_hex());
        assert_eq!(
            fp[7..],
            hex::encode(ring::digest::digest(&ring::digest::SHA256, public.to_der()))
        );
        assert_ne!(
            fp,
            PrivateKey::generate(alg)
                .unwrap()
                .public_key()
                .fingerprint()
        );
        // CRLF and surrounding text do not change the key.
        let crlf = format!("my key:\r\n{}", pem.replace('\n', "\r\n"));
        assert_eq!(PublicKey::from_pem(&crlf).unwrap().fingerprint(), fp);
    }
}

#[test]
fn fingerprint_matches_openssl_der_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    openssl(d, "ecparam -name prime256v1 -genkey -noout -out k.pem");
    openssl(d, "ec -in k.pem -pubout -out pub.pem");
    openssl(d, "pkey -pubin -in pub.pem -outform DER -out pub.der");
    let der = std::fs::read(d.join("pub.der")).unwrap();
    let key = PublicKey::from_pem(&read(d, "pub.pem")).unwrap();
    assert_eq!(key.to_der(), der.as_slice());
    assert_eq!(
        key.fingerprint(),
        format!(
            "sha256:{}",
            hex::encode(ring::digest::digest(&ring::digest::SHA256, &der))
        )
    );
    // Byte-identical PEM to openssl's.
    assert_eq!(key.to_pem(), read(d, "pub.pem"));
}

#[test]
fn public_key_parse_errors() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let err = PublicKey::from_pem(&key.to_pem()).unwrap_err();
    assert!(matches!(err, KeyError::UnexpectedPem { .. }), "{err:?}");
    assert!(err.to_string().contains("-pubout"), "{err}");

    assert!(matches!(
        PublicKey::from_pem("hello"),
        Err(KeyError::UnexpectedPem { .. })
    ));
    let two = format!("{}{}", key.public_key().to_pem(), key.public_key().to_pem());
    assert!(matches!(
        PublicKey::from_pem(&two),
        Err(KeyError::MultiplePem { count: 2, .. })
    ));
    let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        PublicKey::from_pem(garbage),
        Err(KeyError::Der { .. })
    ));
}

#[test]
fn unsupported_keys_are_rejected_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    openssl(d, "ecparam -name secp384r1 -genkey -noout -out p384.pem");
    openssl(d, "ec -in p384.pem -pubout -out p384.pub");
    openssl(d, "pkcs8 -topk8 -nocrypt -in p384.pem -out p384-8.pem");
    for file in ["p384.pem", "p384-8.pem"] {
        let err = PrivateKey::from_pem(&read(d, file)).unwrap_err();
        assert!(
            matches!(err, KeyError::UnsupportedAlgorithm { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains("secp384r1"), "{err}");
    }
    let err = PublicKey::from_pem(&read(d, "p384.pub")).unwrap_err();
    assert!(err.to_string().contains("secp384r1"), "{err}");
    assert!(err.to_string().contains("ECDSA P-256"), "{err}");

    openssl(
        d,
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa.pem",
    );
    openssl(d, "pkey -in rsa.pem -pubout -out rsa.pub");
    let err = PublicKey::from_pem(&read(d, "rsa.pub")).unwrap_err();
    assert!(err.to_string().contains("RSA"), "{err}");
    let err = PrivateKey::from_pem(&read(d, "rsa.pem")).unwrap_err();
    assert!(
        matches!(err, KeyError::UnsupportedAlgorithm { .. }),
        "{err:?}"
    );
}

#[test]
fn encrypted_private_keys_are_rejected_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    openssl(d, "ecparam -name prime256v1 -genkey -noout -out k.pem");
    // PKCS#8 encrypted.
    openssl(
        d,
        "pkcs8 -topk8 -in k.pem -passout pass:secret -out enc8.pem",
    );
    // Legacy OpenSSL encryption: `EC PRIVATE KEY` with Proc-Type/DEK-Info headers.
    openssl(
        d,
        "ec -in k.pem -aes256 -passout pass:secret -out legacy.pem",
    );
    let cosign = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n\
                  eyJrZGYiOnsibmFtZSI6InNjcnlwdCJ9fQ==\n\
                  -----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
    let cosign_old = cosign.replace("SIGSTORE", "COSIGN");
    for (name, text) in [
        ("pkcs8", read(d, "enc8.pem")),
        ("legacy", read(d, "legacy.pem")),
        ("cosign", cosign.to_string()),
        ("cosign-old", cosign_old),
    ] {
        let err = PrivateKey::from_pem(&text).unwrap_err();
        assert!(matches!(err, KeyError::Encrypted { .. }), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("not supported yet"), "{msg}");
        assert!(msg.contains("PKCS#8"), "{msg}");
        assert!(msg.contains("openssl"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// keys: openssl interop

#[test]
fn openssl_ecdsa_interop() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("payload"), payload_bytes()).unwrap();
    openssl(d, "ecparam -name prime256v1 -genkey -noout -out k.pem");
    openssl(d, "ec -in k.pem -pubout -out pub.pem");
    assert!(read(d, "k.pem").contains("BEGIN EC PRIVATE KEY"));

    // openssl signs, orbit verifies.
    openssl(d, "dgst -sha256 -sign k.pem -out openssl.sig payload");
    let public = PublicKey::from_pem(&read(d, "pub.pem")).unwrap();
    assert_eq!(public.algorithm(), KeyAlgorithm::EcdsaP256);
    let sig = std::fs::read(d.join("openssl.sig")).unwrap();
    assert!(public.verify(&payload_bytes(), &sig));
    assert!(!public.verify(b"other payload", &sig));

    // PKCS#8 conversions of the same key, and an `EC PARAMETERS` + SEC1 file.
    openssl(d, "pkcs8 -topk8 -nocrypt -in k.pem -out k8.pem");
    openssl(d, "ecparam -name prime256v1 -genkey -out withparams.pem");
    assert!(read(d, "withparams.pem").contains("BEGIN EC PARAMETERS"));
    openssl(d, "ec -in withparams.pem -pubout -out withparams.pub");

    for (private, public_file) in [
        ("k.pem", "pub.pem"),
        ("k8.pem", "pub.pem"),
        ("withparams.pem", "withparams.pub"),
    ] {
        let key = PrivateKey::from_pem(&read(d, private)).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::EcdsaP256);
        assert_eq!(
            key.public_key(),
            PublicKey::from_pem(&read(d, public_file)).unwrap(),
            "{private}"
        );
        // orbit signs, openssl verifies.
        std::fs::write(d.join("orbit.sig"), key.sign(&payload_bytes())).unwrap();
        let out = openssl(
            d,
            &format!("dgst -sha256 -verify {public_file} -signature orbit.sig payload"),
        );
        assert!(out.contains("Verified OK"), "{private}: {out}");
        // And openssl rejects it for a different message (the check can fail).
        std::fs::write(d.join("other"), b"other").unwrap();
        assert!(!openssl_ok(
            d,
            &format!("dgst -sha256 -verify {public_file} -signature orbit.sig other")
        ));
    }

    // The PKCS#8 orbit writes for a loaded SEC1 key is readable by openssl and is the same key.
    let key = PrivateKey::from_pem(&read(d, "k.pem")).unwrap();
    std::fs::write(d.join("orbit8.pem"), key.to_pem()).unwrap();
    let pub_out = openssl(d, "pkey -in orbit8.pem -pubout");
    assert_eq!(pub_out, read(d, "pub.pem"));

    // `openssl genpkey` EC keys (PKCS#8 directly).
    openssl(
        d,
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out g.pem",
    );
    let key = PrivateKey::from_pem(&read(d, "g.pem")).unwrap();
    let pub_out = openssl(d, "pkey -in g.pem -pubout");
    assert_eq!(key.public_key().to_pem(), pub_out);
}

#[test]
fn openssl_ed25519_interop() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("payload"), payload_bytes()).unwrap();
    openssl(d, "genpkey -algorithm ed25519 -out ed.pem");
    openssl(d, "pkey -in ed.pem -pubout -out pub.pem");

    // openssl signs, orbit verifies.
    openssl(
        d,
        "pkeyutl -sign -rawin -inkey ed.pem -in payload -out openssl.sig",
    );
    let public = PublicKey::from_pem(&read(d, "pub.pem")).unwrap();
    assert_eq!(public.algorithm(), KeyAlgorithm::Ed25519);
    let sig = std::fs::read(d.join("openssl.sig")).unwrap();
    assert!(public.verify(&payload_bytes(), &sig));
    assert!(!public.verify(b"other payload", &sig));

    // openssl's PKCS#8 v1 private key loads; orbit's signatures verify with openssl.
    let key = PrivateKey::from_pem(&read(d, "ed.pem")).unwrap();
    assert_eq!(key.public_key(), public);
    assert_eq!(
        key.to_pem(),
        read(d, "ed.pem"),
        "written back exactly as openssl wrote it"
    );
    let ours = key.sign(&payload_bytes());
    assert_eq!(
        ours, sig,
        "Ed25519 is deterministic: same key, same message, same signature"
    );
    std::fs::write(d.join("orbit.sig"), &ours).unwrap();
    let verify = |file: &str| {
        openssl_ok(
            d,
            &format!("pkeyutl -verify -pubin -inkey pub.pem -rawin -in {file} -sigfile orbit.sig"),
        )
    };
    assert!(verify("payload"));
    std::fs::write(d.join("other"), b"other").unwrap();
    assert!(!verify("other"));

    // A key generated by orbit is readable by openssl (OpenSSL 3.0 cannot read PKCS#8 v2).
    let generated = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    std::fs::write(d.join("gen.pem"), generated.to_pem()).unwrap();
    let pub_out = openssl(d, "pkey -in gen.pem -pubout");
    assert_eq!(pub_out, generated.public_key().to_pem());
}

#[test]
fn orbit_generated_ecdsa_key_works_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    std::fs::write(d.join("k.pem"), key.to_pem()).unwrap();
    std::fs::write(d.join("pub.pem"), key.public_key().to_pem()).unwrap();
    std::fs::write(d.join("payload"), payload_bytes()).unwrap();
    assert_eq!(openssl(d, "pkey -in k.pem -pubout"), read(d, "pub.pem"));
    openssl(d, "dgst -sha256 -sign k.pem -out sig payload");
    let sig = std::fs::read(d.join("sig")).unwrap();
    assert!(key.public_key().verify(&payload_bytes(), &sig));
}

// ---------------------------------------------------------------------------------------------
// trust store

#[test]
fn store_add_list_remove() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)
        .unwrap()
        .public_key();
    assert!(
        env.store.list().unwrap().is_empty(),
        "missing directories are an empty store"
    );

    let added = env.store.add(prefix(REPO), &key, &env.dirs.system).unwrap();
    let expected_path = env
        .dirs
        .system
        .join("trustedkeys/prefix.d/example.com%2Fbusybox")
        .join(format!("{}.pub", key.fingerprint_hex()));
    assert_eq!(added.path, expected_path);
    assert_eq!(added.scope, prefix(REPO));
    assert_eq!(added.fingerprint, key.fingerprint());
    assert_eq!(added.algorithm, KeyAlgorithm::EcdsaP256);
    assert_eq!(added.config_dir, env.dirs.system);
    assert_eq!(
        std::fs::read_to_string(&expected_path).unwrap(),
        key.to_pem()
    );
    let mode = std::fs::metadata(&expected_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);

    // Idempotent.
    let again = env.store.add(prefix(REPO), &key, &env.dirs.system).unwrap();
    assert_eq!(again, added);
    assert_eq!(env.store.list().unwrap(), vec![added.clone()]);
    let files: Vec<_> = std::fs::read_dir(expected_path.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "no temporary files left behind");

    let root_key = PrivateKey::generate(KeyAlgorithm::Ed25519)
        .unwrap()
        .public_key();
    let root = env
        .store
        .add(TrustScope::Root, &root_key, &env.dirs.system)
        .unwrap();
    assert_eq!(
        root.path,
        env.dirs
            .system
            .join("trustedkeys/root.d")
            .join(format!("{}.pub", root_key.fingerprint_hex()))
    );
    assert_eq!(env.store.list().unwrap(), vec![root.clone(), added.clone()]);

    // Remove by short hex prefix with `sha256:`.
    let removed = env
        .store
        .remove(&format!("sha256:{}", &key.fingerprint_hex()[..12]), None)
        .unwrap();
    assert_eq!(removed, vec![added.clone()]);
    assert!(!expected_path.exists());
    assert!(
        !expected_path.parent().unwrap().exists(),
        "empty prefix directory removed"
    );
    assert_eq!(env.store.list().unwrap(), vec![root.clone()]);

    // Removing again: no match.
    let err = env.store.remove(&key.fingerprint(), None).unwrap_err();
    assert!(matches!(err, StoreError::NoMatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&key.fingerprint()), "{err}");

    // Full fingerprint in upper case without `sha256:`.
    let removed = env
        .store
        .remove(&root_key.fingerprint_hex().to_uppercase(), None)
        .unwrap();
    assert_eq!(removed, vec![root]);
    assert!(env.store.list().unwrap().is_empty());
}

#[test]
fn store_escaping_on_disk() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519)
        .unwrap()
        .public_key();
    for p in ["localhost:5000/team/app", "example.com/", "100%.org/x_y-z"] {
        let added = env.store.add(prefix(p), &key, &env.dirs.user).unwrap();
        let dir_name = added
            .path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(dir_name, store::escape_prefix(p));
        assert!(!dir_name.contains('/'));
        assert_eq!(
            added.path.parent().unwrap().parent().unwrap(),
            env.dirs.user.join("trustedkeys/prefix.d")
        );
    }
    assert!(env
        .dirs
        .user
        .join("trustedkeys/prefix.d/localhost%3A5000%2Fteam%2Fapp")
        .is_dir());
    assert!(env
        .dirs
        .user
        .join("trustedkeys/prefix.d/100%25.org%2Fx_y-z")
        .is_dir());
    let mut scopes: Vec<TrustScope> = env
        .store
        .list()
        .unwrap()
        .into_iter()
        .map(|k| k.scope)
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        vec![
            prefix("100%.org/x_y-z"),
            prefix("example.com/"),
            prefix("localhost:5000/team/app")
        ]
    );
}

#[test]
fn store_rejects_invalid_prefixes_and_bad_files() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519)
        .unwrap()
        .public_key();
    for bad in ["", "has space", "tab\there", "example.com/busybox:latest"] {
        let err = env
            .store
            .add(prefix(bad), &key, &env.dirs.system)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidPrefix { .. }),
            "{bad:?}: {err:?}"
        );
    }
    assert!(
        !env.dirs.system.exists(),
        "nothing written for invalid prefixes"
    );

    // A malformed key file is skipped, not fatal: the other keys stay usable, and the
    // broken file is reported with its path and why.
    let good = env
        .store
        .add(TrustScope::Root, &key, &env.dirs.system)
        .unwrap();
    let root_d = env.dirs.vendor.join("trustedkeys/root.d");
    std::fs::create_dir_all(&root_d).unwrap();
    std::fs::write(root_d.join("junk.pub"), "not a key").unwrap();
    std::fs::write(root_d.join("README"), "ignored: not *.pub").unwrap();
    assert_eq!(env.store.list().unwrap(), std::slice::from_ref(&good));
    assert_eq!(
        env.store.keys_for(IMAGE).unwrap(),
        std::slice::from_ref(&good)
    );
    let broken = env.store.broken().unwrap();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].path, root_d.join("junk.pub"));
    assert_eq!(broken[0].scope, Some(TrustScope::Root));
    assert!(
        broken[0].reason.contains("not a valid public key"),
        "{broken:?}"
    );
    std::fs::remove_file(root_d.join("junk.pub")).unwrap();
    assert!(env.store.broken().unwrap().is_empty());

    // A prefix directory with a malformed escape.
    let bad_dir = env.dirs.vendor.join("trustedkeys/prefix.d/bad%zz");
    std::fs::create_dir_all(&bad_dir).unwrap();
    assert_eq!(env.store.list().unwrap(), [good]);
    let broken = env.store.broken().unwrap();
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(broken[0].path, bad_dir);
    assert!(broken[0].reason.contains("bad%zz"), "{broken:?}");
}

#[test]
fn error_messages_give_their_cause_once() {
    use std::error::Error as _;
    let tmp = tempfile::tempdir().unwrap();
    let sig = tmp.path().join("x.sig");
    std::fs::write(&sig, "{}").unwrap();
    let err = read_sig_file(&sig).unwrap_err();
    // What `{:#}` (anyhow) prints: the message, then each cause.
    let mut chain = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        cause = c.source();
    }
    let detail = "missing field `payload`";
    assert!(chain.contains(detail), "{chain}");
    assert_eq!(chain.matches(detail).count(), 1, "{chain}");

    let err = PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        err.source().is_none_or(|c| !text.contains(&c.to_string())),
        "{text}"
    );
}

#[test]
fn store_lists_all_three_dirs_in_precedence_order() {
    let env = env();
    let shared = PrivateKey::generate(KeyAlgorithm::EcdsaP256)
        .unwrap()
        .public_key();
    let system_only = PrivateKey::generate(KeyAlgorithm::Ed25519)
        .unwrap()
        .public_key();
    env.store
        .add(prefix(REPO), &shared, &env.dirs.user)
        .unwrap();
    env.store
        .add(prefix(REPO), &system_only, &env.dirs.system)
        .unwrap();
    env.store
        .add(prefix(REPO), &shared, &env.dirs.vendor)
        .unwrap();

    let listed = env.store.list().unwrap();
    let summary: Vec<(&Path, &str)> = listed
        .iter()
        .map(|k| (k.config_dir.as_path(), k.fingerprint.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (env.dirs.vendor.as_path(), shared.fingerprint().as_str()),
            (
                env.dirs.system.as_path(),
                system_only.fingerprint().as_str()
            ),
            (env.dirs.user.as_path(), shared.fingerprint().as_str()),
        ]
    );
    for k in &listed {
        assert!(k.path.starts_with(&k.config_dir));
    }
    assert_eq!(env.store.keys_for(IMAGE).unwrap().len(), 3);

    // Removing a key removes it from every directory it is in, and only it.
    let removed = env.store.remove(&shared.fingerprint(), None).unwrap();
    let dirs: Vec<PathBuf> = removed.iter().map(|k| k.config_dir.clone()).collect();
    assert_eq!(dirs, vec![env.dirs.vendor.clone(), env.dirs.user.clone()]);
    assert_eq!(env.store.list().unwrap().len(), 1);
}

#[test]
fn store_remove_ambiguous_unknown_and_scoped() {
    let env = env();
    // Find two keys whose fingerprints share the first hex digit.
    let mut keys: Vec<PublicKey> = Vec::new();
    let (a, b) = loop {
        let k = PrivateKey::generate(KeyAlgorithm::Ed25519)
            .unwrap()
            .public_key();
        if let Some(other) = keys
            .iter()
            .find(|o| o.fingerprint_hex()[..1] == k.fingerprint_hex()[..1])
        {
            break (other.clone(), k);
        }
        keys.push(k);
    };
    env.store.add(prefix(REPO), &a, &env.dirs.system).unwrap();
    env.store.add(prefix(REPO), &b, &env.dirs.system).unwrap();
    env.store
        .add(TrustScope::Root, &a, &env.dirs.system)
        .unwrap();

    let shared = &a.fingerprint_hex()[..1];
    let err = env.store.remove(shared, None).unwrap_err();
    match &err {
        StoreError::Ambiguous { candidates, .. } => {
            let mut expected = vec![a.fingerprint(), b.fingerprint()];
            expected.sort();
            assert_eq!(candidates, &expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    assert!(err.to_string().contains(&a.fingerprint()), "{err}");
    assert_eq!(env.store.list().unwrap().len(), 3, "nothing removed");

    let unknown = if shared == "0" { "ffff" } else { "0000" };
    let unknown = format!("{unknown}{}", &a.fingerprint_hex()[4..]);
    assert!(matches!(
        env.store.remove(&unknown, None),
        Err(StoreError::NoMatch { .. })
    ));
    for bad in ["", "sha256:", "not-hex"] {
        assert!(matches!(
            env.store.remove(bad, None),
            Err(StoreError::InvalidSelector { .. })
        ));
    }

    // Restricted to a scope: only that entry goes.
    let removed = env
        .store
        .remove(&a.fingerprint(), Some(&TrustScope::Root))
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].scope, TrustScope::Root);
    let removed = env
        .store
        .remove(&a.fingerprint(), Some(&prefix(REPO)))
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].scope, prefix(REPO));
    let err = env
        .store
        .remove(&b.fingerprint(), Some(&prefix("other.org")))
        .unwrap_err();
    assert!(err.to_string().contains("prefix other.org"), "{err}");
    assert_eq!(env.store.list().unwrap().len(), 1);
}

#[test]
fn keys_for_matches_on_segment_boundaries() {
    let env = env();
    let mk = || {
        PrivateKey::generate(KeyAlgorithm::Ed25519)
            .unwrap()
            .public_key()
    };
    let (busybox, below_registry, other, root, port) = (mk(), mk(), mk(), mk(), mk());
    env.store
        .add(prefix(REPO), &busybox, &env.dirs.system)
        .unwrap();
    env.store
        .add(prefix("example.com/"), &below_registry, &env.dirs.system)
        .unwrap();
    env.store
        .add(prefix("other.org/x"), &other, &env.dirs.system)
        .unwrap();
    env.store
        .add(TrustScope::Root, &root, &env.dirs.user)
        .unwrap();
    env.store
        .add(prefix("localhost:5000"), &port, &env.dirs.user)
        .unwrap();

    let fps = |image: &str| {
        let mut v: Vec<String> = env
            .store
            .keys_for(image)
            .unwrap()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        v.sort();
        v
    };
    let set = |keys: &[&PublicKey]| {
        let mut v: Vec<String> = keys.iter().map(|k| k.fingerprint()).collect();
        v.sort();
        v
    };
    assert_eq!(fps(IMAGE), set(&[&busybox, &below_registry, &root]));
    assert_eq!(fps(REPO), set(&[&busybox, &below_registry, &root]));
    assert_eq!(
        fps(&format!("{REPO}/sub@{DIGEST}")),
        set(&[&busybox, &below_registry, &root])
    );
    assert_eq!(
        fps("example.com/busyboxer:1"),
        set(&[&below_registry, &root])
    );
    assert_eq!(fps("example.community/busybox"), set(&[&root]));
    assert_eq!(fps("other.org/x:tag"), set(&[&other, &root]));
    assert_eq!(fps("other.org/xy"), set(&[&root]));
    assert_eq!(fps("localhost:5000/app:1.0"), set(&[&port, &root]));
}

// ---------------------------------------------------------------------------------------------
// signature files + verification

#[test]
fn sign_write_read_verify_end_to_end() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(prefix(REPO), &key.public_key(), &env.dirs.system)
        .unwrap();

    let source = env.dirs.user.parent().unwrap().join("busybox.oci.tar");
    let sig_path = sig_path_for(&source);
    assert!(matches!(
        read_sig_file(&sig_path),
        Err(SigFileError::NotFound { .. })
    ));
    let mut sigs = Vec::new();
    merge(&mut sigs, sign(&key, REPO, DIGEST));
    write_sig_file(&sig_path, &sigs).unwrap();

    let read_back = read_sig_file(&sig_path).unwrap();
    let verified = verify_image(&env.store, IMAGE, DIGEST, &read_back).unwrap();
    assert_eq!(verified.key.fingerprint, key.public_key().fingerprint());
    assert_eq!(verified.signature_index, 0);
    assert_eq!(verified.payload.reference(), REPO);
    assert_eq!(verified.payload.digest(), DIGEST);

    // Re-signing replaces rather than appends.
    assert!(merge(&mut sigs, sign(&key, REPO, DIGEST)));
    assert_eq!(sigs.len(), 1);
}

#[test]
fn verify_accepts_the_good_signature_among_bad_ones() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let stranger = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(prefix("example.com"), &key.public_key(), &env.dirs.user)
        .unwrap();
    let sigs = vec![
        sign(&stranger, REPO, DIGEST),
        sign(&key, REPO, OTHER_DIGEST),
        sign(&key, REPO, DIGEST),
    ];
    let verified = verify_image(&env.store, IMAGE, DIGEST, &sigs).unwrap();
    assert_eq!(verified.signature_index, 2);
    assert_eq!(verified.key.scope, prefix("example.com"));
}

#[test]
fn verify_accepts_full_name_identity_and_atomic_payloads() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(prefix(REPO), &key.public_key(), &env.dirs.system)
        .unwrap();
    // docker-reference with the tag, as containers/image writes it.
    let with_tag = sign(&key, IMAGE, DIGEST);
    verify_image(&env.store, IMAGE, DIGEST, &[with_tag]).unwrap();

    let atomic = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{REPO}"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"atomic container signature"}},"optional":{{"creator":"test"}}}}"#
    );
    let sig = Signature {
        signature: key.sign(atomic.as_bytes()),
        payload: atomic.into_bytes(),
        key_id: None,
    };
    verify_image(&env.store, IMAGE, DIGEST, &[sig]).unwrap();
}

#[test]
fn verify_root_key_is_accepted_for_any_image() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    env.store
        .add(TrustScope::Root, &key.public_key(), &env.dirs.vendor)
        .unwrap();
    for image in [IMAGE, "quay.io/other/thing:1", "localhost:5000/x"] {
        let repo = repository_of(image);
        let verified =
            verify_image(&env.store, image, DIGEST, &[sign(&key, repo, DIGEST)]).unwrap();
        assert_eq!(verified.key.scope, TrustScope::Root);
    }
}

#[test]
fn verify_no_signatures() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    env.store
        .add(prefix(REPO), &key.public_key(), &env.dirs.system)
        .unwrap();
    let err = verify_image(&env.store, IMAGE, DIGEST, &[]).unwrap_err();
    assert!(matches!(err, TrustError::NoSignature { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(IMAGE), "{msg}");
    assert!(msg.contains("orbit image sign --key"), "{msg}");
    assert!(msg.contains("--insecure-options=image"), "{msg}");
}

#[test]
fn verify_no_trusted_key_for_repository() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    // Trusted, but for another prefix only (and for a prefix that is not a segment match).
    env.store
        .add(prefix("other.org/x"), &key.public_key(), &env.dirs.system)
        .unwrap();
    env.store
        .add(
            prefix("example.com/busy"),
            &key.public_key(),
            &env.dirs.system,
        )
        .unwrap();
    let err = verify_image(&env.store, IMAGE, DIGEST, &[sign(&key, REPO, DIGEST)]).unwrap_err();
    match &err {
        TrustError::NoTrustedKey { image, repository } => {
            assert_eq!(image, IMAGE);
            assert_eq!(repository, REPO);
        }
        other => panic!("expected NoTrustedKey, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("orbit trust --prefix {REPO} KEY.pub")),
        "{msg}"
    );
}

#[test]
fn verify_wrong_digest() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(prefix(REPO), &key.public_key(), &env.dirs.system)
        .unwrap();
    let err =
        verify_image(&env.store, IMAGE, DIGEST, &[sign(&key, REPO, OTHER_DIGEST)]).unwrap_err();
    let (msg, expected, details) = untrusted(err);
    assert_eq!(expected, vec![key.public_key().fingerprint()]);
    assert_eq!(details.len(), 1);
    assert!(
        details[0].contains(&format!("signs manifest digest {OTHER_DIGEST}"))
            && details[0].contains(&format!("this image's manifest digest is {DIGEST}")),
        "{}",
        details[0]
    );
    assert!(msg.contains(IMAGE), "{msg}");
    assert!(msg.contains(REPO), "{msg}");
    assert!(msg.contains(&key.public_key().fingerprint()), "{msg}");
    assert!(msg.contains(OTHER_DIGEST), "{msg}");
}

#[test]
fn verify_wrong_identity() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(TrustScope::Root, &key.public_key(), &env.dirs.system)
        .unwrap();
    for wrong in [
        "example.com/other",
        "example.com/busyboxer",
        "example.com/busybox:other-tag",
    ] {
        let err =
            verify_image(&env.store, IMAGE, DIGEST, &[sign(&key, wrong, DIGEST)]).unwrap_err();
        let (msg, _, details) = untrusted(err);
        assert!(
            details[0].contains(&format!(
                "signs the identity {wrong}, but this image is {REPO}"
            )),
            "{}",
            details[0]
        );
        assert!(msg.contains(wrong), "{msg}");
    }
}

#[test]
fn verify_key_trusted_for_another_prefix() {
    let env = env();
    let trusted = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let elsewhere = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    env.store
        .add(prefix(REPO), &trusted.public_key(), &env.dirs.system)
        .unwrap();
    env.store
        .add(
            prefix("other.org/x"),
            &elsewhere.public_key(),
            &env.dirs.user,
        )
        .unwrap();
    let mut sig = sign(&elsewhere, REPO, DIGEST);
    sig.key_id = None; // found by trying the store's keys, not by the hint
    let err = verify_image(&env.store, IMAGE, DIGEST, &[sig]).unwrap_err();
    let (msg, expected, details) = untrusted(err);
    assert_eq!(expected, vec![trusted.public_key().fingerprint()]);
    assert!(
        details[0].contains(&elsewhere.public_key().fingerprint()),
        "{}",
        details[0]
    );
    assert!(details[0].contains("prefix other.org/x"), "{}", details[0]);
    assert!(
        msg.contains(&format!("orbit trust --prefix {REPO} KEY.pub")),
        "{msg}"
    );
    assert!(msg.contains(&trusted.public_key().fingerprint()), "{msg}");
}

#[test]
fn verify_unknown_key_names_its_key_id() {
    let env = env();
    let trusted = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let stranger = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    env.store
        .add(prefix(REPO), &trusted.public_key(), &env.dirs.system)
        .unwrap();
    let err =
        verify_image(&env.store, IMAGE, DIGEST, &[sign(&stranger, REPO, DIGEST)]).unwrap_err();
    let (_, _, details) = untrusted(err);
    assert!(
        details[0].contains(&stranger.public_key().fingerprint()),
        "{}",
        details[0]
    );
    assert!(details[0].contains("not trusted"), "{}", details[0]);

    // A lying key id does not make a signature trusted.
    let mut liar = sign(&stranger, REPO, DIGEST);
    liar.key_id = Some(trusted.public_key().fingerprint());
    let err = verify_image(&env.store, IMAGE, DIGEST, &[liar]).unwrap_err();
    let (_, _, details) = untrusted(err);
    assert!(details[0].contains("is bad"), "{}", details[0]);
}

#[test]
fn verify_tampered_payload_and_signature() {
    let env = env();
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(alg).unwrap();
        env.store
            .add(prefix(REPO), &key.public_key(), &env.dirs.system)
            .unwrap();
        let good = sign(&key, REPO, DIGEST);

        // Payload rewritten to claim a different digest: must not verify.
        let mut tampered_payload = good.clone();
        tampered_payload.payload = SimpleSigningPayload::new(REPO, OTHER_DIGEST).to_bytes();
        let err = verify_image(&env.store, IMAGE, OTHER_DIGEST, &[tampered_payload]).unwrap_err();
        let (msg, _, details) = untrusted(err);
        assert!(details[0].contains("modified"), "{alg}: {}", details[0]);
        assert!(msg.contains(&key.public_key().fingerprint()), "{msg}");

        let mut tampered_sig = good.clone();
        let mid = tampered_sig.signature.len() / 2;
        tampered_sig.signature[mid] ^= 0x40;
        let err = verify_image(&env.store, IMAGE, DIGEST, &[tampered_sig]).unwrap_err();
        let (_, _, details) = untrusted(err);
        assert!(details[0].contains("modified"), "{alg}: {}", details[0]);

        verify_image(&env.store, IMAGE, DIGEST, &[good]).unwrap();
    }
}

#[test]
fn verify_signed_but_unusable_payload() {
    let env = env();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    env.store
        .add(prefix(REPO), &key.public_key(), &env.dirs.system)
        .unwrap();
    let payload = String::from_utf8(SimpleSigningPayload::new(REPO, DIGEST).to_bytes())
        .unwrap()
        .replace("cosign container image signature", "a different thing");
    let sig = Signature {
        signature: key.sign(payload.as_bytes()),
        payload: payload.into_bytes(),
        key_id: None,
    };
    let err = verify_image(&env.store, IMAGE, DIGEST, &[sig]).unwrap_err();
    let (_, _, details) = untrusted(err);
    assert!(details[0].contains("a different thing"), "{}", details[0]);
}

#[test]
fn verify_openssl_signature_from_sig_file() {
    // A signature made entirely by openssl, stored in a .sig file, verifies against a key
    // trusted from openssl's public key file.
    let env = env();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("payload"), payload_bytes()).unwrap();
    openssl(d, "ecparam -name prime256v1 -genkey -noout -out k.pem");
    openssl(d, "ec -in k.pem -pubout -out pub.pem");
    openssl(d, "dgst -sha256 -sign k.pem -out sig payload");
    let public = PublicKey::from_pem(&read(d, "pub.pem")).unwrap();
    env.store
        .add(prefix(REPO), &public, &env.dirs.system)
        .unwrap();
    let sig_path = d.join("image.oci.sig");
    write_sig_file(
        &sig_path,
        &[Signature {
            payload: payload_bytes(),
            signature: std::fs::read(d.join("sig")).unwrap(),
            key_id: None,
        }],
    )
    .unwrap();
    let sigs = read_sig_file(&sig_path).unwrap();
    let verified = verify_image(&env.store, IMAGE, DIGEST, &sigs).unwrap();
    assert_eq!(verified.key.fingerprint, public.fingerprint());
}
