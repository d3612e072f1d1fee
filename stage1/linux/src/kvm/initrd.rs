//! The guest's initramfs: the agent as `/init` with the shared libraries it links, busybox
//! (for `ip`, and as `/sbin/modprobe`), the kernel's virtio/9p modules with their load
//! order, and the modules the guest kernel loads only when an app asks for them (a bridge,
//! for an app with CAP_NET_ADMIN: the kernel runs `/sbin/modprobe`, which finds them in
//! `/lib/modules/<release>/modules.dep` and their aliases in `/etc/modprobe.d`). Built
//! once per agent and kernel and cached under /run/orbit/kvm (uncompressed: fastest under
//! TCG).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where built initramfs images are kept (tmpfs: gone at reboot, like the binaries' mtimes
/// they are keyed by may change).
const CACHE: &str = "/run/orbit/kvm";

/// Modules the kernel script makes that the agent never uses (virtiofs, vsock, PCI
/// transports: microvm has virtio-mmio): left out of the initramfs.
const UNUSED_MODULES: [&str; 8] = [
    "fuse",
    "virtiofs",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_pci",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
];

/// The guest agent binary: `ORBIT_KVM_AGENT`, or `orbit-kvm-agent` next to the orbit binary.
pub fn agent_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORBIT_KVM_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the orbit binary: {e}"))?;
    let agent = exe.with_file_name("orbit-kvm-agent");
    if agent.is_file() {
        return Ok(agent);
    }
    Err(format!(
        "the kvm guest agent {} is missing; build it with `cargo build --release --workspace` (or set ORBIT_KVM_AGENT)",
        agent.display()
    ))
}

fn stamp(path: &Path, h: &mut impl Hasher) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    (path, m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(h);
    Ok(())
}

/// The shared libraries `binary` needs (as `ldd` lists them), host paths.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

struct Archive {
    out: std::io::BufWriter<std::fs::File>,
    dirs: BTreeSet<String>,
    ino: u32,
}

impl Archive {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        self.ino += 1;
        let w = cpio::newc::Builder::new(name.trim_start_matches('/'))
            .ino(self.ino)
            .mode(mode)
            .nlink(1)
            .write(&mut self.out, data.len() as u32);
        let mut w = w;
        w.write_all(data).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn dir(&mut self, path: &str) -> Result<(), String> {
        let mut acc = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            acc.push('/');
            acc.push_str(part);
            if self.dirs.insert(acc.clone()) {
                let a = acc.clone();
                self.entry(&a, 0o040755, &[])?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o100000 | mode, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o120777, target.as_bytes())
    }

    /// The on-demand modules of `dir` (`*.ko`, `modules.dep`, `modules.alias`: see
    /// scripts/kvm-kernel.sh) for kernel `release`; nothing if the kernel's directory has
    /// none (made by an older script).
    fn on_demand_modules(&mut self, dir: &Path, release: &str) -> Result<(), String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let base = format!("/lib/modules/{release}");
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let name = name.to_string_lossy();
            let data = std::fs::read(dir.join(&*name))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(&*name).display()))?;
            if name == "modules.alias" {
                self.file("/etc/modprobe.d/on-demand.conf", 0o644, &data)?;
            } else if name == "modules.dep" || name.ends_with(".ko") {
                self.file(&format!("{base}/{name}"), 0o644, &data)?;
            }
        }
        self.symlink("/sbin/modprobe", "/bin/busybox")
    }
}

/// The initramfs for `agent` and the modules in `modules_dir` (path of the cached image).
pub fn initramfs(agent: &Path, modules_dir: &Path) -> Result<PathBuf, String> {
    let busybox = Path::new("/bin/busybox");
    let order_file = modules_dir.join("order");
    let on_demand = modules_dir.join("on-demand");
    let release_file = modules_dir.with_file_name("kernel.version");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (env!("CARGO_PKG_VERSION"), UNUSED_MODULES).hash(&mut h);
    stamp(agent, &mut h)?;
    stamp(&order_file, &mut h)?;
    for f in [on_demand.join("modules.dep"), release_file.clone()] {
        if f.exists() {
            stamp(&f, &mut h)?;
        }
    }
    stamp(busybox, &mut h).map_err(|e| format!("{e} (install busybox-static)"))?;
    let cached = Path::new(CACHE).join(format!("initrd-{:016x}.cpio", h.finish()));
    if cached.is_file() {
        return Ok(cached);
    }
    std::fs::create_dir_all(CACHE).map_err(|e| format!("mkdir {CACHE}: {e}"))?;
    let tmp = cached.with_extension(format!("{}.tmp", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut a = Archive {
        out: std::io::BufWriter::new(file),
        dirs: BTreeSet::new(),
        ino: 0,
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let result = (|| {
        for d in [
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/pod",
            "/etc",
            "/lib/modules",
        ] {
            a.dir(d)?;
        }
        a.file("/init", 0o755, &read(agent)?)?;
        for lib in libraries(agent)? {
            a.file(&lib.display().to_string(), 0o755, &read(&lib)?)?;
        }
        a.file("/bin/busybox", 0o755, &read(busybox)?)?;
        let order: String = std::fs::read_to_string(&order_file)
            .map_err(|e| format!("cannot read {}: {e}", order_file.display()))?
            .lines()
            .filter(|m| !m.is_empty() && !UNUSED_MODULES.contains(m))
            .map(|m| format!("{m}\n"))
            .collect();
        a.file("/lib/modules/order", 0o644, order.as_bytes())?;
        for m in order.lines() {
            a.file(
                &format!("/lib/modules/{m}.ko"),
                0o644,
                &read(&modules_dir.join(format!("{m}.ko")))?,
            )?;
        }
        if let Ok(release) = std::fs::read_to_string(&release_file) {
            a.on_demand_modules(&on_demand, release.trim())?;
        }
        let out = cpio::newc::trailer(&mut a.out).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    })();
    drop(a);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot build the guest initramfs: {e}"));
    }
    std::fs::rename(&tmp, &cached).map_err(|e| format!("{}: {e}", cached.display()))?;
    // Images of other agent builds or kernels go once they are an hour old (a pod that
    // just built or found one reads it within seconds).
    for old in std::fs::read_dir(CACHE).into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        let stale = old
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if name.starts_with("initrd-") && name.ends_with(".cpio") && old.path() != cached && stale {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(cached)
}
