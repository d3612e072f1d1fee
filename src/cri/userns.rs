//! User namespaces for CRI sandboxes (KEP-127, a pod's `hostUsers: false`): the kubelet's
//! `NamespaceOption.userns_options` checked and turned into the pod's
//! [`orbit_stage1::UserNamespace`], containers and their idmapped mounts checked against it,
//! the mapping reported back, and whether a runtime handler can do it at all.

use std::path::Path;
use std::sync::OnceLock;

use tonic::Status;

use orbit_stage1::UserNamespace;

use super::proto::{self, NamespaceMode};

/// Whether this host gives the `ns` stage1 what a user namespace pod needs (idmapped mounts
/// on the store's file system), found out once.
#[derive(Debug, Default)]
pub struct Support(OnceLock<Result<(), String>>);

impl Support {
    /// `Ok` when the store at `root` takes idmapped mounts; else why not.
    pub fn check(&self, root: &Path) -> &Result<(), String> {
        self.0
            .get_or_init(|| orbit_stage1_linux::idmap_supported(root))
    }
}

fn mode_name(mode: i32) -> String {
    NamespaceMode::try_from(mode)
        .map_or_else(|_| format!("mode {mode}"), |m| m.as_str_name().to_string())
}

/// The one range a list of mappings (`uids` or `gids`, named by `which`) must be: container
/// id 0 and up, of a sane length, not reaching past the last valid id nor covering host id 0.
fn one_range(which: &str, mappings: &[proto::IdMapping]) -> Result<proto::IdMapping, Status> {
    let m = match mappings {
        [m] => *m,
        [] => {
            return Err(Status::invalid_argument(format!(
                "userns_options: mode POD needs a {which} mapping (one range starting at \
                 container id 0)"
            )))
        }
        more => {
            return Err(Status::invalid_argument(format!(
                "userns_options: {} {which} mappings; orbit maps exactly one range per pod \
                 (container ids 0..length), as the kubelet sends: give one",
                more.len()
            )))
        }
    };
    if m.container_id != 0 {
        return Err(Status::invalid_argument(format!(
            "userns_options: the {which} mapping starts at container id {}, so the \
             container's root (id 0) is not mapped; start it at container id 0",
            m.container_id
        )));
    }
    if m.length == 0 {
        return Err(Status::invalid_argument(format!(
            "userns_options: the {which} mapping has length 0; map at least one id (the \
             kubelet maps 65536)"
        )));
    }
    // The last id, 2^32-1, is (uid_t)-1: not an id.
    if u64::from(m.host_id) + u64::from(m.length) > u64::from(u32::MAX) {
        return Err(Status::invalid_argument(format!(
            "userns_options: the {which} mapping {}+{} goes past the last valid host id {}",
            m.host_id,
            m.length,
            u32::MAX - 1
        )));
    }
    if m.host_id == 0 {
        return Err(Status::invalid_argument(format!(
            "userns_options: the {which} mapping covers host id 0: the container's root would \
             be the host's root; map a range above the host's own ids (the kubelet's start at \
             65536)"
        )));
    }
    Ok(m)
}

