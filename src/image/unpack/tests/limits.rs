//! Limits, truncation and malformed streams.

use std::fs;
use std::io::{self, Read};

use super::{assert_err, opts, pax_records, Scratch, Tar, M};
use crate::image::unpack::{UnpackError, UnpackLimits, UnpackOptions, WhiteoutMode};

fn with_limits(limits: UnpackLimits) -> UnpackOptions {
    UnpackOptions {
        limits,
        ..opts(WhiteoutMode::Overlay)
    }
}

#[test]
fn absurd_sizes_are_refused_before_writing() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file("small", b"ok");
    // Claims 1 TiB; only a few bytes follow.
    let h = Tar::header(tar::EntryType::Regular, b"big", 1 << 40, M::default());
    t.raw(h, b"just a little");
    let e = assert_err!(s.unpack(&t.finish()), UnpackError::TooLarge { .. });
    assert_eq!(
        e.to_string(),
        format!(
            "entry `big` takes the layer over the size limit of {} bytes",
            64u64 << 30
        )
    );
    assert!(
        fs::symlink_metadata(s.t("big")).is_err(),
        "nothing written for the big entry"
    );

    // The limit counts all entries together, and applies before the data is written.
    let o = with_limits(UnpackLimits {
        max_total_bytes: 150,
        ..UnpackLimits::default()
    });
    let mut t = Tar::new();
    t.file("a", &[1; 100]).file("b", &[2; 100]);
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::TooLarge { limit: 150, .. }
    );
    assert!(fs::symlink_metadata(s.t("b")).is_err());
}

#[test]
fn sparse_files_count_their_full_size() {
    let s = Scratch::new();
    // A GNU sparse file: 1 GiB logical, one 512-byte data block.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..6].copy_from_slice(b"sparse");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.sparse[0].offset = octal12(0);
    gnu.sparse[0].numbytes = octal12(512);
    gnu.sparse[1].offset = octal12(1 << 30); // the hole runs to the end
    gnu.sparse[1].numbytes = octal12(0);
    gnu.realsize = octal12(1 << 30);
    let mut t = Tar::new();
    t.raw(h, &[b'x'; 512]);
    let o = with_limits(UnpackLimits {
        max_total_bytes: 1 << 20,
        ..UnpackLimits::default()
    });
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::TooLarge { .. }
    );
    assert!(fs::symlink_metadata(s.t("sparse")).is_err());
}

fn octal12(v: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    let s = format!("{v:011o}");
    out[..11].copy_from_slice(s.as_bytes());
    out
}

#[test]
fn too_many_entries() {
    let s = Scratch::new();
    let mut t = Tar::new();
    for i in 0..5 {
        t.file(&format!("f{i}"), b"");
    }
    let o = with_limits(UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    });
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::TooManyEntries { limit: 3 }
    );
    assert!(fs::symlink_metadata(s.t("f3")).is_err());
    let o = with_limits(UnpackLimits {
        max_entries: 5,
        ..UnpackLimits::default()
    });
    s.unpack_with(&t.finish()[..], &o).unwrap();
}

#[test]
fn truncated_archives() {
    let mut t = Tar::new();
    t.file("first", b"1").file("data", &[7u8; 10_000]);
    let full = t.finish();
    let data_start = 512 * 3; // header, 1 block of "first", header of "data"
    for cut in [data_start + 5_000, data_start, 512 * 2 + 100, 300, 0] {
        let s = Scratch::new();
        let e = assert_err!(s.unpack(&full[..cut]), UnpackError::Truncated);
        assert_eq!(e.to_string(), "archive is truncated", "cut at {cut}");
    }
    // Cut exactly at an entry boundary: no end-of-archive marker.
    let s = Scratch::new();
    assert_err!(s.unpack(&t.unterminated()), UnpackError::Truncated);
    // Truncated inside a PAX header.
    let mut t = Tar::new();
    t.pax(&[("path", &[b'p'; 600])]).file("x", b"");
    assert_err!(
        Scratch::new().unpack(&t.finish()[..512 + 100]),
        UnpackError::Truncated
    );
}

#[test]
fn a_failing_reader_is_reported_with_its_error() {
    struct Failing(Vec<u8>, usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1 >= 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "corrupt deflate stream",
                ));
            }
            let n = buf.len().min(self.0.len() - self.1).min(100);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let mut t = Tar::new();
    t.file("data", &[7u8; 10_000]);
    let s = Scratch::new();
    let e = assert_err!(
        s.unpack_with(Failing(t.finish(), 0), &opts(WhiteoutMode::Overlay)),
        UnpackError::Read { .. }
    );
    assert_eq!(e.io_error().unwrap().kind(), io::ErrorKind::InvalidData);
    // An UnexpectedEof from a decompressor is a truncation.
    struct Eof;
    impl Read for Eof {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
    assert_err!(
        s.unpack_with(Eof, &opts(WhiteoutMode::Overlay)),
        UnpackError::Truncated
    );
}

#[test]
fn bad_checksum_is_malformed() {
    let mut bytes = Tar::new().file("a", b"a").finish();
    bytes[0] = b'b';
    let e = assert_err!(Scratch::new().unpack(&bytes), UnpackError::Malformed { .. });
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn xattrs_over_the_limit() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.pax(&[
        ("SCHILY.xattr.user.a", &[b'v'; 40]),
        ("SCHILY.xattr.user.b", &[b'v'; 40]),
    ])
    .file("f", b"");
    let o = with_limits(UnpackLimits {
        max_xattr_bytes: 64,
        ..UnpackLimits::default()
    });
    assert_err!(
        s.unpack_with(&t.finish()[..], &o),
        UnpackError::XattrsTooLarge { limit: 64, .. }
    );
    assert!(fs::symlink_metadata(s.t("f")).is_err());
}

#[test]
fn huge_extension_headers_are_not_buffered() {
    let s = Scratch::new();
    let records = pax_records(&[("comment", &vec![b'c'; 3 << 20])]);
    let mut t = Tar::new();
    t.raw(
        Tar::header(
            tar::EntryType::XHeader,
            b"PaxHeaders/x",
            records.len() as u64,
            M::default(),
        ),
        &records,
    );
    t.file("f", b"");
    assert_err!(s.unpack(&t.finish()), UnpackError::HeadersTooLarge { .. });
}

#[test]
fn io_errors_keep_their_kind() {
    let s = Scratch::new();
    let e = assert_err!(
        crate::image::unpack::unpack_layer(
            &Tar::new().finish()[..],
            &s.t("missing"),
            &opts(WhiteoutMode::Overlay)
        ),
        UnpackError::Io { .. }
    );
    assert_eq!(e.io_error().unwrap().kind(), io::ErrorKind::NotFound);
}
