//! Registry mirrors, remapping, blocking and short names, as containers-registries.conf(5)
//! describes them and podman and skopeo read them: a main file
//! (`$CONTAINERS_REGISTRIES_CONF`, else `~/.config/containers/registries.conf` if it exists,
//! else `/etc/containers/registries.conf`) and drop-ins (`registries.conf.d/*.conf` of
//! `/etc/containers`, of `~/.config/containers` and of orbit's configuration directories)
//! applied over it in order. See [`Sources::standard`].
//!
//! - [`parse`]: one file, checked (a bad key, prefix or mode names the file and line).
//! - [`matching`]: which `[[registry]]` a name falls under and where to pull it from.
//! - [`shortnames`]: what an unqualified name (`busybox`) stands for.

pub mod matching;
pub mod parse;
pub mod shortnames;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use matching::{Endpoint, Plan};
pub use parse::ConfFile;
pub use shortnames::ShortNameMode;

/// The environment variable naming a file that replaces the main registries.conf.
pub const ENV_FILE: &str = "CONTAINERS_REGISTRIES_CONF";

/// The system's main file, when [`ENV_FILE`] is not set.
pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";

/// The system's drop-in directory.
pub const SYSTEM_DROPINS: &str = "/etc/containers/registries.conf.d";

/// Errors reading registries.conf files: each names the file (and line, where there is one)
/// and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// A file exists but cannot be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file is not valid TOML or has a key of the wrong type or an unknown key.
    #[error("{}: {detail}", .path.display())]
    Syntax { path: PathBuf, detail: String },
    /// A value is not acceptable.
    #[error("{}:{line}: {key} = {value:?}: {problem}", .path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        problem: String,
    },
}

/// One `[[registry.mirror]]`: a place to try before the registry's own location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/namespace…]`: replaces the prefix part of a name.
    pub location: String,
    /// Plain HTTP and unverified TLS are allowed.
    pub insecure: bool,
    /// Which pulls may use it.
    pub pull_from: PullFromMirror,
}

/// `pull-from-mirror`: which references a mirror serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    /// Tags and digests (the default).
    #[default]
    All,
    /// Only references by digest.
    DigestOnly,
    /// Only references by tag.
    TagOnly,
}

/// One `[[registry]]` table, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port][/namespace…][/repo[:tag|@digest]]` or `*.domain`.
    pub prefix: String,
    /// Where names under the prefix are pulled from; `None`: the name as it is.
    pub location: Option<String>,
    /// Plain HTTP and unverified TLS are allowed at `location`.
    pub insecure: bool,
    /// Pulling names under the prefix is refused.
    pub blocked: bool,
    /// `mirror-by-digest-only`: mirrors serve pulls by digest only.
    pub mirror_by_digest_only: bool,
    /// Tried in order before `location`.
    pub mirrors: Vec<Mirror>,
    /// The file that defined it (for error messages).
    pub file: PathBuf,
}

/// An `[aliases]` entry: a short name standing for a fully qualified repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The fully qualified repository (no tag or digest).
    pub value: String,
    /// The file that defined it.
    pub file: PathBuf,
}

/// The configuration after every file was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// `[[registry]]` tables by prefix (a later file's table replaces an earlier one's).
    pub registries: BTreeMap<String, Registry>,
    /// `unqualified-search-registries`, in order.
    pub search: Vec<String>,
    /// `short-name-mode`.
    pub short_name_mode: ShortNameMode,
    /// `[aliases]`, by short name.
    pub aliases: BTreeMap<String, Alias>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl RegistriesConf {
    /// Applies `file` over this configuration, as a drop-in does: its registries replace
    /// the ones with the same prefix, its search list and mode (when it sets them) replace
    /// the current ones, its aliases are added (an empty value removes one).
    pub fn apply(&mut self, file: ConfFile) {
        for r in file.registries {
            self.registries.insert(r.prefix.clone(), r);
        }
        if let Some(s) = file.search {
            self.search = s;
        }
        if let Some(m) = file.short_name_mode {
            self.short_name_mode = m;
        }
        for (name, value) in file.aliases {
            if value.is_empty() {
                self.aliases.remove(&name);
            } else {
                self.aliases.insert(
                    name,
                    Alias {
                        value,
                        file: file.path.clone(),
                    },
                );
            }
        }
        self.files.push(file.path);
    }
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// The main file (it may not exist).
    pub main: Option<PathBuf>,
    /// Drop-in directories, lowest precedence first; their `*.conf` files are applied in
    /// lexical order within each.
    pub dropin_dirs: Vec<PathBuf>,
}

