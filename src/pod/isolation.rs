//! An app's isolation as the user asked for it: the secure defaults, `--caps-retain` /
//! `--caps-remove`, `--seccomp`, resource limits, and `--insecure-options` lifting checks.
//! Everything is validated here, before the pod exists, and written to `pod.json` for the
//! stage1 to apply.

use std::str::FromStr;

use orbit_stage1::{AppUser, Isolators, Resources, Seccomp};

use super::PodError;

/// Run-time checks `--insecure-options` turned off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsecureRun {
    /// Full capability set, no no_new_privs (a privileged app).
    pub capabilities: bool,
    /// No seccomp filter.
    pub seccomp: bool,
    /// No masked or read-only paths.
    pub paths: bool,
    /// Every host device may be opened (and the host's nodes are in the app's /dev).
    pub devices: bool,
}

/// What the user asked for one app.
#[derive(Debug, Clone, Default)]
pub struct IsolationRequest {
    /// `--caps-retain`: exactly these capabilities.
    pub caps_retain: Option<Vec<String>>,
    /// `--caps-remove`: the default set minus these.
    pub caps_remove: Vec<String>,
    /// `--seccomp mode=retain|remove[,errno=NAME],SYSCALL…`.
    pub seccomp: Option<String>,
    /// Resource limits.
    pub resources: Resources,
    /// `no_new_privs` as asked (set unless asked otherwise).
    pub no_new_privileges: Option<bool>,
    /// Paths to mask instead of the default ones.
    pub masked_paths: Option<Vec<String>>,
    /// Paths to make read-only instead of the default ones.
    pub readonly_paths: Option<Vec<String>>,
    /// A whole seccomp filter (a CRI Localhost profile), instead of `seccomp`.
    pub seccomp_filter: Option<orbit_stage1::Seccomp>,
}

fn bad(msg: String) -> PodError {
    PodError::BadSpec(msg)
}

/// `net_admin`, `NET_ADMIN` or `CAP_NET_ADMIN` → `CAP_NET_ADMIN`, checked against the kernel's names.
pub fn capability_name(name: &str) -> Result<String, PodError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full).map_err(|_| {
        bad(format!(
            "'{name}' is not a capability (e.g. CAP_NET_ADMIN or ALL; see capabilities(7))"
        ))
    })?;
    Ok(full)
}

/// Capability names from a flag; `ALL` stands for every capability.
fn capability_names(names: &[String]) -> Result<Vec<String>, PodError> {
    let mut out = Vec::new();
    for n in names.iter().filter(|n| !n.trim().is_empty()) {
        if n.trim().eq_ignore_ascii_case("all") {
            out.extend(caps::all().into_iter().map(|c| c.to_string()));
        } else {
            out.push(capability_name(n)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Builds an app's isolators.
pub fn isolators(
    req: &IsolationRequest,
    user: &AppUser,
    insecure: InsecureRun,
) -> Result<Isolators, PodError> {
    let mut iso = Isolators::default();
    let retain = req
        .caps_retain
        .as_ref()
        .map(|r| capability_names(r))
        .transpose()?;
    let remove = capability_names(&req.caps_remove)?;
    if insecure.capabilities {
        let mut all: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
        all.sort();
        iso.capabilities = all;
        iso.no_new_privileges = false;
    } else if let Some(r) = &retain {
        iso.capabilities = r.clone();
    }
    iso.capabilities.retain(|c| !remove.contains(c));
    if user.uid != 0 {
        // A non-root app gets no effective capabilities unless it asked for them by name.
        iso.ambient_capabilities = retain
            .unwrap_or_default()
            .into_iter()
            .filter(|c| iso.capabilities.contains(c))
            .collect();
    }
    if let (Some(nnp), false) = (req.no_new_privileges, insecure.capabilities) {
        iso.no_new_privileges = nnp;
    }
    if insecure.seccomp {
        iso.seccomp = None;
    } else if let Some(filter) = &req.seccomp_filter {
        iso.seccomp = Some(filter.clone());
    } else if let Some(spec) = &req.seccomp {
        iso.seccomp = Some(parse_seccomp(spec)?);
    }
    iso.all_devices = insecure.devices;
    if insecure.paths {
        iso.masked_paths.clear();
        iso.readonly_paths.clear();
    } else {
        if let Some(m) = &req.masked_paths {
            iso.masked_paths = m.clone();
        }
        if let Some(r) = &req.readonly_paths {
            iso.readonly_paths = r.clone();
        }
    }
    if let Some(adj) = req.resources.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(bad(format!(
                "--oom-score-adj={adj}: must be between -1000 and 1000"
            )));
        }
    }
    check_resources(&req.resources)?;
    iso.resources = req.resources.clone();
    Ok(iso)
}

/// Rejects limits no app can run under.
fn check_resources(r: &Resources) -> Result<(), PodError> {
    const MIN_MEMORY: u64 = 4 << 20;
    if r.memory.is_some_and(|m| m < MIN_MEMORY) {
        return Err(bad(
            "--memory: at least 4M (a process needs more than that to start)".into(),
        ));
    }
    if r.cpu_millis == Some(0) {
        return Err(bad("--cpu: at least 1 millicore (1000 = one CPU)".into()));
    }
    if r.cpu_shares == Some(0) {
        return Err(bad("--cpu-shares: at least 2".into()));
    }
    if r.pids == Some(0) {
        return Err(bad(
            "--pids-limit: at least 1 (the app itself is a process)".into(),
        ));
    }
    Ok(())
}

/// Syscalls without which no app can start or exit.
const ESSENTIAL: [&str; 4] = ["execve", "exit_group", "exit", "rt_sigreturn"];

/// Parses `--seccomp mode=retain|remove[,errno=NAME],SYSCALL…`.
pub fn parse_seccomp(spec: &str) -> Result<Seccomp, PodError> {
    let (mut mode, mut errno, mut calls) = (None, 1u32, Vec::new());
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("mode", m)) => mode = Some(m.to_string()),
            Some(("errno", e)) => {
                errno = errno_number(e).ok_or_else(|| {
                    bad(format!(
                        "--seccomp: unknown errno '{e}' (e.g. EPERM, ENOSYS, EACCES)"
                    ))
                })?
            }
            Some((k, _)) => {
                return Err(bad(format!(
                    "--seccomp: unknown option '{k}' (mode, errno)"
                )))
            }
            None => calls.push(part.to_string()),
        }
    }
    let allow: Vec<String> = match mode.as_deref() {
        Some("retain") => {
            let missing: Vec<&str> = ESSENTIAL
                .iter()
                .copied()
                .filter(|e| !calls.iter().any(|c| c == e))
                .collect();
            if !missing.is_empty() {
                return Err(bad(format!("--seccomp mode=retain must allow {} too (the app cannot start or exit without them)", missing.join(", "))));
            }
            calls
        }
        Some("remove") => orbit_stage1::seccomp::DEFAULT_ALLOWED
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !calls.contains(s))
            .collect(),
        Some(m) => {
            return Err(bad(format!(
                "--seccomp: mode must be retain or remove, not '{m}'"
            )))
        }
        None => {
            return Err(bad(
                "--seccomp: mode=retain or mode=remove is required".into()
            ))
        }
    };
    let s = Seccomp { allow, errno };
    orbit_stage1::seccomp::compile(&s).map_err(|e| bad(format!("--seccomp {spec}: {e}")))?;
    Ok(s)
}

