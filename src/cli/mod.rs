//! The `orbit` command line: argument definitions (clap) and dispatch. Man pages and shell
//! completions are generated from these same definitions.

mod apps;
mod images;
mod login;
mod output;
mod pods;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use orbit::config::ConfigDirs;
use orbit::image::store::Store;

pub use output::Format;

/// Exit status for orbit's own failures (usage errors exit 2, as clap does).
pub const EXIT_FAILURE: u8 = 125;

/// orbit — a daemonless, rkt-style container runtime with pluggable isolation stages.
#[derive(Parser, Debug)]
#[command(name = "orbit", version, about, long_about = None, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Store directory (images, layers, pods) [default: /var/lib/orbit].
    #[arg(long, global = true, env = "ORBIT_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Register pods with systemd (transient scope, machined): auto (when a manager answers
    /// on the system bus), yes (required), no.
    #[arg(long, global = true, value_enum, default_value_t = SystemdMode::Auto)]
    pub systemd: SystemdMode,
    /// Print debugging output (timings, full error chains) to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Checks to skip: image, tls, http, seccomp, capabilities, paths, devices, all-run, all. Loud on
    /// purpose.
    #[arg(long, global = true, value_delimiter = ',', value_name = "OPTS")]
    pub insecure_options: Vec<InsecureOption>,
    /// Registries: when to fetch a docker:// image — never (store only), new (when the
    /// store lacks it; run/prepare's default), update (when the registry has another
    /// manifest for the name; fetch's default).
    #[arg(long, global = true, value_enum, value_name = "POLICY")]
    pub pull_policy: Option<PullPolicyArg>,
    /// Registries: a CA certificate (PEM) to trust besides the system's (repeatable); also
    /// read: certs.d/REGISTRY/*.crt in the config dirs, /etc/containers and /etc/docker.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Registries: the platform to take from a multi-arch index (os/arch[/variant]).
    #[arg(long, global = true, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Vendor configuration directory, lowest precedence (rkt's name) [default: /usr/lib/orbit].
    #[arg(long, global = true, env = "ORBIT_SYSTEM_CONFIG", value_name = "DIR")]
    pub system_config: Option<PathBuf>,
    /// Machine configuration directory; `orbit trust` adds keys here [default: /etc/orbit].
    #[arg(long, global = true, env = "ORBIT_LOCAL_CONFIG", value_name = "DIR")]
    pub local_config: Option<PathBuf>,
    /// User configuration directory, highest precedence [default: ~/.config/orbit].
    #[arg(long, global = true, env = "ORBIT_USER_CONFIG", value_name = "DIR")]
    pub user_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--systemd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SystemdMode {
    /// When a manager answers on the system bus.
    Auto,
    /// Always; an error without a manager.
    Yes,
    /// Never.
    No,
}

/// `--pull-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicyArg {
    /// Only the store.
    Never,
    /// Fetch when missing.
    New,
    /// Fetch when the registry has a newer manifest.
    Update,
}

/// Checks `--insecure-options` can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InsecureOption {
    /// Nothing.
    None,
    /// Image signature verification.
    Image,
    /// Registry TLS certificate checks.
    Tls,
    /// TLS itself: talk plain HTTP to registries.
    Http,
    /// The seccomp filter (apps run unfiltered).
    Seccomp,
    /// Capability dropping and no_new_privs (privileged apps).
    Capabilities,
    /// Masked and read-only /proc and /sys paths.
    Paths,
    /// The device allow-list: apps may open every host device, whose nodes they see.
    Devices,
    /// All run-time checks: seccomp, capabilities, paths, devices.
    AllRun,
    /// Everything listed above.
    All,
}

