//! An exec's pseudo-terminal: opened close-on-exec, its master side non-blocking.

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::AsyncRead;

/// The master side of an exec's terminal, non-blocking: dropping the last handle closes
/// it at once, which hangs up the command's session (SIGHUP) — as closing a terminal
/// window does. (A blocking file would stay open inside a pending read.)
#[derive(Clone)]
pub struct PtyMaster(std::sync::Arc<tokio::io::unix::AsyncFd<OwnedFd>>);

impl PtyMaster {
    /// Takes a terminal's master side (made non-blocking).
    pub fn new(fd: OwnedFd) -> std::io::Result<PtyMaster> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: an OwnedFd is a valid open descriptor that the AsyncFd owns from here on
        // and that always reports that same descriptor.
        let afd = unsafe { tokio::io::unix::AsyncFd::register(fd) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(PtyMaster(std::sync::Arc::new(afd)))
    }

    /// The session the terminal controls (its command's, which made one of its own), if any.
    pub fn session(&self) -> Option<nix::unistd::Pid> {
        nix::sys::termios::tcgetsid(self.0.get_ref()).ok()
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for PtyMaster {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            let mut guard = match self.0.poll_write_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// A terminal has no half-close: end of input is the terminal's EOF character.
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_write(cx, &[4]).map_ok(drop)
    }
}

/// Sets the terminal's size.
pub fn set_window(master: &PtyMaster, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the valid winsize struct; `master` is an open pty master.
    unsafe { libc::ioctl(master.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// A new terminal, both sides close-on-exec from the start: a process another thread
/// spawns meanwhile (another exec, a sandbox) must not inherit either.
pub fn open_terminal() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok((OwnedFd::from(master), slave))
}