impl Sources {
    /// What podman and skopeo read — `$CONTAINERS_REGISTRIES_CONF`, else the user's
    /// `~/.config/containers/registries.conf` when it exists, else
    /// `/etc/containers/registries.conf`; with the drop-ins of
    /// `/etc/containers/registries.conf.d` (not when the user's file is the main one) and
    /// `~/.config/containers/registries.conf.d` — and then the `registries.conf.d` of each
    /// of orbit's configuration directories `orbit_dirs` (lowest precedence first).
    pub fn standard(orbit_dirs: &[&Path]) -> Sources {
        let config_home = crate::config::user_config_home();
        Sources::choose(
            std::env::var_os(ENV_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            config_home.map(|h| h.join("containers")),
            orbit_dirs,
        )
    }

    /// [`Sources::standard`] for a given `$CONTAINERS_REGISTRIES_CONF` and user
    /// `containers` configuration directory.
    fn choose(
        env_file: Option<PathBuf>,
        user_dir: Option<PathBuf>,
        orbit_dirs: &[&Path],
    ) -> Sources {
        let user_file = user_dir.as_ref().map(|d| d.join("registries.conf"));
        let user_dropins = user_dir.as_ref().map(|d| d.join("registries.conf.d"));
        let (main, mut dropin_dirs) = match (env_file, user_file) {
            (Some(f), _) => (f, vec![PathBuf::from(SYSTEM_DROPINS)]),
            (None, Some(u)) if u.is_file() => (u, vec![]),
            (None, _) => (
                PathBuf::from(SYSTEM_FILE),
                vec![PathBuf::from(SYSTEM_DROPINS)],
            ),
        };
        dropin_dirs.extend(user_dropins);
        dropin_dirs.extend(orbit_dirs.iter().map(|d| d.join("registries.conf.d")));
        Sources {
            main: Some(main),
            dropin_dirs,
        }
    }

    /// The files that exist, in the order they apply.
    pub fn files(&self) -> Result<Vec<PathBuf>, ConfError> {
        let mut files: Vec<PathBuf> = self.main.iter().filter(|p| p.is_file()).cloned().collect();
        for d in &self.dropin_dirs {
            let entries = match std::fs::read_dir(d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(ConfError::Read {
                        path: d.clone(),
                        error,
                    })
                }
            };
            let mut here: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
                .collect();
            here.sort();
            files.extend(here);
        }
        Ok(files)
    }

