//! The trusted-key store, in rkt's layout under each configuration directory:
//!
//! ```text
//! <configdir>/trustedkeys/root.d/<fingerprint-hex>.pub                    trusted for every image
//! <configdir>/trustedkeys/prefix.d/<escaped prefix>/<fingerprint-hex>.pub trusted below a prefix
//! ```
//!
//! Key files are PEM `PUBLIC KEY` blocks. A prefix is stored as one path component with `%`,
//! `/` and every byte outside `[A-Za-z0-9._-]` percent-encoded
//! (`example.com/busybox` → `example.com%2Fbusybox`). All three configuration directories
//! (vendor, system, user) are read; keys from any of them are trusted.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::ConfigDirs;

use super::error::StoreError;
use super::fsutil::atomic_write;
use super::keys::{KeyAlgorithm, PublicKey};
use super::payload::repository_of;

const TRUSTED_KEYS: &str = "trustedkeys";
const ROOT_D: &str = "root.d";
const PREFIX_D: &str = "prefix.d";
const KEY_EXT: &str = "pub";
/// Longest escaped prefix that still fits in one file name (NAME_MAX).
const MAX_ESCAPED_LEN: usize = 255;

/// What a trusted key may sign.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustScope {
    /// Images whose repository is this prefix or lies below it (see [`prefix_matches`]).
    Prefix(String),
    /// Every image.
    Root,
}

impl fmt::Display for TrustScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustScope::Prefix(p) => write!(f, "prefix {p}"),
            TrustScope::Root => f.write_str("root (all images)"),
        }
    }
}

/// A key found in (or added to) the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// What the key is trusted for.
    pub scope: TrustScope,
    /// The key's fingerprint, `sha256:<hex>` (computed from the file's contents).
    pub fingerprint: String,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// The key file.
    pub path: PathBuf,
    /// The configuration directory the key file lives under.
    pub config_dir: PathBuf,
    /// The key itself.
    pub key: PublicKey,
}

/// A file (or prefix directory) in the key store that cannot be used: it is skipped, and
/// `orbit trust list` shows it with the reason so that it can be fixed or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenKey {
    /// What it would have been trusted for, when that is known.
    pub scope: Option<TrustScope>,
    /// The offending file or directory.
    pub path: PathBuf,
    /// Why it cannot be used (with what to do).
    pub reason: String,
}

/// The trusted keys of the vendor, system and user configuration directories.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dirs: ConfigDirs,
}

impl TrustStore {
    /// A store over the given configuration directories. Nothing is read until used.
    pub fn new(dirs: ConfigDirs) -> Self {
        TrustStore { dirs }
    }

    /// The configuration directories this store reads.
    pub fn dirs(&self) -> &ConfigDirs {
        &self.dirs
    }

    /// Where a key with `fingerprint_hex` (no `sha256:`) trusted for `scope` lives in
    /// `config_dir`. The prefix is not validated here.
    pub fn key_path(config_dir: &Path, scope: &TrustScope, fingerprint_hex: &str) -> PathBuf {
        let base = config_dir.join(TRUSTED_KEYS);
        let dir = match scope {
            TrustScope::Root => base.join(ROOT_D),
            TrustScope::Prefix(p) => base.join(PREFIX_D).join(escape_prefix(p)),
        };
        dir.join(format!("{fingerprint_hex}.{KEY_EXT}"))
    }

