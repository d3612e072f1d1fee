//! `GetLogs`: an app's CRI log records (the files the stage1 writes), the last N or those
//! since a time, then — following — new ones as the event hub reports the pod's files
//! changing, until the pod has exited and its logs are read to the end.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use orbit_stage1::log::{self, Stream};
use orbit_stage1::paths;

use super::proto;
use crate::clock::nanos;
use crate::pod::store::{DirState, LockSnapshot, PodRef, PodStore};

/// Records per message.
const BATCH: usize = 1000;

/// Where a log reader is.
pub struct Cursor {
    pods: PodStore,
    pod: PodRef,
    /// App, log file, offset after the last complete line read.
    files: Vec<(String, PathBuf, u64)>,
    /// What was read when the cursor was opened.
    first: Vec<proto::LogRecord>,
}

fn record(app: &str, r: &log::Record) -> proto::LogRecord {
    proto::LogRecord {
        app: app.to_string(),
        time: nanos(r.time),
        stream: match r.stream {
            Stream::Stdout => proto::LogStream::Stdout,
            Stream::Stderr => proto::LogStream::Stderr,
        } as i32,
        text: r.text.to_string(),
        full: r.full,
    }
}

/// Complete lines of `path` from `offset`: the records and the offset after the last one.
fn read_from(app: &str, path: &Path, offset: u64) -> (Vec<proto::LogRecord>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (Vec::new(), offset);
    }
    let mut reader = BufReader::new(f);
    let (mut out, mut offset) = (Vec::new(), offset);
    let mut line = Vec::new();
    // Bytes, not text: an app's output need not be UTF-8. A line still being written (no
    // newline yet) is left for the next read.
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 && line.ends_with(b"\n") {
        offset += line.len() as u64;
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        if let Some(r) = log::parse(&text) {
            out.push(record(app, &r));
        }
        line.clear();
    }
    (out, offset)
}

/// Where the last `n` complete lines of `path` start (0 when it has fewer), found by
/// reading backwards in blocks.
fn tail_offset(path: &Path, n: usize) -> u64 {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0;
    };
    // The last newline ends the last complete line: the (n+1)-th from the end ends the line
    // before the last n.
    let mut end = len;
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        if f.read_exact_at(chunk, start).is_err() {
            return 0;
        }
        for (i, b) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            if *b == b'\n' {
                seen += 1;
                if seen == n + 1 {
                    return at + 1;
                }
            }
        }
        end = start;
    }
    0
}

/// Opens the logs `req` asks for and reads what is there.
pub fn open(root: &Path, req: &proto::GetLogsRequest) -> Result<Cursor, Status> {
    let pods = PodStore::new(root);
    let pod = pods.find(&req.pod_id).map_err(|e| match e {
        crate::pod::PodError::UnknownPod(p) => Status::not_found(format!("no pod {p}")),
        e => Status::invalid_argument(e.to_string()),
    })?;
    let manifest = crate::pod::status::manifest(&pod).map_err(|e| {
        Status::failed_precondition(format!("pod {} has no manifest yet: {e}", pod.uuid))
    })?;
    if !manifest.log.file {
        return Err(Status::failed_precondition(format!(
            "pod {} logs to the journal only: read it with journalctl ORBIT_POD={}",
            pod.uuid, pod.uuid
        )));
    }
    let apps: Vec<String> = if req.app_name.is_empty() {
        manifest.apps.iter().map(|a| a.name.clone()).collect()
    } else if manifest.apps.iter().any(|a| a.name == req.app_name) {
        vec![req.app_name.clone()]
    } else {
        return Err(Status::not_found(format!(
            "pod {} has no app {}",
            pod.uuid, req.app_name
        )));
    };
    let mut first = Vec::new();
    let mut files = Vec::new();
    for app in apps {
        let path = paths::app_log(&pod.path, &app);
        // Only the tail is read when that is all that is asked for (a log can be huge).
        let start = if req.tail > 0 && req.since_time == 0 {
            tail_offset(&path, req.tail as usize)
        } else {
            0
        };
        let (mut records, offset) = read_from(&app, &path, start);
        records.retain(|r| req.since_time == 0 || r.time >= req.since_time);
        if req.tail > 0 {
            let skip = records.len().saturating_sub(req.tail as usize);
            records.drain(..skip);
        }
        first.extend(records);
        files.push((app, path, offset));
    }
    Ok(Cursor {
        pods,
        pod,
        files,
        first,
    })
}

