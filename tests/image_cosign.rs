//! orbit and Sigstore's real `cosign` (Debian trixie's package, fetched by
//! `scripts/cosign.sh`; `tests/run.sh` sets `ORBIT_TEST_COSIGN`), both ways: layouts written
//! by `cosign save` and signatures attached in a registry by `cosign sign` verify in orbit
//! with cosign's own `cosign.pub`; what orbit signs verifies with `cosign verify`. Exported
//! archives load in podman and skopeo, and an orbit → orbit round trip through an archive
//! and its detached signature still verifies. Hostile layouts are refused and leave nothing
//! behind. The registry is Debian's `docker-registry` on 127.0.0.1 (plain HTTP).

mod common;
#[path = "common/pods.rs"]
mod pods_common;
#[path = "common/registry.rs"]
mod registry_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::{oci, tar_layout, text, World};
use registry_common::{image, Registry};

const HTTP: &str = "--insecure-options=http";
const PASSWORD: &str = "orbit-test-password";

/// The cosign binary under test; the test fails (never skips) without it.
fn cosign_bin() -> PathBuf {
    let p = std::env::var_os("ORBIT_TEST_COSIGN").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "ORBIT_TEST_COSIGN is not set: run `scripts/cosign.sh /var/cache/orbit-test-tools/cosign` \
             (downloads Debian trixie's cosign package and prints the binary's path) and export \
             ORBIT_TEST_COSIGN=<that path>; tests/run.sh does both"
        )
    });
    assert!(
        p.is_file(),
        "ORBIT_TEST_COSIGN={} does not exist: run scripts/cosign.sh again",
        p.display()
    );
    p
}

/// `cosign ARGS` run in the world's directory with the key password, a private HOME and TUF
/// root (nothing of cosign's is left outside the world).
fn cosign(w: &World, args: &[&str]) -> Output {
    let home = w.path("cosign-home");
    fs::create_dir_all(&home).unwrap();
    Command::new(cosign_bin())
        .args(args)
        .current_dir(w.tmp.path())
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("HOME", &home)
        .env("TUF_ROOT", home.join("tuf"))
        .env("COSIGN_EXPERIMENTAL", "0")
        .output()
        .expect("cosign runs")
}

