//! Signature verification through the real binary: what is refused (and that a refusal
//! stores nothing), what is accepted, openssl interop, and `orbit trust` itself.

mod common;

use std::fs;
use std::process::Command;

use base64::Engine;
use common::*;

#[test]
fn unsigned_image_is_refused_with_guidance_and_nothing_is_stored() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/app:1");
    let err = w.fails(&["fetch", &oci(&layout)]);
    assert!(
        err.contains("no signature") && err.contains("example.com/app"),
        "{err}"
    );
    assert!(err.contains("--insecure-options=image"), "{err}");
    w.assert_no_store();
}

#[test]
fn signature_by_untrusted_key_or_for_another_prefix_is_refused() {
    let w = World::new();
    let (key, _) = w.keygen("stranger");
    let (_, other_pub) = w.keygen("other");
    let layout = simple_image(&w, "layout", "example.com/app:1");
    w.sign(&oci(&layout), &key);
    let err = w.fails(&["fetch", &oci(&layout)]);
    assert!(
        err.contains("example.com/app") && err.contains("orbit trust --prefix"),
        "{err}"
    );
    w.assert_no_store();

    w.trust("example.com/other", &other_pub);
    let err = w.fails(&["fetch", &oci(&layout)]);
    assert!(err.contains("example.com/app"), "{err}");
    w.assert_no_store();

    // Trusting the signer for a sibling prefix that is not a path-segment prefix still fails.
    w.trust("example.com/ap", &w.path("stranger.pub"));
    w.fails(&["fetch", &oci(&layout)]);
    w.assert_no_store();

    // A root key is trusted for everything.
    w.ok(&["trust", "--root", w.path("stranger.pub").to_str().unwrap()]);
    w.ok(&["fetch", &oci(&layout)]);
}

#[test]
fn signature_for_another_image_or_tampered_signature_is_refused() {
    let w = World::new();
    let (key, public) = w.keygen("pub");
    w.trust("example.com", &public);
    let a = simple_image(&w, "a", "example.com/a:1");
    let b = simple_image(&w, "b", "example.com/b:1");
    // Sign image a, then copy its signature file next to b: wrong digest and identity.
    w.ok(&[
        "image",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--output",
        w.path("a.sig").to_str().unwrap(),
        &oci(&a),
    ]);
    fs::copy(w.path("a.sig"), w.path("b.sig")).unwrap();
    let err = w.fails(&["fetch", &oci(&b)]);
    assert!(err.contains("digest") || err.contains("identity"), "{err}");
    w.assert_no_store();

    // Flip a bit in a's own detached signature.
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(w.path("a.sig")).unwrap()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(v[0]["signature"].as_str().unwrap()).unwrap();
    let n = sig.len();
    sig[n - 3] ^= 0x01;
    v[0]["signature"] = b64.encode(sig).into();
    fs::write(w.path("a.sig"), serde_json::to_vec(&v).unwrap()).unwrap();
    let err = w.fails(&["fetch", &oci(&a)]);
    assert!(err.contains("example.com/a"), "{err}");
    w.assert_no_store();

    // The untampered signature works.
    w.ok(&[
        "image",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--output",
        w.path("a.sig").to_str().unwrap(),
        &oci(&a),
    ]);
    w.ok(&["fetch", &oci(&a)]);
}

#[test]
fn signature_made_with_plain_openssl_verifies() {
    let w = World::new();
    let key = w.path("ossl.pem");
    let public = w.path("ossl.pub");
    assert!(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out"
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap()
        .status
        .success());
    let archive_dir = simple_image(&w, "layout", "example.com/ossl:1");
    let archive = w.path("ossl.tar");
    tar_layout(&archive_dir, &archive);
    let digest = layout_digest(&archive_dir, "example.com/ossl:1");
    let payload = serde_json::json!({"critical": {"identity": {"docker-reference": "example.com/ossl"}, "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"}, "optional": null});
    let payload_path = w.path("payload.json");
    fs::write(&payload_path, serde_json::to_vec(&payload).unwrap()).unwrap();
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&payload_path)
        .output()
        .unwrap();
    assert!(sig.status.success());
    let b64 = base64::engine::general_purpose::STANDARD;
    let sigfile = serde_json::json!({"payload": b64.encode(fs::read(&payload_path).unwrap()), "signature": b64.encode(&sig.stdout)});
    fs::write(
        w.path("ossl.tar.sig"),
        serde_json::to_vec(&sigfile).unwrap(),
    )
    .unwrap();

    w.trust("example.com/ossl", &public);
    let out = w.ok(&["fetch", &format!("oci-archive:{}", archive.display())]);
    assert_eq!(out.trim(), digest);
    // And orbit can sign with the openssl (SEC1) key, too.
    let b = simple_image(&w, "b", "example.com/ossl:2");
    w.sign(&oci(&b), &key);
    w.ok(&["fetch", &oci(&b)]);
}