    /// Trusts `key` for `scope` by writing it into configuration directory `into` (normally
    /// one of [`ConfigDirs`]: the system directory by default, the user directory for
    /// per-user trust). Idempotent: an existing identical key file is left alone. Files are
    /// written atomically with mode 0644; missing directories are created.
    pub fn add(
        &self,
        scope: TrustScope,
        key: &PublicKey,
        into: &Path,
    ) -> Result<TrustedKey, StoreError> {
        if let TrustScope::Prefix(p) = &scope {
            validate_prefix(p)?;
        }
        let path = Self::key_path(into, &scope, &key.fingerprint_hex());
        let trusted = TrustedKey {
            scope,
            fingerprint: key.fingerprint(),
            algorithm: key.algorithm(),
            path: path.clone(),
            config_dir: into.to_path_buf(),
            key: key.clone(),
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            if PublicKey::from_pem(&text).is_ok_and(|existing| existing == *key) {
                return Ok(trusted);
            }
        }
        let dir = path.parent().expect("key paths always have a parent");
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            error: source,
        })?;
        atomic_write(&path, key.to_pem().as_bytes(), 0o644, None).map_err(|source| {
            StoreError::Io {
                path: path.clone(),
                error: source,
            }
        })?;
        Ok(trusted)
    }

    /// All trusted keys of all three directories, lowest precedence first (vendor, system,
    /// user); within a directory root keys come first, then prefixes in order, each sorted by
    /// fingerprint. The same key trusted in several directories appears once per file.
    /// Missing directories are fine; unreadable or malformed key files are skipped (see
    /// [`TrustStore::broken`]), so one bad file does not take every other key with it.
    pub fn list(&self) -> Result<Vec<TrustedKey>, StoreError> {
        Ok(self.scan()?.0)
    }

    /// The key files (and prefix directories) that [`TrustStore::list`] skips, and why.
    pub fn broken(&self) -> Result<Vec<BrokenKey>, StoreError> {
        Ok(self.scan()?.1)
    }

    /// The usable keys, in [`TrustStore::list`] order, and the broken entries.
    pub fn scan(&self) -> Result<(Vec<TrustedKey>, Vec<BrokenKey>), StoreError> {
        let mut out = Vec::new();
        let mut broken = Vec::new();
        let mut seen: Vec<&PathBuf> = Vec::new();
        for dir in self.dirs.all() {
            if seen.contains(&dir) {
                continue;
            }
            seen.push(dir);
            let (mut keys, bad) = list_dir(dir)?;
            keys.sort_by(|a, b| (&a.scope, &a.fingerprint).cmp(&(&b.scope, &b.fingerprint)));
            // Root sorts after Prefix in the derived order; put root keys first.
            keys.sort_by_key(|k| k.scope != TrustScope::Root);
            out.extend(keys);
            broken.extend(bad);
        }
        Ok((out, broken))
    }

    /// Removes the key whose fingerprint matches `selector` (full fingerprint or an
    /// unambiguous prefix of its hex, with or without `sha256:`), from every directory and
    /// scope, or only from `scope` if given. Returns the removed entries. Errors if nothing
    /// matches or if the selector matches several different keys. Emptied prefix directories
    /// are removed too.
    pub fn remove(
        &self,
        selector: &str,
        scope: Option<&TrustScope>,
    ) -> Result<Vec<TrustedKey>, StoreError> {
        let wanted = normalize_selector(selector)?;
        let candidates: Vec<TrustedKey> = self
            .list()?
            .into_iter()
            .filter(|k| scope.is_none() || scope == Some(&k.scope))
            .filter(|k| fingerprint_hex(&k.fingerprint).starts_with(&wanted))
            .collect();
        let mut fingerprints: Vec<&str> =
            candidates.iter().map(|k| k.fingerprint.as_str()).collect();
        fingerprints.sort_unstable();
        fingerprints.dedup();
        match fingerprints.len() {
            0 => {
                return Err(StoreError::NoMatch {
                    selector: selector.to_string(),
                    scope: scope.map(ToString::to_string),
                })
            }
            1 => {}
            _ => {
                return Err(StoreError::Ambiguous {
                    selector: selector.to_string(),
                    candidates: fingerprints.iter().map(|s| s.to_string()).collect(),
                })
            }
        }
        for key in &candidates {
            std::fs::remove_file(&key.path).map_err(|source| StoreError::Io {
                path: key.path.clone(),
                error: source,
            })?;
            if let TrustScope::Prefix(_) = key.scope {
                if let Some(dir) = key.path.parent() {
                    // Only succeeds if the directory is now empty; that is the point.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        Ok(candidates)
    }

    /// The keys that may sign `image_name`: all root keys plus the keys of every prefix that
    /// matches the image's repository (its name without `:tag` / `@digest`) on a path-segment
    /// boundary, in [`TrustStore::list`] order.
    pub fn keys_for(&self, image_name: &str) -> Result<Vec<TrustedKey>, StoreError> {
        let repository = repository_of(image_name);
        Ok(self
            .list()?
            .into_iter()
            .filter(|k| match &k.scope {
                TrustScope::Root => true,
                TrustScope::Prefix(p) => prefix_matches(p, repository),
            })
            .collect())
    }
}

/// Whether `prefix` covers `repository`: equal, or `repository` continues with `/` after it
/// (`example.com/busybox` covers `example.com/busybox/x` but not `example.com/busyboxer`).
/// A prefix ending in `/` covers everything below it.
pub fn prefix_matches(prefix: &str, repository: &str) -> bool {
    if prefix.ends_with('/') {
        return repository.starts_with(prefix);
    }
    match repository.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Checks a trust prefix: non-empty, no whitespace or control characters, no `@digest` and
/// no `:tag` (prefixes name repositories; a registry port like `localhost:5000/` is fine).
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    let invalid = |reason| {
        Err(StoreError::InvalidPrefix {
            prefix: prefix.to_string(),
            reason,
        })
    };
    if prefix.is_empty() {
        return invalid("it is empty; use --root to trust a key for all images");
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("it contains whitespace or control characters");
    }
    if prefix.contains('@') {
        return invalid("it contains a digest (`@`); a prefix names repositories, not images");
    }
    if let Some(slash) = prefix.rfind('/') {
        if prefix[slash..].contains(':') {
            return invalid(
                "it contains a tag (`:` after the last `/`); a prefix names repositories, \
                 drop the tag",
            );
        }
    }
    if escape_prefix(prefix).len() > MAX_ESCAPED_LEN {
        return invalid("it is too long to be stored as a directory name");
    }
    Ok(())
}

/// Encodes a prefix as a single path component: bytes outside `[A-Za-z0-9._-]` (including
/// `%` and `/`) become `%XX`; a leading `.` is encoded too so the result is never `.`, `..`
/// or a hidden name.
pub fn escape_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for (i, &b) in prefix.as_bytes().iter().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes [`escape_prefix`]'s output (lenient about bytes that needed no escaping). `None`
/// for a malformed `%` sequence or non-UTF-8 result.
pub fn unescape_prefix(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The hex part of a `sha256:` fingerprint.
fn fingerprint_hex(fingerprint: &str) -> &str {
    fingerprint.strip_prefix("sha256:").unwrap_or(fingerprint)
}

/// Lowercases a selector and strips `sha256:`; it must then be non-empty hex.
fn normalize_selector(selector: &str) -> Result<String, StoreError> {
    let trimmed = selector.trim();
    let hex = match trimmed.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &trimmed[7..],
        _ => trimmed,
    };
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::InvalidSelector {
            selector: selector.to_string(),
        });
    }
    Ok(hex.to_ascii_lowercase())
}

