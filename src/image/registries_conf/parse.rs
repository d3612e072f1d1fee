//! One registries.conf file, parsed with `toml` and checked (version 2; the deprecated
//! version 1 `[registries.search|insecure|block]` lists are read as their version 2
//! equivalents, but not mixed with version 2 in one file): every
//! prefix, location, search registry, alias and mode is validated here, so that a mistake is
//! reported with its file and line before any pull starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfError, Mirror, PullFromMirror, Registry, ShortNameMode};
use crate::image::reference::{split_tag, valid_host, valid_path_component};

/// What one file says (only what it sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// The file.
    pub path: PathBuf,
    /// Its `[[registry]]` tables.
    pub registries: Vec<Registry>,
    /// `unqualified-search-registries`, if set.
    pub search: Option<Vec<String>>,
    /// `short-name-mode`, if set (and not empty).
    pub short_name_mode: Option<ShortNameMode>,
    /// `[aliases]` (an empty value erases an alias of an earlier file).
    pub aliases: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<Spanned<String>>>,
    short_name_mode: Option<Spanned<String>>,
    #[serde(default)]
    registry: Vec<Spanned<RawRegistry>>,
    #[serde(default)]
    aliases: BTreeMap<String, Spanned<String>>,
    /// The deprecated version 1 format's `[registries.search]` etc.
    registries: Option<Spanned<RawV1>>,
}

/// Version 1: `[registries.search|insecure|block]` with `registries = [...]` each.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRegistry {
    prefix: Option<Spanned<String>>,
    location: Option<Spanned<String>>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawMirror {
    location: Spanned<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<Spanned<String>>,
}

