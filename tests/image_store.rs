//! The image store end to end through the real `orbit` binary: fetch from every local
//! source kind, layer sharing, re-import, listing/inspecting, export/extract/render,
//! verify, rm/gc, and that standard tools (skopeo, umoci) read the store.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};

fn signed_world() -> (World, std::path::PathBuf) {
    let w = World::new();
    let (key, public) = w.keygen("publisher");
    w.trust("example.com/app", &public);
    let layout = simple_image(&w, "layout", "example.com/app:1.0");
    w.sign(&oci(&layout), &key);
    (w, layout)
}

#[test]
fn fetch_signed_oci_layout_lists_inspects_and_standard_tools_read_the_store() {
    let (w, layout) = signed_world();
    let digest = layout_digest(&layout, "example.com/app:1.0");
    let out = w.ok(&["fetch", &oci(&layout)]);
    assert_eq!(out.trim(), digest);

    let list = w.ok(&["image", "list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["name"], "example.com/app:1.0");
    assert_eq!(v[0]["digest"], digest);
    assert!(
        v[0]["verified"]
            .as_str()
            .unwrap()
            .starts_with("key sha256:"),
        "{list}"
    );
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "cosign signature tags are not images: {list}"
    );

    let table = w.ok(&["image", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&digest["sha256:".len()..][..12]), "{table}");
    assert!(!w.ok(&["image", "list", "--no-legend"]).contains("NAME"));

    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&[
        "image",
        "inspect",
        "--format",
        "json",
        "example.com/app:1.0",
    ]))
    .unwrap();
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 2);
    assert!(inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["unpacked"] == true));
    assert_eq!(inspect["config"]["config"]["Cmd"][0], "/bin/hello");
    assert_eq!(inspect["signatures"], 1);

    let manifest: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "cat-manifest", "app:1.0"])).unwrap();
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    // Layers are unpacked with their contents.
    let diff_id = inspect["layers"][1]["diff_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let motd = w
        .store()
        .join("layers/sha256")
        .join(&diff_id)
        .join("rootfs/etc/motd");
    assert_eq!(fs::read_to_string(motd).unwrap(), "hi there\n");

    // skopeo and umoci read the store as an OCI layout.
    let store_images = w.store().join("images");
    let skv = skopeo_inspect(&format!(
        "oci:{}:example.com/app:1.0",
        store_images.display()
    ));
    assert_eq!(skv["Digest"], digest);
    let um = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(&store_images)
        .output()
        .unwrap();
    assert!(um.status.success(), "umoci: {}", text(&um.stderr));
    assert!(
        text(&um.stdout).contains("example.com/app:1.0"),
        "{}",
        text(&um.stdout)
    );
}

#[test]
fn references_resolve_by_name_short_name_digest_prefix_and_source() {
    let (w, layout) = signed_world();
    let digest = w.ok(&["fetch", &oci(&layout)]).trim().to_string();
    let hex = &digest["sha256:".len()..];
    for r in [
        "example.com/app:1.0",
        "app:1.0",
        &digest,
        &hex[..8],
        &format!("sha256:{}", &hex[..10]),
        &oci(&layout),
    ] {
        let m: serde_json::Value =
            serde_json::from_str(&w.ok(&["image", "inspect", "--format", "json", r])).unwrap();
        assert_eq!(m["digest"], digest, "reference {r}");
    }
    let err = w.fails(&["image", "inspect", "nosuch/image"]);
    assert!(
        err.contains("not in the store") && err.contains("nosuch/image"),
        "{err}"
    );
}

