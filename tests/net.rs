//! CNI networking against the real plugins (Debian's containernetworking-plugins), the real
//! kernel and iptables. Every test runs orbit inside a network namespace of its own (the
//! test's "host": bridges, rules and pods stay there) with a dummy interface `host0` at
//! 10.99.0.1/24 standing for the host's address; traffic goes only between the test and its
//! own pods. Each test ends by asserting that nothing of its pods is left: no veth, no pinned
//! namespace, no per-pod iptables or nftables rule, no IPAM lease.
//!
//! The host here has both iptables (iptables-nft) and nft; `ORBIT_FIREWALL=nftables` (set on
//! the orbit commands of the tests that ask) makes orbit behave as on a host without iptables.

mod common;
#[path = "common/pods.rs"]
mod pods_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{text, World};
use orbit_images::{tar_dir, write_image, Compression, Layer, RunConfig};
use pods_common::*;

const WEB: &str = "example.com/web:latest";
const HOST_IP: &str = "10.99.0.1";

/// A world whose orbit commands run in a fresh network namespace; on drop its pods are
/// collected and the namespace deleted.
struct NetWorld {
    w: World,
    name: String,
}

impl std::ops::Deref for NetWorld {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

impl NetWorld {
    fn new() -> NetWorld {
        let name = format!("orbit-t-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let out = sh(&format!("ip netns add {name}"));
        assert!(out.status.success(), "ip netns add: {}", text(&out.stderr));
        let file = fs::File::open(format!("/run/netns/{name}")).unwrap();
        // The guard exists from here on: a failed setup still deletes the namespace.
        let nw = NetWorld {
            w: World::new().with_netns(file),
            name,
        };
        // (This kernel has no dummy interfaces: a veth pair stands for the host's NIC.)
        let out = nw.ns(&format!(
            "ip link set lo up && ip link add host0 type veth peer name host0p && ip addr add {HOST_IP}/24 dev host0 && ip link set host0 up && ip link set host0p up"
        ));
        assert!(out.status.success(), "netns setup: {}", text(&out.stderr));
        fetch(&nw, &layouts().busybox);
        fetch(&nw, &web_layout());
        nw
    }

    /// Runs a shell command in the world's namespace.
    fn ns(&self, cmd: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    fn ns_out(&self, cmd: &str) -> String {
        let o = self.ns(cmd);
        format!("{}{}", text(&o.stdout), text(&o.stderr))
    }

    /// The pods' veths (not the host0 pair standing for the host's NIC).
    fn pod_veths(&self) -> Vec<String> {
        self.ns_out("ip -o link show type veth")
            .lines()
            .filter(|l| !l.contains("host0"))
            .map(str::to_string)
            .collect()
    }

    fn write_conf(&self, file: &str, json: &str) {
        let d = self.path("config/system/net.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(file), json).unwrap();
    }

    /// Nothing of any pod is left in the namespace or the store.
    fn assert_clean(&self) {
        let veths = self.pod_veths();
        assert!(veths.is_empty(), "veths left: {veths:?}");
        let rules = self.ns_out("iptables-save");
        let per_pod: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("id: \"") || l.contains("CNI-DN-"))
            .collect();
        assert!(per_pod.is_empty(), "per-pod rules left: {per_pod:#?}");
        let per_pod: Vec<String> = self
            .nft_rules()
            .into_iter()
            .filter(|r| r.comment.starts_with("orbit pod "))
            .map(|r| format!("{r:?}"))
            .collect();
        assert!(
            per_pod.is_empty(),
            "per-pod nftables rules left: {per_pod:#?}"
        );
        let store = self.store();
        let netns_mounts = mounts_with(&store.display().to_string());
        assert!(netns_mounts.is_empty(), "mounts left: {netns_mounts:#?}");
        let leases = leases(&store);
        assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
    }
}

/// A rule of orbit's nftables table, as `nft -j` lists it.
#[derive(Debug, Clone)]
struct NftRule {
    chain: String,
    comment: String,
    /// The rule's expressions (JSON).
    expr: serde_json::Value,
}

impl NetWorld {
    /// `orbit ARGS` with `ORBIT_FIREWALL=mode`.
    fn fw_cmd(&self, mode: &str, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env("ORBIT_FIREWALL", mode);
        c
    }

    /// The rules of orbit's nftables table in the world's namespace (none: no table).
    fn nft_rules(&self) -> Vec<NftRule> {
        let out = self.ns("nft -j list table inet orbit");
        if !out.status.success() {
            let e = text(&out.stderr);
            assert!(e.contains("No such file or directory"), "nft: {e}");
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i.get("rule"))
            .map(|r| NftRule {
                chain: r["chain"].as_str().unwrap().to_string(),
                comment: r["comment"].as_str().unwrap_or_default().to_string(),
                expr: r["expr"].clone(),
            })
            .collect()
    }

    /// The rules of orbit's table whose comment starts with `prefix`.
    fn nft_tagged(&self, prefix: &str) -> Vec<NftRule> {
        self.nft_rules()
            .into_iter()
            .filter(|r| r.comment.starts_with(prefix))
            .collect()
    }
}

/// host-local's lease files (named after the address) under the store's IPAM directory.
fn leases(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for net in fs::read_dir(store.join("net/ipam"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(net.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().to_string();
            if n.parse::<std::net::IpAddr>().is_ok() {
                out.push(f.path());
            }
        }
    }
    out
}

impl Drop for NetWorld {
    fn drop(&mut self) {
        let _ = self.w.run(&["gc", "--grace-period=0"]);
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

/// busybox with a named port: label `orbit.dev/port.http=80/tcp`, exposed 80/tcp and 53/udp.
fn web_layout() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "net-web-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let src = dir.join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::copy("/bin/busybox", src.join("bin/busybox")).unwrap();
    for a in [
        "sh", "httpd", "wget", "ip", "cat", "echo", "mkdir", "sleep", "nc", "ping", "ls", "true",
    ] {
        std::os::unix::fs::symlink("busybox", src.join("bin").join(a)).unwrap();
    }
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::create_dir_all(src.join("etc")).unwrap();
    let layout = dir.join("layout");
    let run = RunConfig {
        cmd: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/bin".into()],
        labels: [("orbit.dev/port.http".to_string(), "80/tcp".to_string())].into(),
        exposed_ports: vec!["80/tcp".into(), "53/udp".into()],
        ..Default::default()
    };
    write_image(
        &layout,
        WEB,
        &[Layer {
            tar: tar_dir(&src).unwrap(),
            compression: Compression::Gzip,
        }],
        &run,
    )
    .unwrap();
    fs::remove_dir_all(&src).unwrap();
    layout
}

/// Stops a background pod, collects it, and checks nothing of any pod is left.
fn stop_and_collect(w: &NetWorld, pod: &mut BgPod) {
    out_ok(w, &["stop", &pod.uuid]);
    pod.wait(Duration::from_secs(20));
    out_ok(w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

/// A web server pod answering `/` with `body`.
fn server<'a>(w: &'a NetWorld, body: &str, extra: &[&str]) -> BgPod<'a> {
    let script = server_script(body);
    let args = sh_args(extra, &script);
    BgPod::start(w, &args)
}

fn first_ip(w: &World, uuid: &str) -> String {
    let st = status_json(w, uuid);
    let ip = st["networks"][0]["ips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no network in status: {st}"));
    ip.split('/').next().unwrap().to_string()
}

/// Runs a one-shot pod and returns its output (asserting success).
/// `POD_FLAGS… WEB --exec /bin/sh -- -c SCRIPT`: the image's shell running `script`.
fn sh_args<'a>(pod_flags: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = pod_flags.to_vec();
    args.extend([WEB, "--exec", "/bin/sh", "--", "-c", script]);
    args
}

/// Runs `script` in a one-shot pod (pod flags first) and returns its output.
fn run_sh(w: &World, pod_flags: &[&str], script: &str) -> String {
    run_ok(w, &sh_args(pod_flags, script))
}

fn run_ok(w: &World, args: &[&str]) -> String {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    out_ok(w, &full)
}

#[test]
fn two_pods_on_the_default_network_reach_each_other_and_status_shows_the_network() {
    let w = NetWorld::new();
    let mut a = server(&w, "hello-from-a", &[]);
    let ip = first_ip(&w, &a.uuid);
    assert!(ip.starts_with("172.16.28."), "{ip}");
    let st = status_json(&w, &a.uuid);
    assert_eq!(st["networks"][0]["name"], "default");
    assert_eq!(st["networks"][0]["interface"], "eth0");
    assert_eq!(st["networks"][0]["gateways"][0], "172.16.28.1");
    let text_status = out_ok(&w, &["status", &a.uuid]);
    assert!(
        text_status.contains(&format!(
            "networks=default:interface=eth0,ip={ip}/24,gateway=172.16.28.1"
        )),
        "{text_status}"
    );
    let list = out_ok(&w, &["list"]);
    assert!(
        list.contains("NETWORKS") && list.contains(&format!("default:{ip}")),
        "{list}"
    );
    let got = run_ok(
        &w,
        &[
            WEB,
            "--exec",
            "/bin/wget",
            "--",
            "-qO-",
            &format!("http://{ip}/"),
        ],
    );
    assert_eq!(got.trim(), "hello-from-a");
    // The pod's own name resolves to its address.
    let hosts = run_ok(
        &w,
        &[
            "--hostname=web1",
            WEB,
            "--exec",
            "/bin/cat",
            "--",
            "/etc/hosts",
        ],
    );
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("172.16.28.") && l.ends_with("\tweb1")),
        "{hosts}"
    );
    stop_and_collect(&w, &mut a);
}

#[test]
fn a_forwarded_port_answers_on_the_hosts_address_by_name_and_by_number() {
    let w = NetWorld::new();
    let mut a = server(&w, "by-name", &["--port=http:18080"]);
    let mut b = server(&w, "by-number", &["--port=tcp:80:18081:10.99.0.1"]);
    for (addr, port, body) in [
        (HOST_IP, 18080, "by-name"),
        (HOST_IP, 18081, "by-number"),
        ("127.0.0.1", 18080, "by-name"),
    ] {
        let out = w.ns(&format!("busybox wget -qO- http://{addr}:{port}/"));
        assert_eq!(
            text(&out.stdout).trim(),
            body,
            "{addr}:{port}: {}",
            text(&out.stderr)
        );
    }
    // Both tools here (auto): the network's masquerade in orbit's nftables table, its
    // FORWARD accepts in iptables too (another table's DROP would win over an nftables
    // accept), and the forwards through portmap.
    assert_eq!(w.nft_tagged(DEFAULT_TAG).len(), 3, "{:#?}", w.nft_rules());
    assert!(
        w.nft_tagged("orbit pod ").is_empty(),
        "{:#?}",
        w.nft_rules()
    );
    let ipt = w.ns_out("iptables-save");
    assert!(ipt.contains("CNI-DN-"), "{ipt}");
    let ours: Vec<&str> = ipt
        .lines()
        .filter(|l| l.contains("orbit network default"))
        .collect();
    assert!(
        ours.len() == 2 && ours.iter().all(|l| l.starts_with("-A FORWARD")),
        "{ipt}"
    );
    // The same host port again is refused before anything is made.
    let e = out_125(
        &w,
        &["run", "--port=http:18080", WEB, "--exec", "/bin/true"],
    );
    assert!(e.contains("18080") && e.contains(&a.uuid), "{e}");
    // So is a port a program on the host holds.
    let e = {
        let ns = fs::File::open(format!("/run/netns/{}", w.name)).unwrap();
        let holder = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only; the thread ends after the check.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            std::net::TcpListener::bind("0.0.0.0:18082").unwrap()
        })
        .join()
        .unwrap();
        let e = out_125(
            &w,
            &["run", "--port=tcp:80:18082", WEB, "--exec", "/bin/true"],
        );
        drop(holder);
        e
    };
    assert!(e.contains("already using it"), "{e}");
    let e = out_125(&w, &["run", "--port=ftp:21", WEB, "--exec", "/bin/true"]);
    assert!(
        e.contains("no port named 'ftp'") && e.contains("http"),
        "{e}"
    );
    for p in [&mut a, &mut b] {
        out_ok(&w, &["stop", &p.uuid]);
        p.wait(Duration::from_secs(20));
    }
    let rules = w.ns_out("iptables-save -t nat");
    assert!(
        !rules.contains("18080") && !rules.contains("18081"),
        "{rules}"
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

#[test]
fn default_restricted_reaches_the_host_but_nothing_beyond_its_subnet() {
    let w = NetWorld::new();
    let script = "ip route; ping -c1 -W2 172.16.29.1 >/dev/null && echo gw-ok; nc -w2 10.99.0.1 9 </dev/null 2>&1; true";
    let out = run_sh(&w, &["--net=default-restricted"], script);
    assert!(!out.contains("default via"), "{out}");
    assert!(out.contains("172.16.29.0/24"), "{out}");
    assert!(out.contains("gw-ok"), "{out}");
    assert!(out.contains("unreachable"), "{out}");
    // The default network does route there (the connection is refused, not unreachable).
    let out = run_sh(
        &w,
        &[],
        "ip route; nc -w2 10.99.0.1 9 </dev/null 2>&1; true",
    );
    assert!(out.contains("default via 172.16.28.1"), "{out}");
    assert!(
        out.contains("refused") && !out.contains("unreachable"),
        "{out}"
    );
    w.assert_clean();
}

#[test]
fn none_has_only_loopback_and_host_sees_the_hosts_interfaces() {
    let w = NetWorld::new();
    let out = run_ok(
        &w,
        &["--net=none", WEB, "--exec", "/bin/ip", "--", "-o", "link"],
    );
    let links: Vec<&str> = out.lines().collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].contains(": lo:"), "{out}");
    let out = run_ok(
        &w,
        &["--net=host", WEB, "--exec", "/bin/ip", "--", "-o", "addr"],
    );
    assert!(out.contains("host0") && out.contains(HOST_IP), "{out}");
    assert!(status_json(&w, &only_pod_any(&w))["networks"].is_null());
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

