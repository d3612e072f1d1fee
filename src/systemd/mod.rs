//! systemd over D-Bus (zbus, blocking API), without depending on it: when a manager answers
//! on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured), `orbit run` moves itself into
//! a transient scope `orbit-<uuid>.scope` (slice machine.slice, Delegate=yes) before it
//! becomes the pod, and registers the pod with systemd-machined as machine `orbit-<uuid>`.
//! The scope ends, and machined forgets the machine, when the pod's processes are gone —
//! also after a kill -9 — so nothing is left behind. Neither step waits on the start path:
//! the stage1 waits for systemd's move just before it forks the pod, and a helper process
//! (`orbit __register-machine`) registers the machine. `orbit run --unit` starts the pod as
//! a transient service instead.

use std::path::Path;
use std::time::Duration;

use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::{OwnedObjectPath, Value};

/// The hidden `orbit` subcommand that registers a pod with machined off the start path:
/// `orbit __register-machine NAME LEADER ROOT [SCOPE]`.
pub const REGISTER_MACHINE: &str = "__register-machine";

/// `orbit __register-machine`: waits (bounded) until `leader` is in `scope` (machined
/// finds the machine's unit through it), then registers. Failures are warnings: a pod runs
/// without machined, too.
pub fn register_machine_helper(args: &[String]) -> i32 {
    let [name, leader, root, scope] = args else {
        return 2;
    };
    let Ok(leader) = leader.parse::<u32>() else {
        return 2;
    };
    if !scope.is_empty() && !orbit_stage1::wait_in_cgroup(leader, scope, Duration::from_secs(10)) {
        return 1;
    }
    match Systemd::connect(Mode::Auto)
        .map(|s| s.map(|s| s.register_machine(name, leader, Path::new(root))))
    {
        Ok(Some(Err(e))) | Err(e) => {
            eprintln!("orbit: warning: {e}");
            1
        }
        _ => 0,
    }
}

/// Set in a pod's transient service: the unit the pod's `run` is the main process of.
pub const UNIT_ENV: &str = "ORBIT_UNIT";

/// True when this process is the main process of a unit that is the pod's: a service orbit
/// started for the pod (`ORBIT_UNIT`, checked against this process's cgroup), or a unit
/// file's `ExecStart=orbit run …` (started by a systemd manager itself: `INVOCATION_ID` set
/// and the parent is a manager). An inherited `INVOCATION_ID` alone says nothing: every
/// process a service starts (a shell script, a test runner) has one, and their pods get
/// scopes of their own.
pub fn in_own_unit() -> bool {
    if let Ok(unit) = std::env::var(UNIT_ENV) {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if orbit_stage1::in_unit(&cgroups, &unit) {
            return true;
        }
    }
    let parent = nix::unistd::getppid();
    std::env::var_os("INVOCATION_ID").is_some()
        && std::fs::read_to_string(format!("/proc/{parent}/comm"))
            .is_ok_and(|comm| comm.trim() == "systemd")
}

/// Failures talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// No manager on the bus (and the user required one).
    #[error("no systemd manager answers on the system bus ({0}); run without --systemd=yes, or point DBUS_SYSTEM_BUS_ADDRESS at one")]
    Unavailable(String),
    /// A D-Bus call failed.
    #[error("systemd refused {what}: {error}")]
    Call { what: String, error: String },
    /// A job did not finish in time.
    #[error("systemd did not finish {0} within 10 s")]
    Timeout(String),
}

/// When to use systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// When a manager answers.
    #[default]
    Auto,
    /// Always (an error without a manager).
    Yes,
    /// Never.
    No,
}

/// The pod's resource limits as unit properties (MemoryMax, CPUQuota, TasksMax).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopeLimits {
    /// Bytes.
    pub memory: Option<u64>,
    /// Millicores.
    pub cpu_millis: Option<u64>,
    /// Processes and threads.
    pub tasks: Option<u64>,
}

/// How a pod's transient service runs (the properties [`Systemd::start_service`] sends).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceOptions<'a> {
    /// `Restart=` policy.
    pub restart: Option<&'a str>,
    /// `Type=notify`: active once the apps say they are ready.
    pub notify: bool,
    /// The slice to run in instead of `machine.slice` (a CRI cgroup parent).
    pub slice: Option<&'a str>,
}

/// A connection to the system bus with a systemd manager on it.
pub struct Systemd {
    conn: Connection,
}

/// A connection being made on a background thread, so that `orbit run` prepares its pod
/// while the bus handshake and the manager probe (a few round trips) happen.
pub struct PendingSystemd(Option<std::thread::JoinHandle<Result<Option<Systemd>, SystemdError>>>);

