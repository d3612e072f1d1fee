//! The CRI streaming server driven by a real SPDY client: `tests/streaming-client`, built on
//! moby/spdystream (the library under the kubelet, kubectl and crictl) and mirroring
//! client-go's remote-command v4 and port-forward protocols. Exec with pipes and with a
//! terminal, attach, port-forward, single-use URLs, and a client that disappears mid-exec.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use cri_common::*;
use orbit::cri::proto::{self, runtime_service_client::RuntimeServiceClient};
use pods_common::*;
use tonic::transport::Channel;

/// A client process killed (by its handle) when the test is done with it, failing or not.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the client with `args`, stdout piped (and stderr if `stderr`).
fn spawn_client(args: &[&str], stderr: bool) -> Running {
    Running(
        Command::new(spdy_client())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap(),
    )
}

/// The lines of `r`, read by a thread of their own (so a test never blocks on them).
fn lines_of<R: Read + Send + 'static>(r: R) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line, within 60 s.
fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a line from the client within 60 s")
}

/// Every line until the client closes its output, within 60 s.
fn all_lines(rx: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => out.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return out,
            Err(e) => panic!("the client's output did not end within 60 s: {e} ({out:?})"),
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn exec_url(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
    (stdin, tty): (bool, bool),
) -> String {
    rt.exec(proto::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

/// A running sandbox with one running container (`script`); the server, the sandbox id
/// and the container id.
async fn pod_with(
    w: &common::World,
    name: &str,
    script: &str,
) -> (Cri, RuntimeServiceClient<Channel>, String, String) {
    pod_in(w, name, script, false).await
}

/// [`pod_with`], the sandbox in a VM of its own (the kvm handler) if `kvm`.
async fn pod_in(
    w: &common::World,
    name: &str,
    script: &str,
    kvm: bool,
) -> (Cri, RuntimeServiceClient<Channel>, String, String) {
    let cri = if kvm {
        Cri::start_with(w, &[], &["--net=none", &kvm_kernel()])
    } else {
        Cri::start(w, &[])
    };
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(w, name);
    let sb = run_sandbox_with(&mut rt, &config, if kvm { "kvm" } else { "" }).await;
    let c = container_config("main", BUSYBOX, script);
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;
    (cri, rt, sb, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_pipes_and_a_terminal() {
    let w = pod_world();
    let (_cri, mut rt, _sb, id) = pod_with(&w, "exec", "exec sleep 600").await;

    // Pipes: stdin through the command, stdout and stderr apart, the exit code.
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        (true, false),
    )
    .await;
    let input: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let out = client(&["exec", &url, "--stdin", "--stdout", "--stderr"], &input);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout == input, "1 MiB of stdin came back changed");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );

    // A URL is single-use.
    let again = client(&["exec", &url, "--stdout"], b"");
    assert_eq!(again.status.code(), Some(126), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("404"),
        "{}",
        text(&again.stderr)
    );

    // The command runs as confined as the container: its namespaces and hostname.
    let url = exec_url(&mut rt, &id, &["cat", "/etc/hostname"], (false, false)).await;
    let out = client(&["exec", &url, "--stdout", "--stderr"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "exec-host");

    // A command that does not exist: a failure with orbit enter's message, not success.
    let url = exec_url(&mut rt, &id, &["no-such-command"], (false, false)).await;
    let out = client(&["exec", &url, "--stdout", "--stderr"], b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "{}",
        text(&out.stderr)
    );

    // A terminal: stdin is a tty, the size the client sets is the terminal's, and a
    // shell's exit code comes back.
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "test -t 0 && test -t 1 && stty size && exit 4"],
        (true, true),
    )
    .await;
    let out = client(
        &[
            "exec",
            &url,
            "--stdin",
            "--stdout",
            "--tty",
            "--resize=120x40",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "40 120");

    // An interactive shell on the terminal: input echoed and answered.
    let url = exec_url(&mut rt, &id, &["sh"], (true, true)).await;
    let out = client(
        &["exec", &url, "--stdin", "--stdout", "--tty"],
        b"echo $((6*7))\nexit 0\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("42"), "{}", text(&out.stdout));

    // Bad requests are refused with a reason.
    let e = rt
        .exec(proto::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let e = rt
        .exec(proto::ExecRequest {
            container_id: "no-such-container".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
}

/// Whether a process with exactly this command line runs.
fn runs(argv: &[u8]) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| c == argv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_ends_its_exec() {
    let w = pod_world();
    let (_cri, mut rt, _sb, id) = pod_with(&w, "vanish", "exec sleep 600").await;
    // With pipes, and on a terminal with SIGHUP ignored (the hang-up alone would not end
    // it); each with a child in the background — on the terminal a job in a process group
    // of its own (job control on).
    let sleep_for = |n: u32| format!("sleep {}", 3200 + n + std::process::id() % 1000);
    for (n, tty) in [(1, false), (3, true)] {
        let (sleeper, child) = (sleep_for(n), sleep_for(n + 1));
        let jobs = if tty { "set -m; " } else { "" };
        let script = format!("trap '' HUP; {jobs}{child} & echo started; exec {sleeper}");
        let url = exec_url(&mut rt, &id, &["sh", "-c", &script], (tty, tty)).await;
        let mut args = vec!["exec", url.as_str(), "--stdout"];
        if tty {
            args.extend(["--stdin", "--tty"]);
        } else {
            args.push("--stderr");
        }
        let mut client = Running(
            Command::new(spdy_client())
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let lines = lines_of(client.0.stdout.take().unwrap());
        assert_eq!(next_line(&lines).trim(), "started", "tty {tty}");
        let argv = |c: &str| format!("{}\0", c.replace(' ', "\0")).into_bytes();
        let both = [argv(&sleeper), argv(&child)];
        poll(
            Duration::from_secs(20),
            "the exec'd command and its child to run",
            || both.iter().all(|a| runs(a)).then_some(()),
        );
        drop(client); // Killed.
        poll(
            Duration::from_secs(20),
            "the exec to end with its client, its child too",
            || both.iter().all(|a| !runs(a)).then_some(()),
        );
    }
}

/// critest's "runtime should support execSync with timeout", as the kubelet's exec probes
/// need it: a timed-out ExecSync is answered DeadlineExceeded only once everything it
/// started is gone — a background child too, and reaped: right after the answer, the
/// container's own /proc (what `pgrep` reads; a zombie keeps its name there) has no
/// `sleep`. Twenty times in a row: the answer never overtakes the reaping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_exec_sync_leaves_nothing_running() {
    timed_out_exec_sync_leaves_nothing(false).await;
}

/// The same in a kvm sandbox: the command runs in the VM, where the agent kills its session
/// and confirms once none of it is left, reaped, before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_exec_sync_leaves_nothing_running_in_a_vm() {
    timed_out_exec_sync_leaves_nothing(true).await;
}

async fn timed_out_exec_sync_leaves_nothing(kvm: bool) {
    let w = pod_world();
    let (_cri, mut rt, _sb, id) = pod_in(&w, "probe", "exec tail -f /dev/null", kvm).await;
    let sleeps = "for f in /proc/[0-9]*/comm; do cat $f; done | grep -c '^sleep$'";
    for round in 0..20 {
        let e = exec(&mut rt, &id, &["sh", "-c", "sleep 4321 & sleep 4322"], 1)
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::DeadlineExceeded,
            "round {round}: {e}"
        );
        let (_, left) = sh(&mut rt, &id, sleeps).await;
        assert_eq!(
            left, "0",
            "round {round}: sleep processes left in the container"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_follows_the_containers_output_until_it_exits() {
    let w = pod_world();
    let script = "i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo tick $i; sleep 0.2; done; \
                  echo bye; echo err-bye >&2";
    let (_cri, mut rt, _sb, id) = pod_with(&w, "attach", script).await;
    let url = rt
        .attach(proto::AttachRequest {
            container_id: id.clone(),
            stdin: false,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut client = spawn_client(&["attach", &url, "--stdout", "--stderr"], true);
    let stdout = lines_of(client.0.stdout.take().unwrap());
    let stderr = lines_of(client.0.stderr.take().unwrap());
    let first = next_line(&stdout);
    assert!(first.starts_with("tick "), "{first:?}");
    // Now stop the loop: the container says goodbye on both streams and exits.
    let out = exec(&mut rt, &id, &["touch", "/tmp/stop"], 10)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let rest = all_lines(&stdout);
    let err = all_lines(&stderr);
    let st = wait_within(&mut client.0, Duration::from_secs(60)).expect("the client ends");
    assert_eq!(st.code(), Some(0), "{err:?}");
    assert_eq!(rest.last().map(String::as_str), Some("bye"), "{rest:?}");
    assert!(err.iter().any(|l| l == "err-bye"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_the_pods_loopback() {
    let w = pod_world();
    let script = "mkdir -p /www && echo served-from-the-pod > /www/index.html && \
                  exec httpd -f -p 127.0.0.1:8080 -h /www";
    let (_cri, rt, sb, id) = pod_with(&w, "forward", script).await;
    // httpd listens once a request inside the pod gets an answer.
    poll(Duration::from_secs(20), "httpd in the pod", || {
        let rt = rt.clone();
        let id = id.clone();
        let r = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let mut rt = rt;
                exec(
                    &mut rt,
                    &id,
                    &["wget", "-q", "-O-", "http://127.0.0.1:8080/"],
                    5,
                )
                .await
            })
        });
        r.ok().filter(|o| o.exit_code == 0).map(drop)
    });
    let url = |ports: Vec<i32>| {
        let mut rt = rt.clone();
        let sb = sb.clone();
        async move {
            rt.port_forward(proto::PortForwardRequest {
                pod_sandbox_id: sb,
                port: ports,
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };

    // One forwarded connection over stdin/stdout.
    let u = url(vec![8080]).await;
    let out = client(
        &["portforward", &u, "8080"],
        b"GET /index.html HTTP/1.0\r\n\r\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("served-from-the-pod"),
        "{}",
        text(&out.stdout)
    );

    // kubectl port-forward style: a local listener, several connections on one session.
    let u = url(vec![]).await;
    let mut fwd = spawn_client(&["portforward", &u, "8080", "--listen=127.0.0.1:0"], false);
    let line = next_line(&lines_of(fwd.0.stdout.take().unwrap()));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("served-from-the-pod"), "{body}");
    }
    drop(fwd);

    // Nothing listens there: the error stream says so.
    let u = url(vec![]).await;
    let out = client(&["portforward", &u, "8081"], b"x");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("8081"), "{}", text(&out.stderr));
    // A port the request did not allow.
    let u = url(vec![8080]).await;
    let out = client(&["portforward", &u, "22"], b"x");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not among the ports"),
        "{}",
        text(&out.stderr)
    );
}

/// What `crictl` does for its everyday commands, call for call (crictl itself is not
/// packaged here): version/info, images/inspecti, runp/pods, create/start/ps, exec (streaming,
/// with and without a terminal), logs, stats/statsp, inspect/inspectp, stop/rm/stopp/rmp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_everyday_flows() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, mut img) = cri.clients().await;

    // crictl version; crictl info (Status, verbose).
    let v = rt
        .version(proto::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("orbit", "v1")
    );
    let info = rt
        .status(proto::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(info.status.unwrap().conditions.iter().all(|c| c.status));

    // crictl images; crictl inspecti IMAGE.
    let images = img
        .list_images(proto::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == BUSYBOX)),
        "{images:?}"
    );
    let st = img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_some() && st.info.contains_key("info"));

    // crictl runp pod.json; crictl pods --name; crictl pods --label.
    let config = sandbox_config(&w, "flows");
    let sb = run_sandbox(&mut rt, &config).await;
    let pods = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter {
                label_selector: HashMap::from([("app".into(), "flows".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].metadata.as_ref().unwrap().name, "flows");

    // crictl create POD container.json pod.json (ImageStatus first, as crictl does); start.
    let id = create(
        &mut rt,
        &sb,
        &config,
        container_config("main", BUSYBOX, "echo ready; exec sleep 600"),
    )
    .await;
    start(&mut rt, &id).await;
    let listed = list_containers(&mut rt).await;
    assert_eq!(listed.iter().filter(|c| c.id == id).count(), 1);

    // crictl exec ID echo hi (streaming, not ExecSync); crictl exec -it ID sh.
    let url = exec_url(&mut rt, &id, &["echo", "hi"], (false, false)).await;
    let out = client(&["exec", &url, "--stdout", "--stderr"], b"");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "hi\n".into())
    );
    let url = exec_url(&mut rt, &id, &["sh"], (true, true)).await;
    let out = client(
        &["exec", &url, "--stdin", "--stdout", "--tty"],
        b"hostname; exit 7\n",
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("flows-host"),
        "{}",
        text(&out.stdout)
    );

    // crictl logs ID: ContainerStatus for the log path, then the file.
    let st = container_state(&mut rt, &id).await;
    poll(
        Duration::from_secs(20),
        "the container's first line",
        || {
            std::fs::read_to_string(&st.log_path)
                .ok()
                .filter(|l| l.contains(" stdout F ready"))
        },
    );

    // crictl stats; crictl statsp.
    let stats = rt
        .list_container_stats(proto::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(stats
        .iter()
        .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id)));
    let statsp = rt
        .list_pod_sandbox_stats(proto::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(statsp
        .iter()
        .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == sb)));

    // crictl inspect ID; crictl inspectp POD (verbose: the info crictl prints).
    let inspected = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&inspected.info["info"]).unwrap();
    assert_eq!(info["sandboxID"], sb.as_str());
    assert!(info["pid"].as_i64().is_some_and(|p| p > 0), "{info}");
    let inspected = rt
        .pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&inspected.info["info"]).unwrap();
    assert_eq!(info["manifest"]["uuid"], sb.as_str());

    // crictl stop ID; crictl rm ID; crictl stopp POD; crictl rmp POD.
    stop_and_remove(&mut rt, &id).await;
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_types_into_a_containers_stdin_and_terminal() {
    let w = pod_world();
    let cri = Cri::start(&w, &[]);
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "stdin");
    let sb = run_sandbox(&mut rt, &config).await;
    let rt_for_urls = rt.clone();
    let attach_url = |id: &str, tty: bool| {
        let mut rt = rt_for_urls.clone();
        let id = id.to_string();
        async move {
            rt.attach(proto::AttachRequest {
                container_id: id,
                stdin: true,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };

    // `kubectl run -i`: cat reads what the client sends; stdin_once ends its input with the
    // client's.
    let mut c = container_config("cat", BUSYBOX, "");
    c.command = vec!["cat".into()];
    (c.stdin, c.stdin_once) = (true, true);
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;
    let url = attach_url(&id, false).await;
    let out = client(
        &["attach", &url, "--stdin", "--stdout", "--stderr"],
        b"typed into cat\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "typed into cat\n");
    let st = wait_state(&mut rt, &id, proto::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 0);

    // `kubectl run -it`: a shell on the container's terminal, sized by the client.
    let mut c = container_config("shell", BUSYBOX, "");
    c.command = vec!["sh".into()];
    (c.stdin, c.stdin_once, c.tty) = (true, true, true);
    let id = create(&mut rt, &sb, &config, c).await;
    start(&mut rt, &id).await;
    let url = attach_url(&id, true).await;
    let mut client = Running(
        Command::new(spdy_client())
            .args([
                "attach",
                &url,
                "--stdin",
                "--stdout",
                "--tty",
                "--resize=100x30",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = lines_of(client.0.stdout.take().unwrap());
    let mut stdin = client.0.stdin.take().unwrap();
    poll(
        Duration::from_secs(20),
        "the terminal to take the client's size",
        || {
            let rt = rt.clone();
            let id = id.clone();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    let mut rt = rt;
                    (sh(&mut rt, &id, "stty -F /dev/pts/0 size").await.1 == "30 100").then_some(())
                })
            })
        },
    );
    stdin.write_all(b"echo $((6*7)); exit 5\n").unwrap();
    drop(stdin);
    let out = all_lines(&stdout);
    let st = wait_within(&mut client.0, Duration::from_secs(60)).expect("the client ends");
    assert_eq!(st.code(), Some(0));
    assert!(out.iter().any(|l| l.trim_end() == "42"), "{out:?}");
    let st = wait_state(&mut rt, &id, proto::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 5);
}

/// What `r` writes, as it arrives (chunks, not lines: a partial line counts), read by a
/// thread of its own.
fn output_of<R: Read + Send + 'static>(mut r: R) -> Received {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    Received {
        rx,
        seen: Vec::new(),
    }
}

/// A client's output: what arrived so far, and more on demand.
struct Received {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Received {
    /// Waits (20 s at most) until what arrived since `from` contains `needle`; returns
    /// where it ends.
    fn wait_for(&mut self, from: usize, needle: &str) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(at) = text(&self.seen[from..]).find(needle) {
                return from + at + needle.len();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(e) => panic!(
                    "{needle:?} did not arrive within 20 s ({e}); got {:?}",
                    text(&self.seen[from..])
                ),
            }
        }
    }

    /// Everything, once the writer has closed its end (20 s at most).
    fn all(&mut self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return text(&self.seen),
                Err(e) => panic!("the output did not end within 20 s: {e}"),
            }
        }
    }
}

