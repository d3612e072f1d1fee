//! What the store keeps and hands on: signatures of image-index sources (only valid ones,
//! under the digest they sign, carried through export), docker v2s2 manifests as such,
//! registry-port names, and a gc that never deletes what a name or a pod still uses.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use orbit::trust::{PrivateKey, Signature, SimpleSigningPayload};

/// Wraps the image of `layout` in an image index (two platforms, both naming its manifest),
/// names the index `name` in index.json, and signs the *index* digest with `key` for
/// `repository` in `layout.sig`; returns the index digest.
fn wrap_in_signed_index(layout: &Path, name: &str, key: &Path, repository: &str) -> String {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let m = index["manifests"][0].clone();
    let platform = |arch: &str| {
        serde_json::json!({"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
            "platform": {"os": "linux", "architecture": arch}})
    };
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [platform("s390x-not-this-one"), platform(host)],
    }))
    .unwrap();
    let digest = orbit_images::write_blob(layout, &body).unwrap();
    index["manifests"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest, "size": body.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }]);
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let key = PrivateKey::from_pem(&fs::read_to_string(key).unwrap()).unwrap();
    let sig = Signature::sign(&key, &SimpleSigningPayload::new(repository, &digest));
    orbit::trust::write_sig_file(&PathBuf::from(format!("{}.sig", layout.display())), &[sig])
        .unwrap();
    digest
}

/// The layers (signature payloads) of the store's signature manifest for digest `d`.
fn stored_signature_count(w: &World, d: &str) -> usize {
    let images = w.store().join("images");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(images.join("index.json")).unwrap()).unwrap();
    let tag = format!("sha256-{}.sig", &d[7..]);
    let Some(entry) = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
    else {
        return 0;
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            images
                .join("blobs/sha256")
                .join(&entry["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    manifest["layers"].as_array().unwrap().len()
}

#[test]
fn an_index_signed_source_keeps_only_valid_signatures_and_exports_verifiably() {
    let w = World::new();
    let (key, public) = w.keygen("publisher");
    let (stranger, _) = w.keygen("stranger");
    w.trust("example.com/multi", &public);
    let layout = simple_image(&w, "layout", "example.com/multi:1");
    let manifest_digest = layout_digest(&layout, "example.com/multi:1");
    let index_digest =
        wrap_in_signed_index(&layout, "example.com/multi:1", &key, "example.com/multi");
    // Add a signature by an untrusted key over the manifest: it must not be kept.
    let sig_path = PathBuf::from(format!("{}.sig", layout.display()));
    let mut sigs = orbit::trust::read_sig_file(&sig_path).unwrap();
    let stranger = PrivateKey::from_pem(&fs::read_to_string(&stranger).unwrap()).unwrap();
    sigs.push(Signature::sign(
        &stranger,
        &SimpleSigningPayload::new("example.com/multi", &manifest_digest),
    ));
    orbit::trust::write_sig_file(&sig_path, &sigs).unwrap();

    let out = w.ok(&["fetch", &oci(&layout)]);
    assert_eq!(
        out.trim(),
        manifest_digest,
        "stored under the platform manifest"
    );
    assert_eq!(
        stored_signature_count(&w, &index_digest),
        1,
        "the index signature, under the index digest"
    );
    assert_eq!(
        stored_signature_count(&w, &manifest_digest),
        0,
        "the invalid one is not kept"
    );
    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&[
        "image",
        "inspect",
        "--format",
        "json",
        "example.com/multi:1",
    ]))
    .unwrap();
    assert_eq!(inspect["signatures"], 1);

    // gc keeps the index and its signature: a live image's signature blobs are referenced.
    w.ok(&["image", "gc"]);
    assert!(w
        .store()
        .join("images/blobs/sha256")
        .join(&index_digest[7..])
        .is_file());
    assert_eq!(stored_signature_count(&w, &index_digest), 1);

    // Export, then fetch elsewhere: the signature still names what the archive points at.
    let (w2, archive, out) = export_and_fetch_elsewhere(&w, "example.com/multi:1", &public);
    assert_eq!(out.trim(), manifest_digest);
    assert!(w2.ok(&["image", "list"]).contains("key sha256:"));
    skopeo_inspect(&format!(
        "oci-archive:{}:example.com/multi:1",
        archive.display()
    ));

    // Removing the image removes the index's signature with it.
    w.ok(&["image", "rm", "example.com/multi:1"]);
    w.assert_store_empty();
}

#[test]
fn gc_keeps_the_signature_blobs_of_a_live_image() {
    let w = World::new();
    let (key, public) = w.keygen("k");
    w.trust("example.com/app", &public);
    let layout = simple_image(&w, "layout", "example.com/app:1");
    w.sign(&oci(&layout), &key);
    let digest = w.ok(&["fetch", &oci(&layout)]).trim().to_string();
    let blobs_before = w.count("images/blobs/sha256");
    let out = w.ok(&["image", "gc"]);
    assert!(out.contains("removed 0 blob(s)"), "{out}");
    assert_eq!(w.count("images/blobs/sha256"), blobs_before);
    assert_eq!(stored_signature_count(&w, &digest), 1);
    // And the signature still travels.
    let (_, _, out) = export_and_fetch_elsewhere(&w, "example.com/app:1", &public);
    assert_eq!(out.trim(), digest);
}

