//! Network definitions: the built-in `default` and `default-restricted` networks and CNI
//! conflists in the `net.d/` of the configuration directories (vendor, system, user; a
//! later directory's network of the same name wins, as does a file named after a built-in).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::NetError;
use crate::config::ConfigDirs;

/// The bridge of the `default` network.
pub const DEFAULT_BRIDGE: &str = "orbit0";
/// The subnet of the `default` network (rkt's).
pub const DEFAULT_SUBNET: &str = "172.16.28.0/24";
/// The bridge of the `default-restricted` network.
pub const RESTRICTED_BRIDGE: &str = "orbit1";
/// The subnet of the `default-restricted` network.
pub const RESTRICTED_SUBNET: &str = "172.16.29.0/24";

/// A network's CNI configuration list, normalised to the conflist form.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    /// The network's name.
    pub name: String,
    /// The file it came from (`None` for built-ins).
    pub source: Option<PathBuf>,
    /// The conflist (`cniVersion`, `name`, `plugins`).
    pub conf: Value,
}

impl NetConfList {
    /// The plugins' configurations, in order.
    pub fn plugins(&self) -> &[Value] {
        self.conf["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The conflist's `cniVersion`.
    pub fn cni_version(&self) -> &str {
        self.conf["cniVersion"].as_str().unwrap_or("1.0.0")
    }
}

/// The directory host-local keeps the built-in networks' leases in.
pub fn ipam_dir(store: &Path) -> PathBuf {
    store.join("net").join("ipam")
}

fn builtin(name: &str, store: &Path) -> Option<Value> {
    let data_dir = ipam_dir(store).display().to_string();
    match name {
        // NAT to the outside world and forwarding allowed (orbit's per-network rules, see
        // `nat`), ports forwarded with portmap (or orbit's nftables rules without iptables).
        "default" => Some(json!({
            "cniVersion": "1.0.0",
            "name": "default",
            super::nat::NAT_KEY: { "subnet": DEFAULT_SUBNET },
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": DEFAULT_BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": DEFAULT_SUBNET }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": data_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
            ]
        })),
        // Host-only: the pod reaches the host (and ports can be forwarded to it), but it
        // has no default route and no masquerade, so nothing beyond its subnet.
        "default-restricted" => Some(json!({
            "cniVersion": "1.0.0",
            "name": "default-restricted",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": RESTRICTED_BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": RESTRICTED_SUBNET }]],
                        "dataDir": data_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
            ]
        })),
        _ => None,
    }
}

/// True for a valid CNI network name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Finds network `name`: a conflist in the config dirs' `net.d/` (the highest-precedence
/// directory wins, files in name order within one), else a built-in.
pub fn find(config: &ConfigDirs, store: &Path, name: &str) -> Result<NetConfList, NetError> {
    if !valid_name(name) {
        return Err(NetError::BadSpec(format!(
            "--net={name}: a network name is letters, digits, '_', '.' and '-', starting with a letter or digit"
        )));
    }
    let mut broken = Vec::new();
    let dirs: Vec<PathBuf> = config
        .all()
        .iter()
        .rev()
        .map(|d| d.join("net.d"))
        .chain(config.net_dirs.iter().cloned())
        .collect();
    for dir in dirs {
        for path in conf_files(&dir) {
            match read(&path) {
                Ok(list) if list.name == name => return Ok(list),
                Ok(_) => {}
                Err(detail) => broken.push(format!("{}: {detail}", path.display())),
            }
        }
    }
    if let Some(conf) = builtin(name, store) {
        return Ok(NetConfList {
            name: name.to_string(),
            source: None,
            conf,
        });
    }
    let searched: Vec<String> = config
        .all()
        .iter()
        .map(|d| d.join("net.d"))
        .chain(config.net_dirs.iter().cloned())
        .map(|d| d.display().to_string())
        .collect();
    Err(NetError::UnknownNetwork {
        name: name.to_string(),
        searched: searched.join(", "),
        broken: if broken.is_empty() {
            String::new()
        } else {
            format!(
                "; these files could not be read (one may define it): {}",
                broken.join("; ")
            )
        },
    })
}

/// The name of the first network configured in `dir` (files in name order, as the kubelet
/// picks its pods' network), if any file there reads as one.
pub fn first_network(dir: &Path) -> Option<String> {
    conf_files(dir)
        .iter()
        .find_map(|p| read(p).ok().map(|l| l.name))
}

/// The configuration files of a `net.d` directory, in name order.
fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

