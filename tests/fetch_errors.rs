//! Bad input to `orbit fetch`: every failure names the problem, exits 125 and leaves the
//! store exactly as it was (no blob, layer, temp file or name), and nothing is ever written
//! outside the store.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};

fn insecure_fetch_fails(w: &World, source: &str) -> String {
    w.fails(&["--insecure-options=image", "fetch", source])
}

/// One raw tar entry: name bytes (written verbatim, hostile ones included), type, data, link.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a str>);

fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn missing_unreadable_and_truncated_sources() {
    let w = World::new();
    let err = insecure_fetch_fails(&w, &format!("oci:{}", w.path("nope").display()));
    assert!(err.contains("not found") && err.contains("nope"), "{err}");
    let err = insecure_fetch_fails(&w, &format!("oci-archive:{}", w.path("nope.tar").display()));
    assert!(err.contains("not found"), "{err}");

    let junk = w.path("junk.tar");
    fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let err = insecure_fetch_fails(&w, &format!("oci-archive:{}", junk.display()));
    assert!(
        err.contains("is not a readable tar archive: it is not a tar archive"),
        "{err}"
    );

    let layout = simple_image(&w, "layout", "example.com/t:1");
    let archive = w.path("t.tar");
    tar_layout(&layout, &archive);
    let bytes = fs::read(&archive).unwrap();
    let cut = w.path("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = insecure_fetch_fails(&w, &format!("oci-archive:{}", cut.display()));
    assert!(err.contains("truncated"), "{err}");

    let gz = w.path("t.tar.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &bytes).unwrap();
    fs::write(&gz, e.finish().unwrap()).unwrap();
    let err = insecure_fetch_fails(&w, &format!("oci-archive:{}", gz.display()));
    assert!(err.contains("compressed"), "{err}");
    let err = w.fails(&["fetch", "http://example.com/x"]);
    assert!(err.contains("not a source"), "{err}");
    w.assert_no_store();
}

#[test]
fn malformed_json_unknown_media_type_and_unsupported_compression() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/t:1");
    fs::write(layout.join("index.json"), "{ not json").unwrap();
    let err = insecure_fetch_fails(&w, &oci(&layout));
    assert!(err.contains("index.json is malformed"), "{err}");
    w.assert_no_store();

    for (media_type, expect) in [
        ("application/x-unknown", "unknown layer media type"),
        (
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "unsupported layer compression",
        ),
    ] {
        let l = w.path(&format!("mt-{}", expect.len()));
        let src = tree(&w.path("mt-src"), &[("f", "1")]);
        let tar = tar_dir(&src).unwrap();
        let blob = orbit_images::write_blob(&l, &tar).unwrap();
        let diff = orbit_images::sha256(&tar);
        let config =
            serde_json::to_vec(&orbit_images::config_json(&[diff], &RunConfig::default())).unwrap();
        let cd = orbit_images::write_blob(&l, &config).unwrap();
        orbit_images::write_manifest(
            &l,
            "example.com/mt:1",
            &cd,
            config.len(),
            vec![serde_json::json!({"mediaType": media_type, "digest": blob, "size": tar.len()})],
        )
        .unwrap();
        let err = insecure_fetch_fails(&w, &oci(&l));
        assert!(err.contains(expect) && err.contains(media_type), "{err}");
        w.assert_no_store();
    }
}

#[test]
fn digest_mismatch_in_any_blob_aborts_with_nothing_stored() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/t:1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(&layout_digest(&layout, "example.com/t:1")[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    // Corrupt the second layer (the first may already be staged when the error hits).
    let blob = manifest["layers"][1]["digest"].as_str().unwrap()[7..].to_string();
    let p = layout.join("blobs/sha256").join(&blob);
    let mut bytes = fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&p, bytes).unwrap();
    let err = insecure_fetch_fails(&w, &oci(&layout));
    assert!(
        err.contains("mismatch") && err.contains(&blob[..12]),
        "{err}"
    );
    w.assert_store_empty();

    // A config that does not hash to its digest.
    let layout = simple_image(&w, "layout2", "example.com/t:1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            layout
                .join("blobs/sha256")
                .join(&layout_digest(&layout, "example.com/t:1")[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let config = layout
        .join("blobs/sha256")
        .join(&manifest["config"]["digest"].as_str().unwrap()[7..]);
    fs::write(
        &config,
        b"{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
    )
    .unwrap();
    let err = insecure_fetch_fails(&w, &oci(&layout));
    assert!(err.contains("digest mismatch for config"), "{err}");
    w.assert_store_empty();
}

#[test]
fn diff_id_mismatch_is_caught_while_unpacking() {
    let w = World::new();
    let src = tree(&w.path("src"), &[("f", "1")]);
    let tar = tar_dir(&src).unwrap();
    let l = w.path("l");
    let blob = orbit_images::write_blob(&l, &tar).unwrap();
    let config = serde_json::to_vec(&orbit_images::config_json(
        &[orbit_images::sha256(b"other")],
        &RunConfig::default(),
    ))
    .unwrap();
    let cd = orbit_images::write_blob(&l, &config).unwrap();
    orbit_images::write_manifest(&l, "example.com/d:1", &cd, config.len(), vec![serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob, "size": tar.len()})]).unwrap();
    let err = insecure_fetch_fails(&w, &oci(&l));
    assert!(err.contains("diff-ID"), "{err}");
    w.assert_store_empty();
}

#[test]
fn hostile_layers_never_write_outside_and_leave_nothing_behind() {
    let w = World::new();
    let outside = w.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let outside_s = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[(b"../../../../escape", tar::EntryType::Regular, b"x", None)]),
            "..",
        ),
        (
            "symlink-write",
            raw_tar(&[
                (
                    b"link",
                    tar::EntryType::Symlink,
                    b"",
                    Some(outside_s.as_str()),
                ),
                (b"link/evil", tar::EntryType::Regular, b"pwned", None),
            ]),
            "symlink",
        ),
        (
            "hardlink-out",
            raw_tar(&[(b"h", tar::EntryType::Link, b"", Some("../../../etc/passwd"))]),
            "hard link `h` -> `../../../etc/passwd` is refused: it has a `..` component",
        ),
        (
            "truncated",
            raw_tar(&[(b"big", tar::EntryType::Regular, &[7u8; 5000], None)])[..2048].to_vec(),
            "truncated",
        ),
    ];
    for (name, tar, expect) in cases {
        let tar_len = tar.len();
        let l = w.path(&format!("hostile-{name}"));
        let blob = orbit_images::write_blob(&l, &tar).unwrap();
        let config = serde_json::to_vec(&orbit_images::config_json(
            &[orbit_images::sha256(&tar)],
            &RunConfig::default(),
        ))
        .unwrap();
        let cd = orbit_images::write_blob(&l, &config).unwrap();
        orbit_images::write_manifest(&l, "example.com/hostile:1", &cd, config.len(), vec![serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob, "size": tar_len})]).unwrap();
        let err = insecure_fetch_fails(&w, &oci(&l));
        assert!(err.contains(expect), "case {name}: {err}");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "case {name} wrote outside"
        );
        assert!(
            !w.path("escape").exists() && !w.tmp.path().parent().unwrap().join("escape").exists()
        );
        w.assert_store_empty();
    }
}

