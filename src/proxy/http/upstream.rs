//! Sending one request to a server: pooled or fresh connection, connect retries
//! on other servers, and one replay of an idempotent request that a reused
//! connection lost before any response byte.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Method, Request, Response};

use super::body::ServerResponseBody;
use super::client_timer::ClientTimedOut;
use super::h1::{self, ServerConn, ServerIo};
use super::request_body::{RequestBody, Upload};
use crate::balance::Member;
use crate::cluster::Backend;
use crate::proxy::connect::connect_server;
use crate::proxy::error::BoxError;
use crate::proxy::proxy_protocol::Endpoints;
use crate::proxy::quick_ack::QuickAck;
use crate::proxy::retry::{on_servers_preferring, Attempt};
use crate::proxy::ProxyError;
use crate::upstream::{ActiveGuard, Worker};

/// A response head from a server, with what the body needs to finish the exchange.
pub struct Exchange {
    /// The server's response (body still streaming; an HTTP/1.1 body takes its
    /// connection back to the pool at its end).
    pub response: Response<ServerResponseBody>,
    /// Index of the server in the backend.
    pub server: usize,
    /// In-flight count on the server, held until the response body completes.
    pub active: ActiveGuard,
}

pub(super) enum Failure {
    /// No byte of the request was sent: another server may be tried.
    Connect(ProxyError, Box<Request<RequestBody>>),
    /// The request (or part of it) reached the server: no other server gets it.
    Sent(ProxyError),
}

/// Forwards `req` to a server of `backend`, retrying on other servers what the
/// backend's `retry_on` lists (a failed connect by default); server `prefer` (a
/// sticky session's) first if it can take it. `client` names the client to a
/// `send_proxy` server. With `name_server`, the request named no host (HTTP/1.0
/// without Host) and is sent with the chosen server's address as its Host, as
/// HTTP/1.1 requires.
pub async fn forward(
    backend: &Backend,
    key: Option<u64>,
    prefer: Option<usize>,
    client: Endpoints,
    req: Box<Request<RequestBody>>,
    name_server: bool,
    worker: Worker,
) -> Result<Exchange, ProxyError> {
    let replayable = is_idempotent(req.method()) && http_body::Body::is_end_stream(req.body());
    let policy = backend.retry_on;
    // What failed after the request left may be sent again only from a copy kept
    // before it left: idempotent requests without a body, and only if asked for.
    let keep_copy = replayable && policy.after_send();
    // Pinned where they are made (see `ConnContext::handle`).
    let (server, (response, active)) =
        pin!(on_servers_preferring(backend, key, prefer, req, |member, active, req| async move {
            let spare = keep_copy.then(|| replay_copy(&req));
            match pin!(exchange(backend, member, active, req, replayable, name_server, worker, client)).await {
                Ok(sent) => match spare {
                    Some(copy) if policy.on_status(sent.0.status().as_u16()) => Attempt::RetryOr(sent, copy),
                    _ => Attempt::Done(sent),
                },
                Err(Failure::Connect(err, unsent)) => Attempt::Retry(err, unsent),
                Err(Failure::Sent(err)) => match spare {
                    Some(copy) if retried_after_send(&policy, &err) => Attempt::Retry(err, copy),
                    _ => Attempt::Fail(err),
                },
            }
        }))
        .await?;
    Ok(Exchange { response, server, active })
}

/// A failure after the request left that `retry_on` lists: a reset (or a close
/// before the answer), or no answer in time.
fn retried_after_send(policy: &crate::cluster::RetryPolicy, err: &ProxyError) -> bool {
    match err {
        ProxyError::Upstream { .. } | ProxyError::ServerClosed { .. } | ProxyError::ServerLost { .. } => policy.reset,
        ProxyError::ServerTimeout { .. } => policy.timeout,
        _ => false,
    }
}

pub(super) type Sent = (Response<ServerResponseBody>, ActiveGuard);

