//! `orbit-kvm-agent`: PID 1 of a `kvm` pod's microVM. It mounts the kernel filesystems,
//! loads the virtio modules shipped in the initramfs, mounts the pod directory shared by
//! the host (9p), configures the network the host moved into the VM, runs the apps in
//! their roots with their identity, environment, volumes and memory limits, streams their
//! output and exit status to the host over a virtio-serial port, runs `exec` requests
//! (`orbit enter`), relays an attachable app's input and terminal size, starts and removes apps of a mutable pod (a CRI sandbox) on request,
//! and powers the VM off when the last app has exited (a mutable pod: once stopped).

mod apps;
mod forward;
mod setup;
mod spawn;

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

use apps::InputOf;
use orbit_stage1::agent::{line, AgentConfig, ToGuest, ToHost};

/// The port to the host, shared by every thread that reports.
#[derive(Clone)]
pub struct Port(Arc<Mutex<std::fs::File>>);

impl Port {
    /// Sends one message (one write of one line).
    pub fn send(&self, msg: &ToHost) {
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(&line(msg));
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(spawn::ARG) {
        spawn::helper();
    }
    if std::process::id() != 1 {
        eprintln!("orbit-kvm-agent: runs only as PID 1 of a kvm pod's VM");
        std::process::exit(2);
    }
    if let Err(e) = run() {
        eprintln!("orbit-kvm-agent: {e}");
    }
    setup::power_off();
}

fn run() -> Result<(), String> {
    setup::kernel_filesystems()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline
        .split_whitespace()
        .any(|w| w == orbit_stage1::agent::PROBE_ARG)
    {
        println!("{}", orbit_stage1::agent::PROBE_MARKER);
        return Ok(());
    }
    setup::load_modules(
        cmdline
            .split_whitespace()
            .any(|w| w == orbit_stage1::agent::NET_ARG),
    )?;
    let port_path = setup::find_port()?;
    let port_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port_path)
        .map_err(|e| format!("cannot open {}: {e}", port_path.display()))?;
    let reader = port_file
        .try_clone()
        .map_err(|e| format!("cannot dup the port: {e}"))?;
    let port = Port(Arc::new(Mutex::new(port_file)));
    setup::mount_pod()?;
    let config_path =
        std::path::Path::new(orbit_stage1::agent::POD_MOUNT).join(orbit_stage1::agent::CONFIG_FILE);
    let config: AgentConfig = serde_json::from_slice(
        &std::fs::read(&config_path)
            .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?,
    )
    .map_err(|e| format!("bad {}: {e}", config_path.display()))?;
    setup::shares(&config)?;
    setup::network(&config)?;
    setup::sysctls(&config)?;
    let _ = nix::unistd::sethostname(&config.hostname);
    port.send(&ToHost::Ready);
    let sup = apps::Supervisor::new(port.clone(), config);
    // Requests from the host, on a thread of their own.
    let s = sup.clone();
    let conns = forward::Connections::default();
    let to_host = port.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(reader).lines() {
            let Ok(l) = l else { break };
            match serde_json::from_slice::<ToGuest>(l.as_bytes()) {
                Ok(ToGuest::Stop) => s.signal_apps(nix::sys::signal::Signal::SIGTERM),
                Ok(ToGuest::Kill) => s.signal_apps(nix::sys::signal::Signal::SIGKILL),
                Ok(ToGuest::Exec {
                    id,
                    app,
                    argv,
                    stdin,
                    tty,
                    size,
                }) => s.exec(id, &app, &argv, stdin, tty.then_some(size)),
                Ok(ToGuest::ExecInput { id, data }) => s.input(&InputOf::Exec(id), &data),
                Ok(ToGuest::ExecCloseInput { id }) => s.close_input(&InputOf::Exec(id)),
                Ok(ToGuest::ExecResize { id, cols, rows }) => {
                    s.resize(&InputOf::Exec(id), cols, rows)
                }
                Ok(ToGuest::ExecKill { id }) => s.exec_kill(id),
                Ok(ToGuest::AppInput { app, data }) => s.input(&InputOf::App(app), &data),
                Ok(ToGuest::AppCloseInput { app }) => s.close_input(&InputOf::App(app)),
                Ok(ToGuest::AppResize { app, cols, rows }) => {
                    s.resize(&InputOf::App(app), cols, rows)
                }
                Ok(ToGuest::StartApp { app }) => {
                    let s = s.clone();
                    std::thread::spawn(move || s.start_app(*app));
                }
                Ok(ToGuest::StopApp { app, signal }) => s.signal_app(&app, signal),
                Ok(ToGuest::RemoveApp { app }) => s.remove_app(&app),
                Ok(ToGuest::Usage) => s.report_usage(),
                Ok(ToGuest::Connect { id, port }) => conns.connect(to_host.clone(), id, port),
                Ok(ToGuest::ConnData { id, data }) => conns.write(id, &data),
                Ok(ToGuest::ConnClose { id }) => conns.close(id),
                Ok(ToGuest::ConnAbort { id }) => conns.abort(id),
                Err(_) => {}
            }
        }
    });
    sup.start_apps();
    sup.reap_until_done();
    port.send(&ToHost::Done);
    nix::unistd::sync();
    Ok(())
}