/// Reads a `.conflist`, or a single-plugin `.conf`/`.json` (wrapped into a list).
fn read(path: &Path) -> Result<NetConfList, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("not valid JSON ({e})"))?;
    let conf = if value.get("plugins").is_some() {
        value
    } else if value.get("type").is_some() {
        let mut plugin = value.clone();
        if let Some(o) = plugin.as_object_mut() {
            o.remove("name");
            o.remove("cniVersion");
        }
        json!({
            "cniVersion": value.get("cniVersion").cloned().unwrap_or(json!("1.0.0")),
            "name": value.get("name").cloned().unwrap_or(Value::Null),
            "plugins": [plugin],
        })
    } else {
        return Err(
            "neither a conflist (\"plugins\") nor a plugin configuration (\"type\")".into(),
        );
    };
    validate(&conf)?;
    Ok(NetConfList {
        name: conf["name"].as_str().unwrap_or_default().to_string(),
        source: Some(path.to_path_buf()),
        conf,
    })
}

/// Checks what orbit relies on: a valid name, a supported version, plugins with types.
fn validate(conf: &Value) -> Result<(), String> {
    let name = conf["name"]
        .as_str()
        .ok_or("\"name\" is missing or not a string")?;
    if !valid_name(name) {
        return Err(format!("\"name\": '{name}' is not a valid network name"));
    }
    let version = conf["cniVersion"]
        .as_str()
        .ok_or("\"cniVersion\" is missing or not a string")?;
    if !["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].contains(&version) {
        return Err(format!(
            "cniVersion {version} is not supported (use 0.3.0 to 1.1.0)"
        ));
    }
    let plugins = conf["plugins"]
        .as_array()
        .ok_or("\"plugins\" is not a list")?;
    if plugins.is_empty() {
        return Err("\"plugins\" is empty".into());
    }
    for (i, p) in plugins.iter().enumerate() {
        let t = p["type"]
            .as_str()
            .ok_or_else(|| format!("plugin {i} has no \"type\""))?;
        if t.is_empty() || t.contains('/') || t.starts_with('.') {
            return Err(format!("plugin {i}: \"type\" '{t}' is not a plugin name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> ConfigDirs {
        ConfigDirs {
            vendor: root.join("vendor"),
            system: root.join("system"),
            user: root.join("user"),
            net_dirs: Vec::new(),
        }
    }

    fn write(root: &Path, dir: &str, file: &str, text: &str) {
        let d = root.join(dir).join("net.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), text).unwrap();
    }

    #[test]
    fn builtins_are_found_and_keep_their_leases_in_the_store() {
        let t = tempfile::tempdir().unwrap();
        let d = find(&dirs(t.path()), Path::new("/store"), "default").unwrap();
        assert_eq!(d.plugins()[0]["bridge"], DEFAULT_BRIDGE);
        assert_eq!(d.plugins()[0]["ipam"]["dataDir"], "/store/net/ipam");
        let r = find(&dirs(t.path()), Path::new("/store"), "default-restricted").unwrap();
        assert_eq!(r.plugins()[0]["ipMasq"], false);
        assert!(r.plugins()[0]["ipam"].get("routes").is_none());
    }

    #[test]
    fn a_later_config_dir_wins_and_may_replace_a_builtin() {
        let t = tempfile::tempdir().unwrap();
        let conf = |sub: &str| {
            format!(
                r#"{{"cniVersion":"1.0.0","name":"default","plugins":[{{"type":"bridge","bridge":"{sub}"}}]}}"#
            )
        };
        write(t.path(), "vendor", "10-a.conflist", &conf("vendorbr"));
        write(t.path(), "system", "10-a.conflist", &conf("systembr"));
        let d = find(&dirs(t.path()), Path::new("/s"), "default").unwrap();
        assert_eq!(d.plugins()[0]["bridge"], "systembr");
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "user",
            "mv.conf",
            r#"{"cniVersion":"0.4.0","name":"mv","type":"macvlan","master":"eth0"}"#,
        );
        let d = find(&dirs(t.path()), Path::new("/s"), "mv").unwrap();
        assert_eq!(d.cni_version(), "0.4.0");
        assert_eq!(d.plugins().len(), 1);
        assert_eq!(d.plugins()[0]["type"], "macvlan");
        assert!(d.plugins()[0].get("name").is_none());
    }

    #[test]
    fn unknown_networks_name_the_broken_files() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "system", "broken.conflist", "{ not json");
        write(
            t.path(),
            "system",
            "old.conflist",
            r#"{"cniVersion":"0.2.0","name":"old","plugins":[{"type":"bridge"}]}"#,
        );
        let e = find(&dirs(t.path()), Path::new("/s"), "mynet")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'mynet': no such network"), "{e}");
        assert!(e.contains("broken.conflist: not valid JSON"), "{e}");
        assert!(e.contains("cniVersion 0.2.0 is not supported"), "{e}");
    }

    #[test]
    fn hostile_names_and_types_are_refused() {
        assert!(!valid_name("../etc"));
        assert!(!valid_name(""));
        assert!(valid_name("net-1.a_b"));
        assert!(validate(
            &json!({"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../../bin/sh"}]})
        )
        .is_err());
        assert!(validate(&json!({"cniVersion":"1.0.0","name":"x","plugins":[]})).is_err());
    }
}
