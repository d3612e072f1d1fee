//! Checking an unpacked layer directory against its manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use ring::digest;
use rustix::fs::{self, Stat};
use rustix::io::Errno;

use super::error::{io_at, UnpackError};
use super::fsops;
use super::manifest::{DeviceNumbers, EntryKind, LayerManifest, ManifestEntry};
use super::path::{self, lossy};

/// One way in which a directory differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// The path relative to the layer directory (`.` for the directory itself).
    pub path: String,
    /// What is wrong, e.g. "missing" or "mode is 0600, expected 0644".
    pub problem: String,
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Re-walks `dir` (never following symlinks) and reports every difference from
/// `manifest`: missing entries, unexpected extra entries (an unexpected directory is
/// reported once, not its contents), wrong kind, mode, owner, size, content digest,
/// symlink target, device numbers, opaque marker and broken hard links. Sorted by path.
///
/// Errors are reserved for failing to read the tree at all.
pub fn verify_tree(dir: &Path, manifest: &LayerManifest) -> Result<Vec<Discrepancy>, UnpackError> {
    let root = fsops::open_target(dir).map_err(|e| UnpackError::Io {
        path: dir.display().to_string(),
        error: e.into(),
    })?;
    let expected: BTreeMap<&[u8], &ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (key(e.path.as_bytes()), e))
        .collect();
    let mut v = Verifier {
        expected,
        seen: BTreeMap::new(),
        found: Vec::new(),
        buf: vec![0; 1 << 20],
    };
    if let Some(e) = v.expected.get(&b""[..]).copied() {
        let st = fs::fstat(&root).map_err(io_at(b""))?;
        v.seen.insert(Vec::new(), (st.st_dev, st.st_ino));
        v.check(root.as_fd(), None, b"", e, &st)?;
    }
    v.walk(root.as_fd(), b"")?;
    v.missing_and_links();
    v.found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v.found
        .into_iter()
        .map(|(p, problem)| Discrepancy {
            path: path::display(&p),
            problem,
        })
        .collect())
}

/// Manifest paths are normalised; `.` is the root (empty key).
fn key(p: &[u8]) -> &[u8] {
    if p == b"." {
        b""
    } else {
        p
    }
}

struct Verifier<'m> {
    expected: BTreeMap<&'m [u8], &'m ManifestEntry>,
    /// Paths found on disk that the manifest lists, with their (dev, inode).
    seen: BTreeMap<Vec<u8>, (u64, u64)>,
    found: Vec<(Vec<u8>, String)>,
    buf: Vec<u8>,
}

