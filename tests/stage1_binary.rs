//! The built-in stage1s are a binary of their own (issue 20): stage0 runs `orbit-stage1`
//! from beside `orbit` for every entrypoint, so a pod's supervisor and init are that small
//! binary, never the big one; without it, orbit says which file is missing and how to put
//! it there, and leaves nothing behind. Runs as root.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{orbit_bin, text, World};
use pods_common::*;

/// The built-in stage1 binary the orbit under test must run.
fn stage1_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_orbit-stage1"));
    assert_eq!(
        p.parent(),
        orbit_bin().parent(),
        "cargo puts orbit-stage1 beside orbit"
    );
    fs::canonicalize(p).unwrap()
}

/// The executable of process `pid`, and its command line.
fn exe_and_cmdline(pid: u32) -> (PathBuf, Vec<String>) {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = text(&fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    (exe, cmdline)
}

#[test]
fn a_pods_supervisor_and_init_are_the_stage1_binary() {
    let w = pod_world();
    for flavor in ["ns", "fly"] {
        let pod = BgPod::start(
            &w,
            &[
                "--stage1-name",
                flavor,
                BUSYBOX,
                "--exec",
                "/bin/sleep",
                "--",
                "1000",
            ],
        );
        // `orbit run` exec'd the stage1: the same process, now the pod's supervisor.
        let (exe, cmdline) = exe_and_cmdline(pod.run_pid());
        assert_eq!(exe, stage1_bin(), "{flavor} supervisor runs {cmdline:?}");
        assert_eq!(
            cmdline[1..4],
            [
                flavor.to_string(),
                "run".to_string(),
                format!("--uuid={}", pod.uuid)
            ],
            "the interface's arguments, nothing before them"
        );
        // The pod's init (the pid stage1 reports for `enter`) is a child of it, not a
        // re-exec of orbit.
        let init = status_json(&w, &pod.uuid)["pid"]
            .as_u64()
            .expect("a running pod reports its init's pid") as u32;
        assert_ne!(init, pod.run_pid());
        assert_eq!(exe_and_cmdline(init).0, stage1_bin(), "{flavor} init");
        // The other entrypoints go through it too: enter and stop work.
        let o = orbit(&w, &["enter", &pod.uuid, "/bin/cat", "/etc/motd"]);
        assert_eq!(code(&o), 0, "{}", text(&o.stderr));
        out_ok(&w, &["stop", "--timeout", "10s", &pod.uuid]);
        let mut pod = pod;
        pod.wait(Duration::from_secs(10));
    }
}

/// A copy of the orbit under test in a directory of its own, without `orbit-stage1`.
fn lone_orbit(w: &World) -> PathBuf {
    let dir = w.path("lone-bin");
    fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("orbit");
    if fs::hard_link(orbit_bin(), &copy).is_err() {
        fs::copy(orbit_bin(), &copy).unwrap();
    }
    copy
}

/// `BIN ARGS` with the world's store, config and environment.
fn run_with(bin: &Path, w: &World, args: &[&str]) -> Output {
    let base = w.cmd(args);
    let mut c = Command::new(bin);
    c.args(base.get_args());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    output_within(c, DEADLINE)
}

/// Asserts `o` failed naming the missing binary and the fix.
fn assert_names_missing_stage1(o: &Output, missing: &Path, what: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{what} should fail: {err}");
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("install"),
        "{what}: the error should name {} and the fix: {err}",
        missing.display()
    );
}

#[test]
fn without_the_stage1_binary_orbit_says_so_and_leaves_nothing() {
    let w = pod_world();
    let lone = lone_orbit(&w);
    let missing = lone.with_file_name("orbit-stage1");
    // run and prepare are refused before a pod is made, for every built-in flavor.
    for flavor in ["ns", "fly", "kvm"] {
        let o = run_with(
            &lone,
            &w,
            &[
                "run",
                "--stage1-name",
                flavor,
                BUSYBOX,
                "--exec",
                "/bin/true",
            ],
        );
        assert_eq!(code(&o), 125, "{}", text(&o.stderr));
        assert_names_missing_stage1(&o, &missing, &format!("run ({flavor})"));
    }
    let o = run_with(&lone, &w, &["prepare", BUSYBOX, "--exec", "/bin/true"]);
    assert_names_missing_stage1(&o, &missing, "prepare");
    assert_no_pods(&w);

    // A pod started by a complete installation: the lone orbit can neither enter nor stop
    // it, and says why; the pod keeps running.
    let mut pod = BgPod::start(&w, &[BUSYBOX, "--exec", "/bin/sleep", "--", "1000"]);
    let o = run_with(&lone, &w, &["enter", &pod.uuid, "/bin/true"]);
    assert_names_missing_stage1(&o, &missing, "enter");
    let o = run_with(&lone, &w, &["stop", "--force", &pod.uuid]);
    assert_names_missing_stage1(&o, &missing, "stop --force");
    assert_eq!(status_json(&w, &pod.uuid)["state"], "running");
    out_ok(&w, &["stop", "--timeout", "10s", &pod.uuid]);
    pod.wait(Duration::from_secs(10));

    // Its garbage is kept (not half removed without the stage1's gc) until orbit is whole.
    let o = run_with(&lone, &w, &["gc", "--grace-period=0"]);
    assert!(
        text(&o.stdout).contains(&missing.display().to_string())
            || text(&o.stderr).contains(&missing.display().to_string()),
        "gc should say why it kept the pod:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(pod_dirs(&w).len(), 1, "{:?}", pod_dirs(&w));
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}
