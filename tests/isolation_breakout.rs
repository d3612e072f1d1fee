//! Isolation, part 1 (issue 5): tests that try to break out of an `ns` pod, as the pod's root,
//! both as the app itself (`orbit run`) and through `orbit enter` into a running app — mount,
//! load a module, reboot, kexec, change the host's hostname, signal or trace a process
//! outside, read masked /proc files, write /proc/sysrq-trigger, /proc/sys and /sys, escape the
//! chroot with a second chroot, use a setuid binary, read the host disk through a device node,
//! raise limits, reach the host's orbit binary through /proc/1/exe. Each attack must fail with
//! the expected error while the pod stays up and the host stays untouched.
//!
//! Then what the confinement looks like from inside (/proc/self/status: capability sets,
//! NoNewPrivs, Seccomp) with the defaults, `--user`, `--caps-retain`, `--caps-remove`,
//! `--seccomp` and `--insecure-options`, and the regression tests for rkt's `enter` escapes
//! (CVE-2019-10144 capabilities, CVE-2019-10145 seccomp, CVE-2019-10147 cgroups), for
//! `orbit enter` and `orbit app exec`.
//!
//! Syscalls busybox cannot make come from `breakout`, a small static C helper compiled with
//! the host's `cc -static` at test time and shipped in the test image (`/t/breakout`, plus a
//! setuid-root copy `/t/suid`). Every probe it makes is harmless even if a kernel let it
//! through (wrong magic numbers, null or empty arguments, the pod's own namespaces).
//! Runs as root.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{text, World};
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};
use pods_common::*;

/// The test image: busybox, /t/breakout and the setuid-root /t/suid.
const IMAGE: &str = "example.com/breakout:latest";
/// The app's name in pods of [`IMAGE`].
const APP: &str = "breakout";

/// The default capability set (capability numbers from linux/capability.h): AUDIT_WRITE,
/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, NET_RAW, SETFCAP,
/// SETGID, SETPCAP, SETUID, SYS_CHROOT.
const DEFAULT_CAP_BITS: [u32; 14] = [29, 0, 1, 3, 4, 5, 27, 10, 13, 31, 6, 8, 7, 18];
const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;

fn mask(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |m, b| m | (1u64 << b))
}

fn hex(m: u64) -> String {
    format!("{m:016x}")
}

// ---------------------------------------------------------------- the helper and the image

/// The `breakout` helper: `call PROBE…` makes one syscall per probe and prints `PROBE=OK` or
/// `PROBE=<errno name>`; `ptrace PID`, `vmread PID`, `escape HOST-PATH`, `ids`.
const HELPER_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long r) {
    if (r < 0) printf("%s=%s\n", name, strerrorname_np(errno));
    else printf("%s=OK\n", name);
    fflush(stdout);
}

/* A fork-like syscall's result: the child leaves at once, the parent reaps it. */
static long forked(long r) {
    if (r == 0) _exit(0);
    if (r > 0) waitpid((pid_t)r, NULL, __WALL);
    return r;
}

struct clone_args_v0 { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; };

static long probe(const char *n) {
    char zero[256];
    memset(zero, 0, sizeof zero);
    int fd;
    long r;
    if (!strcmp(n, "mount")) return mount("orbit-breakout", "/tmp", "tmpfs", 0, NULL);
    if (!strcmp(n, "umount_proc")) return umount2("/proc", MNT_DETACH);
    if (!strcmp(n, "pivot_root")) return syscall(SYS_pivot_root, "/tmp", "/tmp");
    if (!strcmp(n, "unshare_user")) return unshare(CLONE_NEWUSER);
    if (!strcmp(n, "unshare_mnt")) return unshare(CLONE_NEWNS);
    if (!strcmp(n, "setns")) {
        fd = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fd;
        r = setns(fd, 0);
        close(fd);
        return r;
    }
    if (!strcmp(n, "clone_newuser")) return forked(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    if (!strcmp(n, "clone_newns")) return forked(syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0));
    if (!strcmp(n, "clone_plain")) return forked(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
    if (!strcmp(n, "clone3")) {
        struct clone_args_v0 a;
        memset(&a, 0, sizeof a);
        a.exit_signal = SIGCHLD;
        return forked(syscall(SYS_clone3, &a, sizeof a));
    }
    if (!strcmp(n, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0);
    if (!strcmp(n, "kexec_file_load")) return syscall(SYS_kexec_file_load, -1, -1, 0, "", 0);
    if (!strcmp(n, "init_module")) return syscall(SYS_init_module, zero, 0, "");
    if (!strcmp(n, "finit_module")) {
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) return fd;
        r = syscall(SYS_finit_module, fd, "", 0);
        close(fd);
        return r;
    }
    if (!strcmp(n, "delete_module")) return syscall(SYS_delete_module, "orbit_breakout_none", O_NONBLOCK);
    if (!strcmp(n, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0);
    if (!strcmp(n, "add_key")) return syscall(SYS_add_key, "user", "orbit-breakout", "x", 1, -2 /* process */);
    if (!strcmp(n, "request_key")) return syscall(SYS_request_key, "user", "orbit-breakout", NULL, -2);
    if (!strcmp(n, "bpf")) return syscall(SYS_bpf, 0 /* MAP_CREATE */, zero, 64);
    if (!strcmp(n, "perf_event_open")) return syscall(SYS_perf_event_open, zero, 0, -1, -1, 0);
    if (!strcmp(n, "userfaultfd")) return syscall(SYS_userfaultfd, O_CLOEXEC);
    /* Wrong magic numbers: a kernel that let the call through still refuses it (EINVAL). */
    if (!strcmp(n, "reboot")) return syscall(SYS_reboot, 0, 0, 0x01234567, 0);
    if (!strcmp(n, "swapon")) return syscall(SYS_swapon, "/orbit-breakout-none", 0);
    if (!strcmp(n, "swapoff")) return syscall(SYS_swapoff, "/orbit-breakout-none");
    if (!strcmp(n, "settimeofday")) return syscall(SYS_settimeofday, NULL, NULL);
    if (!strcmp(n, "clock_settime")) return syscall(SYS_clock_settime, CLOCK_REALTIME, NULL);
    if (!strcmp(n, "sethostname")) return sethostname("orbit-evil", 10);
    if (!strcmp(n, "setdomainname")) return setdomainname("orbit-evil", 10);
    if (!strcmp(n, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, AT_FDCWD, zero, O_RDONLY);
    if (!strcmp(n, "iopl")) return syscall(SYS_iopl, 0);
    if (!strcmp(n, "ioperm")) return syscall(SYS_ioperm, 0x80, 1, 0);
    if (!strcmp(n, "syslog")) return syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0);
    if (!strcmp(n, "io_uring_setup")) return syscall(SYS_io_uring_setup, 1, NULL);
    if (!strcmp(n, "mkdir")) { r = mkdir("/tmp/orbit-probe-dir", 0700); int e = errno; rmdir("/tmp/orbit-probe-dir"); errno = e; return r; }
    if (!strcmp(n, "getpid")) return getpid();
    fprintf(stderr, "breakout: unknown probe %s\n", n);
    exit(2);
}

/* The classic chroot escape: chroot into a subdirectory without moving the cwd along, climb
 * out with "..", chroot to where that ends. Then look for a path only the host has. */
static int escape(const char *marker) {
    mkdir("orbit-escape", 0700);
    report("chroot1", chroot("orbit-escape"));
    for (int i = 0; i < 128; i++) (void)chdir("..");
    report("chroot2", chroot("."));
    struct stat st;
    report("marker", stat(marker, &st));
    DIR *d = opendir("/");
    printf("root=");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) printf("%s ", e->d_name);
        closedir(d);
    }
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: breakout call NAME… | ptrace PID | vmread PID | escape PATH | ids\n"); return 2; }
    if (!strcmp(argv[1], "call")) {
        for (int i = 2; i < argc; i++) report(argv[i], probe(argv[i]));
        return 0;
    }
    if (!strcmp(argv[1], "ptrace") && argc == 3) {
        pid_t pid = atoi(argv[2]);
        long r = ptrace(PTRACE_ATTACH, pid, NULL, NULL);
        report("ptrace", r);
        if (r == 0) { waitpid(pid, NULL, __WALL); ptrace(PTRACE_DETACH, pid, NULL, NULL); }
        return 0;
    }
    if (!strcmp(argv[1], "vmread") && argc == 3) {
        char buf[8];
        struct iovec local = { buf, sizeof buf }, remote = { (void *)0x400000, sizeof buf };
        report("process_vm_readv", process_vm_readv(atoi(argv[2]), &local, 1, &remote, 1, 0));
        return 0;
    }
    if (!strcmp(argv[1], "escape") && argc == 3) return escape(argv[2]);
    if (!strcmp(argv[1], "ids")) {
        printf("ruid=%d euid=%d\n", getuid(), geteuid());
        report("setuid0", setuid(0));
        printf("after: ruid=%d euid=%d\n", getuid(), geteuid());
        return 0;
    }
    fprintf(stderr, "breakout: bad arguments\n");
    return 2;
}
"#;

