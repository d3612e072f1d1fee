//! The VM's NIC in the pod's CNI network namespace: a tap device joined to the CNI
//! interface with tc mirred redirects both ways (as Kata does), so the guest takes the
//! pod's address and MAC and the CNI plugins' view stays true.

use std::path::Path;
use std::process::Command;

/// The tap device's name in the pod's namespace.
pub const TAP: &str = "tap0";

fn in_netns(netns: &Path, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the tap next to `ifname` in `netns` and redirects traffic between them; returns
/// `ifname`'s MAC (the guest NIC takes it).
pub fn setup(netns: &Path, ifname: &str) -> Result<String, String> {
    let link = in_netns(netns, "ip", &["-o", "link", "show", ifname])?;
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| format!("{ifname} in the pod's namespace has no MAC: {link}"))?
        .to_string();
    in_netns(netns, "ip", &["tuntap", "add", TAP, "mode", "tap"])?;
    in_netns(netns, "ip", &["link", "set", TAP, "up"])?;
    for (from, to) in [(ifname, TAP), (TAP, ifname)] {
        in_netns(netns, "tc", &["qdisc", "add", "dev", from, "ingress"])?;
        in_netns(
            netns,
            "tc",
            &[
                "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        )?;
    }
    Ok(mac)
}
