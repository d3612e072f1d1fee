//! `orbit-build-image`: builds an OCI layout from directories, one layer each.
//!
//! ```text
//! orbit-build-image --out build/example --name example.com/busybox:latest \
//!     --layer gzip:build/rootfs-base --layer zstd:build/rootfs-etc --cmd /bin/sh
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};

/// Build an OCI image layout from directories (one layer per directory).
#[derive(Parser)]
struct Args {
    /// Output OCI layout directory.
    #[arg(long)]
    out: PathBuf,
    /// Image name recorded in index.json (org.opencontainers.image.ref.name).
    #[arg(long)]
    name: String,
    /// A layer: COMPRESSION:DIR where COMPRESSION is none, gzip or zstd; base layer first.
    #[arg(long = "layer", required = true)]
    layers: Vec<String>,
    /// Entrypoint argument (repeat for each word).
    #[arg(long)]
    entrypoint: Vec<String>,
    /// Cmd argument (repeat for each word).
    #[arg(long)]
    cmd: Vec<String>,
    /// Environment KEY=VALUE (repeatable).
    #[arg(long)]
    env: Vec<String>,
    /// Working directory.
    #[arg(long)]
    workdir: Option<String>,
    /// Label KEY=VALUE (repeatable); `orbit.dev/port.NAME=PORT/PROTO` names a port.
    #[arg(long)]
    label: Vec<String>,
    /// Exposed port PORT/PROTO (repeatable).
    #[arg(long)]
    expose: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut layers = Vec::new();
    for spec in &a.layers {
        let Some((c, dir)) = spec.split_once(':') else {
            bail!("--layer {spec}: expected COMPRESSION:DIR")
        };
        let compression = Compression::parse(c)
            .with_context(|| format!("--layer {spec}: unknown compression {c}"))?;
        let tar = tar_dir(dir.as_ref()).with_context(|| format!("cannot tar {dir}"))?;
        layers.push(Layer { tar, compression });
    }
    let run = RunConfig {
        entrypoint: (!a.entrypoint.is_empty()).then_some(a.entrypoint),
        cmd: (!a.cmd.is_empty()).then_some(a.cmd),
        env: a.env,
        working_dir: a.workdir,
        labels: a
            .label
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--label {l}: expected KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?,
        exposed_ports: a.expose,
    };
    let w = write_image(&a.out, &a.name, &layers, &run)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("{}", w.manifest);
    Ok(())
}