fn layout() -> &'static Path {
    static L: OnceLock<PathBuf> = OnceLock::new();
    L.get_or_init(build_image)
}

/// Builds the test image once per helper source and busybox (shared by test processes via
/// `CARGO_TARGET_TMPDIR`, finished builds renamed into place).
fn build_image() -> PathBuf {
    let bb = Path::new("/bin/busybox");
    let size = fs::metadata(bb)
        .expect("/bin/busybox (apt-get install busybox-static)")
        .len();
    let mut h = DefaultHasher::new();
    HELPER_C.hash(&mut h);
    size.hash(&mut h);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("breakout-image-{:016x}", h.finish()));
    if dir.join("done").exists() {
        return dir.join("layout");
    }
    let tmp = base.join(format!("breakout-image.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let src_base = tmp.join("src/base");
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "home/user",
        "proc",
        "sys",
        "dev",
        "run",
        "mnt",
        "var/tmp",
    ] {
        fs::create_dir_all(src_base.join(d)).unwrap();
    }
    fs::copy(bb, src_base.join("bin/busybox")).unwrap();
    let list = Command::new(bb)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in text(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", src_base.join("bin").join(applet)).unwrap();
    }
    for d in ["tmp", "var/tmp"] {
        fs::set_permissions(src_base.join(d), fs::Permissions::from_mode(0o1777)).unwrap();
    }
    fs::write(
        src_base.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(src_base.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();

    let src_tools = tmp.join("src/tools/t");
    fs::create_dir_all(&src_tools).unwrap();
    let c = tmp.join("breakout.c");
    fs::write(&c, HELPER_C).unwrap();
    let cc = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(src_tools.join("breakout"))
        .arg(&c)
        .output()
        .expect("cc (apt-get install gcc libc6-dev)");
    assert!(
        cc.status.success(),
        "cc -static breakout.c failed:\n{}",
        text(&cc.stderr)
    );
    fs::copy(src_tools.join("breakout"), src_tools.join("suid")).unwrap();
    // Owned by root (the tests run as root), setuid: set the mode after the copy.
    fs::set_permissions(src_tools.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();

    let layer = |d: &Path, c| Layer {
        tar: tar_dir(d).unwrap(),
        compression: c,
    };
    write_image(
        &tmp.join("layout"),
        IMAGE,
        &[
            layer(&src_base, Compression::Gzip),
            layer(&tmp.join("src/tools"), Compression::Gzip),
        ],
        &RunConfig {
            cmd: Some(vec!["/bin/sh".into()]),
            env: vec!["PATH=/bin:/t".into()],
            ..Default::default()
        },
    )
    .unwrap();
    fs::remove_dir_all(tmp.join("src")).unwrap();
    fs::write(tmp.join("done"), "").unwrap();
    if fs::rename(&tmp, &dir).is_err() {
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            dir.join("done").exists(),
            "cannot put the image at {}",
            dir.display()
        );
    }
    dir.join("layout")
}

/// A world with the breakout image in its store.
fn world() -> World {
    let w = World::new();
    fetch(&w, layout());
    w
}

// ---------------------------------------------------------------- running attacks

/// How the attack gets into the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// As the app itself: `orbit run IMAGE --exec /bin/sh -- -c SCRIPT`.
    Run,
    /// `orbit enter UUID /bin/sh -c SCRIPT` into a running app (`/bin/sleep 1000`).
    Enter,
}

/// Shell prelude: `try LABEL CMD…` runs CMD and prints `LABEL=<exit status> <output on one line>`.
const TRY: &str =
    "try() { l=$1; shift; o=$(\"$@\" 2>&1 </dev/null); r=$?; echo \"$l=$r $(echo $o)\"; }\n";

/// Runs `script` in an app of [`IMAGE`] (pod/global options `opts` after `run`, app options
/// `app` after the image) `via` the app itself or `orbit enter`. Asserts the script ran to its
/// end (the attack did not take the pod or the shell down) and exited 0; through `enter`, that
/// the pod and its app are still running afterwards. Returns the script's stdout.
fn sh(w: &World, via: Via, opts: &[&str], app: &[&str], script: &str) -> String {
    let full = format!("{TRY}{script}\necho still-up\n");
    let check = |o: &std::process::Output, what: &str| {
        let out = text(&o.stdout);
        assert!(
            code(o) == 0 && out.ends_with("still-up\n"),
            "{what} should run the script to its end and exit 0 (exit {:?}):\nstdout: {out}\nstderr: {}",
            o.status.code(),
            text(&o.stderr)
        );
        out
    };
    match via {
        Via::Run => {
            let mut args = vec!["run"];
            args.extend_from_slice(opts);
            args.push(IMAGE);
            args.extend_from_slice(app);
            args.extend(["--exec", "/bin/sh", "--", "-c", &full]);
            let o = orbit(w, &args);
            check(&o, "orbit run")
        }
        Via::Enter => {
            let mut pod = start_sleeper(w, opts, app);
            let o = orbit(w, &["enter", &pod.uuid, "/bin/sh", "-c", &full]);
            let out = check(&o, "orbit enter");
            assert_still_running(&mut pod);
            out
        }
    }
}

/// A background pod whose app sleeps (`/bin/sleep 1000`), ready.
fn start_sleeper<'a>(w: &'a World, opts: &[&str], app: &[&str]) -> BgPod<'a> {
    let mut args: Vec<&str> = opts.to_vec();
    args.push(IMAGE);
    args.extend_from_slice(app);
    args.extend(["--exec", "/bin/sleep", "--", "1000"]);
    BgPod::start(w, &args)
}

