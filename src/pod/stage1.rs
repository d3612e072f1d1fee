//! Choosing a stage1 and invoking its entrypoints. Built-in flavors (`ns`, `fly`, `kvm`) are
//! the `orbit-stage1` binary installed next to `orbit`, run as `orbit-stage1 <flavor>
//! <entrypoint>`; external ones are directories with a `stage1.json` and executables. Either
//! way stage0 runs a process with the pod directory as its working directory and the same
//! arguments (`--uuid=UUID [--debug] [--lock-fd=N] …`): the two are indistinguishable to
//! stage0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use orbit_stage1::{paths, Stage1Manifest, ENTRYPOINTS, INTERFACE_VERSION, OPTIONAL_ENTRYPOINTS};

use super::PodError;
use crate::config::ConfigDirs;

/// The built-in flavors.
pub const BUILTIN: [&str; 3] = ["ns", "fly", "kvm"];
/// The file name of the built-in flavors' binary, which sits next to the orbit binary.
pub const BUILTIN_BINARY: &str = "orbit-stage1";

/// The built-in flavors' binary: `orbit-stage1` next to this orbit binary, or an error
/// naming the file and the fix when it is not there. A small binary of its own (it links no
/// async runtime, gRPC or D-Bus) so that a pod's supervisor and init start quickly and cost
/// little memory; there is no fallback to this (large) binary.
pub fn builtin_binary() -> Result<PathBuf, PodError> {
    let me = std::env::current_exe().map_err(|e| {
        PodError::io(
            "cannot find the orbit binary",
            Path::new("/proc/self/exe"),
            e,
        )
    })?;
    let path = me.with_file_name(BUILTIN_BINARY);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PodError::MissingStage1Binary { path })
    }
}
/// The pod annotation that selects a stage1 (a name or a directory).
pub const STAGE1_ANNOTATION: &str = "orbit.dev/stage1";

/// The pod annotation naming the `kvm` flavor's guest kernel.
pub const KVM_KERNEL_ANNOTATION: &str = "orbit.dev/kvm-kernel";
/// The pod annotation choosing the `kvm` flavor's accelerator.
pub const KVM_ACCEL_ANNOTATION: &str = "orbit.dev/kvm-accel";
/// The pod annotation sizing a `kvm` VM's memory (MiB, at least).
pub const KVM_MEMORY_ANNOTATION: &str = "orbit.dev/kvm-memory-mib";
/// The pod annotation sizing a `kvm` VM's vCPUs (at least).
pub const KVM_CPUS_ANNOTATION: &str = "orbit.dev/kvm-cpus";

/// The `kvm` flavor's guest kernel: `explicit` (`--kvm-kernel`), else `kvm/vmlinux` in the
/// config dirs (user, system, vendor), with its `modules/` beside it.
pub fn kvm_kernel(explicit: Option<&Path>, config: &ConfigDirs) -> Result<PathBuf, PodError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => config
            .all()
            .iter()
            .rev()
            .map(|d| d.join("kvm").join("vmlinux"))
            .collect(),
    };
    for c in &candidates {
        if c.is_file() {
            if !c.with_file_name("modules").join("order").is_file() {
                return Err(PodError::Stage1(format!(
                    "guest kernel {}: no modules/order beside it; make kernels with scripts/kvm-kernel.sh",
                    c.display()
                )));
            }
            return std::fs::canonicalize(c).map_err(|e| PodError::io("cannot resolve", c, e));
        }
    }
    Err(PodError::Stage1(format!(
        "the kvm stage1 needs a guest kernel and found none at {}; run `scripts/kvm-kernel.sh` (installs QEMU and the kernel to /usr/lib/orbit/kvm) or pass --kvm-kernel=PATH",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )))
}

/// A selected stage1.
#[derive(Debug, Clone)]
pub struct Stage1 {
    /// Its manifest.
    pub manifest: Stage1Manifest,
    /// Its directory; `None` for a built-in flavor.
    pub dir: Option<PathBuf>,
}

fn builtin(name: &str) -> Stage1 {
    let entrypoints: BTreeMap<String, String> = ENTRYPOINTS
        .iter()
        .chain(OPTIONAL_ENTRYPOINTS.iter())
        .map(|e| (e.to_string(), e.to_string()))
        .collect();
    Stage1 {
        manifest: Stage1Manifest {
            interface_version: INTERFACE_VERSION,
            name: name.to_string(),
            entrypoints,
        },
        dir: None,
    }
}

