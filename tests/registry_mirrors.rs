//! registries.conf against real registries (Debian's `docker-registry` on 127.0.0.1):
//! mirrors tried before an origin that is down or lacks the image, `pull-from-mirror`,
//! blocked registries, aliases and search registries for short names, signatures checked
//! for the requested name whatever place served the bytes, credentials and certs.d per
//! mirror host, and the CRI's PullImage through a mirror. Each test's configuration is a
//! file of its own temp dir named by `CONTAINERS_REGISTRIES_CONF` (or a drop-in of its
//! orbit configuration directory); /etc/containers is never written.

mod common;
#[path = "common/cri.rs"]
mod cri_common;
#[path = "common/pods.rs"]
mod pods_common;
#[path = "common/registry.rs"]
mod registry_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{text, World};
use cri_common::Cri;
use orbit::cri::proto;
use registry_common::*;

/// A world trusting the demo key for `HOST/busybox` of each of `hosts`, whose own
/// configuration erases any `busybox` alias the host's /etc/containers may define (so that
/// search-registry tests mean what they say).
fn world(hosts: &[&str]) -> World {
    let w = World::new();
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.pub");
    for h in hosts {
        w.ok(&[
            "trust",
            "--prefix",
            &format!("{h}/busybox"),
            &key.display().to_string(),
        ]);
    }
    let d = w.path("config/user/registries.conf.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("00-test.conf"), "[aliases]\n\"busybox\" = \"\"\n").unwrap();
    w
}

/// Writes the world's registries.conf (named by `CONTAINERS_REGISTRIES_CONF`).
fn conf(w: &World, text: &str) -> PathBuf {
    let p = w.path("registries.conf");
    fs::write(&p, text).unwrap();
    p
}

/// `orbit ARGS` with `CONTAINERS_REGISTRIES_CONF=conf`.
fn orbit(w: &World, conf: &Path, args: &[&str]) -> Output {
    w.cmd(args)
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .output()
        .unwrap()
}

fn ok(w: &World, conf: &Path, args: &[&str]) -> Output {
    let out = orbit(w, conf, args);
    assert!(
        out.status.success(),
        "orbit {args:?} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn fails(w: &World, conf: &Path, args: &[&str]) -> String {
    let out = orbit(w, conf, args);
    assert_eq!(
        out.status.code(),
        Some(125),
        "orbit {args:?} should fail:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The names in the store.
fn names(w: &World) -> Vec<String> {
    let out = w.ok(&["image", "list", "--no-legend", "--full"]);
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().find(|c| c.contains('/')))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// No name, blob or layer in the store (it may not exist at all).
fn assert_nothing_stored(w: &World) {
    assert!(names(w).is_empty(), "{:?}", names(w));
    assert_eq!(w.count("images/blobs/sha256"), 0, "blobs were stored");
    assert_eq!(w.count("layers/sha256"), 0, "layers were stored");
}

/// Manifest requests the registry saw for `busybox`.
fn manifest_gets(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("GET /v2/busybox/manifests/"))
        .count()
}

/// A mirror and an origin, both plain HTTP and `insecure`.
fn mirrored(origin: &Registry, mirror: &Registry, mirror_extra: &str) -> String {
    format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n{mirror_extra}",
        origin.host(),
        mirror.host()
    )
}

#[test]
fn a_mirror_serves_the_image_while_the_origin_is_down_under_the_requested_name() {
    let mut origin = Registry::start_plain();
    let mirror = Registry::start_plain();
    let w = world(&[&origin.host()]);
    // Named and signed for the origin; only the mirror has it.
    let (_, digest) = image_as(&w, &mirror, &origin.host(), "v1", 1, 4096, true);
    origin.kill();
    let c = conf(&w, &mirrored(&origin, &mirror, ""));
    let requested = format!("{}/busybox:v1", origin.host());
    let out = ok(
        &w,
        &c,
        &["--debug", "fetch", &format!("docker://{requested}")],
    );
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        err.contains(&format!("pulling from mirror {}/busybox:v1", mirror.host())),
        "{err}"
    );
    assert!(err.contains("signature verified"), "{err}");
    assert!(
        err.contains(&format!("{requested} (signature verified")),
        "{err}"
    );
    assert_eq!(
        names(&w),
        std::slice::from_ref(&requested),
        "stored under the requested name only"
    );
    // Fetching again asks the mirror whether the tag moved; nothing is downloaded.
    let again = ok(
        &w,
        &c,
        &["--debug", "fetch", &format!("docker://{requested}")],
    );
    let err = text(&again.stderr);
    assert!(
        err.contains(&format!(
            "checking for a newer manifest from mirror {}/busybox:v1",
            mirror.host()
        )),
        "{err}"
    );
    assert!(err.contains("already in the store"), "{err}");
    // Where the bytes came from is recorded as the source.
    let inspect = w.ok(&["image", "inspect", &requested]);
    assert!(
        inspect.contains(&format!("docker://{}/busybox:v1", mirror.host())),
        "{inspect}"
    );
    // `run` pulls through the mirror too.
    let w2 = world(&[&origin.host()]);
    let c2 = conf(&w2, &mirrored(&origin, &mirror, ""));
    let ran = ok(&w2, &c2, &["run", &format!("docker://{requested}")]);
    assert_eq!(text(&ran.stdout), "hello from v1\n");
    assert_eq!(names(&w2), [requested]);
}