/// [`cosign`], asserted to succeed; returns stdout and stderr.
fn cosign_ok(w: &World, args: &[&str]) -> String {
    let out = cosign(w, args);
    assert!(
        out.status.success(),
        "cosign {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

/// [`cosign`], asserted to fail; returns stderr.
fn cosign_fails(w: &World, args: &[&str]) -> String {
    let out = cosign(w, args);
    assert!(
        !out.status.success(),
        "cosign {args:?} should fail:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A cosign key pair `<name>.key` / `<name>.pub` made by `cosign generate-key-pair`.
fn cosign_keys(w: &World, name: &str) -> (PathBuf, PathBuf) {
    cosign_ok(w, &["generate-key-pair", "--output-key-prefix", name]);
    let (key, public) = (
        w.path(&format!("{name}.key")),
        w.path(&format!("{name}.pub")),
    );
    assert!(key.is_file() && public.is_file());
    (key, public)
}

/// An unsigned busybox image pushed as `<host>/busybox:<tag>`, signed there by
/// `cosign sign --key KEY` (no transparency log); returns the image's name without tag
/// (the repository) and its manifest digest.
fn cosign_signed_in_registry(w: &World, reg: &Registry, tag: &str, key: &Path) -> (String, String) {
    let (_, digest) = image(w, reg, tag, 0, 0, false);
    let repo = format!("{}/busybox", reg.host());
    cosign_ok(
        w,
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "-y",
            &format!("{repo}@{digest}"),
        ],
    );
    (repo, digest)
}

/// `cosign save` of `<repo>@<digest>` into a new directory `dir` of the world.
fn cosign_save(w: &World, repo: &str, digest: &str, dir: &str) -> PathBuf {
    let out = w.path(dir);
    cosign_ok(
        w,
        &[
            "save",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "--dir",
            out.to_str().unwrap(),
            &format!("{repo}@{digest}"),
        ],
    );
    out
}

/// `cosign verify --key PUBLIC --local-image DIR`, offline.
fn cosign_verify_local(w: &World, public: &Path, dir: &Path) -> Output {
    cosign(
        w,
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--local-image",
            dir.to_str().unwrap(),
        ],
    )
}

fn index_json(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

fn write_index(layout: &Path, v: &serde_json::Value) {
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

/// The index entry of `layout` whose cosign `kind` is `kind` (`image`, `sigs`).
fn entry_of_kind(layout: &Path, kind: &str) -> serde_json::Value {
    let want = format!("dev.cosignproject.cosign/{kind}");
    index_json(layout)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["kind"] == want.as_str())
        .unwrap_or_else(|| panic!("no kind {kind} in {}", layout.display()))
        .clone()
}

/// Copies every blob of `from` into `to` (both layouts).
fn copy_blobs(from: &Path, to: &Path) {
    for e in fs::read_dir(from.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let dest = to.join("blobs/sha256").join(e.file_name());
        if !dest.exists() {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Writes `bytes` as a blob of `layout`; returns its digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// A registry, a world trusting cosign's own `cosign.pub` (as cosign wrote it) for the
/// registry's busybox, and an image cosign signed there.
struct Setup {
    reg: Registry,
    w: World,
    public: PathBuf,
    repo: String,
    digest: String,
}

fn setup(tag: &str) -> Setup {
    let reg = Registry::start_plain();
    let w = World::new();
    let (key, public) = cosign_keys(&w, "cosign");
    let (repo, digest) = cosign_signed_in_registry(&w, &reg, tag, &key);
    let out = w.ok(&["trust", "--prefix", &repo, public.to_str().unwrap()]);
    assert!(out.contains("ecdsa-p256"), "{out}");
    Setup {
        reg,
        w,
        public,
        repo,
        digest,
    }
}

#[test]
fn cosign_saved_layout_verifies_with_cosigns_own_public_key() {
    let s = setup("saved");
    let w = &s.w;
    let layout = cosign_save(w, &s.repo, &s.digest, "saved");
    // cosign itself accepts the layout (and so the test's premise holds).
    let out = cosign_verify_local(w, &s.public, &layout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No name in the layout: orbit says so and names the identity its signature names.
    let err = w.fails(&["fetch", &oci(&layout)]);
    assert!(
        err.contains("does not name its image") && err.contains("--name") && err.contains(&s.repo),
        "{err}"
    );
    assert!(!err.contains("holds several images"), "{err}");
    w.assert_no_store();
    // With a name, the sigs manifest is the image's signature: verified with cosign.pub.
    let name = format!("{}:saved", s.repo);
    let out = w
        .cmd(&["fetch", "--name", &name, &oci(&layout)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), s.digest);
    assert!(
        text(&out.stderr).contains("signature verified"),
        "{}",
        text(&out.stderr)
    );
    let list = w.ok(&["image", "list"]);
    assert!(
        list.contains(&name) && list.contains("key sha256:"),
        "{list}"
    );
    // One image in the store, not two: the signature manifest is not an image.
    let images: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "list", "--format", "json"])).unwrap();
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
    // By digest too, and as an oci-archive of the same layout.
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let by_digest = format!("{}:{}", oci(&layout), s.digest);
    assert_eq!(
        w2.ok(&["fetch", "--name", &name, &by_digest]).trim(),
        s.digest
    );
    let archive = w.path("saved.tar");
    tar_layout(&layout, &archive);
    let w3 = World::new();
    w3.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let src = format!("oci-archive:{}", archive.display());
    assert_eq!(w3.ok(&["fetch", "--name", &name, &src]).trim(), s.digest);
}

#[test]
fn cosign_saved_layout_is_refused_without_the_signers_key_and_leaves_nothing() {
    let s = setup("untrusted");
    let layout = cosign_save(&s.w, &s.repo, &s.digest, "saved");
    let name = format!("{}:untrusted", s.repo);
    // No key trusted for the repository.
    let w = World::new();
    let err = w.fails(&["fetch", "--name", &name, &oci(&layout)]);
    assert!(
        err.contains(&format!("no key is trusted for {}", s.repo)),
        "{err}"
    );
    w.assert_no_store();
    // Another cosign key trusted: the signature is reported as not made by it.
    let (_, other) = cosign_keys(&w, "other");
    w.ok(&["trust", "--prefix", &s.repo, other.to_str().unwrap()]);
    let err = w.fails(&["fetch", "--name", &name, &oci(&layout)]);
    assert!(
        err.contains("does not verify with any key trusted"),
        "{err}"
    );
    w.assert_no_store();
}

#[test]
fn orbit_signature_on_a_cosign_saved_layout_verifies_with_cosign() {
    let s = setup("both");
    let w = &s.w;
    let layout = cosign_save(w, &s.repo, &s.digest, "saved");
    let (orbit_key, orbit_pub) = w.keygen("orbit");
    w.ok(&[
        "image",
        "sign",
        "--key",
        orbit_key.to_str().unwrap(),
        "--identity",
        &s.repo,
        &oci(&layout),
    ]);
    // Still one signature manifest, now with both signatures: cosign verifies each key.
    let index = index_json(&layout);
    let sigs: Vec<_> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["kind"] == "dev.cosignproject.cosign/sigs")
        .collect();
    assert_eq!(sigs.len(), 1, "{index}");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    for public in [&orbit_pub, &s.public] {
        let out = cosign_verify_local(w, public, &layout);
        assert!(
            out.status.success(),
            "cosign verify with {}: {}",
            public.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(&s.digest),
            "{}",
            text(&out.stdout)
        );
    }
    // And orbit, trusting only its own key, verifies the layout too.
    let w2 = World::new();
    w2.trust(&s.repo, &orbit_pub);
    let name = format!("{}:both", s.repo);
    assert_eq!(
        w2.ok(&["fetch", "--name", &name, &oci(&layout)]).trim(),
        s.digest
    );
}

#[test]
fn attached_signatures_in_a_registry_verify_both_ways() {
    let s = setup("attached");
    let w = &s.w;
    // cosign → orbit: `cosign sign` attached the signature in the registry.
    let src = format!("docker://{}:attached", s.repo);
    let out = w.cmd(&[HTTP, "fetch", &src]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), s.digest);
    assert!(text(&out.stderr).contains("signature verified"));
    // orbit → cosign: the registry helper signs with `orbit image sign` (the demo key) and
    // pushes the signature manifest under cosign's tag; cosign verifies it with the demo
    // public key, offline.
    let (_, digest) = image(w, &s.reg, "by-orbit", 0, 0, true);
    let demo_pub = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.pub");
    let out = cosign_ok(
        w,
        &[
            "verify",
            "--key",
            demo_pub.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--allow-insecure-registry",
            &format!("{}:by-orbit", s.repo),
        ],
    );
    assert!(out.contains(&digest), "{out}");
    // …and refuses it with cosign's key: the test can fail.
    cosign_fails(
        w,
        &[
            "verify",
            "--key",
            s.public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--allow-insecure-registry",
            &format!("{}:by-orbit", s.repo),
        ],
    );
}

#[test]
fn saved_layout_whose_signature_signs_another_digest_is_refused() {
    let s = setup("one");
    let w = &s.w;
    let key = w.path("cosign.key");
    let (_, other_digest) = cosign_signed_in_registry(w, &s.reg, "two", &key);
    assert_ne!(other_digest, s.digest);
    let layout = cosign_save(w, &s.repo, &s.digest, "saved");
    let other = cosign_save(w, &s.repo, &other_digest, "other");
    // Swap in the other image's signature manifest (a valid signature, by the trusted key,
    // of another image).
    copy_blobs(&other, &layout);
    let mut index = index_json(&layout);
    let other_sigs = entry_of_kind(&other, "sigs");
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["kind"] == "dev.cosignproject.cosign/sigs" {
            *m = other_sigs.clone();
        }
    }
    write_index(&layout, &index);
    // cosign refuses it too.
    let out = cosign_verify_local(w, &s.public, &layout);
    assert!(
        !out.status.success(),
        "cosign accepted a signature of another image"
    );
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let err = w2.fails(&["fetch", "--name", &format!("{}:one", s.repo), &oci(&layout)]);
    assert!(
        err.contains(&format!("signs manifest digest {other_digest}"))
            && err.contains(&format!("this image's manifest digest is {}", s.digest)),
        "{err}"
    );
    w2.assert_no_store();
}

#[test]
fn layout_with_two_unnamed_images_lists_their_digests() {
    let s = setup("first");
    let w = &s.w;
    let key = w.path("cosign.key");
    let (_, second) = cosign_signed_in_registry(w, &s.reg, "second", &key);
    let layout = cosign_save(w, &s.repo, &s.digest, "saved");
    let other = cosign_save(w, &s.repo, &second, "other");
    copy_blobs(&other, &layout);
    let mut index = index_json(&layout);
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(entry_of_kind(&other, "image"));
    write_index(&layout, &index);
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let name = format!("{}:first", s.repo);
    let err = w2.fails(&["fetch", "--name", &name, &oci(&layout)]);
    assert!(
        err.contains("holds several images")
            && err.contains(&s.digest)
            && err.contains(&second)
            && err.contains("pick one with"),
        "{err}"
    );
    // Exactly two choices: the signature manifest is not offered as an image.
    let sigs = entry_of_kind(&layout, "sigs");
    assert!(!err.contains(sigs["digest"].as_str().unwrap()), "{err}");
    w2.assert_no_store();
    // Picking one by digest works (its signature is in the layout's sigs manifest).
    let src = format!("{}:{}", oci(&layout), s.digest);
    assert_eq!(w2.ok(&["fetch", "--name", &name, &src]).trim(), s.digest);
    // An unknown digest is refused with the same list.
    let bogus = format!("{}:sha256:{}", oci(&layout), "0".repeat(64));
    let err = w2.fails(&["fetch", "--name", &name, &bogus]);
    assert!(err.contains(&s.digest) && err.contains(&second), "{err}");
}

#[test]
fn tampered_cosign_signature_is_refused_and_nothing_is_stored() {
    let s = setup("tamper");
    let w = &s.w;
    let layout = cosign_save(w, &s.repo, &s.digest, "saved");
    // Flip one bit of the signature in the sigs manifest, re-hash and re-point the index.
    let sigs = entry_of_kind(&layout, "sigs");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&blob(&layout, sigs["digest"].as_str().unwrap())).unwrap();
    let ann = &mut manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"];
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(ann.as_str().unwrap()).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    *ann = serde_json::Value::String(b64.encode(&sig));
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let d = put_blob(&layout, &bytes);
    let mut index = index_json(&layout);
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["kind"] == "dev.cosignproject.cosign/sigs" {
            m["digest"] = serde_json::Value::String(d.clone());
            m["size"] = bytes.len().into();
        }
    }
    write_index(&layout, &index);
    let out = cosign_verify_local(w, &s.public, &layout);
    assert!(
        !out.status.success(),
        "cosign accepted a tampered signature"
    );
    // A store that already holds an image: the refused import adds nothing to it.
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let good = cosign_save(w, &s.repo, &s.digest, "good");
    w2.ok(&["fetch", "--name", &format!("{}:good", s.repo), &oci(&good)]);
    let before = (
        w2.count("images/blobs/sha256"),
        w2.count("layers/sha256"),
        fs::read(w2.store().join("images/index.json")).unwrap(),
    );
    let err = w2.fails(&[
        "fetch",
        "--name",
        &format!("{}:tamper", s.repo),
        &oci(&layout),
    ]);
    assert!(
        err.contains("not verified")
            || err.contains("does not verify with any key trusted")
            || err.contains("modified"),
        "{err}"
    );
    let after = (
        w2.count("images/blobs/sha256"),
        w2.count("layers/sha256"),
        fs::read(w2.store().join("images/index.json")).unwrap(),
    );
    assert_eq!(before, after, "the refused import changed the store");
    assert!(!w2.ok(&["image", "list"]).contains(":tamper"));
    // A fresh world is left without a store at all.
    let w3 = World::new();
    w3.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    w3.fails(&[
        "fetch",
        "--name",
        &format!("{}:tamper", s.repo),
        &oci(&layout),
    ]);
    w3.assert_no_store();
}

