//! Entry-name rules: normalisation, containment and whiteout classification.
//!
//! Names are handled as raw bytes (tar names need not be UTF-8). A normalised name is a
//! relative path of non-empty components joined by single `/`, with no `.` or `..`
//! components; the empty name denotes the target directory itself.

/// Why an entry name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameProblem {
    /// A `..` component.
    Escapes,
    /// A NUL byte, or nothing at all.
    Malformed(&'static str),
    /// Longer than the configured limit.
    TooLong,
}

/// Normalises the archive name `raw` into `out` (cleared first).
///
/// `./` and repeated slashes are dropped and a leading `/` is stripped (the entry stays
/// inside the target, like GNU tar); a `..` component is refused.
pub(super) fn normalise(raw: &[u8], max_len: usize, out: &mut Vec<u8>) -> Result<(), NameProblem> {
    if raw.is_empty() {
        return Err(NameProblem::Malformed("empty name"));
    }
    if raw.len() > max_len {
        return Err(NameProblem::TooLong);
    }
    if raw.contains(&0) {
        return Err(NameProblem::Malformed("NUL byte in name"));
    }
    out.clear();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err(NameProblem::Escapes),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// Splits a normalised, non-empty path into its parent (possibly empty) and last component.
pub(super) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Joins a normalised parent path and a single component.
pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent.len() + 1 + name.len());
    out.extend_from_slice(parent);
    if !parent.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// The exclusive upper bound of the keys below `dir/` in byte order (`dir0`, as `'0'` follows `'/'`).
pub(super) fn descendants_end(dir: &[u8]) -> Vec<u8> {
    let mut end = dir.to_vec();
    end.push(b'/' + 1);
    end
}

/// The prefix of the keys below `dir` in byte order (`dir/`).
pub(super) fn descendants_start(dir: &[u8]) -> Vec<u8> {
    let mut start = dir.to_vec();
    start.push(b'/');
    start
}

/// The AUFS/OCI whiteout prefix.
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The opaque-directory marker.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// AUFS-internal metadata names (`.wh..wh.plnk` …), never meant to be extracted.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// What the last component of an entry name means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Special<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.NAME`: hides `NAME` of lower layers.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: hides every lower-layer entry of the containing directory.
    Opaque,
    /// Other `.wh..wh.` names: AUFS bookkeeping, skipped.
    AufsMeta,
}

/// Classifies the last component `name` of an entry.
///
/// The hidden name of a whiteout obeys the same rules as any name: `..` escapes, and an
/// empty or `.` name is malformed.
pub(super) fn classify(name: &[u8]) -> Result<Special<'_>, NameProblem> {
    if name == OPAQUE_MARKER {
        return Ok(Special::Opaque);
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Special::AufsMeta);
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Special::Plain),
        Some(b"..") => Err(NameProblem::Escapes),
        Some(b"" | b".") => Err(NameProblem::Malformed("whiteout without a name")),
        Some(hidden) => Ok(Special::Whiteout(hidden)),
    }
}

/// A printable form of a name, for errors and reports.
pub(super) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// The printable form of a normalised path, `.` for the root.
pub(super) fn display(path: &[u8]) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        lossy(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, NameProblem> {
        let mut out = Vec::new();
        normalise(raw.as_bytes(), 4096, &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn normalises_names() {
        assert_eq!(norm("./a/b").unwrap(), "a/b");
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("..").unwrap_err(), NameProblem::Escapes);
        assert_eq!(norm("a/../../b").unwrap_err(), NameProblem::Escapes);
        assert_eq!(norm("").unwrap_err(), NameProblem::Malformed("empty name"));
        assert!(matches!(norm("a\0b"), Err(NameProblem::Malformed(_))));
        let mut out = Vec::new();
        assert_eq!(
            normalise(b"abcdef", 5, &mut out).unwrap_err(),
            NameProblem::TooLong
        );
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(classify(b"file").unwrap(), Special::Plain);
        assert_eq!(classify(b".wh.file").unwrap(), Special::Whiteout(b"file"));
        assert_eq!(classify(b".wh..wh..opq").unwrap(), Special::Opaque);
        assert_eq!(classify(b".wh..wh.plnk").unwrap(), Special::AufsMeta);
        assert_eq!(classify(b".wh...").unwrap_err(), NameProblem::Escapes);
        assert!(matches!(classify(b".wh."), Err(NameProblem::Malformed(_))));
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
        assert_eq!(descendants_start(b"a"), b"a/");
        assert_eq!(descendants_end(b"a"), b"a0");
    }
}
