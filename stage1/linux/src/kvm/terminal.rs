//! `enter` into a kvm pod from a terminal or with input: this side's input goes to the
//! command in the guest as `ExecControl` lines on the control connection, and its terminal
//! is made raw (the guest's terminal does the line editing and echo) and its size followed.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};
use orbit_stage1::agent::{self, ExecControl};

/// This side's terminal made raw until dropped.
pub struct Raw {
    saved: Termios,
}

impl Raw {
    /// Makes the terminal on `fd` raw.
    pub fn new(fd: &impl AsFd) -> Result<Raw, String> {
        let saved = termios::tcgetattr(fd).map_err(|e| format!("cannot read the terminal: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)
            .map_err(|e| format!("cannot make the terminal raw: {e}"))?;
        Ok(Raw { saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// This terminal's size (columns, rows).
pub fn size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes the winsize struct we pass.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

fn send(to: &mut UnixStream, msg: &ExecControl) -> bool {
    to.write_all(&agent::line(msg)).is_ok()
}

/// Sends this process's input on `to` (and, on a terminal, its size now and whenever it
/// changes, looked at five times a second), then the end of the input.
pub fn spawn_input(to: UnixStream, tty: bool) {
    if tty {
        let mut sizes = match to.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        std::thread::spawn(move || {
            // The size at the start went with the request.
            let mut last = size();
            loop {
                let now = size();
                if let Some((cols, rows)) = now.filter(|_| now != last) {
                    if !send(&mut sizes, &ExecControl::Resize { cols, rows }) {
                        return;
                    }
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
    let mut to = to;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = agent::encode(&buf[..n]);
                    if !send(&mut to, &ExecControl::Input { data }) {
                        return;
                    }
                }
            }
        }
        let _ = send(&mut to, &ExecControl::Close);
    });
}
