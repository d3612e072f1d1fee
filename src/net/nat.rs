//! Per-network (not per-pod) masquerade and forwarding rules for the built-in networks,
//! the way docker keeps one set of rules per bridge: a pod start checks that they exist
//! instead of creating and deleting a chain per pod, which the bridge plugin's `ipMasq` and
//! the firewall plugin do at several times the cost. A conflist asks for them with a
//! top-level `"orbitNat": {"subnet": "CIDR"}`; CNI plugins never see that key.
//!
//! Kept in orbit's nftables table where `nft` works (see `firewall` for the choice, `nft`
//! for the table: one listing per pod start), else with the `iptables` binary (iptables-nft
//! or legacy, whichever the host uses, as the CNI plugins do; three `iptables -C` calls per
//! pod start): the Rust iptables crates shell out to it as well. With nft and an iptables
//! binary both present, the two iptables FORWARD accepts are kept as well.

use std::process::Command;

use serde_json::Value;

use super::firewall::Firewall;
use super::NetError;

/// The conflist key naming the subnet to masquerade and allow through FORWARD.
pub const NAT_KEY: &str = "orbitNat";

/// The rules for `subnet`: (table, chain, rule), each tagged with a comment.
fn rules(network: &str, subnet: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let tag = format!("orbit network {network}");
    let with_tag = |mut r: Vec<String>| {
        r.extend(["-m", "comment", "--comment", &tag].map(String::from));
        r
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "POSTROUTING",
            with_tag(s(&["-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"])),
        ),
        // Forwarding allowed even where the FORWARD policy is DROP (docker sets it).
        (
            "filter",
            "FORWARD",
            with_tag(s(&["-s", subnet, "-j", "ACCEPT"])),
        ),
        (
            "filter",
            "FORWARD",
            with_tag(s(&[
                "-d",
                subnet,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ])),
        ),
    ]
}

fn iptables(args: &[String]) -> std::io::Result<std::process::Output> {
    Command::new("iptables").arg("-w").args(args).output()
}

/// True when a conflist asks for orbit's per-network rules.
pub fn wanted(conf: &Value) -> bool {
    conf[NAT_KEY]["subnet"].is_string()
}

/// Makes sure the masquerade and forwarding rules a conflist asks for exist, with the
/// tools `fw` picked, and that the host forwards IPv4 (the bridge plugin turns it on only
/// with `isGateway`).
pub fn ensure(conf: &Value, fw: &mut Firewall) -> Result<(), NetError> {
    let Some(subnet) = conf[NAT_KEY]["subnet"].as_str() else {
        return Ok(());
    };
    let network = conf["name"].as_str().unwrap_or("?");
    if fw.nft {
        super::nft::ensure_network(&mut fw.listing, network, subnet)?;
    }
    if !fw.nft || fw.iptables_forward {
        ensure_iptables(network, subnet, !fw.nft)?;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetError::Firewall {
        tool: "sysctl".into(),
        detail: format!("network '{network}': cannot enable IPv4 forwarding: {e}"),
    })
}

/// The iptables rules: all three, or (`with_nat` false) only the FORWARD accepts.
fn ensure_iptables(network: &str, subnet: &str, with_nat: bool) -> Result<(), NetError> {
    let fail = |what: String| NetError::Plugin {
        network: network.to_string(),
        plugin: "iptables".into(),
        command: "setup".into(),
        message: what,
    };
    for (table, chain, rule) in rules(network, subnet) {
        if table == "nat" && !with_nat {
            continue;
        }
        let mut check = vec!["-t".into(), table.into(), "-C".into(), chain.into()];
        check.extend(rule.iter().cloned());
        let present = iptables(&check)
            .map_err(|e| fail(format!("cannot run iptables ({e}); install iptables")))?
            .status
            .success();
        if present {
            continue;
        }
        let mut add = vec!["-t".into(), table.into(), "-I".into(), chain.into()];
        add.extend(rule);
        let out = iptables(&add).map_err(|e| fail(format!("cannot run iptables: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "iptables {}: {}",
                add.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_tagged_and_scoped_to_the_subnet() {
        let r = rules("default", "172.16.28.0/24");
        assert_eq!(r.len(), 3);
        for (_, _, rule) in &r {
            assert!(rule.contains(&"172.16.28.0/24".to_string()));
            assert!(rule.contains(&"orbit network default".to_string()));
        }
        assert_eq!(r[0].0, "nat");
    }
}