/// Exports `name` from `w` and fetches it (verified) into a new world trusting `public` for
/// its repository; returns that world, the archive and fetch's output.
fn export_and_fetch_elsewhere(w: &World, name: &str, public: &Path) -> (World, PathBuf, String) {
    let archive = w.path("export.tar");
    w.ok(&["image", "export", name, archive.to_str().unwrap()]);
    let w2 = World::new();
    w2.trust(name.rsplit_once(':').unwrap().0, public);
    let out = w2.ok(&["fetch", &format!("oci-archive:{}", archive.display())]);
    (w2, archive, out)
}

#[test]
fn gc_refuses_to_collect_when_a_named_image_cannot_be_read() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/app:1");
    let digest = w
        .ok(&["--insecure-options=image", "fetch", &oci(&layout)])
        .trim()
        .to_string();
    let manifest = w.store().join("images/blobs/sha256").join(&digest[7..]);
    fs::write(&manifest, "{ not the manifest").unwrap();
    let (blobs, layers) = (w.count("images/blobs/sha256"), w.count("layers/sha256"));
    let err = w.fails(&["image", "gc"]);
    assert!(
        err.contains("example.com/app:1") && err.contains("orbit image verify"),
        "{err}"
    );
    assert_eq!(w.count("images/blobs/sha256"), blobs, "no blob deleted");
    assert_eq!(w.count("layers/sha256"), layers, "no layer deleted");
}

/// Writes `<store>/pods/<state>/<uuid>/pod.json` with one app using `lowers`.
fn fake_pod(w: &World, uuid: &str, body: &str) -> PathBuf {
    let dir = w.store().join("pods/run").join(uuid);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("pod.json"), body).unwrap();
    dir
}

#[test]
fn gc_keeps_the_layers_pods_use_and_all_layers_when_a_pod_record_is_unreadable() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/app:1");
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    let inspect: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "inspect", "--format", "json", "example.com/app:1"]))
            .unwrap();
    let lowers: Vec<String> = inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|l| {
            w.store()
                .join("layers/sha256")
                .join(&l["diff_id"].as_str().unwrap()[7..])
                .join("rootfs")
                .display()
                .to_string()
        })
        .collect();
    let pod =
        serde_json::json!({"apps": [{"name": "a", "rootfs": {"lowers": lowers, "overlay": true}}]});
    let pod_dir = fake_pod(&w, "1111", &pod.to_string());

    // The image goes; its blobs go; the layers the pod runs on stay.
    w.ok(&["image", "rm", "example.com/app:1"]);
    assert_eq!(w.count("images/blobs/sha256"), 0);
    assert_eq!(w.count("layers/sha256"), 2, "the pod's layers are kept");

    // An unreadable pod record: every layer is kept, with a warning.
    fs::write(pod_dir.join("pod.json"), "{ truncated").unwrap();
    let out = w.run(&["image", "gc"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kept every unpacked layer")
            && text(&out.stderr).contains("pod.json"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(w.count("layers/sha256"), 2);

    // Once the pod is gone, so are its layers.
    fs::remove_dir_all(w.store().join("pods")).unwrap();
    w.ok(&["image", "gc"]);
    w.assert_store_empty();
}

#[test]
fn docker_v2s2_manifests_keep_their_media_type_so_skopeo_reads_the_store() {
    let w = World::new();
    let src = tree(&w.path("src"), &[("f", "v2s2")]);
    let layout = raw_image(
        &w,
        "layout",
        "example.com/v2:1",
        orbit_images::tar_dir(&src).unwrap(),
        orbit_images::Compression::Gzip,
    );
    let v2 = w.path("v2");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", "--format", "v2s2"])
        .arg(format!("oci:{}:example.com/v2:1", layout.display()))
        .arg(format!("oci:{}:example.com/v2:1", v2.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let digest = w
        .ok(&["--insecure-options=image", "fetch", &oci(&v2)])
        .trim()
        .to_string();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(w.store().join("images/index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // skopeo reads the store's one image. (By name it cannot: skopeo 1.9's oci transport
    // only matches names on OCI-typed descriptors, so it cannot read its own v2s2 layouts
    // by name either. With the OCI type recorded, as before, it failed on the mismatch
    // with "unsupported image-specific operation on artifact".)
    let v = skopeo_inspect(&format!("oci:{}", w.store().join("images").display()));
    assert_eq!(v["Digest"], digest);
    // The export says the same.
    let archive = w.path("v2.tar");
    w.ok(&[
        "image",
        "export",
        "example.com/v2:1",
        archive.to_str().unwrap(),
    ]);
    let v = skopeo_inspect(&format!("oci-archive:{}", archive.display()));
    assert_eq!(v["Digest"], digest);
}

#[test]
fn registry_port_names_work_and_malformed_names_are_refused() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/app:1");
    let fetch_as = |name: &str| {
        w.run(&[
            "--insecure-options=image",
            "fetch",
            "--name",
            name,
            &oci(&layout),
        ])
    };
    assert!(fetch_as("localhost:5000/team/app:1").status.success());
    let m: serde_json::Value = serde_json::from_str(&w.ok(&[
        "image",
        "inspect",
        "--format",
        "json",
        "localhost:5000/team/app:1",
    ]))
    .unwrap();
    assert_eq!(m["names"][0], "localhost:5000/team/app:1");
    assert!(w
        .ok(&["image", "list"])
        .contains("localhost:5000/team/app:1"));
    for bad in [
        "example.com/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "example.com/App:1",
        "example.com/app:a@b",
        "example.com/a:b/c:1",
    ] {
        let out = fetch_as(bad);
        assert_eq!(out.status.code(), Some(125), "{bad} accepted");
        assert!(
            text(&out.stderr).contains("not a valid image name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
}