#[test]
fn ambiguous_digest_prefix_is_refused_with_candidates() {
    let w = World::new();
    // Make images until two digests share a first hex digit.
    let mut digests: Vec<String> = Vec::new();
    for i in 0..40 {
        let src = tree(&w.path(&format!("src{i}")), &[("f", &format!("{i}"))]);
        let layout = w.path(&format!("l{i}"));
        write_image(
            &layout,
            &format!("example.com/img{i}:1"),
            &[Layer {
                tar: tar_dir(&src).unwrap(),
                compression: Compression::None,
            }],
            &RunConfig::default(),
        )
        .unwrap();
        let d = w
            .ok(&["--insecure-options=image", "fetch", &oci(&layout)])
            .trim()
            .to_string();
        if let Some(prev) = digests.iter().find(|p| p.as_bytes()[7] == d.as_bytes()[7]) {
            let prefix = &d[7..8];
            let err = w.fails(&["image", "inspect", &format!("sha256:{prefix}")]);
            assert!(err.contains("ambiguous"), "{err}");
            assert!(
                err.contains(&prev[7..19]) && err.contains(&d[7..19]),
                "{err}"
            );
            return;
        }
        digests.push(d);
    }
    panic!("no shared prefix among 40 digests");
}

#[test]
fn shared_base_layer_is_unpacked_once_and_reimport_reuses_everything() {
    let w = World::new();
    let base = tree(&w.path("base"), &[("usr/lib/big", &"x".repeat(100_000))]);
    let a = tree(&w.path("a"), &[("a", "a")]);
    let b = tree(&w.path("b"), &[("b", "b")]);
    let base_tar = tar_dir(&base).unwrap();
    let layout = w.path("layout");
    for (name, top) in [("example.com/a:1", &a), ("example.com/b:1", &b)] {
        write_image(
            &layout,
            name,
            &[
                Layer {
                    tar: base_tar.clone(),
                    compression: Compression::Gzip,
                },
                Layer {
                    tar: tar_dir(top).unwrap(),
                    compression: Compression::Gzip,
                },
            ],
            &RunConfig::default(),
        )
        .unwrap();
    }
    let out = w
        .cmd(&[
            "--insecure-options=image",
            "fetch",
            &format!("{}:example.com/a:1", oci(&layout)),
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("2 layer(s) unpacked, 0 already present"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("WARNING"),
        "insecure fetch must warn: {}",
        text(&out.stderr)
    );
    let base_layer = fs::read_dir(w.store().join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("rootfs/usr/lib/big").exists())
        .unwrap();
    let inode_before = std::os::unix::fs::MetadataExt::ino(
        &fs::metadata(base_layer.join("rootfs/usr/lib/big")).unwrap(),
    );

    let out = w
        .cmd(&[
            "--insecure-options=image",
            "fetch",
            &format!("{}:example.com/b:1", oci(&layout)),
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("1 layer(s) unpacked, 1 already present"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(w.count("layers/sha256"), 3, "base layer unpacked once");
    let inode_after = std::os::unix::fs::MetadataExt::ino(
        &fs::metadata(base_layer.join("rootfs/usr/lib/big")).unwrap(),
    );
    assert_eq!(
        inode_before, inode_after,
        "the shared layer was not re-unpacked"
    );

    let out = w
        .cmd(&[
            "--insecure-options=image",
            "fetch",
            &format!("{}:example.com/b:1", oci(&layout)),
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("0 layer(s) unpacked, 2 already present"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn uncompressed_layers_and_oci_archive_and_docker_archive_import() {
    let w = World::new();
    let src = tree(&w.path("src"), &[("hello.txt", "plain")]);
    let layout = raw_image(
        &w,
        "layout",
        "example.com/plain:1",
        tar_dir(&src).unwrap(),
        Compression::None,
    );

    // oci-archive: a tar of the layout.
    let archive = w.path("plain.tar");
    tar_layout(&layout, &archive);
    let d1 = w.ok(&[
        "--insecure-options=image",
        "fetch",
        &format!("oci-archive:{}", archive.display()),
    ]);

    // docker-archive written by skopeo (the same format docker save writes).
    let docker = w.path("docker.tar");
    let st = Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg(format!("oci:{}:example.com/plain:1", layout.display()))
        .arg(format!(
            "docker-archive:{}:example.com/plain:1",
            docker.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let d2 = w.ok(&[
        "--insecure-options=image",
        "fetch",
        &format!("docker-archive:{}", docker.display()),
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "list", "--format", "json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"example.com/plain:1"), "{names:?}");
    // orbit's deterministic conversion of the docker archive reproduces the original OCI
    // manifest byte for byte (same config, same uncompressed layer), hence the same digest.
    assert_eq!(d1, d2);
    // Both share the one layer (same diff-ID).
    assert_eq!(w.count("layers/sha256"), 1);
    let rootfs = w.path("extracted");
    w.ok(&["image", "extract", d2.trim(), rootfs.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "plain"
    );
}

#[test]
fn fetch_name_override_and_unnamed_sources() {
    let w = World::new();
    let src = tree(&w.path("src"), &[("f", "1")]);
    let layout = raw_image(
        &w,
        "layout",
        "latest",
        tar_dir(&src).unwrap(),
        Compression::Gzip,
    );
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    assert!(w.ok(&["image", "list"]).contains("localhost/layout:latest"));
    w.ok(&[
        "--insecure-options=image",
        "fetch",
        "--name",
        "example.com/renamed",
        &oci(&layout),
    ]);
    assert!(w
        .ok(&["image", "list"])
        .contains("example.com/renamed:latest"));
    let err = w.fails(&[
        "--insecure-options=image",
        "fetch",
        "--name",
        "Bad Name",
        &oci(&layout),
    ]);
    assert!(err.contains("not a valid image name"), "{err}");
}

#[test]
fn export_carries_name_and_signature_and_fetches_back_verified() {
    let (w, layout) = signed_world();
    let digest = w.ok(&["fetch", &oci(&layout)]).trim().to_string();
    let archive = w.path("export.tar");
    w.ok(&[
        "image",
        "export",
        "example.com/app:1.0",
        archive.to_str().unwrap(),
    ]);
    let err = w.fails(&[
        "image",
        "export",
        "example.com/app:1.0",
        archive.to_str().unwrap(),
    ]);
    assert!(err.contains("--overwrite"), "{err}");

    let w2 = World::new();
    let public = w.path("publisher.pub");
    w2.trust("example.com/app", &public);
    let d2 = w2
        .ok(&["fetch", &format!("oci-archive:{}", archive.display())])
        .trim()
        .to_string();
    assert_eq!(d2, digest);
    assert!(w2.ok(&["image", "list"]).contains("key sha256:"));
    // skopeo reads the exported archive too.
    skopeo_inspect(&format!(
        "oci-archive:{}:example.com/app:1.0",
        archive.display()
    ));
}

#[test]
fn extract_and_render_apply_whiteouts_and_opaque_dirs() {
    let w = World::new();
    let base = tree(
        &w.path("base"),
        &[
            ("keep", "k"),
            ("gone", "g"),
            ("dir/old", "o"),
            ("dir/also-old", "o"),
        ],
    );
    // Top layer: delete `gone`, make `dir` opaque, add dir/new.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [(".wh.gone", ""), ("dir/.wh..wh..opq", ""), ("dir/new", "n")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    let top = b.into_inner().unwrap();
    let layout = gzip_layers_image(
        &w,
        "layout",
        "example.com/wh:1",
        vec![tar_dir(&base).unwrap(), top],
    );
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);

    let out = w.path("flat");
    w.ok(&[
        "image",
        "extract",
        "example.com/wh:1",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("keep").exists());
    assert!(!out.join("gone").exists());
    assert!(!out.join("dir/old").exists() && !out.join("dir/also-old").exists());
    assert_eq!(fs::read_to_string(out.join("dir/new")).unwrap(), "n");
    assert!(!out.join(".wh.gone").exists() && !out.join("dir/.wh..wh..opq").exists());
    let err = w.fails(&[
        "image",
        "extract",
        "example.com/wh:1",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("not empty"), "{err}");

    let r = w.path("rendered");
    w.ok(&["image", "render", "example.com/wh:1", r.to_str().unwrap()]);
    assert!(r.join("rootfs/keep").exists() && !r.join("rootfs/gone").exists());
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(r.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert!(r.join("manifest.json").exists());
}

#[test]
fn verify_reports_corrupt_blobs_and_modified_layer_files_precisely() {
    let (w, layout) = signed_world();
    w.ok(&["fetch", &oci(&layout)]);
    assert!(w
        .ok(&["image", "verify"])
        .contains("example.com/app:1.0: ok"));

    let inspect: serde_json::Value = serde_json::from_str(&w.ok(&[
        "image",
        "inspect",
        "--format",
        "json",
        "example.com/app:1.0",
    ]))
    .unwrap();
    let blob = inspect["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let diff_id = inspect["layers"][1]["diff_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob_path = w.store().join("images/blobs/sha256").join(&blob);
    let mut bytes = fs::read(&blob_path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&blob_path, bytes).unwrap();
    fs::write(
        w.store()
            .join("layers/sha256")
            .join(&diff_id)
            .join("rootfs/etc/motd"),
        "tampered\n",
    )
    .unwrap();

    let out = w.run(&["image", "verify", "--format", "json"]);
    assert_eq!(out.status.code(), Some(125));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report[0]["problems"].as_array().unwrap();
    let all = serde_json::to_string(problems).unwrap();
    assert!(all.contains(&blob), "corrupt blob named: {all}");
    assert!(all.contains("etc/motd"), "modified file named: {all}");
    assert_eq!(problems.len(), 2, "exactly the two corruptions: {all}");
}

#[test]
fn rm_removes_names_then_gc_frees_unreferenced_blobs_and_layers() {
    let (w, layout) = signed_world();
    let digest = w.ok(&["fetch", &oci(&layout)]).trim().to_string();
    w.ok(&[
        "--insecure-options=image",
        "fetch",
        "--name",
        "example.com/app:alias",
        &oci(&layout),
    ]);
    assert_eq!(w.count("layers/sha256"), 2);
    // Removing one name keeps the image.
    assert!(w
        .ok(&["image", "rm", "example.com/app:alias"])
        .contains("removed example.com/app:alias"));
    assert_eq!(w.count("layers/sha256"), 2);
    // Removing by digest removes every name, its signature, its blobs and layers.
    w.ok(&["image", "rm", &digest]);
    w.assert_store_empty();
    let err = w.fails(&["image", "rm", "example.com/app:1.0"]);
    assert!(err.contains("not in the store"), "{err}");

    // gc removes leftovers of interrupted work and stray blobs.
    fs::write(w.store().join("tmp/blob-leftover"), "x").unwrap();
    fs::write(
        w.store().join("images/blobs/sha256").join("0".repeat(64)),
        "stray",
    )
    .unwrap();
    let out = w.ok(&["image", "gc"]);
    assert!(
        out.contains("removed 1 blob(s)") && out.contains("1 leftover"),
        "{out}"
    );
    w.assert_store_empty();
}

#[test]
fn cli_conventions_usage_errors_exit_2_version_completion_and_man_pages() {
    let w = World::new();
    let out = w.run(&["image", "list", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--no-such-flag"));
    let out = w.run(&["image", "list", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("table") && text(&out.stderr).contains("json"));
    let v: serde_json::Value =
        serde_json::from_str(&w.ok(&["version", "--format", "json"])).unwrap();
    assert_eq!(v["stage1_interface"], 1);
    assert!(w.ok(&["completion", "bash"]).contains("_orbit"));
    assert!(w.ok(&["completion", "zsh"]).contains("#compdef orbit"));
    assert!(w.ok(&["completion", "fish"]).contains("complete -c orbit"));
    let man = w.path("man");
    w.ok(&["man", man.to_str().unwrap()]);
    assert!(fs::read_to_string(man.join("orbit.1"))
        .unwrap()
        .contains(".TH orbit"));
    assert!(man.join("orbit-fetch.1").exists() && man.join("orbit-image-list.1").exists());
    // The store directory comes from --dir as well as ORBIT_DIR.
    let other = w.path("other-store");
    let out = w
        .cmd(&[
            "--dir",
            other.to_str().unwrap(),
            "image",
            "list",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "[]");
}
