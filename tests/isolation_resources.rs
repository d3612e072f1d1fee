//! Isolation, resources (issue 5): per-app cgroup limits are real — memory (an app allocating
//! past `--memory` is OOM-killed and reported as such), pids (a fork loop stops at
//! `--pids-limit`), CPU (a busy loop is throttled to `--cpu`; `--cpu-shares` is written) —
//! the pod cgroup carries the sums, and every cgroup is gone after the pod exits.
//! Reads the cgroup files from the host, v1 or v2. Runs as root.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::World;
use pods_common::*;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------- finding cgroups from the host

/// A mounted cgroup hierarchy: where it is mounted, the cgroup path of its mount root, and
/// its controllers (empty for cgroup2, whose controllers are in `cgroup.controllers`).
#[derive(Debug)]
struct CgMount {
    point: PathBuf,
    root: String,
    v2: bool,
    controllers: Vec<String>,
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// The cgroup mounts of this process's mount namespace.
fn cgroup_mounts() -> Vec<CgMount> {
    let mut out = Vec::new();
    for l in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (fstype, opts) = (post[0], post.get(2).copied().unwrap_or(""));
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        out.push(CgMount {
            point: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            v2: fstype == "cgroup2",
            controllers: opts.split(',').map(String::from).collect(),
        });
    }
    out
}

/// The host directory of process `pid`'s cgroup for `controller` (v1 hierarchy carrying it,
/// else the cgroup2 hierarchy if it has the controller enabled).
fn cgroup_dir(pid: i64, controller: &str) -> PathBuf {
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
    let mounts = cgroup_mounts();
    let resolve = |m: &CgMount, path: &str| -> PathBuf {
        let rel = path
            .strip_prefix(m.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        m.point.join(rel)
    };
    // v1: "N:ctrl1,ctrl2:/path"
    for l in own.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            let m = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                .unwrap_or_else(|| panic!("no mount for the v1 {controller} hierarchy"));
            return resolve(m, path);
        }
    }
    // v2: "0::/path", on a mount that has the controller enabled.
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup:\n{own}"));
    for m in mounts.iter().filter(|m| m.v2) {
        let ctrls = fs::read_to_string(m.point.join("cgroup.controllers")).unwrap_or_default();
        let nested = controller == "cpuacct" || ctrls.split_whitespace().any(|c| c == controller);
        if nested {
            return resolve(m, path);
        }
    }
    panic!("no hierarchy carries {controller}: {own}");
}

