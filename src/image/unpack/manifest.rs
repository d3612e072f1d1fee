//! The layer manifest: what an unpacked layer directory must contain, recorded while
//! unpacking and checked later by `verify_tree`.

use std::fmt;

use rustix::fs::{FileType, Stat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record of what a layer directory must contain, used later by `orbit image verify`.
///
/// Entries are sorted by path (byte order). Directories created implicitly (parents that
/// the archive did not list) are included; the target directory itself appears as `.`
/// only if the archive has an entry for it or it was made opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerManifest {
    /// One entry per path in the layer directory.
    pub entries: Vec<ManifestEntry>,
}

/// The expected state of one path of a layer directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Normalised path relative to the layer directory (`a/b/c`; `.` for the directory itself).
    pub path: RawName,
    /// What kind of file it is.
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files only; 0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// SHA-256 of the content, lowercase hex (regular files written by this layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<RawName>,
    /// Device numbers of character and block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceNumbers>,
    /// For hard links (recorded "as files": `kind` is the kind of the linked inode, with
    /// its metadata and digest), the path this entry shares its inode with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink_of: Option<RawName>,
    /// Directory marked opaque for overlayfs (`trusted.overlay.opaque=y`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub opaque: bool,
}

/// The kind of a manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file (hard links are recorded as files, see `ManifestEntry::hardlink_of`).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device (other than a whiteout).
    Chardev,
    /// A block device.
    Blockdev,
    /// A named pipe.
    Fifo,
    /// An overlayfs whiteout: a character device 0:0.
    Whiteout,
}

impl EntryKind {
    /// The kind of an `lstat` result (a 0:0 character device is a whiteout).
    pub(super) fn of_stat(st: &Stat) -> Option<EntryKind> {
        Some(match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::CharacterDevice if st.st_rdev == 0 => EntryKind::Whiteout,
            FileType::CharacterDevice => EntryKind::Chardev,
            FileType::BlockDevice => EntryKind::Blockdev,
            FileType::Fifo => EntryKind::Fifo,
            _ => return None,
        })
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::File => "regular file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Chardev => "character device",
            EntryKind::Blockdev => "block device",
            EntryKind::Fifo => "fifo",
            EntryKind::Whiteout => "whiteout (character device 0:0)",
        })
    }
}

/// Major and minor device numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNumbers {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl ManifestEntry {
    /// An entry with the metadata of `st` and no digest, target or link (the path is
    /// filled in by the caller).
    pub(super) fn from_stat(kind: EntryKind, st: &Stat) -> ManifestEntry {
        let device =
            matches!(kind, EntryKind::Chardev | EntryKind::Blockdev).then(|| DeviceNumbers {
                major: rustix::fs::major(st.st_rdev),
                minor: rustix::fs::minor(st.st_rdev),
            });
        ManifestEntry {
            path: RawName::default(),
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: if kind == EntryKind::File {
                st.st_size as u64
            } else {
                0
            },
            sha256: None,
            link_target: None,
            device,
            hardlink_of: None,
            opaque: false,
        }
    }

    /// An entry of `kind` with the given metadata and nothing else.
    pub(super) fn new(kind: EntryKind, mode: u32, uid: u32, gid: u32) -> ManifestEntry {
        ManifestEntry {
            path: RawName::default(),
            kind,
            mode,
            uid,
            gid,
            size: 0,
            sha256: None,
            link_target: None,
            device: None,
            hardlink_of: None,
            opaque: false,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A file name as raw bytes. Serialised as a JSON string when it is UTF-8, otherwise as
/// `{"hex": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawName(pub Vec<u8>);

impl RawName {
    /// The bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for RawName {
    fn from(s: &str) -> RawName {
        RawName(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for RawName {
    fn from(b: &[u8]) -> RawName {
        RawName(b.to_vec())
    }
}

impl fmt::Display for RawName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawNameRepr {
    Utf8(String),
    Bytes { hex: String },
}

impl Serialize for RawName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(s) => serializer.serialize_str(s),
            Err(_) => RawNameRepr::Bytes {
                hex: hex::encode(&self.0),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawName, D::Error> {
        match RawNameRepr::deserialize(deserializer)? {
            RawNameRepr::Utf8(s) => Ok(RawName(s.into_bytes())),
            RawNameRepr::Bytes { hex } => hex::decode(hex)
                .map(RawName)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_names_round_trip() {
        for name in [&b"usr/bin/ls"[..], b"caf\xe9", b""] {
            let json = serde_json::to_string(&RawName(name.to_vec())).unwrap();
            let back: RawName = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, name, "{json}");
        }
        assert_eq!(serde_json::to_string(&RawName::from("a")).unwrap(), "\"a\"");
        assert_eq!(
            serde_json::to_string(&RawName(b"\xff".to_vec())).unwrap(),
            "{\"hex\":\"ff\"}"
        );
    }

    #[test]
    fn manifest_json_is_compact() {
        let m = LayerManifest {
            entries: vec![ManifestEntry {
                path: "a".into(),
                ..ManifestEntry::new(EntryKind::Dir, 0o755, 0, 0)
            }],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"entries":[{"path":"a","kind":"dir","mode":493,"uid":0,"gid":0}]}"#
        );
        assert_eq!(serde_json::from_str::<LayerManifest>(&json).unwrap(), m);
    }
}
