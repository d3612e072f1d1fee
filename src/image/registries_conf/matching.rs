//! Which `[[registry]]` table a fully qualified name falls under (the longest matching
//! prefix; `*.example.com` matches any subdomain's host), and the places to pull it from:
//! the table's mirrors that serve this kind of reference, in order, then its location —
//! each with the prefix part of the name replaced by that location.

use super::{PullFromMirror, RegistriesConf, Registry};

/// One place to pull a name from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name at that place (`mirror.example/ns/app:1`).
    pub reference: String,
    /// Plain HTTP and unverified TLS are allowed there.
    pub insecure: bool,
    /// A mirror (not the registry's own location).
    pub mirror: bool,
}

/// Where a name is pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try these in order.
    Pull(Vec<Endpoint>),
    /// The name falls under a `blocked = true` table.
    Blocked {
        /// The table's prefix.
        prefix: String,
        /// The file that blocked it.
        file: std::path::PathBuf,
    },
}

/// How much of `name` the prefix `prefix` covers, when it matches: the prefix must be
/// followed by the end of the name or by `/`, `:` or `@`; `*.domain` matches a host ending
/// in `.domain`, and covers that host.
pub fn match_len(name: &str, prefix: &str) -> Option<usize> {
    let boundary =
        |at: usize| at == name.len() || matches!(name.as_bytes()[at], b'/' | b':' | b'@');
    if let Some(domain) = prefix.strip_prefix('*') {
        // `domain` is `.example.com`: it must end the host, which ends at the first `/`
        // (or `:` of a port).
        let host_end = name.find(['/', ':', '@']).unwrap_or(name.len());
        let host = &name[..host_end];
        return (host.len() > domain.len() && host.ends_with(domain)).then_some(host_end);
    }
    (name.starts_with(prefix) && boundary(prefix.len())).then_some(prefix.len())
}

impl RegistriesConf {
    /// The table for `name` (fully qualified, with its tag or digest) and how much of the
    /// name its prefix covers: the longest match wins.
    pub fn registry_for(&self, name: &str) -> Option<(&Registry, usize)> {
        self.registries
            .values()
            .filter_map(|r| match_len(name, &r.prefix).map(|n| (r, n)))
            .max_by_key(|(_, n)| *n)
    }

