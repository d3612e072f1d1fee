//! An attachable app's input in a running VM, as for `ns`: the FIFO `apps/NAME/stdin` that
//! attaching clients write, held open here so the app sees no end of input until
//! `stdin-close` (CRI `stdin_once`: the first attachment ended); what arrives is relayed to
//! the agent, which gives it to the app's stdin pipe or types it into its terminal.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use orbit_stage1::agent::{self, ToGuest};

use super::send;

/// The host's ends of an app's FIFO.
pub struct AppStdin {
    /// The read side, until the relay takes it (when the app has started).
    reader: Option<OwnedFd>,
    /// A write side held open: no end of input while it is (`close` lets go).
    keep: Option<OwnedFd>,
}

impl AppStdin {
    /// Makes (anew) the FIFO at `path` and opens both sides.
    pub fn open(path: &Path) -> Result<AppStdin, String> {
        crate::init::make_stdin_fifo(path)?;
        let err = |e| format!("cannot open {}: {e}", path.display());
        // Non-blocking, or the open would wait for a writer; then blocking for the relay.
        let reader = open(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        fcntl(&reader, FcntlArg::F_SETFL(OFlag::empty())).map_err(err)?;
        // A reader is there: this open does not wait.
        let keep = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(err)?;
        Ok(AppStdin {
            reader: Some(reader),
            keep: Some(keep),
        })
    }

    /// Relays what arrives to `app` in the VM (once: the app has started and the agent has
    /// its input), and its end — every writer gone, this one let go — as the end of the
    /// app's input.
    pub fn relay(&mut self, app: &str, writer: Arc<Mutex<UnixStream>>) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let app = app.to_string();
        std::thread::spawn(move || {
            let mut fifo = std::fs::File::from(reader);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match fifo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => send(
                        &writer,
                        &ToGuest::AppInput {
                            app: app.clone(),
                            data: agent::encode(&buf[..n]),
                        },
                    ),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            send(&writer, &ToGuest::AppCloseInput { app });
        });
    }

    /// Lets go of the input: the app's ends once the attached clients are gone.
    pub fn close(&mut self) {
        self.keep = None;
    }
}
