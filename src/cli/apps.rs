//! `orbit app …`: the mutable-pod operations a CRI server needs — an empty sandbox pod,
//! then apps added, started, stopped and removed one by one.

use anyhow::bail;
use clap::Subcommand;

use orbit::pod::prepare::{self, PodRequest};
use orbit::pod::stage1::{Stage1, STAGE1_ANNOTATION};
use orbit::pod::store::PodStore;
use orbit::pod::{lifecycle, spec, status};
use orbit::trust::TrustStore;

use super::output::{self, Format};
use super::pods::{app_requests_from, AppFlags, PodFlags};
use super::{Context, FormatArgs};

/// `orbit app` subcommands.
// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Start an empty pod whose stage1 waits for apps (prints nothing; use --uuid-file-save).
    Sandbox {
        #[command(flatten)]
        pod: PodFlags,
    },
    /// Add an app to a running sandbox pod: UUID IMAGE [APP OPTIONS] [-- ARGS].
    Add {
        /// Pod UUID.
        uuid: String,
        /// IMAGE [APP OPTIONS] [-- ARGS…]
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "IMAGE"
        )]
        app: Vec<String>,
    },
    /// Start an added (or exited) app.
    Start {
        /// Pod UUID.
        uuid: String,
        /// App name.
        #[arg(long)]
        app: String,
    },
    /// Stop a running app (SIGTERM).
    Stop {
        /// Pod UUID.
        uuid: String,
        /// App name.
        #[arg(long)]
        app: String,
    },
    /// Remove a stopped app from the pod.
    Rm {
        /// Pod UUID.
        uuid: String,
        /// App name.
        #[arg(long)]
        app: String,
    },
    /// List a pod's apps.
    List {
        /// Pod UUID.
        uuid: String,
        #[command(flatten)]
        format: FormatArgs,
        /// Omit the header line.
        #[arg(long)]
        no_legend: bool,
    },
    /// Show one app's status.
    Status {
        /// Pod UUID.
        uuid: String,
        /// App name.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Run a command in a running app (like `orbit enter --app`).
    Exec {
        /// Pod UUID.
        uuid: String,
        /// App name.
        #[arg(long)]
        app: String,
        /// Command.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Runs `orbit app …`.
pub fn run(ctx: &Context, cmd: AppCommand) -> anyhow::Result<()> {
    let pods = PodStore::new(ctx.store.root());
    match cmd {
        AppCommand::Sandbox { pod } => sandbox(ctx, &pods, pod),
        AppCommand::Add { uuid, app } => {
            let pod = pods.find(&uuid)?;
            let reqs = app_requests_from(&app, &AppFlags::default())?;
            let req = reqs.into_iter().next().expect("one app");
            let app = prepare::add_app(
                &ctx.store,
                &TrustStore::new(ctx.config.clone()),
                &pod,
                &req,
                ctx.insecure_image,
                ctx.insecure_run,
            )?;
            if let Err(e) = lifecycle::app_request(&pod, "app-add", &app.name, ctx.debug) {
                let _ = prepare::remove_app(&pod, &app.name);
                return Err(e.into());
            }
            println!("{}", app.name);
            Ok(())
        }
        AppCommand::Start { uuid, app } => Ok(lifecycle::app_request(
            &pods.find(&uuid)?,
            "app-start",
            &app,
            ctx.debug,
        )?),
        AppCommand::Stop { uuid, app } => Ok(lifecycle::app_request(
            &pods.find(&uuid)?,
            "app-stop",
            &app,
            ctx.debug,
        )?),
        AppCommand::Rm { uuid, app } => {
            let pod = pods.find(&uuid)?;
            lifecycle::app_request(&pod, "app-rm", &app, ctx.debug)?;
            Ok(prepare::remove_app(&pod, &app)?)
        }
        AppCommand::List {
            uuid,
            format,
            no_legend,
        } => {
            let info = status::info(&pods.find(&uuid)?)?;
            if format.format == Format::Json {
                return output::json(&info.apps);
            }
            let rows: Vec<Vec<String>> = info
                .apps
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.image.clone(),
                        a.state().to_string(),
                        a.status
                            .exit_code
                            .map(|c| c.to_string())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["NAME", "IMAGE", "STATE", "EXIT"], &rows, !no_legend);
            Ok(())
        }
        AppCommand::Status { uuid, app, format } => {
            let info = status::info(&pods.find(&uuid)?)?;
            let Some(a) = info.apps.iter().find(|a| a.name == app) else {
                bail!("pod {} has no app '{app}'", info.uuid)
            };
            if format.format == Format::Json {
                return output::json(a);
            }
            println!("name={}", a.name);
            println!("state={}", a.state());
            if let Some(c) = a.status.exit_code {
                println!("exit-code={c}");
            }
            if let Some(e) = &a.status.error {
                println!("error={e}");
            }
            Ok(())
        }
        AppCommand::Exec { uuid, app, command } => {
            Err(lifecycle::exec_enter(&pods, &uuid, Some(&app), &command, ctx.debug).into())
        }
    }
}

fn sandbox(ctx: &Context, pods: &PodStore, flags: PodFlags) -> anyhow::Result<()> {
    let mut annotations = flags.annotations()?;
    let volumes = flags
        .volume
        .iter()
        .map(|v| spec::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let stage1 = Stage1::select(
        flags.stage1_name.as_deref(),
        flags.stage1_path.as_deref(),
        annotations.get(STAGE1_ANNOTATION).map(String::as_str),
        &ctx.config,
    )?;
    super::pods::kvm_annotations(&mut annotations, &flags, &stage1, ctx)?;
    let req = PodRequest {
        apps: vec![],
        volumes,
        hostname: flags.hostname.clone(),
        net: flags.net.net.clone(),
        ports: flags.net.port.clone(),
        dns: flags.net.dns(),
        cni_plugin_dirs: flags.net.cni_plugin_dir.clone(),
        registry: ctx.registry.clone(),
        pull_policy: ctx
            .pull_policy
            .unwrap_or(orbit::image::fetch::PullPolicy::New),
        no_overlay: false,
        annotations,
        mutable: true,
        insecure_image: ctx.insecure_image,
        insecure: ctx.insecure_run,
        private_users: false,
        user_namespace: None,
        log: flags.log.clone(),
        host_namespaces: Vec::new(),
    };
    let prepared = prepare::prepare(
        &ctx.store,
        &TrustStore::new(ctx.config.clone()),
        pods,
        &req,
        stage1,
    )?;
    if let Some(f) = &flags.uuid_file_save {
        std::fs::write(f, format!("{}\n", prepared.pod.uuid))?;
    }
    let systemd = orbit::systemd::PendingSystemd::start(ctx.systemd);
    Err(lifecycle::exec_run(pods, prepared, ctx.debug, systemd).into())
}
