//! Layer 7: a hyper server (HTTP/1.1 and h2c on the same port) in front of pooled
//! HTTP/1.1 connections to the servers.

mod access_log;
mod body;
mod client_state;
mod client_timer;
mod framing;
mod headers;
mod io;
mod pool;
mod reply;
mod request_body;
mod service;
mod stall;
mod tunnel;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use pool::{Pool, IDLE_TIMEOUT};
pub use request_body::RequestBody;

use crate::cluster::Frontend;
use io::ClientIo;
use service::ConnContext;

/// hyper refuses read buffers smaller than this.
const MIN_HEAD_BUFFER: usize = 8192;

/// Concurrent streams an h2c client may open (HAProxy's default too).
const H2_MAX_STREAMS: u32 = 100;

/// Receive window per h2c stream (the protocol's default size): what a stream may
/// have buffered here unread, so the connection's worst case is 6.4 MiB.
const H2_STREAM_WINDOW: u32 = 64 * 1024;

/// hyper's server settings for an http frontend, built once per snapshot (a
/// connection borrows them instead of carrying its own copy).
pub type ServerSettings = auto::Builder<TokioExecutor>;

/// The server settings of an http frontend accepting heads up to `max_header_bytes`.
pub fn server_settings(max_header_bytes: usize) -> ServerSettings {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // A client may send its request and shut down its write side (`nc`, some
        // health checkers): still answer, as HAProxy does without `abortonclose`.
        .half_close(true)
        .timer(TokioTimer::new())
        // ClientIo enforces `request_header` itself, and `client` between requests,
        // which hyper's single head timer cannot tell apart.
        .header_read_timeout(None)
        .max_buf_size(max_header_bytes.max(MIN_HEAD_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes.try_into().unwrap_or(u32::MAX))
        // The connection window covers every stream's: a stream whose server is slow
        // to take its upload cannot use up the window the others need to send theirs.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_STREAM_WINDOW * H2_MAX_STREAMS);
    builder
}

/// Serves one client connection of an http frontend until it closes, or until
/// `shutdown` asks it to finish politely (HTTP/1.1 `Connection: close`, h2 GOAWAY).
pub async fn serve(
    frontend: Arc<Frontend>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
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
    let ctx = Arc::new(ConnContext::new(Arc::clone(&frontend), peer, handle.clone(), tasks));
    let service = service_fn(move |req| Arc::clone(&ctx).handle(req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
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
