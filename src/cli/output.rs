//! Output helpers: `--format table|json`, aligned tables, human sizes.

use clap::ValueEnum;
use serde::Serialize;

/// Output format of listing and inspect commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows under a header, columns aligned; `legend: false` omits the header.
pub fn table(header: &[&str], rows: &[Vec<String>], legend: bool) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = w));
            }
        }
        println!("{}", s.trim_end());
    };
    if legend {
        line(header.to_vec());
    }
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A size in B/KiB/MiB/GiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[derive(Serialize)]
struct VersionInfo {
    version: &'static str,
    stage1_interface: u32,
    commit: &'static str,
}

/// `orbit version`.
pub fn version(format: Format) -> anyhow::Result<()> {
    let v = VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        stage1_interface: orbit_stage1::INTERFACE_VERSION,
        commit: option_env!("ORBIT_GIT_COMMIT").unwrap_or("unknown"),
    };
    match format {
        Format::Json => json(&v),
        Format::Table => {
            println!("orbit version {}", v.version);
            println!("stage1 interface version {}", v.stage1_interface);
            Ok(())
        }
    }
}

/// Runs `each` for every target, reporting each failure as `cannot VERB TARGET: …`, and
/// fails after trying them all when any did (`N of M NOUN(s) not DONE`).
pub fn for_each_target(
    targets: &[String],
    (verb, noun, done): (&str, &str, &str),
    mut each: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for t in targets {
        if let Err(e) = each(t) {
            eprintln!("orbit: error: cannot {verb} {t}: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} {noun}(s) not {done}", targets.len());
    }
    Ok(())
}
