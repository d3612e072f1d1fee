//! orbit's own nftables table, `table inet orbit`: the built-in networks' masquerade and
//! forwarding rules (one set per network, like the iptables ones in `nat`) and, where no
//! iptables binary runs the portmap plugin, the pods' port forwards (per pod).
//!
//! ```text
//! table inet orbit {
//!   chain forward     { type filter hook forward priority filter; }  per network: accepts
//!   chain postrouting { type nat hook postrouting priority srcnat; } per network: masquerade
//!                                                                    per pod: hairpin/localhost masquerade
//!   chain prerouting  { type nat hook prerouting priority dstnat; }  fib daddr type local jump hostports
//!   chain output      { type nat hook output priority -100; }        fib daddr type local jump hostports
//!   chain hostports   { }                                            per pod: DNAT
//!   chain input       { type filter hook input priority filter; }    per bridge: route_localnet guard
//! }
//! ```
//!
//! Family `inet`: one table for both address families that `orbit gc` and an administrator
//! find under one name (`nft list table inet orbit`); NAT in `inet` tables needs Linux 5.2
//! (Debian 11 has 5.10). The rules themselves are IPv4, like orbit's built-in networks.
//!
//! Every rule carries a comment saying whose it is: `orbit network NAME SUBNET` (per
//! network, kept when the last pod goes, as docker keeps its bridge rules),
//! `orbit hostports` / `orbit localnet guard BRIDGE` (the port forwarding plumbing, kept
//! too), and
//! `orbit pod UUID store TAG` (per pod, removed when the pod is detached, or by `orbit gc`
//! when its pod is gone; TAG names the pod store, so a gc of one store never takes another
//! store's pods' rules).
//!
//! A pod start lists the table once (`nft -j list table inet orbit`, a few milliseconds)
//! and writes only what is missing, in one atomic `nft -f -` batch, under a lock so that two
//! starts never add the same per-network rules twice.
//!
//! Runs the `nft` binary (JSON output for reading, its own syntax for writing) rather than
//! a netlink crate: `rustables` is GPL-3.0 (orbit is Apache-2.0), `nftnl` binds the C
//! libnftnl (a build and run dependency) and has every expression spelled by hand, and the
//! `nftables` crate runs this same binary with a typed schema that a handful of rules do
//! not need.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::Flock;
use serde_json::Value;

use orbit_stage1::PortMapping;

use super::NetError;

/// The table's family.
pub const FAMILY: &str = "inet";
/// The table's name.
pub const TABLE: &str = "orbit";

/// The comment of the jumps into `hostports`.
const HOSTPORTS_TAG: &str = "orbit hostports";
/// The comment of the input guard that keeps `route_localnet` on a bridge from opening the
/// host's 127.0.0.0/8 to it (followed by the bridge's name).
const GUARD_TAG: &str = "orbit localnet guard";
/// Where the lock serialising additions lives (host-wide: every network namespace's
/// additions take it, which costs only when something is missing).
const LOCK_FILE: &str = "/run/orbit/nftables.lock";

/// A rule of orbit's table, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    /// Its chain.
    pub chain: String,
    /// Its handle (what `delete rule` takes).
    pub handle: u64,
    /// Its comment (empty when none).
    pub comment: String,
}

/// orbit's table as `nft -j list table` showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The chains' names.
    pub chains: Vec<String>,
    /// The rules.
    pub rules: Vec<ListedRule>,
}

impl Listing {
    fn count(&self, chain: &str, comment: &str) -> usize {
        self.rules
            .iter()
            .filter(|r| r.chain == chain && r.comment == comment)
            .count()
    }

    /// `delete rule` lines for every rule whose comment `matches`.
    fn deletions(&self, matches: impl Fn(&str) -> bool) -> String {
        self.rules
            .iter()
            .filter(|r| matches(&r.comment))
            .map(|r| {
                format!(
                    "delete rule {FAMILY} {TABLE} {} handle {}\n",
                    r.chain, r.handle
                )
            })
            .collect()
    }
}