fn v2_dir(dir: &Path) -> bool {
    dir.join("cgroup.controllers").exists()
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// The memory limit of a cgroup directory (`None` when unlimited).
fn memory_limit(dir: &Path) -> Option<u64> {
    let (file, max) = if v2_dir(dir) {
        ("memory.max", "max")
    } else {
        ("memory.limit_in_bytes", "")
    };
    let v = read(dir, file);
    if v == max {
        return None;
    }
    let n: u64 = v.parse().unwrap();
    // v1 shows "unlimited" as the largest page-aligned i64.
    (n < 1 << 62).then_some(n)
}

/// (quota µs or None, period µs) of a cgroup directory.
fn cpu_quota(dir: &Path) -> (Option<i64>, u64) {
    if v2_dir(dir) {
        let v = read(dir, "cpu.max");
        let (q, p) = v.split_once(' ').unwrap();
        (q.parse().ok(), p.parse().unwrap())
    } else {
        let q: i64 = read(dir, "cpu.cfs_quota_us").parse().unwrap();
        (
            (q >= 0).then_some(q),
            read(dir, "cpu.cfs_period_us").parse().unwrap(),
        )
    }
}

fn cpu_shares(dir: &Path) -> u64 {
    let file = if v2_dir(dir) {
        "cpu.weight"
    } else {
        "cpu.shares"
    };
    read(dir, file).parse().unwrap()
}

fn pids_max(dir: &Path) -> Option<u64> {
    read(dir, "pids.max").parse().ok()
}

/// CPU time used by a cgroup so far.
fn cpu_usage(dir: &Path) -> Duration {
    if v2_dir(dir) {
        let stat = read(dir, "cpu.stat");
        let us = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap()
            .parse()
            .unwrap();
        Duration::from_micros(us)
    } else {
        Duration::from_nanos(read(dir, "cpuacct.usage").parse().unwrap())
    }
}

/// The host pid of app `app` of a running pod.
fn app_pid(w: &World, uuid: &str, app: &str) -> i64 {
    let st = status_json(w, uuid);
    let a = st["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app)
        .unwrap_or_else(|| panic!("no app {app}: {st:#}"));
    a["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("app {app} has no pid: {st:#}"))
}

/// The app's cgroup for `controller`, asserting it is `…/orbit/<uuid>/<app>`.
fn app_cgroup(w: &World, uuid: &str, app: &str, controller: &str) -> PathBuf {
    let dir = cgroup_dir(app_pid(w, uuid, app), controller);
    assert!(
        dir.ends_with(format!("orbit/{uuid}/{app}")),
        "app {app} of pod {uuid} is not in its own {controller} cgroup: {}",
        dir.display()
    );
    dir
}

/// Every directory named `uuid` in any mounted cgroup hierarchy.
fn cgroups_named(uuid: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if e.file_name() == name {
                    out.push(e.path());
                }
                walk(&e.path(), name, out);
            }
        }
    }
    let mut out = Vec::new();
    for m in cgroup_mounts() {
        walk(&m.point, uuid, &mut out);
    }
    out
}

/// Asserts that no hierarchy holds a cgroup of the pod any more.
fn assert_cgroups_gone(uuid: &str) {
    let left = cgroups_named(uuid);
    assert!(
        left.is_empty(),
        "cgroups of pod {uuid} left behind: {left:#?}"
    );
}

/// The app of a finished pod in `orbit status --format json`.
fn exited_app(w: &World, uuid: &str, app: &str) -> Value {
    let st = status_json(w, uuid);
    st["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == app)
        .unwrap_or_else(|| panic!("no app {app}: {st:#}"))
        .clone()
}

/// The UUID of the only pod in the store that is not in `known`.
fn new_pod(w: &World, known: &mut Vec<String>) -> String {
    let fresh: Vec<String> = pod_dirs(w)
        .into_iter()
        .map(|(_, u)| u)
        .filter(|u| !known.contains(u))
        .collect();
    assert_eq!(fresh.len(), 1, "expected one new pod: {fresh:?}");
    known.push(fresh[0].clone());
    fresh[0].clone()
}

// ---------------------------------------------------------------- memory

/// Allocates `mib` MiB in the app's own process: `tail` keeps a newline-less input whole in
/// memory, and `exec` makes it the app's process, so an OOM kill is the app's SIGKILL.
fn hog_script(mib: u64) -> String {
    format!(
        "mkfifo /tmp/f && {{ dd if=/dev/zero bs=1M count={mib} 2>/dev/null > /tmp/f & }} && exec tail /tmp/f"
    )
}

#[test]
fn memory_limit_is_set_and_past_it_the_app_is_oom_killed() {
    let w = pod_world();

    // While running: the app cgroup's limit is exactly --memory, swap included (v1 memsw /
    // v2 swap.max), and the pod cgroup (its only app) has the same.
    {
        let mut pod = BgPod::start(
            &w,
            &[
                BUSYBOX,
                "--name",
                "m",
                "--memory=32M",
                "--exec",
                "/bin/sleep",
                "--",
                "300",
            ],
        );
        let dir = app_cgroup(&w, &pod.uuid, "m", "memory");
        assert_eq!(memory_limit(&dir), Some(32 * MIB), "{}", dir.display());
        if v2_dir(&dir) {
            if dir.join("memory.swap.max").exists() {
                assert_eq!(read(&dir, "memory.swap.max"), "0");
            }
        } else if dir.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(&dir, "memory.memsw.limit_in_bytes"),
                (32 * MIB).to_string()
            );
        }
        assert_eq!(memory_limit(dir.parent().unwrap()), Some(32 * MIB));
        out_ok(&w, &["stop", "--timeout", "10s", &pod.uuid]);
        pod.wait(DEADLINE);
        assert_cgroups_gone(&pod.uuid);
    }
    let mut known: Vec<String> = pod_dirs(&w).into_iter().map(|(_, u)| u).collect();

    // 128 MiB under a 32 MiB limit: killed by the kernel, reported as OOMKilled.
    let script = hog_script(128);
    let args = |mem: &'static str| -> Vec<String> {
        [
            BUSYBOX, "--name", "hog", mem, "--exec", "/bin/sh", "--", "-c", &script,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("--memory=32M");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run_expect(&w, &a, 137);
    let uuid = new_pod(&w, &mut known);
    let app = exited_app(&w, &uuid, "hog");
    assert_eq!(app["exitCode"], 137, "{app:#}");
    assert_eq!(app["signal"], 9, "{app:#}");
    assert_eq!(app["reason"], "OOMKilled", "{app:#}");
    assert_cgroups_gone(&uuid);

    // The same with room to spare succeeds (and all 128 MiB went through).
    let a = args("--memory=512M");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = run_expect(&w, &a, 0);
    assert_eq!(
        out.len() as u64,
        128 * MIB,
        "tail should print its whole input"
    );
    let uuid = new_pod(&w, &mut known);
    let app = exited_app(&w, &uuid, "hog");
    assert!(app.get("reason").is_none_or(|r| r.is_null()), "{app:#}");

    // A SIGKILL that is not the OOM killer's is not reported as one.
    run_expect(
        &w,
        &[
            BUSYBOX,
            "--name",
            "hog",
            "--memory=32M",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "kill -9 $$",
        ],
        137,
    );
    let uuid = new_pod(&w, &mut known);
    let app = exited_app(&w, &uuid, "hog");
    assert_eq!(app["signal"], 9, "{app:#}");
    assert!(app.get("reason").is_none_or(|r| r.is_null()), "{app:#}");
    assert_cgroups_gone(&uuid);
}

// ---------------------------------------------------------------- pids

#[test]
fn pids_limit_stops_a_fork_loop_and_the_pod_stays_controllable() {
    let w = pod_world();
    // A subshell forks 100 sleepers until fork fails; the app's shell survives it, says so
    // (a builtin, no fork needed) and becomes a sleeper itself.
    let script = "( i=0; while [ $i -lt 100 ]; do sleep 300 & i=$((i+1)); done ); \
                  echo forks-done; exec sleep 300";
    let mut pod = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--name",
            "bomb",
            "--pids-limit=20",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
        ],
    );
    let uuid = pod.uuid.clone();
    poll(Duration::from_secs(20), "the fork loop to give up", || {
        cri_log(&w, &uuid, "bomb")
            .iter()
            .any(|(_, _, _, t)| t == "forks-done")
            .then_some(())
    });
    let log = cri_log(&w, &uuid, "bomb");
    assert!(
        log.iter()
            .any(|(_, s, _, t)| s == "stderr" && t.contains("can't fork")),
        "the shell should have failed to fork: {log:#?}"
    );
    let dir = app_cgroup(&w, &uuid, "bomb", "pids");
    assert_eq!(pids_max(&dir), Some(20));
    assert_eq!(pids_max(dir.parent().unwrap()), Some(20), "pod: the sum");
    let current: u64 = read(&dir, "pids.current").parse().unwrap();
    assert!(
        (2..=20).contains(&current),
        "pids.current {current} should be at most the limit"
    );
    let sleepers = procs_with("sleep 300")
        .into_iter()
        .filter(|(p, _)| {
            fs::read_to_string(format!("/proc/{p}/cgroup"))
                .map(|c| c.contains(&uuid))
                .unwrap_or(false)
        })
        .count();
    assert!(
        (1..=20).contains(&sleepers),
        "{sleepers} sleepers in the pod: the limit is 20"
    );

    // The host still forks, and the pod still obeys orbit.
    let o = Command::new("/bin/true").output().expect("host fork");
    assert!(o.status.success());
    out_ok(&w, &["stop", "--timeout", "10s", &uuid]);
    let e = pod.wait(DEADLINE);
    assert_eq!(e.status.code(), Some(143), "{}", e.stderr);
    assert_pod_gone(&uuid, None);
    assert_cgroups_gone(&uuid);
}

