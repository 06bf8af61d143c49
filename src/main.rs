//! The `fulcrum` command: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fulcrum::ctl::{Action, AdminState, Change, Target};

/// A Layer-4/7 load balancer.
#[derive(Debug, Parser)]
#[command(name = "fulcrum", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM/SIGINT; SIGHUP re-reads the config file.
    Run {
        /// The YAML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Also reload when the file's content changes (checked every second).
        #[arg(long)]
        watch: bool,
        /// Worker threads serving connections, each with its own single-threaded
        /// runtime (default: one per CPU core).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: Option<u16>,
    },
    /// Run the balancer on configs/demo.yaml in front of three built-in demo servers.
    Demo {
        /// Demo config (default: configs/demo.yaml if present, else the built-in copy).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: exit 0 if valid, 1 with every error on stderr.
    Check {
        /// The YAML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Drive a running instance through its admin API: status, drain, reload, ...
    Ctl {
        /// The admin listener (the instance's admin.bind).
        #[arg(long, global = true, value_name = "ADDR", default_value = "127.0.0.1:9100")]
        admin: String,
        /// File holding the admin token (default: the FULCRUM_ADMIN_TOKEN variable).
        #[arg(long, global = true, value_name = "PATH")]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Print every backend and server as a table.
    Status {
        /// Redraw the table until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// How often to redraw with --watch.
        #[arg(long, value_name = "DURATION", default_value = "2s", requires = "watch",
              value_parser = fulcrum::ctl::parse_interval)]
        interval: Duration,
    },
    /// No new requests or connections for a server; in-flight work finishes.
    Drain {
        /// BACKEND/SERVER, like app/app-1.
        target: Target,
        /// Only for this long (like 10m), then back to ready.
        #[arg(long = "for", value_name = "DURATION", value_parser = fulcrum::ctl::parse_for)]
        duration: Option<String>,
    },
    /// No traffic at all for a server; its idle pooled connections are closed.
    Maint {
        /// BACKEND/SERVER, like app/app-1.
        target: Target,
        /// Only for this long (like 1h), then back to ready.
        #[arg(long = "for", value_name = "DURATION", value_parser = fulcrum::ctl::parse_for)]
        duration: Option<String>,
    },
    /// Put a server back to normal (subject to its health checks).
    Ready {
        /// BACKEND/SERVER, like app/app-1.
        target: Target,
    },
    /// Set a server's weight.
    Weight {
        /// BACKEND/SERVER, like app/app-1.
        target: Target,
        /// The new weight.
        weight: u32,
        /// Only for this long (like 10m), then back to the configured weight.
        #[arg(long = "for", value_name = "DURATION", value_parser = fulcrum::ctl::parse_for)]
        duration: Option<String>,
    },
    /// Make the instance re-read its config file.
    Reload,
    /// Have the instance validate a config file (nothing is applied).
    Check {
        /// The YAML config file.
        file: PathBuf,
    },
}

impl CtlCommand {
    fn into_action(self) -> Action {
        let set = |target, state, weight, duration| Action::Set { target, change: Change { state, weight, duration } };
        match self {
            CtlCommand::Status { watch, interval } => Action::Status { watch: watch.then_some(interval) },
            CtlCommand::Drain { target, duration } => set(target, Some(AdminState::Drain), None, duration),
            CtlCommand::Maint { target, duration } => set(target, Some(AdminState::Maint), None, duration),
            CtlCommand::Ready { target } => set(target, Some(AdminState::Ready), None, None),
            CtlCommand::Weight { target, weight, duration } => set(target, None, Some(weight), duration),
            CtlCommand::Reload => Action::Reload,
            CtlCommand::Check { file } => Action::Check { file },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => fulcrum::cli::check(&config),
        Command::Run { config, watch, threads } => fulcrum::cli::run(&config, watch, threads.map(usize::from)),
        Command::Demo { config } => fulcrum::cli::demo(config.as_deref()),
        Command::Ctl { admin, token_file, command } => {
            fulcrum::ctl::run(&fulcrum::ctl::Options { admin, token_file }, command.into_action())
        }
    }
}
