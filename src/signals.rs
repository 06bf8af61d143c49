//! Process signals: SIGHUP reloads, SIGTERM/SIGINT drain then exit, a second
//! SIGTERM/SIGINT exits at once.

use tokio::signal::unix::{signal, SignalKind};

use crate::instance::Instance;

/// Serves `instance` until a shutdown signal, reloading on SIGHUP; returns after the drain.
pub async fn serve_until_shutdown(instance: &Instance) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                match instance.reload().await {
                    Ok(generation) => tracing::info!(generation, "reload applied"),
                    Err(err) => tracing::error!(error = %err, "reload failed; still serving the previous config"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight work");
    tokio::select! {
        finished = instance.shutdown() => {
            if !finished {
                tracing::warn!("drain timeout reached; exiting with connections still open");
            }
        }
        _ = terminate.recv() => tracing::warn!("second signal: exiting now"),
        _ = interrupt.recv() => tracing::warn!("second signal: exiting now"),
    }
    Ok(())
}
