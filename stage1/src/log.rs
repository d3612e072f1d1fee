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

/// Splits raw output into CRI records as it arrives (as CRI-O's conmon does): each piece of
/// output writes its complete lines as `F` records and what is left of it at once as a `P`
/// record, so nothing waits for a newline (a shell's prompt, `echo -n`); readers join a `P`
/// record with the records after it up to the next `F`. Output that ends without a newline
/// ends with a `P` record: the log holds exactly the bytes written.
pub struct LineWriter {
    stream: Stream,
}

/// Longest piece of a line in one record; longer lines are split with `P`.
const MAX_RECORD: usize = 16 * 1024;

impl LineWriter {
    /// A writer for one stream.
    pub fn new(stream: Stream) -> LineWriter {
        LineWriter { stream }
    }

    /// Writes `data` to `out` as records stamped with `now`: one `F` per newline, the rest
    /// as `P` (all in one write, so a reader never sees a record cut short by another).
    pub fn feed(&mut self, data: &[u8], now: &str, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(data.len() + 64);
        let mut lines = data.split(|&b| b == b'\n').peekable();
        while let Some(piece) = lines.next() {
            // The last piece has no newline after it: empty when `data` ended with one.
            let full = lines.peek().is_some();
            if full || !piece.is_empty() {
                self.records(piece, full, now, &mut buf);
            }
        }
        out.write_all(&buf)
    }

    /// `text` as records into `buf`: pieces of at most [`MAX_RECORD`] bytes, all `P` but the
    /// last, which `full` tags.
    fn records(&self, text: &[u8], full: bool, now: &str, buf: &mut Vec<u8>) {
        let mut rest = text;
        loop {
            let (piece, more) = rest.split_at(rest.len().min(MAX_RECORD));
            let tag = if full && more.is_empty() { "F" } else { "P" };
            buf.extend_from_slice(format!("{now} {} {tag} ", self.stream.as_str()).as_bytes());
            buf.extend_from_slice(piece);
            buf.push(b'\n');
            if more.is_empty() {
                return;
            }
            rest = more;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece of output is in the log as soon as it is fed: complete lines as `F`, the
    /// rest as `P` at once (an attached client sees `echo -n hello` without a newline); the
    /// records join back into exactly the lines written.
    #[test]
    fn output_is_written_at_once_and_partials_are_p_records() {
        let mut w = LineWriter::new(Stream::Stdout);
        let mut out = Vec::new();
        w.feed(b"hello", "T1", &mut out).unwrap();
        assert_eq!(String::from_utf8_lossy(&out), "T1 stdout P hello\n");
        w.feed(b" world\nnext\n\nwor", "T2", &mut out).unwrap();
        w.feed(b"ld\n", "T3", &mut out).unwrap();
        w.feed(b"", "T4", &mut out).unwrap();
        w.feed(b"tail", "T5", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "T1 stdout P hello\n\
             T2 stdout F  world\n\
             T2 stdout F next\n\
             T2 stdout F \n\
             T2 stdout P wor\n\
             T3 stdout F ld\n\
             T5 stdout P tail\n"
        );
        let records: Vec<Record> = text.lines().map(|l| parse(l).unwrap()).collect();
        assert_eq!(
            records[0],
            Record {
                time: "T1",
                stream: Stream::Stdout,
                full: false,
                text: "hello"
            }
        );
        assert_eq!(join(&records), ["hello world", "next", "", "world", "tail"]);
    }

    /// The lines records make: `P` records joined with what follows up to an `F` (a last
    /// line without a newline too).
    fn join(records: &[Record]) -> Vec<String> {
        let mut lines = vec![String::new()];
        for r in records {
            lines.last_mut().unwrap().push_str(r.text);
            if r.full {
                lines.push(String::new());
            }
        }
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }

    #[test]
    fn long_lines_are_split_with_p() {
        let mut w = LineWriter::new(Stream::Stderr);
        let mut out = Vec::new();
        let mut long = vec![b'x'; 2 * MAX_RECORD + 10];
        long.push(b'\n');
        w.feed(&long, "T", &mut out).unwrap();
        w.feed(&vec![b'y'; MAX_RECORD + 1], "T", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let records: Vec<_> = text.lines().map(|l| parse(l).unwrap()).collect();
        let tags: Vec<bool> = records.iter().map(|r| r.full).collect();
        assert_eq!(tags, [false, false, true, false, false]);
        assert!(records.iter().all(|r| r.text.len() <= MAX_RECORD));
        let lines = join(&records);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 2 * MAX_RECORD + 10);
        assert_eq!(lines[1], "y".repeat(MAX_RECORD + 1));
    }
}
