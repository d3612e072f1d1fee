//! The QEMU command line (machine `microvm`, 9p shares, the agent's virtio-serial port, an
//! optional tap NIC) and the accelerator choice.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A path as the value of a QEMU `key=value,…` option: a comma would end the value (and
/// start an option of the path's choosing) unless doubled.
fn option_value(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// microvm's firmware.
const BIOS: &str = "/usr/share/qemu/qboot.rom";

/// What the VM is made of.
pub struct Vm<'a> {
    /// Uncompressed kernel.
    pub kernel: &'a Path,
    /// Initramfs.
    pub initrd: &'a Path,
    /// `kvm` or `tcg`.
    pub accel: &'a str,
    /// MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// 9p shares: tag, host path, read-only.
    pub shares: Vec<(String, PathBuf, bool)>,
    /// The unix socket QEMU connects the agent's port to.
    pub agent_socket: &'a Path,
    /// A tap device (in QEMU's network namespace) and the MAC the guest NIC takes.
    pub tap: Option<(String, String)>,
    /// Extra kernel command line words.
    pub cmdline: &'a str,
}

impl Vm<'_> {
    /// The command (not started).
    pub fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(["-M", "microvm", "-bios", BIOS])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-serial", "stdio"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .args(["-append", &format!("{} {}", base_cmdline(), self.cmdline)])
            .args(["-accel", self.accel]);
        for (i, (tag, path, ro)) in self.shares.iter().enumerate() {
            let mut fsdev = format!(
                "local,id=fs{i},path={},security_model=none,multidevs=remap",
                option_value(path)
            );
            if *ro {
                fsdev.push_str(",readonly=on");
            }
            c.args(["-fsdev", &fsdev]).args([
                "-device",
                &format!("virtio-9p-device,fsdev=fs{i},mount_tag={tag}"),
            ]);
        }
        c.args(["-device", "virtio-serial-device"])
            .args([
                "-chardev",
                &format!("socket,id=agent,path={}", option_value(self.agent_socket)),
            ])
            .args([
                "-device",
                &format!(
                    "virtserialport,chardev=agent,name={}",
                    orbit_stage1::agent::PORT_NAME
                ),
            ]);
        if let Some((tap, mac)) = &self.tap {
            c.args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ])
            .args(["-device", &format!("virtio-net-device,netdev=n0,mac={mac}")]);
        }
        c
    }
}

/// The guest kernel's command line. The timing words matter under TCG: a starved emulated
/// CPU (several VMs on few cores) cannot calibrate its TSC against the PIT and then hangs
/// in early boot; giving the host's TSC rate (`tsc_early_khz`), the delay-loop constant
/// (`lpj`, HZ=250) and skipping the timer check lets every VM boot. Harmless under KVM.
fn base_cmdline() -> String {
    // pci=off: microvm has no PCI bus (probing it only prints an error).
    let mut c = String::from("console=ttyS0 quiet panic=-1 pci=off");
    if let Some(khz) = host_cpu_khz() {
        c.push_str(&format!(
            " tsc_early_khz={khz} lpj={} no_timer_check",
            khz * 4
        ));
    }
    c
}

/// The host CPU's clock in kHz, from /proc/cpuinfo.
fn host_cpu_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// Where the accelerator probe's answer is kept for this boot.
const ACCEL_CACHE: &str = "/run/orbit/kvm/accel";

/// The accelerator for `--kvm-accel=want` (`auto`, `kvm`, `tcg`). `auto` uses KVM when
/// /dev/kvm opens and a probe VM (the same kernel and initramfs, powering off at once)
/// boots with it (answer cached until reboot); otherwise TCG, saying so.
pub fn choose_accel(want: &str, kernel: &Path, initrd: &Path) -> Result<String, String> {
    match want {
        "kvm" | "tcg" => return Ok(want.to_string()),
        "auto" | "" => {}
        other => return Err(format!("--kvm-accel={other}: use auto, kvm or tcg")),
    }
    if let Ok(cached) = std::fs::read_to_string(ACCEL_CACHE) {
        return Ok(cached.trim().to_string());
    }
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let accel = if kvm_opens && probe(kernel, initrd) {
        "kvm"
    } else {
        eprintln!("stage1 kvm: KVM cannot boot the guest here; falling back to TCG (software emulation: slow)");
        "tcg"
    };
    let _ = std::fs::create_dir_all("/run/orbit/kvm");
    let _ = std::fs::write(ACCEL_CACHE, accel);
    Ok(accel.to_string())
}

/// Boots the probe VM with KVM: true when the agent printed its marker.
fn probe(kernel: &Path, initrd: &Path) -> bool {
    let mut c = Command::new(QEMU);
    c.args(["-M", "microvm", "-bios", BIOS, "-m", "128", "-nodefaults"])
        .args([
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!("{} {}", base_cmdline(), orbit_stage1::agent::PROBE_ARG),
        ])
        .args(["-accel", "kvm"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let Ok(mut child) = c.spawn() else {
        return false;
    };
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut o) = out {
            use std::io::Read;
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    // A working KVM boots the probe in well under a second; a broken one hangs or crashes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    reader
        .join()
        .unwrap_or_default()
        .contains(orbit_stage1::agent::PROBE_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_in_a_path_cannot_smuggle_a_qemu_option() {
        let kernel = Path::new("/k");
        let vm = Vm {
            kernel,
            initrd: Path::new("/i"),
            accel: "tcg",
            memory_mib: 256,
            cpus: 1,
            shares: vec![("pod".into(), PathBuf::from("/store,readonly=off/pod"), true)],
            agent_socket: Path::new("/run/x,server=on"),
            tap: None,
            cmdline: "",
        };
        let args: Vec<String> = vm
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().any(|a| a
            == "local,id=fs0,path=/store,,readonly=off/pod,security_model=none,multidevs=remap,readonly=on"));
        assert!(args
            .iter()
            .any(|a| a == "socket,id=agent,path=/run/x,,server=on"));
    }
}
