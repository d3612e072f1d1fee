//! Port forwarding requests (`--port`): parsing against the image's named ports, and
//! making sure a host port is free (for other pods and for the host's own programs)
//! before the portmap plugin, or orbit's own nftables rules where there is no iptables
//! (see `firewall`, `nft`), forward it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use nix::fcntl::Flock;
use serde_json::{json, Value};

use orbit_stage1::{paths, PodManifest, PortMapping};

use super::NetError;

/// A port an image offers: its name (a label `orbit.dev/port.<name>=<port>/<proto>`, or
/// the port number of an `ExposedPorts` entry), number and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePort {
    /// How `--port` may name it.
    pub name: String,
    /// The port in the pod.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// The label prefix that names an image's ports.
pub const PORT_LABEL_PREFIX: &str = "orbit.dev/port.";

const PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];

/// Parses `PORT/PROTO` (protocol defaults to tcp).
pub fn parse_port_proto(s: &str) -> Option<(u16, String)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    Some((port.parse().ok().filter(|p| *p > 0)?, proto))
        .filter(|(_, p)| PROTOCOLS.contains(&p.as_str()))
}

/// The ports an image config names: labels first, then exposed ports by number.
pub fn image_ports(labels: &[(String, String)], exposed: &[String]) -> Vec<ImagePort> {
    let mut out: Vec<ImagePort> = labels
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(PORT_LABEL_PREFIX)?;
            let (port, protocol) = parse_port_proto(v)?;
            Some(ImagePort {
                name: name.to_string(),
                port,
                protocol,
            })
        })
        .collect();
    for e in exposed {
        if let Some((port, protocol)) = parse_port_proto(e) {
            out.push(ImagePort {
                name: port.to_string(),
                port,
                protocol,
            });
        }
    }
    out
}

/// Parses `--port=NAME:HOSTPORT[:HOSTIP]` (NAME one of `offered`) or
/// `--port=PROTO:CONTAINERPORT:HOSTPORT[:HOSTIP]`.
pub fn parse(spec: &str, offered: &[ImagePort]) -> Result<PortMapping, NetError> {
    let bad = |why: &str| NetError::BadSpec(format!("--port={spec}: {why}"));
    let host_port = |s: &str| -> Result<u16, NetError> {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("'{s}' is not a port number (1-65535)")))
    };
    let host_ip = |s: Option<&str>| -> Result<Option<String>, NetError> {
        match s {
            None | Some("") => Ok(None),
            Some(ip) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                ip.parse::<IpAddr>()
                    .map(|a| Some(a.to_string()))
                    .map_err(|_| bad(&format!("'{ip}' is not an IP address")))
            }
        }
    };
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    if parts.len() >= 3 && PROTOCOLS.contains(&parts[0].to_ascii_lowercase().as_str()) {
        let container_port = host_port(parts[1])?;
        return Ok(PortMapping {
            name: None,
            protocol: parts[0].to_ascii_lowercase(),
            container_port,
            host_port: host_port(parts[2])?,
            host_ip: host_ip(parts.get(3).copied())?,
        });
    }
    let parts: Vec<&str> = spec.splitn(3, ':').collect();
    if parts.len() < 2 {
        return Err(bad(
            "use NAME:HOSTPORT[:HOSTIP] or PROTO:CONTAINERPORT:HOSTPORT[:HOSTIP]",
        ));
    }
    let port = offered.iter().find(|p| p.name == parts[0]).ok_or_else(|| {
        let names: Vec<&str> = offered.iter().map(|p| p.name.as_str()).collect();
        bad(&format!(
            "the image has no port named '{}' (it offers: {}); or give PROTO:CONTAINERPORT:HOSTPORT",
            parts[0],
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        ))
    })?;
    Ok(PortMapping {
        name: Some(port.name.clone()),
        protocol: port.protocol.clone(),
        container_port: port.port,
        host_port: host_port(parts[1])?,
        host_ip: host_ip(parts.get(2).copied())?,
    })
}

/// The portmap plugin's `runtimeConfig.portMappings`.
pub fn runtime_config(maps: &[PortMapping]) -> Value {
    Value::Array(
        maps.iter()
            .map(|m| {
                let mut v = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol,
                });
                if let Some(ip) = &m.host_ip {
                    v["hostIP"] = json!(ip);
                }
                v
            })
            .collect(),
    )
}