fn only_pod_any(w: &World) -> String {
    list_json(w)[0]["uuid"].as_str().unwrap().to_string()
}

#[test]
fn named_networks_bridge_and_macvlan_with_cni_args() {
    let w = NetWorld::new();
    let ipam = w.path("ipam").display().to_string();
    w.write_conf(
        "10-second.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"second","plugins":[{{"type":"bridge","bridge":"second0","isGateway":true,
               "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.98.0.0/24"}}]],"dataDir":"{ipam}"}}}}]}}"#
        ),
    );
    w.write_conf(
        "20-mv.conf",
        &format!(
            r#"{{"cniVersion":"0.4.0","name":"mv","type":"macvlan","master":"host0","mode":"bridge",
               "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.99.0.0/24","rangeStart":"10.99.0.100","rangeEnd":"10.99.0.120"}}]],"dataDir":"{ipam}"}}}}"#
        ),
    );
    let out = run_ok(
        &w,
        &[
            "--net=default,second:IP=10.98.0.50,mv",
            WEB,
            "--exec",
            "/bin/ip",
            "--",
            "-o",
            "-4",
            "addr",
        ],
    );
    assert!(out.contains("eth0") && out.contains("172.16.28."), "{out}");
    assert!(
        out.contains("eth1") && out.contains("10.98.0.50/24"),
        "{out}"
    );
    assert!(
        out.contains("eth2") && out.contains("10.99.0.100/24"),
        "{out}"
    );
    let uuid = only_pod_any(&w);
    let st = status_json(&w, &uuid);
    let names: Vec<&str> = st["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "second", "mv"]);
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
    let left: Vec<_> = fs::read_dir(&ipam)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| {
            f.file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .collect();
    assert!(
        left.is_empty(),
        "leases left in the named networks: {left:?}"
    );
}

#[test]
fn dns_and_hosts_files_follow_the_flags() {
    let w = NetWorld::new();
    let cat = ["--exec", "/bin/cat", "--", "/etc/resolv.conf", "/etc/hosts"];
    let mut args = vec![
        "--dns=10.1.1.1",
        "--dns=10.1.1.2",
        "--dns-search=a.example",
        "--dns-opt=ndots:3",
        "--dns-domain=a.example",
        "--hosts-entry=10.2.2.2=db.local,db",
        "--hostname=web",
        WEB,
    ];
    args.extend(cat);
    let out = run_ok(&w, &args);
    assert!(out.starts_with("nameserver 10.1.1.1\nnameserver 10.1.1.2\ndomain a.example\nsearch a.example\noptions ndots:3\n"), "{out}");
    assert!(
        out.contains("127.0.0.1\tlocalhost\n") && out.contains("10.2.2.2\tdb.local db\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("172.16.28.") && l.ends_with("\tweb")),
        "{out}"
    );
    // --dns=host copies the host's file; --hosts-entry=host starts from the host's hosts.
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let out = run_ok(
        &w,
        &[
            "--dns=host",
            WEB,
            "--exec",
            "/bin/cat",
            "--",
            "/etc/resolv.conf",
        ],
    );
    assert_eq!(out, host_resolv);
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap();
    let out = run_ok(
        &w,
        &[
            "--hosts-entry=host",
            WEB,
            "--exec",
            "/bin/cat",
            "--",
            "/etc/hosts",
        ],
    );
    assert!(out.starts_with(host_hosts.trim_end()), "{out}");
    // --dns=none leaves the image's own (this image has none).
    let out = w.run(&[
        "run",
        "--dns=none",
        WEB,
        "--exec",
        "/bin/ls",
        "--",
        "/etc/resolv.conf",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let e = out_125(
        &w,
        &["run", "--dns=dns.example", WEB, "--exec", "/bin/true"],
    );
    assert!(
        e.contains("--dns=dns.example") && e.contains("not an IP"),
        "{e}"
    );
    assert_no_pods_but_exited(&w);
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

/// Only exited pods (no half-made ones) are in the store.
fn assert_no_pods_but_exited(w: &World) {
    for (state, uuid) in pod_dirs(w) {
        assert_eq!(state, "run", "pod {uuid} left in {state}");
    }
}

#[test]
fn a_hundred_create_destroy_cycles_leave_nothing() {
    let w = NetWorld::new();
    for i in 0..100 {
        let out = w.run(&["run", WEB, "--exec", "/bin/true"]);
        assert!(out.status.success(), "cycle {i}: {}", text(&out.stderr));
        if i % 10 == 9 {
            out_ok(&w, &["gc", "--grace-period=0"]);
        }
        // Each exit tore its network down already (the stage1's exit hook).
        let veths = w.pod_veths();
        assert!(veths.is_empty(), "cycle {i}: veth left: {veths:?}");
    }
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    w.assert_clean();
}

#[test]
fn kill_9_of_a_networked_pod_then_gc_leaves_nothing() {
    let w = NetWorld::new();
    let mut a = server(&w, "doomed", &["--port=http:18090"]);
    let uuid = a.uuid.clone();
    assert_eq!(w.pod_veths().len(), 1, "{:?}", w.pod_veths());
    // SAFETY: kill(2) of the orbit run process this test started.
    unsafe { libc::kill(a.run_pid() as i32, libc::SIGKILL) };
    a.wait(Duration::from_secs(20));
    // Nothing ran the exit hook: the attachment is still there until gc.
    assert!(pod_dir(&w, &uuid).join("net").exists());
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    w.assert_clean();
    let rules = w.ns_out("iptables-save -t nat");
    assert!(!rules.contains("18090"), "{rules}");
}

#[test]
fn bad_networks_are_clear_errors_and_leave_no_half_made_pod() {
    let w = NetWorld::new();
    let e = out_125(&w, &["run", "--net=nosuchnet", WEB, "--exec", "/bin/true"]);
    assert!(e.contains("network 'nosuchnet': no such network"), "{e}");
    w.write_conf(
        "30-bad.conflist",
        r#"{"cniVersion":"1.0.0","name":"noplugin","plugins":[{"type":"no-such-plugin"}]}"#,
    );
    let e = out_125(&w, &["run", "--net=noplugin", WEB, "--exec", "/bin/true"]);
    assert!(
        e.contains("network 'noplugin'") && e.contains("'no-such-plugin' not found"),
        "{e}"
    );
    w.write_conf("40-broken.conflist", "{ \"name\": \"broken\", ");
    let e = out_125(&w, &["run", "--net=broken", WEB, "--exec", "/bin/true"]);
    assert!(e.contains("40-broken.conflist: not valid JSON"), "{e}");
    // An exhausted subnet: one address, the second pod is refused and undone.
    let ipam = w.path("ipam1").display().to_string();
    w.write_conf(
        "50-tiny.conflist",
        &format!(
            r#"{{"cniVersion":"1.0.0","name":"tiny","plugins":[{{"type":"bridge","bridge":"tiny0","isGateway":true,
               "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.97.0.0/24","rangeStart":"10.97.0.10","rangeEnd":"10.97.0.10"}}]],"dataDir":"{ipam}"}}}}]}}"#
        ),
    );
    let mut a = BgPod::start(
        &w,
        &["--net=tiny", WEB, "--exec", "/bin/sleep", "--", "1000"],
    );
    let e = out_125(
        &w,
        &["run", "--net=default,tiny", WEB, "--exec", "/bin/true"],
    );
    assert!(
        e.contains("network 'tiny'") && e.contains("no IP addresses available"),
        "{e}"
    );
    // The refused pod is gone, and so is its attachment to `default` (made first).
    assert_eq!(pod_dirs(&w).len(), 1, "{:?}", pod_dirs(&w));
    assert_eq!(w.pod_veths().len(), 1, "{:?}", w.pod_veths());
    assert_eq!(
        leases(&w.store()).len(),
        0,
        "the default network's lease was not released"
    );
    out_ok(&w, &["stop", &a.uuid]);
    a.wait(Duration::from_secs(20));
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    w.assert_clean();
}