/// The user namespace a sandbox asks for with `options` (its `NamespaceOption`), run by
/// `handler`: `None` for the node's (no options, or mode NODE); the kubelet's mapping for
/// mode POD, refused unless it is one range for uids and one of the same length for gids
/// with container id 0 mapped, and unless `handler` can do it (`supported`). CONTAINER and
/// TARGET do not exist for user namespaces.
pub fn for_sandbox(
    options: &proto::NamespaceOption,
    handler: &str,
    supported: impl FnOnce() -> Result<(), String>,
) -> Result<Option<UserNamespace>, Status> {
    let Some(u) = &options.userns_options else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(Status::invalid_argument(
                    "userns_options: mode NODE (the node's user namespace) takes no uid or gid \
                     mappings; use mode POD to map ids",
                ));
            }
            return Ok(None);
        }
        Ok(NamespaceMode::Pod) => {}
        _ => {
            return Err(Status::invalid_argument(format!(
                "userns_options: mode {} is not a user namespace mode; a user namespace is the \
                 whole sandbox's (POD) or the node's (NODE)",
                mode_name(u.mode)
            )))
        }
    }
    let uids = one_range("uid", &u.uids)?;
    let gids = one_range("gid", &u.gids)?;
    if uids.length != gids.length {
        return Err(Status::invalid_argument(format!(
            "userns_options: the uid mapping maps {} ids and the gid mapping {}; orbit maps \
             as many gids as uids: give both the same length",
            uids.length, gids.length
        )));
    }
    let nodes = |mode: i32| mode == NamespaceMode::Node as i32;
    if nodes(options.network) || nodes(options.pid) || nodes(options.ipc) {
        return Err(Status::invalid_argument(
            "a sandbox with a user namespace (hostUsers: false) cannot share the node's \
             network, pid or ipc namespace",
        ));
    }
    match handler {
        "ns" => supported().map_err(|e| {
            Status::failed_precondition(format!(
                "this host cannot run sandboxes with a user namespace: {e}"
            ))
        })?,
        "fly" => {
            return Err(Status::invalid_argument(
                "runtime handler fly runs pods in the node's namespaces, its user namespace \
                 too: use the ns handler for a sandbox with a user namespace",
            ))
        }
        "kvm" => {
            return Err(Status::invalid_argument(
                "runtime handler kvm does not make user namespaces: each sandbox has a kernel \
                 of its own in its VM, which is its boundary; use the ns handler for a \
                 sandbox with a user namespace, or leave hostUsers unset with kvm",
            ))
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "runtime handler {other} does not support user namespaces (Status lists the \
                 handlers that do); use the ns handler"
            )))
        }
    }
    Ok(Some(UserNamespace {
        uid_base: uids.host_id,
        gid_base: gids.host_id,
        size: uids.length,
    }))
}

/// The mappings of a pod's user namespace as the CRI writes them.
fn mappings(base: u32, size: u32) -> Vec<proto::IdMapping> {
    vec![proto::IdMapping {
        host_id: base,
        container_id: 0,
        length: size,
    }]
}

/// The sandbox's user namespace as PodSandboxStatus reports it: mode POD with the mapping
/// the pod runs with.
pub fn reported(ns: &UserNamespace) -> proto::UserNamespace {
    proto::UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: mappings(ns.uid_base, ns.size),
        gids: mappings(ns.gid_base, ns.size),
    }
}

/// Checks container `config` against its sandbox's user namespace `pod` (`None`: the
/// node's): its own `userns_options`, if any, must name the sandbox's; a privileged
/// container is refused in one (the kubelet does not send it: a user namespace pod is
/// never privileged), and so are devices; and an idmapped mount (`uidMappings`/`gidMappings`) must use the
/// sandbox's own mapping, the only one orbit idmaps with.
pub fn check_container(
    pod: Option<&UserNamespace>,
    config: &proto::ContainerConfig,
) -> Result<(), Status> {
    let sec = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let asked = sec
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    match (asked, pod) {
        (None, _) => {}
        (Some(u), None) if u.mode == NamespaceMode::Node as i32 => {}
        (Some(u), Some(ns)) if u.mode == NamespaceMode::Pod as i32 => {
            let same = |m: &[proto::IdMapping], base: u32| {
                m.is_empty() || m == mappings(base, ns.size).as_slice()
            };
            if !same(&u.uids, ns.uid_base) || !same(&u.gids, ns.gid_base) {
                return Err(Status::invalid_argument(
                    "the container's userns_options map other ids than its sandbox's user \
                     namespace; a container runs in its sandbox's: send the sandbox's mappings",
                ));
            }
        }
        (Some(u), ns) => {
            return Err(Status::invalid_argument(format!(
                "the container asks for user namespace mode {} in a sandbox {}; a container \
                 runs in its sandbox's user namespace",
                mode_name(u.mode),
                if ns.is_some() {
                    "with a user namespace (POD)"
                } else {
                    "in the node's user namespace (NODE)"
                }
            )))
        }
    }
    if pod.is_some() && !config.devices.is_empty() {
        // The pod's device ceiling is set when it starts, before its containers are known.
        return Err(Status::invalid_argument(
            "devices for a container in a sandbox with a user namespace (hostUsers: false) \
             are not supported yet: run the pod with the node's user namespace",
        ));
    }
    if pod.is_some() && sec.is_some_and(|s| s.privileged) {
        return Err(Status::invalid_argument(
            "a privileged container cannot run in a sandbox with a user namespace \
             (hostUsers: false): drop privileged, or run the pod with the node's user \
             namespace",
        ));
    }
    for m in &config.mounts {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
            continue;
        }
        let Some(ns) = pod else {
            return Err(Status::invalid_argument(format!(
                "mount {}: uid/gid mappings (an idmapped mount) need a sandbox with a user \
                 namespace",
                m.host_path
            )));
        };
        if m.uid_mappings != mappings(ns.uid_base, ns.size)
            || m.gid_mappings != mappings(ns.gid_base, ns.size)
        {
            return Err(Status::invalid_argument(format!(
                "mount {}: its uid/gid mappings differ from the sandbox's user namespace \
                 ({}+{} for uids, {}+{} for gids); orbit idmaps a mount with the sandbox's \
                 own mapping, as the kubelet sends it",
                m.host_path, ns.uid_base, ns.size, ns.gid_base, ns.size
            )));
        }
    }
    Ok(())
}

