//! Helpers for the pod integration tests (`tests/pods*.rs`): the busybox test images, running
//! `orbit` with a deadline, background pods that are always stopped, and leak checks
//! (processes, mounts, pod directories).
//!
//! Include next to `mod common;` with `#[path = "common/pods.rs"] mod pods_common;`.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};
use serde_json::Value;

use crate::common::{text, World};

/// The busybox image's name in the store.
pub const BUSYBOX: &str = "example.com/busybox:latest";
/// A second image: busybox plus `/marker` (containing `marker-image`).
pub const MARKER: &str = "example.com/marker:latest";
/// Default deadline for one orbit command.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The test images' OCI layouts (built once, shared by every test binary via
/// `CARGO_TARGET_TMPDIR`; deterministic, so a finished build is reused).
pub struct Layouts {
    pub busybox: PathBuf,
    pub marker: PathBuf,
}

pub fn layouts() -> &'static Layouts {
    static L: OnceLock<Layouts> = OnceLock::new();
    L.get_or_init(build_layouts)
}

fn build_layouts() -> Layouts {
    let bb = Path::new("/bin/busybox");
    let size = fs::metadata(bb)
        .expect("/bin/busybox (apt-get install busybox-static)")
        .len();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("pods-images-v1-{size}"));
    let l = Layouts {
        busybox: dir.join("busybox"),
        marker: dir.join("marker"),
    };
    if dir.join("done").exists() {
        return l;
    }
    let tmp = base.join(format!("pods-images.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    // Layer 1: the busybox binary. Layer 2: applet links, /etc, standard directories.
    let src_base = tmp.join("src/base");
    fs::create_dir_all(src_base.join("bin")).unwrap();
    fs::copy(bb, src_base.join("bin/busybox")).unwrap();
    let src_etc = tmp.join("src/etc");
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "home/user",
        "proc",
        "sys",
        "dev",
        "run",
        "var/tmp",
    ] {
        fs::create_dir_all(src_etc.join(d)).unwrap();
    }
    let list = Command::new(bb)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in text(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", src_etc.join("bin").join(applet)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["tmp", "var/tmp"] {
        fs::set_permissions(src_etc.join(d), fs::Permissions::from_mode(0o1777)).unwrap();
    }
    fs::write(
        src_etc.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        src_etc.join("etc/group"),
        "root:x:0:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    fs::write(
        src_etc.join("etc/motd"),
        "hello from the busybox test image\n",
    )
    .unwrap();
    let src_marker = tmp.join("src/marker");
    fs::create_dir_all(&src_marker).unwrap();
    fs::write(src_marker.join("marker"), "marker-image\n").unwrap();

    let layer = |dir: &Path, c| Layer {
        tar: tar_dir(dir).unwrap(),
        compression: c,
    };
    let run = RunConfig {
        cmd: Some(vec!["/bin/cat".into(), "/etc/motd".into()]),
        env: vec!["PATH=/bin".into(), "IMAGE_ENV=from-image".into()],
        ..Default::default()
    };
    write_image(
        &tmp.join("busybox"),
        BUSYBOX,
        &[
            layer(&src_base, Compression::Gzip),
            layer(&src_etc, Compression::Zstd),
        ],
        &run,
    )
    .unwrap();
    write_image(
        &tmp.join("marker"),
        MARKER,
        &[
            layer(&src_base, Compression::Gzip),
            layer(&src_etc, Compression::Zstd),
            layer(&src_marker, Compression::Gzip),
        ],
        &run,
    )
    .unwrap();
    fs::remove_dir_all(tmp.join("src")).unwrap();
    fs::write(tmp.join("done"), "").unwrap();
    if fs::rename(&tmp, &dir).is_err() {
        // Another test process finished first: use its copy.
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            dir.join("done").exists(),
            "cannot put the test images at {}",
            dir.display()
        );
    }
    l
}

/// A world with the busybox image in its store.
pub fn pod_world() -> World {
    let w = World::new();
    fetch(&w, &layouts().busybox);
    w
}

/// Makes directory `dir` in the world and returns it with the `--volume` value of host
/// volume `name` from it (`NAME,kind=host,source=DIR`).
pub fn host_volume(w: &World, name: &str, dir: &str) -> (PathBuf, String) {
    let path = w.path(dir);
    fs::create_dir_all(&path).unwrap();
    let volume = format!("{name},kind=host,source={}", path.display());
    (path, volume)
}