#[test]
fn check_network_reports_a_pod_whose_interface_was_removed() {
    let w = NetWorld::new();
    let mut a = server(&w, "checked", &[]);
    out_ok(&w, &["status", "--check-network", &a.uuid]);
    let netns = pod_dir(&w, &a.uuid).join("netns");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "link", "del", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let e = out_125(&w, &["status", "--check-network", &a.uuid]);
    assert!(
        e.contains("network 'default'") && e.contains("CHECK"),
        "{e}"
    );
    stop_and_collect(&w, &mut a);
}

#[test]
fn a_private_users_pod_gets_its_network_but_cannot_change_it() {
    let w = NetWorld::new();
    let script = "ip -o -4 addr show eth0; ip link set eth0 down 2>&1; cat /sys/class/net/eth0/operstate 2>&1; touch /sys/x 2>&1; true";
    let out = run_sh(&w, &["--private-users"], script);
    assert!(out.contains("inet 172.16.28."), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

#[test]
fn a_kvm_pod_takes_the_pods_address_and_reaches_an_ns_pod() {
    let w = NetWorld::new();
    let kernel = std::env::var("ORBIT_TEST_KVM_KERNEL")
        .unwrap_or_else(|_| "/var/cache/orbit-kvm/vmlinux".to_string());
    let mut a = server(&w, "hello-vm", &[]);
    let ip = first_ip(&w, &a.uuid);
    let k = format!("--kvm-kernel={kernel}");
    let url = format!("http://{ip}/");
    let out = run_sh(
        &w,
        &["--stage1-name=kvm", &k],
        &format!("ip -o -4 addr show eth0; wget -qO- {url}"),
    );
    assert!(out.contains("hello-vm"), "{out}");
    let kvm_uuid = list_json(&w)
        .iter()
        .find(|p| p["stage1"] == "kvm")
        .map(|p| p["uuid"].as_str().unwrap().to_string())
        .unwrap();
    let vm_ip = first_ip(&w, &kvm_uuid);
    assert!(out.contains(&format!("inet {vm_ip}/24")), "{out}");
    stop_and_collect(&w, &mut a);
}

#[test]
fn gc_after_a_reboot_releases_what_a_killed_pod_held() {
    let w = NetWorld::new();
    let mut a = server(&w, "before-reboot", &[]);
    let uuid = a.uuid.clone();
    // SAFETY: kill(2) of the orbit run process this test started.
    unsafe { libc::kill(a.run_pid() as i32, libc::SIGKILL) };
    a.wait(Duration::from_secs(20));
    // What a reboot does: the namespace (and its veth) is gone, its pin an empty file.
    let pin = pod_dir(&w, &uuid).join("netns");
    nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH).unwrap();
    for veth in w.pod_veths() {
        let name = veth
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split('@')
            .next()
            .unwrap()
            .to_string();
        let _ = w.ns(&format!("ip link del {name}"));
    }
    assert_eq!(leases(&w.store()).len(), 1);
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    w.assert_clean();
}

/// A background pod whose orbit commands run with `ORBIT_FIREWALL=mode` (BgPod's take no
/// environment). Dropping it stops the pod.
struct FwPod<'a> {
    w: &'a NetWorld,
    uuid: String,
    child: Option<Child>,
    stderr: PathBuf,
}

