//! Pods, part 1 (issue 4): running real pods with the default `ns` stage1 — exit codes,
//! environment, identity, working directory, volumes, read-only roots, hostname and network,
//! interactive terminals — plus the shell-script test stage1 (`tests/stage1-sh/`), stage1
//! interface version checks, and failures that must leave nothing behind.
//! Runs as root.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::time::Duration;

use common::{text, World};
use pods_common::*;

// ---------------------------------------------------------------- exit codes

#[test]
fn exit_codes_pass_through() {
    let w = pod_world();
    for (script, expected) in [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ] {
        run_expect(
            &w,
            &[BUSYBOX, "--exec", "/bin/sh", "--", "-c", script],
            expected,
        );
    }
    // Each pod recorded its own status, and the killed ones their signal.
    let list = list_json(&w);
    assert_eq!(list.len(), 5, "{list:#?}");
    let mut codes: Vec<i64> = list
        .iter()
        .map(|p| p["exit_code"].as_i64().unwrap_or(-1))
        .collect();
    codes.sort();
    assert_eq!(codes, vec![0, 1, 42, 137, 143]);
    for p in &list {
        assert_eq!(p["state"], "exited", "{p:#}");
        let app = &p["apps"][0];
        assert_eq!(app["state"], "exited", "{p:#}");
        assert_eq!(app["exitCode"], p["exit_code"], "{p:#}");
        match p["exit_code"].as_i64() {
            Some(137) => assert_eq!(app["signal"], 9, "{p:#}"),
            Some(143) => assert_eq!(app["signal"], 15, "{p:#}"),
            _ => assert!(app.get("signal").is_none_or(|s| s.is_null()), "{p:#}"),
        }
        assert_pod_gone(p["uuid"].as_str().unwrap(), None);
    }
}

#[test]
fn image_default_command_runs() {
    let w = pod_world();
    let out = run_expect(&w, &[BUSYBOX], 0);
    assert_eq!(out, "hello from the busybox test image\n");
    // A short name works as for the image commands.
    let out = run_expect(&w, &["busybox"], 0);
    assert_eq!(out, "hello from the busybox test image\n");
}

#[test]
fn multi_app_pod_exits_with_the_failing_apps_status() {
    let w = pod_world();
    run_expect(
        &w,
        &[
            "--exec", "/bin/sh", BUSYBOX, "--name", "a", "--", "-c", "exit 0", "---", BUSYBOX,
            "--name", "b", "--", "-c", "exit 3",
        ],
        3,
    );
    let uuid = only_pod(&w);
    let st = status_json(&w, &uuid);
    assert_eq!(st["exit_code"], 3, "{st:#}");
    let apps = st["apps"].as_array().unwrap();
    let code_of = |n: &str| {
        apps.iter()
            .find(|a| a["name"] == n)
            .unwrap_or_else(|| panic!("no app {n}: {st:#}"))["exitCode"]
            .clone()
    };
    assert_eq!(code_of("a"), 0, "{st:#}");
    assert_eq!(code_of("b"), 3, "{st:#}");

    // Both apps succeed: 0. Default names are derived from the image and made unique.
    run_expect(&w, &["--exec", "/bin/true", BUSYBOX, "---", BUSYBOX], 0);
    let pod = list_json(&w)
        .into_iter()
        .find(|p| p["uuid"] != uuid.as_str())
        .unwrap();
    let mut names: Vec<String> = pod["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1], "{pod:#}");
}

// ---------------------------------------------------------------- the app's world

#[test]
fn environment_image_set_env_and_inherit_env() {
    let w = pod_world();
    let script = "echo PATH=$PATH; echo IMAGE_ENV=$IMAGE_ENV; echo FOO=$FOO; echo BAZ=$BAZ; echo INH=$ORBIT_TEST_INHERITED";
    let mut cmd = w.cmd(&[
        "run",
        BUSYBOX,
        "--exec",
        "/bin/sh",
        "--set-env",
        "FOO=bar",
        "--environment",
        "BAZ=qux",
        "--",
        "-c",
        script,
    ]);
    cmd.env("ORBIT_TEST_INHERITED", "yes");
    let o = output_within(cmd, DEADLINE);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "PATH=/bin\nIMAGE_ENV=from-image\nFOO=bar\nBAZ=qux\nINH=\n",
        "the host environment must not leak without --inherit-env"
    );

    // --set-env overrides the image; --inherit-env passes orbit's environment, but the
    // image's values (PATH) and --set-env win.
    let mut cmd = w.cmd(&[
        "run",
        "--inherit-env",
        BUSYBOX,
        "--exec",
        "/bin/sh",
        "--set-env",
        "IMAGE_ENV=overridden",
        "--",
        "-c",
        script,
    ]);
    cmd.env("ORBIT_TEST_INHERITED", "yes")
        .env("FOO", "from-host");
    let o = output_within(cmd, DEADLINE);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "PATH=/bin\nIMAGE_ENV=overridden\nFOO=from-host\nBAZ=\nINH=yes\n"
    );
}

