//! Pod commands: `run`, `prepare`, `run-prepared`, `status`, `list`, `enter`, `stop`, `rm`,
//! `gc`, `cat-manifest`, `logs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser};

use orbit::pod::gc::GcOptions;
use orbit::pod::isolation::{self, IsolationRequest};
use orbit::pod::logs::LogOptions;
use orbit::pod::prepare::{self, AppRequest, PodRequest, Prepared};
use orbit::pod::stage1::{Stage1, STAGE1_ANNOTATION};
use orbit::pod::store::PodStore;
use orbit::pod::{lifecycle, spec, status};
use orbit::systemd::PendingSystemd;
use orbit::trust::TrustStore;

use super::output::{self, Format};
use super::{Context, FormatArgs, ListFlags};

/// Options of one app; given before the first image they apply to every app.
#[derive(Args, Debug, Clone, Default)]
pub struct AppFlags {
    /// Run this executable instead of the image's entrypoint.
    #[arg(long)]
    exec: Option<String>,
    /// The app's name in the pod.
    #[arg(long)]
    name: Option<String>,
    /// Working directory.
    #[arg(long)]
    working_dir: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    environment: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable; same as --environment).
    #[arg(long, value_name = "KEY=VALUE")]
    set_env: Vec<String>,
    /// Pass orbit's own environment to the app (the image's and --set-env values win).
    #[arg(long)]
    inherit_env: bool,
    /// User: a name from the image's /etc/passwd or a uid.
    #[arg(long)]
    user: Option<String>,
    /// Group: a name from the image's /etc/group or a gid.
    #[arg(long)]
    group: Option<String>,
    /// Mount the app's root filesystem read-only.
    #[arg(long)]
    readonly_rootfs: bool,
    /// Mount a volume: volume=NAME,target=PATH (repeatable).
    #[arg(long, value_name = "volume=NAME,target=PATH")]
    mount: Vec<String>,
    /// Make a host device in the app: HOST[:CONTAINER[:PERMISSIONS]], permissions of rwm
    /// (repeatable; a directory gives every device below it).
    #[arg(long, value_name = "HOST[:CONTAINER[:PERMS]]")]
    device: Vec<String>,
    /// Attach the terminal to the app (single-app pods).
    #[arg(long)]
    interactive: bool,
    /// Keep exactly these capabilities (comma-separated, e.g. CAP_NET_ADMIN,CAP_CHOWN).
    #[arg(long, value_delimiter = ',', value_name = "CAPS")]
    caps_retain: Option<Vec<String>>,
    /// Drop these capabilities from the default set (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CAPS")]
    caps_remove: Vec<String>,
    /// Seccomp: mode=retain|remove[,errno=NAME],SYSCALL… (default: the built-in allow-list).
    #[arg(long, value_name = "SPEC")]
    seccomp: Option<String>,
    /// Memory limit (e.g. 256M); exceeding it OOM-kills the app.
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// CPU limit in millicores (1000 = one CPU).
    #[arg(long, value_name = "MILLICORES")]
    cpu: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long, value_name = "SHARES")]
    cpu_shares: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
    /// OOM score adjustment (-1000..1000).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
}

/// A pod's network options.
#[derive(Args, Debug, Clone)]
pub struct NetFlags {
    /// Networks: default (NAT bridge orbit0), default-restricted (host-only), host, none
    /// (loopback only), or CNI networks from net.d/ as NAME[:CNI_ARGS], comma-separated.
    #[arg(
        long,
        env = "ORBIT_NET",
        default_value = "default",
        value_name = "NETS"
    )]
    pub net: String,
    /// Forward a host port: NAME:HOSTPORT[:HOSTIP] (NAME a port the image names or exposes)
    /// or PROTO:CONTAINERPORT:HOSTPORT[:HOSTIP] (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub port: Vec<String>,
    /// Nameserver IP (repeatable), or host (the host's resolv.conf) or none (keep the image's).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// DNS search domain (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// resolv.conf option, e.g. ndots:2 (repeatable).
    #[arg(long, value_name = "OPT")]
    pub dns_opt: Vec<String>,
    /// resolv.conf domain.
    #[arg(long, value_name = "DOMAIN")]
    pub dns_domain: Option<String>,
    /// An /etc/hosts entry IP=HOSTNAME[,ALIAS…], or host (start from the host's /etc/hosts)
    /// (repeatable).
    #[arg(long, value_name = "IP=NAME")]
    pub hosts_entry: Vec<String>,
    /// A directory of CNI plugins, searched before /usr/lib/cni, /opt/cni/bin and
    /// /usr/libexec/cni (repeatable).
    #[arg(long, value_name = "DIR")]
    pub cni_plugin_dir: Vec<PathBuf>,
}