/// Reads the keys of one configuration directory, unsorted, and what cannot be used.
fn list_dir(config_dir: &Path) -> Result<(Vec<TrustedKey>, Vec<BrokenKey>), StoreError> {
    let base = config_dir.join(TRUSTED_KEYS);
    let mut out = Vec::new();
    let mut broken = Vec::new();
    let mut add = |scope: TrustScope, path: PathBuf| match load(config_dir, scope.clone(), &path) {
        Ok(k) => out.push(k),
        Err(e) => broken.push(BrokenKey {
            scope: Some(scope),
            path,
            reason: e.to_string(),
        }),
    };
    for path in key_files(&base.join(ROOT_D))? {
        add(TrustScope::Root, path);
    }
    let mut bad_dirs = Vec::new();
    for prefix_dir in entries(&base.join(PREFIX_D))? {
        if !prefix_dir.is_dir() {
            continue;
        }
        let Some(name) = prefix_dir.file_name().and_then(|n| n.to_str()) else {
            bad_dirs.push((prefix_dir, "not UTF-8"));
            continue;
        };
        if name.starts_with(".orbit-tmp-") {
            continue;
        }
        let prefix = match unescape_prefix(name) {
            None => {
                bad_dirs.push((prefix_dir, "malformed %-escape"));
                continue;
            }
            Some(p) if validate_prefix(&p).is_err() => {
                bad_dirs.push((prefix_dir, "it does not decode to a valid prefix"));
                continue;
            }
            Some(p) => p,
        };
        for path in key_files(&prefix_dir)? {
            add(TrustScope::Prefix(prefix.clone()), path);
        }
    }
    for (path, reason) in bad_dirs {
        let reason = StoreError::BadEntry {
            path: path.clone(),
            reason,
        }
        .to_string();
        broken.push(BrokenKey {
            scope: None,
            path,
            reason,
        });
    }
    Ok((out, broken))
}

