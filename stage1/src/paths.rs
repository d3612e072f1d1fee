//! Where things live in a pod directory. stage0 and every stage1 use these names.

use std::path::{Path, PathBuf};

/// The pod manifest.
pub const POD_MANIFEST: &str = "pod.json";
/// The stage1 manifest of the stage1 that runs the pod.
pub const STAGE1_MANIFEST: &str = "stage1.json";
/// The stage1 directory (absent for built-in flavors), one line.
pub const STAGE1_DIR: &str = "stage1-dir";
/// Host pid of the pod's init (written by `run`, read by `enter` and `stop`).
pub const PID: &str = "pid";
/// When the pod was created / started / finished (RFC 3339), one file each.
pub const CREATED: &str = "created";
/// See [`CREATED`].
pub const STARTED: &str = "started";
/// See [`CREATED`].
pub const FINISHED: &str = "finished";
/// The pod's exit status, written by `run` just before it exits.
pub const EXIT: &str = "exit";
/// A unix socket through which a running stage1 takes `app-*` requests (stage1-private).
pub const CONTROL_SOCKET: &str = "control.sock";
/// Files the pod's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` come from.
pub const ETC_DIR: &str = "etc";
/// The files of [`ETC_DIR`], each bound over `/etc/<name>` in every app.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];
/// What the ns stage1 mounts over in every app's root (besides the [`ETC_FILES`] and the
/// app's volumes), making the directory when the image has none.
pub const SYSTEM_MOUNT_POINTS: [&str; 3] = ["/proc", "/sys", "/dev"];
/// The pod's network namespace (network mode `cni`), an nsfs bind mount made by stage0.
pub const NETNS: &str = "netns";
/// The pod's network status (JSON [`crate::NetworkStatus`]), written by stage0.
pub const NETWORK_STATUS: &str = "network.json";
/// What a stage1's `run` executes once the pod has exited (JSON array: argv), with the pod
/// directory as working directory, before it releases the pod's lock. stage0 puts its
/// network teardown here.
pub const ON_EXIT: &str = "on-exit";

/// The directory of app `name`.
pub fn app_dir(pod: &Path, name: &str) -> PathBuf {
    pod.join("apps").join(name)
}

/// The merged (or copied) root of app `name`.
pub fn app_rootfs(pod: &Path, name: &str) -> PathBuf {
    app_dir(pod, name).join("rootfs")
}

/// The app's status file (JSON [`crate::AppStatus`]).
pub fn app_status(pod: &Path, name: &str) -> PathBuf {
    app_dir(pod, name).join("status.json")
}

/// What the app uses, when its stage1 reports it in a file (see `status::AppUsage`).
pub fn app_usage(pod: &Path, name: &str) -> PathBuf {
    app_dir(pod, name).join("usage.json")
}

/// The app's log, in the CRI log format.
pub fn app_log(pod: &Path, name: &str) -> PathBuf {
    app_dir(pod, name).join("log")
}

/// The FIFO an attachable app reads its standard input from (CRI attach writes it).
pub fn app_stdin(pod: &Path, name: &str) -> PathBuf {
    app_dir(pod, name).join("stdin")
}

/// The directory of an `empty` volume.
pub fn volume_dir(pod: &Path, name: &str) -> PathBuf {
    pod.join("volumes").join(name)
}