/// `podman load` into a private store (vfs, under the world) — the archive must load.
fn podman_load(w: &World, archive: &Path) -> Output {
    let root = w.path("podman-root");
    Command::new("podman")
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ])
        .arg("load")
        .arg("-i")
        .arg(archive)
        .output()
        .expect("podman runs (scripts/deps.sh podman)")
}

fn skopeo_copy(from: &str, to: &str) -> Output {
    Command::new("skopeo")
        .args(["copy", "--quiet", from, to])
        .output()
        .expect("skopeo runs")
}

#[test]
fn export_writes_detached_signatures_by_default_and_the_archive_loads_everywhere() {
    let s = setup("export");
    let w = &s.w;
    let name = format!("{}:export", s.repo);
    w.ok(&[HTTP, "fetch", &format!("docker://{name}")]);
    let archive = w.path("export.tar");
    let out = w
        .cmd(&["image", "export", &name, archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sig = w.path("export.tar.sig");
    assert!(
        sig.is_file(),
        "no detached signature: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("export.tar.sig"),
        "{}",
        text(&out.stderr)
    );
    // The archive holds one image: podman and skopeo read it without a choice.
    let out = podman_load(w, &archive);
    assert!(out.status.success(), "podman load: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Loaded image") && text(&out.stdout).contains(&s.repo),
        "{}",
        text(&out.stdout)
    );
    let src = format!("oci-archive:{}", archive.display());
    for dest in [
        format!("docker-archive:{}", w.path("copy.docker.tar").display()),
        format!("oci-archive:{}", w.path("copy.oci.tar").display()),
        format!("oci:{}", w.path("copy.oci").display()),
    ] {
        let out = skopeo_copy(&src, &dest);
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            text(&out.stderr)
        );
    }
    // orbit → orbit: the archive and its detached signature verify elsewhere.
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let out = w2.cmd(&["fetch", &src]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), s.digest);
    assert!(text(&out.stderr).contains("signature verified"));
    assert!(w2.ok(&["image", "list"]).contains(&name));
    // Without the signature file the archive alone does not verify.
    fs::remove_file(&sig).unwrap();
    let w3 = World::new();
    w3.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let err = w3.fails(&["fetch", &src]);
    assert!(err.contains("no signature found"), "{err}");
    w3.assert_no_store();
}