#[allow(clippy::too_many_arguments)]
async fn exchange(
    backend: &Backend,
    member: &Member,
    active: ActiveGuard,
    mut req: Box<Request<RequestBody>>,
    replayable: bool,
    name_server: bool,
    worker: Worker,
    client: Endpoints,
) -> Result<Sent, Failure> {
    if let (true, Some(host)) = (name_server, &member.state.host_header) {
        req.headers_mut().insert(http::header::HOST, host.clone());
    }
    if backend.protocol.is_h2() {
        // Boxed, as is the connect below: the state machines of HTTP/2 and of a
        // new connection (TLS included) are many times the size of a pooled
        // exchange's, and every request's future would carry (and copy) their room.
        return Box::pin(super::upstream_h2::exchange(backend, member, active, req, replayable, worker, client)).await;
    }
    // A send_proxy server's connection named one client in its PROXY header: it
    // carries that client's request alone, is never pooled, and closes once the
    // response is read (or carries the tunnel, after a 101).
    let home = member.send_proxy.is_none().then(|| (Arc::clone(&member.state), worker));
    let pooled = match home {
        Some(_) => member.state.pool.take::<ServerConn>(worker),
        None => None,
    };
    if let Some(conn) = pooled {
        match pin!(send_h1(backend, member, conn, req, home.clone())).await {
            Ok(response) => return Ok((response, active)),
            Err(SendError::Unsent(back)) => req = back,
            // Sent again only if it may be sent twice (no body, idempotent).
            Err(SendError::Lost(err, back)) => req = replay_after(member, err, replayable.then_some(back))?,
            Err(SendError::Failed(err)) => return Err(Failure::Sent(err)),
        }
    }
    let conn = match Box::pin(connect(member, backend, Some(client))).await {
        Ok(conn) => conn,
        Err(err) => return Err(Failure::Connect(err, req)),
    };
    match pin!(send_h1(backend, member, conn, req, home)).await {
        Ok(response) => Ok((response, active)),
        Err(err) => Err(err.on_fresh(member)),
    }
}

/// What a reused connection's failure after the request left leaves to send on
/// a new one: the copy kept of a request that may be sent twice (`spare`),
/// unless the server was only slow (a timeout is not replayed).
pub(super) fn replay_after(
    member: &Member,
    err: ProxyError,
    spare: Option<Box<Request<RequestBody>>>,
) -> Result<Box<Request<RequestBody>>, Failure> {
    match spare {
        Some(copy) if !matches!(err, ProxyError::ServerTimeout { .. }) => {
            tracing::debug!(server = %member.name, error = %err, "reused connection failed; replaying on a new one");
            Ok(copy)
        }
        _ => Err(Failure::Sent(err)),
    }
}

pub(super) enum SendError {
    /// No byte of the request left: here it is back.
    Unsent(Box<Request<RequestBody>>),
    /// The request (or part of it) left, then the exchange failed.
    Failed(ProxyError),
    /// As `Failed`, for a request without a body, given back (HTTP/1.1: the
    /// request is kept until its answer instead of copied before it leaves).
    Lost(ProxyError, Box<Request<RequestBody>>),
}

impl SendError {
    /// The failure of a send on a connection opened for it: nothing to retry on
    /// (one that closed before taking the request was closed by the server).
    pub(super) fn on_fresh(self, member: &Member) -> Failure {
        match self {
            SendError::Unsent(_) => Failure::Sent(ProxyError::ServerClosed { server: member.name.clone() }),
            SendError::Failed(err) | SendError::Lost(err, _) => Failure::Sent(err),
        }
    }
}

/// Resolves when the server has had its time (`timeouts.server`) without
/// progress: counted while the upload is its turn and once the body is sent; a
/// body waiting for the client is limited by `timeouts.client` instead.
async fn server_time_out(backend: &Backend, upload: Option<Arc<Upload>>) {
    let timeout = backend.timeouts.server;
    match upload {
        Some(upload) => upload.server_quiet(timeout).await,
        None => tokio::time::sleep(timeout).await,
    }
}

/// Runs `sending` (a request's exchange up to its response head, pinned where
/// the caller made it) within the server's time; a response is counted on the server.
pub(super) fn within_server_time<'a, T, F>(
    backend: &'a Backend,
    member: &'a Member,
    upload: Option<Arc<Upload>>,
    sending: Pin<&'a mut F>,
) -> WithinServerTime<'a, F, impl Future<Output = ()> + 'a>
where
    F: Future<Output = Result<T, SendError>>,
{
    WithinServerTime { sending, time_out: server_time_out(backend, upload), backend, member }
}

pin_project_lite::pin_project! {
    /// The future of [`within_server_time`]. A combinator, not an `async fn` with
    /// a `select!`: that holds the exchange twice (as its argument, and moved into
    /// the select), and every future around it carries and copies that room on
    /// each request (2 KB of the HTTP/1.1 exchange's 4 KB).
    pub(super) struct WithinServerTime<'a, F, O> {
        sending: Pin<&'a mut F>,
        #[pin]
        time_out: O,
        backend: &'a Backend,
        member: &'a Member,
    }
}