    /// Where to pull `name` (fully qualified; `@` marks a pull by digest) from.
    pub fn plan(&self, name: &str) -> Plan {
        let Some((reg, len)) = self.registry_for(name) else {
            return Plan::Pull(vec![Endpoint {
                reference: name.to_string(),
                insecure: false,
                mirror: false,
            }]);
        };
        if reg.blocked {
            return Plan::Blocked {
                prefix: reg.prefix.clone(),
                file: reg.file.clone(),
            };
        }
        let rest = &name[len..];
        let by_digest = name.contains('@');
        let mut endpoints: Vec<Endpoint> = reg
            .mirrors
            .iter()
            .filter(|m| {
                let from = if reg.mirror_by_digest_only {
                    PullFromMirror::DigestOnly
                } else {
                    m.pull_from
                };
                match from {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => by_digest,
                    PullFromMirror::TagOnly => !by_digest,
                }
            })
            .map(|m| Endpoint {
                reference: format!("{}{rest}", m.location),
                insecure: m.insecure,
                mirror: true,
            })
            .collect();
        endpoints.push(Endpoint {
            reference: match &reg.location {
                Some(l) => format!("{l}{rest}"),
                None => name.to_string(),
            },
            insecure: reg.insecure,
            mirror: false,
        });
        Plan::Pull(endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.apply(super::super::parse::parse(Path::new("t.conf"), text).unwrap());
        c
    }

    fn refs(p: Plan) -> Vec<String> {
        match p {
            Plan::Pull(e) => e.into_iter().map(|e| e.reference).collect(),
            Plan::Blocked { prefix, .. } => vec![format!("blocked by {prefix}")],
        }
    }

    #[test]
    fn prefixes_match_at_component_boundaries() {
        assert_eq!(
            match_len("example.com/foo/app:1", "example.com/foo"),
            Some(15)
        );
        assert_eq!(
            match_len("example.com/foobar/app:1", "example.com/foo"),
            None
        );
        assert_eq!(match_len("example.com/foo:1", "example.com/foo"), Some(15));
        assert_eq!(
            match_len("example.com/foo@sha256:0", "example.com/foo"),
            Some(15)
        );
        assert_eq!(match_len("example.com", "example.com"), Some(11));
        assert_eq!(match_len("example.community/x", "example.com"), None);
        assert_eq!(match_len("a.example.com/x:1", "*.example.com"), Some(13));
        assert_eq!(
            match_len("a.b.example.com:5000/x", "*.example.com"),
            Some(15)
        );
        assert_eq!(match_len("example.com/x", "*.example.com"), None);
        assert_eq!(match_len("notexample.com/x", "*.example.com"), None);
        assert_eq!(match_len("a.example.com.evil/x", "*.example.com"), None);
    }

    #[test]
    fn the_longest_prefix_wins_and_the_location_replaces_it() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "whole.example"
[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
[[registry.mirror]]
location = "m0.local/mirror-for-foo"
[[registry.mirror]]
location = "m1.local/mirrors/foo"
insecure = true
[[registry]]
prefix = "*.example.org"
insecure = true
"#,
        );
        assert_eq!(
            refs(c.plan("example.com/foo/image:latest")),
            [
                "m0.local/mirror-for-foo/image:latest",
                "m1.local/mirrors/foo/image:latest",
                "internal.example/bar/image:latest"
            ]
        );
        let Plan::Pull(e) = c.plan("example.com/foo/image:latest") else {
            panic!()
        };
        assert_eq!(
            e.iter().map(|e| (e.insecure, e.mirror)).collect::<Vec<_>>(),
            [(false, true), (true, true), (false, false)]
        );
        assert_eq!(
            refs(c.plan("example.com/other:1")),
            ["whole.example/other:1"]
        );
        assert_eq!(refs(c.plan("unrelated.io/x:1")), ["unrelated.io/x:1"]);
        // A wildcard without a location keeps the name, with the table's settings.
        let Plan::Pull(e) = c.plan("reg.example.org/x:1") else {
            panic!()
        };
        assert_eq!(e[0].reference, "reg.example.org/x:1");
        assert!(e[0].insecure);
    }

    #[test]
    fn pull_from_mirror_picks_mirrors_by_reference_kind() {
        let c = conf(
            r#"
[[registry]]
location = "origin.example"
[[registry.mirror]]
location = "digests.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.local"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.local"

[[registry]]
location = "strict.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.local"
"#,
        );
        let d = format!("@sha256:{}", "a".repeat(64));
        assert_eq!(
            refs(c.plan("origin.example/app:1")),
            [
                "tags.local/app:1",
                "all.local/app:1",
                "origin.example/app:1"
            ]
        );
        assert_eq!(
            refs(c.plan(&format!("origin.example/app{d}"))),
            [
                format!("digests.local/app{d}"),
                format!("all.local/app{d}"),
                format!("origin.example/app{d}")
            ]
        );
        assert_eq!(
            refs(c.plan("strict.example/app:1")),
            ["strict.example/app:1"]
        );
        assert_eq!(
            refs(c.plan(&format!("strict.example/app{d}"))),
            [format!("m.local/app{d}"), format!("strict.example/app{d}")]
        );
    }

    #[test]
    fn blocked_wins_over_mirrors_and_a_longer_prefix_can_unblock() {
        let c = conf(
            r#"
[[registry]]
prefix = "evil.example"
blocked = true
[[registry.mirror]]
location = "m.local"
[[registry]]
prefix = "evil.example/allowed"
"#,
        );
        assert_eq!(
            refs(c.plan("evil.example/x:1")),
            ["blocked by evil.example"]
        );
        assert_eq!(
            refs(c.plan("evil.example/allowed/x:1")),
            ["evil.example/allowed/x:1"]
        );
    }
}