impl<'a> FwPod<'a> {
    fn start(w: &'a NetWorld, mode: &str, args: &[&str]) -> FwPod<'a> {
        let id = uuid::Uuid::new_v4();
        let uuid_file = w.path(&format!("uuid-{id}"));
        let stderr = w.path(&format!("stderr-{id}"));
        let mut full = vec!["run", "--uuid-file-save", uuid_file.to_str().unwrap()];
        full.extend_from_slice(args);
        let child = w
            .fw_cmd(mode, &full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut pod = FwPod {
            w,
            uuid: String::new(),
            child: Some(child),
            stderr,
        };
        pod.uuid = poll(Duration::from_secs(20), "--uuid-file-save", || {
            if let Some(st) = pod.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("orbit {full:?} exited early ({st}): {}", pod.stderr_text());
            }
            let s = fs::read_to_string(&uuid_file).unwrap_or_default();
            (s.ends_with('\n') && s.trim().len() == 36).then(|| s.trim().to_string())
        });
        let ready = orbit(w, &["status", "--wait-ready", &pod.uuid]);
        assert!(
            ready.status.success(),
            "pod not ready: {}\nrun stderr: {}",
            text(&ready.stderr),
            pod.stderr_text()
        );
        pod
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded) for `orbit run` to exit.
    fn wait(&mut self) {
        let mut child = self.child.take().expect("running");
        let st = wait_within(&mut child, Duration::from_secs(20));
        assert!(
            st.is_some(),
            "orbit run did not exit: {}",
            self.stderr_text()
        );
    }

    fn stop(&mut self) {
        out_ok(self.w, &["stop", &self.uuid]);
        self.wait();
    }

    fn kill_9(&mut self) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) of the orbit run process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        self.wait();
    }
}

