//! orbit's built-in Linux stage1 flavors, reached only through the stage1 interface
//! (`stage1/INTERFACE.md`): stage0 runs the `orbit-stage1` binary (installed next to `orbit`)
//! as `orbit-stage1 <flavor> <entrypoint> --uuid=UUID [--debug] …` with the pod directory as
//! the working directory, exactly as it would run an external stage1's executable.
//!
//! - `ns`: the pod gets new mount, pid, uts, ipc (and, with `--net=none`, network)
//!   namespaces; each app gets its own overlayfs root, /proc, /sys (read-only), a minimal
//!   /dev, and the pod's /etc/hosts, /etc/hostname, /etc/resolv.conf.
//! - `fly`: the app runs in the host's namespaces except a private mount namespace, chrooted
//!   into its root with the host's /proc, /sys and /dev (for node agents).
//!
//! The two share one crate because they share everything but the namespace set: the
//! supervisor, the pod init (reaping, signal forwarding, logs, status files) and the app
//! launcher.

mod activation;
mod app;
mod args;
mod cgroup;
mod cgroup1;
mod cgroup2;
mod cgroupfs;
mod control;
mod devbpf;
mod devices;
mod enter;
mod fork;
mod init;
mod journal;
mod kvm;
mod mountfd;
mod mounts;
mod notify;
mod run;
mod security;
mod userns;
mod util;

pub use args::Args;
pub use userns::idmap_supported;

/// Whether the built-in `ns` and `fly` flavors can make a volume read-only recursively
/// (`Volume::recursive_read_only`) on this kernel.
pub fn recursive_read_only_supported() -> bool {
    mountfd::can_set_attributes()
}

/// A built-in flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Namespaces.
    Ns,
    /// Host (mount namespace + chroot only).
    Fly,
    /// A QEMU microVM per pod.
    Kvm,
}

impl Flavor {
    /// Parses `ns` / `fly`.
    pub fn parse(s: &str) -> Option<Flavor> {
        match s {
            "ns" => Some(Flavor::Ns),
            "fly" => Some(Flavor::Fly),
            "kvm" => Some(Flavor::Kvm),
            _ => None,
        }
    }

    /// The flavor's name.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ns => "ns",
            Flavor::Fly => "fly",
            Flavor::Kvm => "kvm",
        }
    }
}

/// Runs entrypoint `entrypoint` of `flavor`; returns the process exit status.
pub fn main(flavor: Flavor, entrypoint: &str, raw_args: &[String]) -> i32 {
    let args = match Args::parse(raw_args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stage1 {}: {e}", flavor.name());
            return orbit_stage1::EXIT_STAGE1_FAILURE;
        }
    };
    // Decided while this process still sees the host's cgroup file system.
    devices::enforced();
    let result = match (flavor, entrypoint) {
        (Flavor::Kvm, "run") => kvm::run(&args),
        (Flavor::Kvm, "enter") => kvm::enter(&args),
        (Flavor::Kvm, "stop") => kvm::stop(&args),
        (Flavor::Kvm, "gc") => kvm::gc(&args),
        (Flavor::Kvm, "port-forward") => kvm::port_forward(&args),
        (_, entrypoint) => match entrypoint {
            "run" => run::run(flavor, &args),
            "enter" => enter::enter(&args),
            "stop" => run::stop(&args),
            "gc" => run::gc(&args),
            // Requests to the running pod: its init (ns, fly) or its VM's supervisor (kvm).
            "app-add" | "app-start" | "app-stop" | "app-rm" | "app-log-reopen"
            | "app-stdin-close" | "app-resize" => control::request(&entrypoint[4..], &args),
            other => Err(format!("unknown entrypoint '{other}'")),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stage1 {}: {entrypoint}: {e}", flavor.name());
            orbit_stage1::EXIT_STAGE1_FAILURE
        }
    }
}
