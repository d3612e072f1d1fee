//! Attaching a pod to its networks before it starts, and detaching it after: the pinned
//! namespace, CNI ADD per network, and a record per attachment in the pod directory
//! (`net/<n>-<name>.json`: the configuration used, arguments and cached result) from
//! which DEL runs later, whoever runs it: the stage1's exit hook, `orbit gc`, or a failed
//! start. Records are written before ADD, so even a crash in the middle is undone.
//!
//! Port forwards go through the portmap plugin, or, where it cannot work (no iptables, see
//! `firewall`), through orbit's own nftables rules for the pod, which the record notes so
//! that DEL removes them too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use orbit_stage1::{paths, NetworkAttachment, NetworkRef, NetworkStatus, PortMapping};

use super::cni::{self, Attachment};
use super::conf::{self, NetConfList};
use super::firewall::Firewall;
use super::{nat, netns, nft, ports, NetError};
use crate::config::ConfigDirs;

/// The pod-directory folder of attachment records.
pub const RECORDS_DIR: &str = "net";

/// The pod-directory file holding the pod's [`NetPlan`] (stage0's own; stage1s do not
/// read it).
pub const PLAN_FILE: &str = "networks.json";

/// The networks a pod will be attached to, resolved when it is prepared: their
/// configuration as it was then and the plugin directories, so that starting it later
/// (also as a systemd service) needs no configuration directories.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetPlan {
    /// One entry per network, in interface order.
    pub networks: Vec<PlannedNetwork>,
    /// Plugin directories, searched in order.
    pub plugin_dirs: Vec<PathBuf>,
}

/// One network of a [`NetPlan`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNetwork {
    /// The network's name.
    pub name: String,
    /// Extra `CNI_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// Its conflist.
    pub conf: Value,
}

/// Resolves `networks` against the configuration directories and checks that every
/// plugin they use exists in `extra_plugin_dirs` or the default directories.
pub fn plan(
    config: &ConfigDirs,
    store: &Path,
    networks: &[NetworkRef],
    extra_plugin_dirs: &[PathBuf],
) -> Result<NetPlan, NetError> {
    let mut plugin_dirs = extra_plugin_dirs.to_vec();
    plugin_dirs.extend(cni::DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from));
    let mut planned = Vec::new();
    for n in networks {
        let list = conf::find(config, store, &n.name)?;
        cni::check_plugins(&list, &plugin_dirs)?;
        planned.push(PlannedNetwork {
            name: list.name,
            args: n.args.clone(),
            conf: list.conf,
        });
    }
    Ok(NetPlan {
        networks: planned,
        plugin_dirs,
    })
}

impl NetPlan {
    /// Writes the plan into the pod directory.
    pub fn save(&self, pod: &Path) -> Result<(), NetError> {
        write_json(
            &pod.join(PLAN_FILE),
            &serde_json::to_value(self).expect("plan serializes"),
        )
    }

    /// The plan of a prepared pod (`None` when it has no CNI networks).
    pub fn load(pod: &Path) -> Result<Option<NetPlan>, NetError> {
        let path = pod.join(PLAN_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| NetError::BadConfig {
                        name: "(pod network plan)".into(),
                        path,
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NetError::io("cannot read", &path, e)),
        }
    }
}

/// What DEL needs, kept from ADD.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    name: String,
    ifname: String,
    container_id: String,
    args: String,
    plugin_dirs: Vec<PathBuf>,
    conf: Value,
    runtime_config: Map<String, Value>,
    result: Option<Value>,
    /// The pod's ports are forwarded by orbit's nftables rules (tagged with the pod's
    /// UUID) instead of the portmap plugin: DEL removes them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    nft_ports: bool,
}

impl Record {
    fn with_attachment<T>(&self, netns: &Path, f: impl FnOnce(&Attachment) -> T) -> T {
        let list = NetConfList {
            name: self.name.clone(),
            source: None,
            conf: self.conf.clone(),
        };
        let a = Attachment {
            list: &list,
            container_id: &self.container_id,
            netns,
            ifname: &self.ifname,
            args: &self.args,
            plugin_dirs: &self.plugin_dirs,
            runtime_config: &self.runtime_config,
        };
        f(&a)
    }
}

