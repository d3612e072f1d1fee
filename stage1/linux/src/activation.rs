//! Socket activation passthrough: sockets a systemd `.socket` unit handed to `orbit run`
//! (fds 3.., announced by `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`) go to the pod's first
//! app, which sees them at fds 3.. with `LISTEN_PID` naming itself, as sd_listen_fds(3)
//! expects. The supervisor validates the announcement (it must name the supervisor's own
//! pid: orbit run exec'd into it) and leaves a checked count for the app launcher.

/// The environment variable the supervisor leaves for the launcher (a validated count).
const CHECKED: &str = "ORBIT_LISTEN_FDS";

/// In the supervisor: accepts the activation fds if they were meant for this process.
pub fn accept_from_systemd() {
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 0);
    let meant_for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    // SAFETY: the supervisor is single-threaded here; nothing else reads the environment.
    match (count, meant_for_us) {
        (Some(n), true) => std::env::set_var(CHECKED, n.to_string()),
        _ => std::env::remove_var(CHECKED),
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
}

/// In the first app's launcher: the environment entries that announce the fds to the app.
pub fn app_environment(first_app: bool) -> Vec<String> {
    let Some(n) = std::env::var(CHECKED).ok().filter(|_| first_app) else {
        return Vec::new();
    };
    let mut env = vec![
        format!("LISTEN_FDS={n}"),
        format!("LISTEN_PID={}", std::process::id()),
    ];
    if let Ok(names) = std::env::var("LISTEN_FDNAMES") {
        env.push(format!("LISTEN_FDNAMES={names}"));
    }
    env
}

/// In any other app's launcher: closes the activation fds, which belong to the first app.
pub fn close_unless_first(first_app: bool) {
    let n: i32 = std::env::var(CHECKED)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !first_app {
        for fd in 3..3 + n {
            // SAFETY: closing an inherited activation fd this process will never use.
            unsafe { libc::close(fd) };
        }
    }
}
