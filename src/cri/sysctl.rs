//! A sandbox's sysctls (`PodSandboxConfig.linux.sysctls`): only namespaced ones — the
//! network namespace's `net.*` and the IPC namespace's `kernel.shm*`, `kernel.msg*`,
//! `kernel.sem` and `fs.mqueue.*` — written from inside the running sandbox's namespaces
//! (a kvm sandbox's by its guest agent, in the VM), so nothing of the node changes.

use std::collections::HashMap;
use std::path::PathBuf;

use tonic::Status;

use crate::pod::status;
use crate::pod::store::{PodRef, PodStore};

/// A checked sysctl: its /proc/sys path and value, and the namespace it belongs to.
pub struct Sysctl {
    name: String,
    path: PathBuf,
    value: String,
    namespace: &'static str,
}

fn namespace_of(name: &str) -> Option<&'static str> {
    let ipc = ["kernel.shm", "kernel.msg", "fs.mqueue."];
    if name.starts_with("net.") {
        Some("net")
    } else if name == "kernel.sem" || ipc.iter().any(|p| name.starts_with(p)) {
        Some("ipc")
    } else {
        None
    }
}

/// Checks `sysctls` for a sandbox (host network / shared namespaces as given).
pub fn check(
    sysctls: &HashMap<String, String>,
    host_net: bool,
    host_namespaces: &[String],
) -> Result<Vec<Sysctl>, Status> {
    let mut out = Vec::new();
    for (name, value) in sysctls {
        // Dots or slashes separate the parts (with slashes, a part may hold a dot:
        // net/ipv4/conf/eth0.100/forwarding), as the kubelet accepts them.
        let parts: Vec<&str> = if name.contains('/') {
            name.split('/').collect()
        } else {
            name.split('.').collect()
        };
        let dotted = parts.join(".");
        let namespace = namespace_of(&dotted).ok_or_else(|| {
            Status::invalid_argument(format!(
                "sysctl {name} is not namespaced: setting it would change the node"
            ))
        })?;
        let shared = match namespace {
            "net" => host_net,
            _ => host_namespaces.iter().any(|n| n == "ipc"),
        };
        if shared {
            return Err(Status::invalid_argument(format!(
                "sysctl {name}: the sandbox shares the host's {namespace} namespace"
            )));
        }
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
            || value.contains('\n')
        {
            return Err(Status::invalid_argument(format!("sysctl {name}={value:?}")));
        }
        out.push(Sysctl {
            path: parts
                .iter()
                .fold(PathBuf::from("/proc/sys"), |p, part| p.join(part)),
            name: name.clone(),
            value: value.clone(),
            namespace,
        });
    }
    Ok(out)
}

/// `sysctls` for a kvm sandbox's guest agent (`orbit_stage1::agent::AgentConfig::sysctls`):
/// a JSON object of paths below /proc/sys and values.
pub fn for_guest(sysctls: &[Sysctl]) -> String {
    let map: std::collections::BTreeMap<String, &str> = sysctls
        .iter()
        .map(|s| {
            let rel = s.path.strip_prefix("/proc/sys").unwrap_or(&s.path);
            (rel.to_string_lossy().into_owned(), s.value.as_str())
        })
        .collect();
    serde_json::to_string(&map).expect("a map of strings serializes")
}

/// Writes `sysctls` inside the running sandbox `pod`, from a thread that joins its
/// namespaces (and ends right after).
pub fn apply(pods: &PodStore, pod: &PodRef, sysctls: &[Sysctl]) -> Result<(), Status> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let pod = pods
        .refresh(pod)
        .map_err(|e| Status::internal(e.to_string()))?;
    let pid = status::info(&pod)
        .ok()
        .and_then(|i| i.pid)
        .ok_or_else(|| Status::internal("the sandbox is not running"))?;
    let writes: Vec<(String, PathBuf, String, &'static str)> = sysctls
        .iter()
        .map(|s| (s.name.clone(), s.path.clone(), s.value.clone(), s.namespace))
        .collect();
    std::thread::spawn(move || -> Result<(), String> {
        for kind in ["net", "ipc"] {
            if !writes.iter().any(|w| w.3 == kind) {
                continue;
            }
            let flag = match kind {
                "net" => nix::sched::CloneFlags::CLONE_NEWNET,
                _ => nix::sched::CloneFlags::CLONE_NEWIPC,
            };
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
                .map_err(|e| format!("cannot open the sandbox's {kind} namespace: {e}"))?;
            // A stage1 that made no namespace of this kind (fly) would have the node's.
            if super::is_nodes_namespace(&ns, kind) {
                return Err(format!(
                    "the sandbox shares the node's {kind} namespace: its sysctls would change the node"
                ));
            }
            nix::sched::setns(&ns, flag)
                .map_err(|e| format!("cannot join the sandbox's {kind} namespace: {e}"))?;
        }
        for (name, path, value, _) in &writes {
            std::fs::write(path, value).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| Status::internal("the sysctl thread panicked"))?
    .map_err(Status::invalid_argument)
}
