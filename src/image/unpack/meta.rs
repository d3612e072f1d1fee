//! Entry metadata: read from the tar header and PAX records, applied through fds or
//! no-follow `*at` calls. Order: owner, then mode (a chown clears setuid/setgid), then
//! xattrs (a chown also clears `security.capability`), then times.

use std::io::Read;
use std::os::fd::{AsFd as _, BorrowedFd};

use rustix::fs::{self, Mode, Timespec, Timestamps};
use rustix::io::Errno;

use super::error::{io_at, UnpackError};
use super::fsops;
use super::path::lossy;
use super::UnpackLimits;

/// PAX records carrying extended attributes.
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Xattrs that would steer overlayfs; never taken from an archive.
pub(super) const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// The metadata of one entry (reused between entries).
#[derive(Debug, Default)]
pub(super) struct Meta {
    /// Permission bits from the header (`& 0o7777`).
    pub mode: u32,
    /// Owner from the header or PAX `uid`.
    pub uid: u32,
    /// Group from the header or PAX `gid`.
    pub gid: u32,
    /// Modification time (PAX `mtime` if present, for sub-second precision).
    pub mtime: Timespec,
    /// `SCHILY.xattr.*` records: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Reads the metadata of `entry` (named `raw` in the archive).
    pub(super) fn read<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        limits: &UnpackLimits,
    ) -> Result<(), UnpackError> {
        let shown = || lossy(raw);
        let header = entry.header();
        self.mode = header
            .mode()
            .map_err(|e| UnpackError::malformed(&shown(), e))?
            & 0o7777;
        self.uid = id(header.uid(), raw)?;
        self.gid = id(header.gid(), raw)?;
        let secs = header
            .mtime()
            .map_err(|e| UnpackError::malformed(&shown(), e))?;
        self.mtime = Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        self.xattrs.clear();
        let Some(records) = entry
            .pax_extensions()
            .map_err(|e| UnpackError::malformed(&shown(), e))?
        else {
            return Ok(());
        };
        let mut xattr_bytes = 0usize;
        for record in records {
            let record = record
                .map_err(|e| UnpackError::malformed(&shown(), format!("bad PAX record: {e}")))?;
            let (key, value) = (record.key_bytes(), record.value_bytes());
            if key == b"mtime" {
                if let Some(t) = parse_pax_time(value) {
                    self.mtime = t;
                }
            } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                xattr_bytes = xattr_bytes.saturating_add(name.len() + value.len());
                if xattr_bytes > limits.max_xattr_bytes {
                    return Err(UnpackError::XattrsTooLarge {
                        entry: shown(),
                        limit: limits.max_xattr_bytes,
                    });
                }
                if name.is_empty() || name.contains(&0) {
                    return Err(UnpackError::malformed(
                        &shown(),
                        "bad extended attribute name",
                    ));
                }
                self.xattrs.push((name.to_vec(), value.to_vec()));
            }
        }
        Ok(())
    }

    /// The permission bits to apply: special bits only when preserving owners.
    pub(super) fn mode_for(&self, preserve_owner: bool) -> u32 {
        if preserve_owner {
            self.mode
        } else {
            self.mode & 0o777
        }
    }

    /// Access and modification times to set (both the entry's mtime).
    pub(super) fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

fn id(v: std::io::Result<u64>, raw: &[u8]) -> Result<u32, UnpackError> {
    let v = v.map_err(|e| UnpackError::malformed(&lossy(raw), e))?;
    // u32::MAX means "leave unchanged" to chown(2).
    u32::try_from(v)
        .ok()
        .filter(|&v| v != u32::MAX)
        .ok_or_else(|| UnpackError::malformed(&lossy(raw), format!("owner id {v} out of range")))
}

/// Parses a PAX time (`[-]SECONDS[.FRACTION]`).
pub(super) fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(match (negative, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

/// What metadata application needs besides the metadata.
pub(super) struct Restore<'a> {
    /// Set owners and special mode bits.
    pub preserve_owner: bool,
    /// The entry's normalised path, for errors and notes.
    pub path: &'a [u8],
    /// Where ignored attributes are reported.
    pub skipped: &'a mut Vec<String>,
}

impl Restore<'_> {
    /// Owner, mode, xattrs and times of a regular file open as `fd`.
    pub(super) fn file(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        if self.preserve_owner {
            let (uid, gid) = (fs::Uid::from_raw(meta.uid), fs::Gid::from_raw(meta.gid));
            fs::fchown(fd, Some(uid), Some(gid)).map_err(io_at(self.path))?;
        }
        fs::fchmod(fd, Mode::from_raw_mode(meta.mode_for(self.preserve_owner)))
            .map_err(io_at(self.path))?;
        self.xattrs(meta, |name, value| fsops::set_xattr_fd(fd, name, value))?;
        fs::futimens(fd, &meta.times()).map_err(io_at(self.path))
    }

    /// Owner, mode (unless a symlink), xattrs and times of `name` in `dir`, never
    /// following it.
    pub(super) fn node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
        is_symlink: bool,
    ) -> Result<(), UnpackError> {
        if self.preserve_owner {
            fsops::chown_nofollow(dir, name, meta.uid, meta.gid).map_err(io_at(self.path))?;
        }
        if !is_symlink {
            fsops::chmod_node(dir, name, meta.mode_for(self.preserve_owner))
                .map_err(io_at(self.path))?;
        }
        self.xattrs(meta, |attr, value| {
            fsops::set_xattr_node(dir, name, attr, value)
        })?;
        fsops::set_times_nofollow(dir, name, &meta.times()).map_err(io_at(self.path))
    }

    /// Owner and xattrs of directory `name` in `dir` (mode and mtime are deferred).
    pub(super) fn dir_now(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if self.preserve_owner {
            fsops::chown_nofollow(dir, name, meta.uid, meta.gid).map_err(io_at(self.path))?;
        }
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let fd = fsops::open_child_dir(dir, name).map_err(io_at(self.path))?;
        self.xattrs(meta, |attr, value| {
            fsops::set_xattr_fd(fd.as_fd(), attr, value)
        })
    }

    /// Owner and xattrs of the target directory itself.
    pub(super) fn root_now(
        &mut self,
        root: BorrowedFd<'_>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if self.preserve_owner {
            let (uid, gid) = (fs::Uid::from_raw(meta.uid), fs::Gid::from_raw(meta.gid));
            fs::fchown(root, Some(uid), Some(gid)).map_err(io_at(self.path))?;
        }
        self.xattrs(meta, |attr, value| fsops::set_xattr_fd(root, attr, value))
    }

    /// Sets each xattr with `set`. Overlayfs attributes are ignored (noted in `skipped`);
    /// `security.*` failures are ignored when not preserving owners (not root).
    fn xattrs(
        &mut self,
        meta: &Meta,
        mut set: impl FnMut(&[u8], &[u8]) -> Result<(), Errno>,
    ) -> Result<(), UnpackError> {
        for (name, value) in &meta.xattrs {
            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                self.skipped.push(format!(
                    "{}: extended attribute {} from the archive ignored (reserved for overlayfs)",
                    lossy(self.path),
                    lossy(name)
                ));
                continue;
            }
            match set(name, value) {
                Ok(()) => {}
                Err(e) if !self.preserve_owner && name.starts_with(b"security.") => {
                    self.skipped.push(format!(
                        "{}: extended attribute {} not set ({e})",
                        lossy(self.path),
                        lossy(name)
                    ))
                }
                Err(e) => {
                    return Err(UnpackError::Xattr {
                        path: lossy(self.path),
                        name: lossy(name),
                        error: e.into(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t("abc"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("1.2x"), None);
    }
}
