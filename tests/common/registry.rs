//! A real registry for tests: Debian's `docker-registry` (the reference distribution
//! server) on a free port of 127.0.0.1 — with TLS from a CA made here and htpasswd auth, or
//! plain HTTP and anonymous — and test images pushed into it with skopeo, signed with the
//! demo key by `orbit image sign`.
// Shared by several test crates; each uses part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::common::{text, World};
use crate::pods_common::poll;
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};

pub const USER: &str = "tester";
pub const PASS: &str = "s3cret";

/// A registry on a free port of 127.0.0.1; killed (by pid) on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    /// TLS and htpasswd auth (else plain HTTP, anonymous).
    secure: bool,
}

pub fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
}

impl Registry {
    /// With TLS (a CA made here) and htpasswd auth.
    pub fn start() -> Registry {
        Registry::start_with(true)
    }

    /// Plain HTTP, anonymous: for a [`FaultProxy`] in front of it.
    pub fn start_plain() -> Registry {
        Registry::start_with(false)
    }

    fn start_with(secure: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("orbit-reg-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {p}/data\nhttp:\n  addr: 127.0.0.1:{port}\n",
            p = d.display()
        );
        if secure {
            sh(
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj '/CN=orbit test CA' && \
                 openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' && \
                 printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && \
                 openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf && \
                 mkdir certs && cp ca.crt certs/ca.crt",
                d,
            );
            sh(&format!("htpasswd -Bbn {USER} {PASS} > htpasswd"), d);
            config.push_str(&format!(
                "  tls:\n    certificate: {p}/server.crt\n    key: {p}/server.key\nauth:\n  htpasswd:\n    realm: orbit-test\n    path: {p}/htpasswd\n",
                p = d.display()
            ));
        }
        fs::write(d.join("config.yml"), config).unwrap();
        let child = Registry::spawn(d, port);
        Registry {
            dir,
            port,
            child,
            secure,
        }
    }

    fn spawn(d: &Path, port: u16) -> Child {
        let log = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(name))
                .unwrap()
        };
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log("access.log"))
            .stderr(log("registry.log"))
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        poll(Duration::from_secs(20), "the registry to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        child
    }

    /// Kills the registry (by its pid), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Registry::spawn(self.dir.path(), self.port);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn ca(&self) -> String {
        format!("--ca-cert={}", self.dir.path().join("ca.crt").display())
    }

    pub fn log(&self) -> String {
        let d = self.dir.path();
        fs::read_to_string(d.join("access.log")).unwrap_or_default()
            + &fs::read_to_string(d.join("registry.log")).unwrap_or_default()
    }

    /// Pushes tag `r` of `layout` as `repo_tag`.
    pub fn push(&self, layout: &Path, r: &str, repo_tag: &str) {
        self.push_with(layout, r, repo_tag, &[]);
    }

    /// [`Registry::push`] with extra skopeo flags (`--all` for an index).
    pub fn push_with(&self, layout: &Path, r: &str, repo_tag: &str, extra: &[&str]) {
        let certs = self.dir.path().join("certs");
        let access: Vec<String> = if self.secure {
            vec![
                format!("--dest-cert-dir={}", certs.display()),
                format!("--dest-creds={USER}:{PASS}"),
            ]
        } else {
            vec!["--dest-tls-verify=false".into()]
        };
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests"])
            .args(extra)
            .args(access)
            .arg(format!("oci:{}:{r}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo push: {}", text(&out.stderr));
    }

    /// The registry's own copy of blob `digest` (to tamper with).
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox image named for the registry with `layers` extra layers of `size` random bytes,
/// signed with the demo key (inside the layout) unless `sign` is false. Returns the layout,
/// its manifest digest and the blob digest of its last layer.
pub fn image(
    w: &World,
    reg: &Registry,
    tag: &str,
    layers: usize,
    size: usize,
    sign: bool,
) -> (PathBuf, String) {
    image_as(w, reg, &reg.host(), tag, layers, size, sign)
}

/// [`image`] named for `host` (a proxy in front of `reg`).
pub fn image_as(
    w: &World,
    reg: &Registry,
    host: &str,
    tag: &str,
    layers: usize,
    size: usize,
    sign: bool,
) -> (PathBuf, String) {
    let src = w.path(&format!("src-{tag}"));
    fs::create_dir_all(src.join("base/bin")).unwrap();
    fs::copy("/bin/busybox", src.join("base/bin/busybox")).unwrap();
    for a in ["sh", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", src.join("base/bin").join(a)).unwrap();
    }
    fs::create_dir_all(src.join("base/etc")).unwrap();
    fs::write(src.join("base/etc/motd"), format!("hello from {tag}\n")).unwrap();
    let mut ls = vec![Layer {
        tar: tar_dir(&src.join("base")).unwrap(),
        compression: Compression::Gzip,
    }];
    for i in 0..layers {
        let d = src.join(format!("l{i}"));
        fs::create_dir_all(&d).unwrap();
        let mut data = vec![0u8; size];
        let mut x: u64 = 0x9e3779b97f4a7c15 ^ (i as u64 + 1);
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(d.join(format!("data{i}")), data).unwrap();
        ls.push(Layer {
            tar: tar_dir(&d).unwrap(),
            compression: Compression::None,
        });
    }
    let layout = w.path(&format!("layout-{tag}"));
    let name = format!("{host}/busybox:{tag}");
    let run = RunConfig {
        cmd: Some(vec!["/bin/cat".into(), "/etc/motd".into()]),
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let written = write_image(&layout, &name, &ls, &run).unwrap();
    if sign {
        let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-key.key");
        w.sign(&format!("oci:{}", layout.display()), &key);
        reg.push(
            &layout,
            &format!(
                "sha256-{}.sig",
                written.manifest.trim_start_matches("sha256:")
            ),
            &format!(
                "busybox:sha256-{}.sig",
                written.manifest.trim_start_matches("sha256:")
            ),
        );
    }
    reg.push(&layout, &name, &format!("busybox:{tag}"));
    (layout, written.manifest)
}