/// The pod is still up: `orbit run` has not exited, the pod and its app are running, and a
/// new `orbit enter` still works.
fn assert_still_running(pod: &mut BgPod) {
    let exited = pod.child.as_mut().unwrap().try_wait().unwrap();
    if let Some(st) = exited {
        let e = pod.wait(Duration::from_secs(1));
        panic!(
            "the pod {} went down ({st}) after the attack:\nstdout: {}\nstderr: {}",
            pod.uuid, e.stdout, e.stderr
        );
    }
    let st = status_json(pod.w, &pod.uuid);
    assert_eq!(st["state"], "running", "{st:#}");
    for a in st["apps"].as_array().unwrap() {
        assert_eq!(a["state"], "running", "{st:#}");
    }
    let o = orbit(pod.w, &["enter", &pod.uuid, "/bin/echo", "alive"]);
    assert_eq!(
        (code(&o), text(&o.stdout).as_str()),
        (0, "alive\n"),
        "{}",
        text(&o.stderr)
    );
}

/// `try LABEL …`'s exit status and output.
fn tried(out: &str, label: &str) -> (i32, String) {
    let prefix = format!("{label}=");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no '{label}' result in:\n{out}"));
    let rest = &line[prefix.len()..];
    let (rc, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    (rc.parse().unwrap(), msg.to_string())
}

/// Asserts `try LABEL …` failed; returns its message.
fn failed(out: &str, label: &str) -> String {
    let (rc, msg) = tried(out, label);
    assert_ne!(
        rc, 0,
        "'{label}' should have failed: {msg}\nfull output:\n{out}"
    );
    msg
}

/// Asserts `try LABEL …` failed with a message containing `want`.
fn failed_with(out: &str, label: &str, want: &str) {
    let msg = failed(out, label);
    assert!(
        msg.contains(want),
        "'{label}' should fail with '{want}', got: {msg}\nfull output:\n{out}"
    );
}

/// The value printed as `KEY=VALUE` (helper probes, `echo key=…`).
fn value(out: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no '{key}=' in:\n{out}"))
        .to_string()
}

/// Asserts each helper probe printed the expected result.
fn probes_are(out: &str, expected: &[(&str, &str)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|(p, want)| {
            let got = value(out, p);
            (got != *want).then(|| format!("{p}: {got} (expected {want})"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "syscall probes: {wrong:#?}\nfull output:\n{out}"
    );
}

/// A `/proc/PID/status` field (`CapEff`, `NoNewPrivs`, …) from `grep`ped status lines.
fn field(out: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
        .trim()
        .to_string()
}

const STATUS: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status\n";

/// This (host) process's own status field.
fn host_field(name: &str) -> String {
    field(&fs::read_to_string("/proc/self/status").unwrap(), name)
}

fn host_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

fn host_uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `name`-named pairs of tests, one per way in: `name::via_run`, `name::via_enter`.
macro_rules! via_run_and_enter {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn via_run() {
                super::$name(super::Via::Run)
            }
            #[test]
            fn via_enter() {
                super::$name(super::Via::Enter)
            }
        }
    )*};
}

via_run_and_enter!(
    mount_and_namespaces_are_refused,
    modules_cannot_be_loaded,
    reboot_fails_and_the_host_stays_up,
    kexec_is_refused,
    hostname_of_the_host_cannot_be_changed,
    processes_outside_the_pod_cannot_be_signalled_or_traced,
    masked_paths_show_nothing,
    proc_read_only_paths_cannot_be_written,
    sys_is_read_only,
    double_chroot_does_not_reach_the_host,
    setuid_binary_gains_nothing,
    host_disk_cannot_be_read_through_a_device_node,
    devices_asked_for_are_usable_with_their_permissions_only,
    insecure_devices_shows_and_opens_the_hosts_disks,
    limits_cannot_be_raised,
    seccomp_default_filter_blocks_the_dangerous_syscalls,
    pod_init_is_not_dumpable,
    default_confinement_in_proc_status,
    non_root_user_has_no_capabilities,
    caps_retain_gives_exactly_those,
    caps_remove_drops_chown,
    insecure_capabilities_gives_the_full_set,
    insecure_seccomp_turns_the_filter_off,
    insecure_paths_unmasks,
    seccomp_remove_mkdir_fails_with_the_chosen_errno,
);

// ---------------------------------------------------------------- attacks as the pod's root

fn mount_and_namespaces_are_refused(via: Via) {
    let w = world();
    let tag = format!("orbit-breakout-{}", std::process::id());
    let out = sh(
        &w,
        via,
        &[],
        &[],
        &format!(
            "try mount_tmpfs mount -t tmpfs {tag} /mnt
             try mount_bind mount --bind / /mnt
             try mount_proc mount -t proc proc /mnt
             try sh_umount umount /proc
             try umount_lazy umount -l /proc
             try unshare unshare -m -u /bin/true
             try nsenter nsenter -t 1 -m /bin/true
             breakout call mount umount_proc pivot_root unshare_mnt unshare_user setns clone_newns clone_newuser
             try proc_still_there test -r /proc/self/status
             grep -c {tag} /proc/self/mountinfo"
        ),
    );
    for l in [
        "mount_tmpfs",
        "mount_bind",
        "mount_proc",
        "sh_umount",
        "umount_lazy",
        "unshare",
        "nsenter",
    ] {
        failed(&out, l);
    }
    failed_with(&out, "mount_tmpfs", "permission denied");
    probes_are(
        &out,
        &[
            ("mount", "EPERM"),
            ("umount_proc", "EPERM"),
            ("pivot_root", "EPERM"),
            ("unshare_mnt", "EPERM"),
            ("unshare_user", "EPERM"),
            ("setns", "EPERM"),
            ("clone_newns", "EPERM"),
            ("clone_newuser", "EPERM"),
        ],
    );
    assert_eq!(tried(&out, "proc_still_there").0, 0, "{out}");
    assert!(
        out.contains("\n0\n"),
        "the tmpfs got mounted in the pod:\n{out}"
    );
    assert!(mounts_with(&tag).is_empty(), "{:?}", mounts_with(&tag));
}

fn modules_cannot_be_loaded(via: Via) {
    let w = world();
    let modules_before = fs::read_to_string("/proc/modules").unwrap_or_default();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "try insmod insmod /t/breakout
         try rmmod rmmod orbit_breakout_none
         try modprobe modprobe orbit_breakout_none
         breakout call init_module finit_module delete_module",
    );
    failed_with(&out, "insmod", "Operation not permitted");
    failed(&out, "rmmod");
    failed(&out, "modprobe");
    probes_are(
        &out,
        &[
            ("init_module", "EPERM"),
            ("finit_module", "EPERM"),
            ("delete_module", "EPERM"),
        ],
    );
    assert_eq!(
        fs::read_to_string("/proc/modules").unwrap_or_default(),
        modules_before
    );
}

