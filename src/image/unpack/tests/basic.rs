//! Well-formed archives: every entry kind, metadata, duplicates, the manifest.

use std::fs;
use std::os::unix::fs::MetadataExt;

use super::{lgetxattr, lmeta, mode, opts, root, Scratch, Tar, M};
use crate::image::unpack::{verify_tree, EntryKind, RawName, UnpackOptions, WhiteoutMode};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

#[test]
fn files_dirs_symlinks_hardlinks_keep_their_metadata() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir_m(
        "d/",
        M {
            mode: 0o750,
            uid: 1000,
            gid: 1001,
            mtime: 1_000_000,
        },
    );
    t.pax(&[
        ("SCHILY.xattr.user.test", b"v\0binary"),
        ("mtime", b"1500000000.25"),
    ]);
    t.file_m(
        "d/f",
        b"hello",
        M {
            mode: 0o4755,
            uid: 1000,
            gid: 1001,
            mtime: 1,
        },
    );
    t.symlink_m(
        "d/s",
        "f",
        M {
            mode: 0o777,
            uid: 1002,
            gid: 1003,
            mtime: 1_200_000_000,
        },
    );
    t.hardlink("d/h", "d/f");
    t.file_m(
        "./d/sub/g",
        b"implicit parent",
        M {
            mode: 0o600,
            uid: 5,
            gid: 6,
            mtime: 7,
        },
    );
    t.file_m(
        "d/sticky",
        b"",
        M {
            mode: 0o1777,
            uid: 0,
            gid: 0,
            mtime: 8,
        },
    );
    let report = s.unpack(&t.finish()).unwrap();
    assert_eq!(report.entries, 6, "the PAX header belongs to d/f");
    assert_eq!(report.bytes, 5 + 15);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);

    let d = lmeta(&s.t("d"));
    assert!(d.is_dir());
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
        (0o750, 1000, 1001, 1_000_000)
    );
    let f = lmeta(&s.t("d/f"));
    assert_eq!(fs::read(s.t("d/f")).unwrap(), b"hello");
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.gid()),
        (0o4755, 1000, 1001),
        "setuid survives the chown"
    );
    assert_eq!(
        (f.mtime(), f.mtime_nsec()),
        (1_500_000_000, 250_000_000),
        "PAX mtime wins"
    );
    assert_eq!(
        lgetxattr(&s.t("d/f"), "user.test").as_deref(),
        Some(&b"v\0binary"[..])
    );
    let l = lmeta(&s.t("d/s"));
    assert!(l.file_type().is_symlink());
    assert_eq!(fs::read_link(s.t("d/s")).unwrap().to_str(), Some("f"));
    assert_eq!((l.uid(), l.gid(), l.mtime()), (1002, 1003, 1_200_000_000));
    let h = lmeta(&s.t("d/h"));
    assert_eq!(
        (h.ino(), h.nlink()),
        (f.ino(), 2),
        "hard link kept as a hard link"
    );
    let g = lmeta(&s.t("d/sub/g"));
    assert_eq!(
        (g.mode() & 0o7777, g.uid(), g.gid(), g.mtime()),
        (0o600, 5, 6, 7)
    );
    assert_eq!(mode(&s.t("d/sub")), 0o755, "implicit parents are 0755");
    assert_eq!(mode(&s.t("d/sticky")), 0o1777);
}

#[test]
fn directory_mtimes_and_modes_are_set_after_their_children() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir_m(
        "ro/",
        M {
            mode: 0o555,
            mtime: 12345,
            ..M::default()
        },
    );
    t.file("ro/a", b"a");
    t.dir_m(
        "ro/inner/",
        M {
            mode: 0o500,
            mtime: 23456,
            ..M::default()
        },
    );
    t.file("ro/inner/b", b"b");
    let o = UnpackOptions {
        preserve_owner: false,
        ..opts(WhiteoutMode::Overlay)
    };
    s.unpack_with(&t.finish()[..], &o).unwrap();
    assert_eq!(fs::read(s.t("ro/inner/b")).unwrap(), b"b");
    assert_eq!(
        (mode(&s.t("ro")), lmeta(&s.t("ro")).mtime()),
        (0o555, 12345)
    );
    assert_eq!(
        (mode(&s.t("ro/inner")), lmeta(&s.t("ro/inner")).mtime()),
        (0o500, 23456)
    );
}

#[test]
fn without_preserve_owner_special_bits_and_owners_are_not_applied() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file_m(
        "suid",
        b"x",
        M {
            mode: 0o6755,
            uid: 1234,
            gid: 1234,
            mtime: 1,
        },
    );
    let o = UnpackOptions {
        preserve_owner: false,
        ..opts(WhiteoutMode::Overlay)
    };
    let report = s.unpack_with(&t.finish()[..], &o).unwrap();
    let m = lmeta(&s.t("suid"));
    assert_eq!(m.mode() & 0o7777, 0o755);
    assert_eq!(
        (m.uid(), m.gid()),
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        )
    );
    let e = &report.manifest.unwrap().entries[0];
    assert_eq!(
        (e.mode, e.uid),
        (0o755, m.uid()),
        "the manifest records what is on disk"
    );
}

#[test]
fn root_entry_sets_target_metadata() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir_m(
        "./",
        M {
            mode: 0o711,
            uid: 0,
            gid: 0,
            mtime: 4242,
        },
    );
    t.file("./a", b"a");
    let report = s.unpack(&t.finish()).unwrap();
    assert_eq!((mode(&s.target), lmeta(&s.target).mtime()), (0o711, 4242));
    let m = report.manifest.unwrap();
    assert_eq!(m.entries[0].path, RawName::from("."));
}

