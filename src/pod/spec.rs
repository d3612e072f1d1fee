//! Parsing what users type for pods:
//! `--volume NAME,kind=host,source=PATH[,readOnly=true[,recursiveReadOnly=true]]`,
//! `--mount volume=NAME,target=PATH`, `--set-env K=V`, `--user` / `--group`.

use std::path::PathBuf;

use orbit_stage1::{Mount, Volume, VolumeKind};

use super::PodError;

fn bad(msg: String) -> PodError {
    PodError::BadSpec(msg)
}

fn parse_bool(k: &str, v: &str, spec: &str) -> Result<bool, PodError> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(format!(
            "--volume {spec}: {k} must be true or false, not '{v}'"
        ))),
    }
}

/// Parses `--volume NAME,kind=host|empty[,source=PATH][,readOnly=BOOL][,recursiveReadOnly=BOOL]`:
/// `readOnly` makes the volume's own mount read-only, `recursiveReadOnly` (with it) the
/// mounts below it too.
pub fn parse_volume(spec: &str) -> Result<Volume, PodError> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or_default().trim();
    valid_name(name).map_err(|e| bad(format!("--volume {spec}: {e}")))?;
    let (mut kind, mut source, mut read_only, mut recursive) = (None, None, false, false);
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("--volume {spec}: '{kv}' is not KEY=VALUE")))?;
        match k {
            "kind" => {
                kind = Some(match v {
                    "host" => VolumeKind::Host,
                    "empty" => VolumeKind::Empty,
                    _ => {
                        return Err(bad(format!(
                            "--volume {spec}: kind must be host or empty, not '{v}'"
                        )))
                    }
                })
            }
            "source" => source = Some(PathBuf::from(v)),
            "readOnly" | "readonly" | "ro" => read_only = parse_bool(k, v, spec)?,
            "recursiveReadOnly" | "recursivereadonly" | "rro" => {
                recursive = parse_bool(k, v, spec)?
            }
            _ => {
                return Err(bad(format!(
                    "--volume {spec}: unknown option '{k}' (kind, source, readOnly, \
                     recursiveReadOnly)"
                )))
            }
        }
    }
    if recursive && !read_only {
        return Err(bad(format!(
            "--volume {spec}: recursiveReadOnly needs readOnly=true as well"
        )));
    }
    let kind = kind.ok_or_else(|| {
        bad(format!(
            "--volume {spec}: kind=host or kind=empty is required"
        ))
    })?;
    match (kind, &source) {
        (VolumeKind::Host, None) => {
            return Err(bad(format!("--volume {spec}: kind=host needs source=PATH")))
        }
        (VolumeKind::Host, Some(s)) if !s.is_absolute() => {
            return Err(bad(format!(
                "--volume {spec}: source must be an absolute path"
            )))
        }
        (VolumeKind::Host, Some(s)) if !s.exists() => {
            return Err(bad(format!(
                "--volume {spec}: source {} does not exist",
                s.display()
            )))
        }
        (VolumeKind::Empty, Some(_)) => {
            return Err(bad(format!("--volume {spec}: kind=empty takes no source")))
        }
        _ => {}
    }
    Ok(Volume {
        name: name.to_string(),
        kind,
        source,
        read_only,
        idmap: false,
        image: None,
        recursive_read_only: recursive,
    })
}

/// Parses `--mount volume=NAME,target=PATH`.
pub fn parse_mount(spec: &str) -> Result<Mount, PodError> {
    let (mut volume, mut target) = (None, None);
    for kv in spec.split(',') {
        match kv.split_once('=') {
            Some(("volume", v)) => volume = Some(v.to_string()),
            Some(("target", t)) => target = Some(t.to_string()),
            _ => {
                return Err(bad(format!(
                    "--mount {spec}: expected volume=NAME,target=PATH"
                )))
            }
        }
    }
    let (Some(volume), Some(target)) = (volume, target) else {
        return Err(bad(format!(
            "--mount {spec}: expected volume=NAME,target=PATH"
        )));
    };
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(bad(format!(
            "--mount {spec}: target must be an absolute path without '..'"
        )));
    }
    Ok(Mount {
        volume,
        target,
        propagation: Default::default(),
    })
}

/// Checks an app or volume name: lowercase letters, digits and `-`, starting with a letter
/// or digit (it becomes a directory name).
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_env(spec: &str) -> Result<(String, String), PodError> {
    match spec.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(bad(format!("--set-env {spec}: expected KEY=VALUE"))),
    }
}

/// Sets `key` in an env list, replacing an earlier value.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
    env.push(format!("{key}={value}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_reject_junk() {
        let v = parse_volume("data,kind=host,source=/tmp,readOnly=true").unwrap();
        assert_eq!((v.kind, v.read_only), (VolumeKind::Host, true));
        assert!(!v.recursive_read_only);
        let v = parse_volume("data,kind=host,source=/tmp,ro=1,recursiveReadOnly=true").unwrap();
        assert!(v.read_only && v.recursive_read_only);
        assert_eq!(
            parse_volume("scratch,kind=empty").unwrap().kind,
            VolumeKind::Empty
        );
        for bad in [
            "",
            "x",
            "x,kind=nfs",
            "x,kind=host",
            "x,kind=host,source=rel",
            "x,kind=host,source=/no/such/dir",
            "X,kind=empty",
            "x,kind=empty,source=/tmp",
            "x,kind=empty,readOnly=maybe",
            "x,kind=empty,size=1",
            "x,kind=host,source=/tmp,recursiveReadOnly=true",
            "x,kind=host,source=/tmp,readOnly=true,rro=perhaps",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mounts_parse_and_reject_relative_targets() {
        assert_eq!(
            parse_mount("volume=d,target=/data").unwrap(),
            Mount {
                volume: "d".into(),
                target: "/data".into(),
                propagation: Default::default(),
            }
        );
        for bad in [
            "volume=d",
            "target=/x",
            "volume=d,target=rel",
            "volume=d,target=/a/../b",
            "nonsense",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn env_set_replaces() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        set_env(&mut env, "A", "3");
        assert_eq!(env, vec!["B=2", "A=3"]);
        assert!(parse_env("=x").is_err() && parse_env("novalue").is_err());
    }
}