fn reboot_fails_and_the_host_stays_up(via: Via) {
    let w = world();
    let up = host_uptime();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "try sh_reboot reboot -f
         try poweroff poweroff -f
         try halt halt -f
         breakout call reboot",
    );
    for l in ["sh_reboot", "poweroff", "halt"] {
        failed(&out, l);
    }
    probes_are(&out, &[("reboot", "EPERM")]);
    assert!(host_uptime() >= up, "the host's uptime went backwards");
}

fn kexec_is_refused(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "breakout call kexec_load kexec_file_load",
    );
    probes_are(
        &out,
        &[("kexec_load", "EPERM"), ("kexec_file_load", "EPERM")],
    );
}

fn hostname_of_the_host_cannot_be_changed(via: Via) {
    let w = world();
    let host = host_hostname();
    let out = sh(
        &w,
        via,
        &["--hostname", "podname"],
        &[],
        "try hostname hostname orbit-evil
         try proc_hostname sh -c 'echo orbit-evil > /proc/sys/kernel/hostname'
         breakout call sethostname setdomainname
         echo now=$(hostname)",
    );
    failed_with(&out, "hostname", "Operation not permitted");
    failed(&out, "proc_hostname");
    probes_are(
        &out,
        &[("sethostname", "EPERM"), ("setdomainname", "EPERM")],
    );
    assert_eq!(value(&out, "now"), "podname", "{out}");
    assert_eq!(host_hostname(), host, "the host's hostname changed");
}

fn processes_outside_the_pod_cannot_be_signalled_or_traced(via: Via) {
    let w = world();
    let me = std::process::id();
    // The pod's own pid namespace holds a handful of processes (pids 1 to a few dozen); a
    // host with a wrapped pid counter can give the test a pid under 1000.
    assert!(
        me > 100,
        "the test's pid {me} might exist in the pod's pid namespace"
    );
    let out = sh(
        &w,
        via,
        &[],
        &[],
        &format!(
            "try kill_host kill -0 {me}
             try kill_host_term kill -TERM {me}
             breakout ptrace {me}
             echo pid_host=$(cat /proc/{me}/status 2>&1 | head -1)"
        ),
    );
    failed_with(&out, "kill_host", "No such process");
    failed_with(&out, "kill_host_term", "No such process");
    probes_are(&out, &[("ptrace", "ESRCH")]);
    assert!(
        !value(&out, "pid_host").starts_with("Name:"),
        "the test process is visible in the pod:\n{out}"
    );
    // Still here, untraced.
    assert_eq!(host_field("TracerPid"), "0");
}

fn masked_paths_show_nothing(via: Via) {
    let w = world();
    let paths = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/acpi",
        "/proc/latency_stats",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    let present: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(
        present.contains(&"/proc/timer_list") && !fs::read("/proc/timer_list").unwrap().is_empty(),
        "the host's /proc/timer_list should have content to hide"
    );
    let mut script = String::new();
    for p in &present {
        let l = p.replace('/', "_");
        if Path::new(p).is_dir() {
            script += &format!("echo {l}=$(ls -A {p} 2>/dev/null | wc -l)\n");
        } else {
            script += &format!("echo {l}=$(head -c 4096 {p} 2>/dev/null | wc -c)\n");
        }
    }
    let out = sh(&w, via, &[], &[], &script);
    for p in &present {
        let l = p.replace('/', "_");
        assert_eq!(value(&out, &l), "0", "{p} is not masked in the pod:\n{out}");
    }
}

fn proc_read_only_paths_cannot_be_written(via: Via) {
    let w = world();
    let core_pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let swappiness = fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    // Writes the current values back: harmless even if a write went through.
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "try sysrq sh -c 'echo h > /proc/sysrq-trigger'
         try core_pattern sh -c 'v=$(cat /proc/sys/kernel/core_pattern); echo \"$v\" > /proc/sys/kernel/core_pattern'
         try swappiness sh -c 'v=$(cat /proc/sys/vm/swappiness); echo $v > /proc/sys/vm/swappiness'
         try touch_sys touch /proc/sys/orbit-breakout
         grep -E ' /proc/(sys|sysrq-trigger|irq|bus|fs) ' /proc/self/mountinfo",
    );
    failed(&out, "sysrq");
    failed_with(&out, "core_pattern", "Read-only file system");
    failed_with(&out, "swappiness", "Read-only file system");
    failed(&out, "touch_sys");
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if !Path::new(p).exists() {
            continue;
        }
        let line = out
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(p))
            .unwrap_or_else(|| panic!("{p} is not a read-only mount in the pod:\n{out}"));
        let opts = line.split(' ').nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{p} mounted {opts}:\n{out}"
        );
    }
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        swappiness
    );
}

fn sys_is_read_only(via: Via) {
    let w = world();
    let target = [
        "/sys/kernel/mm/ksm/run",
        "/sys/kernel/profiling",
        "/sys/kernel/rcu_expedited",
    ]
    .into_iter()
    .find(|p| fs::read_to_string(p).is_ok())
    .expect("a writable /sys attribute on the host");
    let before = fs::read_to_string(target).unwrap();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        &format!(
            "try attr sh -c 'v=$(cat {target}); echo $v > {target}'
             try touch_sys touch /sys/orbit-breakout
             try mkdir_cgroup mkdir /sys/fs/cgroup/orbit-breakout
             grep ' /sys ' /proc/self/mountinfo"
        ),
    );
    failed_with(&out, "attr", "Read-only file system");
    failed(&out, "touch_sys");
    failed(&out, "mkdir_cgroup");
    let line = out
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sys"))
        .unwrap_or_else(|| panic!("no /sys mount in the pod:\n{out}"));
    assert!(
        line.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{line}"
    );
    assert_eq!(fs::read_to_string(target).unwrap(), before);
}