/// critest's "runtime should support attach": a shell reading the attached client's input
/// (`stdin`, `stdin_once`), without a terminal and with one, answers while the client's
/// input stays open — output without a newline (`echo -n`, the shell's prompt) too, at
/// once — and ends when its input does (`exit` on the terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_answers_while_the_input_stays_open() {
    attach_answers(false).await;
}

/// The same in a kvm sandbox (the apps in its VM; their input relayed by the stage1 from
/// the FIFO to the guest agent, their terminal one of the guest's), one VM for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_answers_while_the_input_stays_open_in_a_vm() {
    attach_answers(true).await;
}

async fn attach_answers(kvm: bool) {
    let w = pod_world();
    let cri = if kvm {
        Cri::start_with(&w, &[], &["--net=none", &kvm_kernel()])
    } else {
        Cri::start(&w, &[])
    };
    let (mut rt, _) = cri.clients().await;
    let config = sandbox_config(&w, "open-stdin");
    let sb = run_sandbox_with(&mut rt, &config, if kvm { "kvm" } else { "" }).await;
    for tty in [false, true] {
        let mut c = container_config(if tty { "terminal" } else { "pipes" }, BUSYBOX, "");
        c.command = vec!["sh".into()];
        (c.stdin, c.stdin_once, c.tty) = (true, true, tty);
        let id = create(&mut rt, &sb, &config, c).await;
        start(&mut rt, &id).await;
        let url = rt
            .attach(proto::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut args = vec!["attach", url.as_str(), "--stdin", "--stdout"];
        if tty {
            args.extend(["--tty", "--resize=100x30"]);
        } else {
            args.push("--stderr");
        }
        let mut client = Running(
            Command::new(spdy_client())
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdin = client.0.stdin.take().unwrap();
        let mut out = output_of(client.0.stdout.take().unwrap());
        let mut err = output_of(client.0.stderr.take().unwrap());
        // The attach is under way once what is typed comes back; then no newline is needed.
        stdin.write_all(b"echo attached\n").unwrap();
        let at = out.wait_for(0, "attached");
        stdin.write_all(b"echo -n hel; echo -n lo\n").unwrap();
        let at = out.wait_for(at, "hello");
        if tty {
            // The prompt after the answer: a line without a newline, on the terminal.
            let at = out.wait_for(at, "# ");
            // The client's size reaches the shell's terminal (its resize and its input
            // travel apart: the shell waits for it, within the 20 s `wait_for` allows).
            stdin
                .write_all(
                    b"until [ \"$(stty size)\" = '30 100' ]; do sleep 1; done; echo si''zed\n",
                )
                .unwrap();
            out.wait_for(at, "sized");
            stdin.write_all(b"exit 5\n").unwrap();
        } else {
            assert!(
                client.0.try_wait().unwrap().is_none(),
                "the client is still attached"
            );
            drop(stdin); // stdin_once: the shell's input ends with the client's.
        }
        let st = wait_within(&mut client.0, Duration::from_secs(60)).expect("the client ends");
        let (out, err) = (out.all(), err.all());
        assert_eq!(st.code(), Some(0), "tty {tty}: {err}");
        if !tty {
            // Nothing but the answers (critest checks that nothing else arrives).
            assert_eq!((out.as_str(), err.as_str()), ("attached\nhello", ""));
        }
        let st = wait_state(&mut rt, &id, proto::ContainerState::ContainerExited).await;
        assert_eq!(st.exit_code, if tty { 5 } else { 0 }, "tty {tty}");
    }
    remove_sandbox_leaving_nothing(&mut rt, &w, &sb).await;
}

/// The websocket transport (`crictl --transport websocket`): the client mirrors client-go's
/// websocket executor on gorilla/websocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_attach_over_websocket() {
    let w = pod_world();
    let script = "while true; do echo attached-out; sleep 0.2; done";
    let (_cri, mut rt, sb, id) = pod_with(&w, "ws", script).await;

    // v5: stdin through `cat` and closed by the client (the v5 close signal), stdout and
    // stderr apart, the exit code from the JSON status.
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "cat; echo to-stderr >&2; exit 3"],
        (true, false),
    )
    .await;
    let input: Vec<u8> = (0..(256 << 10)).map(|i| (i % 251) as u8).collect();
    let out = client(
        &["ws-exec", &url, "--stdin", "--stdout", "--stderr"],
        &input,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("protocol v5.channel.k8s.io"));
    assert!(out.stdout == input, "256 KiB of stdin came back changed");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );

    // Single-use as over SPDY.
    let again = client(&["ws-exec", &url, "--stdout"], b"");
    assert_eq!(again.status.code(), Some(126));
    assert!(
        text(&again.stderr).contains("404"),
        "{}",
        text(&again.stderr)
    );

    // An older client (v4: no close signal) and the oldest (text errors).
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "hostname; exit 5"],
        (false, false),
    )
    .await;
    let out = client(
        &[
            "ws-exec",
            &url,
            "--stdout",
            "--stderr",
            "--protocol=v4.channel.k8s.io",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ws-host");
    let url = exec_url(&mut rt, &id, &["sh", "-c", "exit 6"], (false, false)).await;
    let out = client(
        &["ws-exec", &url, "--stdout", "--protocol=channel.k8s.io"],
        b"",
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exit status 6"),
        "{}",
        text(&out.stderr)
    );

    // A terminal sized by the client.
    let url = exec_url(
        &mut rt,
        &id,
        &["sh", "-c", "test -t 0 && stty size && exit 4"],
        (true, true),
    )
    .await;
    let out = client(
        &[
            "ws-exec",
            &url,
            "--stdin",
            "--stdout",
            "--tty",
            "--resize=100x30",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "30 100");

    // Attach: the container's output from now on; the client leaves when it likes.
    let url = rt
        .attach(proto::AttachRequest {
            container_id: id.clone(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut attached = spawn_client(&["ws-attach", &url, "--stdout", "--stderr"], false);
    let lines = lines_of(attached.0.stdout.take().unwrap());
    assert_eq!(next_line(&lines), "attached-out");
    drop(attached);

    // Port forwarding stays on SPDY: a websocket upgrade for it is refused with a reason.
    let url = rt
        .port_forward(proto::PortForwardRequest {
            pod_sandbox_id: sb.clone(),
            port: vec![80],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let out = client(&["ws-exec", &url, "--stdout"], b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("SPDY only"),
        "{}",
        text(&out.stderr)
    );
}