/// Imports a layout into the world's store (unsigned).
pub fn fetch(w: &World, layout: &Path) {
    let src = format!("oci:{}", layout.display());
    out_ok(w, &["--insecure-options=image", "fetch", &src]);
}

/// Runs `cmd` to completion, killing it (and failing the test) after `deadline`.
pub fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("spawn");
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait_within(&mut child, deadline);
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{desc} did not finish within {deadline:?} (killed)\nstdout: {}\nstderr: {}",
            text(&stdout),
            text(&stderr)
        ),
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Waits for a child at most `deadline`; on timeout kills it and returns `None`.
pub fn wait_within(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `orbit ARGS` in `w`, bounded by [`DEADLINE`].
pub fn orbit(w: &World, args: &[&str]) -> Output {
    output_within(w.cmd(args), DEADLINE)
}

/// `orbit ARGS`, asserting success; returns stdout.
pub fn out_ok(w: &World, args: &[&str]) -> String {
    let o = orbit(w, args);
    assert!(
        o.status.success(),
        "orbit {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `orbit ARGS`, asserting exit status 125; returns stderr.
pub fn out_125(w: &World, args: &[&str]) -> String {
    let o = orbit(w, args);
    assert_eq!(
        o.status.code(),
        Some(125),
        "orbit {args:?} should exit 125:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

/// The exit code of a finished process (panics on death by signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| {
        panic!(
            "killed by signal {:?}\nstdout: {}\nstderr: {}",
            o.status.signal(),
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

/// `orbit run ARGS` in the foreground; asserts the exit code; returns stdout.
pub fn run_expect(w: &World, args: &[&str], expected: i32) -> String {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let o = orbit(w, &full);
    assert_eq!(
        code(&o),
        expected,
        "orbit {full:?}:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `orbit status --format json UUID`.
pub fn status_json(w: &World, uuid: &str) -> Value {
    serde_json::from_str(&out_ok(w, &["status", "--format", "json", uuid])).expect("status json")
}

/// `orbit list --format json`.
pub fn list_json(w: &World) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&out_ok(w, &["list", "--format", "json"])).expect("list json");
    v.as_array().expect("list is an array").clone()
}

/// Every pod UUID in the store (any state), with its state directory.
pub fn pod_dirs(w: &World) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(states) = fs::read_dir(w.store().join("pods")) else {
        return out;
    };
    for s in states.flatten() {
        if let Ok(pods) = fs::read_dir(s.path()) {
            for p in pods.flatten() {
                out.push((
                    s.file_name().to_string_lossy().into_owned(),
                    p.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Asserts the store holds no pod directory at all.
pub fn assert_no_pods(w: &World) {
    let dirs = pod_dirs(w);
    assert!(dirs.is_empty(), "pod directories left behind: {dirs:?}");
}

/// The directory of a pod, whatever its state.
pub fn pod_dir(w: &World, uuid: &str) -> PathBuf {
    let dirs = pod_dirs(w);
    let (state, u) = dirs
        .iter()
        .find(|(_, u)| u == uuid)
        .unwrap_or_else(|| panic!("pod {uuid} not in the store: {dirs:?}"));
    w.store().join("pods").join(state).join(u)
}

/// The only pod in the store.
pub fn only_pod(w: &World) -> String {
    let dirs = pod_dirs(w);
    assert_eq!(dirs.len(), 1, "expected exactly one pod: {dirs:?}");
    dirs[0].1.clone()
}

/// Host processes whose command line contains `needle`.
pub fn procs_with(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            let c = text(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push((pid, c));
            }
        }
    }
    out
}

/// The pid namespace of a process (`pid:[N]`).
pub fn pidns_of(pid: i64) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Host processes in pid namespace `ns`.
pub fn procs_in_pidns(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&p| p != me && pidns_of(p as i64).as_deref() == Some(ns))
        .collect()
}

/// Host mounts (this process's mount namespace) whose line mentions `needle`.
pub fn mounts_with(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Polls `f` until it returns `Some`, at most `deadline`; panics with `what` otherwise.
pub fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that nothing of a finished pod runs any more and nothing is mounted for it.
pub fn assert_pod_gone(uuid: &str, pidns: Option<&str>) {
    poll(
        Duration::from_secs(10),
        &format!("processes of pod {uuid} to end"),
        || {
            let by_cmdline = procs_with(uuid);
            let by_ns = pidns.map(procs_in_pidns).unwrap_or_default();
            (by_cmdline.is_empty() && by_ns.is_empty()).then_some(())
        },
    );
    let m = mounts_with(uuid);
    assert!(
        m.is_empty(),
        "mounts of pod {uuid} left on the host: {m:#?}"
    );
}

/// A pod running in the background (`orbit run` spawned). Dropping it stops the pod
/// (`orbit stop --force`) and reaps `orbit run`, so a failing test leaves nothing running.
pub struct BgPod<'a> {
    pub w: &'a World,
    pub uuid: String,
    pub child: Option<Child>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

/// Output of a background pod's `orbit run`.
pub struct BgExit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl<'a> BgPod<'a> {
    /// Spawns `orbit run --uuid-file-save F ARGS` and waits until the pod and its apps run.
    pub fn start(w: &'a World, args: &[&str]) -> BgPod<'a> {
        let uuid_file = w.path(&format!("uuid-{}", uuid::Uuid::new_v4()));
        let mut full = vec![
            "run".to_string(),
            "--uuid-file-save".into(),
            uuid_file.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let mut cmd = w.cmd(&refs);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn orbit run");
        let out = Some(reader(child.stdout.take().unwrap()));
        let err = Some(reader(child.stderr.take().unwrap()));
        let mut pod = BgPod {
            w,
            uuid: String::new(),
            child: Some(child),
            out,
            err,
        };
        let uuid = poll(Duration::from_secs(20), "--uuid-file-save", || {
            if let Some(st) = pod.child.as_mut().unwrap().try_wait().unwrap() {
                let e = pod.finish_with(st);
                panic!(
                    "orbit {full:?} exited early ({}):\nstdout: {}\nstderr: {}",
                    e.status, e.stdout, e.stderr
                );
            }
            let s = fs::read_to_string(&uuid_file).unwrap_or_default();
            (s.ends_with('\n') && s.trim().len() == 36).then(|| s.trim().to_string())
        });
        pod.uuid = uuid;
        let ready = orbit(w, &["status", "--wait-ready", &pod.uuid]);
        if !ready.status.success() {
            // Everything that tells why: the pod's recorded status and the run's exit.
            let status = text(&orbit(w, &["status", "--format", "json", &pod.uuid]).stdout);
            let e = pod.stop_and_wait();
            panic!(
                "pod {} did not become ready: {}\nstatus: {status}\nrun exit: {}\nrun stdout: {}\nrun stderr: {}",
                pod.uuid,
                text(&ready.stderr),
                e.status,
                e.stdout,
                e.stderr
            );
        }
        pod
    }

    fn finish_with(&mut self, status: ExitStatus) -> BgExit {
        self.child = None;
        let stdout = self
            .out
            .take()
            .map(|h| text(&h.join().unwrap()))
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|h| text(&h.join().unwrap()))
            .unwrap_or_default();
        BgExit {
            status,
            stdout,
            stderr,
        }
    }

    /// The host pid of the `orbit run` process (the stage1 supervisor after the exec).
    pub fn run_pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits (bounded) for `orbit run` to exit.
    pub fn wait(&mut self, deadline: Duration) -> BgExit {
        let mut child = self.child.take().expect("not yet waited");
        let st = wait_within(&mut child, deadline);
        let e = self.finish_with(st.unwrap_or_else(|| ExitStatus::from_raw(9)));
        assert!(
            st.is_some(),
            "orbit run of pod {} did not exit within {deadline:?}\nstdout: {}\nstderr: {}",
            self.uuid,
            e.stdout,
            e.stderr
        );
        e
    }

    /// `orbit stop --force` and reap.
    fn stop_and_wait(&mut self) -> BgExit {
        if !self.uuid.is_empty() {
            let _ = output_within(
                self.w
                    .cmd(&["stop", "--force", "--timeout", "10s", &self.uuid]),
                Duration::from_secs(20),
            );
        }
        let mut child = self.child.take().expect("running");
        let st = wait_within(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| ExitStatus::from_raw(9));
        self.finish_with(st)
    }
}

impl Drop for BgPod<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = self.stop_and_wait();
            }
        }
    }
}

/// The CRI log records of a pod's app: (time, stream, tag, text), asserting the format.
pub fn cri_log(w: &World, uuid: &str, app: &str) -> Vec<(String, String, String, String)> {
    let path = pod_dir(w, uuid).join("apps").join(app).join("log");
    let raw = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let (t, s, tag, rest) = (
                it.next().unwrap(),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next(),
            );
            let rest = rest.unwrap_or_else(|| panic!("CRI log line without text field: {l:?}"));
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("CRI log time {t:?} is not RFC 3339: {e} (line {l:?})"));
            assert!(
                t.ends_with('Z') && t.contains('.'),
                "CRI log time {t:?} should be UTC with fractional seconds (RFC3339Nano)"
            );
            assert!(
                s == "stdout" || s == "stderr",
                "CRI log stream {s:?} in {l:?}"
            );
            assert!(tag == "F" || tag == "P", "CRI log tag {tag:?} in {l:?}");
            (
                t.to_string(),
                s.to_string(),
                tag.to_string(),
                rest.to_string(),
            )
        })
        .collect()
}

/// The directory of the shell-script test stage1 in the source tree.
pub fn sh_stage1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stage1-sh")
}

/// Runs `orbit ARGS` under a pseudo-terminal (python's pty), types `input`, returns
/// (everything the terminal showed, exit status).
pub fn under_pty(w: &World, args: &[&str], input: &str) -> (String, i32) {
    // Types `input` once the shell's prompt ("# ") shows (or after 10 s), then reads until
    // the terminal closes; prints what it saw and "@@EXIT <status>".
    let py = r##"
import os, pty, select, sys, time
data, args = sys.argv[1].encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(args[0], args)
out, sent, start = b"", False, time.time()
while time.time() - start < 30:
    if not sent and (b"# " in out or time.time() - start > 10):
        os.write(fd, data)
        sent = True
    r, _, _ = select.select([fd], [], [], 0.05)
    if not r:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        chunk = b""
    if not chunk:
        break
    out += chunk
else:
    os.kill(pid, 9)
_, st = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\n@@EXIT %d\n" % os.waitstatus_to_exitcode(st))
"##;
    let orbit = crate::common::orbit_bin();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(py).arg(input).arg(&orbit).args(args);
    for (k, v) in [
        ("ORBIT_DIR", w.store()),
        ("ORBIT_SYSTEM_CONFIG", w.path("config/vendor")),
        ("ORBIT_LOCAL_CONFIG", w.path("config/system")),
        ("ORBIT_USER_CONFIG", w.path("config/user")),
    ] {
        cmd.env(k, v);
    }
    cmd.env("ORBIT_NET", "none");
    let o = output_within(cmd, Duration::from_secs(40));
    let all = text(&o.stdout);
    let (shown, exit) = all
        .rsplit_once("\n@@EXIT ")
        .unwrap_or_else(|| panic!("pty helper failed: {all}\n{}", text(&o.stderr)));
    (shown.to_string(), exit.trim().parse().unwrap())
}

/// Runs a pod (options `pod` first: its stage1) whose app mounts host directory `tree`
/// (holding a mount of the host's at `tree/sub`) as volume `ro` (readOnly) at /ro and `rro`
/// (also recursiveReadOnly) at /rro, and that exits 0 only if the top of both is read-only,
/// the mount below /ro writable and the one below /rro not; checks that the host saw
/// nothing else written and takes the file the app wrote away again. The app's output
/// (`w` from /rro/sub/f) is returned.
pub fn run_read_only_volumes(w: &World, tree: &Path, pod: &[&str]) -> String {
    let ro = format!("ro,kind=host,source={},readOnly=true", tree.display());
    let rro = format!("rro,kind=host,source={},ro=true,rro=true", tree.display());
    let script = "touch /ro/top 2>/dev/null && exit 10; touch /rro/top 2>/dev/null && exit 11; \
                  echo w > /ro/sub/f || exit 12; touch /rro/sub/g 2>/dev/null && exit 13; \
                  cat /rro/sub/f";
    let mut args = pod.to_vec();
    args.extend_from_slice(&[
        "--volume",
        &ro,
        "--volume",
        &rro,
        BUSYBOX,
        "--mount",
        "volume=ro,target=/ro",
        "--mount",
        "volume=rro,target=/rro",
        "--exec",
        "/bin/sh",
        "--",
        "-c",
        script,
    ]);
    let out = run_expect(w, &args, 0);
    assert!(!tree.join("top").exists() && !tree.join("sub/g").exists());
    fs::remove_file(tree.join("sub/f")).unwrap();
    out
}