/// Creates the pod's network namespace and attaches `networks` to it (`eth0`, `eth1`, …),
/// forwarding `ports` through the first network that supports port mappings. On failure
/// everything done so far is undone.
pub fn attach(
    pod: &Path,
    uuid: &str,
    plan: &NetPlan,
    port_maps: &[PortMapping],
    store: &Path,
) -> Result<NetworkStatus, NetError> {
    let lists: Vec<NetConfList> = plan
        .networks
        .iter()
        .map(|n| NetConfList {
            name: n.name.clone(),
            source: None,
            conf: n.conf.clone(),
        })
        .collect();
    for list in &lists {
        cni::check_plugins(list, &plan.plugin_dirs)?;
    }
    let port_net = lists.iter().position(|l| {
        l.plugins()
            .iter()
            .any(|p| p["capabilities"]["portMappings"].as_bool() == Some(true))
    });
    if !port_maps.is_empty() && port_net.is_none() {
        return Err(NetError::BadSpec(format!(
            "--port: none of the networks ({}) forwards ports (no plugin with the portMappings capability)",
            lists.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    // The firewall tools are picked (and orbit's nftables table listed) once per pod, and
    // only when something needs them: before anything is made, so a missing tool fails early.
    let mut fw = if !port_maps.is_empty() || lists.iter().any(|l| nat::wanted(&l.conf)) {
        Some(Firewall::select()?)
    } else {
        None
    };
    // Ports are claimed under a store-wide lock held until the forwarding rules exist, so
    // two pods never get the same host port (pods without ports do not wait for it).
    let _ports_lock = if port_maps.is_empty() {
        None
    } else {
        let lock = ports::lock(store)?;
        ports::check_free(store, uuid, port_maps)?;
        Some(lock)
    };
    let ns_path = pod.join(paths::NETNS);
    netns::create(&ns_path)?;
    let target = Target {
        uuid,
        store,
        port_maps,
        port_net,
    };
    match attach_all(pod, plan, &lists, &target, fw.as_mut(), &ns_path) {
        Ok(status) => Ok(status),
        Err(e) => {
            let _ = detach(pod);
            Err(e)
        }
    }
}

/// The pod being attached and its port forwards.
struct Target<'a> {
    uuid: &'a str,
    store: &'a Path,
    port_maps: &'a [PortMapping],
    /// The network that forwards the ports.
    port_net: Option<usize>,
}

fn attach_all(
    pod: &Path,
    plan: &NetPlan,
    lists: &[NetConfList],
    target: &Target,
    mut fw: Option<&mut Firewall>,
    ns_path: &Path,
) -> Result<NetworkStatus, NetError> {
    let uuid = target.uuid;
    let port_maps = target.port_maps;
    let records = pod.join(RECORDS_DIR);
    std::fs::create_dir_all(&records).map_err(|e| NetError::io("cannot create", &records, e))?;
    let mut status = NetworkStatus {
        netns: ns_path.display().to_string(),
        networks: Vec::new(),
    };
    for (i, (net, list)) in plan.networks.iter().zip(lists).enumerate() {
        let mut args = format!("IgnoreUnknown=1;ORBIT_POD_UUID={uuid}");
        if let Some(extra) = net.args.as_deref().filter(|a| !a.is_empty()) {
            args.push(';');
            args.push_str(extra);
        }
        let mut runtime_config = Map::new();
        let mut conf = list.conf.clone();
        let forwards = target.port_net == Some(i) && !port_maps.is_empty();
        let nft_ports = forwards && fw.as_ref().is_some_and(|f| f.nft_ports);
        if forwards && !nft_ports {
            runtime_config.insert("portMappings".into(), ports::runtime_config(port_maps));
        } else if let Some(plugins) = conf["plugins"].as_array_mut() {
            // portmap with no mappings does nothing but cost a process per ADD and DEL;
            // without iptables it cannot work, and orbit's nftables rules forward instead.
            plugins.retain(|p| p["type"] != "portmap");
        }
        let mut record = Record {
            name: list.name.clone(),
            ifname: format!("eth{i}"),
            container_id: uuid.to_string(),
            args,
            plugin_dirs: plan.plugin_dirs.clone(),
            conf,
            runtime_config,
            result: None,
            nft_ports,
        };
        if let Some(fw) = fw.as_deref_mut() {
            nat::ensure(&list.conf, fw)?;
        }
        let file = records.join(format!("{i:02}-{}.json", list.name));
        write_record(&file, &record)?;
        let result = record.with_attachment(ns_path, |a| a.add())?;
        let (ips, gateways, mac) = cni::summarize(&result, ns_path, &record.ifname);
        record.result = Some(result);
        write_record(&file, &record)?;
        if let (true, Some(fw), Some(result)) = (nft_ports, fw.as_deref_mut(), &record.result) {
            nft::forward_ports(&mut fw.listing, uuid, target.store, result, port_maps)?;
        }
        status.networks.push(NetworkAttachment {
            name: list.name.clone(),
            interface: record.ifname.clone(),
            ips,
            gateways,
            mac,
        });
    }
    let path = pod.join(paths::NETWORK_STATUS);
    write_json(&path, &json!(status))?;
    Ok(status)
}

fn write_record(file: &Path, record: &Record) -> Result<(), NetError> {
    write_json(
        file,
        &serde_json::to_value(record).expect("record serializes"),
    )
}

/// Writes `value` to `path` atomically (temp file, fsync-free rename).
fn write_json(path: &Path, value: &Value) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).expect("JSON serializes"),
    )
    .map_err(|e| NetError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| NetError::io("cannot write", path, e))
}

