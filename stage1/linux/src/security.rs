//! An app's confinement, applied in the same order to the app itself and to every process
//! `orbit enter` runs in it, so an entered process never has more than the app: capability
//! bounding set, identity, effective/permitted/inheritable/ambient capabilities,
//! no_new_privs, and last the seccomp filter (right before `execve`) — or first, for an app
//! without no_new_privs, which could not load it after giving up CAP_SYS_ADMIN.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};

use orbit_stage1::App;

/// Marks this process non-dumpable: processes of the pod (without CAP_SYS_PTRACE) can then
/// neither ptrace it nor open its `/proc/<pid>/exe` — which, before `execve`, is the host's
/// orbit binary.
pub fn not_dumpable() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

fn cap_set(names: &[String]) -> Result<CapsHashSet, String> {
    names
        .iter()
        .map(|n| Capability::from_str(n).map_err(|_| format!("unknown capability {n}")))
        .collect()
}

/// Drops to the app's identity and privileges; the caller execs right after.
pub fn confine(app: &App) -> Result<(), String> {
    let iso = &app.isolators;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the app may not
    // keep: then the filter goes in first, while this process still holds it (as runc
    // does), and covers the identity and capability changes that follow.
    let filter_first = !iso.no_new_privileges;
    if let (true, Some(filter)) = (filter_first, &iso.seccomp) {
        let programs = orbit_stage1::seccomp::compile(filter)?;
        orbit_stage1::seccomp::apply(&programs, false)?;
    }
    // Nothing can be granted beyond what this process holds (a privileged pod started from a
    // process that lacks, say, CAP_SYS_RESOURCE gets everything else).
    let held = caps::read(None, CapSet::Permitted)
        .map_err(|e| format!("cannot read capabilities: {e}"))?;
    let mut bounding: CapsHashSet = cap_set(&iso.capabilities)?
        .intersection(&held)
        .copied()
        .collect();
    // Without a device cgroup to refuse opening them (neither the v1 devices controller nor
    // a pure cgroup2 host, whose app cgroups get a BPF device program), a node the app makes
    // could be a host disk: no CAP_MKNOD.
    if !iso.all_devices && !crate::devices::enforced() {
        bounding.remove(&caps::Capability::CAP_MKNOD);
    }
    let ambient: CapsHashSet = cap_set(&iso.ambient_capabilities)?
        .intersection(&held)
        .copied()
        .collect();
    for c in caps::all() {
        if !bounding.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("cannot drop {c} from the bounding set: {e}"))?;
        }
    }
    let non_root = app.user.uid != 0;
    if non_root && !ambient.is_empty() {
        // Keep the permitted set across setuid so the granted capabilities can be raised.
        // SAFETY: prctl(PR_SET_KEEPCAPS, 1) has no memory effects.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    set_identity(app)?;
    let kept = if non_root { ambient.clone() } else { bounding };
    caps::set(None, CapSet::Effective, &kept)
        .map_err(|e| format!("cannot set effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &kept)
        .map_err(|e| format!("cannot set permitted capabilities: {e}"))?;
    // Inheritable holds only what must survive exec as ambient (empty for root apps), so a
    // file with inheritable capabilities gains nothing (moby's CVE-2022-24769).
    caps::set(
        None,
        CapSet::Inheritable,
        &if non_root {
            ambient.clone()
        } else {
            CapsHashSet::new()
        },
    )
    .map_err(|e| format!("cannot set inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("cannot clear ambient capabilities: {e}"))?;
    if non_root {
        for c in &ambient {
            caps::raise(None, CapSet::Ambient, *c)
                .map_err(|e| format!("cannot raise ambient {c}: {e}"))?;
        }
    }
    if iso.no_new_privileges {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "cannot set no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let (false, Some(filter)) = (filter_first, &iso.seccomp) {
        let programs = orbit_stage1::seccomp::compile(filter)?;
        orbit_stage1::seccomp::apply(&programs, true)?;
    }
    Ok(())
}

fn set_identity(app: &App) -> Result<(), String> {
    let gid = Gid::from_raw(app.user.gid);
    let gids: Vec<Gid> = std::iter::once(app.user.gid)
        .chain(app.user.additional_gids.iter().copied())
        .map(Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", app.user.gid))?;
    let uid = Uid::from_raw(app.user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", app.user.uid))
}

/// Sets the app's OOM score adjustment (before privileges are dropped: lowering it needs
/// CAP_SYS_RESOURCE).
pub fn oom_score_adj(app: &App) -> Result<(), String> {
    match app.isolators.resources.oom_score_adj {
        Some(adj) => std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("cannot set oom_score_adj {adj}: {e}")),
        None => Ok(()),
    }
}
