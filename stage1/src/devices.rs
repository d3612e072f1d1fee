//! Describing the host's device nodes as the manifest's [`Device`]s: what stage0 writes for
//! a CRI container's devices and what a stage1 copies for a privileged app.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::Device;

/// Host node `host` (with its metadata) as a device at `path` in the app, with cgroup
/// permissions `perms`.
pub fn device_of(host: &Path, meta: &std::fs::Metadata, path: &str, perms: &str) -> Device {
    let rdev = meta.rdev();
    Device {
        path: path.to_string(),
        host_path: host.to_path_buf(),
        kind: if meta.file_type().is_block_device() {
            'b'
        } else {
            'c'
        },
        major: u64::from(libc::major(rdev)),
        minor: u64::from(libc::minor(rdev)),
        file_mode: meta.mode() & 0o7777,
        permissions: perms.to_string(),
    }
}

/// The device nodes below host directory `dir`, as devices at the same relative paths below
/// `inside` with permissions `perms`. Symbolic links are not followed; pseudo-terminals,
/// shared memory and message queues (`pts`, `shm`, `mqueue` directly below `/dev`) are the
/// pod's own and skipped.
pub fn devices_below(dir: &Path, inside: &str, perms: &str) -> std::io::Result<Vec<Device>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let in_app = format!("{}/{name}", inside.trim_end_matches('/'));
        let ft = meta.file_type();
        if ft.is_dir() {
            if !matches!(in_app.as_str(), "/dev/pts" | "/dev/shm" | "/dev/mqueue") {
                out.extend(devices_below(&path, &in_app, perms)?);
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            out.push(device_of(&path, &meta, &in_app, perms));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_null_is_character_device_1_3() {
        let meta = std::fs::metadata("/dev/null").unwrap();
        let d = device_of(Path::new("/dev/null"), &meta, "/dev/n", "rw");
        assert_eq!((d.kind, d.major, d.minor), ('c', 1, 3));
        assert_eq!(d.file_mode, 0o666);
    }

    #[test]
    fn devices_below_the_host_dev_skip_terminals_and_shared_memory() {
        let all = devices_below(Path::new("/dev"), "/dev", "rwm").unwrap();
        assert!(all.iter().any(|d| d.path == "/dev/null" && d.major == 1));
        assert!(!all.iter().any(|d| d.path.starts_with("/dev/pts/")));
    }
}