fn double_chroot_does_not_reach_the_host(via: Via) {
    let w = world();
    let marker = w.path("host-only-marker");
    fs::write(&marker, "host\n").unwrap();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        &format!("cd /tmp && breakout escape {}", marker.display()),
    );
    assert_eq!(
        value(&out, "chroot1"),
        "OK",
        "CAP_SYS_CHROOT is a default capability:\n{out}"
    );
    assert_eq!(
        value(&out, "marker"),
        "ENOENT",
        "the double chroot reached the host's filesystem:\n{out}"
    );
    // Still in the app's root: the image's /t is there.
    let root = value(&out, "root");
    assert!(
        root.split(' ').any(|e| e == "t"),
        "root after the escape: {root}"
    );
    assert_eq!(fs::read_to_string(&marker).unwrap(), "host\n");
}

/// Control for the double-chroot test: `fly` (chroot only, unconfined by design) does not
/// stop the escape, so the helper really does what it claims.
#[test]
fn double_chroot_control_reaches_the_host_under_fly() {
    let w = world();
    let marker = w.path("host-only-marker");
    fs::write(&marker, "host\n").unwrap();
    let script = format!("cd /tmp && breakout escape {}", marker.display());
    let out = run_expect(
        &w,
        &[
            "--stage1-name",
            "fly",
            IMAGE,
            "--exec",
            "/bin/sh",
            "--",
            "-c",
            &script,
        ],
        0,
    );
    assert_eq!(value(&out, "marker"), "OK", "{out}");
}

fn setuid_binary_gains_nothing(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &[],
        &["--user", "1000"],
        "echo mode=$(stat -c '%a %u' /t/suid)
         suid ids",
    );
    assert_eq!(
        value(&out, "mode"),
        "4755 0",
        "the image lost the setuid bit:\n{out}"
    );
    assert_eq!(value(&out, "ruid"), "1000 euid=1000", "{out}");
    probes_are(&out, &[("setuid0", "EPERM")]);
    assert_eq!(value(&out, "after: ruid"), "1000 euid=1000", "{out}");
}

/// Control for the setuid test: without no_new_privs (`--insecure-options=capabilities,seccomp`;
/// capabilities alone should do, see `insecure_capabilities_gives_the_full_set`) the same
/// binary does become root, so the test above proves no_new_privs works.
#[test]
fn setuid_control_works_without_no_new_privs() {
    let w = world();
    let out = sh(
        &w,
        Via::Run,
        &["--insecure-options=capabilities,seccomp"],
        &["--user", "1000"],
        "suid ids",
    );
    assert_eq!(value(&out, "ruid"), "1000 euid=0", "{out}");
}

/// Block disks of the host (`/sys/block`, without loop and ram devices): name, major, minor,
/// whether the host's root filesystem is on it, and whether this (root) test process can open
/// it on the host at all — a device the host itself may not open tells nothing about the pod.
fn host_disks() -> Vec<(String, u32, u32, bool, bool)> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_dev = mi
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(' ').nth(2))
        .unwrap_or("")
        .to_string();
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let Ok(dev) = fs::read_to_string(e.path().join("dev")) else {
            continue;
        };
        let dev = dev.trim().to_string();
        let (a, b) = dev.split_once(':').unwrap();
        let host_opens = fs::File::open(format!("/dev/{name}")).is_ok();
        out.push((
            name,
            a.parse().unwrap(),
            b.parse().unwrap(),
            dev == root_dev,
            host_opens,
        ));
    }
    out.sort();
    out
}

fn host_disk_cannot_be_read_through_a_device_node(via: Via) {
    let w = world();
    let disks = host_disks();
    assert!(!disks.is_empty(), "no host disk in /sys/block");
    let (_, volume) = host_volume(&w, "v", "vol");
    let mut script = String::new();
    // (label, what, host can open it)
    let mut labels = Vec::new();
    for (name, maj, min, root, host_opens) in &disks {
        // In the app's root (overlay upper), in its /dev, and in a read-write host volume.
        for dir in ["/tmp", "/dev", "/v"] {
            let node = format!("{dir}/orbit-{name}");
            let l = format!("read_{name}{}", dir.replace('/', "_"));
            script += &format!(
                "echo mknod_{name}{}=$(mknod {node} b {maj} {min} 2>&1 && echo OK)\n\
                 try {l} dd if={node} of=/dev/null bs=512 count=1\n",
                dir.replace('/', "_")
            );
            let what = format!(
                "{node} = host /dev/{name} ({maj}:{min}{})",
                if *root {
                    ", the host's root filesystem"
                } else {
                    ""
                }
            );
            labels.push((l, what, *host_opens));
        }
    }
    // /dev/mem and /dev/kmsg too.
    for (l, maj, min) in [("mem", 1, 1), ("kmsg", 1, 11)] {
        script += &format!(
            "mknod /tmp/orbit-{l} c {maj} {min}\ntry read_{l} dd if=/tmp/orbit-{l} of=/dev/null bs=1 count=1\n"
        );
        let host_opens = fs::File::open(format!("/dev/{l}")).is_ok();
        labels.push((
            format!("read_{l}"),
            format!("/tmp/orbit-{l} = host /dev/{l} ({maj}:{min})"),
            host_opens,
        ));
    }
    let out = sh(
        &w,
        via,
        &["--volume", &volume],
        &["--mount", "volume=v,target=/v"],
        &script,
    );
    let opened: Vec<String> = labels
        .iter()
        .filter(|(l, _, _)| tried(&out, l).0 == 0)
        .map(|(l, what, _)| format!("{what}: opened and read ({})", tried(&out, l).1))
        .collect();
    assert!(
        opened.is_empty(),
        "SECURITY BUG: the pod's root opens host devices through device nodes it makes \
         (CAP_MKNOD is a default capability, so a device cgroup allow-list — or nodev on \
         every writable mount — must refuse the open): {opened:#?}\nfull output:\n{out}"
    );
    // Outside /dev the mount itself refuses (nodev: EACCES) before any device cgroup could.
    for (name, ..) in &disks {
        for dir in ["tmp", "v"] {
            if value(&out, &format!("mknod_{name}_{dir}")) == "OK" {
                failed_with(&out, &format!("read_{name}_{dir}"), "Permission denied");
            }
        }
    }
    if !labels.iter().any(|(_, _, host_opens)| *host_opens) {
        eprintln!("note: the host itself cannot open any of {disks:?}: this run proves little");
    }
}