/// What trying `nft` found.
#[derive(Debug)]
pub enum Probe {
    /// No `nft` binary.
    Absent,
    /// `nft` runs but cannot list (no nf_tables in the kernel, no permission, …).
    Broken(String),
    /// `nft` works; orbit's table as listed (`None`: there is none yet).
    Works(Option<Listing>),
}

fn nft() -> Command {
    let mut c = Command::new("nft");
    // Its messages are matched below ("No such file or directory").
    c.env("LC_ALL", "C");
    c
}

/// Lists orbit's table: the one `nft` call a pod start makes when nothing is missing.
pub fn probe() -> Probe {
    let out = match nft().args(["-j", "list", "table", FAMILY, TABLE]).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Absent,
        Err(e) => return Probe::Broken(format!("cannot run nft: {e}")),
    };
    if out.status.success() {
        return match parse(&out.stdout) {
            Ok(listing) => Probe::Works(Some(listing)),
            Err(e) => Probe::Broken(e),
        };
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        Probe::Works(None)
    } else {
        Probe::Broken(format!(
            "nft list table {FAMILY} {TABLE}: {}",
            first_line(&err)
        ))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn fail(detail: String) -> NetError {
    NetError::Firewall {
        tool: "nft".into(),
        detail,
    }
}

/// Lists orbit's table (`None`: there is none), failing when `nft` does not work.
pub fn list() -> Result<Option<Listing>, NetError> {
    match probe() {
        Probe::Works(listing) => Ok(listing),
        Probe::Absent => Err(fail("no nft binary; install nftables".into())),
        Probe::Broken(e) => Err(fail(e)),
    }
}

/// Reads the chains and rules of orbit's table out of `nft -j list table` output.
fn parse(json: &[u8]) -> Result<Listing, String> {
    let v: Value = serde_json::from_slice(json)
        .map_err(|e| format!("nft -j printed something that is not JSON: {e}"))?;
    let items = v["nftables"]
        .as_array()
        .ok_or("nft -j printed no \"nftables\" list")?;
    let mut listing = Listing::default();
    for item in items {
        if let Some(chain) = item.get("chain") {
            if let Some(name) = chain["name"].as_str() {
                listing.chains.push(name.to_string());
            }
        } else if let Some(rule) = item.get("rule") {
            let (Some(chain), Some(handle)) = (rule["chain"].as_str(), rule["handle"].as_u64())
            else {
                continue;
            };
            listing.rules.push(ListedRule {
                chain: chain.to_string(),
                handle,
                comment: rule["comment"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    Ok(listing)
}

/// Runs an `nft -f -` batch: all of it or nothing.
fn apply(script: &str) -> Result<(), NetError> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                "no nft binary; install nftables".into()
            } else {
                format!("cannot run nft: {e}")
            })
        })?;
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "nft -f: {} (batch:\n{script})",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    written.map_err(|e| fail(format!("cannot write to nft: {e}")))
}

/// Takes the lock under which rules that must exist once are added.
fn lock() -> Result<Flock<std::fs::File>, NetError> {
    super::lock_file(Path::new(LOCK_FILE))
}

/// The table and its two always-present base chains (`add` of an existing one is a no-op).
fn base() -> String {
    format!(
        "add table {FAMILY} {TABLE}\n\
         add chain {FAMILY} {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n\
         add chain {FAMILY} {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    )
}

/// The port forwarding chains, without rules.
fn port_chains() -> String {
    format!(
        "add chain {FAMILY} {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain {FAMILY} {TABLE} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain {FAMILY} {TABLE} hostports\n\
         add chain {FAMILY} {TABLE} input {{ type filter hook input priority filter; policy accept; }}\n"
    )
}

/// An IPv4 network in CIDR form, normalised (`172.16.28.7/24` → `172.16.28.0/24`).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Some((Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// The comment of a network's rules.
pub fn network_tag(network: &str, subnet: &str) -> String {
    format!("orbit network {network} {subnet}")
}

/// A network's rules: (chain, rule) pairs, each tagged.
fn network_rules(network: &str, subnet: &str) -> Vec<(&'static str, String)> {
    let tag = network_tag(network, subnet);
    vec![
        (
            "postrouting",
            format!("ip saddr {subnet} ip daddr != {subnet} masquerade comment \"{tag}\""),
        ),
        (
            "forward",
            format!("ip saddr {subnet} accept comment \"{tag}\""),
        ),
        (
            "forward",
            format!("ip daddr {subnet} ct state established,related accept comment \"{tag}\""),
        ),
    ]
}

/// The forwarding plumbing's rules: (chain, rule, comment), with the guard for `bridge`
/// (the host side of the pod's network) when forwards from 127.0.0.1 go through it.
fn port_rules(bridge: Option<&str>) -> Vec<(&'static str, String, String)> {
    let jump = format!("fib daddr type local jump hostports comment \"{HOSTPORTS_TAG}\"");
    let mut rules = vec![
        ("prerouting", jump.clone(), HOSTPORTS_TAG.to_string()),
        ("output", jump, HOSTPORTS_TAG.to_string()),
    ];
    // `route_localnet` (set for forwards from 127.0.0.1, as portmap does) also lets packets
    // from the pods on the bridge reach the host's 127.0.0.0/8 services; drop those, as
    // kube-proxy does, unless they were forwarded or belong to a forwarded connection.
    if let Some(dev) = bridge {
        let tag = format!("{GUARD_TAG} {dev}");
        rules.push((
            "input",
            format!(
                "iifname \"{dev}\" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 \
                 ct state != {{ established, related }} ct status & dnat == 0 drop comment \"{tag}\""
            ),
            tag,
        ));
    }
    rules
}

/// True for an interface name that can go into an nft rule as it is.
fn plain_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c))
}

