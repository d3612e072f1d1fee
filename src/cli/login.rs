//! `orbit login` / `orbit logout`: registry credentials in the user config dir's
//! `auth.json` (docker's format, mode 0600), read back by every registry fetch together
//! with `~/.docker/config.json` and `$XDG_RUNTIME_DIR/containers/auth.json`.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;

use super::Context;

/// `orbit login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (HOST[:PORT]).
    registry: String,
    /// User name.
    #[arg(long, short = 'u')]
    username: String,
    /// Password (prefer --password-stdin: arguments are visible to other users).
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// `orbit logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (HOST[:PORT]).
    registry: String,
}

fn auth_file(ctx: &Context) -> std::path::PathBuf {
    ctx.config.user.join("auth.json")
}

fn read(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({"auths": {}})),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write(path: &std::path::Path, v: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(v)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Stores credentials for a registry.
pub fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give --password-stdin (or --password)"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    orbit::image::registry::check_login(&args.registry, &args.username, &password, &ctx.registry)
        .with_context(|| format!("cannot log in to {}", args.registry))?;
    let path = auth_file(ctx);
    let mut v = read(&path)?;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", args.username));
    v["auths"][&args.registry] = serde_json::json!({ "auth": token });
    write(&path, &v)?;
    eprintln!(
        "credentials for {} stored in {}",
        args.registry,
        path.display()
    );
    Ok(())
}

/// Forgets the credentials for a registry.
pub fn logout(ctx: &Context, args: LogoutArgs) -> anyhow::Result<()> {
    let path = auth_file(ctx);
    let mut v = read(&path)?;
    let removed = v["auths"]
        .as_object_mut()
        .and_then(|m| m.remove(&args.registry))
        .is_some();
    if !removed {
        bail!("not logged in to {} ({})", args.registry, path.display());
    }
    write(&path, &v)?;
    eprintln!("removed the credentials for {}", args.registry);
    Ok(())
}