impl NetFlags {
    /// The DNS and hosts part of the request.
    pub fn dns(&self) -> orbit::net::dns::DnsRequest {
        orbit::net::dns::DnsRequest {
            servers: self.dns.clone(),
            search: self.dns_search.clone(),
            options: self.dns_opt.clone(),
            domain: self.dns_domain.clone(),
            hosts_entries: self.hosts_entry.clone(),
        }
    }
}

/// Pod-wide options of `run` and `prepare`.
#[derive(Args, Debug, Clone)]
pub struct PodFlags {
    /// A volume: NAME,kind=host,source=PATH[,readOnly=true[,recursiveReadOnly=true]] or
    /// NAME,kind=empty (repeatable). readOnly makes the volume's own mount read-only (mounts
    /// the host made below the source stay writable); recursiveReadOnly those below too.
    #[arg(long, value_name = "SPEC")]
    pub volume: Vec<String>,
    /// Hostname inside the pod (default orbit-<uuid prefix>).
    #[arg(long)]
    pub hostname: Option<String>,
    #[command(flatten)]
    pub net: NetFlags,
    /// Copy each app's root instead of overlaying the shared layers.
    #[arg(long)]
    no_overlay: bool,
    /// Stage1: ns, fly (built in) or a name from a config dir's stage1.d/.
    #[arg(long, value_name = "NAME")]
    pub stage1_name: Option<String>,
    /// Stage1 directory (with stage1.json).
    #[arg(long, value_name = "DIR")]
    pub stage1_path: Option<PathBuf>,
    /// kvm stage1: the guest kernel (an uncompressed vmlinux with modules/ beside it, as
    /// scripts/kvm-kernel.sh makes) [default: kvm/vmlinux in the config dirs].
    #[arg(long, value_name = "PATH")]
    pub kvm_kernel: Option<PathBuf>,
    /// kvm stage1: accelerator, auto (KVM when it boots the guest, else TCG), kvm or tcg.
    #[arg(long, value_name = "ACCEL", value_parser = ["auto", "kvm", "tcg"])]
    pub kvm_accel: Option<String>,
    /// Write the pod's UUID to this file.
    #[arg(long, value_name = "FILE")]
    pub uuid_file_save: Option<PathBuf>,
    /// Where app output goes besides the terminal: file (CRI logs for `orbit logs`), journal,
    /// or both [default: both when journald runs, else file].
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,
    /// Start the pod as a transient systemd service (orbit-<uuid>.service, or NAME) and
    /// print its UUID at once; `orbit stop` then goes through systemd.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAME")]
    pub unit: Option<String>,
    /// With --unit: restart policy (no, on-failure, always).
    #[arg(long, value_name = "POLICY", requires = "unit")]
    pub restart: Option<String>,
    /// With --unit: Type=notify — the unit is up only once an app says READY=1 (sd_notify).
    #[arg(long, requires = "unit")]
    pub notify: bool,
    /// Run the pod in a user namespace with a private uid/gid range (root in the pod is an
    /// unprivileged id on the host).
    #[arg(long)]
    pub private_users: bool,
    /// Pod annotation KEY=VALUE (repeatable); orbit.dev/stage1 selects a stage1.
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// Pod label KEY=VALUE (repeatable), kept as the annotation orbit.dev/label/KEY; the API
    /// service filters pods by labels.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    #[command(flatten)]
    app: AppFlags,
}

impl PodFlags {
    /// The `--annotation KEY=VALUE` values.
    pub fn annotations(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut annotations = BTreeMap::new();
        for a in &self.annotation {
            let (k, v) = a
                .split_once('=')
                .with_context(|| format!("--annotation {a}: expected KEY=VALUE"))?;
            annotations.insert(k.to_string(), v.to_string());
        }
        for l in &self.label {
            let (k, v) = l
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("--label {l}: expected KEY=VALUE"))?;
            annotations.insert(
                format!("{}{k}", orbit::api::convert::LABEL_PREFIX),
                v.to_string(),
            );
        }
        Ok(annotations)
    }
}

