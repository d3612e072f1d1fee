//! Configuration directories: vendor (`/usr/lib/orbit`), system (`/etc/orbit`) and user
//! (`~/.config/orbit`); later ones win when they disagree.

use std::path::PathBuf;

/// The three configuration directories orbit reads, in increasing precedence.
#[derive(Debug, Clone)]
pub struct ConfigDirs {
    /// Vendor defaults, `/usr/lib/orbit`.
    pub vendor: PathBuf,
    /// System configuration, `/etc/orbit`; `orbit trust` writes here by default.
    pub system: PathBuf,
    /// Per-user configuration, `~/.config/orbit`.
    pub user: PathBuf,
    /// More CNI configuration directories, searched after the `net.d/` of the three (the
    /// kubelet's `/etc/cni/net.d` for `orbit cri`).
    pub net_dirs: Vec<PathBuf>,
}

impl ConfigDirs {
    /// All directories, lowest precedence first.
    pub fn all(&self) -> [&PathBuf; 3] {
        [&self.vendor, &self.system, &self.user]
    }
}

/// The user's configuration home: `$XDG_CONFIG_HOME` (an empty value counts as unset, as
/// the XDG spec says), else `~/.config`; `None` without either.
pub fn user_config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

impl Default for ConfigDirs {
    fn default() -> Self {
        let user = user_config_home()
            .unwrap_or_else(|| PathBuf::from("/root/.config"))
            .join("orbit");
        ConfigDirs {
            vendor: PathBuf::from("/usr/lib/orbit"),
            system: PathBuf::from("/etc/orbit"),
            user,
            net_dirs: Vec::new(),
        }
    }
}
