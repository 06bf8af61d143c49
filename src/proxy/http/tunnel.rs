//! Upgraded connections (WebSocket and others): after the 101, bytes flow both
//! ways until either side closes or the tunnel idles out (`timeouts.tunnel`).

use std::sync::Arc;

use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use super::request_body::RequestBody;
use crate::cluster::Frontend;
use crate::proxy::copy::{pipe_io, Counted, Idle};
use crate::upstream::ActiveGuard;

/// Runs the tunnel in its own task, so the 101 reaches the client first.
pub fn spawn(
    tasks: &TaskTracker,
    frontend: Arc<Frontend>,
    client: OnUpgrade,
    server: OnUpgrade,
    sender: Option<SendRequest<RequestBody>>,
    active: ActiveGuard,
) {
    tasks.spawn(async move {
        // The server connection now belongs to the tunnel, never to the pool.
        let _connection = sender;
        let _active = active;
        let (client, server) = match tokio::try_join!(client, server) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(frontend = %frontend.name, error = %err, "upgrade failed");
                return;
            }
        };
        let tunnel = frontend.timeouts.tunnel;
        let idle = Idle::new(tunnel, tunnel);
        // Client bytes are already counted by the client socket wrapper.
        let (up, down) = (Counted::new(None), Counted::new(None));
        if let Err(err) = pipe_io(TokioIo::new(client), TokioIo::new(server), &idle, &up, &down).await {
            tracing::debug!(frontend = %frontend.name, error = %err, "tunnel ended");
        }
    });
}
