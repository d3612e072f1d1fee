//! Shared helpers for orbit's integration tests: an isolated store and config per test,
//! running the real `orbit` binary, and building images with `orbit-images`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};

/// The orbit binary under test.
pub fn orbit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orbit"))
}

/// An isolated orbit world: its own store, config dirs and scratch space, removed on drop.
/// With [`World::with_netns`], every orbit command runs in the world's own network
/// namespace (its bridges, rules and pods stay there) with the default network.
pub struct World {
    pub tmp: tempfile::TempDir,
    /// The world's network namespace (dropped after the world's pods are collected).
    pub netns: Option<std::sync::Arc<fs::File>>,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::Builder::new()
            .prefix("orbit-test-")
            .tempdir()
            .expect("tempdir");
        World { tmp, netns: None }
    }

    /// Makes orbit commands run in `netns` (an open network namespace file).
    pub fn with_netns(mut self, netns: fs::File) -> World {
        self.netns = Some(std::sync::Arc::new(netns));
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// `orbit ARGS` with this world's store and config directories.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(orbit_bin());
        c.args(args)
            .env("ORBIT_DIR", self.store())
            .env("ORBIT_SYSTEM_CONFIG", self.path("config/vendor"))
            .env("ORBIT_LOCAL_CONFIG", self.path("config/system"))
            .env("ORBIT_USER_CONFIG", self.path("config/user"))
            // Pods get no network unless a test asks (network tests run orbit in a network
            // namespace of their own, see tests/net.rs).
            .env(
                "ORBIT_NET",
                if self.netns.is_some() {
                    "default"
                } else {
                    "none"
                },
            )
            .env_remove("RUST_BACKTRACE");
        if let Some(ns) = &self.netns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: setns(2) is a single async-signal-safe system call on a descriptor the
            // parent keeps open; nothing else runs between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("orbit runs")
    }

    /// Runs orbit and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "orbit {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs orbit and asserts it fails with status 125; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "orbit {args:?} should fail with 125:\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// Generates a key pair PREFIX.key / PREFIX.pub with orbit.
    pub fn keygen(&self, name: &str) -> (PathBuf, PathBuf) {
        let prefix = self.path(name);
        self.ok(&["image", "keygen", prefix.to_str().unwrap()]);
        (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.pub")),
        )
    }

    /// Trusts a key for a prefix.
    pub fn trust(&self, prefix: &str, pubkey: &Path) {
        self.ok(&["trust", "--prefix", prefix, pubkey.to_str().unwrap()]);
    }

    /// Signs a source with a key.
    pub fn sign(&self, source: &str, key: &Path) {
        self.ok(&["image", "sign", "--key", key.to_str().unwrap(), source]);
    }

    /// Asserts the store exists (its directories and `index.json`) and holds no blob,
    /// layer, temp file or name: what a fetch that failed after opening the store (a bad
    /// blob or layer), `rm` of the last image or `gc` leaves behind.
    pub fn assert_store_empty(&self) {
        let store = self.store();
        for dir in ["images/blobs/sha256", "layers/sha256", "tmp"] {
            let p = store.join(dir);
            let entries: Vec<_> = fs::read_dir(&p)
                .unwrap_or_else(|e| panic!("{} should exist: {e}", p.display()))
                .map(|e| e.unwrap().path())
                .collect();
            assert!(
                entries.is_empty(),
                "{} should be empty, has {entries:?}",
                p.display()
            );
        }
        let index_path = store.join("images/index.json");
        let index = fs::read_to_string(&index_path)
            .unwrap_or_else(|e| panic!("{} should exist: {e}", index_path.display()));
        let v: serde_json::Value = serde_json::from_str(&index).unwrap();
        assert_eq!(
            v["manifests"].as_array().map(|a| a.len()),
            Some(0),
            "index.json should list nothing: {index}"
        );
    }

    /// Asserts there is no store at all: what a first fetch that failed before reaching the
    /// store (a missing or malformed source, a refused signature) leaves behind.
    pub fn assert_no_store(&self) {
        let store = self.store();
        assert!(
            !store.exists(),
            "{} should not exist, has {:?}",
            store.display(),
            fs::read_dir(&store).map(|it| it.map(|e| e.unwrap().path()).collect::<Vec<_>>())
        );
    }

    pub fn count(&self, rel: &str) -> usize {
        fs::read_dir(self.store().join(rel))
            .map(|it| it.count())
            .unwrap_or(0)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes files (path → contents) into a new directory and returns it.
pub fn tree(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    for (p, content) in files {
        let full = root.join(p);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    root.to_path_buf()
}

/// A small two-layer image (gzip + zstd) in an OCI layout; returns the layout dir.
pub fn simple_image(world: &World, layout: &str, name: &str) -> PathBuf {
    let base = tree(
        &world.path(&format!("{layout}-src/base")),
        &[
            ("bin/hello", "#!/bin/sh\necho hello\n"),
            ("etc/os-release", "ID=test\n"),
        ],
    );
    let top = tree(
        &world.path(&format!("{layout}-src/top")),
        &[("etc/motd", "hi there\n")],
    );
    let out = world.path(layout);
    write_image(
        &out,
        name,
        &[
            Layer {
                tar: tar_dir(&base).unwrap(),
                compression: Compression::Gzip,
            },
            Layer {
                tar: tar_dir(&top).unwrap(),
                compression: Compression::Zstd,
            },
        ],
        &RunConfig {
            cmd: Some(vec!["/bin/hello".into()]),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
    )
    .unwrap();
    out
}

/// An image of gzip-compressed layers (base first) in an OCI layout; returns the layout dir.
pub fn gzip_layers_image(world: &World, layout: &str, name: &str, tars: Vec<Vec<u8>>) -> PathBuf {
    let out = world.path(layout);
    let layers: Vec<Layer> = tars
        .into_iter()
        .map(|tar| Layer {
            tar,
            compression: Compression::Gzip,
        })
        .collect();
    write_image(&out, name, &layers, &RunConfig::default()).unwrap();
    out
}

/// An image whose single layer is `tar` (uncompressed), for hostile-archive tests.
pub fn raw_image(world: &World, layout: &str, name: &str, tar: Vec<u8>, c: Compression) -> PathBuf {
    let out = world.path(layout);
    write_image(
        &out,
        name,
        &[Layer {
            tar,
            compression: c,
        }],
        &RunConfig::default(),
    )
    .unwrap();
    out
}

/// Writes the OCI layout `layout` as the oci-archive `archive` (with the system `tar`).
pub fn tar_layout(layout: &Path, archive: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(layout)
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of {} failed", layout.display());
}

/// `skopeo inspect REFERENCE`, asserted to succeed; returns its JSON.
pub fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(reference)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A path inside a source, as an `oci:` reference.
pub fn oci(p: &Path) -> String {
    format!("oci:{}", p.display())
}

/// The manifest digest a layout's index names for `name`.
pub fn layout_digest(layout: &Path, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .expect("name in index")
}

/// A tmpfs mounted by the test, unmounted (with what is below it) when dropped.
pub struct TestMount(PathBuf);

impl TestMount {
    /// A tmpfs at `dir` (made if missing); made shared, a peer group of its own, if `shared`
    /// (the host's / stays as it is), else left as the kernel mounted it.
    pub fn tmpfs(dir: &Path, shared: bool) -> TestMount {
        use nix::mount::{mount, MsFlags};
        fs::create_dir_all(dir).unwrap();
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        let guard = TestMount(dir.to_path_buf());
        if shared {
            mount(
                None::<&str>,
                dir,
                None::<&str>,
                MsFlags::MS_SHARED,
                None::<&str>,
            )
            .unwrap();
        }
        guard
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let below = |m: &str| {
            m == self.0.to_str().unwrap() || m.starts_with(&format!("{}/", self.0.display()))
        };
        let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| below(m))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// True while process `pid` runs: it exists and is not a zombie (state `Z` or `X` in
/// `/proc/PID/stat`), which has ended and holds nothing but its exit status.
pub fn process_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, after) = s.rsplit_once(") ")?;
            after.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}
