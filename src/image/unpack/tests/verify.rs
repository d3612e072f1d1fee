//! `verify_tree` against tampered layer directories.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::{root, Scratch, Tar, M};
use crate::image::unpack::{verify_tree, Discrepancy, LayerManifest};

fn layer(s: &Scratch) -> LayerManifest {
    let mut t = Tar::new();
    t.dir("etc/")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .file_m(
            "etc/shadow",
            b"root:x",
            M {
                mode: 0o640,
                ..M::default()
            },
        );
    t.file("etc/gone", b"soon deleted")
        .symlink("etc/link", "hosts")
        .hardlink("etc/hard", "etc/hosts");
    t.file("etc/owned", b"o");
    s.unpack(&t.finish()).unwrap().manifest.unwrap()
}

fn problems(found: &[Discrepancy]) -> Vec<String> {
    found.iter().map(Discrepancy::to_string).collect()
}

#[test]
fn a_fresh_layer_verifies() {
    let s = Scratch::new();
    let m = layer(&s);
    assert_eq!(verify_tree(&s.target, &m).unwrap(), []);
}

#[test]
fn tampering_is_reported_precisely() {
    let s = Scratch::new();
    let m = layer(&s);
    // One modified byte, same size.
    fs::write(s.t("etc/shadow"), b"ROOT:x").unwrap();
    fs::set_permissions(s.t("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    // A chmod.
    fs::set_permissions(s.t("etc/hosts"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::remove_file(s.t("etc/gone")).unwrap();
    fs::write(s.t("etc/extra"), b"new").unwrap();
    fs::create_dir(s.t("extradir")).unwrap();
    fs::write(s.t("extradir/inner"), b"not reported separately").unwrap();
    fs::remove_file(s.t("etc/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.t("etc/link")).unwrap();
    let found = problems(&verify_tree(&s.target, &m).unwrap());
    let shadow_sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"ROOT:x"));
    let expected_sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"root:x"));
    assert_eq!(
        found,
        [
            "etc/extra: unexpected regular file (not in the manifest)".to_string(),
            "etc/gone: missing (expected a regular file)".to_string(),
            "etc/hard: mode is 0666, expected 0644".to_string(),
            "etc/hosts: mode is 0666, expected 0644".to_string(),
            "etc/link: symlink points to `/etc/passwd`, expected `hosts`".to_string(),
            format!("etc/shadow: content differs: sha256 is {shadow_sha}, expected {expected_sha}"),
            "extradir: unexpected directory (not in the manifest)".to_string(),
        ]
    );
}

#[test]
fn size_kind_owner_and_hardlink_changes_are_reported() {
    let s = Scratch::new();
    let m = layer(&s);
    fs::write(s.t("etc/shadow"), b"longer content").unwrap();
    fs::remove_file(s.t("etc/hard")).unwrap();
    fs::write(s.t("etc/hard"), b"127.0.0.1 localhost\n").unwrap();
    fs::set_permissions(s.t("etc/hard"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(s.t("etc/gone")).unwrap();
    fs::create_dir(s.t("etc/gone")).unwrap();
    let mut expected = vec![
        "etc/gone: is a directory, expected a regular file".to_string(),
        "etc/hard: is not a hard link of `etc/hosts`".to_string(),
        "etc/shadow: size is 14 bytes, expected 6".to_string(),
    ];
    if root() {
        rustix::fs::chown(
            s.t("etc/owned"),
            Some(rustix::fs::Uid::from_raw(12)),
            Some(rustix::fs::Gid::from_raw(34)),
        )
        .unwrap();
        expected.insert(2, "etc/owned: owner is 12:34, expected 0:0".to_string());
    }
    let mut found = problems(&verify_tree(&s.target, &m).unwrap());
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
}
