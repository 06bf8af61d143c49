//! Layer 7: a hyper server (HTTP/1.1 and h2c on the same port, told apart by the
//! h2 preface) in front of pooled HTTP/1.1 connections to the servers.

mod access_log;
mod body;
pub mod cache;
mod client_state;
mod client_timer;
pub mod compress;
mod dormant;
pub mod forward_proxy;
mod framing;
mod h1;
mod headers;
mod host;
mod io;
mod local;
mod park;
mod proxied;
mod reply;
mod request_body;
mod sendfile;
mod service;
mod stall;
mod static_files;
mod sticky;
mod tls;
mod tunnel;
mod upstream;
mod upstream_h2;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::ResponseBody;
pub use host::{request_authority, HostError, InvalidAuthority, RequestAuthority};
pub use request_body::RequestBody;
pub use static_files::StaticSite;

use crate::cluster::{Frontend, LiveFrontend};
use crate::listener::Seat;
use crate::proxy::proxy_protocol::Endpoints;
use crate::tls::HandshakeInfo;
use crate::upstream::Worker;
use client_state::ClientHandle;
use dormant::{Awaiting, Dormant, Woken};
use io::{ClientIo, Transport};
pub use park::Park;
use park::Parked;
use service::ConnContext;
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

/// Serves one client connection of an http frontend until it closes, or until
/// `stop` asks it to finish politely (HTTP/1.1 `Connection: close`, h2 GOAWAY):
/// at shutdown, or when a reload removed the listener.
///
/// The connection's own limits (head and idle timeouts, head size) are those of
/// the frontend it was accepted on; each request is routed and forwarded by the
/// frontend `live` holds when its head arrives.
///
/// A connection alternates between dormant, while the client sends nothing, and
/// awake, served by hyper with everything a request needs, allocated when it
/// wakes and freed when it goes dormant again. A dormant plain connection waits
/// in its worker's [`Park`], with no task; a TLS one (whose rustls state must
/// live on anyway) waits in its task as a [`Dormant`]. On a `proxy_protocol`
/// frontend the connection's PROXY header comes first, read in its task (see
/// `proxied`).
///
/// A plain fn returning the future, not an `async fn`: an async fn's arguments
/// take their space in its state twice (as arguments and as locals); here the
/// captured values are used in place.
#[allow(clippy::manual_async_fn)]
pub fn serve(client: Client, stream: std::net::TcpStream, seat: Seat) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Boxed once for the connection's life: see `Parked::conn`.
        let mut conn = Box::new(Connection::open(client, seat));
        if conn.client.frontend.http.is_none() {
            tracing::error!(frontend = %conn.client.frontend.name, "http connection on a frontend without http settings");
            return;
        }
        if conn.client.frontend.proxy_protocol {
            // Boxed: other connections' tasks do not carry the header's reading.
            return Box::pin(proxied::serve(conn, stream)).await;
        }
        if conn.client.frontend.needs_local {
            conn.client.find_local(socket2::SockRef::from(&stream));
        }
        let client = &conn.client;
        let frontend = &client.frontend;
        // A TLS connection is served as soon as its handshake is done: rustls may
        // already hold its first request, which no socket readiness would announce.
        let (dormant, awake) = match &frontend.tls {
            Some(tls) => {
                let Some(stream) = client.register_tls(stream) else { return };
                // The handshake and the first request head share one deadline.
                let head_due = Instant::now() + frontend.timeouts.request_header;
                // Boxed: a plain connection's task does not carry a TLS one's state.
                match Box::pin(client.handshake(stream, tls, head_due)).await {
                    Some(tls) => (Dormant::handshaken(tls, head_due), true),
                    None => return,
                }
            }
            // Most clients send their request with the connection: served at once.
            // The others wait in the park from the start.
            None => match stream.peek(&mut [0u8]) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let deadline = Instant::now() + frontend.timeouts.request_header;
                    let park = Arc::clone(&client.park);
                    let parked = Parked { conn, socket: stream, deadline, awaiting: Awaiting::FirstRequest };
                    match park.hold(parked) {
                        Ok(()) => return,
                        Err(parked) => return run_unparked(parked).await,
                    }
                }
                // Bytes, an end of stream or an error: hyper reads which.
                _ => match io::register(stream) {
                    Ok(socket) => (Dormant::accepted(Transport::Plain(socket), frontend), true),
                    Err(err) => {
                        tracing::warn!(frontend = %frontend.name, client = %client.peer, error = %err, "cannot register the client socket");
                        return;
                    }
                },
            },
        };
        run(conn, dormant, awake).await
    }
}

