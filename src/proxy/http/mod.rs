//! Layer 7: a hyper server (HTTP/1.1 and h2c on the same port) in front of pooled
//! HTTP/1.1 connections to the servers.

mod access_log;
mod body;
mod client_state;
mod client_timer;
mod framing;
mod headers;
mod host;
mod io;
mod reply;
mod request_body;
mod service;
mod stall;
mod tunnel;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use host::{request_authority, HostError, InvalidAuthority, RequestAuthority};
pub use request_body::RequestBody;

use crate::cluster::{Frontend, LiveFrontend};
use crate::upstream::Worker;
use io::ClientIo;
use service::ConnContext;

/// Serves one client connection of an http frontend until it closes, or until
/// `stop` asks it to finish politely (HTTP/1.1 `Connection: close`, h2 GOAWAY):
/// at shutdown, or when a reload removed the listener.
///
/// The connection's own limits (head and idle timeouts, head size) are those of
/// the frontend it was accepted on; each request is routed and forwarded by the
/// frontend `live` holds when its head arrives.
pub async fn serve(
    live: LiveFrontend,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    worker: Worker,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let frontend = live.load_full();
    let (io, handle) = match ClientIo::new(stream, Arc::clone(&frontend), peer) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(frontend = %frontend.name, client = %peer, error = %err, "cannot register the client socket");
            return;
        }
    };
    let Some(builder) = frontend.http.as_ref() else {
        tracing::error!(frontend = %frontend.name, "http connection on a frontend without http settings");
        return;
    };
    let ctx = Arc::new(ConnContext::new(live, Arc::clone(&frontend), peer, worker, handle.clone(), tasks));
    let service = service_fn(move |req| Arc::clone(&ctx).handle(req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = handle.idle_expired() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        on_connection_error(&frontend, peer, err.as_ref());
    }
}

/// Accounts for a connection that ended with an error: hyper itself answers
/// malformed heads (400) and oversized heads (431). A late head got its 408 from
/// [`ClientIo`] as its time ran out; other client limits end the connection
/// without a word: nothing sent in time or idle too long (browsers open spare
/// connections they may never use), or a late body (the service answered it 408).
fn on_connection_error(frontend: &Frontend, peer: SocketAddr, err: &(dyn std::error::Error + 'static)) {
    let status = match err.downcast_ref::<hyper::Error>() {
        Some(err) if err.is_parse_too_large() => Some(431),
        Some(err) if err.is_parse() || err.is_parse_status() => Some(400),
        _ => None,
    };
    match status {
        Some(code) => {
            frontend.stats.count_response(code);
            tracing::info!(frontend = %frontend.name, client = %peer, status = code, error = %err, "rejected client request");
        }
        None => tracing::debug!(frontend = %frontend.name, client = %peer, error = %err, "client connection ended"),
    }
}
