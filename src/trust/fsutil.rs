//! The one atomic-write helper of orbit's stores (image store, signatures, trusted keys).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Atomically replaces `path` with `contents`: writes a temporary file in `tmp_dir` (which
/// must be on the same filesystem as `path`; `None`: `path`'s own directory), sets `mode`,
/// syncs it and renames it over `path`, so readers never see a partial file and a failure
/// leaves nothing behind. The directories must exist.
pub(crate) fn atomic_write(
    path: &Path,
    contents: &[u8],
    mode: u32,
    tmp_dir: Option<&Path>,
) -> std::io::Result<()> {
    let dir = match (tmp_dir, path.parent()) {
        (Some(d), _) => d,
        (None, Some(p)) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".orbit-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