/// Whether the pod is done: not running, or its stage1 recorded the exit (the lock goes
/// a moment later).
fn finished(pods: &PodStore, pod: &PodRef) -> bool {
    let Ok(p) = pods.refresh(pod) else {
        return true;
    };
    let running = p.state == DirState::Run && LockSnapshot::take().is_locked(&p.path);
    !running
        || std::fs::read_to_string(p.path.join(paths::EXIT)).is_ok_and(|s| !s.trim().is_empty())
}

/// New records since the cursor, and whether the pod was done before they were read.
fn read_more(mut cur: Cursor) -> (Cursor, Vec<proto::LogRecord>, bool) {
    let done = finished(&cur.pods, &cur.pod);
    if let Ok(p) = cur.pods.refresh(&cur.pod) {
        // Renamed (collected): the files moved with the directory.
        if p.path != cur.pod.path {
            for (app, path, _) in cur.files.iter_mut() {
                *path = paths::app_log(&p.path, app);
            }
            cur.pod = p;
        }
    }
    let mut out = Vec::new();
    for (app, path, offset) in cur.files.iter_mut() {
        let (records, next) = read_from(app, path, *offset);
        *offset = next;
        out.extend(records);
    }
    (cur, out, done)
}

async fn send(
    tx: &mpsc::Sender<Result<proto::GetLogsResponse, Status>>,
    records: Vec<proto::LogRecord>,
) -> bool {
    for chunk in records.chunks(BATCH) {
        let msg = proto::GetLogsResponse {
            records: chunk.to_vec(),
        };
        if tx.send(Ok(msg)).await.is_err() {
            return false;
        }
    }
    true
}

/// Sends the cursor's records, then (following) new ones until the pod is done.
pub async fn stream(
    mut cur: Cursor,
    req: proto::GetLogsRequest,
    mut changes: broadcast::Receiver<String>,
    tx: mpsc::Sender<Result<proto::GetLogsResponse, Status>>,
) {
    let first = std::mem::take(&mut cur.first);
    if !send(&tx, first).await || !req.follow {
        return;
    }
    loop {
        let Ok((next, records, done)) = tokio::task::spawn_blocking(move || read_more(cur)).await
        else {
            return;
        };
        cur = next;
        if !send(&tx, records).await || done {
            return;
        }
        // Woken by a change under this pod; a stage1 killed outright changes nothing on
        // disk, so its end is noticed by a re-check every few seconds.
        let uuid = cur.pod.uuid.clone();
        let wait = async {
            loop {
                match changes.recv().await {
                    Ok(u) if u == uuid => return true,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::select! {
            alive = wait => if !alive { return },
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tail_offset;

    #[test]
    fn the_tail_starts_after_the_right_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 1), 5);
        assert_eq!(tail_offset(&p, 2), 2);
        assert_eq!(tail_offset(&p, 3), 0);
        assert_eq!(tail_offset(&p, 9), 0);
        // A line still being written does not count.
        std::fs::write(&p, "a\nbb\ncc").unwrap();
        assert_eq!(tail_offset(&p, 1), 2);
        // Lines longer than a block.
        let long = "x".repeat(100_000);
        std::fs::write(&p, format!("{long}\n{long}\n{long}\n")).unwrap();
        assert_eq!(tail_offset(&p, 1), 2 * 100_001);
    }
}