fn devices_asked_for_are_usable_with_their_permissions_only(via: Via) {
    let w = world();
    // fuse (10:229) and loop-control (10:237) are not among the harmless devices every app
    // may open; the probes only open them (`exec 3<…`), nothing is read or written.
    let out = sh(
        &w,
        via,
        &[],
        &[
            "--device",
            "/dev/fuse:/dev/fu:r",
            "--device",
            "/dev/loop-control:/dev/sub/lc:rw",
            "--device",
            "/dev/full:/dev/ff:rw",
        ],
        "echo fu=$(stat -c '%F %t:%T %a' /dev/fu)\n\
         try open_fu_for_reading sh -c 'exec 3< /dev/fu'\n\
         try open_fu_for_writing sh -c 'exec 3> /dev/fu'\n\
         try open_lc_read_write sh -c 'exec 3<> /dev/sub/lc'\n\
         try write_ff sh -c 'echo x > /dev/ff'\n\
         mknod /dev/mem c 1 1\n\
         try read_mem dd if=/dev/mem of=/dev/null bs=1 count=1\n\
         mknod /tmp/null c 1 3\n\
         try open_null_in_root sh -c 'exec 3<> /tmp/null'\n",
    );
    // The host's numbers (hex in stat) and mode under the new name.
    let mode = format!(
        "{:o}",
        fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777
    );
    assert_eq!(
        value(&out, "fu"),
        format!("character special file a:e5 {mode}"),
        "{out}"
    );
    assert_eq!(tried(&out, "open_fu_for_reading").0, 0, "{out}");
    assert_eq!(tried(&out, "open_lc_read_write").0, 0, "{out}");
    // The device cgroup refuses what the rule does not allow (r only), and devices not asked
    // for (made in the pod's /dev, the one place whose nodes open).
    failed_with(&out, "open_fu_for_writing", "Operation not permitted");
    failed_with(&out, "read_mem", "Operation not permitted");
    // Outside /dev, even an allowed device does not open: the app's root is nodev.
    failed_with(&out, "open_null_in_root", "Permission denied");
    // rw: the write reaches the device, which says it is full.
    failed_with(&out, "write_ff", "No space left on device");
}

/// `--insecure-options=devices`: the host's disks are in the app's /dev and open.
fn insecure_devices_shows_and_opens_the_hosts_disks(via: Via) {
    let w = world();
    let disks: Vec<_> = host_disks().into_iter().filter(|d| d.4).collect();
    assert!(
        !disks.is_empty(),
        "no host disk this test can open in /sys/block"
    );
    let script: String = disks
        .iter()
        .map(|(name, ..)| {
            format!("try read_{name} dd if=/dev/{name} of=/dev/null bs=512 count=1\n")
        })
        .collect();
    let out = sh(&w, via, &["--insecure-options=devices"], &[], &script);
    for (name, ..) in &disks {
        assert_eq!(tried(&out, &format!("read_{name}")).0, 0, "{out}");
    }
}

#[test]
fn a_device_that_is_not_one_is_refused_and_leaves_no_pod() {
    let w = world();
    for (spec, want) in [
        ("/etc/passwd", "not a device node"),
        ("/dev/nonexistent", "No such file"),
        ("/dev/null:/dev/n:rx", "rwm"),
    ] {
        let o = orbit(&w, &["run", IMAGE, "--device", spec, "--exec", "/bin/true"]);
        assert_ne!(code(&o), 0, "{spec}");
        let err = text(&o.stderr);
        assert!(
            err.contains(want) && err.contains("device"),
            "{spec}: {err}"
        );
    }
    assert_no_pods(&w);
}

fn limits_cannot_be_raised(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "h=$(ulimit -H -n); echo hard_before=$h
         try nofile ulimit -n $((h + 1))
         try nofile_hard ulimit -H -n $((h * 2))
         echo hard_after=$(ulimit -H -n)",
    );
    let h = value(&out, "hard_before");
    assert_ne!(h, "unlimited", "{out}");
    failed_with(&out, "nofile", "Operation not permitted");
    failed_with(&out, "nofile_hard", "Operation not permitted");
    assert_eq!(value(&out, "hard_after"), h, "{out}");
}

fn seccomp_default_filter_blocks_the_dangerous_syscalls(via: Via) {
    let w = world();
    let eperm = [
        "mount",
        "umount_proc",
        "pivot_root",
        "unshare_user",
        "unshare_mnt",
        "setns",
        "clone_newuser",
        "clone_newns",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "reboot",
        "swapon",
        "swapoff",
        "settimeofday",
        "clock_settime",
        "sethostname",
        "setdomainname",
        "open_by_handle_at",
        "iopl",
        "ioperm",
        "syslog",
        "io_uring_setup",
    ];
    let out = sh(
        &w,
        via,
        &[],
        &[],
        &format!(
            "breakout call {} clone3 clone_plain getpid mkdir\nbreakout vmread 1",
            eperm.join(" ")
        ),
    );
    let mut expected: Vec<(&str, &str)> = eperm.iter().map(|p| (*p, "EPERM")).collect();
    expected.extend([
        ("clone3", "ENOSYS"),
        ("clone_plain", "OK"),
        ("getpid", "OK"),
        ("mkdir", "OK"),
        ("process_vm_readv", "EPERM"),
    ]);
    probes_are(&out, &expected);
}

fn pod_init_is_not_dumpable(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &[],
        &[],
        "try exe_link readlink /proc/1/exe
         try exe_ls ls -l /proc/1/exe
         try exe_read head -c 4 /proc/1/exe
         try exe_write sh -c 'echo x >> /proc/1/exe'
         try root_ls ls /proc/1/root/
         try cwd_ls ls /proc/1/cwd/
         try environ cat /proc/1/environ
         try mem head -c 1 /proc/1/mem
         try fd_follow sh -c 'for f in /proc/1/fd/* /proc/1/map_files/*; do [ -e $f ] && exit 0; readlink $f && exit 0; done; exit 1'
         breakout ptrace 1
         for p in /proc/[0-9]*; do echo \"exe $p $(readlink $p/exe 2>/dev/null)\"; done",
    );
    for l in [
        "exe_link",
        "exe_read",
        "exe_write",
        "root_ls",
        "cwd_ls",
        "environ",
        "mem",
        "fd_follow",
    ] {
        failed(&out, l);
    }
    failed_with(&out, "exe_read", "Permission denied");
    // busybox ls -l lists the link but cannot read its target.
    let ls = tried(&out, "exe_ls").1;
    assert!(
        ls.contains("cannot read link: Permission denied") && !ls.contains("->"),
        "{out}"
    );
    probes_are(&out, &[("ptrace", "EPERM")]);
    // No process the pod can see exposes the host's orbit binary.
    let orbit = common::orbit_bin();
    let leaks: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.starts_with("exe ") && (l.contains("orbit") || l.contains(&*orbit.to_string_lossy()))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "the host's orbit binary is reachable from the pod: {leaks:#?}"
    );
}