// ---------------------------------------------------------------- cpu

#[test]
fn cpu_quota_throttles_a_busy_loop_and_shares_are_set() {
    let w = pod_world();
    let busy = ["--exec", "/bin/sh", "--", "-c", "while :; do :; done"];
    let mut limited_args = vec![BUSYBOX, "--name", "slow", "--cpu=100", "--cpu-shares=512"];
    limited_args.extend_from_slice(&busy);
    let mut free_args = vec![BUSYBOX, "--name", "fast"];
    free_args.extend_from_slice(&busy);
    let limited = BgPod::start(&w, &limited_args);
    let free = BgPod::start(&w, &free_args);

    let slow = app_cgroup(&w, &limited.uuid, "slow", "cpu");
    let (quota, period) = cpu_quota(&slow);
    assert_eq!(
        (quota, period),
        (Some(10_000), 100_000),
        "{}",
        slow.display()
    );
    let expected_shares = if v2_dir(&slow) {
        1 + (510 * 9999) / 262_142
    } else {
        512
    };
    assert_eq!(cpu_shares(&slow), expected_shares);
    assert_eq!(cpu_quota(slow.parent().unwrap()), (Some(10_000), 100_000));
    let fast = app_cgroup(&w, &free.uuid, "fast", "cpu");
    assert_eq!(cpu_quota(&fast).0, None, "no --cpu: no quota");

    // Both hog the CPU over the same second of wall time (a measurement window, not a wait
    // for anything).
    let slow_acct = app_cgroup(&w, &limited.uuid, "slow", "cpuacct");
    let fast_acct = app_cgroup(&w, &free.uuid, "fast", "cpuacct");
    let (s0, f0, t0) = (cpu_usage(&slow_acct), cpu_usage(&fast_acct), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let (s1, f1, wall) = (cpu_usage(&slow_acct), cpu_usage(&fast_acct), t0.elapsed());
    let (slow_cpu, fast_cpu) = (s1 - s0, f1 - f0);
    assert!(
        slow_cpu <= wall.mul_f64(0.25),
        "--cpu=100 got {slow_cpu:?} of CPU in {wall:?}"
    );
    // The unlimited loop's share depends on what else runs on the machine (other tests run
    // in parallel): compare it with the capped one rather than with the wall clock.
    assert!(
        fast_cpu > slow_cpu * 2,
        "an unlimited busy loop got only {fast_cpu:?} in {wall:?} (limited: {slow_cpu:?})"
    );

    let uuids = [limited.uuid.clone(), free.uuid.clone()];
    drop(limited);
    drop(free);
    for u in &uuids {
        assert_cgroups_gone(u);
    }
}

// ---------------------------------------------------------------- the pod's sums

#[test]
fn pod_cgroup_limits_are_the_sums_of_its_apps() {
    let w = pod_world();
    let sleep = ["--exec", "/bin/sleep", "--", "300"];
    let mut args = vec![
        BUSYBOX,
        "--name",
        "a",
        "--memory=32M",
        "--cpu=100",
        "--cpu-shares=300",
        "--pids-limit=10",
    ];
    args.extend_from_slice(&sleep);
    args.extend_from_slice(&[
        "---",
        BUSYBOX,
        "--name",
        "b",
        "--memory=48M",
        "--cpu=250",
        "--cpu-shares=700",
        "--pids-limit=15",
    ]);
    args.extend_from_slice(&sleep);
    let pod = BgPod::start(&w, &args);
    let a = app_cgroup(&w, &pod.uuid, "a", "memory");
    let b = app_cgroup(&w, &pod.uuid, "b", "memory");
    assert_eq!(memory_limit(&a), Some(32 * MIB));
    assert_eq!(memory_limit(&b), Some(48 * MIB));
    assert_eq!(memory_limit(a.parent().unwrap()), Some(80 * MIB));
    assert_eq!(a.parent(), b.parent());

    let (ca, cb) = (
        app_cgroup(&w, &pod.uuid, "a", "cpu"),
        app_cgroup(&w, &pod.uuid, "b", "cpu"),
    );
    assert_eq!(cpu_quota(&ca), (Some(10_000), 100_000));
    assert_eq!(cpu_quota(&cb), (Some(25_000), 100_000));
    assert_eq!(cpu_quota(ca.parent().unwrap()), (Some(35_000), 100_000));
    if !v2_dir(&ca) {
        assert_eq!(cpu_shares(&ca), 300);
        assert_eq!(cpu_shares(&cb), 700);
        assert_eq!(cpu_shares(ca.parent().unwrap()), 1000);
    }

    let (pa, pb) = (
        app_cgroup(&w, &pod.uuid, "a", "pids"),
        app_cgroup(&w, &pod.uuid, "b", "pids"),
    );
    assert_eq!(pids_max(&pa), Some(10));
    assert_eq!(pids_max(&pb), Some(15));
    assert_eq!(pids_max(pa.parent().unwrap()), Some(25));
    let uuid = pod.uuid.clone();
    drop(pod);
    assert_cgroups_gone(&uuid);

    // One app without a memory limit: the pod has none (but a and c still do).
    let pod = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--name",
            "a",
            "--memory=32M",
            "--pids-limit=10",
            "--exec",
            "/bin/sleep",
            "--",
            "300",
            "---",
            BUSYBOX,
            "--name",
            "c",
            "--pids-limit=5",
            "--exec",
            "/bin/sleep",
            "--",
            "300",
        ],
    );
    let a = app_cgroup(&w, &pod.uuid, "a", "memory");
    let c = app_cgroup(&w, &pod.uuid, "c", "memory");
    assert_eq!(memory_limit(&a), Some(32 * MIB));
    assert_eq!(memory_limit(&c), None);
    assert_eq!(memory_limit(a.parent().unwrap()), None, "c is unlimited");
    let pa = app_cgroup(&w, &pod.uuid, "a", "pids");
    assert_eq!(pids_max(pa.parent().unwrap()), Some(15));
    let uuid = pod.uuid.clone();
    drop(pod);
    assert_cgroups_gone(&uuid);
}

