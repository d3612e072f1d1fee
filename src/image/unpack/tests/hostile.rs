//! Hostile archives: escapes by name, through symlinks, through hard links.

use std::fs;
use std::os::unix::fs::MetadataExt;

use super::{assert_err, lgetxattr, lmeta, opts, Scratch, Tar, M};
use crate::image::unpack::{UnpackError, UnpackLimits, UnpackOptions, WhiteoutMode};

fn raw_file(t: &mut Tar, name: &[u8], data: &[u8]) {
    let h = Tar::header(
        tar::EntryType::Regular,
        name,
        data.len() as u64,
        M::default(),
    );
    t.raw(h, data);
}

#[test]
fn dotdot_entries_are_refused() {
    for name in [
        &b"../evil"[..],
        b"a/../../evil",
        b"./../outside/evil",
        b"..",
    ] {
        let s = Scratch::new();
        let mut t = Tar::new();
        raw_file(&mut t, name, b"pwned");
        let e = assert_err!(s.unpack(&t.finish()), UnpackError::PathEscapes { .. });
        assert!(
            e.to_string()
                .contains(&String::from_utf8_lossy(name).to_string()),
            "{e}"
        );
        s.assert_outside_untouched();
    }
}

#[test]
fn absolute_entries_stay_inside() {
    let s = Scratch::new();
    let mut t = Tar::new();
    let abs = s.outside.join("abs");
    raw_file(&mut t, abs.to_str().unwrap().as_bytes(), b"inside");
    raw_file(&mut t, b"//etc///passwd", b"p");
    s.unpack(&t.finish()).unwrap();
    let rel = abs.strip_prefix("/").unwrap();
    assert_eq!(fs::read(s.target.join(rel)).unwrap(), b"inside");
    assert_eq!(fs::read(s.t("etc/passwd")).unwrap(), b"p");
    s.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let s = Scratch::new();
    let outside = s.outside.to_str().unwrap().to_string();
    for (link, target) in [
        ("foo", outside.as_str()),
        ("foo", "../outside"),
        ("foo", "../../x"),
    ] {
        for victim in ["foo/evil", "foo/sub/evil"] {
            let mut t = Tar::new();
            t.symlink(link, target).file(victim, b"pwned");
            let e = assert_err!(s.unpack(&t.finish()), UnpackError::ThroughSymlink { .. });
            match &e {
                UnpackError::ThroughSymlink { entry, symlink } => {
                    assert_eq!((entry.as_str(), symlink.as_str()), (victim, "foo"))
                }
                _ => unreachable!(),
            }
            s.assert_outside_untouched();
        }
    }
    // Directories and whiteouts are no different.
    for tail in [
        Tar::new().symlink("foo", &outside).dir("foo/d/").finish(),
        Tar::new()
            .symlink("foo", &outside)
            .file("foo/.wh.x", b"")
            .finish(),
    ] {
        assert_err!(s.unpack(&tail), UnpackError::ThroughSymlink { .. });
        s.assert_outside_untouched();
    }
}

#[test]
fn writing_through_a_symlink_into_an_existing_outside_dir_is_refused() {
    let s = Scratch::new();
    let existing = s.outside.join("existing");
    fs::create_dir(&existing).unwrap();
    for target in [s.outside.to_str().unwrap(), "../outside"] {
        let mut t = Tar::new();
        t.symlink("foo", target).file("foo/existing/evil", b"pwned");
        assert_err!(s.unpack(&t.finish()), UnpackError::ThroughSymlink { .. });
        let mut t = Tar::new();
        t.symlink("foo", target).dir("foo/existing/d/");
        assert_err!(s.unpack(&t.finish()), UnpackError::ThroughSymlink { .. });
        assert!(
            fs::read_dir(&existing).unwrap().next().is_none(),
            "nothing written outside"
        );
    }
}

#[test]
fn nested_symlink_in_parent_is_named() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir("a/").symlink("a/b", "../..").file("a/b/c/d", b"x");
    let e = assert_err!(s.unpack(&t.finish()), UnpackError::ThroughSymlink { .. });
    assert_eq!(
        e.to_string(),
        "entry `a/b/c/d` would be written through the symlink `a/b`"
    );
    s.assert_outside_untouched();
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let s = Scratch::new();
    let victim = s.outside.join("victim");
    let mut t = Tar::new();
    t.symlink("foo", victim.to_str().unwrap())
        .file("foo", b"new content");
    t.symlink("dangling", victim.to_str().unwrap()).file_m(
        "dangling",
        b"x",
        M {
            mode: 0o600,
            ..M::default()
        },
    );
    t.symlink("d", s.outside.to_str().unwrap()).dir("d/");
    s.unpack(&t.finish()).unwrap();
    assert!(lmeta(&s.t("foo")).is_file());
    assert_eq!(fs::read(s.t("foo")).unwrap(), b"new content");
    assert!(lmeta(&s.t("dangling")).is_file());
    assert!(
        lmeta(&s.t("d")).is_dir(),
        "a directory entry replaces a symlink too"
    );
    s.assert_outside_untouched();

    // And a pre-existing file behind the symlink is not modified either.
    let s = Scratch::new();
    let victim = s.outside.join("victim");
    fs::write(&victim, b"original").unwrap();
    let mut t = Tar::new();
    t.symlink("foo", victim.to_str().unwrap()).file_m(
        "foo",
        b"new",
        M {
            mode: 0o777,
            uid: 4321,
            gid: 4321,
            mtime: 5,
        },
    );
    s.unpack(&t.finish()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    let v = lmeta(&victim);
    assert_ne!(
        (v.uid(), v.mode() & 0o777, v.mtime()),
        (4321, 0o777, 5),
        "victim metadata untouched"
    );
}

