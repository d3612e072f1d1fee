//! App output to journald over its native protocol: one datagram per line to the journal
//! socket, with `MESSAGE`, `PRIORITY` (6 stdout, 3 stderr), `SYSLOG_IDENTIFIER` (the app),
//! `ORBIT_POD`, `ORBIT_APP` and `ORBIT_MACHINE` (the machined name), so
//! `journalctl ORBIT_POD=<uuid>` finds a pod's lines. journald's own socket is a filesystem
//! path, so it is reachable from the pod init's network namespace.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use orbit_stage1::log::Stream;

/// A connection to journald.
pub struct Journal {
    socket: UnixDatagram,
    target: PathBuf,
    pod: String,
}

impl Journal {
    /// A sender to `target` for pod `pod`.
    pub fn new(target: PathBuf, pod: &str) -> Option<Journal> {
        Some(Journal {
            socket: UnixDatagram::unbound().ok()?,
            target,
            pod: pod.to_string(),
        })
    }

    /// Sends one line of app `app`'s output.
    pub fn send(&self, app: &str, stream: Stream, line: &[u8]) {
        let priority = match stream {
            Stream::Stdout => 6,
            Stream::Stderr => 3,
        };
        let mut msg = Vec::with_capacity(line.len() + 160);
        // A line with a newline inside cannot use the simple `KEY=value` form; journald's
        // binary form (KEY\n + little-endian length + data) carries anything.
        msg.extend_from_slice(b"MESSAGE\n");
        msg.extend_from_slice(&(line.len() as u64).to_le_bytes());
        msg.extend_from_slice(line);
        msg.push(b'\n');
        for (k, v) in [
            ("PRIORITY", priority.to_string()),
            ("SYSLOG_IDENTIFIER", app.to_string()),
            ("ORBIT_POD", self.pod.clone()),
            ("ORBIT_APP", app.to_string()),
            ("ORBIT_MACHINE", format!("orbit-{}", self.pod)),
        ] {
            msg.extend_from_slice(format!("{k}={v}\n").as_bytes());
        }
        let _ = self.socket.send_to(&msg, &self.target);
    }
}

/// Splits a stream into lines for the journal, keeping a partial line until it completes.
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Feeds output; calls `each` for every complete line (without its newline).
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(data);
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            each(&line[..line.len() - 1]);
        }
    }

    /// The rest, when the stream ended without a newline.
    pub fn finish(&mut self, each: impl FnOnce(&[u8])) {
        if !self.pending.is_empty() {
            each(&std::mem::take(&mut self.pending));
        }
    }
}