#[test]
fn export_embedded_is_read_by_cosign_and_orbit_and_none_writes_no_signature() {
    let s = setup("embed");
    let w = &s.w;
    let name = format!("{}:embed", s.repo);
    w.ok(&[HTTP, "fetch", &format!("docker://{name}")]);
    let archive = w.path("embedded.tar");
    w.ok(&[
        "image",
        "export",
        "--signatures=embedded",
        &name,
        archive.to_str().unwrap(),
    ]);
    assert!(!w.path("embedded.tar.sig").exists());
    // The reason it is not the default: skopeo takes the signature manifest for a second
    // image and will not choose.
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out.stderr).contains("more than one image"),
        "{}",
        text(&out.stderr)
    );
    // Unpacked, it is a layout cosign verifies with its own key.
    let dir = w.path("embedded");
    fs::create_dir_all(&dir).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-xf")
        .arg(&archive)
        .status()
        .unwrap();
    assert!(st.success());
    let out = cosign_verify_local(w, &s.public, &dir);
    assert!(out.status.success(), "cosign verify: {}", text(&out.stderr));
    // orbit reads the embedded signature (no .sig file) and counts one image.
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let src = format!("oci-archive:{}", archive.display());
    assert_eq!(w2.ok(&["fetch", &src]).trim(), s.digest);
    // --signatures=none: no file, and over an earlier detached export its stale .sig goes.
    let plain = w.path("plain.tar");
    w.ok(&["image", "export", &name, plain.to_str().unwrap()]);
    assert!(w.path("plain.tar.sig").is_file());
    let err = w.fails(&[
        "image",
        "export",
        "--signatures=none",
        &name,
        plain.to_str().unwrap(),
    ]);
    assert!(err.contains("--overwrite"), "{err}");
    w.ok(&[
        "image",
        "export",
        "--signatures=none",
        "--overwrite",
        &name,
        plain.to_str().unwrap(),
    ]);
    assert!(
        !w.path("plain.tar.sig").exists(),
        "stale signature file left"
    );
    let w3 = World::new();
    w3.ok(&["trust", "--prefix", &s.repo, s.public.to_str().unwrap()]);
    let err = w3.fails(&["fetch", &format!("oci-archive:{}", plain.display())]);
    assert!(err.contains("no signature found"), "{err}");
    w3.assert_no_store();
    // An unknown mode is refused by the CLI with the choices.
    let out = w.run(&["image", "export", "--signatures=inline", &name, "/dev/null"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("detached") && err.contains("embedded"),
        "{err}"
    );
}

