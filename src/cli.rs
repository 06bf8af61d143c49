//! What each subcommand does, kept out of `main` so tests can call it.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::instance::Instance;
use crate::workers::Workers;

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

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Raises the open-file limit to the hard limit, as HAProxy and nginx do: the
/// usual soft limit (1024) would cap a balancer at a few hundred clients. The
/// instance derives its connection cap from the limit in force when it starts.
fn raise_descriptor_limit() {
    match crate::fd_limit::raise_nofile() {
        Ok(raised) => tracing::info!(
            limit = raised.to,
            raised_from = raised.from,
            max_client_connections = crate::fd_limit::connection_cap(raised.to),
            "open-file limit"
        ),
        Err(err) => tracing::warn!(%err, "cannot raise the open-file limit; keeping it as it is"),
    }
}

/// `fulcrum run`: serves until SIGTERM/SIGINT; SIGHUP (and, with `watch`, a change of
/// the file's content) reloads the file.
/// `threads` sets the worker-thread count (default: one per core).
pub fn run(path: &Path, watch: bool, threads: Option<usize>) -> ExitCode {
    init_logging();
    raise_descriptor_limit();
    block_on(threads, |workers| serve(path, watch, workers))
}

/// `fulcrum demo`: starts the demo app servers, then serves the demo config (watched).
pub fn demo(requested: Option<&Path>) -> ExitCode {
    init_logging();
    raise_descriptor_limit();
    block_on(None, |workers| async move {
        let path = match crate::demo::config_path(requested) {
            Ok(path) => path,
            Err(err) => return fail(&err),
        };
        let config = match Config::load(&path) {
            Ok(config) => config,
            Err(err) => return report(&path, &err.to_string()),
        };
        let servers = match crate::demo::start_servers(&config).await {
            Ok(servers) => servers,
            Err(err) => return fail(&err),
        };
        println!("{}", crate::demo::banner(&config, &servers));
        println!("Config: {}\n", path.display());
        serve(&path, true, workers).await
    })
}

fn block_on<F: std::future::Future<Output = ExitCode>>(
    threads: Option<usize>,
    work: impl FnOnce(Workers) -> F,
) -> ExitCode {
    // Single-threaded runtimes everywhere (measured in loadtest/RESULTS.md): with one
    // thread everything runs here; with more, per-core workers accept and serve the
    // connections and this runtime keeps health checks, admin, reloads and signals.
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let workers = match threads {
        0 | 1 => Workers::none(),
        n => match Workers::start(n) {
            Ok(workers) => workers,
            Err(err) => return fail(&err),
        },
    };
    let mut builder = tokio::runtime::Builder::new_current_thread();
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(work(workers)),
        Err(err) => fail(&err),
    }
}

async fn serve(path: &Path, watch: bool, workers: Workers) -> ExitCode {
    let instance = match Instance::start_from_file(path, workers).await {
        Ok(instance) => instance,
        Err(err) => return report(path, &err.to_string()),
    };
    if watch {
        tokio::spawn(crate::watch::watch(instance.clone(), path.to_path_buf(), crate::watch::DEFAULT_INTERVAL));
    }
    match crate::signals::serve_until_shutdown(&instance).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            ExitCode::FAILURE
        }
    }
}

/// Logs every line of a start error, prefixed with the file.
fn report(path: &Path, error: &str) -> ExitCode {
    for line in error.lines() {
        tracing::error!("{}: {line}", path.display());
    }
    ExitCode::FAILURE
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!("{error}");
    ExitCode::FAILURE
}
