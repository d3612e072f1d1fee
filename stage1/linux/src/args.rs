//! The interface's command-line arguments: `--uuid=UUID`, `--debug`, `--app=NAME`,
//! `--force`, and a command after `--` (for `enter`).

/// Parsed entrypoint arguments.
#[derive(Debug, Default, Clone)]
pub struct Args {
    /// `--uuid`.
    pub uuid: String,
    /// `--debug`.
    pub debug: bool,
    /// `--app`.
    pub app: Option<String>,
    /// `--force` (stop).
    pub force: bool,
    /// `--lock-fd`: an inherited descriptor of the pod directory that already holds its lock.
    pub lock_fd: Option<i32>,
    /// The command after `--`.
    pub command: Vec<String>,
}

impl Args {
    /// Parses the arguments after the entrypoint.
    pub fn parse(raw: &[String]) -> Result<Args, String> {
        let mut a = Args::default();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or(format!("{name} needs a value"))
            };
            match key {
                "--uuid" => a.uuid = value("--uuid")?,
                "--app" => a.app = Some(value("--app")?),
                "--debug" => a.debug = true,
                "--lock-fd" => {
                    a.lock_fd = Some(
                        value("--lock-fd")?
                            .parse()
                            .map_err(|_| "--lock-fd needs a number".to_string())?,
                    )
                }
                "--force" => a.force = true,
                "--" => {
                    a.command = it.cloned().collect();
                    break;
                }
                other => return Err(format!("unknown argument '{other}'")),
            }
        }
        if a.uuid.is_empty() {
            return Err("--uuid is required".into());
        }
        Ok(a)
    }
}
