//! The CRI log format: `<RFC3339Nano> stdout|stderr F|P <line>`; `P` marks a partial line
//! (the rest follows in the next record), `F` a full one.

use std::io::{self, Write};

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    /// `stdout` / `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// RFC 3339 with nanoseconds.
    pub time: &'a str,
    /// The stream.
    pub stream: Stream,
    /// False for a partial line.
    pub full: bool,
    /// The text, without the newline.
    pub text: &'a str,
}

/// Parses one line of a CRI log.
pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = match it.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match it.next()? {
        "F" => true,
        "P" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        full,
        text: it.next().unwrap_or(""),
    })
}

/// Splits raw output into CRI records: complete lines become `F` records; a trailing piece
/// without a newline is kept until more arrives (or flushed as `P` by [`LineWriter::flush_partial`]).
pub struct LineWriter {
    stream: Stream,
    pending: Vec<u8>,
}

/// Longest line kept in one record before it is split with `P`.
const MAX_RECORD: usize = 16 * 1024;

impl LineWriter {
    /// A writer for one stream.
    pub fn new(stream: Stream) -> LineWriter {
        LineWriter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds output, writing a record per complete line to `out`, stamped with `now`.
    pub fn feed(&mut self, data: &[u8], now: &str, out: &mut impl Write) -> io::Result<()> {
        self.pending.extend_from_slice(data);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            self.record(&line[..line.len() - 1], true, now, out)?;
        }
        while self.pending.len() > MAX_RECORD {
            let chunk: Vec<u8> = self.pending.drain(..MAX_RECORD).collect();
            self.record(&chunk, false, now, out)?;
        }
        Ok(())
    }

    /// Writes what is left without a newline as a final `F` record (the stream ended).
    pub fn flush_partial(&mut self, now: &str, out: &mut impl Write) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.record(&rest, true, now, out)?;
        }
        Ok(())
    }

    fn record(&self, text: &[u8], full: bool, now: &str, out: &mut impl Write) -> io::Result<()> {
        let tag = if full { "F" } else { "P" };
        out.write_all(format!("{now} {} {tag} ", self.stream.as_str()).as_bytes())?;
        out.write_all(text)?;
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_records_and_partials_wait() {
        let mut w = LineWriter::new(Stream::Stdout);
        let mut out = Vec::new();
        w.feed(b"hello\nwor", "T1", &mut out).unwrap();
        w.feed(b"ld\n", "T2", &mut out).unwrap();
        w.feed(b"tail", "T3", &mut out).unwrap();
        w.flush_partial("T4", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "T1 stdout F hello\nT2 stdout F world\nT4 stdout F tail\n"
        );
        let r = parse(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            r,
            Record {
                time: "T1",
                stream: Stream::Stdout,
                full: true,
                text: "hello"
            }
        );
    }

    #[test]
    fn long_lines_are_split_with_p() {
        let mut w = LineWriter::new(Stream::Stderr);
        let mut out = Vec::new();
        w.feed(&vec![b'x'; MAX_RECORD + 10], "T", &mut out).unwrap();
        w.feed(b"\n", "T", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().map(|l| parse(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert!(!lines[0].full && lines[1].full);
        assert_eq!(lines[0].text.len() + lines[1].text.len(), MAX_RECORD + 10);
    }
}
