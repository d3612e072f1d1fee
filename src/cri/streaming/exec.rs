//! `Exec` on a remote-command exchange: `orbit enter` — exactly as confined as the
//! container — with pipes or a pseudo-terminal, ended with its client.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::super::procgroups;
use super::pty::{open_terminal, set_window, PtyMaster};
use super::remotecommand::{feed, finish, pump, Options, Outcome, Streams};

/// How long a terminal exec waits for the client's first size before it starts.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);
/// Output still arriving after the command exited is forwarded for this long: a process
/// it left in the background holding the pipes does not hold the exchange open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// A command to run in a container (`orbit enter`: exactly as confined as the app).
pub struct Exec {
    pub orbit: PathBuf,
    pub root: PathBuf,
    pub pod: String,
    pub app: String,
    pub cmd: Vec<String>,
    /// The terminal is only a relay to one elsewhere (a kvm pod's, in the VM): raw from the
    /// start, so every byte — the EOF character too — reaches the command's own terminal.
    pub relay_terminal: bool,
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

/// Ends the exec's processes and waits (bounded) until they are gone: its process group
/// (everything it started that stayed in it), and on a terminal the command's own session
/// (the terminal's, read before the kill: a terminal forgets a session whose leader died).
async fn end(child: &mut tokio::process::Child, terminal: Option<&PtyMaster>) {
    let session = terminal.and_then(PtyMaster::session);
    let group: Vec<Pid> = child
        .id()
        .map(|p| Pid::from_raw(p as i32))
        .into_iter()
        .collect();
    procgroups::kill(&group);
    let _ = child.wait().await;
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(sid) = session {
            procgroups::end_session(sid, procgroups::GONE_WITHIN);
        }
        procgroups::wait_gone(&group, procgroups::GONE_WITHIN);
    })
    .await;
}

/// Waits for the child while the output pumps run; a client that hangs up ends it.
async fn supervise(
    child: &mut tokio::process::Child,
    terminal: Option<&PtyMaster>,
    mut outputs: tokio::task::JoinSet<Result<(), ()>>,
    mut gone: tokio::sync::watch::Receiver<bool>,
) -> Result<Outcome, String> {
    let status = loop {
        let client_gone = tokio::select! {
            st = child.wait() => break st.map_err(|e| format!("cannot wait for the command: {e}"))?,
            Some(r) = outputs.join_next() => !matches!(r, Ok(Ok(()))),
            _ = gone.wait_for(|g| *g) => true,
        };
        if client_gone {
            end(child, terminal).await;
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
    let outcome = supervise(&mut child, None, outputs, s.gone.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    outcome
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
    if t.relay_terminal {
        let mut raw = nix::sys::termios::tcgetattr(&slave).map_err(|e| setup(e.into()))?;
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &raw)
            .map_err(|e| setup(e.into()))?;
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
    outputs.spawn(pump(master.clone(), s.stdout.clone()));
    let outcome = supervise(&mut child, Some(&master), outputs, s.gone.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    resizer.abort();
    outcome
}
