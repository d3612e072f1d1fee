//! Whiteouts in overlay (layer store) and apply (flatten) modes.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::{assert_err, lgetxattr, lmeta, opts, root, Scratch, Tar};
use crate::image::unpack::{verify_tree, EntryKind, RawName, UnpackError, WhiteoutMode};

#[test]
fn overlay_mode_creates_whiteout_devices_and_opaque_dirs() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir("d/").file("d/.wh.gone", b"").file(".wh.top", b"");
    t.dir("o/").file("o/.wh..wh..opq", b"").file("o/new", b"n");
    t.file("implicit/.wh..wh..opq", b"");
    let report = s.unpack(&t.finish()).unwrap();
    for p in ["d/gone", "top"] {
        let m = lmeta(&s.t(p));
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 0, 0), "{p}");
    }
    assert!(
        fs::symlink_metadata(s.t("d/.wh.gone")).is_err(),
        "whiteout files are not extracted"
    );
    assert_eq!(
        lgetxattr(&s.t("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        lgetxattr(&s.t("implicit"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(lgetxattr(&s.t("d"), "trusted.overlay.opaque"), None);
    assert!(
        fs::symlink_metadata(s.t("o/.wh..wh..opq")).is_err(),
        "the marker is not created"
    );
    assert_eq!(fs::read(s.t("o/new")).unwrap(), b"n");
    let m = report.manifest.unwrap();
    let get = |p: &str| {
        m.entries
            .iter()
            .find(|e| e.path == RawName::from(p))
            .unwrap()
            .clone()
    };
    assert_eq!(get("d/gone").kind, EntryKind::Whiteout);
    assert!(get("o").opaque && get("implicit").opaque && !get("d").opaque);
    assert!(verify_tree(&s.target, &m).unwrap().is_empty());

    // verify notices a lost opaque marker.
    rustix::fs::removexattr(s.t("o"), "trusted.overlay.opaque").unwrap();
    let found = verify_tree(&s.target, &m).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        "o: is not marked opaque (trusted.overlay.opaque=y)"
    );
}

#[test]
fn overlay_whiteout_of_a_same_layer_entry_keeps_the_entry() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file("keep", b"k").file(".wh.keep", b"");
    t.file(".wh.later", b"").file("later", b"l");
    let report = s.unpack(&t.finish()).unwrap();
    assert_eq!(fs::read(s.t("keep")).unwrap(), b"k");
    assert_eq!(
        fs::read(s.t("later")).unwrap(),
        b"l",
        "a later entry replaces the whiteout"
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
}

/// A lower layer for the apply-mode tests.
fn lower(s: &Scratch) {
    let mut t = Tar::new();
    t.file("a", b"a")
        .dir("dir/")
        .file("dir/x", b"x")
        .dir("dir/sub/")
        .file("dir/sub/y", b"y");
    t.dir("o/")
        .file("o/old", b"old")
        .dir("o/olddir/")
        .file("o/olddir/z", b"z");
    t.dir("p/").file("p/old", b"old");
    t.dir("q/").file("q/old", b"old");
    s.unpack_with(&t.finish()[..], &opts(WhiteoutMode::Apply))
        .unwrap();
}

#[test]
fn apply_mode_removes_whited_out_paths() {
    let s = Scratch::new();
    lower(&s);
    let mut t = Tar::new();
    t.file(".wh.a", b"")
        .file(".wh.dir", b"")
        .file(".wh.never-existed", b"")
        .file("missing/parent/.wh.x", b"");
    s.unpack_with(&t.finish()[..], &opts(WhiteoutMode::Apply))
        .unwrap();
    assert!(fs::symlink_metadata(s.t("a")).is_err());
    assert!(
        fs::symlink_metadata(s.t("dir")).is_err(),
        "removed recursively"
    );
    assert!(
        fs::symlink_metadata(s.t("missing")).is_err(),
        "whiteouts do not create parents"
    );
    assert!(fs::symlink_metadata(s.t(".wh.a")).is_err());
    assert_eq!(
        fs::read(s.t("o/old")).unwrap(),
        b"old",
        "other paths untouched"
    );
}

#[test]
fn apply_mode_opaque_dirs_lose_only_older_entries() {
    let s = Scratch::new();
    lower(&s);
    let mut t = Tar::new();
    // Marker after this layer's entries...
    t.dir("o/")
        .file("o/new", b"new")
        .dir("o/olddir/")
        .file("o/olddir/n2", b"n2")
        .file("o/.wh..wh..opq", b"");
    // ...and before them.
    t.file("p/.wh..wh..opq", b"").file("p/new", b"new");
    // Same-layer whiteout of a same-layer file: the file stays (OCI: only lower layers are hidden).
    t.file("q/mine", b"mine")
        .file("q/.wh.mine", b"")
        .file("q/.wh.old", b"");
    s.unpack_with(&t.finish()[..], &opts(WhiteoutMode::Apply))
        .unwrap();
    assert!(fs::symlink_metadata(s.t("o/old")).is_err());
    assert!(
        fs::symlink_metadata(s.t("o/olddir/z")).is_err(),
        "older content of a re-listed dir goes"
    );
    assert_eq!(fs::read(s.t("o/olddir/n2")).unwrap(), b"n2");
    assert_eq!(fs::read(s.t("o/new")).unwrap(), b"new");
    assert!(fs::symlink_metadata(s.t("p/old")).is_err());
    assert_eq!(fs::read(s.t("p/new")).unwrap(), b"new");
    assert_eq!(fs::read(s.t("q/mine")).unwrap(), b"mine");
    assert!(fs::symlink_metadata(s.t("q/old")).is_err());
    for marker in ["o/.wh..wh..opq", "p/.wh..wh..opq", "q/.wh.mine"] {
        assert!(fs::symlink_metadata(s.t(marker)).is_err(), "{marker}");
    }
}

#[test]
fn apply_mode_whiteout_through_a_symlink_is_refused() {
    let s = Scratch::new();
    fs::write(s.outside.join("victim"), b"v").unwrap();
    let mut t = Tar::new();
    t.symlink("l", s.outside.to_str().unwrap())
        .file("l/.wh.victim", b"");
    assert_err!(
        s.unpack_with(&t.finish()[..], &opts(WhiteoutMode::Apply)),
        UnpackError::ThroughSymlink { .. }
    );
    let mut t = Tar::new();
    t.symlink("l", s.outside.to_str().unwrap())
        .file("l/.wh..wh..opq", b"");
    assert_err!(
        s.unpack_with(&t.finish()[..], &opts(WhiteoutMode::Apply)),
        UnpackError::ThroughSymlink { .. }
    );
    assert_eq!(fs::read(s.outside.join("victim")).unwrap(), b"v");
}