#[test]
fn a_mirror_without_the_image_falls_through_to_the_origin_and_every_failure_is_named() {
    let origin = Registry::start_plain();
    let mirror = Registry::start_plain();
    let w = world(&[&origin.host()]);
    let (_, digest) = image(&w, &origin, "v1", 1, 4096, true);
    let c = conf(&w, &mirrored(&origin, &mirror, ""));
    let requested = format!("{}/busybox:v1", origin.host());
    let out = ok(
        &w,
        &c,
        &["--debug", "fetch", &format!("docker://{requested}")],
    );
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        err.contains(&format!("mirror {}/busybox:v1 failed", mirror.host())),
        "{err}"
    );
    assert!(err.contains(&format!("pulling from {requested}")), "{err}");
    assert_eq!(manifest_gets(&mirror), 1, "{}", mirror.log());
    assert_eq!(names(&w), [requested]);

    // Neither has it: both places and their reasons, nothing stored.
    let w2 = world(&[&origin.host()]);
    let c2 = conf(&w2, &mirrored(&origin, &mirror, ""));
    let e = fails(
        &w2,
        &c2,
        &[
            "fetch",
            &format!("docker://{}/busybox:absent", origin.host()),
        ],
    );
    assert!(e.contains("from any of the 2 place(s) tried"), "{e}");
    assert!(
        e.contains(&format!("mirror {}/busybox:absent: ", mirror.host())),
        "{e}"
    );
    assert!(
        e.contains(&format!("\n  {}/busybox:absent: ", origin.host())),
        "{e}"
    );
    assert_eq!(e.matches("no such image or tag").count(), 2, "{e}");
    assert_nothing_stored(&w2);
}

