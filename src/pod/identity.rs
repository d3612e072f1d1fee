//! Resolving `--user` / `--group` (names or numbers) in the image's own /etc/passwd and
//! /etc/group, read from its unpacked layers, top layer first, honouring whiteouts.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use orbit_stage1::AppUser;

use super::PodError;

/// Reads `rel` (e.g. `etc/passwd`) from layer roots given top first; a whiteout hides lower copies.
pub fn read_layered(lowers_top_first: &[PathBuf], rel: &str) -> Option<String> {
    for l in lowers_top_first {
        let p = l.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_char_device() => return None,
            Ok(m) if m.is_file() => return std::fs::read_to_string(&p).ok(),
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

struct Entry<'a> {
    name: &'a str,
    id: u32,
    gid: u32,
    members: Vec<&'a str>,
}

fn parse(db: &str, group: bool) -> Vec<Entry<'_>> {
    db.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if group {
                let members = f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default();
                Some(Entry {
                    name: f.first()?,
                    id: f.get(2)?.parse().ok()?,
                    gid: 0,
                    members,
                })
            } else {
                Some(Entry {
                    name: f.first()?,
                    id: f.get(2)?.parse().ok()?,
                    gid: f.get(3)?.parse().ok()?,
                    members: vec![],
                })
            }
        })
        .collect()
}

/// Resolves a user and optional group spec against the image's databases.
pub fn resolve(
    user: &str,
    group: Option<&str>,
    passwd: Option<&str>,
    groups: Option<&str>,
) -> Result<AppUser, PodError> {
    let users = passwd.map(|p| parse(p, false)).unwrap_or_default();
    let group_db = groups.map(|g| parse(g, true)).unwrap_or_default();
    let (uid, mut gid, name) = if let Ok(uid) = user.parse::<u32>() {
        let e = users.iter().find(|e| e.id == uid);
        (uid, e.map_or(0, |e| e.gid), e.map(|e| e.name))
    } else {
        let e = users.iter().find(|e| e.name == user).ok_or_else(|| {
            PodError::BadSpec(format!("user '{user}' is not in the image's /etc/passwd; use a name from it or a numeric uid"))
        })?;
        (e.id, e.gid, Some(e.name))
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_db.iter().find(|e| e.name == g).map(|e| e.id).ok_or_else(|| {
                PodError::BadSpec(format!("group '{g}' is not in the image's /etc/group; use a name from it or a numeric gid"))
            })?,
        };
    }
    let additional_gids = match name {
        Some(n) => group_db
            .iter()
            .filter(|e| e.members.contains(&n) && e.id != gid)
            .map(|e| e.id)
            .collect(),
        None => vec![],
    };
    Ok(AppUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:user\nuser:x:1000:\n";

    #[test]
    fn names_and_numbers_resolve() {
        assert_eq!(
            resolve("user", None, Some(PASSWD), Some(GROUP)).unwrap(),
            AppUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![100]
            }
        );
        assert_eq!(
            resolve("1000", Some("users"), Some(PASSWD), Some(GROUP)).unwrap(),
            AppUser {
                uid: 1000,
                gid: 100,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve("4242", Some("7"), None, None).unwrap(),
            AppUser {
                uid: 4242,
                gid: 7,
                additional_gids: vec![]
            }
        );
        assert!(resolve("nobody-here", None, Some(PASSWD), Some(GROUP)).is_err());
        assert!(resolve("0", Some("nogroup"), Some(PASSWD), Some(GROUP)).is_err());
    }
}