/// Adds what of `wanted` ((chain, rule, comment)) `listing` lacks, replacing a partial set
/// (a comment's rules are all re-added when their number is not right), and leaves the
/// table as it is afterwards in `listing`. Holds the lock and lists again before writing, so
/// that two pod starts racing never add the same rules twice.
fn ensure_rules(
    listing: &mut Option<Listing>,
    chains: &str,
    wanted: &[(&str, String, String)],
) -> Result<(), NetError> {
    let complete = |l: &Option<Listing>| {
        l.as_ref().is_some_and(|l| {
            wanted
                .iter()
                .all(|(chain, _, tag)| l.count(chain, tag) == count(wanted, chain, tag))
        })
    };
    if complete(listing) {
        return Ok(());
    }
    let _lock = lock()?;
    *listing = list()?;
    if complete(listing) {
        return Ok(());
    }
    let mut script = base();
    script.push_str(chains);
    let tags: BTreeSet<&str> = wanted.iter().map(|(_, _, t)| t.as_str()).collect();
    if let Some(l) = listing.as_ref() {
        script.push_str(&l.deletions(|c| tags.contains(c)));
    }
    for (chain, rule, _) in wanted {
        script.push_str(&format!("add rule {FAMILY} {TABLE} {chain} {rule}\n"));
    }
    apply(&script)?;
    *listing = list()?;
    Ok(())
}

fn count(wanted: &[(&str, String, String)], chain: &str, tag: &str) -> usize {
    wanted
        .iter()
        .filter(|(c, _, t)| *c == chain && t == tag)
        .count()
}

/// Makes sure orbit's table has the masquerade and forwarding rules of `network`
/// (`subnet`, an IPv4 CIDR). `listing` is the table as last listed and is kept current.
pub fn ensure_network(
    listing: &mut Option<Listing>,
    network: &str,
    subnet: &str,
) -> Result<(), NetError> {
    let Some((addr, len)) = parse_cidr(subnet) else {
        return Err(fail(format!(
            "network '{network}': orbitNat subnet '{subnet}' is not an IPv4 CIDR"
        )));
    };
    let subnet = format!("{addr}/{len}");
    let tag = network_tag(network, &subnet);
    let wanted: Vec<(&str, String, String)> = network_rules(network, &subnet)
        .into_iter()
        .map(|(c, r)| (c, r, tag.clone()))
        .collect();
    ensure_rules(listing, "", &wanted)
}

