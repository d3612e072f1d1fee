//! Builds OCI image layouts with deterministic tar layers, for orbit's example image, its
//! tests (including deliberately hostile images) and its benchmarks.
//!
//! Deterministic means: entries sorted by path, fixed mtimes, uid/gid 0 unless the file says
//! otherwise, no host-specific metadata — so the same inputs give the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Parses `none`, `gzip`, `zstd`.
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" | "tar" => Some(Compression::None),
            "gzip" | "gz" => Some(Compression::Gzip),
            "zstd" | "zst" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
    )
}

/// Compresses a tar.
pub fn compress(tar: &[u8], c: Compression) -> io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(tar.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar)?;
            e.finish()
        }
        Compression::Zstd => zstd::encode_all(tar, 3),
    }
}

/// A deterministic tar of a directory tree (symlinks kept as symlinks, device nodes as
/// device nodes, hardlinks not detected).
pub fn tar_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut paths = Vec::new();
    collect(dir, dir, &mut paths)?;
    paths.sort();
    for rel in paths {
        let full = dir.join(&rel);
        let meta = fs::symlink_metadata(&full)?;
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mode(meta.permissions().mode() & 0o7777);
        if meta.file_type().is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &rel, fs::read_link(&full)?)?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, format!("{}/", rel.display()), io::empty())?;
        } else if meta.file_type().is_block_device() || meta.file_type().is_char_device() {
            // Device nodes are kept as they are: hostile-layer tests ship them.
            h.set_entry_type(if meta.file_type().is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Char
            });
            h.set_size(0);
            h.set_device_major(libc::major(meta.rdev()))?;
            h.set_device_minor(libc::minor(meta.rdev()))?;
            b.append_data(&mut h, &rel, io::empty())?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            b.append_data(&mut h, &rel, fs::File::open(&full)?)?;
        }
    }
    b.into_inner()
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        out.push(p.strip_prefix(root).expect("below root").to_path_buf());
        if e.file_type()?.is_dir() {
            collect(root, &p, out)?;
        }
    }
    Ok(())
}

/// A layer ready to be written: its tar (for the diff-ID) and its compression.
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// Compression of the blob.
    pub compression: Compression,
}

/// What to write into the image config besides the layers.
#[derive(Default, Clone)]
pub struct RunConfig {
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Cmd.
    pub cmd: Option<Vec<String>>,
    /// Env.
    pub env: Vec<String>,
    /// Working dir.
    pub working_dir: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (`80/tcp`).
    pub exposed_ports: Vec<String>,
}

/// Digests of a written image.
pub struct Written {
    /// Manifest digest.
    pub manifest: String,
    /// Config digest.
    pub config: String,
    /// Layer blob digests.
    pub layers: Vec<String>,
    /// Layer diff-IDs.
    pub diff_ids: Vec<String>,
}

/// Writes a blob into a layout.
pub fn write_blob(layout: &Path, bytes: &[u8]) -> io::Result<String> {
    let d = sha256(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(&d["sha256:".len()..]), bytes)?;
    Ok(d)
}

/// The image config for layers and a run config.
pub fn config_json(diff_ids: &[String], run: &RunConfig) -> Value {
    let mut c = serde_json::Map::new();
    if let Some(e) = &run.entrypoint {
        c.insert("Entrypoint".into(), json!(e));
    }
    if let Some(cmd) = &run.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if !run.env.is_empty() {
        c.insert("Env".into(), json!(run.env));
    }
    if let Some(w) = &run.working_dir {
        c.insert("WorkingDir".into(), json!(w));
    }
    if !run.labels.is_empty() {
        c.insert("Labels".into(), json!(run.labels));
    }
    if !run.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = run
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        c.insert("ExposedPorts".into(), serde_json::Value::Object(ports));
    }
    json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": c,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
}

/// Writes an image into the OCI layout at `layout` (created if needed) and names it
/// `name` in `index.json` (added to any images already there).
pub fn write_image(
    layout: &Path,
    name: &str,
    layers: &[Layer],
    run: &RunConfig,
) -> io::Result<Written> {
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in layers {
        diff_ids.push(sha256(&l.tar));
        let blob = compress(&l.tar, l.compression)?;
        let d = write_blob(layout, &blob)?;
        descs.push(
            json!({"mediaType": l.compression.media_type(), "digest": d, "size": blob.len()}),
        );
        blobs.push(d);
    }
    let config = serde_json::to_vec(&config_json(&diff_ids, run))?;
    let config_digest = write_blob(layout, &config)?;
    write_manifest(layout, name, &config_digest, config.len(), descs).map(|manifest| Written {
        manifest,
        config: config_digest,
        layers: blobs,
        diff_ids,
    })
}

/// Writes a manifest with the given config and layer descriptors and names it in `index.json`.
pub fn write_manifest(
    layout: &Path,
    name: &str,
    config_digest: &str,
    config_size: usize,
    layers: Vec<Value>,
) -> io::Result<String> {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers,
    }))?;
    let manifest_digest = write_blob(layout, &manifest)?;
    add_to_index(layout, name, &manifest_digest, manifest.len())?;
    Ok(manifest_digest)
}

/// Adds (or replaces) a named manifest in a layout's `index.json`.
pub fn add_to_index(layout: &Path, name: &str, digest: &str, size: usize) -> io::Result<()> {
    fs::create_dir_all(layout)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index_path = layout.join("index.json");
    let mut index: Value = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        }
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("manifests is an array");
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != json!(name));
    manifests.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": size,
        "annotations": {"org.opencontainers.image.ref.name": name},
    }));
    fs::write(index_path, serde_json::to_vec_pretty(&index)?)
}