#[test]
fn ed25519_keys_sign_and_verify() {
    let w = World::new();
    let prefix = w.path("ed");
    w.ok(&[
        "image",
        "keygen",
        "--algorithm",
        "ed25519",
        prefix.to_str().unwrap(),
    ]);
    w.trust("example.com/ed", &w.path("ed.pub"));
    let layout = simple_image(&w, "layout", "example.com/ed:1");
    w.sign(&oci(&layout), &w.path("ed.key"));
    w.ok(&["fetch", &oci(&layout)]);
}

#[test]
fn docker_archive_signed_beside_the_archive() {
    let w = World::new();
    let (key, public) = w.keygen("k");
    w.trust("docker.io/library/busy", &public);
    // Docker archives cannot hold zstd layers: a gzip-only image.
    let src = tree(&w.path("src"), &[("f", "docker")]);
    let layout = raw_image(
        &w,
        "layout",
        "example.com/x:1",
        orbit_images::tar_dir(&src).unwrap(),
        orbit_images::Compression::Gzip,
    );
    let docker = w.path("d.tar");
    assert!(Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg(format!("oci:{}:example.com/x:1", layout.display()))
        .arg(format!("docker-archive:{}:busy:latest", docker.display()))
        .status()
        .unwrap()
        .success());
    let src = format!("docker-archive:{}", docker.display());
    w.fails(&["fetch", &src]);
    w.sign(&src, &key);
    assert!(w.path("d.tar.sig").exists());
    w.ok(&["fetch", &src]);
    assert!(w
        .ok(&["image", "list"])
        .contains("docker.io/library/busy:latest"));
}

#[test]
fn trust_list_and_rm() {
    let w = World::new();
    let (_, public) = w.keygen("k");
    w.trust("example.com/app", &public);
    w.ok(&["trust", "--root", public.to_str().unwrap()]);
    let rows: serde_json::Value =
        serde_json::from_str(&w.ok(&["trust", "list", "--format", "json"])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let fp = rows[0]["fingerprint"].as_str().unwrap().to_string();
    assert!(w.path("config/system/trustedkeys/prefix.d").exists());
    let table = w.ok(&["trust", "list"]);
    assert!(
        table.contains("example.com/app") && table.contains(&fp),
        "{table}"
    );
    w.ok(&["trust", "rm", "--root", &fp[7..20]]);
    let rows: serde_json::Value =
        serde_json::from_str(&w.ok(&["trust", "list", "--format", "json"])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    w.ok(&["trust", "rm", &fp]);
    assert_eq!(w.ok(&["trust", "list", "--format", "json"]).trim(), "[]");
    let err = w.fails(&["trust", "rm", &fp]);
    assert!(
        err.contains(&fp[7..15]) || err.contains("no trusted key"),
        "{err}"
    );
    let err = w.fails(&[
        "trust",
        "--prefix",
        "example.com/x",
        w.path("nope.pub").to_str().unwrap(),
    ]);
    assert!(err.contains("nope.pub"), "{err}");
    let err = w.fails(&["trust", public.to_str().unwrap()]);
    assert!(err.contains("--prefix") && err.contains("--root"), "{err}");
}

#[test]
fn a_broken_key_file_is_listed_and_skipped_not_fatal() {
    let w = World::new();
    let (key, public) = w.keygen("k");
    w.trust("example.com/app", &public);
    // A second, unreadable key file next to the good one.
    let broken_dir = w.path("config/system/trustedkeys/root.d");
    fs::create_dir_all(&broken_dir).unwrap();
    let broken = broken_dir.join("deadbeef.pub");
    fs::write(
        &broken,
        "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();

    let out = w.run(&["trust", "list", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let good = rows.iter().find(|r| r["broken"].is_null()).unwrap();
    assert_eq!(good["prefix"], "example.com/app");
    let bad = rows.iter().find(|r| !r["broken"].is_null()).unwrap();
    assert_eq!(bad["path"], broken.display().to_string());
    assert!(
        bad["broken"]
            .as_str()
            .unwrap()
            .contains("not a valid public key"),
        "{bad}"
    );
    let table = w.run(&["trust", "list"]);
    assert!(
        text(&table.stdout).contains("BROKEN"),
        "{}",
        text(&table.stdout)
    );
    assert!(
        text(&table.stderr).contains("deadbeef.pub"),
        "{}",
        text(&table.stderr)
    );

    // Verification skips the broken key, with a warning, and uses the good one.
    let layout = simple_image(&w, "layout", "example.com/app:1");
    w.sign(&oci(&layout), &key);
    let out = w.run(&["fetch", &oci(&layout)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("deadbeef.pub"),
        "{err}"
    );
}