/// A short name of a pod store, for the per-pod comments (FNV-1a of its canonical path).
pub fn store_tag(store: &Path) -> String {
    let path = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The comment of a pod's rules.
pub fn pod_tag(uuid: &str, store: &Path) -> String {
    format!("orbit pod {uuid} store {}", store_tag(store))
}

/// The pod UUID and store tag a per-pod comment names.
fn parse_pod_tag(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("orbit pod ")?;
    let (uuid, store) = rest.split_once(" store ")?;
    Some((uuid, store))
}

/// The DNAT and masquerade rules forwarding `maps` to the pod at `pod_ip` on `subnet`:
/// (chain, rule) pairs tagged `tag`. Mappings to an IPv6 host address are skipped (an IPv4
/// pod cannot be reached through them; portmap skips them too).
fn pod_rules(
    tag: &str,
    pod_ip: Ipv4Addr,
    subnet: &str,
    maps: &[PortMapping],
) -> Result<Vec<(&'static str, String)>, NetError> {
    let mut rules = Vec::new();
    let mut masq = BTreeSet::new();
    for m in maps {
        let proto = m.protocol.as_str();
        if !["tcp", "udp", "sctp"].contains(&proto) {
            return Err(fail(format!("--port: unknown protocol '{proto}'")));
        }
        let dst = match m.host_ip.as_deref().map(str::parse::<IpAddr>) {
            None => "meta nfproto ipv4".to_string(),
            Some(Ok(IpAddr::V4(ip))) if ip.is_unspecified() => "meta nfproto ipv4".to_string(),
            Some(Ok(IpAddr::V4(ip))) => format!("ip daddr {ip}"),
            Some(Ok(IpAddr::V6(_))) => continue,
            Some(Err(_)) => {
                return Err(fail(format!(
                    "--port: '{}' is not an IP address",
                    m.host_ip.as_deref().unwrap_or_default()
                )))
            }
        };
        rules.push((
            "hostports",
            format!(
                "{dst} {proto} dport {} dnat ip to {pod_ip}:{} comment \"{tag}\"",
                m.host_port, m.container_port
            ),
        ));
        masq.insert((proto, m.container_port));
    }
    // What portmap's SETMARK/MASQ chains do: a forwarded connection from the host itself
    // (127.0.0.1) or from a pod on the same bridge (hairpin) leaves with the bridge's address,
    // so that the answers come back through the host and are translated back.
    for (proto, port) in masq {
        rules.push((
            "postrouting",
            format!(
                "ip saddr {{ 127.0.0.0/8, {subnet} }} ip daddr {pod_ip} {proto} dport {port} \
                 ct status dnat masquerade comment \"{tag}\""
            ),
        ));
    }
    Ok(rules)
}

/// The pod's IPv4 address and its subnet, from a CNI result.
fn pod_address(result: &Value) -> Option<(Ipv4Addr, String)> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let cidr = ip["address"].as_str()?;
        let addr: Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
        let (net, len) = parse_cidr(cidr)?;
        Some((addr, format!("{net}/{len}")))
    })
}

/// The interface the host reaches `ip` through directly (no gateway), from
/// /proc/net/route (the calling process's network namespace): the longest prefix wins.
fn route_device(ip: Ipv4Addr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gateway, mask) = (word(f.get(1)?)?, word(f.get(2)?)?, word(f.get(7)?)?);
            let (dest, mask) = (
                u32::from(Ipv4Addr::from(dest)),
                u32::from(Ipv4Addr::from(mask)),
            );
            (gateway == [0; 4] && u32::from(ip) & mask == dest)
                .then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dev)| dev)
}

