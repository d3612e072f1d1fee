//! An app's confinement (see `orbit_stage1::confine`, shared with the kvm guest agent),
//! applied in the same order to the app itself and to every process `orbit enter` runs in
//! it, so an entered process never has more than the app.

use orbit_stage1::App;

/// Marks this process non-dumpable: processes of the pod (without CAP_SYS_PTRACE) can then
/// neither ptrace it nor open its `/proc/<pid>/exe` — which, before `execve`, is the host's
/// orbit binary.
pub fn not_dumpable() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Drops to the app's identity and privileges; the caller execs right after. Without a
/// device cgroup to refuse opening them (neither the v1 devices controller nor a pure
/// cgroup2 host, whose app cgroups get a BPF device program), a node the app makes could be
/// a host disk: no CAP_MKNOD then.
/// `filter` is the app's compiled seccomp filter ([`seccomp_filter`]).
pub fn confine(
    app: &App,
    filter: Option<&[orbit_stage1::seccomp::BpfProgram]>,
) -> Result<(), String> {
    orbit_stage1::confine::confine_compiled(
        &app.user,
        &app.isolators,
        crate::devices::enforced(),
        filter,
    )
}

/// The app's seccomp filter, compiled (`None`: the app has none).
pub fn seccomp_filter(app: &App) -> Result<Option<Vec<orbit_stage1::seccomp::BpfProgram>>, String> {
    orbit_stage1::confine::compile_filter(&app.isolators)
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
