//! The guest's own setup: kernel filesystems, modules, the port to the host, the shares
//! and the network.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use orbit_stage1::agent::{AgentConfig, POD_MOUNT, POD_TAG, PORT_NAME};

fn mnt(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {target}: {e}"))
}

/// /proc, /sys, /dev (devtmpfs + devpts + shm), /sys/fs/cgroup (cgroup2), /tmp.
pub fn kernel_filesystems() -> Result<(), String> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    mnt(
        "dev",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    mnt("shm", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"))?;
    mnt("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None)?;
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    // Let the apps' cgroups use the controllers pods get (the VM's root cgroup may hold the
    // agent and still hand them down).
    let _ = orbit_stage1::cgroup2::enable(
        std::path::Path::new("/sys/fs/cgroup"),
        &orbit_stage1::cgroup2::available(std::path::Path::new("/sys/fs/cgroup")),
    );
    Ok(())
}

/// The modules only a VM with a NIC needs (loading a module costs milliseconds under TCG).
const NET_MODULES: [&str; 3] = ["failover", "net_failover", "virtio_net"];

/// Loads `/lib/modules/<name>.ko` in the order of `/lib/modules/order` (built-in ones are
/// not listed; an already loaded one is fine), the NIC's only when `with_net`.
pub fn load_modules(with_net: bool) -> Result<(), String> {
    let order = std::fs::read_to_string("/lib/modules/order").unwrap_or_default();
    for m in order
        .lines()
        .filter(|l| !l.is_empty())
        .filter(|m| with_net || !NET_MODULES.contains(m))
    {
        let path = format!("/lib/modules/{m}.ko");
        let image = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        match nix::kmod::init_module(&image, &CString::default()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("cannot load module {m}: {e}")),
        }
    }
    Ok(())
}

/// The character device of the virtio-serial port named [`PORT_NAME`]; the device appears
/// shortly after the module probes it.
pub fn find_port() -> Result<PathBuf, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/sys/class/virtio-ports")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
            let dev = Path::new("/dev").join(entry.file_name());
            if name.trim() == PORT_NAME && dev.exists() {
                return Ok(dev);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no virtio-serial port named {PORT_NAME}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mount_9p(tag: &str, target: &str, cache: &str) -> Result<(), String> {
    mnt(
        tag,
        target,
        "9p",
        MsFlags::empty(),
        Some(&format!(
            "trans=virtio,version=9p2000.L,msize=262144,cache={cache}"
        )),
    )
}

/// Mounts the pod directory (9p) at [`POD_MOUNT`]. Cached: while the VM runs only the guest
/// touches the apps' roots (the host wrote the pod's files before the boot), and reading
/// binaries through the page cache instead of a 9p round trip per page is what makes apps
/// start fast.
pub fn mount_pod() -> Result<(), String> {
    mount_9p(POD_TAG, POD_MOUNT, "loose")
}

/// Mounts the extra shares (the host volumes), uncached: the host may change them and mount
/// below them any time, and every lookup must reach its 9p server.
pub fn shares(config: &AgentConfig) -> Result<(), String> {
    for s in &config.shares {
        mount_9p(&s.tag, &s.path, "none")?;
    }
    Ok(())
}

fn busybox(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("/bin/busybox")
        .args(args)
        .output()
        .map_err(|e| format!("busybox {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "busybox {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// lo up; each NIC gets the pod's CNI addresses and default route.
pub fn network(config: &AgentConfig) -> Result<(), String> {
    orbit_stage1::netif::loopback_up().map_err(|e| format!("lo up: {e}"))?;
    for (i, nic) in config.interfaces.iter().enumerate() {
        let dev = format!("eth{i}");
        for ip in &nic.ips {
            busybox(&["ip", "addr", "add", ip, "dev", &dev])?;
        }
        busybox(&["ip", "link", "set", &dev, "up"])?;
        if let Some(gw) = &nic.gateway {
            busybox(&["ip", "route", "add", "default", "via", gw, "dev", &dev])?;
        }
    }
    Ok(())
}

/// Sets the pod's sysctls in the guest (paths below /proc/sys; stage0 checked that they are
/// the namespaced ones a pod may set).
pub fn sysctls(config: &AgentConfig) -> Result<(), String> {
    for (name, value) in &config.sysctls {
        let path = orbit_stage1::confine::in_root(Path::new("/proc/sys"), name)
            .map_err(|e| format!("sysctl {name}: {e}"))?;
        std::fs::write(&path, value).map_err(|e| format!("sysctl {name}={value}: {e}"))?;
    }
    Ok(())
}

/// Syncs and powers the VM off (QEMU runs with -no-reboot and exits).
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