/// Forwards `maps` to the pod a CNI ADD attached (`result`): the forwarding chains if
/// missing, then the pod's DNAT and masquerade rules in one batch, and `route_localnet` on
/// the host side of the pod's network for forwards from 127.0.0.1 (as portmap does).
pub fn forward_ports(
    listing: &mut Option<Listing>,
    uuid: &str,
    store: &Path,
    result: &Value,
    maps: &[PortMapping],
) -> Result<(), NetError> {
    let Some((pod_ip, subnet)) = pod_address(result) else {
        return Err(fail(
            "--port: the pod has no IPv4 address on this network (orbit's nftables port forwarding is IPv4 only)"
                .into(),
        ));
    };
    // (A bridge whose name nft would need quoted otherwise gets no forwards from 127.0.0.1.)
    let bridge = route_device(pod_ip).filter(|d| plain_ifname(d));
    ensure_rules(listing, &port_chains(), &port_rules(bridge.as_deref()))?;
    if let Some(dev) = bridge {
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet");
        std::fs::write(&path, "1")
            .map_err(|e| NetError::io("cannot write", Path::new(&path), e))?;
    }
    let marker = store.join(FORWARDS_MARKER);
    if !marker.exists() {
        std::fs::write(&marker, b"").map_err(|e| NetError::io("cannot write", &marker, e))?;
    }
    let tag = pod_tag(uuid, store);
    let mut script = String::new();
    for (chain, rule) in pod_rules(&tag, pod_ip, &subnet, maps)? {
        script.push_str(&format!("add rule {FAMILY} {TABLE} {chain} {rule}\n"));
    }
    apply(&script)
}

/// Removes every rule of pod `uuid` (whatever store it came from); none is fine, so is no
/// table. A rule that vanished between listing and deleting (the batch fails) is retried.
pub fn remove_pod(uuid: &str) -> Result<(), NetError> {
    let prefix = format!("orbit pod {uuid} ");
    remove_matching(|c| c.starts_with(&prefix))
}

fn remove_matching(matches: impl Fn(&str) -> bool) -> Result<(), NetError> {
    let mut attempt = 0;
    loop {
        let Some(listing) = list()? else {
            return Ok(());
        };
        let script = listing.deletions(&matches);
        if script.is_empty() {
            return Ok(());
        }
        match apply(&script) {
            Err(_) if attempt < 2 => attempt += 1,
            other => return other,
        }
    }
}

/// The file in a store that says a pod of it has had ports forwarded (made before its first
/// rule is added): until then the store has no per-pod rules to sweep, and `orbit gc` does
/// not list the firewall (running `nft` is most of an otherwise quick gc).
const FORWARDS_MARKER: &str = "ports-forwarded";

