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
    /// Only the last N records (per app).
    pub tail: Option<usize>,
    /// Print the records' timestamps.
    pub timestamps: bool,
}

fn show(
    rec: &log::Record,
    prefix: &str,
    timestamps: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) {
    let ts = if timestamps {
        format!("{} ", rec.time)
    } else {
        String::new()
    };
    let end = if rec.full { "\n" } else { "" };
    let line = format!("{prefix}{ts}{}{end}", rec.text);
    let _ = match rec.stream {
        Stream::Stdout => out.write_all(line.as_bytes()),
        Stream::Stderr => err.write_all(line.as_bytes()),
    };
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
        let skip = opts.tail.map_or(0, |n| records.len().saturating_sub(n));
        let prefix = if multi {
            format!("{app}: ")
        } else {
            String::new()
        };
        for r in &records[skip..] {
            show(r, &prefix, opts.timestamps, &mut out, &mut err);
        }
        offsets.push((app.clone(), path, text.len() as u64, prefix));
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
        for (_, path, offset, prefix) in offsets.iter_mut() {
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
