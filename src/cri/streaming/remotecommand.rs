//! The Kubernetes remote-command protocol (`v4.channel.k8s.io` and its predecessors) on a
//! SPDY session: the client opens an `error` stream and, as asked, `stdin`, `stdout`,
//! `stderr` and (with a terminal) `resize` streams; the server runs the command — or
//! attaches to the container's output — and reports the outcome on `error` as a JSON
//! `metav1.Status`, the way the kubelet's own streaming server does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::session::{Closer, Session, StreamReader, StreamWriter};

/// How long a terminal exec waits for the client's first size before it starts.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);
/// How long the client has to open its streams (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Output still arriving after the command exited is forwarded for this long: a process
/// it left in the background holding the pipes does not hold the exchange open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// What the client asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The streams of one exchange.
pub struct Streams {
    error: StreamWriter,
    stdin: Option<StreamReader>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    /// Terminal sizes (columns, rows) from the `resize` stream.
    resize: mpsc::Receiver<(u16, u16)>,
    closer: Closer,
    /// True once the client is gone.
    gone: tokio::sync::watch::Receiver<bool>,
    /// `v4.channel.k8s.io`: the outcome as a JSON status (plain text before v4).
    v4: bool,
}

/// Waits for the streams `opts` calls for. A `resize` stream may come with them, later
/// or never; it is served in the background. Streams of other types are dropped.
pub async fn accept(mut session: Session, opts: Options, v4: bool) -> Result<Streams, String> {
    let closer = session.closer();
    let gone = session.gone();
    let (resize_tx, resize) = mpsc::channel(4);
    let (mut error, mut stdin, mut stdout, mut stderr) = (None, None, None, None);
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    loop {
        let ready = error.is_some()
            && (stdin.is_some() || !opts.stdin)
            && (stdout.is_some() || !opts.stdout)
            && (stderr.is_some() || !opts.stderr || opts.tty);
        if ready {
            break;
        }
        let stream = match tokio::time::timeout_at(deadline, session.next_stream()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err("the client went away before opening its streams".into()),
            Err(_) => {
                closer.close().await;
                return Err("timed out waiting for the client to open its streams".into());
            }
        };
        match stream.header("streamtype").unwrap_or_default() {
            "error" => error = Some(stream.writer),
            "stdin" => stdin = Some(stream.reader),
            "stdout" => stdout = Some(stream.writer),
            "stderr" => stderr = Some(stream.writer),
            "resize" => {
                tokio::spawn(read_resizes(stream.reader, resize_tx.clone()));
            }
            _ => {}
        }
    }
    tokio::spawn(async move {
        while let Some(s) = session.next_stream().await {
            if s.header("streamtype") == Some("resize") {
                tokio::spawn(read_resizes(s.reader, resize_tx.clone()));
            }
        }
    });
    Ok(Streams {
        error: error.expect("the loop ends only with an error stream"),
        stdin,
        stdout,
        stderr,
        resize,
        closer,
        gone,
        v4,
    })
}

/// Decodes the concatenated JSON size objects of a `resize` stream.
async fn read_resizes(mut reader: StreamReader, tx: mpsc::Sender<(u16, u16)>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let mut buf = Vec::new();
    while let Some(chunk) = reader.recv().await {
        buf.extend_from_slice(&chunk);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        while let Some(Ok(size)) = it.next() {
            used = it.byte_offset();
            if tx.send((size.width, size.height)).await.is_err() {
                return;
            }
        }
        buf.drain(..used);
        if buf.len() > 4096 {
            return; // Not sizes.
        }
    }
}

/// How the exchange ended.
pub enum Outcome {
    /// The command exited with this code (128+N for signal N).
    Exited(i32),
    /// It could not run, or the attachment failed.
    Failed(String),
}

/// The `metav1.Status` the client decodes from the error stream.
fn status_json(outcome: &Outcome) -> String {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    v.to_string()
}

/// Ends the exchange: output streams closed, the outcome on the error stream, GOAWAY.
async fn finish(s: Streams, outcome: Outcome) {
    for w in [&s.stdout, &s.stderr].into_iter().flatten() {
        w.close().await;
    }
    let report = match (&outcome, s.v4) {
        (_, true) => status_json(&outcome),
        (Outcome::Exited(0), false) => String::new(),
        (Outcome::Exited(code), false) => {
            format!("command terminated with non-zero exit code: exit status {code}")
        }
        (Outcome::Failed(msg), false) => msg.clone(),
    };
    if !report.is_empty() {
        let _ = s.error.write(report.as_bytes()).await;
    }
    s.error.close().await;
    s.closer.close().await;
}

/// Copies `from` to `to` (or discards it without a stream) until EOF or `stop`; `Err` when
/// the client is gone.
async fn pump<R: AsyncRead + Unpin>(mut from: R, to: Option<StreamWriter>) -> Result<(), ()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()), // EOF; a pty master says EIO.
            Ok(n) => n,
        };
        if let Some(w) = &to {
            w.write(&buf[..n]).await.map_err(|_| ())?;
        }
    }
}