impl Drop for FwPod<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !self.uuid.is_empty() {
                let _ = self
                    .w
                    .run(&["stop", "--force", "--timeout", "10s", &self.uuid]);
            }
            let _ = wait_within(&mut child, Duration::from_secs(10));
        }
    }
}

/// The script of a web server pod answering `/` with `body` (see `server`).
fn server_script(body: &str) -> String {
    format!(
        "mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www"
    )
}

/// A network namespace standing for a machine outside the host: the host's NIC peer
/// (`host0p`) moved into it as 10.99.0.2, serving `outside` over HTTP on port 8000. It has
/// no route to the pods' subnet, so only masqueraded traffic gets answers.
struct Outside {
    name: String,
    httpd: Child,
}

impl Outside {
    fn new(w: &NetWorld) -> Outside {
        let name = format!("{}-out", w.name);
        let www = w.path("outside-www");
        fs::create_dir_all(&www).unwrap();
        fs::write(www.join("index.html"), "outside\n").unwrap();
        let out = sh(&format!(
            "ip netns add {name} && ip -n {} link set host0p netns {name} && \
             ip -n {name} addr add 10.99.0.2/24 dev host0p && ip -n {name} link set host0p up && \
             ip -n {name} link set lo up",
            w.name
        ));
        assert!(out.status.success(), "outside: {}", text(&out.stderr));
        let httpd = Command::new("ip")
            .args([
                "netns", "exec", &name, "busybox", "httpd", "-f", "-p", "8000", "-h",
            ])
            .arg(&www)
            .spawn()
            .unwrap();
        Outside { name, httpd }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.httpd.kill();
        let _ = self.httpd.wait();
        let _ = sh(&format!("ip netns del {}", self.name));
    }
}

