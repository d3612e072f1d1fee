//! Pods, part 2 (issue 4): the lifecycle — enter, stop / stop --force, status and list,
//! prepare / run-prepared, cat-manifest, gc after kill -9 and after the grace period, logs
//! (CRI format, `orbit logs` options), and 50 concurrent pods next to a gc + list loop.
//! Runs as root.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::text;
use pods_common::*;

const SLEEP: [&str; 4] = ["--exec", "/bin/sh", "--", "-c"];

fn sleeper<'a>(extra: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut v: Vec<&str> = extra.to_vec();
    v.push(BUSYBOX);
    v.extend_from_slice(&SLEEP);
    v.push(script);
    v
}

// ---------------------------------------------------------------- enter, stop

#[test]
fn enter_sees_the_pods_hostname_pid_namespace_and_root() {
    let w = pod_world();
    let pod = BgPod::start(&w, &sleeper(&["--hostname", "enter-host"], "sleep 1000"));
    let o = orbit(
        &w,
        &[
            "enter",
            &pod.uuid,
            "/bin/sh",
            "-c",
            "hostname; echo; cat /proc/1/cmdline; echo; ls /; id -u",
        ],
    );
    assert_eq!(code(&o), 0, "stderr: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("enter-host"), "{out}");
    lines.next();
    let init = lines.next().unwrap_or_default().replace('\0', " ");
    assert!(
        init.contains(&pod.uuid),
        "PID 1 inside is the pod's init (its stage1, with the pod's UUID): {init:?}"
    );
    let rest: Vec<&str> = lines.collect();
    for d in ["bin", "etc", "proc", "dev"] {
        assert!(rest.contains(&d), "the app's root has /{d}: {out}");
    }
    assert!(
        !rest.contains(&"work") && !rest.contains(&"boot"),
        "enter must be in the app's root, not the host's: {out}"
    );
    assert_eq!(rest.last(), Some(&"0"));
    // Exit status passes through; the default command is a shell.
    let o = orbit(&w, &["enter", &pod.uuid, "/bin/sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7, "{}", text(&o.stderr));
    let o = orbit(&w, &["enter", &pod.uuid, "/no/such/binary"]);
    assert_ne!(code(&o), 0);
    // Abbreviated UUID.
    let o = orbit(&w, &["enter", &pod.uuid[..8], "/bin/hostname"]);
    assert_eq!(
        (code(&o), text(&o.stdout)),
        (0, "enter-host\n".to_string()),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn enter_app_picks_the_right_apps_root() {
    let w = pod_world();
    fetch(&w, &layouts().marker);
    let args = [
        "--exec",
        "/bin/sh",
        BUSYBOX,
        "--name",
        "a",
        "--",
        "-c",
        "sleep 1000",
        "---",
        MARKER,
        "--name",
        "b",
        "--",
        "-c",
        "sleep 1000",
    ];
    let pod = BgPod::start(&w, &args);
    let o = orbit(
        &w,
        &["enter", "--app", "b", &pod.uuid, "/bin/cat", "/marker"],
    );
    assert_eq!(
        (code(&o), text(&o.stdout)),
        (0, "marker-image\n".to_string()),
        "{}",
        text(&o.stderr)
    );
    let o = orbit(
        &w,
        &[
            "enter",
            "--app",
            "a",
            &pod.uuid,
            "/bin/sh",
            "-c",
            "test -e /marker && echo has-marker || echo no-marker",
        ],
    );
    assert_eq!(
        (code(&o), text(&o.stdout)),
        (0, "no-marker\n".to_string()),
        "{}",
        text(&o.stderr)
    );
    // Both apps share the pod's pid namespace: a sees b's sleep.
    let o = orbit(
        &w,
        &[
            "enter",
            "--app",
            "a",
            &pod.uuid,
            "/bin/sh",
            "-c",
            "ps -o pid,args | grep -c 'sleep 1000'",
        ],
    );
    let n: i32 = text(&o.stdout).trim().parse().unwrap_or(0);
    assert!(
        n >= 2,
        "a should see both apps' sleeps: {}",
        text(&o.stdout)
    );
    // Without --app in a multi-app pod: a clear error naming the choice.
    let o = orbit(&w, &["enter", &pod.uuid, "/bin/true"]);
    assert_eq!(code(&o), 125);
    assert!(text(&o.stderr).contains("--app"), "{}", text(&o.stderr));
    let o = orbit(&w, &["enter", "--app", "nope", &pod.uuid, "/bin/true"]);
    assert_eq!(code(&o), 125);
    assert!(text(&o.stderr).contains("nope"), "{}", text(&o.stderr));
}

#[test]
fn stop_terminates_and_force_kills() {
    let w = pod_world();
    let mut pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    let st = status_json(&w, &pod.uuid);
    let pidns = pidns_of(st["pid"].as_i64().expect("pid while running")).expect("init alive");
    out_ok(&w, &["stop", &pod.uuid]);
    let e = pod.wait(Duration::from_secs(15));
    assert_eq!(
        e.status.code(),
        Some(143),
        "stop sends SIGTERM: the pod exits 143\n{}",
        e.stderr
    );
    let st = status_json(&w, &pod.uuid);
    assert_eq!(st["state"], "exited", "{st:#}");
    assert_eq!(st["exit_code"], 143, "{st:#}");
    assert!(
        st.get("pid").is_none_or(|p| p.is_null()),
        "no pid once exited: {st:#}"
    );
    assert_pod_gone(&pod.uuid, Some(&pidns));
    // Stopping an exited pod is an error.
    let err = out_125(&w, &["stop", &pod.uuid]);
    assert!(err.contains("not running"), "{err}");

    // An app that ignores SIGTERM: --force kills it.
    let mut pod = BgPod::start(&w, &sleeper(&[], "trap '' TERM; while :; do sleep 1; done"));
    let o = orbit(&w, &["stop", "--timeout", "1s", &pod.uuid]);
    assert_ne!(
        code(&o),
        0,
        "a pod that ignores SIGTERM is still running after the timeout"
    );
    assert_eq!(status_json(&w, &pod.uuid)["state"], "running");
    out_ok(&w, &["stop", "--force", &pod.uuid]);
    let e = pod.wait(Duration::from_secs(15));
    assert_eq!(
        e.status.code(),
        Some(137),
        "stop --force: SIGKILL → 137\n{}",
        e.stderr
    );
    let st = status_json(&w, &pod.uuid);
    assert_eq!(st["state"], "exited", "{st:#}");
    assert_pod_gone(&pod.uuid, None);
}

#[test]
fn sigterm_to_orbit_run_stops_the_pod_cleanly() {
    let w = pod_world();
    let mut pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod.run_pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let e = pod.wait(Duration::from_secs(15));
    assert_eq!(e.status.code(), Some(143), "{}", e.stderr);
    let st = status_json(&w, &pod.uuid);
    assert_eq!(
        (st["state"].as_str(), st["exit_code"].as_i64()),
        (Some("exited"), Some(143)),
        "{st:#}"
    );
    assert_eq!(st["apps"][0]["state"], "exited", "{st:#}");
}

// ---------------------------------------------------------------- status, list

#[test]
fn status_and_list_report_running_and_exited_pods() {
    let w = pod_world();
    let mut pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    let st = status_json(&w, &pod.uuid);
    assert_eq!(st["uuid"], pod.uuid.as_str());
    assert_eq!(st["state"], "running", "{st:#}");
    assert_eq!(st["stage1"], "ns", "{st:#}");
    let pid = st["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("pid while running: {st:#}"));
    assert!(
        fs::metadata(format!("/proc/{pid}")).is_ok(),
        "pid {pid} is a live process"
    );
    assert!(st.get("exit_code").is_none_or(|c| c.is_null()), "{st:#}");
    for k in ["created", "started"] {
        let t = st[k].as_str().unwrap_or_default();
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{k}={t:?}: {e}"));
    }
    let app = &st["apps"][0];
    assert_eq!(app["name"], "busybox", "{st:#}");
    assert_eq!(app["state"], "running", "{st:#}");
    assert_eq!(app["image"], BUSYBOX, "{st:#}");
    assert!(
        app["image_digest"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sha256:")
            || app["imageDigest"]
                .as_str()
                .unwrap_or_default()
                .starts_with("sha256:"),
        "{st:#}"
    );

    // The table form.
    let table = out_ok(&w, &["status", &pod.uuid]);
    assert!(
        table.contains("state=running") && table.contains(&format!("pid={pid}")),
        "{table}"
    );

    // list: JSON, table, --no-legend, --full.
    let list = list_json(&w);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["uuid"], pod.uuid.as_str());
    assert_eq!(list[0]["state"], "running");
    let table = out_ok(&w, &["list"]);
    let mut rows = table.lines();
    assert!(rows.next().unwrap().contains("UUID"), "{table}");
    let row = rows.next().unwrap();
    assert!(
        row.starts_with(&pod.uuid[..8]) && row.contains("running") && row.contains("busybox"),
        "{table}"
    );
    assert!(!row.contains(&pod.uuid), "short UUIDs by default: {table}");
    let bare = out_ok(&w, &["list", "--no-legend"]);
    assert_eq!(bare.lines().count(), 1, "{bare}");
    assert!(bare.starts_with(&pod.uuid[..8]), "{bare}");
    let full = out_ok(&w, &["list", "--full", "--no-legend"]);
    assert!(
        full.starts_with(&pod.uuid) && full.contains("sha256:"),
        "{full}"
    );

    // Status by abbreviated UUID; unknown UUID.
    assert_eq!(status_json(&w, &pod.uuid[..6])["uuid"], pod.uuid.as_str());
    let err = out_125(&w, &["status", "ffffffff-no-such-pod"]);
    assert!(err.contains("ffffffff-no-such-pod"), "{err}");

    // status --wait with a deadline on a running pod: gives up, does not block.
    let t = Instant::now();
    let o = orbit(&w, &["status", "--wait=300ms", &pod.uuid]);
    assert!(
        !o.status.success(),
        "the pod is still running: {}",
        text(&o.stdout)
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    out_ok(&w, &["stop", &pod.uuid]);
    pod.wait(Duration::from_secs(15));
    let st: serde_json::Value = serde_json::from_str(&out_ok(
        &w,
        &["status", "--wait=10s", "--format", "json", &pod.uuid],
    ))
    .unwrap();
    assert_eq!(st["state"], "exited", "{st:#}");
    assert_eq!(st["exit_code"], 143, "{st:#}");
    assert!(
        st["finished"].as_str().is_some_and(|f| !f.is_empty()),
        "{st:#}"
    );
    assert_eq!(st["apps"][0]["state"], "exited", "{st:#}");
    assert_eq!(st["apps"][0]["exitCode"], 143, "{st:#}");
    assert!(
        st["apps"][0].get("pid").is_none_or(|p| p.is_null()),
        "an exited app has no pid: {st:#}"
    );
    let table = out_ok(&w, &["list", "--no-legend"]);
    assert!(table.contains("exited (143)"), "{table}");
}

#[test]
fn status_and_list_json_have_no_duplicate_keys() {
    let w = pod_world();
    let pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    assert_no_duplicate_keys(&out_ok(&w, &["status", "--format", "json", &pod.uuid]));
    assert_no_duplicate_keys(&out_ok(&w, &["list", "--format", "json"]));
}

/// Fails if any JSON object in `raw` has the same key twice.
fn assert_no_duplicate_keys(raw: &str) {
    let py = "import json,sys\ndef hook(pairs):\n    keys=[k for k,_ in pairs]\n    d=[k for k in set(keys) if keys.count(k)>1]\n    assert not d, 'duplicate keys %s in %s' % (d, dict(pairs).get('name'))\n    return dict(pairs)\njson.loads(sys.stdin.read(), object_pairs_hook=hook)\n";
    let mut c = std::process::Command::new("python3");
    c.arg("-c")
        .arg(py)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "JSON with duplicate keys: {}\n{raw}",
        text(&o.stderr).lines().last().unwrap_or_default()
    );
}

#[test]
fn ambiguous_uuid_prefix_is_an_error() {
    let w = pod_world();
    // Prepare pods until two share a first hex digit (at most 17, by pigeonhole).
    let mut uuids: Vec<String> = Vec::new();
    let (a, b) = loop {
        let u = out_ok(&w, &["prepare", BUSYBOX]).trim().to_string();
        if let Some(other) = uuids.iter().find(|o| o[..1] == u[..1]) {
            break (other.clone(), u);
        }
        uuids.push(u);
        assert!(uuids.len() <= 17);
    };
    let common_len = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let prefix = &a[..common_len];
    let err = out_125(&w, &["status", prefix]);
    assert!(
        err.contains("ambiguous") && err.contains(&a) && err.contains(&b),
        "{err}"
    );
    let err = out_125(&w, &["rm", prefix]);
    assert!(err.contains("ambiguous"), "{err}");
    // One more character decides.
    assert_eq!(status_json(&w, &a[..common_len + 1])["uuid"], a.as_str());
    // rm removes prepared pods (by abbreviated UUID).
    uuids.push(b);
    for u in &uuids {
        out_ok(&w, &["rm", &u[..13]]);
    }
    assert_no_pods(&w);
}

// ---------------------------------------------------------------- prepare, run-prepared, manifest

#[test]
fn prepare_then_run_prepared_and_cat_manifest() {
    let w = pod_world();
    let uuid_file = w.path("uuid");
    let out = out_ok(
        &w,
        &[
            "prepare",
            "--uuid-file-save",
            uuid_file.to_str().unwrap(),
            "--hostname",
            "prep",
            BUSYBOX,
            "--set-env",
            "K=V",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "exit 6",
        ],
    );
    let uuid = out.trim().to_string();
    assert_eq!(uuid.len(), 36, "{out}");
    assert_eq!(fs::read_to_string(&uuid_file).unwrap().trim(), uuid);
    let st = status_json(&w, &uuid);
    assert_eq!(st["state"], "prepared", "{st:#}");
    assert_eq!(st["apps"][0]["state"], "created", "{st:#}");
    let m: serde_json::Value =
        serde_json::from_str(&out_ok(&w, &["cat-manifest", &uuid[..8]])).unwrap();
    assert_eq!(m["uuid"], uuid.as_str(), "{m:#}");
    assert_eq!(m["interfaceVersion"], 1, "{m:#}");
    assert_eq!(m["hostname"], "prep", "{m:#}");
    assert_eq!(
        m["apps"][0]["exec"],
        serde_json::json!(["/bin/sh", "-c", "exit 6"]),
        "{m:#}"
    );
    assert!(
        m["apps"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("K=V")),
        "{m:#}"
    );
    assert!(
        m["apps"][0]["image"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{m:#}"
    );

    let o = orbit(&w, &["run-prepared", &uuid[..8]]);
    assert_eq!(code(&o), 6, "{}", text(&o.stderr));
    let st = status_json(&w, &uuid);
    assert_eq!(
        (st["state"].as_str(), st["exit_code"].as_i64()),
        (Some("exited"), Some(6)),
        "{st:#}"
    );
    // A pod runs once.
    let err = out_125(&w, &["run-prepared", &uuid]);
    assert!(err.contains("prepared"), "{err}");
    // run --uuid-file-save writes the UUID of the pod that ran.
    let f2 = w.path("uuid2");
    run_expect(
        &w,
        &[
            "--uuid-file-save",
            f2.to_str().unwrap(),
            BUSYBOX,
            "--exec",
            "/bin/true",
        ],
        0,
    );
    let u2 = fs::read_to_string(&f2).unwrap().trim().to_string();
    assert_eq!(status_json(&w, &u2)["exit_code"], 0);
}

// ---------------------------------------------------------------- gc

#[test]
fn gc_after_kill_9_of_the_running_pod() {
    let w = pod_world();
    let mut pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    let st = status_json(&w, &pod.uuid);
    let init = st["pid"].as_i64().expect("pid");
    let pidns = pidns_of(init).expect("init alive");
    let pod_path = pod_dir(&w, &pod.uuid);
    // The process we spawned became the stage1 supervisor.
    let cmdline =
        text(&fs::read(format!("/proc/{}/cmdline", pod.run_pid())).unwrap()).replace('\0', " ");
    assert!(
        cmdline.contains(&pod.uuid),
        "orbit run should have exec'd into stage1: {cmdline}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod.run_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let e = pod.wait(Duration::from_secs(10));
    assert_eq!(e.status.code(), None, "killed");
    assert_pod_gone(&pod.uuid, Some(&pidns));
    assert_eq!(
        status_json(&w, &pod.uuid)["state"],
        "exited",
        "the lock died with the supervisor"
    );
    let st = status_json(&w, &pod.uuid);
    assert_eq!(st["apps"][0]["state"], "exited", "{st:#}");
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    assert!(!pod_path.exists());
    let m = mounts_with(&pod.uuid);
    assert!(m.is_empty(), "{m:?}");
    let m = mounts_with(w.store().to_str().unwrap());
    assert!(m.is_empty(), "mounts below the store after gc: {m:#?}");
}

#[test]
fn gc_finishes_interrupted_preparations_and_removals() {
    let w = pod_world();
    // What a stage0 killed during prepare (or a gc killed mid-removal) leaves: unlocked
    // directories in embryo/, prepare/, garbage/.
    let mut left = Vec::new();
    for (state, with_manifest) in [
        ("embryo", false),
        ("prepare", false),
        ("prepare", true),
        ("garbage", true),
    ] {
        let u = uuid::Uuid::new_v4().to_string();
        let d = w.store().join("pods").join(state).join(&u);
        fs::create_dir_all(d.join("apps/busybox/rootfs/etc")).unwrap();
        fs::write(d.join("apps/busybox/rootfs/etc/file"), "x").unwrap();
        if with_manifest {
            fs::write(d.join("pod.json"), "{").unwrap();
        }
        left.push(u);
    }
    // A real prepared pod stays (it has not expired).
    let prepared = out_ok(&w, &["prepare", BUSYBOX]).trim().to_string();
    let o = orbit(&w, &["list", "--format", "json"]);
    assert!(
        o.status.success(),
        "list copes with half-made pods: {}",
        text(&o.stderr)
    );
    let states: Vec<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap().to_string())
        .collect();
    assert!(states.iter().any(|s| s == "aborted-prepare"), "{states:?}");
    out_ok(&w, &["gc"]);
    assert_eq!(
        pod_dirs(&w),
        vec![("prepared".to_string(), prepared.clone())]
    );
    // Prepared pods expire.
    out_ok(&w, &["gc", "--expire-prepared=0"]);
    assert_no_pods(&w);
}

#[test]
fn gc_grace_period_and_mark_only() {
    let w = pod_world();
    run_expect(&w, &[BUSYBOX, "--exec", "/bin/true"], 0);
    let uuid = only_pod(&w);
    // --mark-only marks, never removes, whatever the grace period.
    out_ok(&w, &["gc", "--mark-only", "--grace-period=0"]);
    assert_eq!(
        pod_dirs(&w),
        vec![("exited-garbage".to_string(), uuid.clone())]
    );
    assert_eq!(status_json(&w, &uuid)["state"], "exited-garbage");
    assert_eq!(
        status_json(&w, &uuid)["exit_code"],
        0,
        "marked pods keep their status"
    );
    out_ok(&w, &["gc", "--mark-only", "--grace-period=0"]);
    assert_eq!(pod_dirs(&w).len(), 1);
    // Within the grace period: kept.
    out_ok(&w, &["gc", "--grace-period=1h"]);
    assert_eq!(pod_dirs(&w).len(), 1);
    // A second pod is marked by a gc with a grace period, and removed only after it.
    run_expect(&w, &[BUSYBOX, "--exec", "/bin/true"], 0);
    let second = pod_dirs(&w)
        .into_iter()
        .find(|(s, _)| s == "run")
        .expect("second pod")
        .1;
    let out = out_ok(&w, &["gc", "--grace-period=1s"]);
    assert!(out.contains(&format!("marked {second}")), "{out}");
    assert!(
        pod_dirs(&w).contains(&("exited-garbage".to_string(), second.clone())),
        "just marked, kept for the grace period: {:?}",
        pod_dirs(&w)
    );
    poll(
        Duration::from_secs(10),
        "gc --grace-period=1s to remove both pods",
        || {
            out_ok(&w, &["gc", "--grace-period=1s"]);
            pod_dirs(&w).is_empty().then_some(())
        },
    );
    // A running pod is never collected.
    let mut pod = BgPod::start(&w, &sleeper(&[], "sleep 1000"));
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_eq!(status_json(&w, &pod.uuid)["state"], "running");
    let err = out_125(&w, &["rm", &pod.uuid]);
    assert!(err.contains("stop"), "{err}");
    out_ok(&w, &["stop", &pod.uuid]);
    pod.wait(Duration::from_secs(15));
    out_ok(&w, &["rm", &pod.uuid]);
    assert_no_pods(&w);
}

// ---------------------------------------------------------------- logs

#[test]
fn logs_are_cri_formatted_and_shown_per_stream() {
    let w = pod_world();
    let o = orbit(
        &w,
        &[
            "run",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo out1; echo err1 >&2; echo out2; printf 'no-newline'",
        ],
    );
    assert_eq!(code(&o), 0);
    // The terminal got the output too.
    assert!(
        text(&o.stdout).contains("out1\nout2\n"),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stderr).contains("err1"), "{}", text(&o.stderr));
    let uuid = only_pod(&w);
    let recs = cri_log(&w, &uuid, "busybox");
    let lines: Vec<(String, String, String)> = recs
        .iter()
        .map(|(_, s, t, x)| (s.clone(), t.clone(), x.clone()))
        .collect();
    let out: Vec<_> = lines.iter().filter(|l| l.0 == "stdout").cloned().collect();
    let err: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").cloned().collect();
    let rec = |s: &str, t: &str, x: &str| (s.to_string(), t.to_string(), x.to_string());
    assert_eq!(
        out,
        vec![
            rec("stdout", "F", "out1"),
            rec("stdout", "F", "out2"),
            // Written at once as a partial line (and left one: no newline was written).
            rec("stdout", "P", "no-newline")
        ],
        "{lines:?}"
    );
    assert_eq!(err, vec![rec("stderr", "F", "err1")], "{lines:?}");
    let times: Vec<&String> = recs.iter().map(|r| &r.0).collect();
    let sorted = {
        let mut t = times.clone();
        t.sort_by_key(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        });
        t
    };
    assert_eq!(times, sorted, "records in time order");

    // orbit logs: stdout lines on stdout, stderr lines on stderr.
    let o = orbit(&w, &["logs", &uuid]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out1\nout2\nno-newline");
    assert_eq!(text(&o.stderr), "err1\n");
    // The last line of the log: the streams' records are in the order they were read.
    let o = orbit(&w, &["logs", "--tail", "1", &uuid[..8]]);
    let last = match recs.last().map(|r| (r.1.as_str(), r.3.as_str())) {
        Some(("stdout", t)) => (t.to_string(), String::new()),
        Some((_, t)) => (String::new(), format!("{t}\n")),
        None => unreachable!("the log has records"),
    };
    assert_eq!((text(&o.stdout), text(&o.stderr)), last, "--tail 1");
    let o = orbit(&w, &["logs", "--timestamps", &uuid]);
    let first = text(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.ends_with(" out1") && first.starts_with(&recs[0].0[..4]),
        "{first}"
    );
}

#[test]
fn logs_of_a_multi_app_pod_and_app_filter() {
    let w = pod_world();
    run_expect(
        &w,
        &[
            "--exec",
            "/bin/sh",
            BUSYBOX,
            "--name",
            "a",
            "--",
            "-c",
            "echo from-a",
            "---",
            BUSYBOX,
            "--name",
            "b",
            "--",
            "-c",
            "echo from-b; echo b2",
        ],
        0,
    );
    let uuid = only_pod(&w);
    assert_eq!(
        cri_log(&w, &uuid, "a")
            .iter()
            .map(|r| r.3.as_str())
            .collect::<Vec<_>>(),
        ["from-a"]
    );
    assert_eq!(
        cri_log(&w, &uuid, "b")
            .iter()
            .map(|r| r.3.as_str())
            .collect::<Vec<_>>(),
        ["from-b", "b2"]
    );
    let all = out_ok(&w, &["logs", &uuid]);
    assert!(
        all.contains("from-a") && all.contains("from-b") && all.contains("b2"),
        "{all}"
    );
    assert_eq!(out_ok(&w, &["logs", "--app", "b", &uuid]), "from-b\nb2\n");
    assert_eq!(
        out_ok(&w, &["logs", "--app", "b", "--tail", "1", &uuid]),
        "b2\n"
    );
    let err = out_125(&w, &["logs", "--app", "c", &uuid]);
    assert!(err.contains("'c'"), "{err}");
}

#[test]
fn logs_since_compares_times_not_strings() {
    let w = pod_world();
    run_expect(&w, &[BUSYBOX, "--exec", "/bin/true"], 0);
    let uuid = only_pod(&w);
    // Timestamps as RFC3339Nano writes them: trailing zeros (and a zero fraction) dropped.
    let log = "2024-01-01T00:00:01.5Z stdout F one\n2024-01-01T00:00:02Z stdout F two\n2024-01-01T00:00:02.25Z stdout F three\n2024-01-01T00:00:10Z stdout F four\n";
    fs::write(pod_dir(&w, &uuid).join("apps/busybox/log"), log).unwrap();
    assert_eq!(
        out_ok(&w, &["logs", "--since", "2024-01-01T00:00:02Z", &uuid]),
        "two\nthree\nfour\n"
    );
    assert_eq!(
        out_ok(&w, &["logs", "--since", "2024-01-01T00:00:02.1Z", &uuid]),
        "three\nfour\n"
    );
    assert_eq!(
        out_ok(&w, &["logs", "--since", "2024-01-01T01:00:02+01:00", &uuid]),
        "two\nthree\nfour\n",
        "offsets are times too"
    );
    assert_eq!(
        out_ok(&w, &["logs", "--since", "1m", &uuid]),
        "",
        "nothing in the last minute"
    );
}

#[test]
fn logs_follow_a_pod_until_it_exits() {
    let w = pod_world();
    let (gate, vol) = host_volume(&w, "gate", "gate");
    let script = "echo one; i=0; while [ ! -e /gate/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo two; echo err-two >&2";
    let mut pod = BgPod::start(
        &w,
        &[
            "--volume",
            &vol,
            BUSYBOX,
            "--mount",
            "volume=gate,target=/gate",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
        ],
    );
    let mut follow = w.cmd(&["logs", "--follow", &pod.uuid]);
    follow
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = follow.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // "one" arrives while the pod still runs.
    let seen = std::thread::spawn(move || {
        use std::io::Read;
        let mut all = Vec::new();
        let mut buf = [0u8; 256];
        let mut first = None;
        let t = Instant::now();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if first.is_none() && all.starts_with(b"one\n") {
                first = Some(t.elapsed());
                fs::write(gate.join("go"), "").unwrap();
            }
        }
        (text(&all), first)
    });
    let st = wait_within(&mut child, Duration::from_secs(30));
    let (out, first) = seen.join().unwrap();
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(
        st.is_some_and(|s| s.success()),
        "logs --follow should end when the pod exits ({st:?}); out: {out} err: {err}"
    );
    assert!(
        first.is_some(),
        "logs --follow showed 'one' while the pod ran: {out}"
    );
    assert_eq!(out, "one\ntwo\n");
    assert_eq!(err, "err-two\n");
    assert_eq!(pod.wait(Duration::from_secs(10)).status.code(), Some(0));
}

// ---------------------------------------------------------------- concurrency

#[test]
fn fifty_concurrent_pods_with_gc_and_list_running() {
    let w = pod_world();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // The gc + list loop, in a thread, until the pods are done.
    let looper = {
        let stop = stop.clone();
        let cmds = (
            w.cmd(&["gc", "--grace-period=1h"]),
            w.cmd(&["list", "--format", "json"]),
        );
        let envs: Vec<(String, String)> = cmds
            .0
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        std::thread::spawn(move || {
            let mut rounds = 0;
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for args in [
                    &["gc", "--grace-period=1h"][..],
                    &["list", "--format", "json"][..],
                ] {
                    let mut c = std::process::Command::new(common::orbit_bin());
                    c.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
                    let o = output_within(c, Duration::from_secs(20));
                    if !o.status.success() {
                        problems.push(format!("orbit {args:?}: {} {}", o.status, text(&o.stderr)));
                    } else if args[0] == "list"
                        && !serde_json::from_slice::<serde_json::Value>(&o.stdout)
                            .is_ok_and(|v| v.is_array())
                    {
                        problems.push(format!("orbit list: invalid JSON: {}", text(&o.stdout)));
                    }
                }
                rounds += 1;
            }
            (rounds, problems)
        })
    };
    let mut children = Vec::new();
    for i in 0..50 {
        let script = format!("exit {}", i % 7);
        let mut c = w.cmd(&["run", BUSYBOX, "--exec", "/bin/sh", "--", "-c", &script]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        children.push((i, c.spawn().unwrap()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wrong = Vec::new();
    for (i, mut c) in children {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_within(&mut c, left) {
            Some(st) if st.code() == Some(i % 7) => {}
            st => {
                let mut err = String::new();
                use std::io::Read;
                let _ = c.stderr.take().unwrap().read_to_string(&mut err);
                wrong.push(format!("pod {i}: expected {}, got {st:?}: {err}", i % 7));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (rounds, problems) = looper.join().unwrap();
    assert!(
        wrong.is_empty(),
        "{} of 50 pods did not exit with their own status:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        problems.is_empty(),
        "gc/list failures during the run:\n{}",
        problems.join("\n")
    );
    assert!(rounds > 0);
    // Every pod is accounted for with its own status.
    let list = list_json(&w);
    assert_eq!(list.len(), 50, "{} pods listed", list.len());
    let mut hist = [0; 7];
    for p in &list {
        assert!(
            matches!(p["state"].as_str(), Some("exited") | Some("exited-garbage")),
            "{p:#}"
        );
        hist[p["exit_code"].as_i64().unwrap_or_else(|| panic!("{p:#}")) as usize] += 1;
    }
    assert_eq!(
        hist,
        [8, 7, 7, 7, 7, 7, 7],
        "exit codes i % 7 for i in 0..50"
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    let m = mounts_with(w.store().to_str().unwrap());
    assert!(m.is_empty(), "{m:#?}");
    eprintln!(
        "50 pods with a gc+list loop ({rounds} rounds) in {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------- export

/// The entries of the top layer of the single image in oci-archive `archive`.
fn top_layer_entries(archive: &std::path::Path) -> Vec<String> {
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(fs::File::open(archive).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let blob = |digest: &str| &files[&format!("blobs/sha256/{}", &digest["sha256:".len()..])];
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    let index = json(&files["index.json"]);
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap();
    let top = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(&top[..]));
    layer
        .entries()
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path().unwrap().to_string_lossy().into_owned();
            p.trim_end_matches('/').to_string()
        })
        .collect()
}

#[test]
fn export_holds_what_the_app_changed_and_none_of_the_stage1s_mount_points() {
    let w = pod_world();
    run_expect(
        &w,
        &[
            "--volume",
            "data,kind=empty",
            "--mount",
            "volume=data,target=/srv/data",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo made > /made; rm /etc/motd; echo in-volume > /srv/data/x",
        ],
        0,
    );
    let uuid = only_pod(&w);
    let archive = w.path("export.tar");
    let archive_arg = archive.to_str().unwrap();
    out_ok(
        &w,
        &[
            "export",
            &uuid,
            archive_arg,
            "--name",
            "example.com/exported:1",
        ],
    );
    let entries = top_layer_entries(&archive);
    for changed in ["made", "etc", "etc/.wh.motd"] {
        assert!(
            entries.iter().any(|e| e == changed),
            "{changed} missing: {entries:?}"
        );
    }
    // The stage1's mount points (the pod's /etc files, the volume's target and the
    // directory made to hold it) are not the app's changes; the volume's content neither.
    for leftover in [
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "srv",
        "srv/data",
        "srv/data/x",
    ] {
        assert!(
            !entries.iter().any(|e| e == leftover),
            "{leftover} exported: {entries:?}"
        );
    }
    // The image runs, with its own /etc files from the pod again.
    out_ok(
        &w,
        &[
            "--insecure-options=image",
            "fetch",
            &format!("oci-archive:{archive_arg}"),
        ],
    );
    let seen = run_expect(
        &w,
        &[
            "example.com/exported:1",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "cat /made; test -e /etc/motd || echo motd-gone; test -s /etc/hostname && echo named",
        ],
        0,
    );
    assert_eq!(seen, "made\nmotd-gone\nnamed\n");
}