#[test]
fn hostile_absolute_paths_stay_inside_the_layer() {
    let w = World::new();
    let tar = raw_tar(&[(
        b"/etc/orbit-abs-test",
        tar::EntryType::Regular,
        b"inside",
        None,
    )]);
    let layout = raw_image(&w, "abs", "example.com/abs:1", tar, Compression::Gzip);
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    assert!(!std::path::Path::new("/etc/orbit-abs-test").exists());
    let flat = w.path("flat");
    w.ok(&[
        "image",
        "extract",
        "example.com/abs:1",
        flat.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(flat.join("etc/orbit-abs-test")).unwrap(),
        "inside"
    );
}

/// Runs `orbit` inside a private mount namespace where the store is a small tmpfs.
fn in_tmpfs_store(w: &World, mount_opts: &str, setup: &str, args: &str) -> std::process::Output {
    let store = w.store();
    fs::create_dir_all(&store).unwrap();
    let script = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs -o {mount_opts} orbit-test {store}; {setup}; exec {bin} {args}",
        store = store.display(),
        bin = orbit_bin().display()
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    for (k, v) in w.cmd(&[]).get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.output().unwrap()
}

#[test]
fn full_disk_and_read_only_store_give_actionable_errors() {
    let w = World::new();
    let big = tree(&w.path("big"), &[("blob", &"z".repeat(3 * 1024 * 1024))]);
    let layout = raw_image(
        &w,
        "layout",
        "example.com/big:1",
        tar_dir(&big).unwrap(),
        Compression::Gzip,
    );
    let out = in_tmpfs_store(
        &w,
        "size=1m",
        "true",
        &format!("--insecure-options=image fetch {}", oci(&layout)),
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no space left"),
        "{}",
        text(&out.stderr)
    );

    let out = in_tmpfs_store(
        &w,
        "size=64m",
        &format!("mount -o remount,ro {}", w.store().display()),
        &format!("--insecure-options=image fetch {}", oci(&layout)),
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("read-only"),
        "{}",
        text(&out.stderr)
    );
    // Nothing of either tmpfs is visible here: the mounts lived in the private namespace.
    assert!(!fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(&w.store().display().to_string()));
}

#[test]
fn concurrent_fetches_of_images_sharing_a_layer_both_succeed() {
    let w = World::new();
    let base = tree(&w.path("base"), &[("shared", &"s".repeat(500_000))]);
    let base_tar = tar_dir(&base).unwrap();
    let mut layouts = Vec::new();
    for i in 0..4 {
        let top = tree(&w.path(&format!("top{i}")), &[("own", &format!("{i}"))]);
        let l = w.path(&format!("l{i}"));
        write_image(
            &l,
            &format!("example.com/c{i}:1"),
            &[
                Layer {
                    tar: base_tar.clone(),
                    compression: Compression::Gzip,
                },
                Layer {
                    tar: tar_dir(&top).unwrap(),
                    compression: Compression::Gzip,
                },
            ],
            &RunConfig::default(),
        )
        .unwrap();
        layouts.push(l);
    }
    let children: Vec<_> = layouts
        .iter()
        .map(|l| {
            w.cmd(&["--insecure-options=image", "fetch", &oci(l)])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert_eq!(w.count("layers/sha256"), 5);
    assert_eq!(w.count("tmp"), 0);
    let verified = w.ok(&["image", "verify"]);
    let lines: Vec<&str> = verified.lines().collect();
    assert_eq!(lines.len(), 4, "{verified}");
    for i in 0..4 {
        assert!(
            lines.contains(&format!("example.com/c{i}:1: ok").as_str()),
            "{verified}"
        );
    }
}

#[test]
fn kill_9_during_unpack_leaves_no_half_layer_and_gc_cleans_up() {
    let w = World::new();
    // Many small files: unpacking takes long enough to be caught mid-way.
    let src = w.path("many");
    for i in 0..20000 {
        let d = src.join(format!("d{}", i % 100));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let layout = raw_image(
        &w,
        "layout",
        "example.com/many:1",
        tar_dir(&src).unwrap(),
        Compression::Gzip,
    );
    let mut child = w
        .cmd(&["--insecure-options=image", "fetch", &oci(&layout)])
        .spawn()
        .unwrap();
    // Wait (bounded) until a staged layer directory exists, then kill -9.
    let tmp = w.store().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let staged = loop {
        let found = fs::read_dir(&tmp)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("layer-"))
            })
            .unwrap_or(false);
        if found || std::time::Instant::now() > deadline {
            break found;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::yield_now();
    };
    // Kill -9 by the pid we started.
    let _ = child.kill();
    let _ = child.wait();
    assert!(staged, "the fetch was never caught mid-unpack");
    assert_eq!(w.count("layers/sha256"), 0, "no half layer visible");
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "list", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    w.ok(&["image", "gc"]);
    w.assert_store_empty();
    // And a fresh fetch afterwards works.
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    assert!(w.ok(&["image", "verify"]).contains(": ok"));
}