impl Verifier<'_> {
    fn report(&mut self, path: &[u8], problem: String) {
        self.found.push((path.to_vec(), problem));
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, path: &[u8]) -> Result<(), UnpackError> {
        let mut names = fsops::list_dir(dir).map_err(io_at(path))?;
        names.sort();
        for name in names {
            let child = path::join(path, &name);
            let st = match fsops::lstat(dir, &name) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_at(&child)(e)),
            };
            let Some(e) = self.expected.get(child.as_slice()).copied() else {
                let what = EntryKind::of_stat(&st).map_or("entry".to_string(), |k| k.to_string());
                self.report(&child, format!("unexpected {what} (not in the manifest)"));
                continue;
            };
            self.seen.insert(child.clone(), (st.st_dev, st.st_ino));
            let is_dir = self.check(dir, Some(&name), &child, e, &st)?;
            if is_dir {
                let sub = fsops::open_child_dir(dir, &name).map_err(io_at(&child))?;
                self.walk(sub.as_fd(), &child)?;
            }
        }
        Ok(())
    }

    /// Compares one entry; returns whether it is a directory to descend into.
    /// `name` is `None` for the root (`dir` is then the root itself).
    fn check(
        &mut self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
        path: &[u8],
        e: &ManifestEntry,
        st: &Stat,
    ) -> Result<bool, UnpackError> {
        let actual = EntryKind::of_stat(st);
        if actual != Some(e.kind) {
            let what = actual.map_or("an unsupported file type".to_string(), |k| format!("a {k}"));
            self.report(path, format!("is {what}, expected a {}", e.kind));
            return Ok(false);
        }
        let mode = st.st_mode & 0o7777;
        if mode != e.mode && e.kind != EntryKind::Symlink {
            self.report(path, format!("mode is {mode:04o}, expected {:04o}", e.mode));
        }
        if (st.st_uid, st.st_gid) != (e.uid, e.gid) {
            self.report(
                path,
                format!(
                    "owner is {}:{}, expected {}:{}",
                    st.st_uid, st.st_gid, e.uid, e.gid
                ),
            );
        }
        match e.kind {
            EntryKind::File => self.check_file(dir, name, path, e, st)?,
            EntryKind::Symlink => self.check_symlink(dir, name, path, e),
            EntryKind::Chardev | EntryKind::Blockdev => self.check_device(path, e, st),
            EntryKind::Dir => {
                self.check_opaque(dir, name, path, e);
                return Ok(true);
            }
            EntryKind::Fifo | EntryKind::Whiteout => {}
        }
        Ok(false)
    }

    fn check_file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
        path: &[u8],
        e: &ManifestEntry,
        st: &Stat,
    ) -> Result<(), UnpackError> {
        let size = st.st_size as u64;
        if size != e.size {
            self.report(path, format!("size is {size} bytes, expected {}", e.size));
            return Ok(());
        }
        let (Some(expected), Some(name)) = (&e.sha256, name) else {
            return Ok(());
        };
        let actual = match self.hash(dir, name, st) {
            Ok(actual) => actual,
            Err(e) => {
                self.report(path, format!("cannot read content: {e}"));
                return Ok(());
            }
        };
        if &actual != expected {
            self.report(
                path,
                format!("content differs: sha256 is {actual}, expected {expected}"),
            );
        }
        Ok(())
    }

    fn hash(&mut self, dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> std::io::Result<String> {
        let fd = fsops::open_file_read(dir, name)?;
        let now = fs::fstat(&fd)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(std::io::Error::other("replaced while verifying"));
        }
        let mut file = File::from(fd);
        let mut ctx = digest::Context::new(&digest::SHA256);
        loop {
            let n = file.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&self.buf[..n]);
        }
        Ok(hex::encode(ctx.finish()))
    }

    fn check_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
        path: &[u8],
        e: &ManifestEntry,
    ) {
        let Some(name) = name else { return };
        let actual = match fs::readlinkat(dir, name, Vec::new()) {
            Ok(t) => t.into_bytes(),
            Err(err) => return self.report(path, format!("cannot read symlink: {err}")),
        };
        let expected = e.link_target.as_ref().map_or(&[][..], |t| t.as_bytes());
        if actual != expected {
            self.report(
                path,
                format!(
                    "symlink points to `{}`, expected `{}`",
                    lossy(&actual),
                    lossy(expected)
                ),
            );
        }
    }

    fn check_device(&mut self, path: &[u8], e: &ManifestEntry, st: &Stat) {
        let actual = DeviceNumbers {
            major: fs::major(st.st_rdev),
            minor: fs::minor(st.st_rdev),
        };
        if let Some(expected) = e.device {
            if actual != expected {
                self.report(
                    path,
                    format!(
                        "device is {}:{}, expected {}:{}",
                        actual.major, actual.minor, expected.major, expected.minor
                    ),
                );
            }
        }
    }

    fn check_opaque(
        &mut self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
        path: &[u8],
        e: &ManifestEntry,
    ) {
        if !e.opaque {
            return;
        }
        let value = match name {
            Some(name) => fsops::open_child_dir(dir, name).and_then(|fd| opaque_value(fd.as_fd())),
            None => opaque_value(dir),
        };
        if !matches!(value.as_deref(), Ok(b"y")) {
            self.report(
                path,
                "is not marked opaque (trusted.overlay.opaque=y)".to_string(),
            );
        }
    }

    fn missing_and_links(&mut self) {
        let mut problems = Vec::new();
        for (&p, e) in &self.expected {
            let Some(ino) = self.seen.get(p) else {
                problems.push((p.to_vec(), format!("missing (expected a {})", e.kind)));
                continue;
            };
            let Some(target) = &e.hardlink_of else {
                continue;
            };
            if let Some(t) = self.seen.get(key(target.as_bytes())) {
                if t != ino {
                    problems.push((p.to_vec(), format!("is not a hard link of `{target}`")));
                }
            }
        }
        self.found.extend(problems);
    }
}

fn opaque_value(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let mut buf = [0u8; 8];
    let n = fs::fgetxattr(fd, "trusted.overlay.opaque", &mut buf)?;
    Ok(buf[..n].to_vec())
}