/// Arguments of `run` and `prepare`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pod: PodFlags,
    /// IMAGE [APP OPTIONS] [-- ARGS…] [--- IMAGE2 [APP OPTIONS] [-- ARGS…]]…
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE"
    )]
    apps: Vec<String>,
}

#[derive(Parser, Debug)]
#[command(name = "app options", no_binary_name = true)]
struct AppChunk {
    #[command(flatten)]
    flags: AppFlags,
}

/// `orbit status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Pod UUID (or unambiguous prefix).
    uuid: String,
    /// Wait until the pod has exited (optionally at most DURATION, e.g. 30s).
    #[arg(long, num_args = 0..=1, default_missing_value = "0", value_name = "DURATION")]
    wait: Option<String>,
    /// Wait until the pod and all its apps are running.
    #[arg(long)]
    wait_ready: bool,
    /// Ask the CNI plugins whether the running pod's networks are still as they set them up
    /// (CNI CHECK); fails with what is wrong.
    #[arg(long)]
    check_network: bool,
    #[command(flatten)]
    format: FormatArgs,
}

/// `orbit enter`.
#[derive(Args, Debug)]
pub struct EnterArgs {
    /// The app to enter (required in multi-app pods).
    #[arg(long)]
    app: Option<String>,
    /// Pod UUID.
    uuid: String,
    /// Command (default /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `orbit stop`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Kill at once (SIGKILL) instead of asking the apps to stop (SIGTERM).
    #[arg(long)]
    force: bool,
    /// How long to wait for the pod to exit.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// Pods.
    #[arg(required = true)]
    uuids: Vec<String>,
}

/// `orbit gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Keep exited pods this long after they are marked.
    #[arg(long, default_value = "30m")]
    grace_period: String,
    /// Remove prepared pods not run within this time.
    #[arg(long, default_value = "24h")]
    expire_prepared: String,
    /// Only mark exited pods.
    #[arg(long)]
    mark_only: bool,
}

/// `orbit logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Only this app.
    #[arg(long)]
    app: Option<String>,
    /// Keep printing until the pod exits.
    #[arg(long, short)]
    follow: bool,
    /// Only lines since an RFC 3339 time or a duration ago (e.g. 10m).
    #[arg(long)]
    since: Option<String>,
    /// Only the last N lines (per app).
    #[arg(long)]
    tail: Option<usize>,
    /// Show timestamps.
    #[arg(long)]
    timestamps: bool,
    /// Pod UUID.
    uuid: String,
}

/// Parses `90s`, `5m`, `2h`, `500ms`, `1d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .with_context(|| format!("'{s}' is not a duration (e.g. 30s, 5m, 2h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => bail!("'{s}' is not a duration (units: ms, s, m, h, d)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn merge(defaults: &AppFlags, app: AppFlags) -> AppFlags {
    AppFlags {
        exec: app.exec.or(defaults.exec.clone()),
        name: app.name,
        working_dir: app.working_dir.or(defaults.working_dir.clone()),
        environment: [defaults.environment.clone(), app.environment].concat(),
        set_env: [defaults.set_env.clone(), app.set_env].concat(),
        inherit_env: app.inherit_env || defaults.inherit_env,
        user: app.user.or(defaults.user.clone()),
        group: app.group.or(defaults.group.clone()),
        readonly_rootfs: app.readonly_rootfs || defaults.readonly_rootfs,
        mount: [defaults.mount.clone(), app.mount].concat(),
        device: [defaults.device.clone(), app.device].concat(),
        interactive: app.interactive || defaults.interactive,
        caps_retain: app.caps_retain.or(defaults.caps_retain.clone()),
        caps_remove: [defaults.caps_remove.clone(), app.caps_remove].concat(),
        seccomp: app.seccomp.or(defaults.seccomp.clone()),
        memory: app.memory.or(defaults.memory.clone()),
        cpu: app.cpu.or(defaults.cpu),
        cpu_shares: app.cpu_shares.or(defaults.cpu_shares),
        pids_limit: app.pids_limit.or(defaults.pids_limit),
        oom_score_adj: app.oom_score_adj.or(defaults.oom_score_adj),
    }
}