#[test]
fn cosign_saved_image_index_verifies_and_round_trips_through_an_export() {
    let reg = Registry::start_plain();
    let w = World::new();
    let (key, public) = cosign_keys(&w, "cosign");
    let (layout, manifest) = image(&w, &reg, "multi-src", 0, 0, false);
    let repo = format!("{}/busybox", reg.host());
    // An index of this machine's image and an arm64 twin (another config), pushed whole.
    let manifest_bytes = blob(&layout, &manifest);
    let m: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&blob(&layout, m["config"]["digest"].as_str().unwrap())).unwrap();
    config["architecture"] = "arm64".into();
    let config = serde_json::to_vec(&config).unwrap();
    let mut twin = m.clone();
    twin["config"]["digest"] = put_blob(&layout, &config).into();
    twin["config"]["size"] = config.len().into();
    let twin = serde_json::to_vec(&twin).unwrap();
    let twin_digest = put_blob(&layout, &twin);
    let entry = |d: &str, size: usize, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d, "size": size, "platform": {"architecture": arch, "os": "linux"}})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&twin_digest, twin.len(), "arm64"),
                      entry(&manifest, manifest_bytes.len(), "amd64")],
    }))
    .unwrap();
    let index_digest = put_blob(&layout, &index);
    write_index(
        &layout,
        &serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
            "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}),
    );
    reg.push_with(&layout, "multi", "busybox:multi", &["--all"]);
    // cosign signs the index (not each platform's manifest) and saves it as kind imageIndex.
    cosign_ok(
        &w,
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "-y",
            &format!("{repo}@{index_digest}"),
        ],
    );
    let saved = cosign_save(&w, &repo, &index_digest, "saved");
    entry_of_kind(&saved, "imageIndex");
    let name = format!("{repo}:multi");
    w.ok(&["trust", "--prefix", &repo, public.to_str().unwrap()]);
    // orbit picks this platform's manifest and accepts the signature over the index.
    assert_eq!(
        w.ok(&["fetch", "--name", &name, &oci(&saved)]).trim(),
        manifest
    );
    // Exported (through the signed index) with a detached signature, it verifies elsewhere.
    let archive = w.path("multi.tar");
    w.ok(&["image", "export", &name, archive.to_str().unwrap()]);
    assert!(w.path("multi.tar.sig").is_file());
    let w2 = World::new();
    w2.ok(&["trust", "--prefix", &repo, public.to_str().unwrap()]);
    let src = format!("oci-archive:{}", archive.display());
    assert_eq!(w2.ok(&["fetch", &src]).trim(), manifest);
}
