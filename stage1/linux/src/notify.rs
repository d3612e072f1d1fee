//! sd_notify passthrough: when `orbit run` runs under a `Type=notify` unit (NOTIFY_SOCKET
//! set), the pod's apps get a notify socket of their own (`/run/orbit/notify.sock`, a bind of
//! `<pod>/notify.sock`), and the supervisor — the unit's main process — relays what they
//! send to systemd. `READY=1` is also recorded as the pod directory's `ready` file, which
//! `orbit status --wait-ready` honours.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Where apps find the socket.
pub const IN_APP: &str = "/run/orbit/notify.sock";
/// The socket in the pod directory.
pub const POD_FILE: &str = "notify.sock";
/// Written when an app said READY=1.
pub const READY_FILE: &str = "ready";

/// Set in the supervisor's environment when apps get a notify socket.
const ENABLED: &str = "ORBIT_NOTIFY";

/// True when the apps of this pod get a notify socket.
pub fn enabled() -> bool {
    std::env::var_os(ENABLED).is_some()
}

/// The environment entry that points an app at its notify socket.
pub fn app_environment() -> Vec<String> {
    if enabled() {
        vec![format!("NOTIFY_SOCKET={IN_APP}")]
    } else {
        Vec::new()
    }
}

/// The supervisor's relay.
pub struct Relay {
    listener: UnixDatagram,
    upstream: UnixDatagram,
}

/// Sets the relay up when systemd asked for notifications. Call before the pod's network
/// namespace exists: the upstream socket is connected here (an abstract NOTIFY_SOCKET lives
/// in the host's network namespace).
pub fn setup(pod: &Path) -> Result<Option<Relay>, String> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(None);
    };
    let target = target.to_string_lossy().into_owned();
    // Apps get their own socket; the host's must not leak into them.
    std::env::remove_var("NOTIFY_SOCKET");
    let upstream = UnixDatagram::unbound().map_err(|e| format!("notify socket: {e}"))?;
    let connected = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| upstream.connect_addr(&a))
        }
        None => upstream.connect(&target),
    };
    if let Err(e) = connected {
        // A stale NOTIFY_SOCKET (no unit waiting) must not keep the pod from starting.
        eprintln!("stage1: warning: ignoring NOTIFY_SOCKET {target}: {e}");
        return Ok(None);
    }
    let path = pod.join(POD_FILE);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixDatagram::bind(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // Apps may run as any user (or in a user namespace): anyone in the pod may notify.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    // Tells the app launchers (the init's children) to give apps the socket.
    std::env::set_var(ENABLED, "1");
    Ok(Some(Relay { listener, upstream }))
}

impl Relay {
    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Relays every pending notification; records readiness.
    pub fn relay(&self, pod: &Path) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.listener.recv(&mut buf) {
            let msg = &buf[..n];
            if msg.split(|b| *b == b'\n').any(|l| l == b"READY=1") {
                crate::util::write_file(pod, READY_FILE, &crate::util::now());
            }
            let _ = self.upstream.send(msg);
        }
    }
}