/// Copies the client's stdin to `to` and closes it at the client's EOF.
async fn feed<W: tokio::io::AsyncWrite + Unpin>(mut from: StreamReader, mut to: W) {
    while let Some(chunk) = from.recv().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A command to run in a container (`orbit enter`: exactly as confined as the app).
pub struct Exec {
    pub orbit: PathBuf,
    pub root: PathBuf,
    pub pod: String,
    pub app: String,
    pub cmd: Vec<String>,
}

impl Exec {
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.orbit);
        cmd.arg("--dir")
            .arg(&self.root)
            .args(["enter", "--app", &self.app, &self.pod, "--"])
            .args(&self.cmd);
        // SAFETY: setsid is async-signal-safe and the child execs right after. Its own
        // session and process group: the exec is ended as a group, and a terminal can
        // become the command's controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }
}

/// Runs `target` with the client's streams and reports its exit.
pub async fn exec(target: Exec, opts: Options, mut streams: Streams) {
    let outcome = if opts.tty {
        run_with_terminal(&target, &mut streams).await
    } else {
        run_with_pipes(&target, &mut streams).await
    };
    finish(streams, outcome.unwrap_or_else(Outcome::Failed)).await;
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Kills the exec's process group (everything it started that stayed in it).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Waits for the child while the output pumps run; a client that hangs up ends it.
async fn supervise(
    child: &mut tokio::process::Child,
    mut outputs: tokio::task::JoinSet<Result<(), ()>>,
    mut gone: tokio::sync::watch::Receiver<bool>,
) -> Result<Outcome, String> {
    let pid = child.id();
    let status = loop {
        let client_gone = tokio::select! {
            st = child.wait() => break st.map_err(|e| format!("cannot wait for the command: {e}"))?,
            Some(r) = outputs.join_next() => !matches!(r, Ok(Ok(()))),
            _ = gone.wait_for(|g| *g) => true,
        };
        if client_gone {
            kill_group(pid);
            let _ = child.wait().await;
            return Err("the client went away".into());
        }
    };
    let drained = async { while outputs.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_AFTER_EXIT, drained)
        .await
        .is_err()
    {
        outputs.abort_all();
    }
    Ok(Outcome::Exited(exit_code(status)))
}

async fn run_with_pipes(t: &Exec, s: &mut Streams) -> Result<Outcome, String> {
    let mut cmd = t.command();
    cmd.stdin(if s.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run orbit enter: {e}"))?;
    let feeder = match (s.stdin.take(), child.stdin.take()) {
        (Some(from), Some(to)) => Some(tokio::spawn(feed(from, to))),
        _ => None,
    };
    let mut outputs = tokio::task::JoinSet::new();
    outputs.spawn(pump(child.stdout.take().expect("piped"), s.stdout.clone()));
    outputs.spawn(pump(child.stderr.take().expect("piped"), s.stderr.clone()));
    let outcome = supervise(&mut child, outputs, s.gone.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    outcome
}

/// The master side of an exec's terminal, non-blocking: dropping the last handle closes
/// it at once, which hangs up the command's session (SIGHUP) — as closing a terminal
/// window does. (A blocking file would stay open inside a pending read.)
#[derive(Clone)]
struct PtyMaster(std::sync::Arc<tokio::io::unix::AsyncFd<OwnedFd>>);

impl PtyMaster {
    fn new(fd: OwnedFd) -> std::io::Result<PtyMaster> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: an OwnedFd is a valid open descriptor that the AsyncFd owns from here on
        // and that always reports that same descriptor.
        let afd = unsafe { tokio::io::unix::AsyncFd::register(fd) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(PtyMaster(std::sync::Arc::new(afd)))
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for PtyMaster {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// A terminal has no half-close: end of input is the terminal's EOF character.
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_write(cx, &[4]).map_ok(drop)
    }
}

fn set_window(master: &PtyMaster, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the valid winsize struct; `master` is an open pty master.
    unsafe { libc::ioctl(master.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// A new terminal, both sides close-on-exec from the start: a process another thread
/// spawns meanwhile (another exec, a sandbox) must not inherit either.
fn open_terminal() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok((OwnedFd::from(master), slave))
}

async fn run_with_terminal(t: &Exec, s: &mut Streams) -> Result<Outcome, String> {
    let setup = |e: std::io::Error| format!("cannot set up the terminal: {e}");
    let (master, slave) = open_terminal().map_err(|e| format!("cannot open a terminal: {e}"))?;
    let master = PtyMaster::new(master).map_err(setup)?;
    // The size the client sends first applies from the start (kubectl sends it as soon as
    // the resize stream exists); a client that sends none gets the default.
    if let Ok(Some((cols, rows))) = tokio::time::timeout(FIRST_SIZE_WAIT, s.resize.recv()).await {
        set_window(&master, cols, rows);
    }
    while let Ok((cols, rows)) = s.resize.try_recv() {
        set_window(&master, cols, rows);
    }
    let mut cmd = t.command();
    cmd.stdin(Stdio::from(slave.try_clone().map_err(setup)?))
        .stdout(Stdio::from(slave.try_clone().map_err(setup)?))
        .stderr(Stdio::from(slave));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run orbit enter: {e}"))?;
    drop(cmd); // Our copies of the terminal's slave side: output ends when the command's do.
    let feeder = s
        .stdin
        .take()
        .map(|from| tokio::spawn(feed(from, master.clone())));
    let mut resize = std::mem::replace(&mut s.resize, mpsc::channel(1).1);
    let for_resize = master.clone();
    let resizer = tokio::spawn(async move {
        while let Some((cols, rows)) = resize.recv().await {
            set_window(&for_resize, cols, rows);
        }
    });
    let mut outputs = tokio::task::JoinSet::new();
    outputs.spawn(pump(master, s.stdout.clone()));
    let outcome = supervise(&mut child, outputs, s.gone.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    resizer.abort();
    outcome
}

/// A running container's output, as its stage1 logs it, and its input if it has one.
pub struct Attach {
    /// The app's log file (CRI format).
    pub log: PathBuf,
    /// True once the container has exited.
    pub exited: Box<dyn Fn() -> bool + Send + Sync>,
    /// The app's stdin FIFO (a container created with `stdin`).
    pub stdin: Option<PathBuf>,
    /// Called when the client's input ends (`stdin_once`: the container's input ends too).
    pub stdin_done: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Sets the container's terminal size (a container created with `tty`).
    pub resize: Option<std::sync::Arc<dyn Fn(u16, u16) + Send + Sync>>,
}

/// Forwards what the container writes from now on until it exits, and the client's input
/// to the container's (dropped for a container without one).
pub async fn attach(mut target: Attach, opts: Options, mut streams: Streams) {
    if let Some(mut input) = streams.stdin.take() {
        let fifo = target.stdin.as_ref().and_then(|p| {
            tokio::net::unix::pipe::OpenOptions::new()
                .open_sender(p)
                .ok()
        });
        let done = target.stdin_done.take();
        tokio::spawn(async move {
            match fifo {
                Some(fifo) => feed(input, fifo).await,
                None => while input.recv().await.is_some() {},
            }
            if let Some(done) = done {
                let _ = tokio::task::spawn_blocking(done).await;
            }
        });
    }
    if let Some(resize) = target.resize.clone() {
        let mut sizes = std::mem::replace(&mut streams.resize, mpsc::channel(1).1);
        tokio::spawn(async move {
            while let Some((cols, rows)) = sizes.recv().await {
                let r = resize.clone();
                let _ = tokio::task::spawn_blocking(move || r(cols, rows)).await;
            }
        });
    }
    let outcome = follow(&target, opts, &streams).await;
    finish(streams, outcome).await;
}

async fn follow(t: &Attach, opts: Options, s: &Streams) -> Outcome {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let mut file = match std::fs::File::open(&t.log) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("cannot read the container's output: {e}")),
    };
    let mut offset = file.seek(SeekFrom::End(0)).unwrap_or(0);
    let mut pending = Vec::new();
    let mut gone = s.gone.clone();
    loop {
        // Whether it had exited *before* this read: then this read gets everything.
        let exited = (t.exited)();
        let mut chunk = Vec::new();
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = (&mut file).take(1 << 20).read_to_end(&mut chunk);
        }
        offset += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            let Some(r) = orbit_stage1::log::parse(&text) else {
                continue;
            };
            let to = match r.stream {
                orbit_stage1::log::Stream::Stderr if !opts.tty => &s.stderr,
                _ => &s.stdout,
            };
            if let Some(w) = to {
                let mut out = r.text.as_bytes().to_vec();
                if r.full {
                    out.push(b'\n');
                }
                if w.write(&out).await.is_err() {
                    return Outcome::Failed("the client went away".into());
                }
            }
        }
        if exited && chunk.is_empty() {
            return Outcome::Exited(0);
        }
        if chunk.is_empty() {
            // Read to the end: if the log was rotated (ReopenContainerLog), go on with the
            // new file.
            let inode = |m: std::io::Result<std::fs::Metadata>| m.ok().map(|m| (m.dev(), m.ino()));
            if inode(std::fs::metadata(&t.log)) != inode(file.metadata()) {
                if let Ok(f) = std::fs::File::open(&t.log) {
                    (file, offset) = (f, 0);
                    continue;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = gone.wait_for(|g| *g) => return Outcome::Failed("the client went away".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_what_client_go_decodes() {
        let v: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(0))).unwrap();
        assert_eq!(v["status"], "Success");
        let v: serde_json::Value = serde_json::from_str(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value =
            serde_json::from_str(&status_json(&Outcome::Failed("no".into()))).unwrap();
        assert_eq!(v["message"], "no");
        assert_ne!(v["reason"], "NonZeroExitCode");
    }
}