impl PendingSystemd {
    /// Starts connecting according to `mode`: nothing to do for `Mode::No`, nor for
    /// `Mode::Auto` when the system bus is a socket file that does not exist (a host
    /// without D-Bus), where a connection attempt would only cost threads.
    pub fn start(mode: Mode) -> PendingSystemd {
        let wanted = match mode {
            Mode::No => false,
            Mode::Auto => !bus_socket_absent(),
            Mode::Yes => true,
        };
        PendingSystemd(wanted.then(|| std::thread::spawn(move || Systemd::connect(mode))))
    }

    /// Waits for the connection: `None` when systemd is not to be used or not there.
    pub fn finish(self) -> Result<Option<Systemd>, SystemdError> {
        match self.0 {
            None => Ok(None),
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(SystemdError::Unavailable("connecting panicked".into()))),
        }
    }
}

/// Where the system bus is when `DBUS_SYSTEM_BUS_ADDRESS` is not set.
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// True when every address of the system bus is a `unix:path=` socket that does not exist.
fn bus_socket_absent() -> bool {
    let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS");
    let address = address.as_deref().unwrap_or(DEFAULT_SYSTEM_BUS);
    unix_socket_paths(address).is_some_and(|paths| paths.iter().all(|p| !p.exists()))
}

/// The socket files of a D-Bus address list (`unix:path=P[,guid=…];…`); `None` when one
/// of its addresses is of another kind (abstract, tcp…), which only a connection can test.
fn unix_socket_paths(address: &str) -> Option<Vec<std::path::PathBuf>> {
    address
        .split(';')
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.strip_prefix("unix:")?
                .split(',')
                .find_map(|kv| kv.strip_prefix("path="))
                .map(std::path::PathBuf::from)
        })
        .collect()
}

fn call_err(what: &str) -> impl FnOnce(zbus::Error) -> SystemdError + '_ {
    move |e| SystemdError::Call {
        what: what.to_string(),
        error: e.to_string(),
    }
}

impl Systemd {
    /// Connects according to `mode`: `None` when systemd is not to be used or not there.
    pub fn connect(mode: Mode) -> Result<Option<Systemd>, SystemdError> {
        if mode == Mode::No {
            return Ok(None);
        }
        let attempt = Connection::system()
            .map_err(|e| e.to_string())
            .and_then(|conn| {
                let manager = manager(&conn).map_err(|e| e.to_string())?;
                manager
                    .get_property::<String>("Version")
                    .map_err(|e| e.to_string())?;
                Ok(conn)
            });
        match (attempt, mode) {
            (Ok(conn), _) => Ok(Some(Systemd { conn })),
            (Err(e), Mode::Yes) => Err(SystemdError::Unavailable(e)),
            (Err(_), _) => Ok(None),
        }
    }

