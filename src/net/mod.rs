//! Pod networking, done by stage0 for every flavor: a network namespace pinned in the pod
//! directory, CNI networks attached to it before the stage1 starts, and detached again when
//! the pod exits (the stage1's exit hook), fails to start, or is collected by `orbit gc`.

pub mod attach;
pub mod cni;
pub mod conf;
pub mod dns;
mod error;
pub mod firewall;
pub mod nat;
pub mod netns;
pub mod nft;
pub mod ports;

pub use attach::{attach, detach, is_attached, plan, NetPlan};
pub use error::NetError;

/// Takes an exclusive `flock` on `path` (made, with its directory, if missing), waiting for
/// it; held until the returned value drops.
fn lock_file(path: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, NetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NetError::io("cannot create", dir, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| NetError::io("cannot open", path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| NetError::io("cannot lock", path, e.into()))
}

/// The hidden `orbit` subcommand a stage1 runs when the pod has exited (the pod's
/// `on-exit` hook): detaches the pod in the working directory from its networks.
pub const TEARDOWN: &str = "__net-teardown";

/// `orbit __net-teardown`: detaches the pod in the working directory (run by the stage1
/// with the pod directory as cwd, while it still holds the pod's lock). What fails stays
/// recorded for `orbit gc`.
pub fn teardown_helper() -> i32 {
    let result = std::env::current_dir()
        .map_err(|e| e.to_string())
        .and_then(|pod| detach(&pod).map_err(|e| e.to_string()));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("orbit: warning: network teardown: {e} (`orbit gc` retries)");
            1
        }
    }
}
