//! What each subcommand does, kept out of `main` so tests can call it.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// `fulcrum check`: validates and prints a one-line summary, or every error.
pub fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let servers: usize = config.backends.iter().map(|b| b.servers.len()).sum();
            println!(
                "{}: ok ({} frontends, {} backends, {} servers)",
                path.display(),
                config.frontends.len(),
                config.backends.len(),
                servers
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            let lines = err.lines();
            for line in &lines {
                eprintln!("{}: {line}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), lines.len());
            ExitCode::FAILURE
        }
    }
}

/// `fulcrum run`: serves until a shutdown signal.
pub fn run(path: &Path) -> ExitCode {
    let _ = path;
    ExitCode::FAILURE
}
