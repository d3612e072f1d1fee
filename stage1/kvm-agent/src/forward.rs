//! Forwarded connections (CRI PortForward into a kvm pod): the host asks for a connection to
//! a port on the VM's loopback; its bytes travel as agent messages both ways.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orbit_stage1::agent::{decode, encode, ToHost};

use crate::Port;

/// The open connections, by the host's id.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<HashMap<u64, TcpStream>>>);

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
            let mut stream = match connected.and_then(|s| Ok((s.try_clone()?, s))) {
                Ok((reader, writer)) => {
                    conns.0.lock().unwrap().insert(id, writer);
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
            port_to_host.send(&ToHost::ConnClosed { id });
            conns.0.lock().unwrap().remove(&id);
        });
    }

    /// Writes the host's bytes to connection `id`.
    pub fn write(&self, id: u64, data: &str) {
        let Some(bytes) = decode(data) else { return };
        let stream = self
            .0
            .lock()
            .unwrap()
            .get(&id)
            .and_then(|s| s.try_clone().ok());
        if let Some(mut s) = stream {
            if s.write_all(&bytes).is_err() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// The host is done sending on connection `id`.
    pub fn close(&self, id: u64) {
        if let Some(s) = self.0.lock().unwrap().get(&id) {
            let _ = s.shutdown(Shutdown::Write);
        }
    }
}