fn errno_number(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return (1..4096).contains(&n).then_some(n);
    }
    let n = match name.to_ascii_uppercase().as_str() {
        "EPERM" => libc::EPERM,
        "ENOENT" => libc::ENOENT,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        "ENOSYS" => libc::ENOSYS,
        "EOPNOTSUPP" | "ENOTSUP" => libc::EOPNOTSUPP,
        "ENOTSOCK" => libc::ENOTSOCK,
        _ => return None,
    };
    Some(n as u32)
}

/// Parses a size: bytes, or with a K/M/G/T suffix (powers of 1024; `Ki`, `KiB`, `KB` alike).
pub fn parse_size(s: &str) -> Result<u64, PodError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| bad(format!("'{s}' is not a size (e.g. 256M, 1G)")))?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches('B')
        .trim_end_matches('I')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad(format!("'{s}' is not a size (units: K, M, G, T)"))),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| bad(format!("'{s}' is not a usable size")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_defaults_retain_remove_and_non_root() {
        let root = AppUser::default();
        let d = isolators(&IsolationRequest::default(), &root, InsecureRun::default()).unwrap();
        assert_eq!(d.capabilities.len(), 14);
        assert!(d.no_new_privileges && d.seccomp.is_some() && !d.masked_paths.is_empty());
        let r = IsolationRequest {
            caps_retain: Some(vec!["net_admin".into(), "CAP_CHOWN".into()]),
            caps_remove: vec!["chown".into()],
            ..Default::default()
        };
        assert_eq!(
            isolators(&r, &root, InsecureRun::default())
                .unwrap()
                .capabilities,
            vec!["CAP_NET_ADMIN"]
        );
        let user = AppUser {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![],
        };
        assert!(
            isolators(&IsolationRequest::default(), &user, InsecureRun::default())
                .unwrap()
                .ambient_capabilities
                .is_empty()
        );
        assert_eq!(
            isolators(&r, &user, InsecureRun::default())
                .unwrap()
                .ambient_capabilities,
            vec!["CAP_NET_ADMIN"]
        );
        let all = isolators(
            &IsolationRequest::default(),
            &root,
            InsecureRun {
                capabilities: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(all.capabilities.contains(&"CAP_SYS_ADMIN".to_string()) && !all.no_new_privileges);
        assert!(capability_name("cap_nope").is_err());
    }

    #[test]
    fn seccomp_specs() {
        let s = parse_seccomp("mode=remove,errno=ENOSYS,mkdir,chmod").unwrap();
        assert!(
            !s.allow.contains(&"mkdir".to_string())
                && s.allow.contains(&"read".to_string())
                && s.errno == 38
        );
        assert_eq!(
            parse_seccomp("mode=retain,execve,exit_group,exit,rt_sigreturn,write")
                .unwrap()
                .allow,
            vec!["execve", "exit_group", "exit", "rt_sigreturn", "write"]
        );
        for bad in [
            "read",
            "mode=retain,read,write",
            "mode=remove,errno=0",
            "mode=keep,read",
            "mode=retain,no_such_syscall",
            "mode=remove,errno=EWHAT",
        ] {
            assert!(parse_seccomp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_capabilities_and_impossible_limits() {
        let root = AppUser::default();
        let none = IsolationRequest {
            caps_remove: vec!["ALL".into()],
            ..Default::default()
        };
        assert!(isolators(&none, &root, InsecureRun::default())
            .unwrap()
            .capabilities
            .is_empty());
        for r in [
            Resources {
                memory: Some(4096),
                ..Default::default()
            },
            Resources {
                cpu_millis: Some(0),
                ..Default::default()
            },
            Resources {
                cpu_shares: Some(0),
                ..Default::default()
            },
            Resources {
                pids: Some(0),
                ..Default::default()
            },
        ] {
            let req = IsolationRequest {
                resources: r.clone(),
                ..Default::default()
            };
            assert!(
                isolators(&req, &root, InsecureRun::default()).is_err(),
                "{r:?} accepted"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("1X").is_err() && parse_size("0").is_err() && parse_size("M").is_err());
    }
}