#[test]
fn user_and_group_by_name_and_number() {
    let w = pod_world();
    let out = run_expect(
        &w,
        &[
            BUSYBOX,
            "--user",
            "user",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "id -u; id -g; id -G",
        ],
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000"], "{out}");
    let mut groups: Vec<&str> = lines[2].split(' ').collect();
    groups.sort();
    assert_eq!(
        groups,
        ["100", "1000"],
        "supplementary group 'users' (100) from the image's /etc/group: {out}"
    );

    let out = run_expect(
        &w,
        &[
            BUSYBOX,
            "--user",
            "4242",
            "--group",
            "7",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "id -u; id -g; id -G",
        ],
        0,
    );
    assert_eq!(out, "4242\n7\n7\n");

    // A user name the image does not know: a clear error, nothing left.
    let before = pod_dirs(&w);
    let err = out_125(
        &w,
        &[
            "run",
            BUSYBOX,
            "--user",
            "no-such-user",
            "--exec",
            "/bin/true",
        ],
    );
    assert!(err.contains("no-such-user"), "{err}");
    assert_eq!(pod_dirs(&w), before);
}

#[test]
fn working_dir() {
    let w = pod_world();
    assert_eq!(
        run_expect(
            &w,
            &[BUSYBOX, "--working-dir", "/tmp", "--exec", "/bin/pwd"],
            0
        ),
        "/tmp\n"
    );
    assert_eq!(run_expect(&w, &[BUSYBOX, "--exec", "/bin/pwd"], 0), "/\n");
}

#[test]
fn host_volumes_read_write_and_read_only() {
    let w = pod_world();
    let rw = w.path("rw");
    let ro = w.path("ro");
    fs::create_dir_all(&rw).unwrap();
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("existing"), "host data\n").unwrap();
    let vol_rw = format!("rw,kind=host,source={}", rw.display());
    let vol_ro = format!("ro,kind=host,source={},readOnly=true", ro.display());
    let script = "echo written > /data/out || exit 10; cat /ro/existing || exit 11; if echo x > /ro/new; then exit 12; fi; exit 0";
    let out = run_expect(
        &w,
        &[
            "--volume",
            &vol_rw,
            "--volume",
            &vol_ro,
            BUSYBOX,
            "--mount",
            "volume=rw,target=/data",
            "--mount",
            "volume=ro,target=/ro",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
        ],
        0,
    );
    assert_eq!(out, "host data\n");
    assert_eq!(fs::read_to_string(rw.join("out")).unwrap(), "written\n");
    assert!(!ro.join("new").exists());
    // The app ran as root: the host side of a read-only volume stays untouched.
    assert_eq!(
        fs::read_to_string(ro.join("existing")).unwrap(),
        "host data\n"
    );
    assert_pod_gone(&only_pod(&w), None);
}

/// `--volume …,readOnly=true` makes the volume's own mount read-only and leaves a mount the
/// host made below its source writable; `recursiveReadOnly=true` makes that one read-only too
/// (ns and fly).
#[test]
fn read_only_volumes_are_top_only_unless_recursive() {
    let w = pod_world();
    let tree = w.path("tree");
    let _tree = common::TestMount::tmpfs(&tree, false);
    let _sub = common::TestMount::tmpfs(&tree.join("sub"), false);
    for stage1 in ["ns", "fly"] {
        let out = run_read_only_volumes(&w, &tree, &["--stage1-name", stage1]);
        assert_eq!(out, "w\n", "{stage1}");
        assert_pod_gone(&only_pod(&w), None);
        out_ok(&w, &["rm", &only_pod(&w)]);
    }
}