    /// Reads and merges every file; `None` when there is none (orbit then behaves as it
    /// always did: no mirrors, and short names are Docker Hub's).
    pub fn load(&self) -> Result<Option<RegistriesConf>, ConfError> {
        let files = self.files()?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut conf = RegistriesConf::default();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|error| ConfError::Read {
                path: f.clone(),
                error,
            })?;
            conf.apply(parse::parse(&f, &text)?);
        }
        Ok(Some(conf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> ConfFile {
        parse::parse(Path::new(path), text).unwrap()
    }

    #[test]
    fn dropins_override_by_prefix_and_merge_aliases() {
        let mut c = RegistriesConf::default();
        c.apply(file(
            "main.conf",
            r#"
unqualified-search-registries = ["a.example", "b.example"]
short-name-mode = "enforcing"
[[registry]]
prefix = "example.com/foo"
location = "internal.example/foo"
[[registry]]
location = "other.example"
[aliases]
"app" = "example.com/team/app"
"gone" = "example.com/gone"
"#,
        ));
        c.apply(file(
            "10-dropin.conf",
            r#"
[[registry]]
prefix = "example.com/foo"
blocked = true
[aliases]
"gone" = ""
"new" = "quay.example/new"
"#,
        ));
        assert_eq!(c.search, ["a.example", "b.example"]);
        assert_eq!(c.short_name_mode, ShortNameMode::Enforcing);
        let foo = &c.registries["example.com/foo"];
        assert!(foo.blocked);
        assert_eq!(
            foo.location, None,
            "the drop-in's table replaces the whole table"
        );
        assert_eq!(foo.file, Path::new("10-dropin.conf"));
        assert!(c.registries.contains_key("other.example"));
        assert_eq!(
            c.aliases.keys().collect::<Vec<_>>(),
            ["app", "new"],
            "an empty alias erases it"
        );
        // A drop-in that sets the search list (even to nothing) replaces it.
        c.apply(file("20.conf", "unqualified-search-registries = []\n"));
        assert!(c.search.is_empty());
        assert_eq!(c.short_name_mode, ShortNameMode::Enforcing);
    }

    #[test]
    fn files_come_main_first_then_dropins_in_lexical_order() {
        let t = tempfile::tempdir().unwrap();
        let main = t.path().join("registries.conf");
        std::fs::write(&main, "").unwrap();
        let d1 = t.path().join("d1");
        let d2 = t.path().join("d2");
        std::fs::create_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d2).unwrap();
        for n in ["20-b.conf", "10-a.conf", "ignored.txt"] {
            std::fs::write(d1.join(n), "").unwrap();
        }
        std::fs::write(d2.join("00.conf"), "").unwrap();
        let s = Sources {
            main: Some(main.clone()),
            dropin_dirs: vec![d1.clone(), t.path().join("missing"), d2.clone()],
        };
        assert_eq!(
            s.files().unwrap(),
            [
                main,
                d1.join("10-a.conf"),
                d1.join("20-b.conf"),
                d2.join("00.conf")
            ]
        );
        let none = Sources {
            main: Some(t.path().join("absent.conf")),
            dropin_dirs: vec![],
        };
        assert_eq!(none.load().unwrap(), None);
    }

    #[test]
    fn the_main_file_is_the_environments_then_the_users_then_the_systems() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("containers");
        let orbit = t.path().join("orbit");
        let env = t.path().join("env.conf");
        let s = Sources::choose(Some(env.clone()), Some(user.clone()), &[&orbit]);
        assert_eq!(s.main.as_deref(), Some(env.as_path()));
        assert_eq!(
            s.dropin_dirs,
            [
                PathBuf::from(SYSTEM_DROPINS),
                user.join("registries.conf.d"),
                orbit.join("registries.conf.d")
            ]
        );
        let s = Sources::choose(None, Some(user.clone()), &[]);
        assert_eq!(s.main.as_deref(), Some(Path::new(SYSTEM_FILE)));
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("registries.conf"), "").unwrap();
        let s = Sources::choose(None, Some(user.clone()), &[]);
        assert_eq!(s.main, Some(user.join("registries.conf")));
        assert_eq!(s.dropin_dirs, [user.join("registries.conf.d")]);
    }

    #[test]
    fn a_bad_dropin_names_itself() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("50-bad.conf"),
            "short-name-mode = \"strict\"\n",
        )
        .unwrap();
        let s = Sources {
            main: None,
            dropin_dirs: vec![t.path().to_path_buf()],
        };
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("50-bad.conf:1"), "{e}");
        assert!(e.contains("enforcing, permissive or disabled"), "{e}");
    }
}