/// Serves a connection that leaves the park: its client sent something.
pub(super) fn resume(parked: Parked) {
    let tasks = parked.conn.client.tasks.clone();
    tasks.spawn(async move {
        let Parked { conn, socket, deadline, awaiting } = parked;
        match io::register(socket) {
            Ok(socket) => {
                let dormant = Dormant { socket: Transport::Plain(socket), deadline, awaiting };
                run(conn, dormant, true).await
            }
            Err(err) => {
                let client = &conn.client;
                tracing::warn!(frontend = %client.frontend.name, client = %client.peer, error = %err, "cannot register the client socket");
            }
        }
    });
}

/// Serves a connection the park could not take: it waits in this task.
async fn run_unparked(parked: Parked) {
    let Parked { conn, socket, deadline, awaiting } = parked;
    match io::register(socket) {
        Ok(socket) => run(conn, Dormant { socket: Transport::Plain(socket), deadline, awaiting }, false).await,
        Err(err) => {
            let client = &conn.client;
            tracing::warn!(frontend = %client.frontend.name, client = %client.peer, error = %err, "cannot register the client socket");
        }
    }
}

/// Alternates between serving the connection (from `dormant`, at once if
/// `awake`) and waiting for its next request, until it ends or, plain, is parked.
async fn run(conn: Box<Connection>, mut dormant: Dormant, mut awake: bool) {
    loop {
        if !std::mem::take(&mut awake) {
            if matches!(dormant.socket, Transport::Plain(_)) {
                let Dormant { socket: Transport::Plain(socket), deadline, awaiting } = dormant else { unreachable!() };
                // Deregistered from tokio: the park watches it now.
                let socket = socket.into_inner();
                let park = Arc::clone(&conn.client.park);
                match park.hold(Parked { conn, socket, deadline, awaiting }) {
                    Ok(()) => return,
                    Err(parked) => return Box::pin(run_unparked(parked)).await,
                }
            }
            let client = &conn.client;
            match dormant.wait(&client.frontend, &client.stop).await {
                Woken::Readable => {}
                Woken::TimedOut | Woken::Stopped => return,
                Woken::Failed(err) => {
                    tracing::debug!(frontend = %client.frontend.name, client = %client.peer, error = %err, "client socket failed");
                    return;
                }
            }
        }
        let client = &conn.client;
        // Boxed: what serving takes is allocated only while the connection is awake.
        match Box::pin(client.serve(dormant)).await {
            Ok(Some(again)) => dormant = again,
            Ok(None) => return,
            Err(err) => return on_connection_error(&client.frontend, client.peer, err.as_ref()),
        }
    }
}

/// A client connection from its accept to its close: its client, its places
/// under the limits, and its count among the frontend's open connections.
#[derive(Debug)]
pub struct Connection {
    /// Who the connection serves, and how.
    pub client: Client,
    _seat: Seat,
}

impl Connection {
    /// Counts the connection open on its frontend until it drops.
    fn open(client: Client, seat: Seat) -> Self {
        let stats = &client.frontend.stats;
        stats.connections_total.fetch_add(1, Relaxed);
        stats.active_connections.fetch_add(1, Relaxed);
        Connection { client, _seat: seat }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.client.frontend.stats.active_connections.fetch_sub(1, Relaxed);
    }
}