/// The stage1s a pod can name: the built-in flavors, then `stage1.d/` entries of the config
/// directories.
pub fn available(config: &ConfigDirs) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
    for dir in config.all() {
        for e in std::fs::read_dir(dir.join("stage1.d"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().join(paths::STAGE1_MANIFEST).is_file() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

impl Stage1 {
    /// Picks the stage1: `--stage1-path`, else `--stage1-name` (built-in, or a directory in
    /// the config dirs' `stage1.d/`), else the pod annotation, else `ns`.
    pub fn select(
        name: Option<&str>,
        path: Option<&Path>,
        annotation: Option<&str>,
        config: &ConfigDirs,
    ) -> Result<Stage1, PodError> {
        if let Some(p) = path {
            return Stage1::from_dir(p);
        }
        let name = name.or(annotation).unwrap_or("ns");
        if BUILTIN.contains(&name) {
            // Refused here, before a pod is prepared, rather than when it is started.
            builtin_binary()?;
            return Ok(builtin(name));
        }
        if name.contains('/') {
            return Stage1::from_dir(Path::new(name));
        }
        for dir in config.all().iter().rev() {
            let candidate = dir.join("stage1.d").join(name);
            if candidate.join(paths::STAGE1_MANIFEST).is_file() {
                return Stage1::from_dir(&candidate);
            }
        }
        Err(PodError::Stage1(format!(
            "no stage1 named '{name}': built-in ones are {}, and none of {} has stage1.d/{name}/stage1.json",
            BUILTIN.join(", "),
            config.all().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Reads an external stage1 directory and checks its interface version.
    pub fn from_dir(dir: &Path) -> Result<Stage1, PodError> {
        let dir = dir
            .canonicalize()
            .map_err(|e| PodError::io("cannot find stage1 directory", dir, e))?;
        let path = dir.join(paths::STAGE1_MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| PodError::io("cannot read", &path, e))?;
        let manifest: Stage1Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| PodError::Stage1(format!("{} is malformed: {e}", path.display())))?;
        if manifest.interface_version != INTERFACE_VERSION {
            return Err(PodError::UnsupportedInterface {
                name: manifest.name,
                found: manifest.interface_version,
                supported: INTERFACE_VERSION,
            });
        }
        if !manifest.entrypoints.contains_key("run") {
            return Err(PodError::Stage1(format!(
                "{} has no 'run' entrypoint",
                path.display()
            )));
        }
        Ok(Stage1 {
            manifest,
            dir: Some(dir),
        })
    }

    /// Records the stage1 in the pod directory, so later commands use the same one.
    pub fn save(&self, pod: &Path) -> Result<(), PodError> {
        let p = pod.join(paths::STAGE1_MANIFEST);
        let bytes = serde_json::to_vec_pretty(&self.manifest).expect("manifest serializes");
        std::fs::write(&p, bytes).map_err(|e| PodError::io("cannot write", &p, e))?;
        if let Some(d) = &self.dir {
            let p = pod.join(paths::STAGE1_DIR);
            std::fs::write(&p, d.to_string_lossy().as_bytes())
                .map_err(|e| PodError::io("cannot write", &p, e))?;
        }
        Ok(())
    }

    /// The stage1 a pod was prepared with.
    pub fn load(pod: &Path) -> Result<Stage1, PodError> {
        match std::fs::read_to_string(pod.join(paths::STAGE1_DIR)) {
            Ok(dir) => Stage1::from_dir(Path::new(dir.trim())),
            Err(_) => {
                let p = pod.join(paths::STAGE1_MANIFEST);
                let bytes = std::fs::read(&p).map_err(|e| PodError::io("cannot read", &p, e))?;
                let m: Stage1Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| PodError::Stage1(format!("{} is malformed: {e}", p.display())))?;
                if !BUILTIN.contains(&m.name.as_str()) {
                    return Err(PodError::Stage1(format!(
                        "{}: unknown built-in stage1 '{}'",
                        p.display(),
                        m.name
                    )));
                }
                Ok(builtin(&m.name))
            }
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The command that runs `entrypoint` for the pod at `pod` (cwd = pod directory).
    pub fn command(
        &self,
        entrypoint: &str,
        pod: &Path,
        uuid: &str,
        debug: bool,
    ) -> Result<Command, PodError> {
        let exe = self.manifest.entrypoints.get(entrypoint).ok_or_else(|| {
            PodError::Stage1(format!(
                "stage1 '{}' does not implement the '{entrypoint}' entrypoint",
                self.name()
            ))
        })?;
        let mut cmd = match &self.dir {
            None => {
                let mut c = Command::new(builtin_binary()?);
                c.args([self.name(), exe]);
                c
            }
            Some(dir) => Command::new(dir.join(exe)),
        };
        cmd.arg(format!("--uuid={uuid}")).current_dir(pod);
        if debug {
            cmd.arg("--debug");
        }
        Ok(cmd)
    }
}
