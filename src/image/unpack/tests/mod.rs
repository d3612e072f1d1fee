//! Tests of layer unpacking, on real files in temp dirs. Archives are built byte by byte so
//! that hostile names (which `tar::Builder` refuses) can be written into headers.
//!
//! Most tests need root (owners, devices, `trusted.*` xattrs); they return early with a
//! note otherwise.

mod basic;
mod copyup;
mod devices;
mod hostile;
mod limits;
mod verify;
mod whiteouts;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{unpack_layer, UnpackError, UnpackOptions, UnpackReport, WhiteoutMode};

/// An archive being built in memory.
#[derive(Default)]
pub(super) struct Tar {
    bytes: Vec<u8>,
}

/// Metadata of a test entry.
#[derive(Clone, Copy)]
pub(super) struct M {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Default for M {
    fn default() -> Self {
        M {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
        }
    }
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    /// A GNU header with `name` written verbatim (no validation) into the name field.
    pub fn header(ty: tar::EntryType, name: &[u8], size: u64, m: M) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        assert!(name.len() <= 100, "test names must fit the header");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_mtime(m.mtime);
        h
    }

    /// Appends a header (checksummed here) and its data, padded to 512 bytes.
    pub fn raw(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Tar {
        h.set_cksum();
        self.bytes.extend_from_slice(h.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + pad, 0);
        self
    }

    pub fn file_m(&mut self, name: &str, data: &[u8], m: M) -> &mut Tar {
        let h = Tar::header(
            tar::EntryType::Regular,
            name.as_bytes(),
            data.len() as u64,
            m,
        );
        self.raw(h, data)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.file_m(name, data, M::default())
    }

    pub fn dir_m(&mut self, name: &str, m: M) -> &mut Tar {
        let h = Tar::header(tar::EntryType::Directory, name.as_bytes(), 0, m);
        self.raw(h, b"")
    }

    pub fn dir(&mut self, name: &str) -> &mut Tar {
        self.dir_m(
            name,
            M {
                mode: 0o755,
                ..M::default()
            },
        )
    }

    fn link(&mut self, ty: tar::EntryType, name: &str, target: &str, m: M) -> &mut Tar {
        let mut h = Tar::header(ty, name.as_bytes(), 0, m);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.raw(h, b"")
    }

    pub fn symlink_m(&mut self, name: &str, target: &str, m: M) -> &mut Tar {
        self.link(tar::EntryType::Symlink, name, target, m)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.symlink_m(
            name,
            target,
            M {
                mode: 0o777,
                ..M::default()
            },
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.link(tar::EntryType::Link, name, target, M::default())
    }

    pub fn device(
        &mut self,
        ty: tar::EntryType,
        name: &str,
        major: u32,
        minor: u32,
        m: M,
    ) -> &mut Tar {
        let mut h = Tar::header(ty, name.as_bytes(), 0, m);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, b"")
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let data = pax_records(records);
        let h = Tar::header(
            tar::EntryType::XHeader,
            b"PaxHeaders/x",
            data.len() as u64,
            M::default(),
        );
        self.raw(h, &data)
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// The archive without the end-of-archive marker.
    pub fn unterminated(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

/// Encodes PAX records (`LEN key=value\n`, LEN counting itself).
pub(super) fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A scratch area: `target` (the unpack target) and `outside` (must stay untouched),
/// side by side in one temp dir.
pub(super) struct Scratch {
    _tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub target: PathBuf,
    pub outside: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let target = base.join("target");
        let outside = base.join("outside");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&outside).unwrap();
        Scratch {
            _tmp: tmp,
            base,
            target,
            outside,
        }
    }

    pub fn t(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }

    /// Asserts that nothing was created next to `target` or in `outside`.
    pub fn assert_outside_untouched(&self) {
        let outside: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            outside.is_empty(),
            "files appeared outside the target: {outside:?}"
        );
        let mut base: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        base.sort();
        assert_eq!(
            base,
            ["outside", "target"],
            "files appeared next to the target"
        );
    }

    pub fn unpack(&self, tar: &[u8]) -> Result<UnpackReport, UnpackError> {
        unpack_layer(tar, &self.target, &opts(WhiteoutMode::Overlay))
    }

    pub fn unpack_with(
        &self,
        tar: impl std::io::Read,
        opts: &UnpackOptions,
    ) -> Result<UnpackReport, UnpackError> {
        unpack_layer(tar, &self.target, opts)
    }
}

/// Options recording a manifest and preserving owners.
pub(super) fn opts(whiteouts: WhiteoutMode) -> UnpackOptions {
    UnpackOptions {
        whiteouts,
        preserve_owner: true,
        record_manifest: true,
        ..UnpackOptions::default()
    }
}

/// Whether the tests run as root (needed for owners, devices and `trusted.*` xattrs).
pub(super) fn root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipping: needs root");
    }
    root
}

pub(super) fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub(super) fn mode(p: &Path) -> u32 {
    lmeta(p).mode() & 0o7777
}

pub(super) fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(p, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Asserts that `result` is an error matching `pat`, printing it otherwise.
macro_rules! assert_err {
    ($result:expr, $pat:pat) => {
        match $result {
            Err(e @ $pat) => e,
            other => panic!("expected {}, got {:?}", stringify!($pat), other),
        }
    };
}
pub(super) use assert_err;
