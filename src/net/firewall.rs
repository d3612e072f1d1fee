//! Which tool keeps orbit's firewall rules: nftables (`nft`, orbit's own `table inet orbit`,
//! see `nft`) or iptables (the `iptables` binary, see `nat`), chosen per pod start.
//!
//! `ORBIT_FIREWALL=auto` (the default):
//! - `nft` works: the built-in networks' masquerade and forwarding rules go into orbit's
//!   table. If an `iptables` binary exists too, its FORWARD accepts are also inserted: an
//!   accept in one nftables base chain does not override a drop in another table's (the
//!   `ip filter FORWARD` chain of iptables-nft or legacy with policy DROP, as docker sets
//!   it), so only a rule in that chain lets the pods' traffic through it. `--port` goes
//!   through the portmap plugin when `iptables` exists (it needs it), else through orbit's
//!   own DNAT rules in its table.
//! - `nft` missing or not working, `iptables` present: everything with iptables, as before.
//!
//! `ORBIT_FIREWALL=nftables`: nft only; iptables is neither run nor needed (what a host
//! without iptables gets from `auto`). `ORBIT_FIREWALL=iptables`: iptables and portmap only.

use super::nft::{self, Listing, Probe};
use super::NetError;

/// The environment variable that picks the firewall tool.
pub const ENV: &str = "ORBIT_FIREWALL";

/// What `ORBIT_FIREWALL` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// nft when it works, else iptables.
    Auto,
    /// nft only.
    Nftables,
    /// iptables only.
    Iptables,
}

impl Mode {
    /// The mode `ORBIT_FIREWALL` names (unset or empty: auto).
    pub fn from_env() -> Result<Mode, NetError> {
        let value = std::env::var(ENV).unwrap_or_default();
        match value.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Mode::Auto),
            "nftables" | "nft" => Ok(Mode::Nftables),
            "iptables" => Ok(Mode::Iptables),
            _ => Err(NetError::BadSpec(format!(
                "{ENV}={value}: use nftables, iptables or auto"
            ))),
        }
    }
}

/// The tools a pod start uses, and what it has seen of orbit's nftables table.
#[derive(Debug)]
pub struct Firewall {
    /// The per-network rules go into orbit's nftables table (else: iptables).
    pub nft: bool,
    /// With `nft`: also insert the iptables FORWARD accepts (an iptables binary exists).
    pub iptables_forward: bool,
    /// `--port` through orbit's nftables rules (else: the portmap plugin).
    pub nft_ports: bool,
    /// orbit's table as last listed (`None`: it does not exist, or nft is not used).
    pub listing: Option<Listing>,
}

/// True when an executable `name` is on `PATH` (what `Command` would run).
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Firewall {
    /// Picks the tools by `ORBIT_FIREWALL` and what works here. With nft this lists orbit's
    /// table once (the listing later calls reuse).
    pub fn select() -> Result<Firewall, NetError> {
        Self::select_with(Mode::from_env()?, nft::probe, on_path("iptables"))
    }

    fn select_with(
        mode: Mode,
        probe: impl FnOnce() -> Probe,
        has_iptables: bool,
    ) -> Result<Firewall, NetError> {
        let iptables = Firewall {
            nft: false,
            iptables_forward: false,
            nft_ports: false,
            listing: None,
        };
        if mode == Mode::Iptables {
            return Ok(iptables);
        }
        let why = match probe() {
            Probe::Works(listing) => {
                let with_iptables = mode == Mode::Auto && has_iptables;
                return Ok(Firewall {
                    nft: true,
                    iptables_forward: with_iptables,
                    nft_ports: !with_iptables,
                    listing,
                });
            }
            Probe::Absent => "there is no nft binary (install nftables)".to_string(),
            Probe::Broken(e) => e,
        };
        match mode {
            Mode::Auto if has_iptables => Ok(iptables),
            Mode::Auto => Err(NetError::Firewall {
                tool: "nft".into(),
                detail: format!(
                    "{why}, and there is no iptables binary either: install nftables (or iptables)"
                ),
            }),
            _ => Err(NetError::Firewall {
                tool: "nft".into(),
                detail: format!("{ENV}=nftables, but {why}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn works() -> Probe {
        Probe::Works(None)
    }

    #[test]
    fn auto_prefers_nft_and_keeps_iptables_for_forward_accepts_and_portmap() {
        let f = Firewall::select_with(Mode::Auto, works, true).unwrap();
        assert!(f.nft && f.iptables_forward && !f.nft_ports);
        let f = Firewall::select_with(Mode::Auto, works, false).unwrap();
        assert!(f.nft && !f.iptables_forward && f.nft_ports);
        let f = Firewall::select_with(Mode::Auto, || Probe::Absent, true).unwrap();
        assert!(!f.nft && !f.nft_ports);
        let e = Firewall::select_with(Mode::Auto, || Probe::Broken("no kernel".into()), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no kernel") && e.contains("install nftables"),
            "{e}"
        );
    }

    #[test]
    fn forced_modes_use_one_tool_only() {
        let f = Firewall::select_with(Mode::Nftables, works, true).unwrap();
        assert!(f.nft && !f.iptables_forward && f.nft_ports);
        let e = Firewall::select_with(Mode::Nftables, || Probe::Absent, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ORBIT_FIREWALL=nftables"), "{e}");
        let f = Firewall::select_with(Mode::Iptables, || unreachable!(), false).unwrap();
        assert!(!f.nft && !f.nft_ports);
    }
}