/// `orbit gc`: removes the per-pod rules of `store`'s pods that `is_attached` says are no
/// longer attached (their pod directories are gone, or were detached without removing
/// them). Nothing to do for a store that never forwarded ports, without a working `nft` or
/// without orbit's table. Returns each pod whose rules were found stale, with how removing
/// them went.
pub fn sweep(
    store: &Path,
    is_attached: impl Fn(&str) -> bool,
) -> Vec<(String, Result<(), NetError>)> {
    if !store.join(FORWARDS_MARKER).exists() {
        return Vec::new();
    }
    let Probe::Works(Some(listing)) = probe() else {
        return Vec::new();
    };
    let ours = store_tag(store);
    let stale: BTreeSet<&str> = listing
        .rules
        .iter()
        .filter_map(|r| parse_pod_tag(&r.comment))
        .filter(|(uuid, tag)| *tag == ours && !is_attached(uuid))
        .map(|(uuid, _)| uuid)
        .collect();
    stale
        .into_iter()
        .map(|uuid| (uuid.to_string(), remove_pod(uuid)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(proto: &str, c: u16, h: u16, ip: Option<&str>) -> PortMapping {
        PortMapping {
            name: None,
            protocol: proto.into(),
            container_port: c,
            host_port: h,
            host_ip: ip.map(String::from),
        }
    }

    #[test]
    fn cidrs_are_normalised_and_checked() {
        assert_eq!(
            parse_cidr("172.16.28.7/24"),
            Some((Ipv4Addr::new(172, 16, 28, 0), 24))
        );
        assert_eq!(parse_cidr("0.0.0.0/0"), Some((Ipv4Addr::UNSPECIFIED, 0)));
        for bad in [
            "172.16.28.0",
            "172.16.28.0/33",
            "x/24",
            "1.2.3.4/24; flush ruleset",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn network_rules_are_tagged_with_network_and_subnet() {
        let r = network_rules("default", "172.16.28.0/24");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].0, "postrouting");
        assert!(r[0].1.contains("masquerade"));
        for (_, rule) in &r {
            assert!(
                rule.ends_with("comment \"orbit network default 172.16.28.0/24\""),
                "{rule}"
            );
        }
    }

    #[test]
    fn pod_rules_dnat_each_port_and_masquerade_each_target_once() {
        let ip = Ipv4Addr::new(172, 16, 28, 5);
        let maps = [
            map("tcp", 80, 8080, None),
            map("tcp", 80, 8081, Some("10.0.0.1")),
            map("udp", 53, 5353, Some("0.0.0.0")),
            map("tcp", 22, 2222, Some("::1")),
        ];
        let r = pod_rules("orbit pod u store s", ip, "172.16.28.0/24", &maps).unwrap();
        let text: Vec<String> = r.iter().map(|(c, r)| format!("{c}: {r}")).collect();
        assert_eq!(
            text,
            [
                "hostports: meta nfproto ipv4 tcp dport 8080 dnat ip to 172.16.28.5:80 comment \"orbit pod u store s\"",
                "hostports: ip daddr 10.0.0.1 tcp dport 8081 dnat ip to 172.16.28.5:80 comment \"orbit pod u store s\"",
                "hostports: meta nfproto ipv4 udp dport 5353 dnat ip to 172.16.28.5:53 comment \"orbit pod u store s\"",
                "postrouting: ip saddr { 127.0.0.0/8, 172.16.28.0/24 } ip daddr 172.16.28.5 tcp dport 80 ct status dnat masquerade comment \"orbit pod u store s\"",
                "postrouting: ip saddr { 127.0.0.0/8, 172.16.28.0/24 } ip daddr 172.16.28.5 udp dport 53 ct status dnat masquerade comment \"orbit pod u store s\"",
            ]
        );
        assert!(pod_rules("t", ip, "x", &[map("icmp", 1, 1, None)]).is_err());
    }

    #[test]
    fn the_localnet_guard_is_per_bridge_and_odd_names_get_none() {
        assert_eq!(port_rules(None).len(), 2);
        let r = port_rules(Some("orbit0"));
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].2, "orbit localnet guard orbit0");
        assert!(r[2]
            .1
            .starts_with("iifname \"orbit0\" ip daddr 127.0.0.0/8"));
        assert!(r[2].1.contains(" drop comment "));
        assert!(plain_ifname("orbit0") && plain_ifname("br-1.2@x"));
        assert!(!plain_ifname("a\"b") && !plain_ifname("") && !plain_ifname("a b"));
    }

    #[test]
    fn pod_tags_name_the_pod_and_the_store() {
        let t = pod_tag("0f0e-uuid", Path::new("/nonexistent/store"));
        assert_eq!(parse_pod_tag(&t), Some(("0f0e-uuid", &t[t.len() - 16..])));
        assert_ne!(
            store_tag(Path::new("/nonexistent/a")),
            store_tag(Path::new("/nonexistent/b"))
        );
        assert_eq!(parse_pod_tag("orbit network default 1.2.3.0/24"), None);
    }

    #[test]
    fn listings_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "inet", "name": "orbit", "handle": 1}},
            {"chain": {"family": "inet", "table": "orbit", "name": "forward", "handle": 1}},
            {"rule": {"family": "inet", "table": "orbit", "chain": "forward", "handle": 7,
                      "comment": "orbit network default 172.16.28.0/24", "expr": []}},
            {"rule": {"family": "inet", "table": "orbit", "chain": "forward", "handle": 8, "expr": []}}]}"#;
        let l = parse(json).unwrap();
        assert_eq!(l.chains, ["forward"]);
        assert_eq!(
            l.count("forward", "orbit network default 172.16.28.0/24"),
            1
        );
        assert_eq!(l.rules[1].comment, "");
        assert_eq!(
            l.deletions(|c| c.starts_with("orbit network")),
            "delete rule inet orbit forward handle 7\n"
        );
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn a_pods_address_and_subnet_come_from_the_cni_result() {
        let r = serde_json::json!({"ips": [
            {"address": "fd00::5/64"},
            {"address": "172.16.28.5/24", "gateway": "172.16.28.1"}
        ]});
        assert_eq!(
            pod_address(&r),
            Some((Ipv4Addr::new(172, 16, 28, 5), "172.16.28.0/24".into()))
        );
        assert_eq!(pod_address(&serde_json::json!({})), None);
    }
}
