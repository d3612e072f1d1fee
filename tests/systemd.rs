//! systemd integration against a real systemd manager and machined on their own D-Bus bus
//! (tests/harness/systemd-user-bus.sh, started per test and stopped on drop): the pod's
//! transient scope and machine exist while it runs — with the right properties and the
//! pod's processes in the scope's cgroup — and are gone afterwards, also after kill -9;
//! `--systemd=yes` without a manager is a clear error that leaves no pod.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{text, World};
use pods_common::*;

/// A systemd manager + machined for one test.
struct Manager {
    dir: PathBuf,
    bus: String,
}

impl Manager {
    fn up() -> Manager {
        // Short path: the bus socket lives below it.
        let dir = PathBuf::from(format!(
            "/tmp/osd-{}",
            &uuid::Uuid::new_v4().to_string()[..8]
        ));
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/harness/systemd-user-bus.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(&dir)
            .env("SDU_MACHINED", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd harness: {}",
            text(&out.stderr)
        );
        let exports = text(&out.stdout);
        let get = |k: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")))
                .unwrap_or_default()
                .to_string()
        };
        Manager {
            dir,
            bus: get("DBUS_SYSTEM_BUS_ADDRESS"),
        }
    }

    fn busctl(&self, args: &[&str]) -> String {
        let out = Command::new("busctl")
            .arg(format!("--address={}", self.bus))
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    }

    fn unit_property(&self, unit: &str, iface: &str, prop: &str) -> Option<String> {
        let path = self.busctl(&[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            "s",
            unit,
        ]);
        let path = path.split('"').nth(1)?.to_string();
        let v = self.busctl(&[
            "get-property",
            "org.freedesktop.systemd1",
            &path,
            iface,
            prop,
        ]);
        (!v.is_empty()).then(|| v.trim().to_string())
    }

    fn machines(&self) -> String {
        self.busctl(&[
            "call",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "ListMachines",
        ])
    }

    fn orbit(&self, w: &World, args: &[&str]) -> Command {
        let mut c = w.cmd(args);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus);
        c
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/harness/systemd-user-bus.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_pod(m: &Manager, w: &World, extra: &[&str]) -> (Child, String) {
    let uuid_file = w.path(&format!("uuid-{}", uuid::Uuid::new_v4()));
    let mut args = vec![
        "--systemd=yes",
        "run",
        "--uuid-file-save",
        uuid_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let child = m
        .orbit(w, &args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let uuid = poll(Duration::from_secs(20), "uuid file", || {
        let s = std::fs::read_to_string(&uuid_file).unwrap_or_default();
        (s.trim().len() == 36).then(|| s.trim().to_string())
    });
    let ready = orbit(w, &["status", "--wait-ready", &uuid]);
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    (child, uuid)
}

#[test]
fn scope_and_machine_exist_while_the_pod_runs_and_vanish_after() {
    let w = pod_world();
    let m = Manager::up();
    let (mut child, uuid) = spawn_pod(
        &m,
        &w,
        &[
            BUSYBOX,
            "--memory=64M",
            "--pids-limit=50",
            "--cpu=500",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    );
    // The pod's limits are the scope's unit properties too.
    let scope = format!("orbit-{uuid}.scope");
    assert_eq!(
        m.unit_property(&scope, "org.freedesktop.systemd1.Scope", "MemoryMax")
            .as_deref(),
        Some("t 67108864")
    );
    assert_eq!(
        m.unit_property(&scope, "org.freedesktop.systemd1.Scope", "TasksMax")
            .as_deref(),
        Some("t 50")
    );
    assert_eq!(
        m.unit_property(
            &scope,
            "org.freedesktop.systemd1.Scope",
            "CPUQuotaPerSecUSec"
        )
        .as_deref(),
        Some("t 500000")
    );
    let unit = format!("orbit-{uuid}.scope");
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .as_deref(),
        Some("s \"active\"")
    );
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Scope", "Delegate")
            .as_deref(),
        Some("b true")
    );
    let slice = m
        .unit_property(&unit, "org.freedesktop.systemd1.Scope", "Slice")
        .unwrap();
    assert!(slice.contains("machine.slice"), "{slice}");
    let desc = m
        .unit_property(&unit, "org.freedesktop.systemd1.Unit", "Description")
        .unwrap();
    assert!(desc.contains(&uuid) && desc.contains("busybox"), "{desc}");
    // The pod's app runs inside the scope's cgroup.
    let cgroup = m
        .unit_property(&unit, "org.freedesktop.systemd1.Scope", "ControlGroup")
        .unwrap();
    let cgroup = cgroup
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string();
    let app_pid = status_json(&w, &uuid)["apps"][0]["pid"].as_i64().unwrap();
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{app_pid}/cgroup")).unwrap();
    // systemd tracks processes in the v1 name=systemd hierarchy or in cgroup2 (hybrid hosts
    // use either, depending on the systemd build and what is mounted): the app must be
    // inside the scope in whichever one the manager uses.
    assert!(
        proc_cgroup.lines().any(|l| {
            let (_, rest) = l.split_once(':').unwrap_or_default();
            let (controllers, path) = rest.split_once(':').unwrap_or_default();
            (controllers == "name=systemd" || controllers.is_empty()) && path.starts_with(&cgroup)
        }),
        "app not in {cgroup}: {proc_cgroup}"
    );
    // machined registration happens off the start path: it shows up shortly.
    poll(Duration::from_secs(10), "machine registered", || {
        m.machines()
            .contains(&format!("orbit-{uuid}"))
            .then_some(())
    });

    out_ok(&w, &["stop", &uuid]);
    let st = wait_within(&mut child, Duration::from_secs(20)).expect("orbit run exits");
    assert_eq!(st.code(), Some(143));
    poll(Duration::from_secs(10), "scope gone", || {
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .is_none()
            .then_some(())
    });
    poll(Duration::from_secs(10), "machine gone", || {
        (!m.machines().contains(&format!("orbit-{uuid}"))).then_some(())
    });
}

#[test]
fn kill_9_of_the_pod_leaves_no_unit() {
    let w = pod_world();
    let m = Manager::up();
    let (mut child, uuid) = spawn_pod(
        &m,
        &w,
        &[BUSYBOX, "--exec", "/bin/sh", "--", "-c", "sleep 1000"],
    );
    let unit = format!("orbit-{uuid}.scope");
    assert!(m
        .unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
        .is_some());
    child.kill().unwrap();
    let _ = child.wait();
    poll(Duration::from_secs(10), "scope gone after kill -9", || {
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .is_none()
            .then_some(())
    });
    poll(
        Duration::from_secs(10),
        "machine gone after kill -9",
        || (!m.machines().contains(&format!("orbit-{uuid}"))).then_some(()),
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn systemd_yes_without_a_manager_is_a_clear_error_and_leaves_no_pod() {
    let w = pod_world();
    let out = w
        .cmd(&["--systemd=yes", "run", BUSYBOX, "--exec", "/bin/true"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no systemd manager"),
        "{}",
        text(&out.stderr)
    );
    assert_no_pods(&w);
    // auto without a manager just runs the pod.
    let out = w
        .cmd(&["run", BUSYBOX, "--exec", "/bin/true"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn socket_activation_fds_reach_the_first_app() {
    let w = pod_world();
    // A free loopback port (released just before systemd-socket-activate binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out_file = w.path("activation.out");
    let script = "echo fds=$LISTEN_FDS pid=$LISTEN_PID self=$$; readlink /proc/self/fd/3; if [ -e /proc/self/fd/4 ]; then echo extra-fd; fi";
    // The pod world's environment (store, config) is handed on with -E: newer
    // systemd-socket-activate releases pass nothing else through to the program they start.
    let env: Vec<String> = w
        .cmd(&[])
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    let mut activator = Command::new("systemd-socket-activate")
        .args(env.iter().flat_map(|e| ["-E", e.as_str()]))
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(common::orbit_bin())
        .args([
            "--systemd=no",
            "run",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
        ])
        .envs(
            w.cmd(&[])
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first connection makes systemd-socket-activate start orbit with the socket.
    let _conn = poll(Duration::from_secs(10), "activation listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let status =
        wait_within(&mut activator, Duration::from_secs(20)).expect("the activated pod exits");
    assert!(status.success(), "{status}");
    let out = std::fs::read_to_string(&out_file).unwrap();
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    let self_pid = first.rsplit("self=").next().unwrap();
    assert_eq!(
        first,
        format!("fds=1 pid={self_pid} self={self_pid}"),
        "LISTEN_PID names the app itself: {out}"
    );
    assert!(
        lines.next().unwrap_or_default().starts_with("socket:["),
        "fd 3 is the socket: {out}"
    );
    assert!(!out.contains("extra-fd"), "{out}");
}

#[test]
fn run_unit_starts_the_pod_as_a_transient_service_and_stop_goes_through_systemd() {
    let w = pod_world();
    let m = Manager::up();
    let out = m
        .orbit(
            &w,
            &[
                "run",
                "--unit",
                BUSYBOX,
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                "echo started; sleep 1000",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uuid = text(&out.stdout).trim().to_string();
    assert_eq!(uuid.len(), 36, "prints the UUID: {uuid:?}");
    let ready = m
        .orbit(&w, &["status", "--wait-ready", &uuid])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    let unit = format!("orbit-{uuid}.service");
    assert_eq!(status_json(&w, &uuid)["unit"], unit.as_str());
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .as_deref(),
        Some("s \"active\"")
    );
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Service", "KillMode")
            .as_deref(),
        Some("s \"mixed\"")
    );
    // The service's main process is the pod's supervisor, and the app runs in its cgroup.
    let main_pid = m
        .unit_property(&unit, "org.freedesktop.systemd1.Service", "MainPID")
        .unwrap();
    let main_pid: i64 = main_pid.trim_start_matches("u ").parse().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{main_pid}/cmdline")).unwrap();
    assert!(
        cmdline.contains("stage1") && cmdline.contains(&uuid),
        "{cmdline:?}"
    );
    let out = m.orbit(&w, &["stop", &uuid]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st = status_json(&w, &uuid);
    assert_eq!(st["state"], "exited");
    assert_eq!(st["exit_code"], 143, "{st}");
    poll(Duration::from_secs(15), "service gone", || {
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .is_none()
            .then_some(())
    });
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn unit_name_collision_is_a_clear_error_and_leaves_no_pod() {
    let w = pod_world();
    let m = Manager::up();
    let name = format!("orbit-collide-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    let first = m
        .orbit(
            &w,
            &[
                "run",
                &format!("--unit={name}"),
                BUSYBOX,
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                "sleep 1000",
            ],
        )
        .output()
        .unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let uuid = text(&first.stdout).trim().to_string();
    let second = m
        .orbit(
            &w,
            &[
                "run",
                &format!("--unit={name}"),
                BUSYBOX,
                "--exec",
                "/bin/true",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(125));
    let err = text(&second.stderr);
    assert!(
        err.contains(&name) && err.contains("systemd refused"),
        "{err}"
    );
    // Only the first pod exists.
    let pods = list_json(&w);
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0]["uuid"], uuid.as_str());
    let _ = m.orbit(&w, &["stop", "--force", &uuid]).output();
}

#[test]
fn run_prepared_unit_runs_a_prepared_pod_as_a_named_service() {
    let w = pod_world();
    let m = Manager::up();
    let uuid = out_ok(
        &w,
        &[
            "prepare",
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "sleep 1000",
        ],
    )
    .trim()
    .to_string();
    let name = format!("orbit-named-{}", &uuid[..8]);
    let out = m
        .orbit(&w, &["run-prepared", &format!("--unit={name}"), &uuid])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ready = m
        .orbit(&w, &["status", "--wait-ready", &uuid])
        .output()
        .unwrap();
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    let unit = format!("{name}.service");
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .as_deref(),
        Some("s \"active\"")
    );
    assert!(m
        .orbit(&w, &["stop", &uuid])
        .output()
        .unwrap()
        .status
        .success());
    assert_eq!(status_json(&w, &uuid)["exit_code"], 143);
}

/// A static helper that sends its argument to $NOTIFY_SOCKET (busybox cannot).
fn notify_helper(w: &World) -> PathBuf {
    let dir = w.path("notify-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("notify.c");
    std::fs::write(
        &src,
        r#"#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
int main(int argc, char **argv) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || argc < 2) return 2;
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    if (sendto(s, argv[1], strlen(argv[1]), 0, (struct sockaddr *)&a, sizeof a) < 0) { perror("sendto"); return 1; }
    return 0;
}
"#,
    )
    .unwrap();
    let st = Command::new("cc")
        .arg("-static")
        .arg("-O2")
        .arg("-o")
        .arg(dir.join("notify"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "cc failed");
    dir
}

#[test]
fn notify_socket_readiness_is_relayed_and_seen_by_wait_ready() {
    let w = pod_world();
    let bin = notify_helper(&w);
    let sock_path = w.path("systemd-notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let uuid_file = w.path("uuid");
    let vol = format!("t,kind=host,source={},readOnly=true", bin.display());
    let mut child = w
        .cmd(&[
            "--systemd=no",
            "run",
            "--uuid-file-save",
            uuid_file.to_str().unwrap(),
            "--volume",
            &vol,
            BUSYBOX,
            "--mount",
            "volume=t,target=/t",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo $NOTIFY_SOCKET; /t/notify READY=1; sleep 1000",
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("the app's READY=1 reaches the unit's notify socket");
    assert_eq!(&buf[..n], b"READY=1");
    let uuid = poll(Duration::from_secs(10), "uuid file", || {
        let s = std::fs::read_to_string(&uuid_file).unwrap_or_default();
        (s.trim().len() == 36).then(|| s.trim().to_string())
    });
    let ready = orbit(&w, &["status", "--wait-ready", &uuid]);
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    let st = status_json(&w, &uuid);
    assert_eq!(st["notify"], true);
    assert!(st["ready"].is_string(), "{st}");
    assert_eq!(
        text(&orbit(&w, &["logs", &uuid]).stdout).lines().next(),
        Some("/run/orbit/notify.sock")
    );
    out_ok(&w, &["stop", &uuid]);
    let _ = wait_within(&mut child, Duration::from_secs(20));
}

/// Reads journald native-protocol datagrams: `KEY=value` lines and binary `KEY\n<len><data>\n` fields.
fn journal_fields(d: &[u8]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut i = 0;
    while i < d.len() {
        let end = d[i..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(d.len(), |p| i + p);
        let line = &d[i..end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            i = end + 1;
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap()) as usize;
            out.insert(
                key,
                String::from_utf8_lossy(&d[end + 9..end + 9 + len]).into_owned(),
            );
            i = end + 9 + len + 1;
        }
    }
    out
}

#[test]
fn app_output_reaches_journald_with_pod_and_app_fields() {
    let w = pod_world();
    let sock_path = w.path("journal.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let uuid_file = w.path("uuid");
    let out = w
        .cmd(&[
            "--systemd=no",
            "run",
            "--log=both",
            "--uuid-file-save",
            uuid_file.to_str().unwrap(),
            BUSYBOX,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "echo to-stdout; echo to-stderr >&2",
        ])
        .env("ORBIT_JOURNAL_SOCKET", &sock_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uuid = std::fs::read_to_string(&uuid_file)
        .unwrap()
        .trim()
        .to_string();
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a journal entry per line");
        got.push(journal_fields(&buf[..n]));
    }
    got.sort_by_key(|f| f["MESSAGE"].clone());
    assert_eq!(got[0]["MESSAGE"], "to-stderr");
    assert_eq!(got[0]["PRIORITY"], "3");
    assert_eq!(got[1]["MESSAGE"], "to-stdout");
    assert_eq!(got[1]["PRIORITY"], "6");
    for f in &got {
        assert_eq!(f["ORBIT_POD"], uuid);
        assert_eq!(f["ORBIT_APP"], "busybox");
        assert_eq!(f["SYSLOG_IDENTIFIER"], "busybox");
    }
    // --log=both keeps the CRI file too.
    assert!(text(&orbit(&w, &["logs", &uuid]).stdout).contains("to-stdout"));
    // --log=journal: no file; `orbit logs` points at journalctl.
    let out = w
        .cmd(&[
            "--systemd=no",
            "run",
            "--log=journal",
            "--uuid-file-save",
            uuid_file.to_str().unwrap(),
            BUSYBOX,
            "--exec",
            "/bin/true",
        ])
        .env("ORBIT_JOURNAL_SOCKET", &sock_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let uuid = std::fs::read_to_string(&uuid_file)
        .unwrap()
        .trim()
        .to_string();
    let err = text(&orbit(&w, &["logs", &uuid]).stderr);
    assert!(err.contains("journalctl ORBIT_POD="), "{err}");
    // --log=journal without journald is refused before anything is created.
    let out = w
        .cmd(&["run", "--log=journal", BUSYBOX, "--exec", "/bin/true"])
        .env("ORBIT_JOURNAL_SOCKET", "/nonexistent/journal")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("journald is not running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_manager_shutting_down_stops_its_pods_cleanly() {
    let w = pod_world();
    let m = Manager::up();
    let (mut child, uuid) = spawn_pod(
        &m,
        &w,
        &[BUSYBOX, "--exec", "/bin/sh", "--", "-c", "sleep 1000"],
    );
    // systemd stops every unit when it goes down, the pod's scope included: the pod must end
    // as a stopped pod (exit recorded, nothing leaked), not be left half-alive.
    drop(m);
    let st = wait_within(&mut child, Duration::from_secs(20)).expect("orbit run exits");
    assert!(matches!(st.code(), Some(143) | None), "{st}");
    assert_eq!(status_json(&w, &uuid)["state"], "exited");
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn run_unit_notify_is_active_once_the_app_says_ready() {
    let w = pod_world();
    let m = Manager::up();
    let bin = notify_helper(&w);
    let vol = format!("t,kind=host,source={},readOnly=true", bin.display());
    let out = m
        .orbit(
            &w,
            &[
                "run",
                "--unit",
                "--notify",
                "--volume",
                &vol,
                BUSYBOX,
                "--mount",
                "volume=t,target=/t",
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                "/t/notify READY=1; sleep 1000",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let uuid = text(&out.stdout).trim().to_string();
    let unit = format!("orbit-{uuid}.service");
    assert_eq!(
        m.unit_property(&unit, "org.freedesktop.systemd1.Service", "Type")
            .as_deref(),
        Some("s \"notify\"")
    );
    // Type=notify: systemd holds the unit in "activating" until READY=1 arrives through
    // the pod's relay.
    poll(Duration::from_secs(15), "unit active after READY=1", || {
        (m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .as_deref()
            == Some("s \"active\""))
        .then_some(())
    });
    assert!(status_json(&w, &uuid)["ready"].is_string());
    assert!(m
        .orbit(&w, &["stop", &uuid])
        .output()
        .unwrap()
        .status
        .success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cri_sandbox_runs_as_a_service_in_the_kubelets_slice() {
    use cri_common::*;
    use orbit::cri::proto;
    let w = pod_world();
    let m = Manager::up();
    let cri = Cri::start_on_bus(&w, &m.bus);
    let (mut rt, _) = cri.clients().await;
    let driver = rt
        .runtime_config(proto::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner()
        .linux
        .unwrap()
        .cgroup_driver;
    assert_eq!(driver, proto::CgroupDriver::Systemd as i32);
    // A cgroupfs path under the systemd driver: refused, saying what to do.
    let mut bad = sandbox_config(&w, "path");
    bad.linux = Some(proto::LinuxPodSandboxConfig {
        cgroup_parent: "/kubepods/pod1".into(),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("slice"), "{}", e.message());
    assert_no_pods(&w);

    let mut config = sandbox_config(&w, "slice");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        cgroup_parent: "orbittest-besteffort-pod1.slice".into(),
        ..Default::default()
    });
    let sb = run_sandbox(&mut rt, &config).await;
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("c", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &id).await;
    let unit = format!("orbit-{sb}.service");
    // systemd nests a dashed slice in its prefixes' slices.
    let cgroup = format!(
        "/orbittest.slice/orbittest-besteffort.slice/orbittest-besteffort-pod1.slice/{unit}"
    );
    // (Below the test manager's own root.)
    let control_group = m
        .unit_property(&unit, "org.freedesktop.systemd1.Service", "ControlGroup")
        .unwrap();
    assert!(
        control_group.ends_with(&format!("{cgroup}\"")),
        "{control_group}"
    );
    let pid = container_pid(&mut rt, &id).await;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let systemd_line = cgroups
        .lines()
        .find(|l| l.contains(":name=systemd:") || l.starts_with("0::"))
        .unwrap();
    // (This manager runs the named hierarchy only: the app is in the service's cgroup there.)
    assert!(systemd_line.contains(&cgroup), "{cgroups}");
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    poll(Duration::from_secs(15), "service gone", || {
        m.unit_property(&unit, "org.freedesktop.systemd1.Unit", "ActiveState")
            .is_none()
            .then_some(())
    });
}