/// True when the pod still has attachments or a pinned namespace to undo.
pub fn is_attached(pod: &Path) -> bool {
    pod.join(RECORDS_DIR).exists() || pod.join(paths::NETNS).exists()
}

/// Runs CHECK for every attachment of a running pod.
pub fn check(pod: &Path) -> Result<(), NetError> {
    let ns_path = pod.join(paths::NETNS);
    for (_, record) in records(pod)? {
        if let Some(result) = &record.result {
            record.with_attachment(&ns_path, |a| a.check(result))?;
        }
    }
    Ok(())
}

/// Detaches the pod from every network (CNI DEL, last attached first) and removes its
/// namespace. Records of attachments whose DEL failed stay, so a later `orbit gc` retries;
/// the first failure is returned.
pub fn detach(pod: &Path) -> Result<(), NetError> {
    let pinned = pod.join(paths::NETNS);
    // After a reboot the pin is an empty file: the namespace is gone, and CNI says to pass
    // no CNI_NETNS then (plugins still release addresses and rules).
    let ns_path = if netns::is_pinned(&pinned) {
        pinned
    } else {
        PathBuf::new()
    };
    let mut first = None;
    let mut records = records(pod)?;
    records.reverse();
    for (file, record) in records {
        // orbit's forwarding rules go first, as portmap's would (the last plugin, the first
        // to be deleted); both are tried, the first failure is kept.
        let unforwarded = if record.nft_ports {
            nft::remove_pod(&record.container_id)
        } else {
            Ok(())
        };
        let deleted = record.with_attachment(&ns_path, |a| a.del(record.result.as_ref()));
        match unforwarded.and(deleted) {
            Ok(()) => {
                let _ = std::fs::remove_file(&file);
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    netns::remove(&pod.join(paths::NETNS))?;
    let dir = pod.join(RECORDS_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io("cannot remove", &dir, e)),
    }
}

/// The attachment records, in attachment order; unreadable ones are an error (they would
/// leave something behind silently).
fn records(pod: &Path) -> Result<Vec<(PathBuf, Record)>, NetError> {
    let dir = pod.join(RECORDS_DIR);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io("cannot read", &dir, e)),
    };
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read(&f).map_err(|e| NetError::io("cannot read", &f, e))?;
            let record = serde_json::from_slice(&text).map_err(|e| NetError::BadConfig {
                name: "(attachment record)".into(),
                path: f.clone(),
                detail: e.to_string(),
            })?;
            Ok((f, record))
        })
        .collect()
}