const DEFAULT_TAG: &str = "orbit network default 172.16.28.0/24";

/// The expressions' kinds of a rule (`masquerade`, `accept`, `dnat`, …).
fn verdicts(r: &NftRule) -> Vec<String> {
    r.expr
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_object()?.keys().next().cloned())
        .filter(|k| k != "match")
        .collect()
}

#[test]
fn nftables_only_masquerades_forwards_and_forwards_ports_with_orbits_own_rules() {
    let w = NetWorld::new();
    let _outside = Outside::new(&w);
    let script = server_script("nft-a");
    let mut a = FwPod::start(&w, "nftables", &sh_args(&["--port=http:18080"], &script));
    let ip = first_ip(&w, &a.uuid);
    // The default network's rules: one masquerade, two forward accepts, tagged.
    let net = w.nft_tagged(DEFAULT_TAG);
    let (post, fwd): (Vec<_>, Vec<_>) = net.iter().partition(|r| r.chain == "postrouting");
    assert_eq!(post.len(), 1, "{net:#?}");
    assert_eq!(verdicts(post[0]), ["masquerade"], "{net:#?}");
    assert_eq!(fwd.len(), 2, "{net:#?}");
    assert!(fwd
        .iter()
        .all(|r| r.chain == "forward" && verdicts(r) == ["accept"]));
    // The pod's forward: a DNAT to its address, and the masquerade for hairpin/localhost.
    let pod_rules = w.nft_tagged(&format!("orbit pod {} store ", a.uuid));
    let dnat: Vec<&NftRule> = pod_rules
        .iter()
        .filter(|r| r.chain == "hostports")
        .collect();
    assert_eq!(dnat.len(), 1, "{pod_rules:#?}");
    let d = dnat[0].expr.as_array().unwrap().last().unwrap()["dnat"].clone();
    assert_eq!(
        (d["addr"].as_str(), d["port"].as_u64()),
        (Some(ip.as_str()), Some(80))
    );
    assert!(dnat[0].expr.to_string().contains("18080"), "{:?}", dnat[0]);
    assert_eq!(pod_rules.len(), 2, "{pod_rules:#?}");
    // Forwards from 127.0.0.1 need route_localnet on the bridge, and its guard.
    assert_eq!(w.nft_tagged("orbit localnet guard orbit0").len(), 1);
    assert_eq!(
        w.ns_out("cat /proc/sys/net/ipv4/conf/orbit0/route_localnet")
            .trim(),
        "1"
    );
    // Nothing went through iptables: no orbit rule, no portmap chain.
    let ipt = w.ns_out("iptables-save");
    assert!(!ipt.contains("orbit") && !ipt.contains("CNI-"), "{ipt}");
    // The forwarded port answers on the host's address and on 127.0.0.1.
    for addr in [HOST_IP, "127.0.0.1"] {
        let out = w.ns(&format!("busybox wget -qO- http://{addr}:18080/"));
        assert_eq!(
            text(&out.stdout).trim(),
            "nft-a",
            "{addr}: {}",
            text(&out.stderr)
        );
    }
    // A second pod reaches the outside (masqueraded: the outside has no route back to the
    // pods) and pod a through the host's forwarded port (hairpin).
    let before = w.nft_rules().len();
    let mut args = vec!["run"];
    args.extend(sh_args(
        &[],
        // (busybox's wget -T crashes: its timeout applet bounds the wait instead.)
        "busybox timeout 5 wget -qO- http://10.99.0.2:8000/ 2>&1; busybox timeout 5 wget -qO- http://10.99.0.1:18080/ 2>&1",
    ));
    let out = output_within(w.fw_cmd("nftables", &args), DEADLINE);
    let got = text(&out.stdout);
    assert!(out.status.success(), "{got}{}", text(&out.stderr));
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["outside", "nft-a"],
        "{got}"
    );
    // ... without adding any rule (the network's exist, it forwards no port).
    assert_eq!(w.nft_rules().len(), before, "{:#?}", w.nft_rules());
    assert_eq!(w.nft_tagged(DEFAULT_TAG).len(), 3);
    // Its exit (the stage1's exit hook) takes the pod's rules; the network's stay.
    a.stop();
    assert!(
        w.nft_tagged("orbit pod ").is_empty(),
        "{:#?}",
        w.nft_rules()
    );
    assert_eq!(w.nft_tagged(DEFAULT_TAG).len(), 3);
    let out = w.ns("busybox timeout 2 busybox wget -qO- http://127.0.0.1:18080/");
    assert!(
        !out.status.success(),
        "still forwarded: {}",
        text(&out.stdout)
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}