    /// Starts transient scope `name` holding `pids`; with `wait`, returns only once the first
    /// pid is in it. Waiting on /proc/PID/cgroup instead of subscribing to JobRemoved saves
    /// D-Bus round trips on every pod start.
    pub fn start_scope(
        &self,
        name: &str,
        description: &str,
        pids: &[u32],
        limits: &ScopeLimits,
        wait: bool,
    ) -> Result<(), SystemdError> {
        let what = format!("scope {name}");
        let manager = manager(&self.conn).map_err(call_err(&what))?;
        let mut props: Vec<(&str, Value)> = vec![
            ("Description", Value::from(description)),
            ("PIDs", Value::from(pids.to_vec())),
            ("Slice", Value::from("machine.slice")),
            ("Delegate", Value::from(true)),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        if let Some(m) = limits.memory {
            props.push(("MemoryMax", Value::from(m)));
        }
        if let Some(c) = limits.cpu_millis {
            // CPUQuota= in D-Bus form: microseconds of CPU time per second.
            props.push(("CPUQuotaPerSecUSec", Value::from(c * 1000)));
        }
        if let Some(t) = limits.tasks {
            props.push(("TasksMax", Value::from(t)));
        }
        let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
        let _job: OwnedObjectPath = manager
            .call("StartTransientUnit", &(name, "fail", props, aux))
            .map_err(call_err(&what))?;
        let Some(pid) = pids.first().filter(|_| wait) else {
            return Ok(());
        };
        if orbit_stage1::wait_in_cgroup(*pid, name, Duration::from_secs(10)) {
            return Ok(());
        }
        Err(SystemdError::Timeout(what))
    }

    /// Starts transient service `name` running `argv` (the pod: `orbit run-prepared UUID`),
    /// systemd-run style: KillMode=mixed (SIGTERM to the pod's supervisor, which stops the
    /// apps), Delegate=yes, in machine.slice, optionally restarted.
    pub fn start_service(
        &self,
        name: &str,
        description: &str,
        argv: &[String],
        opts: ServiceOptions,
    ) -> Result<(), SystemdError> {
        let what = format!("service {name}");
        let manager = manager(&self.conn).map_err(call_err(&what))?;
        let exec_start = vec![(argv[0].clone(), argv.to_vec(), false)];
        let mut props: Vec<(&str, Value)> = vec![
            ("Description", Value::from(description)),
            ("ExecStart", Value::from(exec_start)),
            // Type=notify: the pod's supervisor (the main process) relays the apps' READY=1.
            (
                "Type",
                Value::from(if opts.notify { "notify" } else { "simple" }),
            ),
            ("KillMode", Value::from("mixed")),
            ("Delegate", Value::from(true)),
            ("Slice", Value::from(opts.slice.unwrap_or("machine.slice"))),
            ("CollectMode", Value::from("inactive-or-failed")),
            // The pod's run knows it is this unit's main process (no nested scope).
            (
                "Environment",
                Value::from(vec![format!("{UNIT_ENV}={name}")]),
            ),
        ];
        if let Some(r) = opts.restart {
            props.push(("Restart", Value::from(r)));
        }
        let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
        let _job: OwnedObjectPath = manager
            .call("StartTransientUnit", &(name, "fail", props, aux))
            .map_err(call_err(&what))?;
        Ok(())
    }

    /// Stops unit `name` (StopUnit, mode replace); returns at once.
    pub fn stop_unit(&self, name: &str) -> Result<(), SystemdError> {
        let what = format!("stopping {name}");
        let manager = manager(&self.conn).map_err(call_err(&what))?;
        let _job: OwnedObjectPath = manager
            .call("StopUnit", &(name, "replace"))
            .map_err(call_err(&what))?;
        Ok(())
    }

    /// A unit's ActiveState (`active`, `inactive`, `failed`…), or `None` when it is gone.
    pub fn unit_state(&self, name: &str) -> Option<String> {
        let manager = manager(&self.conn).ok()?;
        let path: OwnedObjectPath = manager.call("GetUnit", &(name,)).ok()?;
        let unit = zbus::blocking::proxy::Builder::<Proxy>::new(&self.conn)
            .destination("org.freedesktop.systemd1")
            .ok()?
            .path(path)
            .ok()?
            .interface("org.freedesktop.systemd1.Unit")
            .ok()?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .ok()?;
        unit.get_property::<String>("ActiveState").ok()
    }

    /// Registers machine `name` (class container) with systemd-machined, led by `leader`.
    /// `Ok(false)` when machined is not running (that is not an error).
    pub fn register_machine(
        &self,
        name: &str,
        leader: u32,
        root: &Path,
    ) -> Result<bool, SystemdError> {
        let what = format!("machine {name}");
        let machined = proxy(
            &self.conn,
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
        )
        .map_err(call_err(&what))?;
        let id: Vec<u8> = Vec::new();
        let root = root.to_string_lossy().into_owned();
        match machined.call::<_, _, OwnedObjectPath>(
            "RegisterMachine",
            &(name, id, "orbit", "container", leader, root.as_str()),
        ) {
            Ok(_) => Ok(true),
            Err(zbus::Error::MethodError(n, _, _))
                if n.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
            {
                Ok(false)
            }
            Err(e) => Err(SystemdError::Call {
                what,
                error: e.to_string(),
            }),
        }
    }
}

fn manager(conn: &Connection) -> zbus::Result<Proxy<'static>> {
    proxy(
        conn,
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )
}

/// A proxy that does not cache properties: zbus would otherwise fetch all of them and add a
/// match rule on creation — round trips orbit run pays for on every pod start.
fn proxy(
    conn: &Connection,
    destination: &'static str,
    path: &'static str,
    interface: &'static str,
) -> zbus::Result<Proxy<'static>> {
    zbus::blocking::proxy::Builder::new(conn)
        .destination(destination)?
        .path(path)?
        .interface(interface)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
}

#[cfg(test)]
mod tests {
    use super::unix_socket_paths;
    use std::path::PathBuf;

    #[test]
    fn only_unix_path_addresses_are_socket_files() {
        assert_eq!(
            unix_socket_paths("unix:path=/run/dbus/system_bus_socket"),
            Some(vec![PathBuf::from("/run/dbus/system_bus_socket")])
        );
        assert_eq!(
            unix_socket_paths("unix:guid=ab,path=/a;unix:path=/b"),
            Some(vec![PathBuf::from("/a"), PathBuf::from("/b")])
        );
        assert_eq!(unix_socket_paths("unix:abstract=/tmp/x"), None);
        assert_eq!(unix_socket_paths("unix:path=/a;tcp:host=h,port=1"), None);
    }
}