#[test]
fn long_names_via_gnu_and_pax_extensions() {
    let s = Scratch::new();
    let long = format!("{}/{}", "d".repeat(150), "f".repeat(120));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&fs::metadata(&s.outside).unwrap());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&fs::metadata(&s.outside).unwrap());
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "lnk", "t".repeat(300)).unwrap();
    let mut t = Tar::new();
    t.pax(&[("path", "p".repeat(200).as_bytes())]);
    t.file("short-name-overridden", b"pax");
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // the builder's end-of-archive marker
    bytes.extend_from_slice(&t.finish());
    s.unpack(&bytes).unwrap();
    assert_eq!(fs::read(s.target.join(&long)).unwrap(), b"abc");
    assert_eq!(
        fs::read_link(s.t("lnk")).unwrap().to_str().unwrap(),
        "t".repeat(300)
    );
    assert_eq!(fs::read(s.t(&"p".repeat(200))).unwrap(), b"pax");
    assert!(!s.t("short-name-overridden").exists());
}

#[test]
fn duplicate_entries_later_wins() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file("a", b"one").file("a", b"two");
    t.dir("x/").file("x/child", b"c").file("x", b"now a file");
    t.dir_m(
        "y/",
        M {
            mode: 0o700,
            ..M::default()
        },
    )
    .file("y/keep", b"k");
    t.dir_m(
        "y/",
        M {
            mode: 0o751,
            ..M::default()
        },
    );
    t.file("z", b"file").dir("z/").file("z/in", b"i");
    t.hardlink("a2", "a").hardlink("a2", "a");
    let report = s.unpack(&t.finish()).unwrap();
    assert_eq!(fs::read(s.t("a")).unwrap(), b"two");
    assert_eq!(fs::read(s.t("x")).unwrap(), b"now a file");
    assert_eq!(
        fs::read(s.t("y/keep")).unwrap(),
        b"k",
        "dir over dir keeps contents"
    );
    assert_eq!(mode(&s.t("y")), 0o751, "and takes the new metadata");
    assert_eq!(fs::read(s.t("z/in")).unwrap(), b"i");
    assert_eq!(lmeta(&s.t("a2")).ino(), lmeta(&s.t("a")).ino());
    let m = report.manifest.unwrap();
    let paths: Vec<String> = m.entries.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(
        paths,
        ["a", "a2", "x", "y", "y/keep", "z", "z/in"],
        "removed entries leave the manifest"
    );
    assert!(verify_tree(&s.target, &m).unwrap().is_empty());
}

#[test]
fn manifest_records_kinds_digests_and_links() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir("etc/")
        .file("etc/f", b"content")
        .symlink("etc/l", "/etc/f")
        .hardlink("etc/h", "etc/f");
    t.file("deep/er/x", b"");
    let report = s.unpack(&t.finish()).unwrap();
    let m = report.manifest.unwrap();
    let get = |p: &str| {
        m.entries
            .iter()
            .find(|e| e.path == RawName::from(p))
            .unwrap_or_else(|| panic!("{p}"))
    };
    let f = get("etc/f");
    assert_eq!(
        (f.kind, f.size, f.sha256.clone()),
        (EntryKind::File, 7, Some(sha256_hex(b"content")))
    );
    assert_eq!(get("etc/l").link_target, Some(RawName::from("/etc/f")));
    let h = get("etc/h");
    assert_eq!(
        (h.kind, h.sha256.clone(), h.hardlink_of.clone()),
        (
            EntryKind::File,
            f.sha256.clone(),
            Some(RawName::from("etc/f"))
        )
    );
    assert_eq!(
        (get("deep").kind, get("deep").mode),
        (EntryKind::Dir, 0o755),
        "implicit dirs are recorded"
    );
    assert_eq!(get("deep/er/x").sha256, Some(sha256_hex(b"")));
    let json = serde_json::to_string(&m).unwrap();
    let back: crate::image::unpack::LayerManifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(verify_tree(&s.target, &back).unwrap(), []);
}

#[test]
fn no_manifest_unless_asked() {
    let s = Scratch::new();
    let o = UnpackOptions {
        record_manifest: false,
        ..opts(WhiteoutMode::Overlay)
    };
    let report = s
        .unpack_with(&Tar::new().file("a", b"a").finish()[..], &o)
        .unwrap();
    assert!(report.manifest.is_none());
}

#[test]
fn old_style_directory_with_trailing_slash() {
    let s = Scratch::new();
    let mut t = Tar::new();
    let h = Tar::header(
        tar::EntryType::Regular,
        b"olddir/",
        0,
        M {
            mode: 0o755,
            ..M::default()
        },
    );
    t.raw(h, b"").file("olddir/f", b"f");
    s.unpack(&t.finish()).unwrap();
    assert!(lmeta(&s.t("olddir")).is_dir());
}

#[test]
fn stream_after_the_end_marker_is_left_unread() {
    let s = Scratch::new();
    let archive = Tar::new().file("a", b"a").finish();
    let mut stream = archive.clone();
    stream.extend_from_slice(&[7u8; 100_000]);
    let mut cursor = std::io::Cursor::new(stream);
    s.unpack_with(&mut cursor, &opts(WhiteoutMode::Overlay))
        .map(drop)
        .unwrap();
    assert!(
        cursor.position() <= archive.len() as u64,
        "read {} of {}",
        cursor.position(),
        archive.len()
    );
}
