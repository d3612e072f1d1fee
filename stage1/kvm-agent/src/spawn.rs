//! Starting a process in an app: the agent (multi-threaded, PID 1) forks and execs itself as
//! a single-threaded helper (`orbit-kvm-agent --spawn`), already in the app's cgroup and pid
//! namespace, which builds or joins the app's world and confines itself as an `ns` app is
//! confined on the host, then execs the command:
//!
//! - an app gets a mount namespace of its own: a fresh /proc (of its pid namespace), a
//!   read-only /sys, a /dev with only the harmless nodes (the VM's whole /dev for a
//!   privileged app), its masked and read-only paths, and its root moved over the guest's
//!   (the guest's root is the initramfs, where `pivot_root` cannot work) and chrooted into;
//! - an `exec` joins a running app's mount namespace and root;
//! - both then take the app's identity, capabilities, no_new_privs and seccomp filter
//!   (`orbit_stage1::confine`, the same code as the `ns` stage1's).
//!
//! What it is asked comes in an environment variable (the command's environment is rebuilt
//! from the app's); what went wrong goes back on descriptor 3, a close-on-exec pipe: the
//! agent reads nothing there when the command was exec'd.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use orbit_stage1::agent::GuestApp;
use serde::{Deserialize, Serialize};

/// The helper's argument.
pub const ARG: &str = "--spawn";
/// The environment variable carrying the [`Request`].
pub const ENV: &str = "ORBIT_AGENT_SPAWN";
/// The helper's report descriptor.
pub const REPORT_FD: i32 = 3;

/// What the helper does.
#[derive(Serialize, Deserialize)]
pub struct Request {
    /// The app.
    pub app: GuestApp,
    /// The program, a path inside the app's root.
    pub program: String,
    /// argv.
    pub argv: Vec<String>,
    /// `None`: start the app (build its world); `Some(pid)`: join running app `pid`'s.
    pub join: Option<i32>,
}

/// The device nodes every app gets (bound from the VM's /dev).
/// Runs the helper; never returns.
pub fn helper() -> ! {
    // SAFETY: the agent put the report pipe at this descriptor, which nothing else owns.
    let report = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    let _ = nix::fcntl::fcntl(&report, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let Err((code, message)) = run();
    let _ = nix::unistd::write(&report, format!("{code} {message}").as_bytes());
    std::process::exit(code)
}

type Failure = (i32, String);

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| (orbit_stage1::EXIT_STAGE1_FAILURE, format!("{what}: {e}"))
}

fn run() -> Result<Infallible, Failure> {
    // From bytes, as the agent's configuration is read: one parser in the binary.
    let req: Request = std::env::var(ENV)
        .map_err(setup("no request"))
        .and_then(|j| serde_json::from_slice(j.as_bytes()).map_err(setup("bad request")))?;
    let app = &req.app;
    match req.join {
        None => enter_new_root(app)?,
        Some(pid) => join_root(pid)?,
    }
    orbit_stage1::confine::enter_working_directory(&app.working_directory)
        .map_err(|e| (orbit_stage1::EXIT_STAGE1_FAILURE, e))?;
    let c = |s: &str| CString::new(s).map_err(setup("NUL in the command"));
    let program = c(&req.program)?;
    let argv = req
        .argv
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = app
        .env
        .iter()
        .map(|e| c(e))
        .collect::<Result<Vec<_>, _>>()?;
    let user = orbit_stage1::AppUser {
        uid: app.uid,
        gid: app.gid,
        additional_gids: app.additional_gids.clone(),
    };
    if app.isolators.seccomp.is_some() {
        return Err(setup("seccomp")(
            "the host sent the filter by name only; this agent loads only compiled ones",
        ));
    }
    let filter = app
        .seccomp
        .as_deref()
        .map(orbit_stage1::seccomp::from_words);
    // The VM's devices are the pod's own: making a node needs no device cgroup to be safe.
    orbit_stage1::confine::confine_compiled(&user, &app.isolators, true, filter.as_deref())
        .map_err(|e| (orbit_stage1::EXIT_STAGE1_FAILURE, e))?;
    let e = nix::unistd::execve(&program, &argv, &env).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        orbit_stage1::EXIT_EXEC_FAILED
    } else {
        126
    };
    Err((code, format!("cannot run {}: {e}", req.argv[0])))
}

