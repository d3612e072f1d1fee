//! `--private-users`: the pod runs in a user namespace with a private id range — root in
//! the pod is an unprivileged id on the host, image files still look root-owned inside
//! (idmapped layers), host-root-owned files cannot be written, ranges never collide, and
//! `orbit enter` lands in the same user namespace.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::text;
use pods_common::*;

fn uid_map_base(map: &str) -> u64 {
    let f: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(f.len(), 3, "one mapping line: {map:?}");
    assert_eq!(f[0], "0", "pod uid 0 is mapped: {map:?}");
    assert_eq!(f[2], "65536", "65536 ids: {map:?}");
    f[1].parse().unwrap()
}

#[test]
fn pod_root_is_unprivileged_on_the_host_and_image_files_look_root_owned() {
    let w = pod_world();
    let out = run_expect(&w, &["--private-users", BUSYBOX, "--exec", "/bin/sh", "--", "-c", "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin/busybox; echo ok > /written && cat /written"], 0);
    let mut lines = out.lines();
    let base = uid_map_base(lines.next().unwrap());
    assert!(base >= 65536, "the range is not the host's own ids: {base}");
    assert_eq!(lines.next(), Some("0"), "{out}");
    assert_eq!(
        lines.next(),
        Some("0:0"),
        "layers are idmapped, not nobody-owned: {out}"
    );
    assert_eq!(
        lines.next(),
        Some("ok"),
        "the pod's root can write its own root: {out}"
    );
    // The upper dir holding that write belongs to the range's root on the host.
    let uuid = only_pod(&w);
    let upper = pod_dir(&w, &uuid).join("apps/busybox/upper/written");
    let meta = fs::metadata(&upper).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta) as u64,
        base,
        "host owner of the written file"
    );
}

#[test]
fn host_root_owned_files_are_not_writable_and_processes_run_as_the_range() {
    let w = pod_world();
    let host = w.path("hostroot");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), "secret\n").unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(host.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let vol = format!("h,kind=host,source={}", host.display());
    let pod = BgPod::start(
        &w,
        &[
            "--private-users",
            "--volume",
            &vol,
            BUSYBOX,
            "--mount",
            "volume=h,target=/h",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    let st = status_json(&w, &pod.uuid);
    let app_pid = st["apps"][0]["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{app_pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let host_uid: u64 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        host_uid >= 65536,
        "the app runs as an unprivileged host uid: {uid_line}"
    );
    // The app sits in its own cgroup below the pod's (delegated to the pod's root).
    let cgroups = fs::read_to_string(format!("/proc/{app_pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .unwrap_or_default();
    assert!(
        memory.ends_with(&format!("/orbit/{}/busybox", pod.uuid)),
        "app cgroup: {cgroups}"
    );
    let o = orbit(
        &w,
        &[
            "enter",
            &pod.uuid,
            "/bin/sh",
            "-c",
            "id -u; echo x >> /h/f; echo rc=$?; touch /h/new; echo rc=$?; cat /proc/self/uid_map",
        ],
    );
    let out = text(&o.stdout);
    assert!(
        out.starts_with("0\n"),
        "enter is root in the pod's user namespace: {out}"
    );
    assert_eq!(
        out.matches("rc=1").count(),
        2,
        "host-root-owned files stay read-only: {out} {}",
        text(&o.stderr)
    );
    assert_eq!(
        uid_map_base(out.lines().last().unwrap()),
        host_uid,
        "enter joined the same user namespace: {out}"
    );
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "secret\n");
    assert!(!host.join("new").exists());
}

#[test]
fn concurrent_pods_get_distinct_ranges_and_ranges_are_released() {
    let w = pod_world();
    let a = BgPod::start(
        &w,
        &[
            "--private-users",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    let b = BgPod::start(
        &w,
        &[
            "--private-users",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    let base = |uuid: &str| {
        let o = orbit(&w, &["enter", uuid, "/bin/cat", "/proc/self/uid_map"]);
        uid_map_base(&text(&o.stdout))
    };
    let (ba, bb) = (base(&a.uuid), base(&b.uuid));
    assert_ne!(ba, bb, "two running pods share a range");
    assert!(ba.abs_diff(bb) >= 65536, "ranges overlap: {ba} {bb}");
    drop(a);
    drop(b);
    out_ok(&w, &["gc", "--grace-period=0"]);
    let ranges: serde_json::Value =
        serde_json::from_slice(&fs::read(w.store().join("pods/userns.json")).unwrap()).unwrap();
    assert_eq!(
        ranges.as_object().unwrap().len(),
        0,
        "removed pods release their ranges: {ranges}"
    );
}

#[test]
fn a_store_the_pods_ids_cannot_reach_is_named_before_a_pod_is_made() {
    let w = pod_world();
    // The store below a directory only its owner may search (a store under /root, say).
    let blocking = w.tmp.path();
    fs::set_permissions(blocking, fs::Permissions::from_mode(0o700)).unwrap();
    let err = out_125(
        &w,
        &["run", "--private-users", BUSYBOX, "--exec", "/bin/true"],
    );
    let named = format!("{} (mode 0700", blocking.display());
    assert!(
        err.contains(&named) && err.contains(&format!("chmod o+x {}", blocking.display())),
        "{err}"
    );
    assert_no_pods(&w);
    // Searchable by others (not readable): the pod runs.
    fs::set_permissions(blocking, fs::Permissions::from_mode(0o711)).unwrap();
    run_expect(&w, &["--private-users", BUSYBOX, "--exec", "/bin/true"], 0);
}

#[test]
fn private_users_refuses_combinations_it_does_not_support() {
    let w = pod_world();
    for extra in [["--net=host"], ["--no-overlay"]] {
        let mut args = vec!["run", "--private-users"];
        args.extend(extra);
        args.extend([BUSYBOX, "--exec", "/bin/true"]);
        let err = out_125(&w, &args);
        assert!(err.contains("--private-users"), "{err}");
    }
    assert_no_pods(&w);
}

#[test]
fn kill_9_of_the_supervisor_takes_a_private_users_pod_down_and_the_layers_stay_read_only() {
    let w = pod_world();
    let mut pod = BgPod::start(
        &w,
        &[
            "--private-users",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    let init: u32 = fs::read_to_string(pod_dir(&w, &pod.uuid).join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The shared layers are mounted read-only (idmapped) in the pod's mount namespace.
    let mountinfo = fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
    let idmapped: Vec<&str> = mountinfo
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.contains("/idmapped/"))
        })
        .collect();
    assert!(!idmapped.is_empty(), "{mountinfo}");
    for l in &idmapped {
        let opts = l.split(' ').nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "idmapped layer mount is writable: {l}"
        );
    }
    let pidns = pidns_of(init as i64);
    // kill -9 the supervisor (the `orbit run` process).
    let run_pid = pod.run_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = pod.wait(Duration::from_secs(20));
    assert_pod_gone(&pod.uuid, pidns.as_deref());
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn concurrent_preparations_never_share_a_range() {
    let w = pod_world();
    let children: Vec<_> = (0..16)
        .map(|_| {
            w.cmd(&["prepare", "--private-users", BUSYBOX, "--exec", "/bin/true"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut bases = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let uuid = text(&out.stdout).trim().to_string();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(pod_dir(&w, &uuid).join("pod.json")).unwrap())
                .unwrap();
        bases.push(manifest["userNamespace"]["uidBase"].as_u64().unwrap());
    }
    let mut unique = bases.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bases.len(), "shared ranges: {bases:?}");
    out_ok(&w, &["gc", "--grace-period=0", "--expire-prepared=0s"]);
}
