//! Fetching from a real registry: Debian's `docker-registry` (the reference distribution
//! server) on 127.0.0.1, with TLS from a CA the test makes and htpasswd auth; images and
//! their cosign-style signatures pushed with skopeo.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{text, World};
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};
use pods_common::*;

const USER: &str = "tester";
const PASS: &str = "s3cret";

/// A registry on a free port of 127.0.0.1; killed (by pid) on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("orbit-reg-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=orbit test CA' && \
             openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' && \
             printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && \
             openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf && \
             mkdir certs && cp ca.crt certs/ca.crt",
            d,
        );
        sh(&format!("htpasswd -Bbn {USER} {PASS} > htpasswd"), d);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {p}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {p}/server.crt\n    key: {p}/server.key\nauth:\n  htpasswd:\n    realm: orbit-test\n    path: {p}/htpasswd\n",
                p = d.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(fs::File::create(d.join("access.log")).unwrap())
            .stderr(fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        poll(Duration::from_secs(20), "the registry to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Registry { dir, port, child }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> String {
        format!("--ca-cert={}", self.dir.path().join("ca.crt").display())
    }

    fn log(&self) -> String {
        let d = self.dir.path();
        fs::read_to_string(d.join("access.log")).unwrap_or_default()
            + &fs::read_to_string(d.join("registry.log")).unwrap_or_default()
    }

    /// Pushes tag `r` of `layout` as `repo_tag`.
    fn push(&self, layout: &Path, r: &str, repo_tag: &str) {
        self.push_with(layout, r, repo_tag, &[]);
    }

    /// [`Registry::push`] with extra skopeo flags (`--all` for an index).
    fn push_with(&self, layout: &Path, r: &str, repo_tag: &str, extra: &[&str]) {
        let certs = self.dir.path().join("certs");
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests"])
            .args(extra)
            .arg(format!("--dest-cert-dir={}", certs.display()))
            .arg(format!("--dest-creds={USER}:{PASS}"))
            .arg(format!("oci:{}:{r}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo push: {}", text(&out.stderr));
    }

    /// The registry's own copy of blob `digest` (to tamper with).
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A world with the demo key trusted for the registry's `busybox` and credentials stored.
fn world(reg: &Registry) -> World {
    let w = World::new();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.pub");
    w.ok(&[
        "trust",
        "--prefix",
        &format!("{}/busybox", reg.host()),
        &key.display().to_string(),
    ]);
    let mut c = w.cmd(&["login", &reg.host(), "-u", USER, "--password-stdin"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASS}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    w
}

/// A busybox image named for the registry with `layers` extra layers of `size` random bytes,
/// signed with the demo key (inside the layout) unless `sign` is false. Returns the layout,
/// its manifest digest and the blob digest of its last layer.
fn image(
    w: &World,
    reg: &Registry,
    tag: &str,
    layers: usize,
    size: usize,
    sign: bool,
) -> (PathBuf, String) {
    let src = w.path(&format!("src-{tag}"));
    fs::create_dir_all(src.join("base/bin")).unwrap();
    fs::copy("/bin/busybox", src.join("base/bin/busybox")).unwrap();
    for a in ["sh", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", src.join("base/bin").join(a)).unwrap();
    }
    fs::create_dir_all(src.join("base/etc")).unwrap();
    fs::write(src.join("base/etc/motd"), format!("hello from {tag}\n")).unwrap();
    let mut ls = vec![Layer {
        tar: tar_dir(&src.join("base")).unwrap(),
        compression: Compression::Gzip,
    }];
    for i in 0..layers {
        let d = src.join(format!("l{i}"));
        fs::create_dir_all(&d).unwrap();
        let mut data = vec![0u8; size];
        let mut x: u64 = 0x9e3779b97f4a7c15 ^ (i as u64 + 1);
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(d.join(format!("data{i}")), data).unwrap();
        ls.push(Layer {
            tar: tar_dir(&d).unwrap(),
            compression: Compression::None,
        });
    }
    let layout = w.path(&format!("layout-{tag}"));
    let name = format!("{}/busybox:{tag}", reg.host());
    let run = RunConfig {
        cmd: Some(vec!["/bin/cat".into(), "/etc/motd".into()]),
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let written = write_image(&layout, &name, &ls, &run).unwrap();
    if sign {
        let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.key");
        w.ok(&[
            "image",
            "sign",
            "--key",
            &key.display().to_string(),
            &format!("oci:{}", layout.display()),
        ]);
        reg.push(
            &layout,
            &format!(
                "sha256-{}.sig",
                written.manifest.trim_start_matches("sha256:")
            ),
            &format!(
                "busybox:sha256-{}.sig",
                written.manifest.trim_start_matches("sha256:")
            ),
        );
    }
    reg.push(&layout, &name, &format!("busybox:{tag}"));
    (layout, written.manifest)
}

#[test]
fn fetch_by_tag_and_digest_verifies_runs_and_a_second_fetch_downloads_nothing() {
    let reg = Registry::start();
    let w = world(&reg);
    let (_, digest) = image(&w, &reg, "v1", 3, 64 * 1024, true);
    let src = format!("docker://{}/busybox:v1", reg.host());
    let out = w.run(&[&reg.ca(), "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        text(&out.stderr).contains("signature verified"),
        "{}",
        text(&out.stderr)
    );
    // The image runs from its registry name.
    let ran = out_ok(&w, &["run", &format!("{}/busybox:v1", reg.host())]);
    assert_eq!(ran, "hello from v1\n");
    // Fetching again asks for the manifest only.
    let blob_gets = |log: &str| {
        log.lines()
            .filter(|l| l.contains("GET /v2/busybox/blobs/"))
            .count()
    };
    let before = blob_gets(&reg.log());
    let again = w.run(&[&reg.ca(), "fetch", &src]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("already in the store"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        blob_gets(&reg.log()),
        before,
        "a second fetch downloaded blobs"
    );
    // By digest too; and `never` does not touch the registry for what it lacks.
    let by_digest = format!("docker://{}/busybox@{digest}", reg.host());
    let out = w.run(&[&reg.ca(), "fetch", &by_digest]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e = w.fails(&[
        &reg.ca(),
        "--pull-policy=never",
        "fetch",
        &format!("docker://{}/busybox:other", reg.host()),
    ]);
    assert!(e.contains("--pull-policy=never"), "{e}");
    // `run` takes a registry reference too, fetching what the store lacks.
    let w2 = world(&reg);
    let ran = out_ok(&w2, &[&reg.ca(), "run", &src]);
    assert_eq!(ran, "hello from v1\n");
}

#[test]
fn unsigned_tampered_and_unauthorised_fetches_are_refused_and_leave_nothing() {
    let reg = Registry::start();
    let w = world(&reg);
    image(&w, &reg, "unsigned", 1, 4096, false);
    let src = format!("docker://{}/busybox:unsigned", reg.host());
    let e = w.fails(&[&reg.ca(), "fetch", &src]);
    assert!(e.to_lowercase().contains("signature"), "{e}");
    w.assert_store_empty();
    let out = w.run(&[&reg.ca(), "--insecure-options=image", "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out_ok(
        &w,
        &["image", "rm", &format!("{}/busybox:unsigned", reg.host())],
    );
    out_ok(&w, &["image", "gc"]);

    // A layer changed in the registry's storage.
    let w2 = world(&reg);
    let (layout, _) = image(&w2, &reg, "tampered", 1, 8192, true);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .ends_with(":tampered")
        })
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(manifest_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let blob = reg.blob(layer);
    let mut bytes = fs::read(&blob).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let w3 = world(&reg);
    let e = w3.fails(&[
        &reg.ca(),
        "fetch",
        &format!("docker://{}/busybox:tampered", reg.host()),
    ]);
    assert!(e.contains("digest mismatch"), "{e}");
    w3.assert_store_empty();

    // Wrong credentials, and an untrusted CA.
    let w4 = World::new();
    w4.ok(&["login", &reg.host(), "-u", USER, "-p", "wrong"]);
    let e = w4.fails(&[&reg.ca(), "--insecure-options=image", "fetch", &src]);
    assert!(
        e.contains("authentication") || e.contains("401") || e.contains("nauthorized"),
        "{e}"
    );
    w4.assert_store_empty();
    let e = w.fails(&["--insecure-options=image", "fetch", &src]);
    assert!(e.contains("certificate"), "{e}");
    // A CA in certs.d/<registry>/ is trusted like --ca-cert.
    let certs = w.path(&format!("config/user/certs.d/{}", reg.host()));
    fs::create_dir_all(&certs).unwrap();
    fs::copy(reg.dir.path().join("ca.crt"), certs.join("ca.crt")).unwrap();
    let out = w.run(&["--insecure-options=image", "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn many_layers_download_in_parallel_and_a_partial_download_is_resumed() {
    let reg = Registry::start();
    let w = world(&reg);
    let (layout, digest) = image(&w, &reg, "big", 6, 512 * 1024, true);
    // Half of one layer already downloaded by an earlier, interrupted fetch.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][3]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = layer.trim_start_matches("sha256:");
    let full = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    let downloads = w.store().join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    fs::write(
        downloads.join(format!("{hex}.partial")),
        &full[..full.len() / 2],
    )
    .unwrap();
    let out = w.run(&[
        &reg.ca(),
        "fetch",
        &format!("docker://{}/busybox:big", reg.host()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The registry served the rest of that layer as a range.
    let log = reg.log();
    assert!(
        log.lines().any(|l| l.contains(hex) && l.contains(" 206 ")),
        "no ranged GET for the partial layer in the registry log:\n{log}"
    );
    assert!(!downloads.join(format!("{hex}.partial")).exists());
    let ran = out_ok(
        &w,
        &[
            "run",
            &format!("{}/busybox:big", reg.host()),
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "busybox wc -c < /data3",
        ],
    );
    assert_eq!(ran.trim(), (512 * 1024).to_string());
}

#[test]
fn a_refused_connection_and_a_bad_reference_are_clear_errors() {
    let w = World::new();
    // Port 1 on loopback: nothing listens there.
    let e = w.fails(&[
        "--insecure-options=image",
        "fetch",
        "docker://127.0.0.1:1/busybox:latest",
    ]);
    assert!(
        e.contains("127.0.0.1:1") && e.contains("connection refused"),
        "{e}"
    );
    w.assert_store_empty();
    let leftovers: Vec<_> = fs::read_dir(w.store())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pull-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let e = w.fails(&["fetch", "docker://"]);
    assert!(e.contains("docker://"), "{e}");
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

#[test]
fn a_multi_arch_index_resolves_to_this_hosts_platform() {
    let reg = Registry::start();
    let w = world(&reg);
    // An amd64 image, then an arm64 twin (same layers, another config), under one index
    // that lists the arm64 one first.
    let src = w.path("src-multi");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
    let layout = w.path("layout-multi");
    let name = format!("{}/busybox:multi", reg.host());
    let run = RunConfig {
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo amd64-image".into(),
        ]),
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let a = write_image(
        &layout,
        &name,
        &[Layer {
            tar: tar_dir(&src).unwrap(),
            compression: Compression::Gzip,
        }],
        &run,
    )
    .unwrap();
    let blob = |d: &str| {
        fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest_a = blob(&a.manifest);
    let mut config_b: serde_json::Value = serde_json::from_slice(&blob(&a.config)).unwrap();
    config_b["architecture"] = "arm64".into();
    let config_b = serde_json::to_vec(&config_b).unwrap();
    let config_b_digest = put_blob(&layout, &config_b);
    let mut manifest_b: serde_json::Value = serde_json::from_slice(&manifest_a).unwrap();
    manifest_b["config"]["digest"] = config_b_digest.into();
    manifest_b["config"]["size"] = config_b.len().into();
    let manifest_b = serde_json::to_vec(&manifest_b).unwrap();
    let manifest_b_digest = put_blob(&layout, &manifest_b);
    let entry = |d: &str, size: usize, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": size,
                           "platform": {"architecture": arch, "os": "linux"}})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&manifest_b_digest, manifest_b.len(), "arm64"), entry(&a.manifest, manifest_a.len(), "amd64")],
    }))
    .unwrap();
    let index_digest = put_blob(&layout, &index);
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": name}}]}))
        .unwrap(),
    )
    .unwrap();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.key");
    w.ok(&[
        "image",
        "sign",
        "--key",
        &key.display().to_string(),
        &format!("oci:{}", layout.display()),
    ]);
    // orbit signs the platform manifest it resolves to.
    let sig = format!("sha256-{}.sig", a.manifest.trim_start_matches("sha256:"));
    reg.push(&layout, &sig, &format!("busybox:{sig}"));
    reg.push_with(&layout, &name, "busybox:multi", &["--all"]);
    let src = format!("docker://{name}");
    let out = w.run(&[&reg.ca(), "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("signature verified"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out_ok(&w, &["run", &name]), "amd64-image\n");
    // The registry still serves the same index: --pull-policy=update (the default) finds
    // nothing newer, although the store holds the platform manifest, not the index.
    let again = w.run(&[&reg.ca(), "fetch", &src]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("nothing newer"),
        "{}",
        text(&again.stderr)
    );
    // Another platform is fetched on request (its manifest is not signed: insecure), with a
    // warning that it cannot run here.
    let arm = w.run(&[
        &reg.ca(),
        "--platform=linux/arm64",
        "--insecure-options=image",
        "fetch",
        "--name",
        "busybox-arm:multi",
        &src,
    ]);
    assert!(arm.status.success(), "{}", text(&arm.stderr));
    assert_eq!(text(&arm.stdout).trim(), manifest_b_digest);
    assert!(
        text(&arm.stderr).contains("cannot run on this host"),
        "{}",
        text(&arm.stderr)
    );
    // Unsigned, it is refused without the escape.
    let e = w.fails(&[
        &reg.ca(),
        "--platform=linux/arm64",
        "fetch",
        "--name",
        "busybox-arm2:multi",
        &src,
    ]);
    assert!(e.contains("signature"), "{e}");
    // A platform the index does not have is named in the error.
    let e = w.fails(&[&reg.ca(), "--platform=linux/s390x", "fetch", &src]);
    assert!(e.contains("no image for linux/s390x"), "{e}");
}

#[test]
fn image_gc_clears_partial_downloads() {
    let w = World::new();
    let layout = common::simple_image(&w, "layout", "example.com/gc:1");
    w.ok(&["--insecure-options=image", "fetch", &common::oci(&layout)]);
    let downloads = w.store().join("downloads");
    fs::create_dir_all(&downloads).unwrap();
    fs::write(
        downloads.join(format!("{}.partial", "ab".repeat(32))),
        b"half",
    )
    .unwrap();
    w.ok(&["image", "gc"]);
    assert_eq!(fs::read_dir(&downloads).unwrap().count(), 0);
}
