//! `fulcrum ctl`: drives a running instance through its admin API (status table,
//! drain / maint / ready / weight of one server, reload, config check).
//!
//! Exit codes: 0 done, 1 refused or failed (with one clear line on stderr), 2 bad
//! usage (clap, before anything is sent).

mod client;
mod error;
mod ops;
mod table;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

pub use client::{Client, TIMEOUT};
pub use error::CtlError;
pub use table::render as render_status;

/// Where the admin API is and how to prove the right to write.
#[derive(Debug, Clone)]
pub struct Options {
    /// The admin listener, `host:port`.
    pub admin: String,
    /// File holding the token; without it, `FULCRUM_ADMIN_TOKEN`.
    pub token_file: Option<PathBuf>,
}

/// One `fulcrum ctl` command.
#[derive(Debug, Clone)]
pub enum Action {
    /// Print the status table once, or every `watch` until Ctrl-C.
    Status {
        /// Refresh interval, when watching.
        watch: Option<Duration>,
    },
    /// Change one server's admin state and/or weight.
    Set {
        /// The server.
        target: Target,
        /// What to change.
        change: Change,
    },
    /// Make the instance re-read its config file.
    Reload,
    /// Have the instance validate this config file.
    Check {
        /// The YAML file sent.
        file: PathBuf,
    },
}

/// A change to one server: state, weight, or both, optionally for a while.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New admin state.
    pub state: Option<AdminState>,
    /// New weight.
    pub weight: Option<u32>,
    /// How long the override lasts (as typed, e.g. `10m`); forever without it.
    pub duration: Option<String>,
}

/// A server's operator-set state: the same the API and the server keep.
pub use crate::upstream::AdminState;

/// `BACKEND/SERVER`. Only the first `/` separates: discovered servers are named
/// like `pods/10.0.0.7`, so `app/pods/10.0.0.7` is server `pods/10.0.0.7` of `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((backend, server)) if !backend.is_empty() && !server.is_empty() => {
                Ok(Target { backend: backend.to_string(), server: server.to_string() })
            }
            _ => Err(format!("expected BACKEND/SERVER, like app/app-1; got {text:?}")),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.backend, self.server)
    }
}

/// Checks a `--for` duration (`10m`, `1h30m`) and keeps it as typed for the API.
pub fn parse_for(text: &str) -> Result<String, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => Err("a duration above zero, like 10m".into()),
        Ok(_) => Ok(text.trim().to_string()),
        Err(err) => Err(format!("{err}; expected a duration like 30s, 10m or 1h")),
    }
}

/// Parses a `--watch` interval; under 100 ms would only redraw faster than anyone reads.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d < Duration::from_millis(100) => Err("at least 100ms".into()),
        Ok(d) => Ok(d),
        Err(err) => Err(format!("{err}; expected a duration like 2s")),
    }
}

/// Runs `action` against the admin API and prints its result; the exit code says how it went.
pub fn run(options: &Options, action: Action) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)
        .and_then(|runtime| runtime.block_on(execute(options, action)));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("fulcrum ctl: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(options: &Options, action: Action) -> Result<bool, CtlError> {
    let outcome = match action {
        Action::Status { watch: Some(interval) } => {
            return watch::run(&Client::new(&options.admin, None), interval).await
        }
        Action::Status { watch: None } => {
            let status = ops::status(&Client::new(&options.admin, None)).await?;
            print!("{}", table::render(&status, watch::now_ms()));
            return Ok(true);
        }
        Action::Set { target, change } => ops::set_server(&writer(options)?, &target, &change).await?,
        Action::Reload => ops::reload(&writer(options)?).await?,
        Action::Check { file } => ops::check(&writer(options)?, &file).await?,
    };
    for line in &outcome.lines {
        if outcome.ok {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    Ok(outcome.ok)
}

/// A client carrying the token: `--token-file`, else `FULCRUM_ADMIN_TOKEN`, else none
/// (the instance then says whether it wants one, or takes no writes at all).
fn writer(options: &Options) -> Result<Client, CtlError> {
    let token = match &options.token_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| CtlError::TokenFile { path: path.clone(), source })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(CtlError::EmptyToken { path: path.clone() });
            }
            Some(token.to_string())
        }
        None => std::env::var("FULCRUM_ADMIN_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
    };
    Ok(Client::new(&options.admin, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_slash() {
        assert_eq!("app/app-1".parse(), Ok(Target { backend: "app".into(), server: "app-1".into() }));
        assert_eq!("app/pods/10.0.0.7".parse::<Target>().map(|t| t.server), Ok("pods/10.0.0.7".into()));
        for bad in ["app", "/app-1", "app/", "", "/"] {
            let err = bad.parse::<Target>().unwrap_err();
            assert!(err.contains("BACKEND/SERVER"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_are_checked_but_kept_as_typed() {
        assert_eq!(parse_for("10m"), Ok("10m".into()));
        assert_eq!(parse_for(" 1h30m "), Ok("1h30m".into()));
        assert!(parse_for("0s").is_err());
        assert!(parse_for("soon").is_err());
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("10ms").is_err());
    }
}