// ---------------------------------------------------------------- the confinement, as seen from inside

fn default_confinement_in_proc_status(via: Via) {
    let w = world();
    let out = sh(&w, via, &[], &[], STATUS);
    let d = hex(mask(&DEFAULT_CAP_BITS));
    assert_eq!(d, "00000000a80425fb");
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(field(&out, f), d, "{f}:\n{out}");
    }
    assert_eq!(field(&out, "CapAmb"), hex(0), "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(field(&out, "Seccomp"), "2", "{out}");
}

fn non_root_user_has_no_capabilities(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &[],
        &["--user", "1000"],
        &format!("echo uid=$(id -u)\n{STATUS}"),
    );
    assert_eq!(value(&out, "uid"), "1000");
    for f in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(field(&out, f), hex(0), "{f}:\n{out}");
    }
    assert_eq!(field(&out, "CapBnd"), hex(mask(&DEFAULT_CAP_BITS)), "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(field(&out, "Seccomp"), "2", "{out}");
}

fn caps_retain_gives_exactly_those(via: Via) {
    let w = world();
    let out = sh(&w, via, &[], &["--caps-retain=CAP_NET_ADMIN"], STATUS);
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(field(&out, f), hex(1 << CAP_NET_ADMIN), "{f}:\n{out}");
    }
    assert_eq!(field(&out, "CapAmb"), hex(0), "{out}");
}

fn caps_remove_drops_chown(via: Via) {
    let w = world();
    let script = format!("{STATUS}touch /tmp/f\ntry chown chown 1000 /tmp/f\n");
    let out = sh(&w, via, &[], &["--caps-remove=CAP_CHOWN"], &script);
    let want = mask(&DEFAULT_CAP_BITS) & !(1 << CAP_CHOWN);
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(field(&out, f), hex(want), "{f}:\n{out}");
    }
    failed_with(&out, "chown", "Operation not permitted");
    // With the default set, chown works.
    let out = sh(&w, via, &[], &[], &script);
    assert_eq!(tried(&out, "chown").0, 0, "{out}");
}

fn insecure_capabilities_gives_the_full_set(via: Via) {
    let w = world();
    let out = sh(&w, via, &["--insecure-options=capabilities"], &[], STATUS);
    // Everything this (root) test process holds; a host without, say, CAP_SYS_RESOURCE in
    // its own bounding set cannot give it to a pod.
    let full = host_field("CapBnd");
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(field(&out, f), full, "{f}:\n{out}");
    }
    assert_eq!(field(&out, "NoNewPrivs"), "0", "{out}");
    assert_eq!(field(&out, "Seccomp"), "2", "seccomp stays on:\n{out}");
}

fn insecure_seccomp_turns_the_filter_off(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &["--insecure-options=seccomp"],
        &[],
        &format!("{STATUS}breakout call clone_newuser keyctl clone3\n"),
    );
    assert_eq!(field(&out, "Seccomp"), "0", "{out}");
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(field(&out, "CapEff"), hex(mask(&DEFAULT_CAP_BITS)), "{out}");
    // What only the filter stopped now goes through (in the pod's own namespaces).
    probes_are(
        &out,
        &[("clone_newuser", "OK"), ("keyctl", "OK"), ("clone3", "OK")],
    );
}

fn insecure_paths_unmasks(via: Via) {
    let w = world();
    let out = sh(
        &w,
        via,
        &["--insecure-options=paths"],
        &[],
        "echo timer_list=$(head -c 4096 /proc/timer_list | wc -c)
         echo firmware=$(ls -A /sys/firmware | wc -l)
         echo procsys_mounts=$(grep -c ' /proc/sys ' /proc/self/mountinfo)",
    );
    assert_ne!(value(&out, "timer_list"), "0", "{out}");
    if fs::read_dir("/sys/firmware")
        .map(|d| d.count())
        .unwrap_or(0)
        > 0
    {
        assert_ne!(value(&out, "firmware"), "0", "{out}");
    }
    assert_eq!(value(&out, "procsys_mounts"), "0", "{out}");
}

fn seccomp_remove_mkdir_fails_with_the_chosen_errno(via: Via) {
    let w = world();
    let script = "try mkdir mkdir /tmp/d\ntry rmdir_ok touch /tmp/f\n";
    let out = sh(&w, via, &[], &["--seccomp", "mode=remove,mkdir"], script);
    failed_with(&out, "mkdir", "Operation not permitted");
    assert_eq!(tried(&out, "rmdir_ok").0, 0, "{out}");
    let out = sh(
        &w,
        via,
        &[],
        &["--seccomp", "mode=remove,errno=ENOSYS,mkdir"],
        script,
    );
    failed_with(&out, "mkdir", "Function not implemented");
}

// ---------------------------------------------------------------- orbit enter / app exec: rkt's escapes

/// Host pid of the pod's app process (`/bin/sleep 1000`), found in the pod's pid namespace.
fn app_host_pid(pod: &BgPod) -> u32 {
    let st = out_ok(pod.w, &["status", &pod.uuid]);
    let init: i64 = st
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in orbit status:\n{st}"));
    let ns = pidns_of(init).expect("pid namespace of the pod's init");
    poll(Duration::from_secs(5), "the app's process", || {
        procs_in_pidns(&ns).into_iter().find(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| text(&c).replace('\0', " ").trim() == "/bin/sleep 1000")
                .unwrap_or(false)
        })
    })
}

