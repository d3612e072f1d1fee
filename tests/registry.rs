//! Fetching from a real registry: Debian's `docker-registry` (the reference distribution
//! server) on 127.0.0.1, with TLS from a CA the test makes and htpasswd auth; images and
//! their cosign-style signatures pushed with skopeo.

mod common;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;
#[path = "common/pods.rs"]
mod pods_common;
#[path = "common/registry.rs"]
mod registry_common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{text, World};
use fault_proxy::{FaultProxy, Faults};
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};
use pods_common::*;
use registry_common::*;

/// A world with the demo key trusted for the registry's `busybox` and credentials stored.
fn world(reg: &Registry) -> World {
    world_for(&reg.host(), Some(PASS), &[&reg.ca()])
}

/// A world with the demo key trusted for `host`'s `busybox`, logged in to `host` as
/// [`USER`] with `password`, if given (`login`, with global `flags`, checks it with the
/// registry).
fn world_for(host: &str, password: Option<&str>, flags: &[&str]) -> World {
    let w = World::new();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.pub");
    w.ok(&[
        "trust",
        "--prefix",
        &format!("{host}/busybox"),
        &key.display().to_string(),
    ]);
    if let Some(password) = password {
        let out = login(&w, host, password, flags);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    w
}

/// `orbit FLAGS login HOST -u USER --password-stdin`.
fn login(w: &World, host: &str, password: &str, flags: &[&str]) -> std::process::Output {
    let mut args = flags.to_vec();
    args.extend(["login", host, "-u", USER, "--password-stdin"]);
    let mut c = w.cmd(&args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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

    // Wrong credentials: `login` refuses them and stores nothing; a credentials file
    // with them makes the fetch fail.
    let w4 = World::new();
    let out = login(&w4, &reg.host(), "wrong", &[&reg.ca()]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused the credentials"),
        "{}",
        text(&out.stderr)
    );
    assert!(!w4.path("config/user/auth.json").exists());
    let docker_config = w4.path("home/.docker/config.json");
    fs::create_dir_all(docker_config.parent().unwrap()).unwrap();
    fs::write(
        &docker_config,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host(),
            base64_of(&format!("{USER}:wrong"))
        ),
    )
    .unwrap();
    let e = w4
        .cmd(&[&reg.ca(), "--insecure-options=image", "fetch", &src])
        .env("HOME", w4.path("home"))
        .output()
        .unwrap();
    assert_eq!(e.status.code(), Some(125));
    let e = text(&e.stderr);
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

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
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
    w.sign(&format!("oci:{}", layout.display()), &key);
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

/// `(file name, size)` of the partial downloads in `w`'s store.
fn partials(w: &World) -> Vec<(String, u64)> {
    fs::read_dir(w.store().join("downloads"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until a partial download in `w`'s store has at least `bytes`.
fn wait_for_partial(w: &World, bytes: u64) {
    poll(
        Duration::from_secs(60),
        "a partial download to grow",
        || {
            partials(w)
                .iter()
                .any(|(n, len)| n.ends_with(".partial") && *len >= bytes)
                .then_some(())
        },
    );
}

/// A blob GET for `hex` asking for the bytes from `from` on.
fn ranged_get(log: &[String], hex: &str, from: u64) -> bool {
    log.iter()
        .any(|l| l.starts_with("GET ") && l.contains(hex) && l.ends_with(&format!("bytes={from}-")))
}

#[test]
fn bearer_tokens_throttling_server_errors_and_missing_tags() {
    let reg = Registry::start_plain();
    let proxy = FaultProxy::start(reg.port);
    let host = proxy.host();
    let http = "--insecure-options=http";
    let bearer = Some((USER.to_string(), PASS.to_string()));
    proxy.set(Faults {
        bearer: bearer.clone(),
        ..Faults::default()
    });
    // `login` asks the token endpoint the registry's challenge names.
    let w0 = World::new();
    let out = login(&w0, &host, "wrong", &[http]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused the credentials"),
        "{}",
        text(&out.stderr)
    );
    let w = world_for(&host, Some(PASS), &[http]);
    let (_, digest) = image_as(&w, &reg, &host, "tok", 2, 64 * 1024, true);
    let src = format!("docker://{host}/busybox:tok");
    let name = format!("{host}/busybox:tok");
    let out = w.run(&[http, "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        proxy.log().iter().any(|l| l.starts_with("GET /token")),
        "{:?}",
        proxy.log()
    );
    // Only requests with the token reach the registry, and the blobs did.
    assert!(
        reg.log().contains("GET /v2/busybox/blobs/"),
        "{}",
        reg.log()
    );
    w.ok(&["image", "rm", &name]);
    w.ok(&["image", "gc"]);

    let w_empty = world_for(&host, Some(PASS), &[http]);
    // Throttled twice: the retries get through.
    proxy.set(Faults {
        bearer: bearer.clone(),
        status: Some((429, 2)),
        ..Faults::default()
    });
    let out = w.run(&[http, "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out_ok(&w, &["run", &name]), "hello from tok\n");

    // A server that keeps failing: an error naming the status, after retries; nothing kept.
    proxy.set(Faults {
        bearer: bearer.clone(),
        status: Some((503, 10_000)),
        ..Faults::default()
    });
    let w = w_empty;
    let e = w.fails(&[http, "fetch", &src]);
    assert!(e.contains("HTTP 503") && e.contains("after retries"), "{e}");
    w.assert_store_empty();

    // A tag the registry does not have.
    proxy.set(Faults {
        bearer,
        ..Faults::default()
    });
    let e = w.fails(&[http, "fetch", &format!("docker://{host}/busybox:nope")]);
    assert!(e.contains("no such image or tag"), "{e}");
    // A host that does not exist.
    let e = w.fails(&["fetch", "docker://no-such-host.invalid/busybox:1"]);
    assert!(e.contains("unknown host"), "{e}");
    w.assert_store_empty();
    let leftovers: Vec<_> = fs::read_dir(w.store())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pull-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn cut_downloads_resume_in_the_fetch_and_a_dead_server_resumes_in_the_next() {
    let mut reg = Registry::start_plain();
    let proxy = FaultProxy::start(reg.port);
    let host = proxy.host();
    let http = "--insecure-options=http";
    let w = world_for(&host, None, &[]);
    const SIZE: usize = 3 << 20;
    image_as(&w, &reg, &host, "cut", 2, SIZE, true);
    let src = format!("docker://{host}/busybox:cut");
    let name = format!("{host}/busybox:cut");
    let cat_size = |w: &World| {
        out_ok(
            w,
            &[
                "run",
                &name,
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                "busybox wc -c < /data1",
            ],
        )
    };

    // Every blob body is cut after 1 MiB: the fetch goes on with range requests.
    proxy.set(Faults {
        cut_blobs_after: Some(1 << 20),
        ..Faults::default()
    });
    let out = w.run(&[http, "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = proxy.log();
    assert!(
        log.iter()
            .any(|l| l.contains("/blobs/") && l.ends_with(&format!("bytes={}-", 2 << 20))),
        "{log:#?}"
    );
    assert_eq!(cat_size(&w).trim(), SIZE.to_string());
    assert!(partials(&w).is_empty(), "{:?}", partials(&w));

    // Stalled after 1 MiB, then the registry dies: the fetch fails, keeping what arrived.
    let w2 = world_for(&host, None, &[]);
    proxy.set(Faults {
        stall_blobs_after: Some(1 << 20),
        ..Faults::default()
    });
    let child = w2
        .cmd(&[http, "fetch", &src])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_partial(&w2, 1 << 20);
    reg.kill();
    proxy.drop_connections();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let e = text(&out.stderr);
    assert!(e.contains("the next fetch resumes"), "{e}");
    w2.assert_store_empty();
    let kept: Vec<(String, u64)> = partials(&w2)
        .into_iter()
        .filter(|(n, len)| n.ends_with(".partial") && *len > 0)
        .collect();
    assert!(!kept.is_empty(), "{:?}", partials(&w2));

    // The registry is back: the next fetch asks only for the rest of each partial.
    reg.restart();
    proxy.set(Faults::default());
    let out = w2.run(&[http, "fetch", &src]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = proxy.log();
    for (file, len) in &kept {
        let hex = file.trim_end_matches(".partial");
        assert!(
            ranged_get(&log, hex, *len),
            "no GET of {hex} from {len}: {log:#?}"
        );
    }
    assert!(partials(&w2).is_empty(), "{:?}", partials(&w2));
    assert_eq!(cat_size(&w2).trim(), SIZE.to_string());
}

#[test]
fn a_killed_fetch_resumes_and_concurrent_fetches_of_one_image_share_the_store() {
    let reg = Registry::start_plain();
    let proxy = FaultProxy::start(reg.port);
    let host = proxy.host();
    let http = "--insecure-options=http";
    let w = world_for(&host, None, &[]);
    image_as(&w, &reg, &host, "conc", 2, 3 << 20, true);
    let src = format!("docker://{host}/busybox:conc");
    let spawn = |w: &World| {
        w.cmd(&[http, "fetch", &src])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // kill -9 in the middle of a download: the partial stays, unlocked, and is resumed.
    proxy.set(Faults {
        stall_blobs_after: Some(1 << 20),
        ..Faults::default()
    });
    let mut first = spawn(&w);
    wait_for_partial(&w, 1 << 20);
    first.kill().unwrap();
    first.wait().unwrap();
    proxy.drop_connections();
    assert_eq!(out_ok(&w, &["image", "list", "--no-legend"]), "");
    let kept: Vec<(String, u64)> = partials(&w)
        .into_iter()
        .filter(|(n, len)| n.ends_with(".partial") && *len > 0)
        .collect();
    assert!(!kept.is_empty());

    // Two fetches at once, both stalled on the same layers: the second waits for the
    // first's download of a blob instead of writing into it.
    let a = spawn(&w);
    let b = spawn(&w);
    poll(
        Duration::from_secs(60),
        "the second fetch to wait for the first's download",
        || {
            fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| l.contains("->") && l.contains("FLOCK"))
                .then_some(())
        },
    );
    proxy.set(Faults::default());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let log = proxy.log();
    for (file, len) in &kept {
        let hex = file.trim_end_matches(".partial");
        assert!(
            ranged_get(&log, hex, *len),
            "no GET of {hex} from {len}: {log:#?}"
        );
    }
    w.ok(&["image", "verify", &format!("{host}/busybox:conc")]);
    assert!(partials(&w).is_empty(), "{:?}", partials(&w));
}
