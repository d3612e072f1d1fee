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
pub fn normalize_name(name: &str) -> Result<String> {
    let (repo, tag) = split_tag(name);
    let repo_ok = !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with(['.', '-'])
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        })
        && !repo.starts_with(['.', '-', '/']);
    let tag_ok = tag.is_empty()
        || (tag.len() <= 129
            && tag[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
            && tag.len() > 1);
    if !repo_ok || !tag_ok {
        return Err(ImageError::BadName(name.to_string()));
    }
    Ok(if tag.is_empty() {
        format!("{repo}:{DEFAULT_TAG}")
    } else {
        name.to_string()
    })
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
    fn docker_names_get_docker_io() {
        assert_eq!(
            docker_normalize("busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(docker_normalize("me/app:1"), "docker.io/me/app:1");
        assert_eq!(docker_normalize("quay.io/me/app:1"), "quay.io/me/app:1");
    }
}