/// Parses and checks the registries.conf `text` read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<ConfFile, ConfError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ConfError::Syntax {
        path: path.to_path_buf(),
        detail: e.to_string().trim_end().to_string(),
    })?;
    let at = |s: &std::ops::Range<usize>| text[..s.start.min(text.len())].matches('\n').count() + 1;
    let invalid = |span: &std::ops::Range<usize>, key: &str, value: &str, problem: String| {
        ConfError::Invalid {
            path: path.to_path_buf(),
            line: at(span),
            key: key.to_string(),
            value: value.to_string(),
            problem,
        }
    };
    if let Some(v1) = &raw.registries {
        if !raw.registry.is_empty() || raw.unqualified_search_registries.is_some() {
            return Err(invalid(
                &v1.span(),
                "registries",
                "…",
                "the version 1 format ([registries.search], [registries.insecure], \
                 [registries.block]) cannot be mixed with version 2 \
                 (unqualified-search-registries, [[registry]]): convert the file to version 2 \
                 (containers-registries.conf(5))"
                    .into(),
            ));
        }
    }
    let short_name_mode = match &raw.short_name_mode {
        None => None,
        Some(m) if m.get_ref().is_empty() => None,
        Some(m) => Some(
            m.get_ref()
                .parse::<ShortNameMode>()
                .map_err(|problem| invalid(&m.span(), "short-name-mode", m.get_ref(), problem))?,
        ),
    };

    let v1 = raw.registries.as_ref().map(|v| v.get_ref());
    let v1_search = v1.and_then(|v| v.search.as_ref()).map(|l| &l.registries);
    let search = match raw.unqualified_search_registries.as_ref().or(v1_search) {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|r| {
                    let v = r.get_ref();
                    if valid_host(v) {
                        Ok(v.clone())
                    } else {
                        Err(invalid(
                            &r.span(),
                            "unqualified-search-registries",
                            v,
                            "expected a registry host[:port], without a path, scheme or tag".into(),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };

    let mut registries: Vec<Registry> = Vec::new();
    for table in &raw.registry {
        let r = table.get_ref();
        let location = r.location.as_ref().filter(|l| !l.get_ref().is_empty());
        let (prefix, prefix_span, prefix_key) = match (&r.prefix, location) {
            (Some(p), _) if !p.get_ref().is_empty() => (p.get_ref().clone(), p.span(), "prefix"),
            (_, Some(l)) => (l.get_ref().clone(), l.span(), "location"),
            _ => {
                let span = table.span();
                return Err(invalid(
                    &span,
                    "[[registry]]",
                    "",
                    "a [[registry]] table needs a prefix or a location".into(),
                ));
            }
        };
        check_prefix(&prefix).map_err(|p| invalid(&prefix_span, prefix_key, &prefix, p))?;
        if let Some(l) = location {
            check_location(l.get_ref())
                .map_err(|p| invalid(&l.span(), "location", l.get_ref(), p))?;
        }
        if registries.iter().any(|x| x.prefix == prefix) {
            return Err(invalid(
                &prefix_span,
                prefix_key,
                &prefix,
                "this prefix has another [[registry]] table in the same file: merge them".into(),
            ));
        }
        let mut mirrors = Vec::new();
        for m in &r.mirror {
            check_location(m.location.get_ref()).map_err(|p| {
                invalid(
                    &m.location.span(),
                    "mirror location",
                    m.location.get_ref(),
                    p,
                )
            })?;
            let pull_from = match &m.pull_from_mirror {
                None => PullFromMirror::All,
                Some(v) => match v.get_ref().as_str() {
                    "" | "all" => PullFromMirror::All,
                    "digest-only" => PullFromMirror::DigestOnly,
                    "tag-only" => PullFromMirror::TagOnly,
                    other => {
                        return Err(invalid(
                            &v.span(),
                            "pull-from-mirror",
                            other,
                            "expected all, digest-only or tag-only".into(),
                        ))
                    }
                },
            };
            if r.mirror_by_digest_only && pull_from != PullFromMirror::All {
                let v = m.pull_from_mirror.as_ref().expect("set when not all");
                return Err(invalid(
                    &v.span(),
                    "pull-from-mirror",
                    v.get_ref(),
                    "not allowed together with mirror-by-digest-only = true on the registry: \
                     remove one of them"
                        .into(),
                ));
            }
            mirrors.push(Mirror {
                location: m.location.get_ref().clone(),
                insecure: m.insecure,
                pull_from,
            });
        }
        registries.push(Registry {
            prefix,
            location: location.map(|l| l.get_ref().clone()),
            insecure: r.insecure,
            blocked: r.blocked,
            mirror_by_digest_only: r.mirror_by_digest_only,
            mirrors,
            file: path.to_path_buf(),
        });
    }

    for (list, insecure) in v1
        .iter()
        .flat_map(|v| [(&v.insecure, true), (&v.block, false)])
    {
        for entry in list.iter().flat_map(|l| &l.registries) {
            let p = entry.get_ref();
            check_prefix(p).map_err(|problem| invalid(&entry.span(), "registries", p, problem))?;
            let i = match registries.iter().position(|r| &r.prefix == p) {
                Some(i) => i,
                None => {
                    registries.push(Registry {
                        prefix: p.clone(),
                        location: None,
                        insecure: false,
                        blocked: false,
                        mirror_by_digest_only: false,
                        mirrors: Vec::new(),
                        file: path.to_path_buf(),
                    });
                    registries.len() - 1
                }
            };
            if insecure {
                registries[i].insecure = true;
            } else {
                registries[i].blocked = true;
            }
        }
    }

    let mut aliases = BTreeMap::new();
    for (name, value) in &raw.aliases {
        check_alias_name(name).map_err(|p| invalid(&value.span(), "alias", name, p))?;
        let v = value.get_ref();
        if !v.is_empty() {
            check_alias_value(v)
                .map_err(|p| invalid(&value.span(), &format!("alias {name:?}"), v, p))?;
        }
        aliases.insert(name.clone(), v.clone());
    }

    Ok(ConfFile {
        path: path.to_path_buf(),
        registries,
        search,
        short_name_mode,
        aliases,
    })
}

/// `host[:port][/path…][:tag|@digest]` with a valid host and path.
fn check_name_like(s: &str, what: &str) -> Result<(), String> {
    if s.contains("://") {
        return Err(format!("{what} takes no scheme (write host[:port]/path)"));
    }
    let no_digest = match s.split_once('@') {
        Some((repo, digest)) => {
            if digest.parse::<crate::image::digest::Digest>().is_err() {
                return Err(format!("{what} has a malformed digest"));
            }
            repo
        }
        None => s,
    };
    let (repo, tag) = if no_digest.len() == s.len() {
        split_tag(no_digest)
    } else {
        (no_digest, "")
    };
    let mut parts = repo.split('/');
    let host = parts.next().unwrap_or("");
    if !valid_host(host) {
        return Err(format!(
            "{what} must start with a registry host[:port] (e.g. registry.example.com or 127.0.0.1:5000)"
        ));
    }
    if !parts.all(valid_path_component) {
        return Err(format!(
            "{what} has an invalid repository path (lower case letters, digits, '.', '_', '-' between '/')"
        ));
    }
    if let Some(t) = tag.strip_prefix(':') {
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("{what} has an invalid tag"));
        }
    }
    Ok(())
}

/// A prefix: a name-like string or `*.domain`.
fn check_prefix(p: &str) -> Result<(), String> {
    if let Some(domain) = p.strip_prefix("*.") {
        if domain.contains(['/', ':', '@', '*']) || !valid_host(domain) {
            return Err(
                "a wildcard prefix is *.domain only (e.g. *.example.com: no port, path or tag)"
                    .into(),
            );
        }
        return Ok(());
    }
    if p.contains('*') {
        return Err("a wildcard may only start a prefix, as in *.example.com".into());
    }
    check_name_like(p, "a prefix")
}

/// A location: `host[:port][/path…]`.
fn check_location(l: &str) -> Result<(), String> {
    if l.contains('*') {
        return Err("a location cannot have wildcards".into());
    }
    check_name_like(l, "a location")
}

fn check_alias_name(n: &str) -> Result<(), String> {
    if n.contains([':', '@']) {
        return Err("an alias is a short name without a tag or digest".into());
    }
    if super::shortnames::is_qualified(n) {
        return Err("an alias must be a short name (no registry host, not localhost)".into());
    }
    if !n.split('/').all(valid_path_component) {
        return Err("not a valid short name".into());
    }
    Ok(())
}

fn check_alias_value(v: &str) -> Result<(), String> {
    if !super::shortnames::is_qualified(v) {
        return Err(
            "an alias must stand for a fully qualified name (registry.example.com/repo)".into(),
        );
    }
    let (repo, tag) = split_tag(v);
    if !tag.is_empty() {
        return Err("an alias stands for a repository: no tag or digest".into());
    }
    check_name_like(repo, "an alias value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ConfFile {
        parse(Path::new("/etc/containers/registries.conf"), text).unwrap()
    }

    fn err(text: &str) -> String {
        parse(Path::new("/x/registries.conf"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_man_page_example_parses() {
        let f = ok(r#"
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
"#);
        assert_eq!(f.search, Some(vec!["example.com".to_string()]));
        assert_eq!(f.short_name_mode, None);
        assert_eq!(f.registries.len(), 2);
        let foo = &f.registries[0];
        assert_eq!(foo.prefix, "example.com/foo");
        assert_eq!(
            foo.location.as_deref(),
            Some("internal-registry-for-example.com/bar")
        );
        assert_eq!(foo.mirrors.len(), 2);
        assert!(foo.mirrors[1].insecure);
        assert_eq!(foo.mirrors[1].pull_from, PullFromMirror::DigestOnly);
        assert_eq!(foo.mirrors[0].pull_from, PullFromMirror::All);
        // No prefix: the location is the prefix.
        assert_eq!(f.registries[1].prefix, "registry.com");
    }

    #[test]
    fn the_version_1_format_still_reads() {
        let f = ok(r#"
[registries.search]
registries = ["registry1.com", "registry2.com"]

[registries.insecure]
registries = ["registry3.com", "both.example"]

[registries.block]
registries = ["registry.untrusted.com", "both.example"]
"#);
        assert_eq!(
            f.search,
            Some(vec![
                "registry1.com".to_string(),
                "registry2.com".to_string()
            ])
        );
        let flags: Vec<(&str, bool, bool)> = f
            .registries
            .iter()
            .map(|r| (r.prefix.as_str(), r.insecure, r.blocked))
            .collect();
        assert_eq!(
            flags,
            [
                ("registry3.com", true, false),
                ("both.example", true, true),
                ("registry.untrusted.com", false, true)
            ]
        );
    }

    #[test]
    fn modes_aliases_and_wildcards() {
        let f = ok(r#"
short-name-mode = "disabled"
[[registry]]
prefix = "*.example.com"
blocked = true
[aliases]
"app" = "registry.example.com/team/app"
"team/tool" = "localhost:5000/tool"
"#);
        assert_eq!(f.short_name_mode, Some(ShortNameMode::Disabled));
        assert_eq!(f.registries[0].prefix, "*.example.com");
        assert_eq!(f.registries[0].location, None);
        assert_eq!(f.aliases["team/tool"], "localhost:5000/tool");
        assert_eq!(ok("short-name-mode = \"\"\n").short_name_mode, None);
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let e = err("\n\nshort-name-mode = \"strict\"\n");
        assert!(
            e.starts_with("/x/registries.conf:3: short-name-mode = \"strict\""),
            "{e}"
        );
        assert!(e.contains("enforcing, permissive or disabled"), "{e}");

        let e = err("[[registry]]\nprefix = \"https://example.com\"\n");
        assert!(e.starts_with("/x/registries.conf:2: prefix"), "{e}");
        assert!(e.contains("no scheme"), "{e}");

        let e = err("[[registry]]\nprefix = \"example.*.com\"\n");
        assert!(e.contains("wildcard"), "{e}");
        let e = err("[[registry]]\nprefix = \"*.example.com/foo\"\n");
        assert!(e.contains("*.domain only"), "{e}");

        let e = err("[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirrors = \"all\"\n");
        assert!(e.contains("/x/registries.conf"), "{e}");
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("pull-from-mirrors"), "{e}");

        let e = err("[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirror = \"sometimes\"\n");
        assert!(e.contains(":5: pull-from-mirror"), "{e}");

        let e = err("[[registry]]\nlocation = \"a.example\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.example\"\npull-from-mirror = \"tag-only\"\n");
        assert!(e.contains("mirror-by-digest-only"), "{e}");

        let e = err("unqualified-search-registries = []\n\n[[registry]]\ninsecure = true\n");
        assert!(e.contains("needs a prefix or a location"), "{e}");
        assert!(e.starts_with("/x/registries.conf:3: "), "{e}");

        let e = err("unqualified-search-registries = [\"docker.io/library\"]\n");
        assert!(e.contains(":1: unqualified-search-registries"), "{e}");

        let e = err("[aliases]\n\"example.com/app\" = \"example.com/app\"\n");
        assert!(e.contains("must be a short name"), "{e}");
        let e = err("[aliases]\n\"app\" = \"app\"\n");
        assert!(e.contains("fully qualified"), "{e}");
        let e = err("[aliases]\n\"app\" = \"example.com/app:1\"\n");
        assert!(e.contains("no tag"), "{e}");

        let e = err("[[registry]]\nprefix = \"a.example\"\n[[registry]]\nprefix = \"a.example\"\n");
        assert!(e.contains(":4: prefix"), "{e}");

        let e = err("unqualified-search-registries = []\n[registries.search]\nregistries = [\"a.example\"]\n");
        assert!(e.contains("cannot be mixed"), "{e}");
        let e = err("[registries.block]\nregistries = [\"https://a.example\"]\n");
        assert!(e.contains(":2: registries"), "{e}");

        let e = err("unqualified-search-registries = \"a.example\"\n");
        assert!(
            e.contains("/x/registries.conf") && e.contains("line 1"),
            "{e}"
        );

        let e = err("[[registry]\n");
        assert!(e.contains("/x/registries.conf"), "{e}");
    }
}
