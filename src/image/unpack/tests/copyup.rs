//! Hard links to files of lower layers: copied up in overlay mode, resolved against the
//! target in apply mode, and never found through whiteouts, opaque directories or symlinks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::*;
use crate::image::unpack::verify_tree;

/// Unpacks `layers` (base first) each into its own directory, overlay style, each with the
/// directories of the layers below as lowers; returns the directories.
fn overlay_stack(base: &std::path::Path, layers: &[Vec<u8>]) -> Vec<Result<PathBuf, UnpackError>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for (i, tar) in layers.iter().enumerate() {
        let dir = base.join(format!("layer{i}"));
        fs::create_dir(&dir).unwrap();
        let o = UnpackOptions {
            lowers: dirs.iter().rev().cloned().collect(),
            ..opts(WhiteoutMode::Overlay)
        };
        let r = unpack_layer(&tar[..], &dir, &o);
        dirs.push(dir.clone());
        out.push(r.map(|report| {
            let m = report.manifest.expect("manifest recorded");
            assert_eq!(verify_tree(&dir, &m).unwrap(), [], "the record matches");
            dir
        }));
    }
    out
}

#[test]
fn a_link_to_a_lower_file_copies_it_up_with_its_metadata() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let mut l1 = Tar::new();
    l1.dir("usr/").file_m(
        "usr/keep",
        b"kept content",
        M {
            mode: 0o4751,
            uid: 12,
            gid: 34,
            mtime: 1_234_567,
        },
    );
    let mut l2 = Tar::new();
    l2.hardlink("hl", "usr/keep");
    let dirs = overlay_stack(&s.base, &[l1.finish(), l2.finish()]);
    let top = dirs[1].as_ref().expect("the link is satisfied").clone();
    assert_eq!(fs::read(top.join("hl")).unwrap(), b"kept content");
    let (hl, copy) = (lmeta(&top.join("hl")), lmeta(&top.join("usr/keep")));
    assert_eq!(hl.ino(), copy.ino(), "the link is to the copied-up file");
    assert_eq!(
        (copy.mode() & 0o7777, copy.uid(), copy.gid(), copy.mtime()),
        (0o4751, 12, 34, 1_234_567)
    );
    let lower = dirs[0].as_ref().unwrap().join("usr/keep");
    assert_eq!(lmeta(&lower).nlink(), 1, "the lower layer is untouched");
}

#[test]
fn whiteouts_opaque_dirs_and_missing_lowers_keep_the_link_refused() {
    if !root() {
        return;
    }
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "no lower has it",
            vec![
                Tar::new().file("other", b"x").finish(),
                Tar::new().hardlink("hl", "keep").finish(),
            ],
        ),
        (
            "whited out in a middle layer",
            vec![
                Tar::new().file("keep", b"x").finish(),
                Tar::new().file(".wh.keep", b"").finish(),
                Tar::new().hardlink("hl", "keep").finish(),
            ],
        ),
        (
            "whited out earlier in the same layer",
            vec![
                Tar::new().file("keep", b"x").finish(),
                Tar::new()
                    .file(".wh.keep", b"")
                    .hardlink("hl", "keep")
                    .finish(),
            ],
        ),
        (
            "hidden by an opaque directory",
            vec![
                Tar::new().file("d/keep", b"x").finish(),
                Tar::new().dir("d/").file("d/.wh..wh..opq", b"").finish(),
                Tar::new().hardlink("hl", "d/keep").finish(),
            ],
        ),
        (
            "behind a symlink in the lower",
            vec![
                Tar::new()
                    .file("real/keep", b"x")
                    .symlink("d", "real")
                    .finish(),
                Tar::new().hardlink("hl", "d/keep").finish(),
            ],
        ),
    ];
    for (case, layers) in cases {
        let s = Scratch::new();
        let n = layers.len();
        let dirs = overlay_stack(&s.base, &layers);
        let e = dirs[n - 1].as_ref().expect_err(case);
        assert!(
            matches!(e, UnpackError::HardlinkTargetMissing { .. }),
            "{case}: {e:?}"
        );
        assert!(
            e.to_string()
                .contains("does not exist in this layer or the layers below it"),
            "{case}: {e}"
        );
    }
}

#[test]
fn apply_mode_links_to_what_lower_layers_left_in_the_target() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let o = opts(WhiteoutMode::Apply);
    s.unpack_with(&Tar::new().file("keep", b"k").finish()[..], &o)
        .unwrap();
    s.unpack_with(&Tar::new().hardlink("hl", "keep").finish()[..], &o)
        .unwrap();
    assert_eq!(lmeta(&s.t("hl")).ino(), lmeta(&s.t("keep")).ino());
}
