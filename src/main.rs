//! The `fulcrum` command: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => fulcrum::cli::check(&config),
        Command::Run { config, watch, threads } => fulcrum::cli::run(&config, watch, threads.map(usize::from)),
        Command::Demo { config } => fulcrum::cli::demo(config.as_deref()),
    }
}
