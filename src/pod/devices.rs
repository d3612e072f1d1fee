//! Host devices for an app: `--device HOST[:CONTAINER[:PERMISSIONS]]` and the CRI's
//! `devices`, resolved to the device nodes the stage1 makes (a directory gives every node
//! below it).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use orbit_stage1::Device;

use super::PodError;

/// The devices for host node or directory `host_path` at `container_path` (the same path
/// when empty) with device-cgroup `permissions` (`rwm` when empty).
pub fn resolve(
    host_path: &str,
    container_path: &str,
    permissions: &str,
) -> Result<Vec<Device>, PodError> {
    let bad = |what: String| PodError::BadSpec(format!("device {host_path}: {what}"));
    let container_path = if container_path.is_empty() {
        host_path
    } else {
        container_path
    };
    let perms = if permissions.is_empty() {
        "rwm"
    } else {
        permissions
    };
    if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(bad(format!(
            "permissions '{perms}' must be letters of rwm (read, write, mknod)"
        )));
    }
    if !container_path.starts_with('/') || container_path.split('/').any(|c| c == "..") {
        return Err(bad(format!(
            "the path in the app '{container_path}' must be absolute without '..'"
        )));
    }
    let host = Path::new(host_path);
    let meta = std::fs::metadata(host).map_err(|e| bad(e.to_string()))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        orbit_stage1::devices::devices_below(host, container_path, perms)
            .map_err(|e| bad(e.to_string()))
    } else if ft.is_char_device() || ft.is_block_device() {
        Ok(vec![orbit_stage1::devices::device_of(
            host,
            &meta,
            container_path,
            perms,
        )])
    } else {
        Err(bad("not a device node or a directory of them".into()))
    }
}

/// `--device HOST[:CONTAINER[:PERMISSIONS]]`, as podman takes it.
pub fn parse_device(spec: &str) -> Result<Vec<Device>, PodError> {
    let mut parts = spec.splitn(3, ':');
    let host = parts.next().unwrap_or_default();
    let container = parts.next().unwrap_or_default();
    let perms = parts.next().unwrap_or_default();
    if host.is_empty() {
        return Err(PodError::BadSpec(format!(
            "--device {spec}: expected HOST[:CONTAINER[:PERMISSIONS]], e.g. /dev/fuse or /dev/sdb:/dev/xvdb:r"
        )));
    }
    resolve(host, container, perms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_numbers_under_another_name() {
        let d = parse_device("/dev/zero:/dev/nothing:r").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].path.as_str(), d[0].kind, d[0].major, d[0].minor),
            ("/dev/nothing", 'c', 1, 5)
        );
        assert_eq!(d[0].permissions, "r");
        assert_eq!(parse_device("/dev/null").unwrap()[0].permissions, "rwm");
    }

    #[test]
    fn files_missing_paths_and_bad_permissions_are_refused() {
        for bad in [
            "/etc/passwd",
            "/dev/nope",
            "/dev/null:rel",
            "/dev/null:/dev/n:rx",
            ":/x",
            "/dev/null:/a/../b",
        ] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("device"), "{bad}: {e}");
        }
    }
}
