//! Forwarded connections (CRI PortForward into a kvm pod): the host asks for a connection to
//! a port on the VM's loopback; its bytes travel as agent messages both ways.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orbit_stage1::agent::{decode, encode, ToHost};

use crate::Port;

/// One open connection: its socket (for shutdowns) and the queue its writer thread takes
/// the host's bytes from (a port that does not read must not stall the agent).
struct Conn {
    socket: TcpStream,
    bytes: std::sync::mpsc::Sender<Vec<u8>>,
}

/// The open connections, by the host's id.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<HashMap<u64, Conn>>>);

impl Connections {
    /// Connects (on a thread of its own) and answers `Connected`; then relays what the port
    /// sends until it is done (`ConnClosed`).
    pub fn connect(&self, port_to_host: Port, id: u64, port: u16) {
        let conns = self.clone();
        std::thread::spawn(move || {
            let v4 = SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            let connected = TcpStream::connect_timeout(&v4, Duration::from_secs(10)).or_else(|e| {
                TcpStream::connect_timeout(&v6, Duration::from_secs(10)).map_err(|_| e)
            });
            let opened = connected.and_then(|s| Ok((s.try_clone()?, s.try_clone()?, s)));
            let mut stream = match opened {
                Ok((reader, mut writer, socket)) => {
                    let (bytes, rx) = std::sync::mpsc::channel::<Vec<u8>>();
                    std::thread::spawn(move || {
                        for b in rx {
                            if writer.write_all(&b).is_err() {
                                let _ = writer.shutdown(Shutdown::Both);
                                return;
                            }
                        }
                        // The host is done sending (or gone): half-close.
                        let _ = writer.shutdown(Shutdown::Write);
                    });
                    conns.0.lock().unwrap().insert(id, Conn { socket, bytes });
                    port_to_host.send(&ToHost::Connected { id, error: None });
                    reader
                }
                Err(e) => {
                    port_to_host.send(&ToHost::Connected {
                        id,
                        error: Some(format!("cannot connect to localhost:{port} in the VM: {e}")),
                    });
                    return;
                }
            };
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => port_to_host.send(&ToHost::ConnData {
                        id,
                        data: encode(&buf[..n]),
                    }),
                }
            }
            // The port is done sending; the host may still send until it closes.
            port_to_host.send(&ToHost::ConnClosed { id });
        });
    }

    /// Queues the host's bytes for connection `id`.
    pub fn write(&self, id: u64, data: &str) {
        let Some(bytes) = decode(data) else { return };
        if let Some(c) = self.0.lock().unwrap().get(&id) {
            let _ = c.bytes.send(bytes);
        }
    }

    /// The host is done sending on connection `id`: its writer half-closes once the queue
    /// is written.
    pub fn close(&self, id: u64) {
        self.0.lock().unwrap().remove(&id);
    }

    /// The host's client is gone: both directions of connection `id` end now.
    pub fn abort(&self, id: u64) {
        if let Some(c) = self.0.lock().unwrap().remove(&id) {
            let _ = c.socket.shutdown(Shutdown::Both);
        }
    }
}