#[test]
fn a_digest_only_mirror_is_not_used_for_a_tag() {
    let mut origin = Registry::start_plain();
    let mirror = Registry::start_plain();
    let w = world(&[&origin.host()]);
    let (_, digest) = image_as(&w, &mirror, &origin.host(), "v1", 0, 0, true);
    origin.kill();
    let c = conf(
        &w,
        &mirrored(&origin, &mirror, "pull-from-mirror = \"digest-only\"\n"),
    );
    let before = manifest_gets(&mirror);
    let e = fails(
        &w,
        &c,
        &[
            "--debug",
            "fetch",
            &format!("docker://{}/busybox:v1", origin.host()),
        ],
    );
    assert!(!e.contains("pulling from mirror"), "{e}");
    assert!(e.contains("connection refused"), "{e}");
    assert_eq!(
        manifest_gets(&mirror),
        before,
        "the mirror was asked for a tag"
    );
    // By digest, the mirror serves it.
    let by_digest = format!("docker://{}/busybox@{digest}", origin.host());
    let out = ok(&w, &c, &["--debug", "fetch", &by_digest]);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        text(&out.stderr).contains("pulling from mirror"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_blocked_registry_is_refused_clearly_and_nothing_is_stored() {
    let origin = Registry::start_plain();
    let w = world(&[&origin.host()]);
    image(&w, &origin, "v1", 0, 0, true);
    let c = conf(
        &w,
        &format!(
            "[[registry]]\nprefix = \"{}/busybox\"\nlocation = \"{}/busybox\"\ninsecure = true\nblocked = true\n",
            origin.host(),
            origin.host()
        ),
    );
    let before = manifest_gets(&origin);
    let e = fails(
        &w,
        &c,
        &["fetch", &format!("docker://{}/busybox:v1", origin.host())],
    );
    assert!(e.contains("is blocked"), "{e}");
    assert!(
        e.contains(&format!("prefix = \"{}/busybox\"", origin.host())),
        "{e}"
    );
    assert!(e.contains(&c.display().to_string()), "{e}");
    assert_eq!(
        manifest_gets(&origin),
        before,
        "a blocked registry was asked"
    );
    assert_nothing_stored(&w);
}

#[test]
fn an_alias_resolves_a_short_name_to_the_aliased_name() {
    let origin = Registry::start_plain();
    let w = world(&[&origin.host()]);
    let (_, digest) = image(&w, &origin, "v1", 0, 0, true);
    let c = conf(
        &w,
        &format!(
            "unqualified-search-registries = [\"a.invalid\", \"b.invalid\"]\nshort-name-mode = \"enforcing\"\n\n[[registry]]\nlocation = \"{h}\"\ninsecure = true\n\n[aliases]\n\"mybox\" = \"{h}/busybox\"\n",
            h = origin.host()
        ),
    );
    let out = ok(&w, &c, &["--debug", "fetch", "docker://mybox:v1"]);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert!(
        text(&out.stderr).contains("short name 'mybox' is an alias"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(names(&w), [format!("{}/busybox:v1", origin.host())]);
}

#[test]
fn short_names_follow_the_search_registries_and_the_mode() {
    let empty = Registry::start_plain();
    let origin = Registry::start_plain();
    let w = world(&[&origin.host(), &empty.host()]);
    let (_, digest) = image(&w, &origin, "v1", 0, 0, true);
    let text_for = |mode: &str| {
        format!(
            "unqualified-search-registries = [\"{e}\", \"{o}\"]\nshort-name-mode = \"{mode}\"\n\n[[registry]]\nlocation = \"{e}\"\ninsecure = true\n\n[[registry]]\nlocation = \"{o}\"\ninsecure = true\n",
            e = empty.host(),
            o = origin.host()
        )
    };
    // Enforcing, two candidates, no terminal: refused, listing them.
    let c = conf(&w, &text_for("enforcing"));
    let e = fails(&w, &c, &["fetch", "docker://busybox:v1"]);
    assert!(e.contains("short name 'busybox:v1' is ambiguous"), "{e}");
    assert!(
        e.contains(&format!(
            "{}/busybox:v1, {}/busybox:v1",
            empty.host(),
            origin.host()
        )),
        "{e}"
    );
    assert!(
        e.contains("fully qualified") && e.contains("[aliases]"),
        "{e}"
    );
    assert_eq!(manifest_gets(&empty) + manifest_gets(&origin), 0);
    // Permissive and disabled: tried in order, the first that has it wins.
    for mode in ["permissive", "disabled"] {
        let w = world(&[&origin.host(), &empty.host()]);
        let c = conf(&w, &text_for(mode));
        let out = ok(&w, &c, &["fetch", "docker://busybox:v1"]);
        assert_eq!(text(&out.stdout).trim(), digest, "{mode}");
        assert_eq!(
            names(&w),
            [format!("{}/busybox:v1", origin.host())],
            "{mode}"
        );
    }
    // Nowhere: each candidate and why.
    let c = conf(&w, &text_for("permissive"));
    let e = fails(&w, &c, &["fetch", "docker://busybox:none"]);
    assert!(
        e.contains(&format!("{}/busybox:none: ", empty.host())),
        "{e}"
    );
    assert!(
        e.contains(&format!("{}/busybox:none: ", origin.host())),
        "{e}"
    );
}

#[test]
fn the_signature_is_checked_for_the_requested_name_not_the_mirrors() {
    let mut origin = Registry::start_plain();
    let mirror = Registry::start_plain();
    let w = world(&[&origin.host(), &mirror.host()]);
    // Signed for the mirror's own name, offered by the mirror for the origin's.
    let (_, digest) = image_as(&w, &mirror, &mirror.host(), "v2", 0, 0, true);
    origin.kill();
    let c = conf(&w, &mirrored(&origin, &mirror, ""));
    let e = fails(
        &w,
        &c,
        &["fetch", &format!("docker://{}/busybox:v2", origin.host())],
    );
    assert!(
        e.contains(&format!("signs the identity {}/busybox", mirror.host())),
        "{e}"
    );
    assert!(
        e.contains(&format!("this image is {}/busybox", origin.host())),
        "{e}"
    );
    assert_nothing_stored(&w);
    // The same signature is good for the name it was made for.
    let out = ok(
        &w,
        &c,
        &[
            "--insecure-options=http",
            "fetch",
            &format!("docker://{}/busybox:v2", mirror.host()),
        ],
    );
    assert_eq!(text(&out.stdout).trim(), digest);
}

#[test]
fn credentials_and_certs_d_are_those_of_the_mirror_host() {
    let mut origin = Registry::start_plain();
    let mirror = Registry::start(); // TLS (its own CA) and htpasswd
    let w = world(&[&origin.host()]);
    let (_, digest) = image_as(&w, &mirror, &origin.host(), "sec", 0, 0, true);
    origin.kill();
    // The mirror's CA in certs.d/<mirror host>/; not insecure.
    let certs = w.path(&format!("config/system/certs.d/{}", mirror.host()));
    fs::create_dir_all(&certs).unwrap();
    fs::copy(mirror.dir.path().join("ca.crt"), certs.join("ca.crt")).unwrap();
    let c = conf(
        &w,
        &format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\n",
            origin.host(),
            mirror.host()
        ),
    );
    let requested = format!("docker://{}/busybox:sec", origin.host());
    // No credentials for the mirror: refused there, and the origin is down.
    let e = fails(&w, &c, &["fetch", &requested]);
    assert!(
        e.contains(&format!("mirror {}/busybox:sec: ", mirror.host())),
        "{e}"
    );
    assert!(e.contains("authentication failed"), "{e}");
    assert!(e.contains("connection refused"), "{e}");
    assert_nothing_stored(&w);
    // Credentials keyed by the mirror host.
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    fs::write(
        w.path("config/system/auth.json"),
        serde_json::json!({"auths": {mirror.host(): {"auth": token}}}).to_string(),
    )
    .unwrap();
    let out = ok(&w, &c, &["--debug", "fetch", &requested]);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert_eq!(names(&w), [format!("{}/busybox:sec", origin.host())]);

    // Without its CA the mirror's certificate is refused — unless it is `insecure`, which
    // accepts the certificate (and still speaks TLS to it: it has credentials to send).
    let w2 = world(&[&origin.host()]);
    fs::create_dir_all(w2.path("config/system")).unwrap();
    fs::copy(
        w.path("config/system/auth.json"),
        w2.path("config/system/auth.json"),
    )
    .unwrap();
    let strict = conf(
        &w2,
        &format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\n",
            origin.host(),
            mirror.host()
        ),
    );
    let e = fails(&w2, &strict, &["fetch", &requested]);
    assert!(e.contains("certificate"), "{e}");
    assert_nothing_stored(&w2);
    let lax = conf(
        &w2,
        &format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            origin.host(),
            mirror.host()
        ),
    );
    let out = ok(&w2, &lax, &["fetch", &requested]);
    assert_eq!(text(&out.stdout).trim(), digest);
}

#[test]
fn a_location_remaps_a_prefix_to_another_registry() {
    let origin = Registry::start_plain();
    // The name users (and the signature) know; its registry does not exist.
    let public = "registry.example.invalid/team";
    let w = world(&[public]);
    let (_, digest) = image_as(&w, &origin, public, "rw", 0, 0, true);
    let c = conf(
        &w,
        &format!(
            "[[registry]]\nprefix = \"{public}\"\nlocation = \"{}\"\ninsecure = true\n",
            origin.host()
        ),
    );
    let out = ok(&w, &c, &["fetch", &format!("docker://{public}/busybox:rw")]);
    assert_eq!(text(&out.stdout).trim(), digest);
    assert_eq!(names(&w), [format!("{public}/busybox:rw")]);
    assert!(manifest_gets(&origin) >= 1);
}

#[test]
fn a_malformed_registries_conf_names_the_file_and_line_and_stores_nothing() {
    let origin = Registry::start_plain();
    let w = world(&[&origin.host()]);
    image(&w, &origin, "v1", 0, 0, true);
    let src = format!("docker://{}/busybox:v1", origin.host());
    for (bad, line, says) in [
        (
            "unqualified-search-registries = [\"a.example\"]\nshort-name-mode = \"strict\"\n",
            2,
            "enforcing, permissive or disabled",
        ),
        (
            "[[registry]]\nprefix = \"https://example.com/x\"\n",
            2,
            "no scheme",
        ),
        (
            "[[registry]]\nlocation = \"a.example\"\nmirrors = []\n",
            3,
            "unknown field",
        ),
    ] {
        let c = conf(&w, bad);
        let e = fails(&w, &c, &["fetch", &src]);
        let at = format!("{}:{line}", c.display());
        let at_toml = format!("line {line}");
        assert!(
            e.contains(&at) || (e.contains(&c.display().to_string()) && e.contains(&at_toml)),
            "{e}"
        );
        assert!(e.contains(says), "{e}");
        assert_nothing_stored(&w);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pull_image_goes_through_a_mirror() {
    let mut origin = Registry::start_plain();
    let mirror = Registry::start_plain();
    let w = world(&[&origin.host()]);
    let (_, digest) = image_as(&w, &mirror, &origin.host(), "cri", 0, 0, true);
    origin.kill();
    // A drop-in of orbit's own configuration directory (the server's environment is the
    // test's).
    let d = w.path("config/system/registries.conf.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("50-mirror.conf"), mirrored(&origin, &mirror, "")).unwrap();
    let cri = Cri::start(&w, &[]);
    let (_, mut img) = cri.clients().await;
    let name = format!("{}/busybox:cri", origin.host());
    let spec = Some(proto::ImageSpec {
        image: name.clone(),
        ..Default::default()
    });
    let got = img
        .pull_image(proto::PullImageRequest {
            image: spec.clone(),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(got, digest);
    assert!(manifest_gets(&mirror) >= 1, "{}", mirror.log());
    let status = img
        .image_status(proto::ImageStatusRequest {
            image: spec,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.unwrap().repo_tags, vec![name]);
    // A name the mirror does not have, with the origin down: both reasons.
    let e = img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: format!("{}/busybox:absent", origin.host()),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("no such image or tag"), "{e}");
    assert!(e.message().contains("connection refused"), "{e}");
}
