//! `orbit logs`: reads the per-app CRI logs a stage1 writes, with `--tail`, `--since` and
//! `--follow` (until the pod exits).

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::time::Duration;

use orbit_stage1::log::{self, Stream};
use orbit_stage1::paths;

use super::status::{self, is_running};
use super::store::{PodRef, PodStore};
use super::PodError;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only this app (default: all, each line prefixed with the app name when several).
    pub app: Option<String>,
    /// Keep printing new lines until the pod exits.
    pub follow: bool,
    /// Only records at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only the last N lines (per app; a `P` record and the rest of its line are one).
    pub tail: Option<usize>,
    /// Print the records' timestamps.
    pub timestamps: bool,
}

/// Which of an app's streams have a line open (their last record shown was `P`): the
/// prefix and timestamp go only where a line starts, so a `P` record and the rest of its
/// line read as one line.
#[derive(Debug, Clone, Copy, Default)]
struct OpenLines {
    stdout: bool,
    stderr: bool,
}

impl OpenLines {
    fn of(&mut self, stream: Stream) -> &mut bool {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }
}

fn show(
    rec: &log::Record,
    prefix: &str,
    timestamps: bool,
    open: &mut OpenLines,
    out: &mut impl Write,
    err: &mut impl Write,
) {
    let continued = std::mem::replace(open.of(rec.stream), !rec.full);
    let head = match (continued, timestamps) {
        (true, _) => String::new(),
        (false, true) => format!("{prefix}{} ", rec.time),
        (false, false) => prefix.to_string(),
    };
    let end = if rec.full { "\n" } else { "" };
    let line = format!("{head}{}{end}", rec.text);
    let _ = match rec.stream {
        Stream::Stdout => out.write_all(line.as_bytes()),
        Stream::Stderr => err.write_all(line.as_bytes()),
    };
}

/// Where the last `n` lines of `records` start: a line is a stream's records up to its
/// next `F` (a `P` record continues on the same stream).
fn tail_start(records: &[log::Record], n: usize) -> usize {
    let mut open = OpenLines::default();
    let starts: Vec<usize> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| (!std::mem::replace(open.of(r.stream), !r.full)).then_some(i))
        .collect();
    // Fewer lines than asked for: all of them; none asked for: none.
    starts
        .len()
        .checked_sub(n)
        .map_or(0, |k| starts.get(k).copied().unwrap_or(records.len()))
}

/// Parses an RFC 3339 time (log records and `--since` compare as instants, not strings).
fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Prints the logs of a pod.
pub fn logs(pods: &PodStore, pod: &PodRef, opts: &LogOptions) -> Result<(), PodError> {
    let manifest = status::manifest(pod)?;
    if !manifest.log.file {
        return Err(PodError::BadSpec(format!(
            "pod {} logs to the journal only (--log=journal): use `journalctl ORBIT_POD={}`",
            pod.uuid, pod.uuid
        )));
    }
    let apps: Vec<String> = match &opts.app {
        Some(a) if manifest.apps.iter().any(|x| &x.name == a) => vec![a.clone()],
        Some(a) => {
            return Err(PodError::BadSpec(format!(
                "pod {} has no app '{a}' (apps: {})",
                pod.uuid,
                manifest
                    .apps
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        None => manifest.apps.iter().map(|a| a.name.clone()).collect(),
    };
    let multi = apps.len() > 1;
    let since = match &opts.since {
        Some(s) => Some(parse_time(s).ok_or_else(|| {
            PodError::BadSpec(format!(
                "--since {s}: not an RFC 3339 time (e.g. 2024-01-01T10:00:00Z) or a duration"
            ))
        })?),
        None => None,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut offsets = Vec::new();
    for app in &apps {
        let path = paths::app_log(&pod.path, app);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records: Vec<log::Record> = text
            .lines()
            .filter_map(log::parse)
            .filter(|r| since.is_none_or(|s| parse_time(r.time).is_none_or(|t| t >= s)))
            .collect();
        let skip = opts.tail.map_or(0, |n| tail_start(&records, n));
        let prefix = if multi {
            format!("{app}: ")
        } else {
            String::new()
        };
        let mut open = OpenLines::default();
        for r in &records[skip..] {
            show(r, &prefix, opts.timestamps, &mut open, &mut out, &mut err);
        }
        offsets.push((path, text.len() as u64, prefix, open));
    }
    let _ = out.flush();
    if !opts.follow {
        return Ok(());
    }
    drop((out, err));
    loop {
        let pod = pods.refresh(pod)?;
        let running = is_running(&pod);
        let mut any = false;
        for (path, offset, prefix, open) in offsets.iter_mut() {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            if f.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
                *offset += line.len() as u64;
                if let Some(r) = log::parse(line.trim_end_matches('\n')) {
                    show(
                        &r,
                        prefix,
                        opts.timestamps,
                        open,
                        &mut std::io::stdout(),
                        &mut std::io::stderr(),
                    );
                }
                any = true;
                line.clear();
            }
        }
        let _ = std::io::stdout().flush();
        if !running && !any {
            return Ok(());
        }
        if !any {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "T1 stdout F one\n\
                       T2 stdout P hel\n\
                       T3 stderr F oops\n\
                       T4 stdout P l\n\
                       T5 stdout F o\n\
                       T6 stdout P tail\n";

    fn records() -> Vec<log::Record<'static>> {
        LOG.lines().filter_map(log::parse).collect()
    }

    /// `P` records read back joined with the rest of their line: the prefix and timestamp
    /// once, where the line starts.
    #[test]
    fn partial_records_join_into_their_line() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut open = OpenLines::default();
        for r in &records() {
            show(r, "app: ", true, &mut open, &mut out, &mut err);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "app: T1 one\napp: T2 hello\napp: T6 tail"
        );
        assert_eq!(String::from_utf8(err).unwrap(), "app: T3 oops\n");
    }

    /// `--tail N` counts lines, not records: it never starts inside a line.
    #[test]
    fn the_tail_counts_lines() {
        let r = records();
        assert_eq!(tail_start(&r, 1), 5);
        assert_eq!(tail_start(&r, 2), 2);
        assert_eq!(tail_start(&r, 3), 1);
        assert_eq!(tail_start(&r, 4), 0);
        assert_eq!(tail_start(&r, 40), 0);
        assert_eq!(tail_start(&r, 0), r.len());
    }
}
