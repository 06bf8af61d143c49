//! Upgraded connections (WebSocket and others): after the 101, bytes flow both
//! ways until either side closes or the tunnel idles out (`timeouts.tunnel`).

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use super::h1::Upgraded;
use crate::cluster::Frontend;
use crate::proxy::copy::{pipe_io, Counted, Idle};
use crate::upstream::ActiveGuard;

/// Runs the tunnel in its own task, so the 101 reaches the client first.
pub fn spawn(tasks: &TaskTracker, frontend: Arc<Frontend>, client: OnUpgrade, server: Upgraded, active: ActiveGuard) {
    tasks.spawn(async move {
        let _active = active;
        let client = match client.await {
            Ok(client) => client,
            Err(err) => {
                tracing::warn!(frontend = %frontend.name, error = %err, "upgrade failed");
                return;
            }
        };
        let tunnel = frontend.timeouts.tunnel;
        let idle = Idle::new(tunnel, tunnel);
        // Client bytes are already counted by the client socket wrapper.
        let (up, down) = (Counted::new(None), Counted::new(None));
        if let Err(err) = pipe_io(TokioIo::new(client), server, &idle, &up, &down).await {
            tracing::debug!(frontend = %frontend.name, error = %err, "tunnel ended");
        }
    });
}