/// The top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pod: IMAGE [APP OPTIONS] [-- ARGS] [--- IMAGE2 …]; exits with the pod's status.
    Run(pods::RunArgs),
    /// Prepare a pod to run later with run-prepared; prints its UUID.
    Prepare(pods::RunArgs),
    /// Run a prepared pod.
    RunPrepared {
        /// Pod UUID (or unambiguous prefix).
        uuid: String,
        /// Run it as a transient systemd service (orbit-<uuid>.service, or NAME).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAME")]
        unit: Option<String>,
        /// With --unit: restart policy (no, on-failure, always).
        #[arg(long, value_name = "POLICY", requires = "unit")]
        restart: Option<String>,
    },
    /// Show a pod's state, pid, apps and exit codes.
    Status(pods::StatusArgs),
    /// List pods.
    #[command(alias = "ls")]
    List(ListFlags),
    /// Run a command in a running pod's app (default /bin/sh).
    Enter(pods::EnterArgs),
    /// Stop running pods.
    Stop(pods::StopArgs),
    /// Remove pods that are not running.
    Rm {
        /// Pod UUIDs (or unambiguous prefixes).
        #[arg(required = true)]
        uuids: Vec<String>,
    },
    /// Collect exited pods and finish interrupted work.
    Gc(pods::GcArgs),
    /// Print a pod's manifest (pod.json).
    CatManifest {
        /// Pod UUID (or unambiguous prefix).
        uuid: String,
    },
    /// Print a pod's app logs.
    Logs(pods::LogsArgs),
    /// Write an exited pod's app as a new image (its layers + what it changed) to an oci-archive.
    Export {
        /// Pod UUID (or unambiguous prefix).
        uuid: String,
        /// Archive to write.
        file: PathBuf,
        /// The app (required in multi-app pods).
        #[arg(long)]
        app: Option<String>,
        /// Name of the new image (default localhost/orbit-export-<uuid prefix>:latest).
        #[arg(long)]
        name: Option<String>,
        /// Replace FILE if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Mutable pods: a sandbox pod, then apps added, started, stopped, removed.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Import images into the store, verifying their signatures.
    Fetch(FetchArgs),
    /// Serve the read-only gRPC API (pods, images, logs, events) for monitoring tools.
    ApiService(ApiServiceArgs),
    /// Serve the Kubernetes CRI (RuntimeService, ImageService) for the kubelet and crictl.
    Cri(CriArgs),
    /// Store credentials for a registry (user config dir's auth.json, mode 0600).
    Login(login::LoginArgs),
    /// Forget the credentials for a registry.
    Logout(login::LogoutArgs),
    /// Work with images in the store.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Trust a public key for an image name prefix (or all images), list and remove trusted keys.
    Trust(trust::TrustArgs),
    /// Print the version.
    Version(FormatArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for orbit and every subcommand into a directory.
    Man {
        /// Output directory (created if missing).
        #[arg(default_value = "man", value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// Arguments of `orbit api-service`.
#[derive(Args, Debug)]
pub struct ApiServiceArgs {
    /// TCP address to serve on too (repeatable; e.g. 127.0.0.1:15441). TCP has no access
    /// control: every local user (or more) could read every pod's logs.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<std::net::SocketAddr>,
    /// Unix socket to serve on (repeatable; default /run/orbit/api.sock), created mode 0660:
    /// its group decides who may connect.
    #[arg(long, value_name = "PATH")]
    pub socket: Vec<PathBuf>,
}

/// `orbit api-service`: sockets passed by systemd (socket activation) win over the flags;
/// without flags, the Unix socket /run/orbit/api.sock.
fn api_service(ctx: &Context, args: ApiServiceArgs) -> anyhow::Result<()> {
    let sockets = if args.listen.is_empty() && args.socket.is_empty() {
        vec![PathBuf::from(orbit::api::DEFAULT_SOCKET)]
    } else {
        args.socket
    };
    for a in &args.listen {
        eprintln!(
            "orbit api-service: WARNING: --listen={a}: gRPC over TCP has no access control; anyone who can connect reads every pod's logs and manifest"
        );
    }
    orbit::api::serve(orbit::api::ServeOptions {
        listen: args.listen,
        sockets,
        root: ctx.store.root().to_path_buf(),
        config: ctx.config.clone(),
    })
    .map_err(anyhow::Error::from)
}

/// Arguments of `orbit cri`.
#[derive(Args, Debug)]
pub struct CriArgs {
    /// Unix socket to serve on (the kubelet's --container-runtime-endpoint=unix://PATH).
    #[arg(long, value_name = "PATH", default_value = orbit::cri::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The network sandboxes join unless they ask for the host's: CNI networks (`--net`
    /// syntax) or `none`. Default: the first network in --cni-conf-dir (as the kubelet
    /// expects), else orbit's `default`.
    #[arg(long)]
    pub net: Option<String>,
    /// The kubelet's CNI configuration directory, searched after orbit's own net.d.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories searched before the default ones.
    #[arg(long, value_name = "DIR")]
    pub cni_plugin_dir: Vec<PathBuf>,
    /// Where the streaming server for Exec, Attach and PortForward listens (port 0: any
    /// free port). Its URLs are single-use and expire after a minute; keep it on loopback
    /// unless the kubelet reaches the runtime over the network.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    pub streaming_address: std::net::SocketAddr,
    /// The guest kernel of `kvm` sandboxes (with its modules/ beside it, as
    /// scripts/kvm-kernel.sh makes) [default: kvm/vmlinux in the config dirs].
    #[arg(long, value_name = "PATH")]
    pub kvm_kernel: Option<PathBuf>,
    /// The accelerator of `kvm` sandboxes: auto, kvm or tcg.
    #[arg(long, value_name = "ACCEL")]
    pub kvm_accel: Option<String>,
    /// Containers that ask for no seccomp profile get orbit's default filter (as the
    /// kubelet's flag of that name). Without it, they run unconfined, as the CRI says:
    /// the kubelet decides the default and sends RuntimeDefault when it wants one.
    #[arg(long)]
    pub seccomp_default: bool,
}

/// `orbit cri`. Image signatures are verified unless `--insecure-options=image` is given
/// to the server (its image policy).
fn cri(ctx: &Context, args: CriArgs) -> anyhow::Result<()> {
    let systemd = matches!(orbit::systemd::Systemd::connect(ctx.systemd), Ok(Some(_)));
    let orbit = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the orbit binary: {e}"))?;
    let net = args.net.unwrap_or_else(|| {
        orbit::net::conf::first_network(&args.cni_conf_dir).unwrap_or_else(|| "default".into())
    });
    let mut config = ctx.config.clone();
    config.net_dirs.push(args.cni_conf_dir);
    orbit::cri::serve(orbit::cri::CriOptions {
        sockets: vec![args.socket],
        streaming_address: args.streaming_address,
        context: orbit::cri::CriContext {
            root: ctx.store.root().to_path_buf(),
            config,
            orbit,
            insecure_image: ctx.insecure_image,
            registry: ctx.registry.clone(),
            network: net,
            cni_plugin_dirs: args.cni_plugin_dir,
            systemd,
            events: tokio::sync::broadcast::channel(1024).0,
            last_events: Default::default(),
            streaming: Default::default(),
            kvm_kernel: args.kvm_kernel,
            kvm_accel: args.kvm_accel,
            seccomp_default: args.seccomp_default,
        },
    })
    .map_err(anyhow::Error::from)
}

/// Arguments of `orbit fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Sources: docker://[REGISTRY/]REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:REF].
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Store the image under this name (NAME[:TAG]) instead of the one the source gives.
    #[arg(long)]
    pub name: Option<String>,
    /// Layers unpacked in parallel (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Never show progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Print only the digest of each fetched image.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A `--format` flag.
#[derive(Args, Debug, Clone, Copy)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// The flags of every listing command: `--format`, `--no-legend`, `--full`.
#[derive(Args, Debug, Clone, Copy)]
pub struct ListFlags {
    #[command(flatten)]
    pub format: FormatArgs,
    /// Omit the header line.
    #[arg(long)]
    pub no_legend: bool,
    /// Show full IDs and digests.
    #[arg(long)]
    pub full: bool,
}

/// What every command gets: the store, config dirs and global flags.
pub struct Context {
    /// The store.
    pub store: Store,
    /// Configuration directories.
    pub config: ConfigDirs,
    /// `--debug`.
    pub debug: bool,
    /// Signature verification is off.
    pub insecure_image: bool,
    /// Run-time checks that are off.
    pub insecure_run: orbit::pod::isolation::InsecureRun,
    /// Whether to register pods with systemd.
    pub systemd: orbit::systemd::Mode,
    /// How to reach registries.
    pub registry: orbit::image::registry::RegistryOptions,
    /// `--pull-policy`, when given.
    pub pull_policy: Option<orbit::image::fetch::PullPolicy>,
}

impl Cli {
    /// Registry settings: `--insecure-options=tls|http`, `--ca-cert`, `--platform`, and the
    /// certs.d and credential files users already have.
    fn registry_options(&self, config: &ConfigDirs) -> orbit::image::registry::RegistryOptions {
        let on = |o: InsecureOption| self.insecure_options.contains(&o);
        let mut certs_dirs: Vec<PathBuf> = config
            .all()
            .iter()
            .rev()
            .map(|d| d.join("certs.d"))
            .collect();
        certs_dirs.extend(["/etc/containers/certs.d", "/etc/docker/certs.d"].map(PathBuf::from));
        let mut auth_files: Vec<PathBuf> = config
            .all()
            .iter()
            .rev()
            .map(|d| d.join("auth.json"))
            .collect();
        if let Some(h) = std::env::var_os("HOME") {
            auth_files.push(PathBuf::from(h).join(".docker/config.json"));
        }
        if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
            auth_files.push(PathBuf::from(x).join("containers/auth.json"));
        }
        if on(InsecureOption::Tls) {
            eprintln!(
                "orbit: WARNING: --insecure-options=tls: registry certificates are not checked"
            );
        }
        if on(InsecureOption::Http) {
            eprintln!(
                "orbit: WARNING: --insecure-options=http: registries are reached over plain HTTP"
            );
        }
        orbit::image::registry::RegistryOptions {
            insecure_tls: on(InsecureOption::Tls),
            insecure_http: on(InsecureOption::Http),
            ca_certs: self.ca_cert.clone(),
            certs_dirs,
            auth_files,
            platform: self.platform.clone(),
            jobs: 4,
            registries_conf: Some(orbit::image::registries_conf::Sources::standard(
                &config.all().map(|d| d.as_path()),
            )),
            debug: self.debug,
        }
    }

    fn context(&self) -> Context {
        let mut config = ConfigDirs::default();
        if let Some(d) = &self.system_config {
            config.vendor = d.clone();
        }
        if let Some(d) = &self.local_config {
            config.system = d.clone();
        }
        if let Some(u) = &self.user_config {
            config.user = u.clone();
        }
        let has = |want: &[InsecureOption]| {
            self.insecure_options
                .iter()
                .any(|o| want.contains(o) || *o == InsecureOption::All)
        };
        let insecure_run = orbit::pod::isolation::InsecureRun {
            capabilities: has(&[InsecureOption::Capabilities, InsecureOption::AllRun]),
            seccomp: has(&[InsecureOption::Seccomp, InsecureOption::AllRun]),
            paths: has(&[InsecureOption::Paths, InsecureOption::AllRun]),
            devices: has(&[InsecureOption::Devices, InsecureOption::AllRun]),
        };
        let registry = self.registry_options(&config);
        Context {
            store: Store::new(
                self.dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/var/lib/orbit")),
            ),
            config,
            debug: self.debug,
            insecure_image: has(&[InsecureOption::Image]),
            insecure_run,
            registry,
            pull_policy: self.pull_policy.map(|p| match p {
                PullPolicyArg::Never => orbit::image::fetch::PullPolicy::Never,
                PullPolicyArg::New => orbit::image::fetch::PullPolicy::New,
                PullPolicyArg::Update => orbit::image::fetch::PullPolicy::Update,
            }),
            systemd: match self.systemd {
                SystemdMode::Auto => orbit::systemd::Mode::Auto,
                SystemdMode::Yes => orbit::systemd::Mode::Yes,
                SystemdMode::No => orbit::systemd::Mode::No,
            },
        }
    }
}

/// Parses the command line, runs the command and maps failures to exit status 125.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = cli.context();
    let result = match cli.command {
        Command::Run(args) => pods::run(&ctx, args),
        Command::Prepare(args) => pods::prepare_cmd(&ctx, args),
        Command::RunPrepared {
            uuid,
            unit,
            restart,
        } => pods::run_prepared(&ctx, &uuid, unit.as_deref(), restart.as_deref()),
        Command::Status(args) => pods::status_cmd(&ctx, args),
        Command::List(args) => pods::list(&ctx, args),
        Command::Enter(args) => pods::enter(&ctx, args),
        Command::Stop(args) => pods::stop(&ctx, args),
        Command::Rm { uuids } => pods::rm(&ctx, uuids),
        Command::Gc(args) => pods::gc(&ctx, args),
        Command::CatManifest { uuid } => pods::cat_manifest(&ctx, &uuid),
        Command::Logs(args) => pods::logs(&ctx, args),
        Command::Export {
            uuid,
            file,
            app,
            name,
            overwrite,
        } => pods::export(&ctx, &uuid, &file, app.as_deref(), name, overwrite),
        Command::App(cmd) => apps::run(&ctx, cmd),
        Command::Fetch(args) => images::fetch(&ctx, args),
        Command::ApiService(args) => api_service(&ctx, args),
        Command::Cri(args) => cri(&ctx, args),
        Command::Login(args) => login::login(&ctx, args),
        Command::Logout(args) => login::logout(&ctx, args),
        Command::Image(cmd) => images::run(&ctx, cmd),
        Command::Trust(args) => trust::run(&ctx, args),
        Command::Version(f) => output::version(f.format),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "orbit", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out_dir } => write_man_pages(&out_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if ctx.debug {
                eprintln!("orbit: error: {e:?}");
            } else {
                eprintln!("orbit: error: {e:#}");
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}
