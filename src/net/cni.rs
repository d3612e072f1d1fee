//! Invoking CNI plugins (spec 1.0: ADD, CHECK, DEL over a conflist).
//!
//! Written by hand: the Rust CNI crates implement the plugin side; the runtime side is a
//! process call with a few environment variables and JSON on stdin/stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use super::conf::NetConfList;
use super::NetError;

/// How long one plugin call may take.
pub const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The plugin directories searched by default, after `--cni-plugin-dir`.
pub const DEFAULT_PLUGIN_DIRS: [&str; 3] = ["/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"];

/// One attachment of a pod to a network: everything a later DEL or CHECK needs.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// The network.
    pub list: &'a NetConfList,
    /// `CNI_CONTAINERID`: the pod's UUID.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub args: &'a str,
    /// `CNI_PATH`.
    pub plugin_dirs: &'a [PathBuf],
    /// `runtimeConfig` values, offered to plugins that declare the capability.
    pub runtime_config: &'a Map<String, Value>,
}

/// The plugin binary for `plugin_type`, if any directory has it.
pub fn find_plugin(dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    })
}

/// Checks that every plugin of `list` exists, before anything is set up.
pub fn check_plugins(list: &NetConfList, dirs: &[PathBuf]) -> Result<(), NetError> {
    for p in list.plugins() {
        let t = p["type"].as_str().unwrap_or_default();
        if find_plugin(dirs, t).is_none() {
            return Err(NetError::MissingPlugin {
                network: list.name.clone(),
                plugin: t.to_string(),
                searched: join_dirs(dirs),
            });
        }
    }
    Ok(())
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

impl Attachment<'_> {
    /// ADD through the chain; returns the final result.
    pub fn add(&self) -> Result<Value, NetError> {
        let mut prev: Option<Value> = None;
        for plugin in self.list.plugins() {
            let result = self.exec("ADD", plugin, prev.as_ref())?;
            prev = Some(result.unwrap_or_else(|| prev.clone().unwrap_or(json!({}))));
        }
        Ok(prev.unwrap_or(json!({})))
    }

    /// CHECK through the chain against the cached `result`.
    pub fn check(&self, result: &Value) -> Result<(), NetError> {
        for plugin in self.list.plugins() {
            self.exec("CHECK", plugin, Some(result))?;
        }
        Ok(())
    }

    /// DEL through the chain in reverse, with the cached `result` (if ADD got that far).
    /// Every plugin is asked even when one fails; the first failure is returned.
    pub fn del(&self, result: Option<&Value>) -> Result<(), NetError> {
        let mut first = None;
        for plugin in self.list.plugins().iter().rev() {
            if let Err(e) = self.exec("DEL", plugin, result) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Runs one plugin: its configuration on stdin with `name`, `cniVersion`, `prevResult`
    /// and the `runtimeConfig` it asked for injected, as the spec says.
    fn exec(
        &self,
        command: &str,
        plugin: &Value,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, NetError> {
        let plugin_type = plugin["type"].as_str().unwrap_or_default();
        let fail = |message: String| NetError::Plugin {
            network: self.list.name.clone(),
            plugin: plugin_type.to_string(),
            command: command.to_string(),
            message,
        };
        let binary =
            find_plugin(self.plugin_dirs, plugin_type).ok_or_else(|| NetError::MissingPlugin {
                network: self.list.name.clone(),
                plugin: plugin_type.to_string(),
                searched: join_dirs(self.plugin_dirs),
            })?;
        let mut conf = plugin.clone();
        let obj = conf
            .as_object_mut()
            .ok_or_else(|| fail("its configuration is not an object".into()))?;
        obj.insert("name".into(), json!(self.list.name));
        obj.insert("cniVersion".into(), json!(self.list.cni_version()));
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
        let runtime: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| Some((cap.clone(), self.runtime_config.get(cap)?.clone())))
            .collect();
        if !runtime.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.args)
            .env("CNI_PATH", join_dirs(self.plugin_dirs))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", binary.display())))?;
        let input = serde_json::to_vec(&conf).expect("JSON serializes");
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading its stdin is judged by its exit status.
            let _ = stdin.write_all(&input);
        }
        // A plugin that hangs (dhcp without a server, a broken conflist…) must not hang the
        // pod's start or teardown: it is killed after PLUGIN_TIMEOUT.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PLUGIN_TIMEOUT) {
            Ok(r) => r,
            Err(_) => {
                // The waiting thread reaps the plugin only once it exits, so the pid is still
                // the plugin's (unless it exits in this very instant).
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = rx.recv();
                return Err(fail(format!(
                    "it did not finish within {} s and was killed",
                    PLUGIN_TIMEOUT.as_secs()
                )));
            }
        }
        .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            // The spec's error object: {"code", "msg", "details"}.
            let message = parsed
                .as_ref()
                .and_then(|v| {
                    let msg = v["msg"].as_str()?;
                    Some(match v["details"].as_str().filter(|d| !d.is_empty()) {
                        Some(d) => format!("{msg} ({d})"),
                        None => msg.to_string(),
                    })
                })
                .unwrap_or_else(|| {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    format!("{} {}{}", out.status, stdout.trim(), stderr.trim())
                });
            return Err(fail(message));
        }
        match command {
            "ADD" => parsed
                .map(Some)
                .ok_or_else(|| fail("it printed no JSON result".into())),
            _ => Ok(None),
        }
    }
}

/// The pod-side view of an ADD result: the addresses, gateways and MAC of the interface
/// in the pod's namespace (CNI 0.3.0 and later).
pub fn summarize(
    result: &Value,
    netns: &Path,
    ifname: &str,
) -> (Vec<String>, Vec<String>, Option<String>) {
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let in_pod = |i: usize| {
        interfaces.get(i).is_some_and(|iface| {
            iface["sandbox"].as_str() == Some(&netns.display().to_string())
                || iface["name"].as_str() == Some(ifname)
        })
    };
    let mut ips = Vec::new();
    let mut gateways = Vec::new();
    for ip in result["ips"].as_array().into_iter().flatten() {
        let ours = ip["interface"]
            .as_u64()
            .map(|i| in_pod(i as usize))
            .unwrap_or(true);
        if !ours {
            continue;
        }
        if let Some(a) = ip["address"].as_str() {
            ips.push(a.to_string());
        }
        if let Some(g) = ip["gateway"].as_str() {
            gateways.push(g.to_string());
        }
    }
    let mac = interfaces
        .iter()
        .enumerate()
        .find(|(i, _)| in_pod(*i))
        .and_then(|(_, iface)| iface["mac"].as_str().map(str::to_string));
    (ips, gateways, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_side_interface_is_picked_from_a_bridge_result() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "orbit0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/p/netns"}
            ],
            "ips": [{"interface": 2, "address": "172.16.28.5/24", "gateway": "172.16.28.1"}]
        });
        let (ips, gws, mac) = summarize(&result, Path::new("/p/netns"), "eth0");
        assert_eq!(ips, vec!["172.16.28.5/24"]);
        assert_eq!(gws, vec!["172.16.28.1"]);
        assert_eq!(mac.as_deref(), Some("cc:cc:cc:cc:cc:cc"));
    }

    #[test]
    fn missing_plugins_are_not_found_and_non_executables_neither() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("plain"), "x").unwrap();
        assert!(find_plugin(&[t.path().to_path_buf()], "plain").is_none());
        assert!(find_plugin(&[t.path().to_path_buf()], "nothing").is_none());
    }
}
