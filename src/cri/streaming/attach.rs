//! `Attach` on a remote-command exchange: the container's output as its stage1 logs it,
//! and the client's input to the container's stdin FIFO or terminal.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::remotecommand::{feed, finish, Options, Outcome, Streams};

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
