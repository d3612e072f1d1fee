//! Device nodes and fifos.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::{lmeta, mode, opts, root, Scratch, Tar, M};
use crate::image::unpack::{verify_tree, EntryKind, UnpackOptions, WhiteoutMode};

fn archive() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("dev/");
    t.device(
        tar::EntryType::Char,
        "dev/null",
        1,
        3,
        M {
            mode: 0o666,
            uid: 0,
            gid: 5,
            mtime: 99,
        },
    );
    t.device(
        tar::EntryType::Block,
        "dev/loop0",
        7,
        0,
        M {
            mode: 0o660,
            uid: 0,
            gid: 6,
            mtime: 99,
        },
    );
    // A literal overlay-style whiteout (0:0) in the archive.
    t.device(
        tar::EntryType::Char,
        "dev/wh",
        0,
        0,
        M {
            mode: 0,
            ..M::default()
        },
    );
    t.device(
        tar::EntryType::Fifo,
        "dev/fifo",
        0,
        0,
        M {
            mode: 0o620,
            uid: 7,
            gid: 8,
            mtime: 99,
        },
    );
    t.finish()
}

#[test]
fn devices_are_created_as_root() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let report = s.unpack(&archive()).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let null = lmeta(&s.t("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            rustix::fs::major(null.rdev()),
            rustix::fs::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(
        (null.mode() & 0o7777, null.gid(), null.mtime()),
        (0o666, 5, 99)
    );
    let lp = lmeta(&s.t("dev/loop0"));
    assert!(lp.file_type().is_block_device());
    assert_eq!(
        (rustix::fs::major(lp.rdev()), rustix::fs::minor(lp.rdev())),
        (7, 0)
    );
    let fifo = lmeta(&s.t("dev/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid()),
        (0o620, 7, 8)
    );
    let m = report.manifest.unwrap();
    let kinds: Vec<EntryKind> = m.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Dir,
            EntryKind::Fifo,
            EntryKind::Blockdev,
            EntryKind::Chardev,
            EntryKind::Whiteout
        ]
    );
    assert!(verify_tree(&s.target, &m).unwrap().is_empty());
}

#[test]
fn devices_are_skipped_when_not_root() {
    let s = Scratch::new();
    let o = UnpackOptions {
        preserve_owner: false,
        ..opts(WhiteoutMode::Overlay)
    };
    let report = s.unpack_with(&archive()[..], &o).unwrap();
    assert!(std::fs::symlink_metadata(s.t("dev/null")).is_err());
    assert!(std::fs::symlink_metadata(s.t("dev/loop0")).is_err());
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains("dev/null") && report.skipped[0].contains("1:3"),
        "{:?}",
        report.skipped
    );
    assert!(
        lmeta(&s.t("dev/fifo")).file_type().is_fifo(),
        "fifos are still created"
    );
    assert_eq!(mode(&s.t("dev/fifo")), 0o620);
    assert!(verify_tree(&s.target, &report.manifest.unwrap())
        .unwrap()
        .is_empty());
}
