//! Image names (`example.com/busybox:latest`) and the references users type for images.

use super::error::{ImageError, Result};

/// The default tag added to a name without one.
pub const DEFAULT_TAG: &str = "latest";

/// Splits a name into repository and tag/digest suffix (`("example.com/app", ":1.0")`),
/// minding registry ports (`localhost:5000/app`).
pub fn split_tag(name: &str) -> (&str, &str) {
    if let Some(at) = name.find('@') {
        return (&name[..at], &name[at..]);
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i..]),
        None => (name, ""),
    }
}

/// The repository of a name: the name without its tag or digest.
pub fn repository(name: &str) -> &str {
    split_tag(name).0
}

/// Validates a user-given image name and adds `:latest` when it has no tag.
///
/// The grammar is Docker's: `[HOST[:PORT]/]PATH[:TAG]`. The registry host (the first
/// component, when it has a `.` or a `:` or is `localhost`, and more follow) may have
/// upper case and a numeric port; the path components are lower case `[a-z0-9]` joined by
/// `.`, `_` or `-`; the tag is `[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most 128 characters. A
/// digest (`@sha256:…`) is not part of a name: the store names manifests, it does not pin
/// them.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = || ImageError::BadName(name.to_string());
    if name.contains('@') {
        return Err(bad());
    }
    let (repo, tag) = split_tag(name);
    if repo.is_empty() || repo.len() > 255 {
        return Err(bad());
    }
    let components: Vec<&str> = repo.split('/').collect();
    let (host, path) = match components.as_slice() {
        [first, rest @ ..]
            if !rest.is_empty()
                && (first.contains('.') || first.contains(':') || *first == "localhost") =>
        {
            (Some(*first), rest)
        }
        all => (None, all),
    };
    if host.is_some_and(|h| !valid_host(h)) || !path.iter().all(|c| valid_path_component(c)) {
        return Err(bad());
    }
    let tag_ok = match tag.strip_prefix(':') {
        None => tag.is_empty(),
        Some(t) => {
            !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
    };
    if !tag_ok {
        return Err(bad());
    }
    Ok(if tag.is_empty() {
        format!("{repo}:{DEFAULT_TAG}")
    } else {
        name.to_string()
    })
}

/// `host` or `host:port`: DNS labels of `[A-Za-z0-9-]` (not starting or ending with `-`)
/// joined by `.`, and a numeric port.
pub(crate) fn valid_host(h: &str) -> bool {
    let (host, port) = match h.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let labels_ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && port_ok
}

/// A path component: lower case letters and digits, with `.`, `_` and `-` only between them.
pub(crate) fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !c.is_empty()
        && c.bytes().next().is_some_and(alnum)
        && c.bytes().last().is_some_and(alnum)
        && c.bytes().all(|b| alnum(b) || b"._-".contains(&b))
}

/// Docker's normalization of short names (`busybox:latest` → `docker.io/library/busybox:latest`),
/// used for names coming from docker archives.
pub fn docker_normalize(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_domain, name.contains('/')) {
        (true, _) => name.to_string(),
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_minds_ports_and_digests() {
        assert_eq!(
            split_tag("example.com/busybox:latest"),
            ("example.com/busybox", ":latest")
        );
        assert_eq!(split_tag("localhost:5000/app"), ("localhost:5000/app", ""));
        assert_eq!(
            split_tag("localhost:5000/app:1"),
            ("localhost:5000/app", ":1")
        );
        assert_eq!(split_tag("app@sha256:abc"), ("app", "@sha256:abc"));
    }

    #[test]
    fn normalize_adds_latest_and_rejects_junk() {
        assert_eq!(
            normalize_name("example.com/busybox").unwrap(),
            "example.com/busybox:latest"
        );
        assert_eq!(normalize_name("a/b:1.0").unwrap(), "a/b:1.0");
        for bad in ["", "a b", "/abs", "a//b", "a:", "x/../y:1", "x/y:1\n"] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_follow_the_docker_grammar() {
        for (ok, normal) in [
            ("localhost:5000/x:1", "localhost:5000/x:1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            (
                "Registry.Example.com:443/team/app:v1.2_RC-3",
                "Registry.Example.com:443/team/app:v1.2_RC-3",
            ),
            ("localhost/app", "localhost/app:latest"),
            ("a.b/c__d/e-f.g:T", "a.b/c__d/e-f.g:T"),
            ("busybox", "busybox:latest"),
        ] {
            assert_eq!(normalize_name(ok).unwrap(), normal, "{ok:?}");
        }
        for bad in [
            "example.com/app@sha256:0000",
            "app:a@b",
            ":a@b",
            "example.com/App:1",
            "Busybox",
            "example.com/a:b/c:1",
            "a:b:c",
            "example.com:port/app",
            "example.com:/app",
            "example.com/app:-x",
            "example.com/app:.x",
            "example.com/-app",
            "example.com/app-",
            "example.com/app:a:b",
            "-host.com/app",
        ] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn docker_names_get_docker_io() {
        assert_eq!(
            docker_normalize("busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(docker_normalize("me/app:1"), "docker.io/me/app:1");
        assert_eq!(docker_normalize("quay.io/me/app:1"), "quay.io/me/app:1");
    }
}
