//! `orbit trust`: trust a key for an image-name prefix or for all images; list; remove.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::Serialize;

use orbit::trust::{PublicKey, TrustScope, TrustStore};

use super::output::{self, Format};
use super::{Context, FormatArgs};

/// Arguments of `orbit trust`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TrustArgs {
    /// Trust the key for images whose name starts with this prefix (e.g. example.com/busybox).
    #[arg(long, conflicts_with = "root")]
    prefix: Option<String>,
    /// Trust the key for every image.
    #[arg(long)]
    root: bool,
    /// Store the key in the user configuration instead of the system one.
    #[arg(long)]
    user: bool,
    /// Public key file (PEM SubjectPublicKeyInfo, as `orbit image keygen` and cosign write).
    #[arg(value_name = "KEYFILE")]
    keyfile: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<TrustCommand>,
}

#[derive(Subcommand, Debug)]
enum TrustCommand {
    /// List trusted keys.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        format: FormatArgs,
        /// Omit the header line.
        #[arg(long)]
        no_legend: bool,
    },
    /// Stop trusting a key (by fingerprint or unambiguous prefix of it).
    Rm {
        /// Fingerprint.
        fingerprint: String,
        /// Only remove the key's trust for this prefix.
        #[arg(long, conflicts_with = "root")]
        prefix: Option<String>,
        /// Only remove the key's root trust.
        #[arg(long)]
        root: bool,
    },
}

#[derive(Serialize)]
struct Row {
    scope: String,
    prefix: Option<String>,
    fingerprint: String,
    algorithm: String,
    path: String,
    /// Why the file cannot be used (it is skipped); absent for usable keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<String>,
}

fn scope_columns(scope: Option<&TrustScope>) -> (String, Option<String>) {
    match scope {
        Some(TrustScope::Root) => ("root".into(), None),
        Some(TrustScope::Prefix(p)) => ("prefix".into(), Some(p.clone())),
        None => ("unknown".into(), None),
    }
}

/// Runs `orbit trust …`.
pub fn run(ctx: &Context, args: TrustArgs) -> anyhow::Result<()> {
    let store = TrustStore::new(ctx.config.clone());
    match args.command {
        Some(TrustCommand::List { format, no_legend }) => list(&store, format.format, no_legend),
        Some(TrustCommand::Rm {
            fingerprint,
            prefix,
            root,
        }) => {
            let scope = scope_of(prefix, root);
            let removed = store.remove(&fingerprint, scope.as_ref())?;
            for k in removed {
                println!(
                    "removed {} ({}) from {}",
                    k.fingerprint,
                    k.scope,
                    k.path.display()
                );
            }
            Ok(())
        }
        None => {
            let Some(keyfile) = args.keyfile else {
                bail!("give a KEYFILE to trust, or use `orbit trust list` / `orbit trust rm`")
            };
            let Some(scope) = scope_of(args.prefix, args.root) else {
                bail!("say what the key is trusted for: --prefix NAME (images under NAME) or --root (every image)");
            };
            let pem = std::fs::read_to_string(&keyfile)
                .with_context(|| format!("cannot read {}", keyfile.display()))?;
            let key = PublicKey::from_pem(&pem)
                .with_context(|| format!("{} is not a usable public key", keyfile.display()))?;
            let into = if args.user {
                ctx.config.user.clone()
            } else {
                ctx.config.system.clone()
            };
            let k = store.add(scope, &key, &into)?;
            println!(
                "trusting {} ({}) for {}: {}",
                k.fingerprint,
                k.algorithm.name(),
                k.scope,
                k.path.display()
            );
            Ok(())
        }
    }
}

fn scope_of(prefix: Option<String>, root: bool) -> Option<TrustScope> {
    match (prefix, root) {
        (Some(p), _) => Some(TrustScope::Prefix(p)),
        (None, true) => Some(TrustScope::Root),
        (None, false) => None,
    }
}

fn list(store: &TrustStore, format: Format, no_legend: bool) -> anyhow::Result<()> {
    let (keys, broken) = store.scan()?;
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|k| {
            let (scope, prefix) = scope_columns(Some(&k.scope));
            Row {
                scope,
                prefix,
                fingerprint: k.fingerprint.clone(),
                algorithm: k.algorithm.name().to_string(),
                path: k.path.display().to_string(),
                broken: None,
            }
        })
        .collect();
    rows.extend(broken.iter().map(|b| {
        let (scope, prefix) = scope_columns(b.scope.as_ref());
        Row {
            scope,
            prefix,
            fingerprint: "BROKEN".into(),
            algorithm: "-".into(),
            path: b.path.display().to_string(),
            broken: Some(b.reason.clone()),
        }
    }));
    if format == Format::Json {
        return output::json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.prefix.clone().unwrap_or_else(|| match r.scope.as_str() {
                    "root" => "*".into(),
                    _ => "?".into(),
                }),
                r.fingerprint.clone(),
                r.algorithm.clone(),
                r.path.clone(),
            ]
        })
        .collect();
    output::table(
        &["PREFIX", "FINGERPRINT", "ALGORITHM", "FILE"],
        &table,
        !no_legend,
    );
    for b in &broken {
        eprintln!("orbit: warning: skipped (BROKEN): {}", b.reason);
    }
    Ok(())
}