/// The store-wide lock under which host ports are claimed.
pub fn lock(store: &Path) -> Result<Flock<std::fs::File>, NetError> {
    super::lock_file(&store.join("net").join("ports.lock"))
}

fn overlaps(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
}

fn describe(m: &PortMapping) -> String {
    format!(
        "{}:{}/{}",
        m.host_ip.as_deref().unwrap_or("*"),
        m.host_port,
        m.protocol
    )
}

/// Fails when a requested host port is asked twice, forwarded to another attached pod, or
/// in use by a program on the host.
pub fn check_free(store: &Path, uuid: &str, maps: &[PortMapping]) -> Result<(), NetError> {
    for (i, m) in maps.iter().enumerate() {
        if maps[..i].iter().any(|o| overlaps(o, m)) {
            return Err(NetError::PortTaken {
                port: describe(m),
                detail: "it is asked for twice".into(),
            });
        }
    }
    for state in ["run", "exited-garbage"] {
        let dir = store.join("pods").join(state);
        for pod in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = pod.path();
            if pod.file_name().to_string_lossy() == uuid
                || !path.join(super::attach::RECORDS_DIR).exists()
            {
                continue;
            }
            let Ok(text) = std::fs::read(path.join(paths::POD_MANIFEST)) else {
                continue;
            };
            let Ok(other) = serde_json::from_slice::<PodManifest>(&text) else {
                continue;
            };
            if let Some(m) = maps
                .iter()
                .find(|m| other.network.ports.iter().any(|o| overlaps(o, m)))
            {
                return Err(NetError::PortTaken {
                    port: describe(m),
                    detail: format!("pod {} already forwards it", other.uuid),
                });
            }
        }
    }
    for m in maps {
        let ip: IpAddr = m
            .host_ip
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, m.host_port);
        let probe = match m.protocol.as_str() {
            "tcp" => TcpListener::bind(addr).map(drop),
            "udp" => UdpSocket::bind(addr).map(drop),
            _ => Ok(()),
        };
        match probe {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(NetError::PortTaken {
                    port: describe(m),
                    detail: "a program on the host is already using it".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(NetError::BadSpec(format!(
                    "--port {}: {ip} is not an address of this host",
                    describe(m)
                )))
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> Vec<ImagePort> {
        image_ports(
            &[("orbit.dev/port.http".into(), "80/tcp".into())],
            &["53/udp".into()],
        )
    }

    #[test]
    fn named_ports_come_from_labels_and_exposed_numbers() {
        let m = parse("http:8080", &offered()).unwrap();
        assert_eq!(
            (m.container_port, m.host_port, m.protocol.as_str()),
            (80, 8080, "tcp")
        );
        assert_eq!(m.name.as_deref(), Some("http"));
        let m = parse("53:5353:127.0.0.1", &offered()).unwrap();
        assert_eq!((m.container_port, m.protocol.as_str()), (53, "udp"));
        assert_eq!(m.host_ip.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn protocol_form_needs_no_names() {
        let m = parse("udp:5000:6000", &[]).unwrap();
        assert_eq!(
            (m.container_port, m.host_port, m.protocol.as_str()),
            (5000, 6000, "udp")
        );
        let m = parse("tcp:80:8080:10.0.0.1", &[]).unwrap();
        assert_eq!(m.host_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = parse("ftp:21", &offered()).unwrap_err().to_string();
        assert!(
            e.contains("no port named 'ftp'") && e.contains("http, 53"),
            "{e}"
        );
        assert!(parse("http:0", &offered())
            .unwrap_err()
            .to_string()
            .contains("not a port number"));
        assert!(parse("http", &offered()).is_err());
        assert!(parse("tcp:80:99999", &[]).is_err());
        assert!(parse("http:80:nothost", &offered())
            .unwrap_err()
            .to_string()
            .contains("not an IP"));
    }

    #[test]
    fn the_same_host_port_twice_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let a = parse("tcp:80:18080", &[]).unwrap();
        let b = parse("tcp:81:18080:127.0.0.1", &[]).unwrap();
        let e = check_free(t.path(), "u", &[a, b]).unwrap_err().to_string();
        assert!(e.contains("asked for twice"), "{e}");
    }

    #[test]
    fn a_host_port_in_use_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = tempfile::tempdir().unwrap();
        let m = parse(&format!("tcp:80:{port}:127.0.0.1"), &[]).unwrap();
        let e = check_free(t.path(), "u", &[m]).unwrap_err().to_string();
        assert!(e.contains("already using it"), "{e}");
    }
}