/// Splits `IMAGE [opts] [-- args] [--- …]` into app requests; `defaults` are the app
/// options given before the first image.
pub fn app_requests_from(apps: &[String], defaults: &AppFlags) -> anyhow::Result<Vec<AppRequest>> {
    let mut out = Vec::new();
    for chunk in apps.split(|a| a == "---") {
        let Some((image, rest)) = chunk.split_first() else {
            bail!("'---' must be followed by an image")
        };
        if image.starts_with('-') {
            bail!("expected an image, found option '{image}' (app options go after their image)");
        }
        let (opts, app_args) = match rest.iter().position(|a| a == "--") {
            Some(i) => (&rest[..i], Some(rest[i + 1..].to_vec())),
            None => (rest, None),
        };
        let parsed = AppChunk::try_parse_from(opts).unwrap_or_else(|e| e.exit());
        let f = merge(defaults, parsed.flags);
        let mut env = Vec::new();
        for e in f.environment.iter().chain(&f.set_env) {
            env.push(spec::parse_env(e)?);
        }
        let mounts = f
            .mount
            .iter()
            .map(|m| spec::parse_mount(m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut devices = Vec::new();
        for d in &f.device {
            devices.extend(orbit::pod::devices::parse_device(d)?);
        }
        out.push(AppRequest {
            image: image.clone(),
            name: f.name,
            exec: f.exec,
            args: app_args,
            working_dir: f.working_dir,
            env,
            inherit_env: f.inherit_env,
            user: f.user,
            group: f.group,
            supplementary_gids: vec![],
            groups_policy: Default::default(),
            readonly_rootfs: f.readonly_rootfs,
            mounts,
            devices,
            interactive: f.interactive,
            stdin: false,
            pid_namespace: false,
            isolation: IsolationRequest {
                caps_retain: f.caps_retain,
                caps_remove: f.caps_remove,
                seccomp: f.seccomp,
                resources: orbit_stage1::Resources {
                    memory: f.memory.as_deref().map(isolation::parse_size).transpose()?,
                    cpu_millis: f.cpu,
                    cpu_shares: f.cpu_shares,
                    pids: f.pids_limit,
                    oom_score_adj: f.oom_score_adj,
                },
                ..Default::default()
            },
        });
    }
    Ok(out)
}

fn pod_request(ctx: &Context, args: &RunArgs) -> anyhow::Result<(PodRequest, Stage1)> {
    let mut annotations = args.pod.annotations()?;
    let volumes = args
        .pod
        .volume
        .iter()
        .map(|v| spec::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let stage1 = Stage1::select(
        args.pod.stage1_name.as_deref(),
        args.pod.stage1_path.as_deref(),
        annotations.get(STAGE1_ANNOTATION).map(String::as_str),
        &ctx.config,
    )?;
    kvm_annotations(&mut annotations, &args.pod, &stage1, ctx)?;
    let req = PodRequest {
        apps: app_requests_from(&args.apps, &args.pod.app)?,
        volumes,
        hostname: args.pod.hostname.clone(),
        net: args.pod.net.net.clone(),
        ports: args.pod.net.port.clone(),
        dns: args.pod.net.dns(),
        cni_plugin_dirs: args.pod.net.cni_plugin_dir.clone(),
        registry: ctx.registry.clone(),
        pull_policy: ctx
            .pull_policy
            .unwrap_or(orbit::image::fetch::PullPolicy::New),
        no_overlay: args.pod.no_overlay,
        annotations,
        mutable: false,
        insecure_image: ctx.insecure_image,
        insecure: ctx.insecure_run,
        private_users: args.pod.private_users,
        user_namespace: None,
        log: args.pod.log.clone(),
        host_namespaces: Vec::new(),
    };
    Ok((req, stage1))
}

/// For the kvm stage1: the guest kernel (found now, so a missing one fails before anything
/// is made) and the accelerator, as pod annotations the stage1 reads.
pub fn kvm_annotations(
    annotations: &mut BTreeMap<String, String>,
    flags: &PodFlags,
    stage1: &Stage1,
    ctx: &Context,
) -> anyhow::Result<()> {
    if stage1.name() != "kvm" {
        if flags.kvm_kernel.is_some() || flags.kvm_accel.is_some() {
            bail!("--kvm-kernel and --kvm-accel apply only to the kvm stage1");
        }
        return Ok(());
    }
    let kernel = orbit::pod::stage1::kvm_kernel(flags.kvm_kernel.as_deref(), &ctx.config)?;
    annotations.insert(
        orbit::pod::stage1::KVM_KERNEL_ANNOTATION.into(),
        kernel.display().to_string(),
    );
    if let Some(a) = &flags.kvm_accel {
        annotations.insert(orbit::pod::stage1::KVM_ACCEL_ANNOTATION.into(), a.clone());
    }
    Ok(())
}

/// Says loudly which protections `--insecure-options` turned off for this pod.
fn warn_insecure(ctx: &Context) {
    if ctx.insecure_image {
        eprintln!("orbit: WARNING: --insecure-options=image: images fetched for this pod are not verified");
    }
    let run = ctx.insecure_run;
    if run.capabilities {
        eprintln!("orbit: WARNING: --insecure-options=capabilities: apps run PRIVILEGED (every capability, no no_new_privs)");
    }
    if run.seccomp {
        eprintln!("orbit: WARNING: --insecure-options=seccomp: apps run without a seccomp filter");
    }
    if run.paths {
        eprintln!("orbit: WARNING: --insecure-options=paths: /proc and /sys paths are not masked or read-only");
    }
    if run.devices {
        eprintln!("orbit: WARNING: --insecure-options=devices: apps may open every host device");
    }
}

fn do_prepare(ctx: &Context, args: &RunArgs) -> anyhow::Result<Prepared> {
    warn_insecure(ctx);
    let started = std::time::Instant::now();
    let (req, stage1) = pod_request(ctx, args)?;
    let pods = PodStore::new(ctx.store.root());
    let prepared = prepare::prepare(
        &ctx.store,
        &TrustStore::new(ctx.config.clone()),
        &pods,
        &req,
        stage1,
    )?;
    if let Some(f) = &args.pod.uuid_file_save {
        std::fs::write(f, format!("{}\n", prepared.pod.uuid))
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    if ctx.debug {
        eprintln!(
            "orbit: prepared pod {} in {:?}",
            prepared.pod.uuid,
            started.elapsed()
        );
    }
    Ok(prepared)
}

/// `orbit run`: prepare, then become the pod (exec its stage1).
pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    // The bus connection is made while the pod is prepared (not needed with --unit, which
    // connects on its own).
    let systemd = PendingSystemd::start(if args.pod.unit.is_some() {
        orbit::systemd::Mode::No
    } else {
        ctx.systemd
    });
    let prepared = do_prepare(ctx, &args)?;
    let pods = PodStore::new(ctx.store.root());
    let uuid = prepared.pod.uuid.clone();
    if let Some(unit) = &args.pod.unit {
        return run_as_service(
            ctx,
            &pods,
            prepared,
            unit,
            args.pod.restart.as_deref(),
            args.pod.notify,
            true,
        );
    }
    let err = lifecycle::exec_run(&pods, prepared, ctx.debug, systemd);
    // exec_run returns only when the pod could not start: the pod this command prepared
    // goes with it, so a refusal (e.g. by systemd) leaves no half-made pod behind.
    if let Ok(pod) = pods.find(&uuid) {
        if !status::is_running(&pod) {
            let _ = lifecycle::remove(&pods, &pod, ctx.debug);
        }
    }
    Err(err.into())
}

/// `orbit run --unit`: the prepared pod runs as a transient systemd service executing
/// `orbit run-prepared UUID` with this command's store and configuration.
fn run_as_service(
    ctx: &Context,
    pods: &PodStore,
    prepared: Prepared,
    unit: &str,
    restart: Option<&str>,
    notify: bool,
    owned: bool,
) -> anyhow::Result<()> {
    if let Some(r) = restart {
        if !["no", "on-failure", "always"].contains(&r) {
            bail!("--restart={r}: use no, on-failure or always");
        }
    }
    let uuid = prepared.pod.uuid.clone();
    let unit = if unit.is_empty() {
        format!("orbit-{uuid}.service")
    } else if unit.ends_with(".service") {
        unit.to_string()
    } else {
        format!("{unit}.service")
    };
    let exe = std::env::current_exe().context("cannot find the orbit binary")?;
    let mut argv: Vec<String> = vec![exe.display().to_string()];
    for (flag, dir) in [
        ("--dir", ctx.store.root()),
        ("--system-config", &ctx.config.vendor),
        ("--local-config", &ctx.config.system),
        ("--user-config", &ctx.config.user),
    ] {
        argv.push(flag.to_string());
        argv.push(dir.display().to_string());
    }
    if ctx.debug {
        argv.push("--debug".into());
    }
    argv.extend(["run-prepared".to_string(), uuid.clone()]);
    if let Err(e) = lifecycle::start_as_service(
        prepared,
        &unit,
        &argv,
        orbit::systemd::ServiceOptions {
            restart,
            notify,
            slice: None,
        },
    ) {
        // A pod this command prepared goes with the failure; one prepared earlier stays.
        if let Some(pod) = pods.find(&uuid).ok().filter(|_| owned) {
            let _ = lifecycle::remove(pods, &pod, ctx.debug);
        }
        return Err(e.into());
    }
    println!("{uuid}");
    eprintln!("started pod {uuid} as {unit}");
    Ok(())
}

/// `orbit prepare`.
pub fn prepare_cmd(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let prepared = do_prepare(ctx, &args)?;
    println!("{}", prepared.pod.uuid);
    Ok(())
}

/// `orbit run-prepared`.
pub fn run_prepared(
    ctx: &Context,
    uuid: &str,
    unit: Option<&str>,
    restart: Option<&str>,
) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let systemd = PendingSystemd::start(if unit.is_some() {
        orbit::systemd::Mode::No
    } else {
        ctx.systemd
    });
    let prepared = lifecycle::claim_prepared(&pods, uuid)?;
    if let Some(unit) = unit {
        return run_as_service(ctx, &pods, prepared, unit, restart, false, false);
    }
    Err(lifecycle::exec_run(&pods, prepared, ctx.debug, systemd).into())
}

/// `orbit status`.
pub fn status_cmd(ctx: &Context, args: StatusArgs) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let mut pod = pods.find(&args.uuid)?;
    if let Some(w) = &args.wait {
        let timeout = match parse_duration(w)? {
            d if d.is_zero() => Duration::from_secs(u64::MAX / 4),
            d => d,
        };
        if !lifecycle::wait_unlocked(&pod.path, timeout) {
            bail!("pod {} is still running after {w}", pod.uuid);
        }
        pod = pods.refresh(&pod)?;
    }
    if args.check_network {
        if !status::is_running(&pod) {
            bail!(
                "pod {} is not running: there is no network to check",
                pod.uuid
            );
        }
        orbit::net::attach::check(&pod.path)?;
    }
    if args.wait_ready {
        pod = lifecycle::wait_ready(&pods, &pod.uuid, Duration::from_secs(60))?;
    }
    let info = status::info(&pod)?;
    if args.format.format == Format::Json {
        return output::json(&info);
    }
    println!("state={}", info.state);
    if let Some(unit) = &info.unit {
        println!("unit={unit}");
        let state = orbit::systemd::Systemd::connect(ctx.systemd)
            .ok()
            .flatten()
            .and_then(|sd| sd.unit_state(unit));
        println!("unit-state={}", state.as_deref().unwrap_or("gone"));
    }
    println!("created={}", info.created);
    if !info.started.is_empty() {
        println!("started={}", info.started);
    }
    if let Some(pid) = info.pid {
        println!("pid={pid}");
    }
    if !info.finished.is_empty() {
        println!("finished={}", info.finished);
    }
    if let Some(c) = info.exit_code {
        println!("exit-code={c}");
    }
    for n in &info.networks {
        println!(
            "networks={}:interface={},ip={},gateway={}",
            n.name,
            n.interface,
            n.ips.join("+"),
            n.gateways.join("+")
        );
    }
    for a in &info.apps {
        let code = a
            .status
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        println!("app-{}={} exit-code={code}", a.name, a.state());
    }
    Ok(())
}

/// `orbit list`.
pub fn list(ctx: &Context, args: ListFlags) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let mut infos = Vec::new();
    for p in pods.list()? {
        if let Ok(i) = status::info(&p) {
            infos.push(i);
        }
    }
    if args.format.format == Format::Json {
        return output::json(&infos);
    }
    let mut rows = Vec::new();
    for i in &infos {
        let uuid = if args.full {
            i.uuid.clone()
        } else {
            i.uuid[..8].to_string()
        };
        let apps = i
            .apps
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let images = i
            .apps
            .iter()
            .map(|a| {
                if args.full {
                    format!("{}@{}", a.image, a.image_digest)
                } else {
                    a.image.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let state = match i.exit_code {
            Some(c) => format!("{} ({c})", i.state),
            None => i.state.clone(),
        };
        // rkt's NETWORKS column: name:ip per network.
        let networks = i
            .networks
            .iter()
            .map(|n| {
                let ip = n.ips.first().map(|c| c.split('/').next().unwrap_or(c));
                format!("{}:{}", n.name, ip.unwrap_or("-"))
            })
            .collect::<Vec<_>>()
            .join(",");
        rows.push(vec![uuid, apps, images, state, networks, i.created.clone()]);
    }
    output::table(
        &["UUID", "APPS", "IMAGES", "STATE", "NETWORKS", "CREATED"],
        &rows,
        !args.no_legend,
    );
    Ok(())
}

/// `orbit enter`.
pub fn enter(ctx: &Context, args: EnterArgs) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    Err(lifecycle::exec_enter(
        &pods,
        &args.uuid,
        args.app.as_deref(),
        &args.command,
        ctx.debug,
    )
    .into())
}

/// `orbit stop`.
pub fn stop(ctx: &Context, args: StopArgs) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let timeout = parse_duration(&args.timeout)?;
    output::for_each_target(&args.uuids, ("stop", "pod", "stopped"), |u| {
        println!(
            "{}",
            lifecycle::stop(&pods, u, args.force, timeout, ctx.debug)?.uuid
        );
        Ok(())
    })
}

/// `orbit rm`.
pub fn rm(ctx: &Context, uuids: Vec<String>) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    output::for_each_target(&uuids, ("remove", "pod", "removed"), |u| {
        let pod = pods.find(u)?;
        lifecycle::remove(&pods, &pod, ctx.debug)?;
        println!("{}", pod.uuid);
        Ok(())
    })
}