/// The entries of a directory; empty if it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        error: source,
    };
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    read.map(|entry| entry.map(|e| e.path()).map_err(io))
        .collect()
}

/// The `*.pub` files of a directory.
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == KEY_EXT) && p.is_file())
        .collect())
}

fn load(config_dir: &Path, scope: TrustScope, path: &Path) -> Result<TrustedKey, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let key = PublicKey::from_pem(&text).map_err(|source| StoreError::BadKeyFile {
        path: path.to_path_buf(),
        error: source,
    })?;
    Ok(TrustedKey {
        scope,
        fingerprint: key.fingerprint(),
        algorithm: key.algorithm(),
        path: path.to_path_buf(),
        config_dir: config_dir.to_path_buf(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for (raw, escaped) in [
            ("example.com/busybox", "example.com%2Fbusybox"),
            ("localhost:5000/a_b-c", "localhost%3A5000%2Fa_b-c"),
            ("100%/x", "100%25%2Fx"),
            (".hidden", "%2Ehidden"),
            ("..", "%2E."),
            ("ünï", "%C3%BCn%C3%AF"),
            ("registry.example/", "registry.example%2F"),
        ] {
            assert_eq!(escape_prefix(raw), escaped);
            assert_eq!(unescape_prefix(escaped).as_deref(), Some(raw));
            assert!(!escape_prefix(raw).contains('/'));
        }
        assert_eq!(unescape_prefix("abc%2fdef").as_deref(), Some("abc/def"));
        assert_eq!(unescape_prefix("bad%2"), None);
        assert_eq!(unescape_prefix("bad%zz"), None);
        assert_eq!(unescape_prefix("%FF"), None, "not UTF-8");
    }

    #[test]
    fn prefix_boundaries() {
        assert!(prefix_matches("example.com/busybox", "example.com/busybox"));
        assert!(prefix_matches(
            "example.com/busybox",
            "example.com/busybox/x"
        ));
        assert!(!prefix_matches(
            "example.com/busybox",
            "example.com/busyboxer"
        ));
        assert!(!prefix_matches("example.com/busybox", "example.com"));
        assert!(prefix_matches("example.com", "example.com/busybox"));
        assert!(!prefix_matches("example.com", "example.community/busybox"));
        assert!(prefix_matches("example.com/", "example.com/busybox"));
        assert!(!prefix_matches("example.com/", "example.com"));
        assert!(prefix_matches("localhost:5000", "localhost:5000/x"));
    }

    #[test]
    fn prefix_validation() {
        for ok in [
            "example.com/busybox",
            "localhost:5000",
            "localhost:5000/x",
            "a/",
        ] {
            validate_prefix(ok).unwrap();
        }
        for bad in [
            "",
            "example.com/ busybox",
            "a\tb",
            "a\u{7}",
            "example.com/busybox:latest",
            "example.com/busybox@sha256:00",
        ] {
            assert!(
                matches!(validate_prefix(bad), Err(StoreError::InvalidPrefix { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert!(validate_prefix(&"a/".repeat(100)).is_err(), "too long");
    }

    #[test]
    fn selector_normalization() {
        assert_eq!(normalize_selector("SHA256:ABcd").unwrap(), "abcd");
        assert_eq!(normalize_selector("abcd").unwrap(), "abcd");
        for bad in ["", "sha256:", "xyz", "sha512:ab"] {
            assert!(normalize_selector(bad).is_err(), "{bad:?}");
        }
    }
}