#[test]
fn empty_volume_is_shared_between_apps() {
    let w = pod_world();
    // b waits (inside the pod, bounded) for what a writes.
    let wait_b = "i=0; while [ ! -e /shared/x ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; cat /shared/x";
    let out = run_expect(
        &w,
        &[
            "--volume",
            "scratch,kind=empty",
            "--exec",
            "/bin/sh",
            BUSYBOX,
            "--name",
            "a",
            "--mount",
            "volume=scratch,target=/shared",
            "--",
            "-c",
            "echo from-a > /shared/x",
            "---",
            BUSYBOX,
            "--name",
            "b",
            "--mount",
            "volume=scratch,target=/shared",
            "--",
            "-c",
            wait_b,
        ],
        0,
    );
    assert!(out.contains("from-a"), "{out}");
    let uuid = only_pod(&w);
    assert_eq!(
        fs::read_to_string(pod_dir(&w, &uuid).join("volumes/scratch/x")).unwrap(),
        "from-a\n"
    );
}

#[test]
fn apps_do_not_share_roots() {
    let w = pod_world();
    // a writes into its own root; b must not see it (separate overlay uppers).
    let b = "i=0; while [ $i -lt 20 ]; do [ -e /tmp/only-a ] && exit 9; sleep 0.05; i=$((i+1)); done; exit 0";
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
            "echo a > /tmp/only-a",
            "---",
            BUSYBOX,
            "--name",
            "b",
            "--",
            "-c",
            b,
        ],
        0,
    );
}

#[test]
fn readonly_rootfs_but_writable_volume() {
    let w = pod_world();
    let (data, vol) = host_volume(&w, "data", "data");
    let script = "if echo x > /x 2>/dev/null; then exit 10; fi; if touch /tmp/x 2>/dev/null; then exit 11; fi; echo ok > /data/ok || exit 12";
    run_expect(
        &w,
        &[
            "--volume",
            &vol,
            BUSYBOX,
            "--readonly-rootfs",
            "--mount",
            "volume=data,target=/data",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
        ],
        0,
    );
    assert_eq!(fs::read_to_string(data.join("ok")).unwrap(), "ok\n");
    // Without --readonly-rootfs the root is writable.
    run_expect(
        &w,
        &[BUSYBOX, "--exec", "/bin/sh", "--", "-c", "echo x > /x"],
        0,
    );
}

#[test]
fn hostname_and_etc_files() {
    let w = pod_world();
    let out = run_expect(
        &w,
        &[
            "--hostname",
            "test-host",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "hostname; echo ---; cat /etc/hostname; echo ---; cat /etc/hosts",
        ],
        0,
    );
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts[0], "test-host\n", "{out}");
    assert_eq!(parts[1], "test-host\n", "{out}");
    let hosts = parts[2];
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("127.0.0.1") && l.contains("localhost")),
        "{hosts}"
    );
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().skip(1).any(|n| n == "test-host")),
        "/etc/hosts names the pod's hostname: {hosts}"
    );

    // Default: orbit-<first 8 of the UUID>.
    let out = run_expect(&w, &[BUSYBOX, "--exec", "/bin/hostname"], 0);
    let uuid = pod_dirs(&w)
        .into_iter()
        .map(|(_, u)| u)
        .find(|u| out.trim() == format!("orbit-{}", &u[..8]));
    assert!(
        uuid.is_some(),
        "hostname {out:?} is not orbit-<uuid8> of any pod: {:?}",
        pod_dirs(&w)
    );
    // The host's hostname did not change.
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "test-host"
    );
}

fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut v: Vec<String> = proc_net_dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn network_none_by_default_and_host_on_request() {
    let w = pod_world();
    let out = run_expect(
        &w,
        &[BUSYBOX, "--exec", "/bin/cat", "--", "/proc/net/dev"],
        0,
    );
    assert_eq!(
        interfaces(&out),
        ["lo"],
        "--net=none (default) has only loopback:\n{out}"
    );
    let lo_up = run_expect(
        &w,
        &[
            BUSYBOX,
            "--exec",
            "/bin/cat",
            "--",
            "/sys/class/net/lo/operstate",
        ],
        0,
    );
    assert!(
        ["unknown", "up"].contains(&lo_up.trim()),
        "lo should be up: {lo_up}"
    );
    let out = run_expect(
        &w,
        &[
            "--net=host",
            BUSYBOX,
            "--exec",
            "/bin/cat",
            "--",
            "/proc/net/dev",
        ],
        0,
    );
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert_eq!(
        interfaces(&out),
        host,
        "--net=host sees the host's interfaces"
    );
    out_125(&w, &["run", "--net=bogus", BUSYBOX]);
    assert_eq!(pod_dirs(&w).len(), 3);
}

#[test]
fn pid_namespace_and_minimal_dev() {
    let w = pod_world();
    let out = run_expect(
        &w,
        &[
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo $$; ls /dev | tr '\\n' ' '; echo; ls /proc | grep -c '^[0-9]'",
        ],
        0,
    );
    let lines: Vec<&str> = out.lines().collect();
    let pid: u32 = lines[0].parse().unwrap();
    assert!(
        pid < 10,
        "the app should be in the pod's own pid namespace, got pid {pid}"
    );
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(
            lines[1].split(' ').any(|x| x == d),
            "/dev/{d} missing: {}",
            lines[1]
        );
    }
    assert!(
        !lines[1]
            .split(' ')
            .any(|x| x == "sda" || x == "kvm" || x == "mem"),
        "host devices leaked into /dev: {}",
        lines[1]
    );
    let nprocs: u32 = lines[2].parse().unwrap();
    assert!(
        nprocs < 10,
        "the pod sees only its own processes in /proc, saw {nprocs}"
    );
}

// ---------------------------------------------------------------- interactive

#[test]
fn interactive_pod_gets_a_terminal() {
    let w = pod_world();
    let (shown, exit) = under_pty(
        &w,
        &["run", "--interactive", BUSYBOX, "--exec", "/bin/sh"],
        "tty; echo $((6*7)); exit 5\n",
    );
    assert_eq!(
        exit, 5,
        "the shell's exit status is the pod's; terminal showed:\n{shown}"
    );
    assert!(shown.contains("42"), "{shown}");
    assert!(
        shown.lines().any(|l| l.trim().starts_with("/dev/pts/")),
        "`tty` in the app should name a /dev/pts terminal; terminal showed:\n{shown}"
    );
    assert!(!shown.contains("not a tty"), "{shown}");
    assert_pod_gone(&only_pod(&w), None);
}

// ---------------------------------------------------------------- the shell-script stage1