#[test]
fn nftables_only_gc_of_a_killed_pod_and_of_vanished_pods_leaves_no_per_pod_rule() {
    let w = NetWorld::new();
    let script = server_script("doomed");
    let mut a = FwPod::start(
        &w,
        "nftables",
        &sh_args(&["--port=tcp:80:18090:10.99.0.1"], &script),
    );
    let mine = w.nft_tagged(&format!("orbit pod {} store ", a.uuid));
    assert_eq!(mine.len(), 2, "{:#?}", w.nft_rules());
    let dnat = mine.iter().find(|r| r.chain == "hostports").unwrap();
    assert!(dnat.expr.to_string().contains(HOST_IP), "{mine:#?}");
    let store_tag = mine[0].comment.rsplit(' ').next().unwrap().to_string();
    a.kill_9();
    // Nothing ran the exit hook: the rules stay until gc.
    assert_eq!(w.nft_tagged(&format!("orbit pod {} ", a.uuid)).len(), 2);
    // Rules of a pod this store no longer has, and of another store's pod.
    let gone = "00000000-0000-0000-0000-000000000001";
    let other = "00000000-0000-0000-0000-000000000002";
    for (uuid, tag) in [(gone, store_tag.as_str()), (other, "0123456789abcdef")] {
        let out = w.ns(&format!(
            "nft add rule inet orbit hostports tcp dport 18099 dnat ip to 172.16.28.99:80 comment '\"orbit pod {uuid} store {tag}\"'"
        ));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    out_ok(&w, &["gc", "--grace-period=0"]);
    assert_no_pods(&w);
    let left: Vec<String> = w
        .nft_tagged("orbit pod ")
        .into_iter()
        .map(|r| r.comment)
        .collect();
    assert_eq!(left, [format!("orbit pod {other} store 0123456789abcdef")]);
    let out = w.ns(&format!(
        "nft delete rule inet orbit hostports handle $(nft -a list chain inet orbit hostports | sed -n 's/.*{other}.*handle //p')"
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    w.assert_clean();
}

#[test]
fn iptables_mode_leaves_nftables_alone_and_a_bad_mode_is_refused() {
    let w = NetWorld::new();
    let out = output_within(
        w.fw_cmd("iptables", &["run", WEB, "--exec", "/bin/true"]),
        DEADLINE,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(w.nft_rules().is_empty(), "{:#?}", w.nft_rules());
    let nat = w.ns_out("iptables-save -t nat");
    assert!(
        nat.contains("MASQUERADE") && nat.contains("orbit network default"),
        "{nat}"
    );
    let out = output_within(
        w.fw_cmd("bogus", &["run", WEB, "--exec", "/bin/true"]),
        DEADLINE,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ORBIT_FIREWALL=bogus: use nftables, iptables or auto"),
        "{}",
        text(&out.stderr)
    );
    out_ok(&w, &["gc", "--grace-period=0"]);
    w.assert_clean();
}