/// The status lines of the app's process and of a process entered with `cmd` (`enter` or
/// `app exec`), as the entered process sees them.
fn entered_and_app(pod: &BgPod, cmd: &[&str]) -> (String, String) {
    let script = "a=$(pidof sleep); grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/$a/status; echo ===; grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status";
    let mut args: Vec<&str> = cmd.to_vec();
    args.extend(["/bin/sh", "-c", script]);
    let o = orbit(pod.w, &args);
    assert_eq!(code(&o), 0, "{args:?}: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let (app, me) = out.split_once("===\n").unwrap_or_else(|| panic!("{out}"));
    (app.to_string(), me.to_string())
}

fn enter_cmds(uuid: &str) -> [Vec<&str>; 2] {
    [vec!["enter", uuid], vec!["app", "exec", uuid, "--app", APP]]
}

/// rkt's `enter` kept the full capability set (CVE-2019-10144): entered processes must have
/// exactly the app's capability sets and identity, for every kind of app.
#[test]
fn cve_2019_10144_enter_and_app_exec_have_the_apps_capabilities() {
    let w = world();
    for (app, want_eff) in [
        (vec![], mask(&DEFAULT_CAP_BITS)),
        (vec!["--user", "1000"], 0),
        (vec!["--caps-retain=CAP_NET_ADMIN"], 1 << CAP_NET_ADMIN),
        (
            vec!["--caps-remove=CAP_CHOWN,CAP_KILL"],
            mask(&DEFAULT_CAP_BITS) & !1 & !(1 << 5),
        ),
    ] {
        let mut pod = start_sleeper(&w, &[], &app);
        for cmd in enter_cmds(&pod.uuid) {
            let (theirs, mine) = entered_and_app(&pod, &cmd);
            assert_eq!(mine, theirs, "{cmd:?} in an app with {app:?}");
            assert_eq!(
                field(&mine, "CapEff"),
                hex(want_eff),
                "{cmd:?} {app:?}:\n{mine}"
            );
            assert_eq!(field(&mine, "CapAmb"), hex(0), "{cmd:?} {app:?}:\n{mine}");
        }
        assert_still_running(&mut pod);
    }
}

/// rkt's `enter` ran without the app's seccomp filter (CVE-2019-10145): entered processes
/// must carry the same filter (and no_new_privs), the default one and a custom one.
#[test]
fn cve_2019_10145_enter_and_app_exec_have_the_apps_seccomp_filter() {
    let w = world();
    let mut pod = start_sleeper(&w, &[], &[]);
    for cmd in enter_cmds(&pod.uuid) {
        let (theirs, mine) = entered_and_app(&pod, &cmd);
        assert_eq!(field(&mine, "Seccomp"), "2", "{cmd:?}:\n{mine}");
        assert_eq!(field(&mine, "NoNewPrivs"), "1", "{cmd:?}:\n{mine}");
        assert_eq!(
            field(&mine, "Seccomp_filters"),
            field(&theirs, "Seccomp_filters"),
            "{cmd:?}: app\n{theirs}\nentered\n{mine}"
        );
        let mut args = cmd.clone();
        args.extend([
            "/t/breakout",
            "call",
            "mount",
            "unshare_user",
            "kexec_load",
            "bpf",
            "clone3",
        ]);
        let out = out_ok(&w, &args);
        probes_are(
            &out,
            &[
                ("mount", "EPERM"),
                ("unshare_user", "EPERM"),
                ("kexec_load", "EPERM"),
                ("bpf", "EPERM"),
                ("clone3", "ENOSYS"),
            ],
        );
    }
    assert_still_running(&mut pod);
    drop(pod);

    // A custom filter follows the app into enter, errno and all.
    let mut pod = start_sleeper(&w, &[], &["--seccomp", "mode=remove,errno=ENOSYS,mkdir"]);
    for cmd in enter_cmds(&pod.uuid) {
        let mut args = cmd.clone();
        args.extend(["/t/breakout", "call", "mkdir", "getpid"]);
        let out = out_ok(&w, &args);
        probes_are(&out, &[("mkdir", "ENOSYS"), ("getpid", "OK")]);
    }
    assert_still_running(&mut pod);
}

/// rkt's `enter` left entered processes in the caller's cgroups (CVE-2019-10147): they must
/// be in the app's, every hierarchy — as seen from inside and from the host.
#[test]
fn cve_2019_10147_enter_and_app_exec_join_the_apps_cgroups() {
    let w = world();
    let mut pod = start_sleeper(&w, &[], &[]);
    let app_pid = app_host_pid(&pod);
    let app_cgroups = fs::read_to_string(format!("/proc/{app_pid}/cgroup")).unwrap();
    assert_ne!(
        app_cgroups,
        fs::read_to_string("/proc/self/cgroup").unwrap(),
        "the app should be in its own cgroups"
    );
    for (i, cmd) in enter_cmds(&pod.uuid).into_iter().enumerate() {
        // Inside: the entered process's view equals the app's.
        let mut args = cmd.clone();
        args.extend([
            "/bin/sh",
            "-c",
            "cat /proc/$(pidof sleep)/cgroup; echo ===; cat /proc/self/cgroup",
        ]);
        let out = out_ok(&w, &args);
        let (theirs, mine) = out.split_once("===\n").unwrap();
        assert_eq!(mine, theirs, "{cmd:?}");
        assert!(
            !mine.contains(".."),
            "{cmd:?}: outside the pod's cgroup namespace:\n{mine}"
        );

        // From the host: a long-running entered process sits in the app's cgroups.
        let tag = format!("{}", 900 + i);
        let mut args = cmd.clone();
        args.extend(["/bin/sleep", &tag]);
        let mut entered = w.cmd(&args);
        entered
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = entered.spawn().unwrap();
        let ns = pidns_of(app_pid as i64).unwrap();
        let want = format!("/bin/sleep {tag}");
        let found = std::panic::catch_unwind(|| {
            poll(Duration::from_secs(10), "the entered process", || {
                procs_in_pidns(&ns).into_iter().find(|p| {
                    fs::read(format!("/proc/{p}/cmdline"))
                        .map(|c| text(&c).replace('\0', " ").trim() == want)
                        .unwrap_or(false)
                })
            })
        });
        let cg = found
            .as_ref()
            .ok()
            .map(|p| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default());
        if let Ok(p) = &found {
            let _ = nix_kill(*p);
        }
        let st = wait_within(&mut child, Duration::from_secs(10));
        let pid = found.unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert!(
            st.is_some(),
            "{cmd:?} did not exit after its process {pid} was killed"
        );
        assert_eq!(
            cg.unwrap(),
            app_cgroups,
            "{cmd:?}: host view of the entered process {pid}"
        );
    }
    assert_still_running(&mut pod);
}

fn nix_kill(pid: u32) -> bool {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `orbit enter` and `orbit app exec` into a non-root app run as the app's user, with no
/// capabilities, and cannot use the image's setuid binary to become root.
#[test]
fn enter_and_app_exec_run_as_the_apps_user() {
    let w = world();
    let mut pod = start_sleeper(&w, &[], &["--user", "1000"]);
    let script = format!("echo uid=$(id -u) gid=$(id -g)\n{STATUS}suid ids");
    for cmd in enter_cmds(&pod.uuid) {
        let mut args = cmd.clone();
        args.extend(["/bin/sh", "-c", &script]);
        let out = out_ok(&w, &args);
        assert_eq!(value(&out, "uid"), "1000 gid=1000", "{cmd:?}:\n{out}");
        assert_eq!(field(&out, "CapEff"), hex(0), "{cmd:?}:\n{out}");
        assert_eq!(value(&out, "ruid"), "1000 euid=1000", "{cmd:?}:\n{out}");
    }
    assert_still_running(&mut pod);
}