fn mnt(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Failure> {
    mount(source, target, fstype, flags, data).map_err(setup(&format!(
        "mount {} on {}",
        fstype.or(source).unwrap_or("?"),
        target.display()
    )))
}

/// A mount namespace of the app's own, its kernel filesystems, /dev and masked paths, and
/// its root as this process's.
fn enter_new_root(app: &GuestApp) -> Result<(), Failure> {
    let root = Path::new(&app.root);
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(setup("unshare"))?;
    // Nothing mounted here reaches the guest's namespace.
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let inside = |p: &str| orbit_stage1::confine::in_root(root, p).map_err(setup("app root"));
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), &inside("/proc")?, Some("proc"), nosuid, None)?;
    mnt(
        Some("sysfs"),
        &inside("/sys")?,
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None,
    )?;
    let dev = inside("/dev")?;
    if app.isolators.all_devices {
        mnt(
            Some("/dev"),
            &dev,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    } else {
        app_dev(&dev, app.interactive)?;
    }
    orbit_stage1::confine::mask_paths(root, &app.isolators).map_err(setup("masked paths"))?;
    // The root becomes a mount point (with all of the above below it), moved over the
    // guest's, and this process's root.
    let r = Some(app.root.as_str());
    mnt(r, root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    nix::unistd::chdir(root).map_err(setup("chdir to the app root"))?;
    mnt(Some("."), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
    nix::unistd::chroot(".").map_err(setup("chroot"))?;
    nix::unistd::chdir("/").map_err(setup("chdir /"))?;
    if app.read_only_rootfs {
        mnt(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// The /dev of an app that does not get every device: a tmpfs with the harmless nodes (and
/// the VM's console for an app that has it as its terminal), its own pseudo-terminals,
/// shared memory and message queues.
fn app_dev(dev: &Path, console: bool) -> Result<(), Failure> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(orbit_stage1::confine::DEV_TMPFS_OPTIONS),
    )?;
    let console = console.then(|| {
        orbit_stage1::agent::CONSOLE
            .trim_start_matches("/dev/")
            .to_string()
    });
    let nodes = orbit_stage1::confine::DEV_NODES
        .iter()
        .map(|(name, ..)| *name);
    for name in nodes.chain(console.as_deref()) {
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(setup(&format!("create /dev/{name}")))?;
        mnt(
            Some(&format!("/dev/{name}")),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    for (dir, fstype, flags, data) in [
        (
            "pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            orbit_stage1::confine::DEVPTS_OPTIONS,
        ),
        (
            "shm",
            "tmpfs",
            nosuid,
            orbit_stage1::confine::DEV_SHM_OPTIONS,
        ),
        ("mqueue", "mqueue", nosuid, ""),
    ] {
        let target = dev.join(dir);
        std::fs::create_dir(&target).map_err(setup(&format!("mkdir /dev/{dir}")))?;
        mnt(
            Some(fstype),
            &target,
            Some(fstype),
            flags,
            Some(data).filter(|d| !d.is_empty()),
        )?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(setup(&format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

/// Joins running app `pid`'s mount namespace and root (its pid namespace, if it has one of
/// its own, this process was started in).
fn join_root(pid: i32) -> Result<(), Failure> {
    let open = |what: &str, flags: OFlag| {
        nix::fcntl::open(
            format!("/proc/{pid}/{what}").as_str(),
            flags | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(setup(&format!("the app's {what}")))
    };
    let ns = open("ns/mnt", OFlag::O_RDONLY)?;
    let root = open("root", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS).map_err(setup("join the app's mounts"))?;
    nix::unistd::fchdir(&root).map_err(setup("enter the app's root"))?;
    nix::unistd::chroot(".").map_err(setup("chroot"))?;
    nix::unistd::chdir("/").map_err(setup("chdir /"))
}
