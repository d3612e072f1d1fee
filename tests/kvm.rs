//! The `kvm` stage1 against real QEMU (microvm, TCG here: this machine's /dev/kvm cannot boot
//! the stock kernel) and the guest kernel made by scripts/kvm-kernel.sh (tests/run.sh makes
//! it; ORBIT_TEST_KVM_KERNEL points at it). Every boot costs seconds, so each test boots as
//! few VMs as it can and checks several things per boot.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::{text, TestMount, World};
use pods_common::*;

use cri_common::kvm_kernel as kernel;

/// `run` arguments for a kvm pod: the stage1, the kernel, then `rest`.
fn kvm<'a>(k: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--stage1-name=kvm", k];
    v.extend_from_slice(rest);
    v
}

fn qemu_pid(w: &World, uuid: &str) -> i32 {
    fs::read_to_string(pod_dir(w, uuid).join("kvm/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// No VM, socket or mount of the pod is left.
fn assert_vm_gone(w: &World, uuid: &str, qemu: i32) {
    assert!(
        !common::process_alive(qemu),
        "QEMU {qemu} of pod {uuid} survived"
    );
    for ext in ["agent", "ctl"] {
        let s = PathBuf::from(format!("/run/orbit/kvm/{uuid}.{ext}"));
        assert!(!s.exists(), "{} left", s.display());
    }
    let mounts = mounts_with(&w.store().display().to_string());
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
}

#[test]
fn a_two_app_pod_runs_in_a_vm_with_env_user_workdir_volume_and_logs() {
    let w = pod_world();
    let k = kernel();
    let (vol, volume) = host_volume(&w, "data", "vol");
    fs::write(vol.join("in"), "from-host\n").unwrap();
    let script =
        "echo foo=$FOO; id; pwd; cat /data/in; echo from-guest > /data/out; uname -r; exit 3";
    let args = kvm(
        &k,
        &[
            "--volume",
            &volume,
            BUSYBOX,
            "--set-env=FOO=bar",
            "--working-dir=/tmp",
            "--mount",
            "volume=data,target=/data",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            script,
            "---",
            BUSYBOX,
            "--name=second",
            "--user=1000",
            "--group=100",
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            "id -u; echo second-err >&2; printf partial",
        ],
    );
    let out = run_expect(&w, &args, 3);
    assert!(out.contains("foo=bar"), "{out}");
    assert!(out.contains("uid=0(root)"), "{out}");
    assert!(out.contains("/tmp\n"), "{out}");
    assert!(out.contains("from-host"), "{out}");
    assert!(out.contains("1000\n"), "{out}");
    // The guest runs the guest kernel.
    let version = fs::read_to_string(
        PathBuf::from(k.trim_start_matches("--kvm-kernel=")).with_file_name("kernel.version"),
    )
    .unwrap();
    assert!(out.contains(&format!("{}\n", version.trim())), "{out}");
    assert_eq!(fs::read_to_string(vol.join("out")).unwrap(), "from-guest\n");
    let uuid = only_pod(&w);
    let st = status_json(&w, &uuid);
    assert_eq!(st["stage1"], "kvm");
    assert_eq!(st["exit_code"], 3);
    assert_eq!(st["apps"][0]["exitCode"], 3);
    assert_eq!(st["apps"][1]["exitCode"], 0);
    let logs = cri_log(&w, &uuid, "second");
    assert!(
        logs.iter()
            .any(|(_, s, _, t)| s == "stderr" && t == "second-err"),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|(_, s, _, t)| s == "stdout" && t == "1000"),
        "{logs:?}"
    );
    // Output without a newline is logged as the agent relays it: a `P` record.
    assert!(
        logs.iter()
            .any(|(_, s, tag, t)| s == "stdout" && tag == "P" && t == "partial"),
        "{logs:?}"
    );
    let qemu = qemu_pid(&w, &uuid);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    assert_vm_gone(&w, &uuid, qemu);
}

#[test]
fn enter_runs_in_the_guest_and_stop_is_graceful_while_force_kills_the_vm() {
    let w = pod_world();
    let k = kernel();
    let script = "trap 'echo got-term; exit 7' TERM; echo up; while true; do sleep 0.1; done";
    let mut a = BgPod::start(
        &w,
        &kvm(&k, &[BUSYBOX, "--exec", "/bin/sh", "--", "-c", script]),
    );
    let o = orbit(
        &w,
        &[
            "enter",
            &a.uuid,
            "/bin/sh",
            "-c",
            "echo inside $(hostname); cat /proc/1/comm; exit 4",
        ],
    );
    assert_eq!(code(&o), 4, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("inside orbit-{}", &a.uuid[..8])),
        "{out}"
    );
    // PID 1 in there is the guest agent, not the host's init.
    assert!(out.contains("init"), "{out}");
    let qemu = qemu_pid(&w, &a.uuid);
    // The guest gets a view of the pod (app roots, volumes, /etc files), never the pod
    // directory, whose files (exit hook, pid, records) the host acts on as root.
    let cmdline = fs::read_to_string(format!("/proc/{qemu}/cmdline")).unwrap();
    let pod = pod_dir(&w, &a.uuid).display().to_string();
    let shares: Vec<&str> = cmdline
        .split('\0')
        .filter(|a| a.starts_with("local,"))
        .collect();
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert!(
        shares[0].contains(&format!("path={pod}/kvm/share,")),
        "{shares:?}"
    );
    out_ok(&w, &["stop", &a.uuid]);
    let e = a.wait(Duration::from_secs(60));
    assert_eq!(e.status.code(), Some(7), "{}", e.stderr);
    assert!(e.stdout.contains("got-term"), "{}", e.stdout);
    assert_vm_gone(&w, &a.uuid, qemu);

    let mut b = BgPod::start(
        &w,
        &kvm(&k, &[BUSYBOX, "--exec", "/bin/sleep", "--", "1000"]),
    );
    let qemu = qemu_pid(&w, &b.uuid);
    out_ok(&w, &["stop", "--force", &b.uuid]);
    let e = b.wait(Duration::from_secs(60));
    assert_eq!(e.status.code(), Some(137), "{}", e.stderr);
    let st = status_json(&w, &b.uuid);
    assert_eq!(st["apps"][0]["exitCode"], 137);
    assert_eq!(st["apps"][0]["reason"], "VMTerminated");
    assert_vm_gone(&w, &b.uuid, qemu);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

#[test]
fn kill_9_of_the_supervisor_takes_the_vm_down_and_gc_cleans_up() {
    let w = pod_world();
    let k = kernel();
    let mut a = BgPod::start(
        &w,
        &kvm(&k, &[BUSYBOX, "--exec", "/bin/sleep", "--", "1000"]),
    );
    let qemu = qemu_pid(&w, &a.uuid);
    assert!(common::process_alive(qemu));
    // SAFETY: kill(2) of the orbit run process this test started.
    unsafe { libc::kill(a.run_pid() as i32, libc::SIGKILL) };
    a.wait(Duration::from_secs(30));
    poll(
        Duration::from_secs(10),
        "QEMU to die with its supervisor",
        || (!common::process_alive(qemu)).then_some(()),
    );
    let uuid = a.uuid.clone();
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    assert_vm_gone(&w, &uuid, qemu);
}

#[test]
fn an_app_over_its_memory_limit_is_reported_as_oom_killed() {
    let w = pod_world();
    let k = kernel();
    run_expect(
        &w,
        &kvm(
            &k,
            &[
                "--memory=32M",
                BUSYBOX,
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                "x=a; while true; do x=$x$x; done",
            ],
        ),
        137,
    );
    let st = status_json(&w, &only_pod(&w));
    assert_eq!(st["apps"][0]["reason"], "OOMKilled", "{st}");
}

#[test]
fn a_missing_kernel_is_a_clear_error_before_anything_is_made() {
    let w = pod_world();
    let e = out_125(
        &w,
        &[
            "run",
            "--stage1-name=kvm",
            "--kvm-kernel=/nonexistent/vmlinux",
            BUSYBOX,
        ],
    );
    assert!(
        e.contains("scripts/kvm-kernel.sh") && e.contains("/nonexistent/vmlinux"),
        "{e}"
    );
    // Without --kvm-kernel the config dirs are searched, and named.
    let e = out_125(&w, &["run", "--stage1-name=kvm", BUSYBOX]);
    assert!(
        e.contains("kvm/vmlinux") && e.contains("scripts/kvm-kernel.sh"),
        "{e}"
    );
    assert_no_pods(&w);
    let e = out_125(&w, &["run", "--kvm-accel=tcg", BUSYBOX]);
    assert!(e.contains("only to the kvm stage1"), "{e}");
    let k = kernel();
    let e = out_125(
        &w,
        &["run", "--stage1-name=kvm", &k, "--private-users", BUSYBOX],
    );
    assert!(
        e.contains("kvm stage1") && e.contains("--private-users"),
        "{e}"
    );
    assert_no_pods(&w);
}

#[test]
fn an_interactive_app_gets_the_vms_serial_console_as_its_terminal() {
    let w = pod_world();
    let k = kernel();
    let mut args = vec!["run"];
    args.extend(kvm(&k, &["--interactive", BUSYBOX, "--exec", "/bin/sh"]));
    let (shown, exit) = under_pty(&w, &args, "tty; echo $((6*7)); exit 5\n");
    assert_eq!(exit, 5, "terminal showed:\n{shown}");
    assert!(
        shown.contains("/dev/ttyS0") && shown.contains("42"),
        "{shown}"
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

/// A CRI sandbox with the kvm handler: one VM, containers added to it while it runs, each
/// started, exec'd into, stopped and removed there; nothing left when the sandbox goes.
/// A sandbox whose stage1 fails at once reports what the stage1 said (it used to be lost:
/// the failed pod, with the log of its words, had already moved to the garbage).
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_whose_stage1_fails_at_once_says_why() {
    use cri_common::*;
    use orbit::cri::proto;
    let w = pod_world();
    let k = kernel();
    let missing = w.path("no-agent-here");
    let missing = missing.display().to_string();
    let cri = Cri::start_with_env(&w, &["--net=none", &k], &[("ORBIT_KVM_AGENT", &missing)]);
    let (mut rt, _) = cri.clients().await;
    let err = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config(&w, "no-agent")),
            runtime_handler: "kvm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        err.message().contains("stage1 kvm: run") && err.message().contains(&missing),
        "the stage1's own words are missing: {}",
        err.message()
    );
    pods_common::assert_no_pods(&w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cri_sandbox_runs_its_containers_in_one_vm() {
    use cri_common::*;
    use orbit::cri::proto;
    let w = pod_world();
    let k = kernel();
    let cri = Cri::start_with(&w, &[], &["--net=none", &k]);
    let (mut rt, _) = cri.clients().await;
    let handlers = rt
        .status(proto::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    assert!(handlers.iter().any(|h| h.name == "kvm"), "{handlers:?}");
    let mut config = sandbox_config(&w, "vm");
    // The kubelet's pod resources size the VM (their limit plus 192 MiB for the guest).
    config.linux = Some(proto::LinuxPodSandboxConfig {
        resources: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 320 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let sb = run_kvm_sandbox(&mut rt, &config).await;
    let qemu = qemu_pid(&w, &sb);
    assert!(common::process_alive(qemu));
    let cmdline = fs::read_to_string(format!("/proc/{qemu}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    assert!(args.windows(2).any(|w| w == ["-m", "512"]), "{args:?}");

    let vol = w.path("vm-vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("in"), "from-host\n").unwrap();
    // Privileged: it reaches the agent's root below (/proc/1/root) to play a hostile guest.
    let mut one = privileged(container_config(
        "one",
        BUSYBOX,
        "echo hello-from-vm; cat /data/in; echo from-guest > /data/out; exec sleep 600",
    ));
    one.mounts = vec![proto::Mount {
        container_path: "/data".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    }];
    let one = create(&mut rt, &sb, &config, one).await;
    start(&mut rt, &one).await;
    // It runs in the guest: another kernel, the sandbox's hostname.
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let (code, guest_kernel) = sh(&mut rt, &one, "uname -r").await;
    assert_eq!(code, 0);
    assert_ne!(guest_kernel, host_kernel.trim());
    assert_eq!(sh(&mut rt, &one, "hostname").await.1, "vm-host");
    let log = w.path("kubelet-logs/vm/one/0.log");
    poll(
        Duration::from_secs(30),
        "the container's output in its log",
        || {
            let lines = log_lines(&log);
            (lines.contains(&"hello-from-vm".to_string())
                && lines.contains(&"from-host".to_string()))
            .then_some(())
        },
    );
    poll(
        Duration::from_secs(30),
        "the guest's write on the host",
        || (fs::read_to_string(vol.join("out")).ok()? == "from-guest\n").then_some(()),
    );

    // A second container joins the same VM.
    let two = create(
        &mut rt,
        &sb,
        &config,
        container_config("two", BUSYBOX, "exec sleep 600"),
    )
    .await;
    start(&mut rt, &two).await;
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    assert_eq!(
        sh(&mut rt, &one, boot_id).await,
        sh(&mut rt, &two, boot_id).await
    );
    assert_eq!(qemu_pid(&w, &sb), qemu, "one VM for the sandbox");

    // Stats come from the guest's cgroups, reported by the agent.
    poll(
        Duration::from_secs(30),
        "the containers' stats from the VM",
        || {
            let rt = rt.clone();
            let stats = std::thread::spawn(move || {
                let mut rt = rt;
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(rt.list_container_stats(proto::ListContainerStatsRequest::default()))
            })
            .join()
            .unwrap()
            .ok()?
            .into_inner()
            .stats;
            let mem = |c: &proto::ContainerStats| {
                c.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            };
            (stats.len() == 2 && stats.iter().all(|c| mem(c).is_some_and(|m| m > 0))).then_some(())
        },
    );

    // A guest that plants a link where the host mounts the next container's root (the pod
    // share is the guest's to write, and its root can leave its app's chroot) does not get
    // that root mounted on a host path: adding fails and the host path is untouched.
    let victim = w.path("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("keep"), "host file\n").unwrap();
    let plant = format!("ln -s {} /proc/1/root/pod/apps/evil-0", victim.display());
    assert_eq!(sh(&mut rt, &one, &plant).await.0, 0);
    let e = create_refused(
        &mut rt,
        &sb,
        &config,
        container_config("evil", BUSYBOX, "exec sleep 600"),
    )
    .await;
    assert!(e.message().contains("evil-0"), "{e:?}");
    assert!(mounts_with(&victim.display().to_string()).is_empty());
    let left: Vec<_> = fs::read_dir(&victim)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("keep")]);

    // PortForward reaches a port on the VM's loopback (through the stage1's relay).
    let serve = "mkdir -p /www && echo served-from-the-vm > /www/index.html && \
                 exec httpd -f -p 127.0.0.1:8080 -h /www";
    let web = create(
        &mut rt,
        &sb,
        &config,
        container_config("web", BUSYBOX, serve),
    )
    .await;
    start(&mut rt, &web).await;
    let forward_url = |port: i32| {
        let mut rt = rt.clone();
        let sb = sb.clone();
        async move {
            rt.port_forward(proto::PortForwardRequest {
                pod_sandbox_id: sb,
                port: vec![port],
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };
    poll(Duration::from_secs(30), "httpd in the VM", || {
        (sh_blocking(&rt, &web, "wget -q -O- http://127.0.0.1:8080/").0 == 0).then_some(())
    });
    let u = forward_url(8080).await;
    let out = client(
        &["portforward", &u, "8080"],
        b"GET /index.html HTTP/1.0\r\n\r\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("served-from-the-vm"),
        "{}",
        text(&out.stdout)
    );
    // Nothing listens on 8081: the failure comes back on the error stream.
    let u = forward_url(8081).await;
    let out = client(&["portforward", &u, "8081"], b"x");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("8081"), "{}", text(&out.stderr));

    // Exec with input and with a terminal of the guest's, as kubectl exec -i / -it.
    let exec_url = |cmd: &[&str], tty: bool| {
        let mut rt = rt.clone();
        let req = proto::ExecRequest {
            container_id: two.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: true,
            stdout: true,
            stderr: !tty,
        };
        async move { rt.exec(req).await.unwrap().into_inner().url }
    };
    let input: Vec<u8> = (0..(64 << 10)).map(|i| (i % 251) as u8).collect();
    let u = exec_url(&["sh", "-c", "cat; exit 3"], false).await;
    let out = client(&["exec", &u, "--stdin", "--stdout", "--stderr"], &input);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout == input, "64 KiB of stdin came back changed");
    let u = exec_url(&["sh", "-c", "test -t 0 && stty size && exit 4"], true).await;
    let out = client(
        &[
            "exec",
            &u,
            "--stdin",
            "--stdout",
            "--tty",
            "--resize=120x40",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "40 120");
    let u = exec_url(&["sh"], true).await;
    let out = client(
        &["exec", &u, "--stdin", "--stdout", "--tty"],
        b"echo $((6*7))\nexit 0\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("42"), "{}", text(&out.stdout));

    // The first container stops (SIGTERM to its sleep) and goes; the second runs on.
    rt.stop_container(proto::StopContainerRequest {
        container_id: one.clone(),
        timeout: 30,
    })
    .await
    .unwrap();
    let st = container_state(&mut rt, &one).await;
    assert_eq!(st.state, proto::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 143);
    rt.remove_container(proto::RemoveContainerRequest {
        container_id: one.clone(),
    })
    .await
    .unwrap();
    assert!(
        mounts_with(&format!("{sb}/apps/one")).is_empty(),
        "{:?}",
        mounts_with(&sb)
    );
    assert_eq!(
        sh(&mut rt, &two, "echo still").await,
        (0, "still".to_string())
    );

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    assert_vm_gone(&w, &sb, qemu);
}

/// RunPodSandbox with `config` and the kvm handler: the sandbox's ID.
async fn run_kvm_sandbox(
    rt: &mut orbit::cri::proto::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    config: &orbit::cri::proto::PodSandboxConfig,
) -> String {
    rt.run_pod_sandbox(orbit::cri::proto::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: "kvm".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

/// `sh -c SCRIPT` in container `id` through ExecSync, from a sync context: its exit code
/// and output.
fn sh_blocking(
    rt: &orbit::cri::proto::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
    script: &str,
) -> (i32, String) {
    let (mut rt, id, script) = (rt.clone(), id.to_string(), script.to_string());
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move { cri_common::sh(&mut rt, &id, &script).await })
    })
    .join()
    .unwrap()
}

/// The `CapBnd:`-style hex mask of capabilities `names` (`CAP_*`).
fn cap_mask<S: AsRef<str>>(names: &[S]) -> String {
    let bits = names.iter().fold(0u64, |m, n| {
        m | n.as_ref().parse::<caps::Capability>().unwrap().bitmask()
    });
    format!("{bits:016x}")
}

/// The orbit default set with `add` added and `drop` dropped, as a mask.
fn default_caps_with(add: &[&str], drop: &[&str]) -> String {
    let mut set: Vec<&str> = orbit_stage1::isolators::DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| !drop.contains(c))
        .collect();
    set.extend_from_slice(add);
    cap_mask(&set)
}

/// A `kvm` pod from the CLI gets the confinement an `ns` pod gets (README, Pods): the
/// default capabilities, no_new_privs, the default seccomp filter, masked and read-only
/// paths, a /dev with only the harmless nodes; a kvm pod cannot have the host's network.
#[test]
fn a_cli_kvm_pod_is_confined_as_an_ns_pod() {
    let w = pod_world();
    let k = kernel();
    let o = orbit(
        &w,
        &[
            "run",
            "--net=host",
            "--stage1-name=kvm",
            &k,
            BUSYBOX,
            "--exec",
            "/bin/true",
        ],
    );
    assert_eq!(code(&o), 125, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("cannot use the host's network"),
        "{}",
        text(&o.stderr)
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    let script = "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  stat -c 'kcore %t,%T' /proc/kcore; echo acpi $(ls /proc/acpi | wc -l); \
                  echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo sys-read-only; \
                  test -e /dev/ttyS0 || echo no-console; test -e /dev/null && echo null";
    let out = run_expect(
        &w,
        &kvm(
            &k,
            &[
                "--net=none",
                BUSYBOX,
                "--exec",
                "/bin/sh",
                "--",
                "-c",
                script,
            ],
        ),
        0,
    );
    let default = default_caps_with(&[], &[]);
    for want in [
        format!("CapBnd:\t{default}"),
        format!("CapEff:\t{default}"),
        "NoNewPrivs:\t1".to_string(),
        "Seccomp:\t2".to_string(),
        // Masked by the app's /dev/null, an empty directory.
        "kcore 1,3".to_string(),
        "acpi 0".to_string(),
        "sys-read-only".to_string(),
        // The VM's serial console is not in the app's /dev.
        "no-console".to_string(),
        "null".to_string(),
    ] {
        assert!(out.lines().any(|l| l == want), "no {want:?} in:\n{out}");
    }
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
}

/// A CRI kvm sandbox's containers are confined in the guest as `ns` containers are on the
/// host: capabilities as asked (default, added, dropped, all for a privileged one),
/// no_new_privs, RuntimeDefault and Localhost seccomp profiles, masked and read-only paths,
/// a pid namespace of their own when asked (the kubelet's default); the sandbox's
/// namespaced sysctls are set in its VM; a timed-out exec does not live on. A kvm sandbox
/// with the host's network is refused, leaving nothing. One VM for all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_cri_kvm_sandboxs_containers_are_confined_as_ns_ones() {
    use cri_common::*;
    use orbit::cri::proto;
    let w = pod_world();
    let k = kernel();
    let cri = Cri::start_with(&w, &[], &["--net=none", &k]);
    let (mut rt, _) = cri.clients().await;

    let mut hostnet = sandbox_config(&w, "hostnet");
    hostnet.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                network: proto::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(hostnet),
            runtime_handler: "kvm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("host's network"), "{e}");
    assert_no_pods(&w);

    let host_port_start =
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let mut config = sandbox_config(&w, "confined");
    config.linux = Some(proto::LinuxPodSandboxConfig {
        sysctls: HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "99".to_string(),
        )]),
        ..Default::default()
    });
    let sb = run_kvm_sandbox(&mut rt, &config).await;
    let qemu = qemu_pid(&w, &sb);
    let runtime_default = || proto::SecurityProfile {
        profile_type: proto::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    };
    let with = |name: &str, sec: proto::LinuxContainerSecurityContext| {
        let mut c = container_config(name, BUSYBOX, "exec sleep 600");
        c.linux = Some(proto::LinuxContainerConfig {
            security_context: Some(sec),
            ..Default::default()
        });
        c
    };
    let status = |field: &str| format!("grep ^{field}: /proc/self/status | cut -f2");

    // As the kubelet asks by default: RuntimeDefault, no_new_privs, a pid namespace of its
    // own; and masked and read-only paths of its own.
    let plain = with(
        "plain",
        proto::LinuxContainerSecurityContext {
            seccomp: Some(runtime_default()),
            no_new_privs: true,
            masked_paths: vec!["/proc/kcore".into(), "/etc/motd".into()],
            readonly_paths: vec!["/proc/sys".into(), "/tmp".into()],
            namespace_options: Some(proto::NamespaceOption {
                pid: proto::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let plain = create(&mut rt, &sb, &config, plain).await;
    start(&mut rt, &plain).await;
    let default = default_caps_with(&[], &[]);
    assert_eq!(sh(&mut rt, &plain, &status("CapBnd")).await.1, default);
    assert_eq!(sh(&mut rt, &plain, &status("CapEff")).await.1, default);
    assert_eq!(sh(&mut rt, &plain, &status("NoNewPrivs")).await.1, "1");
    assert_eq!(sh(&mut rt, &plain, &status("Seccomp")).await.1, "2");
    // The default filter: no sethostname, even for root.
    assert_ne!(sh(&mut rt, &plain, "hostname other").await.0, 0);
    assert_eq!(
        sh(&mut rt, &plain, "cat /etc/motd").await,
        (0, String::new())
    );
    assert_eq!(
        sh(&mut rt, &plain, "stat -c %t,%T /proc/kcore").await.1,
        "1,3"
    );
    assert_ne!(sh(&mut rt, &plain, "touch /tmp/x").await.0, 0);
    // Its command is PID 1 of its own pid namespace, where the agent is not to be seen.
    assert_eq!(
        sh(&mut rt, &plain, "tr '\\0' ' ' < /proc/1/cmdline")
            .await
            .1,
        "sleep 600"
    );
    assert_eq!(
        sh(&mut rt, &plain, "cat /proc/[0-9]*/comm | grep -cx init")
            .await
            .1,
        "0"
    );
    // The sandbox's sysctl, set in the VM; the node's is untouched.
    assert_eq!(
        sh(
            &mut rt,
            &plain,
            "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"
        )
        .await
        .1,
        "99"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_port_start
    );
    // An exec that times out (long after it started and its input ended) is killed in
    // the guest, and the answer comes only once nothing of it is left: the check right
    // after it finds no `sleep` but the container's own (critest's `pgrep sleep`; the
    // image's busybox has none: every process's name, zombies included).
    const SLEEPS: &str = "cat /proc/[0-9]*/stat 2>/dev/null | grep -c '(sleep)'";
    assert_eq!(sh(&mut rt, &plain, SLEEPS).await, (0, "1".to_string()));
    let started = "touch /dev/shm/ran; exec sleep 4321";
    let e = exec(&mut rt, &plain, &["sh", "-c", started], 5).await;
    assert_eq!(
        e.as_ref().map_err(|s| s.code()).err(),
        Some(tonic::Code::DeadlineExceeded),
        "{e:?}"
    );
    assert_eq!(sh(&mut rt, &plain, SLEEPS).await, (0, "1".to_string()));
    assert_eq!(sh(&mut rt, &plain, "test -e /dev/shm/ran").await.0, 0);

    // Capabilities added and dropped take effect.
    let capped = with(
        "capped",
        proto::LinuxContainerSecurityContext {
            capabilities: Some(proto::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["CHOWN".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let capped = create(&mut rt, &sb, &config, capped).await;
    start(&mut rt, &capped).await;
    assert_eq!(
        sh(&mut rt, &capped, &status("CapBnd")).await.1,
        default_caps_with(&["CAP_NET_ADMIN"], &["CAP_CHOWN"])
    );
    assert_eq!(
        sh(&mut rt, &capped, "ip addr add 127.0.0.2/8 dev lo")
            .await
            .0,
        0
    );
    assert_ne!(
        sh(&mut rt, &plain, "ip addr add 127.0.0.3/8 dev lo")
            .await
            .0,
        0
    );
    // Bridges: the guest kernel loads their module when first asked (critest's "adding
    // capability" runs `brctl addbr`); without CAP_NET_ADMIN no bridge is made.
    let bridges = "brctl addbr orbit0 2>&1 && ip link add orbit1 type bridge 2>&1 && \
                   ls /sys/class/net | grep -c '^orbit[01]$'";
    assert_eq!(sh(&mut rt, &capped, bridges).await, (0, "2".to_string()));
    assert_ne!(sh(&mut rt, &plain, "brctl addbr orbit2").await.0, 0);
    let chown = "touch /dev/shm/f && chown 1 /dev/shm/f";
    assert_ne!(sh(&mut rt, &capped, chown).await.0, 0);
    assert_eq!(sh(&mut rt, &plain, chown).await.0, 0);
    let none = with(
        "none",
        proto::LinuxContainerSecurityContext {
            capabilities: Some(proto::Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let none = create(&mut rt, &sb, &config, none).await;
    start(&mut rt, &none).await;
    assert_eq!(
        sh(&mut rt, &none, &status("CapBnd")).await.1,
        "0000000000000000"
    );

    // A Localhost profile: mkdir denied, the rest allowed; without no_new_privs.
    let profile = w.path("seccomp/deny-mkdir.json");
    fs::create_dir_all(profile.parent().unwrap()).unwrap();
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let filtered = with(
        "filtered",
        proto::LinuxContainerSecurityContext {
            seccomp: Some(proto::SecurityProfile {
                profile_type: proto::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        },
    );
    let filtered = create(&mut rt, &sb, &config, filtered).await;
    start(&mut rt, &filtered).await;
    assert_eq!(sh(&mut rt, &filtered, &status("Seccomp")).await.1, "2");
    assert_eq!(sh(&mut rt, &filtered, &status("NoNewPrivs")).await.1, "0");
    assert_ne!(sh(&mut rt, &filtered, "mkdir /tmp/denied").await.0, 0);
    assert_eq!(sh(&mut rt, &filtered, "touch /tmp/allowed").await.0, 0);

    // A privileged container gets every capability of the guest, no filter, its devices.
    let privileged = with(
        "privileged",
        proto::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        },
    );
    let privileged = create(&mut rt, &sb, &config, privileged).await;
    start(&mut rt, &privileged).await;
    let last: u32 = sh(&mut rt, &privileged, "cat /proc/sys/kernel/cap_last_cap")
        .await
        .1
        .parse()
        .unwrap();
    assert_eq!(
        sh(&mut rt, &privileged, &status("CapEff")).await.1,
        format!("{:016x}", (1u64 << (last + 1)) - 1)
    );
    assert_eq!(sh(&mut rt, &privileged, &status("Seccomp")).await.1, "0");
    assert_eq!(sh(&mut rt, &privileged, "hostname confined-vm").await.0, 0);
    assert_eq!(sh(&mut rt, &privileged, "test -c /dev/ttyS0").await.0, 0);
    assert_ne!(sh(&mut rt, &plain, "test -e /dev/ttyS0").await.0, 0);

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    assert_vm_gone(&w, &sb, qemu);
}

/// The host's mounts at or below `dir`, by mount point.
fn mount_points_below(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// A CRI kvm sandbox's host mounts as critest's propagation and read-only specs use them,
/// in one VM: a HostToContainer mount shows what the host mounts below its source after the
/// container started (and no longer once the host unmounts it), a private one does not; a
/// bidirectional one is refused (a mount made in the VM cannot reach the host); `readonly`
/// is the volume's own mount only (a tmpfs the host mounted below it stays writable),
/// `recursive_read_only` every mount of it. The guest cannot have a later volume mounted on
/// a host path of its choosing, and nothing is left mounted on the host.
#[tokio::test(flavor = "multi_thread")]
async fn a_cri_kvm_sandboxs_host_mounts_see_the_hosts_mounts_and_are_read_only_as_asked() {
    use cri_common::*;
    use orbit::cri::proto::{self, MountPropagation};
    let w = pod_world();
    let k = kernel();
    let cri = Cri::start_with(&w, &[], &["--net=none", &k]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "vols");
    let sb = run_kvm_sandbox(&mut rt, &config).await;
    let qemu = qemu_pid(&w, &sb);
    // The host's trees, made after the sandbox started (as critest makes them), each a
    // tmpfs of the test's own, unmounted by guards: a shared one for propagation; one
    // holding a volume with a tmpfs below it for read-only.
    let tree = w.path("tree");
    let _tree = TestMount::tmpfs(&tree, true);
    fs::create_dir_all(tree.join("late")).unwrap();
    let outer = w.path("outer");
    let _outer = TestMount::tmpfs(&outer, false);
    let vol = outer.join("vol");
    let sub = vol.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let _sub = TestMount::tmpfs(&sub, false);
    let host_mounts = (mount_points_below(&tree), mount_points_below(&outer));
    let mount = |host: &std::path::Path, inside: &str, p: MountPropagation| proto::Mount {
        container_path: inside.into(),
        host_path: host.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };
    let read_only = |inside: &str, recursive: bool| proto::Mount {
        readonly: true,
        recursive_read_only: recursive,
        ..mount(&vol, inside, MountPropagation::PropagationPrivate)
    };

    let mut bidirectional = container_config("bd", BUSYBOX, "exec sleep 600");
    bidirectional.mounts = vec![mount(
        &tree,
        "/bd",
        MountPropagation::PropagationBidirectional,
    )];
    let e = create_refused(&mut rt, &sb, &config, bidirectional).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("/bd") && e.message().contains("cannot reach the host"),
        "{}",
        e.message()
    );
    let listed = list_containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");

    // Privileged: it reaches the agent's root below (/proc/1/root) to play a hostile guest.
    let mut c = privileged(container_config("vols", BUSYBOX, "exec sleep 600"));
    c.mounts = vec![
        mount(&tree, "/hc", MountPropagation::PropagationHostToContainer),
        mount(&tree, "/pv", MountPropagation::PropagationPrivate),
        read_only("/ro", false),
        read_only("/rro", true),
        mount(&vol, "/rw", MountPropagation::PropagationPrivate),
    ];
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;

    // The host mounts below the shared tree after the container started.
    let late = tree.join("late");
    let late_mount = TestMount::tmpfs(&late, false);
    fs::write(late.join("flag"), "late\n").unwrap();
    assert_eq!(
        sh_err(&mut rt, &id, "cat /hc/late/flag").await,
        (0, "late".to_string()),
        "the HostToContainer mount did not receive the host's mount"
    );
    assert_eq!(
        sh_err(&mut rt, &id, "ls -A /pv/late").await,
        (0, String::new()),
        "the private mount received the host's mount"
    );
    drop(late_mount);
    assert_eq!(
        sh_err(&mut rt, &id, "ls -A /hc/late").await,
        (0, String::new()),
        "the host's unmount did not reach the HostToContainer mount"
    );

    // Read-only: the volume's own mount only, or (recursive) the tmpfs below it too.
    assert_read_only_as_asked(&mut rt, &id, &vol).await;

    // A link the guest plants where the next container's host volumes go (the share is
    // the guest's to write) does not get a host volume mounted on a host path.
    let victim = w.path("victim");
    fs::create_dir_all(&victim).unwrap();
    let plant = format!("ln -s {} /proc/1/root/volumes/evil-0", victim.display());
    assert_eq!(sh_err(&mut rt, &id, &plant).await.0, 0);
    let mut evil = container_config("evil", BUSYBOX, "exec sleep 600");
    evil.mounts = vec![mount(&vol, "/v", MountPropagation::PropagationPrivate)];
    let e = create_refused(&mut rt, &sb, &config, evil).await;
    assert!(e.message().contains("evil-0"), "{e:?}");
    assert!(mounts_with(&victim.display().to_string()).is_empty());
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);

    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
    assert_vm_gone(&w, &sb, qemu);
    // The host's own mounts are as the test made them: none was added or taken away.
    assert_eq!(
        (mount_points_below(&tree), mount_points_below(&outer)),
        host_mounts
    );
}

/// `orbit run --stage1-name=kvm` with a read-only host volume: read-only on its own mount
/// only (a tmpfs the host mounted below it stays writable), and with `recursiveReadOnly`
/// every mount of it — as an `ns` pod's and a CRI kvm sandbox's.
#[test]
fn a_cli_kvm_pods_read_only_volume_is_read_only_on_its_own_mount_unless_recursive() {
    let w = pod_world();
    let k = kernel();
    let outer = w.path("outer");
    let _outer = TestMount::tmpfs(&outer, false);
    let vol = outer.join("vol");
    let _sub = TestMount::tmpfs(&vol.join("sub"), false);
    let host_mounts = mount_points_below(&outer);
    let out = run_read_only_volumes(&w, &vol, &kvm(&k, &["--net=none"]));
    assert_eq!(out, "w\n");
    let uuid = only_pod(&w);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    assert!(mounts_with(&uuid).is_empty(), "{:?}", mounts_with(&uuid));
    assert_eq!(mount_points_below(&outer), host_mounts);
}