impl<T, F, O> Future for WithinServerTime<'_, F, O>
where
    F: Future<Output = Result<T, SendError>>,
    O: Future<Output = ()>,
{
    type Output = Result<T, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The answer first: one that is there wins over a time just run out.
        if let Poll::Ready(answered) = this.sending.as_mut().poll(cx) {
            if answered.is_ok() {
                this.member.state.requests_total.fetch_add(1, Relaxed);
            }
            return Poll::Ready(answered);
        }
        ready!(this.time_out.poll(cx));
        let (server, timeout) = (this.member.name.clone(), this.backend.timeouts.server);
        Poll::Ready(Err(SendError::Failed(ProxyError::ServerTimeout { server, timeout })))
    }
}

/// The client's request body failed on its way: the client's doing, not the server's.
pub(super) fn client_body_failed(source: BoxError) -> ProxyError {
    ProxyError::ClientBody { timed_out: ClientTimedOut::caused(source.as_ref()), source }
}

/// Sends `req` on an HTTP/1.1 connection and reads the response head, within
/// the server's time; the body takes `conn` to `home` at its end.
async fn send_h1(
    backend: &Backend,
    member: &Member,
    conn: ServerConn,
    req: Box<Request<RequestBody>>,
    home: h1::Home,
) -> Result<Response<ServerResponseBody>, SendError> {
    let upload = req.body().start_upload();
    let sending = pin!(async {
        pin!(h1::send(conn, req, home)).await.map_err(|failure| match failure {
            h1::Sending::Unsent(req) => SendError::Unsent(req),
            h1::Sending::Server(err, back) => {
                let err = ProxyError::Upstream { server: member.name.clone(), source: Box::new(err) };
                match back {
                    Some(request) => SendError::Lost(err, request),
                    None => SendError::Failed(err),
                }
            }
            h1::Sending::ClientBody(source) => SendError::Failed(client_body_failed(source)),
        })
    });
    let response = pin!(within_server_time(backend, member, upload, sending)).await?;
    Ok(response.map(ServerResponseBody::Own))
}

/// Opens a new HTTP/1.1 connection to `member` (over TLS if the backend says so).
async fn connect(member: &Member, backend: &Backend, client: Option<Endpoints>) -> Result<ServerConn, ProxyError> {
    let io = match open(member, backend, client).await? {
        // ACK the server's segments at once: a server writing head and body apart
        // with Nagle on would otherwise wait for our delayed ACK (see `quick_ack`).
        ServerStream::Plain(stream) => ServerIo::Plain(QuickAck::new(stream)),
        // Beneath TLS the quick ACK cannot see the response head: plain I/O.
        ServerStream::Tls(stream) => ServerIo::Tls(stream),
    };
    Ok(ServerConn::new(io))
}

/// A connection to a server, before HTTP starts on it.
pub(super) enum ServerStream {
    Plain(tokio::net::TcpStream),
    /// Boxed: rustls's state is large.
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// Connects to `member` (sending a `send_proxy` server the PROXY header naming
/// `client`), and runs the TLS handshake if the backend speaks TLS; all within
/// `timeouts.connect`.
pub(super) async fn open(
    member: &Member,
    backend: &Backend,
    client: Option<Endpoints>,
) -> Result<ServerStream, ProxyError> {
    let started = tokio::time::Instant::now();
    let stream = connect_server(member, backend.timeouts.connect, client).await?;
    member.state.connections_total.fetch_add(1, Relaxed);
    let (Some(tls), Some(name)) = (&backend.tls, &member.tls_name) else {
        return Ok(ServerStream::Plain(stream));
    };
    let deadline = started + backend.timeouts.connect;
    let failed = |source| {
        member.state.connect_errors.fetch_add(1, Relaxed);
        ProxyError::Tls { server: member.name.clone(), address: member.state.key.address, source }
    };
    match tokio::time::timeout_at(deadline, tls.connect(name, stream)).await {
        Ok(Ok(stream)) => Ok(ServerStream::Tls(Box::new(stream))),
        Ok(Err(source)) => Err(failed(source)),
        Err(_) => Err(failed(std::io::ErrorKind::TimedOut.into())),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// A copy of a bodiless request, to send again if the first send is lost.
pub(super) fn replay_copy(req: &Request<RequestBody>) -> Box<Request<RequestBody>> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Box::new(copy)
}