/// `orbit gc`.
pub fn gc(ctx: &Context, args: GcArgs) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let opts = GcOptions {
        grace_period: parse_duration(&args.grace_period)?,
        expire_prepared: parse_duration(&args.expire_prepared)?,
        mark_only: args.mark_only,
        debug: ctx.debug,
    };
    let r = orbit::pod::gc::gc(&pods, &opts)?;
    for u in &r.marked {
        println!("marked {u} as exited garbage");
    }
    for u in &r.removed {
        println!("removed {u}");
    }
    for (u, why) in &r.failed {
        eprintln!("orbit: error: cannot remove pod {u}: {why}");
    }
    if !r.failed.is_empty() {
        bail!("{} pod(s) could not be collected", r.failed.len());
    }
    Ok(())
}

/// `orbit cat-manifest`.
pub fn cat_manifest(ctx: &Context, uuid: &str) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let pod = pods.find(uuid)?;
    output::json(&status::manifest(&pod)?)
}

/// `orbit logs`.
pub fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    let pod = pods.find(&args.uuid)?;
    let since = match &args.since {
        Some(s) if s.contains('T') => Some(s.clone()),
        Some(d) => {
            let ago = time::OffsetDateTime::now_utc() - parse_duration(d)?;
            Some(ago.format(&time::format_description::well_known::Rfc3339)?)
        }
        None => None,
    };
    let opts = LogOptions {
        app: args.app,
        follow: args.follow,
        since,
        tail: args.tail,
        timestamps: args.timestamps,
    };
    Ok(orbit::pod::logs::logs(&pods, &pod, &opts)?)
}

/// `orbit export`.
pub fn export(
    ctx: &Context,
    uuid: &str,
    file: &std::path::Path,
    app: Option<&str>,
    name: Option<String>,
    overwrite: bool,
) -> anyhow::Result<()> {
    if file.exists() && !overwrite {
        bail!("{} exists; pass --overwrite to replace it", file.display());
    }
    let pods = PodStore::new(ctx.store.root());
    let pod = pods.find(uuid)?;
    let name = name.unwrap_or_else(|| format!("localhost/orbit-export-{}:latest", &pod.uuid[..8]));
    let name = orbit::image::reference::normalize_name(&name)?;
    orbit::pod::export::export(&ctx.store, &pod, app, &name, file)?;
    eprintln!(
        "exported {name} from pod {} to {}",
        pod.uuid,
        file.display()
    );
    Ok(())
}
