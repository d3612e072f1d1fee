//! Layers end to end: hard links into earlier layers, extract/render that leave nothing at
//! DIR when they fail, and the messages of sources of the wrong kind.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use orbit_images::tar_dir;

/// A layer holding only the hard link `name` -> `target`.
fn hardlink_layer(name: &str, target: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, name, target).unwrap();
    b.into_inner().unwrap()
}

fn two_layer_image(w: &World, layout: &str, name: &str, base: &std::path::Path, top: Vec<u8>) {
    gzip_layers_image(w, layout, name, vec![tar_dir(base).unwrap(), top]);
}

#[test]
fn hard_links_to_files_of_earlier_layers_are_satisfied() {
    let w = World::new();
    let base = tree(&w.path("base"), &[("keep", "kept"), ("usr/bin/a", "tool")]);
    // Both layers new to the store: the top one is staged while its lower is still staged.
    two_layer_image(
        &w,
        "l1",
        "example.com/hl:1",
        &base,
        hardlink_layer("hl", "keep"),
    );
    w.ok(&["--insecure-options=image", "fetch", &oci(&w.path("l1"))]);
    // The base already in the store: the top one finds it there.
    two_layer_image(
        &w,
        "l2",
        "example.com/hl:2",
        &base,
        hardlink_layer("usr/bin/b", "usr/bin/a"),
    );
    w.ok(&["--insecure-options=image", "fetch", &oci(&w.path("l2"))]);
    let verified = w.ok(&["image", "verify"]);
    assert_eq!(
        verified.lines().filter(|l| l.ends_with(": ok")).count(),
        2,
        "{verified}"
    );

    for (image, link, target, content) in [
        ("example.com/hl:1", "hl", "keep", "kept"),
        ("example.com/hl:2", "usr/bin/b", "usr/bin/a", "tool"),
    ] {
        let out = w.path(&format!("flat-{}", &image[image.len() - 1..]));
        w.ok(&["image", "extract", image, out.to_str().unwrap()]);
        assert_eq!(fs::read_to_string(out.join(link)).unwrap(), content);
        assert_eq!(
            fs::metadata(out.join(link)).unwrap().ino(),
            fs::metadata(out.join(target)).unwrap().ino(),
            "{image}: a hard link in the flattened tree"
        );
    }
    // A link to something no layer has is still refused, naming both ends.
    two_layer_image(
        &w,
        "l3",
        "example.com/hl:3",
        &base,
        hardlink_layer("x", "nowhere"),
    );
    let err = w.fails(&["--insecure-options=image", "fetch", &oci(&w.path("l3"))]);
    assert!(
        err.contains("hard link `x` -> `nowhere` is refused: its target does not exist in this layer or the layers below it"),
        "{err}"
    );
}

/// A fetched two-layer image whose top layer blob is then corrupted in the store.
fn corrupt_store(w: &World) {
    let layout = simple_image(w, "layout", "example.com/c:1");
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    let inspect: serde_json::Value =
        serde_json::from_str(&w.ok(&["image", "inspect", "--format", "json", "example.com/c:1"]))
            .unwrap();
    let blob = &inspect["layers"][1]["digest"].as_str().unwrap()[7..];
    let path = w.store().join("images/blobs/sha256").join(blob);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&path, bytes).unwrap();
}

/// The entries of `dir` (which must exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn extract_and_render_leave_nothing_at_dir_when_a_layer_is_corrupt() {
    let w = World::new();
    corrupt_store(&w);
    let out = w.path("out");
    fs::create_dir(&out).unwrap();
    for cmd in ["extract", "render"] {
        // A new DIR (with a missing parent) is not created...
        let new = out.join("parent").join(cmd);
        let err = w.fails(&["image", cmd, "example.com/c:1", new.to_str().unwrap()]);
        assert!(
            err.contains("the store is corrupt") && err.contains("orbit image verify"),
            "{err}"
        );
        assert_eq!(
            entries(&out),
            Vec::<String>::new(),
            "{cmd}: nothing left in {}",
            out.display()
        );
        // ...and an empty one stays empty.
        let empty = w.path(&format!("empty-{cmd}"));
        fs::create_dir(&empty).unwrap();
        w.fails(&["image", cmd, "example.com/c:1", empty.to_str().unwrap()]);
        assert_eq!(entries(&empty), Vec::<String>::new());
    }
    let leftovers: Vec<String> = entries(w.tmp.path())
        .into_iter()
        .filter(|e| e.starts_with(".orbit"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[test]
fn extract_into_an_existing_empty_dir_and_render_into_a_new_one() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/ok:1");
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    let empty = w.path("empty");
    fs::create_dir(&empty).unwrap();
    w.ok(&[
        "image",
        "extract",
        "example.com/ok:1",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(empty.join("etc/motd")).unwrap(),
        "hi there\n"
    );
    let r = w.path("a/b/rendered");
    w.ok(&["image", "render", "example.com/ok:1", r.to_str().unwrap()]);
    assert!(r.join("rootfs/bin/hello").is_file() && r.join("config.json").is_file());
    let mut names = entries(&r);
    names.sort();
    assert_eq!(names, ["config.json", "manifest.json", "rootfs"]);
}

#[test]
fn sources_of_the_wrong_kind_say_what_to_use() {
    let w = World::new();
    let layout = simple_image(&w, "layout", "example.com/t:1");
    let archive = w.path("t.tar");
    tar_layout(&layout, &archive);
    let err = w.fails(&[
        "--insecure-options=image",
        "fetch",
        &format!("oci:{}", archive.display()),
    ]);
    assert!(
        err.contains("is a file") && err.contains(&format!("oci-archive:{}", archive.display())),
        "{err}"
    );
    let err = w.fails(&[
        "--insecure-options=image",
        "fetch",
        &format!("oci-archive:{}", layout.display()),
    ]);
    assert!(
        err.contains("is a directory") && err.contains(&format!("oci:{}", layout.display())),
        "{err}"
    );
    let short = w.path("short.tar");
    fs::write(&short, "8 bytes\n").unwrap();
    let err = w.fails(&[
        "--insecure-options=image",
        "fetch",
        &format!("oci-archive:{}", short.display()),
    ]);
    assert!(
        err.contains("not a tar archive") && !err.contains("truncated"),
        "{err}"
    );
    // Random bytes: a clear message, no binary garbage on the terminal.
    let random = w.path("random.tar");
    let mut bytes = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..8192 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bytes.push((x >> 16) as u8);
    }
    fs::write(&random, bytes).unwrap();
    let err = w.fails(&[
        "--insecure-options=image",
        "fetch",
        &format!("oci-archive:{}", random.display()),
    ]);
    assert!(err.contains("not a tar archive"), "{err}");
    assert!(
        err.chars().all(|c| c == '\n' || !c.is_control()) && !err.contains('\u{fffd}'),
        "{err:?}"
    );
    let err = w.fails(&["fetch", "example.com/t:1"]);
    assert!(err.contains("oci:DIR") && !err.contains("NAME"), "{err}");
    w.assert_no_store();

    // Export to a directory that does not exist: one clean message.
    w.ok(&["--insecure-options=image", "fetch", &oci(&layout)]);
    let missing = w.path("no/such/dir/out.tar");
    let err = w.fails(&[
        "image",
        "export",
        "example.com/t:1",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("destination directory not found"), "{err}");
    assert_eq!(
        err.matches(&w.path("no").display().to_string()).count(),
        1,
        "{err}"
    );
    assert!(!err.contains(".orbit-export"), "{err}");
}