#[test]
fn hard_links_must_stay_inside() {
    let s = Scratch::new();
    let secret = s.outside.join("secret");
    fs::write(&secret, b"secret").unwrap();
    let cases: Vec<(Tar, &str)> = vec![
        (
            {
                let mut t = Tar::new();
                t.hardlink("h", secret.to_str().unwrap());
                t
            },
            "does not exist",
        ),
        (
            {
                let mut t = Tar::new();
                t.hardlink("h", "../outside/secret");
                t
            },
            "`..`",
        ),
        (
            {
                let mut t = Tar::new();
                t.symlink("s", s.outside.to_str().unwrap())
                    .hardlink("h", "s/secret");
                t
            },
            "symlink",
        ),
        (
            {
                let mut t = Tar::new();
                t.symlink("s", "../outside/secret")
                    .hardlink("x/h", "s/../s");
                t
            },
            "`..`",
        ),
        (
            {
                let mut t = Tar::new();
                t.dir("d/").hardlink("h", "d");
                t
            },
            "directory",
        ),
        (
            {
                let mut t = Tar::new();
                t.hardlink("h", "./");
                t
            },
            "target directory",
        ),
        (
            {
                let mut t = Tar::new();
                t.hardlink("h", "missing");
                t
            },
            "does not exist",
        ),
    ];
    for (t, reason_part) in cases {
        let e = s.unpack(&t.finish()).expect_err("the link is refused");
        assert!(
            matches!(
                e,
                UnpackError::HardlinkEscapes { .. } | UnpackError::HardlinkTargetMissing { .. }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(reason_part), "{e}");
        assert!(fs::symlink_metadata(s.t("h")).is_err(), "no link created");
        assert_eq!(
            lmeta(&secret).nlink(),
            1,
            "nothing links to the outside file"
        );
    }
}

#[test]
fn a_hard_link_to_a_symlink_links_the_symlink_itself() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.symlink("s", s.outside.to_str().unwrap())
        .hardlink("h", "s");
    s.unpack(&t.finish()).unwrap();
    assert!(lmeta(&s.t("h")).file_type().is_symlink());
    assert_eq!(lmeta(&s.t("h")).ino(), lmeta(&s.t("s")).ino());
}

#[test]
fn whiteout_names_obey_the_path_rules() {
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::Apply] {
        for name in [&b".wh.../../x"[..], b"a/.wh...", b"../.wh.x"] {
            let s = Scratch::new();
            let mut t = Tar::new();
            raw_file(&mut t, name, b"");
            assert_err!(
                s.unpack_with(&t.finish()[..], &opts(mode)),
                UnpackError::PathEscapes { .. }
            );
            s.assert_outside_untouched();
        }
    }
}

#[test]
fn malformed_names_are_refused() {
    let s = Scratch::new();
    let mut t = Tar::new();
    raw_file(&mut t, b"", b"");
    assert_err!(s.unpack(&t.finish()), UnpackError::Malformed { .. });
    let mut t = Tar::new();
    t.file("a", b"").file(".wh.", b"");
    assert_err!(s.unpack(&t.finish()), UnpackError::Malformed { .. });
    let mut t = Tar::new();
    t.file(".", b"not a dir");
    assert_err!(s.unpack(&t.finish()), UnpackError::Malformed { .. });
}

#[test]
fn names_and_link_targets_over_the_limit() {
    let s = Scratch::new();
    let o = UnpackOptions {
        limits: UnpackLimits {
            max_path_len: 20,
            ..UnpackLimits::default()
        },
        ..opts(WhiteoutMode::Overlay)
    };
    let mut t = Tar::new();
    t.file(&"n".repeat(21), b"");
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::PathTooLong { limit: 20, .. }
    );
    let mut t = Tar::new();
    t.symlink("l", &"t".repeat(21));
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::PathTooLong { limit: 20, .. }
    );
    assert!(fs::read_dir(&s.target).unwrap().next().is_none());
}

#[test]
fn parent_that_is_a_file_is_an_error() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file("f", b"").file("f/x", b"");
    let e = assert_err!(s.unpack(&t.finish()), UnpackError::NotADirectory { .. });
    assert!(e.to_string().contains("`f` is not a directory"), "{e}");
}

#[test]
fn overlay_xattrs_from_the_archive_are_ignored() {
    if !super::root() {
        return;
    }
    let s = Scratch::new();
    let mut t = Tar::new();
    t.pax(&[
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("SCHILY.xattr.trusted.other", b"ok"),
    ]);
    t.dir("d/");
    let report = s.unpack(&t.finish()).unwrap();
    assert_eq!(lgetxattr(&s.t("d"), "trusted.overlay.redirect"), None);
    assert_eq!(
        lgetxattr(&s.t("d"), "trusted.other").as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(report.skipped[0].contains("trusted.overlay.redirect"));
}

#[test]
fn unsupported_entry_types_are_refused() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.raw(
        Tar::header(tar::EntryType::new(b'V'), b"volume", 0, M::default()),
        b"",
    );
    let e = assert_err!(s.unpack(&t.finish()), UnpackError::Malformed { .. });
    assert!(e.to_string().contains("unsupported entry type"), "{e}");
}
