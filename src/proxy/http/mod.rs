//! Layer 7: a hyper server (HTTP/1.1 and h2c on the same port, told apart by the
//! h2 preface) in front of pooled HTTP/1.1 connections to the servers.

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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use host::{request_authority, HostError, InvalidAuthority, RequestAuthority};
pub use request_body::RequestBody;

use crate::cluster::{Frontend, LiveFrontend};
use crate::upstream::Worker;
use client_state::ClientHandle;
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
    if frontend.http.is_none() {
        tracing::error!(frontend = %frontend.name, "http connection on a frontend without http settings");
        return;
    }
    let ctx = Arc::new(ConnContext::new(live, Arc::clone(&frontend), peer, worker, handle.clone(), tasks));
    // Boxed: the futures below each hold the socket state while it is theirs; a
    // pointer keeps the connection's task small.
    if let Err(err) = serve_client(&frontend, Box::new(io), ctx, &handle, &stop).await {
        on_connection_error(&frontend, peer, err.as_ref());
    }
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// How long an HTTP/1.1 connection waits for its next request before hyper's
/// connection state and buffers are freed. Not at once: re-creating them for
/// every request of a busy connection costs more CPU than the memory is worth
/// (measured: 1.8x the CPU per request with 1,000 busy keep-alive clients).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Tells HTTP/2 (prior knowledge) from HTTP/1.x by the first bytes, then serves
/// the connection in that protocol.
async fn serve_client(
    frontend: &Frontend,
    mut io: Box<ClientIo>,
    ctx: Arc<ConnContext>,
    handle: &ClientHandle,
    stop: &CancellationToken,
) -> Result<(), ConnError> {
    let h2 = tokio::select! {
        sniffed = io.sniff_h2() => sniffed?,
        _ = stop.cancelled() => return Ok(()),
    };
    match h2 {
        None => Ok(()),
        Some(true) => serve_h2(frontend, io, ctx, handle, stop).await,
        Some(false) => serve_h1(frontend, io, ctx, handle, stop).await,
    }
}

/// HTTP/1.1: hyper's connection lives while requests come; when the client goes
/// idle between requests it ends (see [`ClientIo::park_when_idle`]), its state and
/// buffers are freed, and a new one starts when the next request arrives.
async fn serve_h1(
    frontend: &Frontend,
    mut io: Box<ClientIo>,
    ctx: Arc<ConnContext>,
    handle: &ClientHandle,
    stop: &CancellationToken,
) -> Result<(), ConnError> {
    let Some(settings) = &frontend.http else { return Ok(()) };
    io.park_when_idle(PARK_AFTER);
    loop {
        let service = {
            let ctx = Arc::clone(&ctx);
            service_fn(move |req| Arc::clone(&ctx).handle(req))
        };
        // Boxed: the connection's state is allocated only while it lives, not
        // carried in this task while the client is idle.
        let mut conn = Box::pin(settings.http1.serve_connection(TokioIo::new(io), service).with_upgrades());
        tokio::select! {
            result = conn.as_mut() => result?,
            // Stopping, or idle too long where the framing watch cannot follow the
            // connection (so it is never parked): finish politely.
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await?;
            }
            _ = handle.idle_expired() => {
                conn.as_mut().graceful_shutdown();
                conn.as_mut().await?;
            }
        }
        // `None`: upgraded, the tunnel owns the socket now.
        let Some(parts) = Pin::into_inner(conn).into_parts() else { return Ok(()) };
        io = socket_of(parts);
        if !io.take_parked() || stop.is_cancelled() {
            return Ok(());
        }
        let _idle = frontend.stats.idle_connection();
        tokio::select! {
            readable = io.readable() => readable?,
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// The client socket of an ended hyper connection. Only the socket goes on: the
/// rest, hyper's read buffer (empty at a park) among it, is freed here rather
/// than held while the client is idle.
fn socket_of<S>(parts: hyper::server::conn::http1::Parts<TokioIo<Box<ClientIo>>, S>) -> Box<ClientIo> {
    parts.io.into_inner()
}

/// HTTP/2 with prior knowledge: one hyper connection for the connection's life,
/// closed with a GOAWAY when asked to stop or idle too long.
async fn serve_h2(
    frontend: &Frontend,
    io: Box<ClientIo>,
    ctx: Arc<ConnContext>,
    handle: &ClientHandle,
    stop: &CancellationToken,
) -> Result<(), ConnError> {
    let Some(settings) = &frontend.http else { return Ok(()) };
    let service = service_fn(move |req| Arc::clone(&ctx).handle(req));
    let mut conn = Box::pin(settings.http2.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        result = conn.as_mut() => result?,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
        _ = handle.idle_expired() => {
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
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
