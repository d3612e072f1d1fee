//! A CRI `Localhost` seccomp profile — a JSON file in the OCI / Docker profile format on the
//! node — as orbit's allow-list filter. Two shapes map exactly or safely:
//! - an allow-list (`defaultAction` denies; `SCMP_ACT_ALLOW` rules name syscalls): those
//!   syscalls, other calls failing with `defaultErrnoRet` (EPERM by default);
//! - a deny-list (`defaultAction: SCMP_ACT_ALLOW`; rules deny): orbit's default allow-list
//!   minus the denied syscalls (stricter than "everything else", never looser).
//!
//! Rules with argument conditions cannot be expressed by an allow-list and are refused, as
//! are actions other than allow / errno / kill / trap / log.

use serde::Deserialize;
use tonic::Status;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    args: Option<Vec<serde_json::Value>>,
    /// Conditions on architectures, capabilities or kernels (containers/common format).
    #[serde(default)]
    includes: Option<serde_json::Value>,
    #[serde(default)]
    excludes: Option<serde_json::Value>,
}

fn denies(action: &str) -> bool {
    matches!(
        action,
        "SCMP_ACT_ERRNO"
            | "SCMP_ACT_KILL"
            | "SCMP_ACT_KILL_PROCESS"
            | "SCMP_ACT_KILL_THREAD"
            | "SCMP_ACT_TRAP"
    )
}

fn bad(path: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("seccomp profile {path}: {why}"))
}

/// Reads and converts the profile at `path` (`localhost/` prefix allowed).
pub fn localhost_profile(path: &str) -> Result<orbit_stage1::Seccomp, Status> {
    let file = path.strip_prefix("localhost/").unwrap_or(path);
    let text =
        std::fs::read_to_string(file).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    convert(&text).map_err(|e| bad(path, e))
}

fn convert(text: &str) -> Result<orbit_stage1::Seccomp, String> {
    let p: Profile =
        serde_json::from_str(text).map_err(|e| format!("not a seccomp profile: {e}"))?;
    let errno = p.default_errno_ret.unwrap_or(libc::EPERM as u32);
    // 0 would make denied calls "succeed" — worse than allowing them: a process would
    // believe it dropped privileges it still has.
    if !(1..4096).contains(&errno) {
        return Err(format!("defaultErrnoRet {errno} is not an errno (1..4095)"));
    }
    let mut named: Vec<(String, &str)> = Vec::new();
    for r in &p.syscalls {
        if r.args.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(format!(
                "the rule for {} has argument conditions, which orbit's allow-list filter cannot express",
                r.names.first().or(r.name.as_ref()).map_or("?", String::as_str)
            ));
        }
        let conditional = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty()))
        };
        if conditional(&r.includes) || conditional(&r.excludes) {
            return Err(format!(
                "the rule for {} is conditional (includes/excludes), which orbit cannot express",
                r.names
                    .first()
                    .or(r.name.as_ref())
                    .map_or("?", String::as_str)
            ));
        }
        if !denies(&r.action) && r.action != "SCMP_ACT_ALLOW" && r.action != "SCMP_ACT_LOG" {
            return Err(format!("action {} is not supported", r.action));
        }
        for n in r.names.iter().chain(r.name.iter()) {
            named.push((n.clone(), r.action.as_str()));
        }
    }
    let allow: Vec<String> = if denies(&p.default_action) {
        named
            .into_iter()
            .filter(|(_, a)| !denies(a))
            .map(|(n, _)| n)
            .collect()
    } else if matches!(p.default_action.as_str(), "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG") {
        orbit_stage1::seccomp::DEFAULT_ALLOWED
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !named.iter().any(|(n, a)| n == s && denies(a)))
            .collect()
    } else {
        return Err(format!(
            "defaultAction {} is not supported",
            p.default_action
        ));
    };
    let filter = orbit_stage1::Seccomp { allow, errno };
    // Unknown syscall names are found now, not when the container starts.
    orbit_stage1::seccomp::compile(&filter)?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_deny_lists_convert_and_conditions_are_refused() {
        let f = convert(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(f.allow, ["read", "write", "exit_group"]);
        assert_eq!(f.errno, 38);
        let f = convert(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert!(f.allow.contains(&"read".to_string()));
        assert!(!f.allow.contains(&"chmod".to_string()));
        assert!(!f.allow.contains(&"fchmodat".to_string()));
        assert_eq!(f.errno, 1);
        assert!(convert(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],
            "action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#
        )
        .unwrap_err()
        .contains("argument conditions"));
        assert!(convert(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).is_err());
        assert!(convert(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":0,
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#
        )
        .is_err());
        assert!(convert(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["mount"],
            "action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#
        )
        .is_err());
        assert!(convert(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["no_such_call"],"action":"SCMP_ACT_ALLOW"}]}"#).is_err());
        assert!(convert("not json").is_err());
    }
}
