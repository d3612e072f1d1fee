//! Short names (`busybox`, `team/app:1`: no registry host): an `[aliases]` entry names the
//! repository; else each of `unqualified-search-registries` is a candidate, as
//! `short-name-mode` allows. orbit does not prompt: in `enforcing` mode several candidates
//! are an error listing them. Without aliases or search registries a short name keeps
//! orbit's long-standing meaning, Docker Hub (`docker.io/library/busybox`).

use std::str::FromStr;

use super::RegistriesConf;
use crate::image::reference::split_tag;

/// `short-name-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShortNameMode {
    /// Several search registries and no alias: an error.
    Enforcing,
    /// Try the search registries in order (the default).
    #[default]
    Permissive,
    /// Try the search registries in order.
    Disabled,
}

impl FromStr for ShortNameMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforcing" => Ok(ShortNameMode::Enforcing),
            "permissive" => Ok(ShortNameMode::Permissive),
            "disabled" => Ok(ShortNameMode::Disabled),
            _ => Err("short-name-mode must be enforcing, permissive or disabled".into()),
        }
    }
}

/// A short name that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortNameError {
    /// `enforcing` mode, no alias and several search registries.
    #[error(
        "short name '{name}' is ambiguous (short-name-mode = \"enforcing\"): it could be {}; \
         use a fully qualified name (e.g. {}) or add an alias for it in [aliases] of a \
         registries.conf drop-in ({})",
        .candidates.join(", "),
        .candidates[0],
        .files.join(", ")
    )]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
        files: Vec<String>,
    },
}

/// What a user's reference stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The names to try, in order (each fully qualified, except a short name left to
    /// Docker Hub's normalization).
    pub candidates: Vec<String>,
    /// How they were found, for `--debug` (`None`: the reference as given).
    pub how: Option<String>,
}

/// Whether `name` starts with a registry host: a first component with a `.` or a `:`, or
/// `localhost`, followed by more.
pub fn is_qualified(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// The candidates for `reference` (what follows `docker://`) under `conf`.
pub fn resolve(
    conf: Option<&RegistriesConf>,
    reference: &str,
) -> Result<Resolution, ShortNameError> {
    let as_is = || Resolution {
        candidates: vec![reference.to_string()],
        how: None,
    };
    let Some(conf) = conf else { return Ok(as_is()) };
    if is_qualified(reference) {
        return Ok(as_is());
    }
    let (repo, suffix) = match reference.find('@') {
        Some(at) => (&reference[..at], &reference[at..]),
        None => split_tag(reference),
    };
    if let Some(alias) = conf.aliases.get(repo) {
        return Ok(Resolution {
            candidates: vec![format!("{}{suffix}", alias.value)],
            how: Some(format!(
                "short name '{repo}' is an alias (in {}) for {}",
                alias.file.display(),
                alias.value
            )),
        });
    }
    if conf.search.is_empty() {
        return Ok(as_is());
    }
    let candidates: Vec<String> = conf
        .search
        .iter()
        .map(|r| format!("{r}/{reference}"))
        .collect();
    if conf.short_name_mode == ShortNameMode::Enforcing && candidates.len() > 1 {
        return Err(ShortNameError::Ambiguous {
            name: reference.to_string(),
            candidates,
            files: conf.files.iter().map(|f| f.display().to_string()).collect(),
        });
    }
    Ok(Resolution {
        how: Some(format!(
            "short name '{reference}' is looked for in unqualified-search-registries: {}",
            conf.search.join(", ")
        )),
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.apply(super::super::parse::parse(Path::new("t.conf"), text).unwrap());
        c
    }

    #[test]
    fn qualified_names_have_a_host() {
        for q in [
            "example.com/a",
            "localhost/a",
            "localhost:5000/a",
            "127.0.0.1:5000/a/b",
        ] {
            assert!(is_qualified(q), "{q}");
        }
        for s in [
            "busybox",
            "busybox:1",
            "library/busybox",
            "localhost",
            "team/app@sha256:0",
        ] {
            assert!(!is_qualified(s), "{s}");
        }
    }

    #[test]
    fn without_configuration_names_stay_as_given() {
        let r = resolve(None, "busybox:1").unwrap();
        assert_eq!(r.candidates, ["busybox:1"]);
        let empty = RegistriesConf::default();
        assert_eq!(
            resolve(Some(&empty), "busybox").unwrap().candidates,
            ["busybox"]
        );
    }

    #[test]
    fn aliases_come_first_and_keep_the_tag_or_digest() {
        let c = conf(
            r#"
unqualified-search-registries = ["a.example", "b.example"]
short-name-mode = "enforcing"
[aliases]
"app" = "registry.example/team/app"
"#,
        );
        assert_eq!(
            resolve(Some(&c), "app").unwrap().candidates,
            ["registry.example/team/app"]
        );
        assert_eq!(
            resolve(Some(&c), "app:2").unwrap().candidates,
            ["registry.example/team/app:2"]
        );
        let d = format!("@sha256:{}", "c".repeat(64));
        assert_eq!(
            resolve(Some(&c), &format!("app{d}")).unwrap().candidates,
            [format!("registry.example/team/app{d}")]
        );
        // A qualified name is never aliased.
        assert_eq!(
            resolve(Some(&c), "x.example/app").unwrap().candidates,
            ["x.example/app"]
        );
    }

    #[test]
    fn modes_decide_what_several_search_registries_mean() {
        let text = |mode: &str| {
            format!("unqualified-search-registries = [\"a.example\", \"b.example:5000\"]\nshort-name-mode = \"{mode}\"\n")
        };
        let e = resolve(Some(&conf(&text("enforcing"))), "tool:1").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("a.example/tool:1, b.example:5000/tool:1"),
            "{msg}"
        );
        assert!(
            msg.contains("fully qualified") && msg.contains("alias"),
            "{msg}"
        );
        for mode in ["permissive", "disabled"] {
            assert_eq!(
                resolve(Some(&conf(&text(mode))), "tool:1")
                    .unwrap()
                    .candidates,
                ["a.example/tool:1", "b.example:5000/tool:1"]
            );
        }
        // One search registry is no ambiguity.
        let one = conf(
            "unqualified-search-registries = [\"a.example\"]\nshort-name-mode = \"enforcing\"\n",
        );
        assert_eq!(
            resolve(Some(&one), "tool").unwrap().candidates,
            ["a.example/tool"]
        );
    }
}