/// A client connection accepted on an http listener: what serving it needs.
#[derive(Debug)]
pub struct Client {
    /// The listener's frontend as reloads swap it.
    pub live: LiveFrontend,
    /// The frontend when the connection was accepted: its limits are the connection's.
    pub frontend: Arc<Frontend>,
    /// The client address (from its PROXY header on a `proxy_protocol` frontend).
    pub peer: SocketAddr,
    /// The address the client connected to: the connection's local address (the
    /// listener's, until a wildcard bind's is looked up), or the destination of
    /// its PROXY header. A `send_proxy` server is sent it with `peer`.
    pub local: SocketAddr,
    /// The worker serving the connection.
    pub worker: Worker,
    /// Cancelled at shutdown or when a reload removes the listener.
    pub stop: CancellationToken,
    /// Where upgraded tunnels run, so a drain waits for them too.
    pub tasks: TaskTracker,
    /// Where the connection waits, plain, while its client sends nothing.
    pub park: Arc<Park>,
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

/// How long an HTTP/1.1 connection waits for its next request before hyper's
/// connection state and buffers are freed and it goes [`Dormant`]. Not at once:
/// re-creating them for every request of a busy connection costs more CPU than
/// the memory is worth (measured: 1.8x the CPU per request with 1,000 busy
/// keep-alive clients).
const PARK_AFTER: Duration = Duration::from_secs(1);

impl Client {
    /// Serves the client from a wake until it goes dormant again (`Some`) or the
    /// connection ends (`None`). A new connection is first told apart: HTTP/2
    /// (prior knowledge) by the h2 preface, HTTP/1.x otherwise.
    async fn serve(&self, dormant: Dormant) -> Result<Option<Dormant>, ConnError> {
        let (head_due, first) = match dormant.awaiting {
            Awaiting::FirstRequest => (dormant.deadline, true),
            Awaiting::NextRequest => (Instant::now() + self.frontend.timeouts.request_header, false),
        };
        let tls = dormant.socket.tls_info();
        let alpn_h2 = tls.as_ref().map(|info| info.h2);
        let (mut io, handle) = ClientIo::new(dormant.socket, Arc::clone(&self.frontend), self.peer, head_due);
        let ctx = self.context(&handle, tls);
        if first {
            // Over TLS, ALPN told; in the clear, the h2 preface does.
            let h2 = match alpn_h2 {
                Some(h2) => Some(h2),
                None => tokio::select! {
                    sniffed = io.sniff_h2() => sniffed?,
                    _ = self.stop.cancelled() => return Ok(None),
                },
            };
            match h2 {
                None => return Ok(None),
                Some(true) => return self.serve_h2(io, ctx, &handle).await.map(|()| None),
                Some(false) => {}
            }
        }
        io.park_when_idle(PARK_AFTER);
        self.serve_h1(io, ctx, &handle).await
    }

    /// Looks up the address the client connected to when the listener's does not
    /// tell it (a wildcard bind).
    fn find_local(&mut self, socket: socket2::SockRef<'_>) {
        if self.local.ip().is_unspecified() {
            if let Some(local) = socket.local_addr().ok().and_then(|local| local.as_socket()) {
                self.local = local;
            }
        }
    }

    /// The client and the address it connected to, as a `send_proxy` server is told.
    fn endpoints(&self) -> Endpoints {
        Endpoints { source: self.peer, destination: self.local }
    }

    /// What the requests of a connection share.
    fn context(&self, handle: &ClientHandle, tls: Option<HandshakeInfo>) -> Arc<ConnContext> {
        Arc::new(ConnContext::new(
            Arc::clone(&self.live),
            Arc::clone(&self.frontend),
            self.endpoints(),
            self.worker,
            handle.clone(),
            self.tasks.clone(),
            tls,
        ))
    }

    /// HTTP/1.1: hyper's connection lives while requests come; when the client
    /// goes idle between requests it ends (if `io` parks, see
    /// [`ClientIo::park_when_idle`]) and the connection goes dormant.
    async fn serve_h1(
        &self,
        io: ClientIo,
        ctx: Arc<ConnContext>,
        handle: &ClientHandle,
    ) -> Result<Option<Dormant>, ConnError> {
        let Some(settings) = &self.frontend.http else { return Ok(None) };
        let service = service_fn(move |req| Arc::clone(&ctx).handle(req));
        // Inline, not boxed: this whole future is boxed while the connection is awake.
        let mut conn = settings.http1.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::select! {
            result = &mut conn => result?,
            // Stopping, or idle too long where the framing watch cannot follow the
            // connection (so it is never parked): finish politely.
            _ = self.stop.cancelled() => {
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                (&mut conn).await?;
            }
            _ = handle.idle_expired() => {
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                (&mut conn).await?;
            }
        }
        // `None`: upgraded, the tunnel owns the socket now.
        let Some(parts) = conn.into_parts() else { return Ok(None) };
        if self.stop.is_cancelled() {
            return Ok(None);
        }
        Ok(parts.io.into_inner().into_parked().map(|(socket, idle_until)| Dormant::idle(socket, idle_until)))
    }

    /// HTTP/2 with prior knowledge: one hyper connection for the connection's
    /// life, closed with a GOAWAY when asked to stop or idle too long.
    async fn serve_h2(&self, io: ClientIo, ctx: Arc<ConnContext>, handle: &ClientHandle) -> Result<(), ConnError> {
        let Some(settings) = &self.frontend.http else { return Ok(()) };
        let service = service_fn(move |req| Arc::clone(&ctx).handle(req));
        let mut conn = Box::pin(settings.http2.serve_connection(TokioIo::new(io), service));
        tokio::select! {
            result = conn.as_mut() => result?,
            _ = self.stop.cancelled() => {
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