/// Refuses a privileged sandbox with a user namespace (its containers could not be).
pub fn check_sandbox(
    ns: Option<&UserNamespace>,
    linux: &proto::LinuxPodSandboxConfig,
) -> Result<(), Status> {
    let privileged = linux
        .security_context
        .as_ref()
        .is_some_and(|s| s.privileged);
    if ns.is_some() && privileged {
        return Err(Status::invalid_argument(
            "a privileged sandbox cannot have a user namespace (hostUsers: false): drop one",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, length: u32) -> proto::IdMapping {
        proto::IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    fn pod(uids: Vec<proto::IdMapping>, gids: Vec<proto::IdMapping>) -> proto::NamespaceOption {
        proto::NamespaceOption {
            userns_options: Some(proto::UserNamespace {
                mode: NamespaceMode::Pod as i32,
                uids,
                gids,
            }),
            ..Default::default()
        }
    }

    fn asked(o: &proto::NamespaceOption) -> Result<Option<UserNamespace>, Status> {
        for_sandbox(o, "ns", || Ok(()))
    }

    #[test]
    fn the_kubelets_mapping_becomes_the_pods() {
        let o = pod(vec![range(0, 1000, 100000)], vec![range(0, 2000, 100000)]);
        assert_eq!(
            asked(&o).unwrap(),
            Some(UserNamespace {
                uid_base: 1000,
                gid_base: 2000,
                size: 100000
            })
        );
        assert_eq!(asked(&proto::NamespaceOption::default()).unwrap(), None);
    }

    #[test]
    fn mappings_orbit_cannot_honour_are_refused_by_name() {
        let refused = |o: proto::NamespaceOption, needle: &str| {
            let e = asked(&o).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(needle), "{needle}: {}", e.message());
        };
        let ok = || vec![range(0, 1000, 65536)];
        refused(
            pod(vec![range(0, 1000, 100), range(0, 2000, 100)], ok()),
            "2 uid mappings",
        );
        refused(pod(vec![range(1, 1000, 65536)], ok()), "container id 1");
        refused(pod(ok(), vec![]), "needs a gid mapping");
        refused(pod(vec![range(0, 1000, 0)], ok()), "length 0");
        refused(
            pod(vec![range(0, u32::MAX - 10, 11)], ok()),
            "past the last valid host id",
        );
        refused(pod(vec![range(0, 0, 65536)], ok()), "host id 0");
        refused(pod(ok(), vec![range(0, 1000, 100)]), "the same length");
        let mut host_net = pod(ok(), ok());
        host_net.network = NamespaceMode::Node as i32;
        refused(host_net, "cannot share the node's");
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let o = proto::NamespaceOption {
                userns_options: Some(proto::UserNamespace {
                    mode: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            };
            refused(o, mode.as_str_name());
        }
        let node_with_ids = proto::NamespaceOption {
            userns_options: Some(proto::UserNamespace {
                mode: NamespaceMode::Node as i32,
                uids: ok(),
                gids: ok(),
            }),
            ..Default::default()
        };
        refused(node_with_ids, "takes no uid or gid");
    }

    #[test]
    fn only_the_ns_handler_makes_user_namespaces() {
        let o = pod(vec![range(0, 1000, 65536)], vec![range(0, 1000, 65536)]);
        for h in ["fly", "kvm", "external"] {
            let e = for_sandbox(&o, h, || Ok(())).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{h}: {e:?}");
            assert!(e.message().contains("ns handler"), "{h}: {e:?}");
        }
        let e = for_sandbox(&o, "ns", || Err("no idmapped mounts".into())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("no idmapped mounts"), "{e:?}");
        // The node's user namespace needs no support at all.
        let node = proto::NamespaceOption {
            userns_options: Some(proto::UserNamespace {
                mode: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            for_sandbox(&node, "kvm", || Err("no".into())).unwrap(),
            None
        );
    }
}