// ---------------------------------------------------------------- cleanup

#[test]
fn cgroups_are_removed_when_the_pod_exits() {
    let w = pod_world();
    // The app leaves a background child in its cgroup and exits (3) on SIGTERM by itself.
    let mut pod = BgPod::start(
        &w,
        &[
            BUSYBOX,
            "--name",
            "x",
            "--memory=64M",
            "--pids-limit=10",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "trap 'exit 3' TERM; sleep 300 & wait",
        ],
    );
    let uuid = pod.uuid.clone();
    let dir = app_cgroup(&w, &uuid, "x", "memory");
    assert!(dir.is_dir());
    let all = cgroups_named(&uuid);
    assert!(
        all.len() >= 2,
        "the pod cgroup should exist in every hierarchy used: {all:#?}"
    );
    out_ok(&w, &["stop", "--timeout", "10s", &uuid]);
    let e = pod.wait(DEADLINE);
    assert_eq!(e.status.code(), Some(3), "{}", e.stderr);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_cgroups_gone(&uuid);
    assert_pod_gone(&uuid, None);
}

/// Kills process `pid` (the test's own leftover) when dropped, so a failing test leaves
/// nothing running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn what_a_fly_pod_leaves_behind_dies_with_its_cgroups() {
    // fly shares the host's pid namespace: an app's background child outlives the pod's init
    // and only the cgroups' removal ends it (which must kill it, not just try rmdir).
    let w = pod_world();
    let (data, vol) = host_volume(&w, "d", "data");
    let out = orbit(
        &w,
        &[
            "run",
            "--stage1-name",
            "fly",
            "--volume",
            &vol,
            BUSYBOX,
            "--mount",
            "volume=d,target=/data",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /data/pid",
        ],
    );
    let pid: i32 = fs::read_to_string(data.join("pid"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid from the app: {}", common::text(&out.stderr)));
    let _guard = KillOnDrop(pid);
    assert_eq!(code(&out), 0, "{}", common::text(&out.stderr));
    assert!(
        !common::process_alive(pid),
        "the pod's leftover process {pid} still runs"
    );
    let uuid = only_pod(&w);
    assert_cgroups_gone(&uuid);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}
