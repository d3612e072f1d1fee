//! The pod's /etc/resolv.conf and /etc/hosts from `--dns`, `--dns-search`, `--dns-opt`,
//! `--dns-domain` and `--hosts-entry`.

use std::net::IpAddr;

use super::NetError;

/// What the user asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsRequest {
    /// `--dns`: nameserver IPs, or one of `host`, `none`.
    pub servers: Vec<String>,
    /// `--dns-search`.
    pub search: Vec<String>,
    /// `--dns-opt`.
    pub options: Vec<String>,
    /// `--dns-domain`.
    pub domain: Option<String>,
    /// `--hosts-entry`: `IP=HOSTNAME[,ALIAS…]` or `host`.
    pub hosts_entries: Vec<String>,
}

const HOST_RESOLV: &str = "/etc/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Checks the request before anything is made.
pub fn validate(req: &DnsRequest) -> Result<(), NetError> {
    let special = req.servers.iter().any(|s| s == "host" || s == "none");
    if special && req.servers.len() > 1 {
        return Err(NetError::BadSpec(
            "--dns=host and --dns=none cannot be combined with other --dns values".into(),
        ));
    }
    if req.servers.iter().any(|s| s == "none")
        && (!req.search.is_empty() || !req.options.is_empty() || req.domain.is_some())
    {
        return Err(NetError::BadSpec(
            "--dns=none writes no resolv.conf: drop --dns-search, --dns-opt and --dns-domain"
                .into(),
        ));
    }
    for s in req.servers.iter().filter(|s| *s != "host" && *s != "none") {
        s.parse::<IpAddr>().map_err(|_| {
            NetError::BadSpec(format!("--dns={s}: not an IP address (or 'host' / 'none')"))
        })?;
    }
    for d in req.search.iter().chain(&req.domain) {
        if !valid_hostname(d) {
            return Err(NetError::BadSpec(format!("'{d}' is not a domain name")));
        }
    }
    for o in &req.options {
        if o.is_empty() || o.chars().any(|c| c.is_whitespace()) {
            return Err(NetError::BadSpec(format!(
                "--dns-opt='{o}': one option per flag, without spaces (e.g. ndots:2)"
            )));
        }
    }
    for e in &req.hosts_entries {
        if e == "host" {
            continue;
        }
        let (ip, names) = e.split_once('=').ok_or_else(|| {
            NetError::BadSpec(format!("--hosts-entry={e}: use IP=HOSTNAME or 'host'"))
        })?;
        ip.parse::<IpAddr>().map_err(|_| {
            NetError::BadSpec(format!("--hosts-entry={e}: '{ip}' is not an IP address"))
        })?;
        if !names.split(',').all(valid_hostname) {
            return Err(NetError::BadSpec(format!(
                "--hosts-entry={e}: '{names}' is not a host name"
            )));
        }
    }
    Ok(())
}

/// The pod's resolv.conf, or `None` for `--dns=none` (the image's own stays). Without
/// `--dns` a pod with its own network gets the host's servers minus loopback ones (they
/// cannot be reached from the pod), a host-network pod the host's file as is.
pub fn resolv_conf(req: &DnsRequest, own_network: bool, has_routes: bool) -> Option<String> {
    let host = || std::fs::read_to_string(HOST_RESOLV).unwrap_or_default();
    let mut out = match req.servers.first().map(String::as_str) {
        Some("none") => return None,
        Some("host") => host(),
        Some(_) => req
            .servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect(),
        None if !own_network => host(),
        None if !has_routes => String::new(),
        None => host()
            .lines()
            .filter(|l| {
                let mut w = l.split_whitespace();
                !(w.next() == Some("nameserver")
                    && w.next()
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback()))
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    if let Some(d) = &req.domain {
        out.push_str(&format!("domain {d}\n"));
    }
    if !req.search.is_empty() {
        out.push_str(&format!("search {}\n", req.search.join(" ")));
    }
    if !req.options.is_empty() {
        out.push_str(&format!("options {}\n", req.options.join(" ")));
    }
    Some(out)
}

/// The pod's /etc/hosts: localhost, the pod's own name (on `address`), the host's file for
/// `--hosts-entry=host`, and the user's entries.
pub fn hosts(req: &DnsRequest, hostname: &str, address: &str) -> String {
    let mut out = String::new();
    if req.hosts_entries.iter().any(|e| e == "host") {
        out.push_str(&std::fs::read_to_string(HOST_HOSTS).unwrap_or_default());
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    out.push_str(&format!("{address}\t{hostname}\n"));
    for e in req.hosts_entries.iter().filter(|e| *e != "host") {
        if let Some((ip, names)) = e.split_once('=') {
            out.push_str(&format!("{ip}\t{}\n", names.replace(',', " ")));
        }
    }
    out
}

/// The address a pod's own name resolves to before its network is up.
pub const UNATTACHED_ADDRESS: &str = "127.0.1.1";

/// Points the pod's own name at its network address once it is known.
pub fn with_address(hosts: &str, hostname: &str, address: &str) -> String {
    let old = format!("{UNATTACHED_ADDRESS}\t{hostname}\n");
    hosts.replacen(&old, &format!("{address}\t{hostname}\n"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> DnsRequest {
        DnsRequest::default()
    }

    #[test]
    fn explicit_servers_search_options_and_domain() {
        let r = DnsRequest {
            servers: vec!["10.0.0.53".into(), "fd00::53".into()],
            search: vec!["a.example".into(), "b.example".into()],
            options: vec!["ndots:2".into(), "rotate".into()],
            domain: Some("a.example".into()),
            ..req()
        };
        validate(&r).unwrap();
        assert_eq!(
            resolv_conf(&r, true, true).unwrap(),
            "nameserver 10.0.0.53\nnameserver fd00::53\ndomain a.example\nsearch a.example b.example\noptions ndots:2 rotate\n"
        );
    }

    #[test]
    fn none_writes_nothing_and_refuses_extras() {
        let r = DnsRequest {
            servers: vec!["none".into()],
            ..req()
        };
        assert_eq!(resolv_conf(&r, true, true), None);
        let r = DnsRequest {
            servers: vec!["none".into()],
            search: vec!["x".into()],
            ..req()
        };
        assert!(validate(&r).is_err());
        let r = DnsRequest {
            servers: vec!["host".into(), "1.1.1.1".into()],
            ..req()
        };
        assert!(validate(&r).is_err());
    }

    #[test]
    fn bad_values_are_named() {
        let r = DnsRequest {
            servers: vec!["dns.example".into()],
            ..req()
        };
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .contains("--dns=dns.example"));
        let r = DnsRequest {
            hosts_entries: vec!["1.2.3.4=bad name".into()],
            ..req()
        };
        assert!(validate(&r).is_err());
        let r = DnsRequest {
            hosts_entries: vec!["nothing".into()],
            ..req()
        };
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .contains("IP=HOSTNAME"));
    }

    #[test]
    fn hosts_has_localhost_the_pod_and_the_entries() {
        let r = DnsRequest {
            hosts_entries: vec!["10.1.2.3=db.local,db".into()],
            ..req()
        };
        validate(&r).unwrap();
        let h = hosts(&r, "mypod", UNATTACHED_ADDRESS);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.1.1\tmypod\n"));
        assert!(h.ends_with("10.1.2.3\tdb.local db\n"));
        let h = with_address(&h, "mypod", "172.16.28.7");
        assert!(h.contains("172.16.28.7\tmypod\n") && !h.contains("127.0.1.1"));
    }
}