fn sh_status(w: &World, uuid: &str) -> serde_json::Value {
    let dir = pod_dir(w, uuid);
    let app = fs::read_dir(dir.join("apps"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    serde_json::from_slice(&fs::read(dir.join("apps").join(app).join("status.json")).unwrap())
        .unwrap()
}

#[test]
fn shell_stage1_by_path() {
    let w = pod_world();
    let s1 = sh_stage1();
    let out = run_expect(
        &w,
        &[
            "--stage1-path",
            s1.to_str().unwrap(),
            "--no-overlay",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo hi-from-sh-stage1 $IMAGE_ENV; cat /etc/motd; exit 42",
        ],
        42,
    );
    assert_eq!(
        out,
        "hi-from-sh-stage1 from-image\nhello from the busybox test image\n"
    );
    let uuid = only_pod(&w);
    let st = sh_status(&w, &uuid);
    assert_eq!(
        (st["state"].as_str(), st["exitCode"].as_i64()),
        (Some("exited"), Some(42)),
        "{st}"
    );
    let s = status_json(&w, &uuid);
    assert_eq!(s["stage1"], "sh-test", "{s:#}");
    assert_eq!(s["state"], "exited", "{s:#}");
    assert_eq!(s["exit_code"], 42, "{s:#}");
    assert_eq!(s["apps"][0]["exitCode"], 42, "{s:#}");
    // gc goes through the stage1's gc entrypoint and removes the pod.
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn shell_stage1_by_name_from_stage1_d() {
    let w = pod_world();
    let d = w.path("config/user/stage1.d");
    fs::create_dir_all(&d).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(sh_stage1())
        .arg(d.join("sh-test"))
        .status()
        .unwrap();
    assert!(st.success());
    run_expect(
        &w,
        &[
            "--stage1-name",
            "sh-test",
            "--no-overlay",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "exit 7",
        ],
        7,
    );
    let uuid = only_pod(&w);
    assert_eq!(sh_status(&w, &uuid)["exitCode"], 7);
    assert_eq!(status_json(&w, &uuid)["stage1"], "sh-test");
    // An unknown name is a clear error that leaves nothing.
    let err = out_125(&w, &["run", "--stage1-name", "no-such-stage1", BUSYBOX]);
    assert!(err.contains("no-such-stage1"), "{err}");
    assert_eq!(pod_dirs(&w).len(), 1);
}

#[test]
fn shell_stage1_by_annotation() {
    let w = pod_world();
    let s1 = sh_stage1();
    let ann = format!("orbit.dev/stage1={}", s1.display());
    run_expect(
        &w,
        &[
            "--annotation",
            &ann,
            "--no-overlay",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "exit 3",
        ],
        3,
    );
    let uuid = only_pod(&w);
    assert_eq!(sh_status(&w, &uuid)["exitCode"], 3);
    assert_eq!(status_json(&w, &uuid)["stage1"], "sh-test");
    // The annotation is kept in the pod manifest.
    let m: serde_json::Value = serde_json::from_str(&out_ok(&w, &["cat-manifest", &uuid])).unwrap();
    assert_eq!(
        m["annotations"]["orbit.dev/stage1"],
        s1.display().to_string(),
        "{m:#}"
    );

    // By name, from stage1.d.
    let d = w.path("config/system/stage1.d");
    fs::create_dir_all(&d).unwrap();
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&s1)
        .arg(d.join("sh-test"))
        .status()
        .unwrap()
        .success());
    run_expect(
        &w,
        &[
            "--annotation",
            "orbit.dev/stage1=sh-test",
            "--no-overlay",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "exit 4",
        ],
        4,
    );
    // --stage1-name beats the annotation.
    run_expect(
        &w,
        &[
            "--annotation",
            "orbit.dev/stage1=sh-test",
            "--stage1-name",
            "ns",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "exit 5",
        ],
        5,
    );
    let stage1s: Vec<String> = list_json(&w)
        .iter()
        .map(|p| format!("{}={}", p["exit_code"], p["stage1"].as_str().unwrap()))
        .collect();
    let mut stage1s = stage1s;
    stage1s.sort();
    assert_eq!(stage1s, ["3=sh-test", "4=sh-test", "5=ns"]);
}

#[test]
fn shell_stage1_stop_and_enter() {
    let w = pod_world();
    let s1 = sh_stage1();
    let mut pod = BgPod::start(
        &w,
        &[
            "--stage1-path",
            s1.to_str().unwrap(),
            "--no-overlay",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    let o = orbit(&w, &["enter", &pod.uuid, "/bin/cat", "/etc/motd"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "hello from the busybox test image\n");
    out_ok(&w, &["stop", "--timeout", "10s", &pod.uuid]);
    let e = pod.wait(Duration::from_secs(10));
    assert_eq!(e.status.code(), Some(143), "{}", e.stderr);
    let st = sh_status(&w, &pod.uuid);
    assert_eq!(st["exitCode"], 143, "{st}");
    assert_eq!(status_json(&w, &pod.uuid)["state"], "exited");
}

#[test]
fn stage1_with_unsupported_interface_version_is_refused() {
    let w = pod_world();
    let s1 = w.path("stage1-v2");
    fs::create_dir_all(&s1).unwrap();
    fs::write(
        s1.join("stage1.json"),
        r#"{"interfaceVersion": 2, "name": "future", "entrypoints": {"run": "run"}}"#,
    )
    .unwrap();
    fs::write(s1.join("run"), "#!/bin/sh\necho ran >&2\nexit 0\n").unwrap();
    let err = out_125(&w, &["run", "--stage1-path", s1.to_str().unwrap(), BUSYBOX]);
    assert!(
        err.contains("interface version 2") || err.contains("interfaceVersion 2"),
        "the error should name the version: {err}"
    );
    assert!(
        err.contains("future") || err.contains(s1.to_str().unwrap()),
        "the error should name the stage1: {err}"
    );
    assert!(!err.contains("ran"), "{err}");
    // Same through stage1.d and the annotation.
    let d = w.path("config/user/stage1.d/future");
    fs::create_dir_all(d.parent().unwrap()).unwrap();
    fs::rename(&s1, &d).unwrap();
    let err = out_125(&w, &["run", "--stage1-name", "future", BUSYBOX]);
    assert!(err.contains("version 2"), "{err}");
    let err = out_125(
        &w,
        &[
            "prepare",
            "--annotation",
            "orbit.dev/stage1=future",
            BUSYBOX,
        ],
    );
    assert!(err.contains("version 2"), "{err}");
    assert_no_pods(&w);
}

// ---------------------------------------------------------------- deep images

/// An image of `depth` layers: busybox at the bottom, then layers that each add
/// `/layers/<i>` and overwrite `/top` with their number.
fn deep_image(w: &World, layout: &str, name: &str, depth: usize) -> String {
    let base = w.path(&format!("{layout}-src/0"));
    fs::create_dir_all(base.join("bin")).unwrap();
    fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
    let mut tars = vec![orbit_images::tar_dir(&base).unwrap()];
    for i in 1..depth {
        let d = common::tree(
            &w.path(&format!("{layout}-src/{i}")),
            &[(&format!("layers/{i}"), "x"), ("top", &i.to_string())],
        );
        tars.push(orbit_images::tar_dir(&d).unwrap());
    }
    let out = common::gzip_layers_image(w, layout, name, tars);
    format!("oci:{}", out.display())
}

#[test]
fn images_of_127_layers_run_and_deeper_ones_are_refused_before_a_pod_is_made() {
    let w = World::new();
    // The deepest image docker runs: its lower directories' full paths in this store are
    // far longer than the page the kernel takes mount options in.
    let deepest = deep_image(&w, "deep127", "example.com/deep:127", 127);
    out_ok(&w, &["--insecure-options=image", "fetch", &deepest]);
    let seen = run_expect(
        &w,
        &[
            "example.com/deep:127",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo $(cat /top) $(ls /layers | wc -l)",
        ],
        0,
    );
    // The top layer wins, and every layer is there.
    assert_eq!(seen.trim(), "126 126", "{seen}");

    let deeper = deep_image(&w, "deep128", "example.com/deep:128", 128);
    out_ok(&w, &["--insecure-options=image", "fetch", &deeper]);
    let before = pod_dirs(&w);
    let err = out_125(&w, &["run", "example.com/deep:128", "--exec", "/bin/true"]);
    assert!(
        err.contains("has 128 layers")
            && err.contains("at most 127")
            && err.contains("--no-overlay"),
        "{err}"
    );
    assert_eq!(pod_dirs(&w), before, "a refused image left a pod behind");
    // A copied root has no such limit.
    let seen = run_expect(
        &w,
        &[
            "--no-overlay",
            "example.com/deep:128",
            "--exec",
            "/bin/busybox",
            "--",
            "cat",
            "/top",
        ],
        0,
    );
    assert_eq!(seen.trim(), "127");
}

// ---------------------------------------------------------------- failures leave nothing

#[test]
fn missing_image_leaves_nothing() {
    let w = pod_world();
    let err = out_125(&w, &["run", "example.com/does-not-exist:1"]);
    assert!(err.contains("does-not-exist"), "{err}");
    let err = out_125(
        &w,
        &["run", &format!("oci:{}", w.path("no-layout").display())],
    );
    assert!(err.contains("no-layout"), "{err}");
    assert_no_pods(&w);
}

#[test]
fn bad_volume_specs_leave_nothing() {
    let w = pod_world();
    for (spec, needle) in [
        ("x,kind=nfs", "kind"),
        ("x,kind=host", "source"),
        (
            "x,kind=host,source=/no/such/dir/at/all",
            "/no/such/dir/at/all",
        ),
        ("x,kind=empty,readOnly=maybe", "maybe"),
        (
            "x,kind=host,source=/tmp,recursiveReadOnly=true",
            "recursiveReadOnly needs readOnly=true",
        ),
        ("Bad_Name,kind=empty", "Bad_Name"),
    ] {
        let err = out_125(
            &w,
            &["run", "--volume", spec, BUSYBOX, "--exec", "/bin/true"],
        );
        assert!(
            err.contains(needle),
            "--volume {spec}: error should mention {needle}: {err}"
        );
    }
    let err = out_125(
        &w,
        &[
            "run",
            "--volume",
            "d,kind=empty",
            "--volume",
            "d,kind=empty",
            BUSYBOX,
        ],
    );
    assert!(err.contains("'d'"), "{err}");
    let err = out_125(
        &w,
        &[
            "run",
            BUSYBOX,
            "--mount",
            "volume=ghost,target=/g",
            "--exec",
            "/bin/true",
        ],
    );
    assert!(err.contains("ghost"), "{err}");
    let err = out_125(
        &w,
        &[
            "run",
            "--volume",
            "d,kind=empty",
            BUSYBOX,
            "--mount",
            "volume=d,target=relative",
        ],
    );
    assert!(err.contains("relative"), "{err}");
    assert_no_pods(&w);
}

#[test]
fn missing_exec_path_fails_the_pod_cleanly() {
    let w = pod_world();
    let o = orbit(&w, &["run", BUSYBOX, "--exec", "/bin/does-not-exist"]);
    assert_eq!(
        code(&o),
        127,
        "stdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("/bin/does-not-exist"),
        "{}",
        text(&o.stderr)
    );
    let uuid = only_pod(&w);
    let st = status_json(&w, &uuid);
    assert_eq!(st["state"], "exited", "{st:#}");
    assert_eq!(st["exit_code"], 127, "{st:#}");
    assert_eq!(st["apps"][0]["exitCode"], 127, "{st:#}");
    let e = st["apps"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("status names the error: {st:#}"));
    assert!(e.contains("/bin/does-not-exist"), "{e}");
    assert!(
        st["apps"][0].get("pid").is_none_or(|p| p.is_null()),
        "an app that never started has no pid: {st:#}"
    );
    let raw: serde_json::Value = serde_json::from_slice(
        &fs::read(pod_dir(&w, &uuid).join("apps/busybox/status.json")).unwrap(),
    )
    .unwrap();
    assert!(
        raw["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/bin/does-not-exist"),
        "{raw}"
    );
    assert_pod_gone(&uuid, None);
    // In a multi-app pod the other app is stopped and the pod still exits 127.
    run_expect(
        &w,
        &[
            "--exec",
            "/bin/sh",
            BUSYBOX,
            "--name",
            "ok",
            "--",
            "-c",
            "sleep 1000",
            "---",
            BUSYBOX,
            "--name",
            "bad",
            "--exec",
            "/nope",
        ],
        127,
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    // Relative names are looked up in the app's PATH, not the host's.
    let o = orbit(&w, &["run", BUSYBOX, "--exec", "cargo"]);
    assert_eq!(code(&o), 127, "{}", text(&o.stderr));
}

// ---------------------------------------------------------------- fly

#[test]
fn fly_stage1_runs_in_the_hosts_namespaces_with_volumes() {
    let w = pod_world();
    let (data, vol) = host_volume(&w, "d", "data");
    let script = "readlink /proc/self/ns/pid; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt; cat /etc/motd; echo fly > /data/f; exit 42";
    let out = run_expect(
        &w,
        &[
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
            script,
        ],
        42,
    );
    let lines: Vec<&str> = out.lines().collect();
    let host = |ns: &str| {
        fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(
        lines.first().copied(),
        Some(host("pid").as_str()),
        "fly shares the host's pid namespace: {out}"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(host("net").as_str()),
        "fly shares the host's network: {out}"
    );
    assert_ne!(
        lines.get(2).copied(),
        Some(host("mnt").as_str()),
        "fly has a private mount namespace: {out}"
    );
    assert_eq!(
        lines.get(3).copied(),
        Some("hello from the busybox test image"),
        "the app is chrooted into its image: {out}"
    );
    assert_eq!(fs::read_to_string(data.join("f")).unwrap(), "fly\n");
    let uuid = only_pod(&w);
    let st = status_json(&w, &uuid);
    assert_eq!(
        (st["stage1"].as_str(), st["exit_code"].as_i64()),
        (Some("fly"), Some(42)),
        "{st:#}"
    );
    assert_pod_gone(&uuid, None);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}
