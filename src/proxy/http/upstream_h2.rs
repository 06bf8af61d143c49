//! HTTP/2 to a backend's servers (`protocol: h2` over TLS, `h2c` without): one
//! connection per server and worker carries every request in flight to it, as
//! streams. The connection stays in the server's pool while in use (it is shared,
//! not lent); a request finding it closed (GOAWAY, reset) gets a new one, once,
//! as does an idempotent bodiless request that a reused connection lost before
//! its answer (the same replay as on a reused HTTP/1.1 connection). A request
//! still waiting when its connection's task has ended is given up shortly after
//! (`LOST_GRACE`) instead of at `timeouts.server`: hyper can leave a stream
//! opened just as the connection ended with neither answer nor error.

use http::uri::{Authority, Scheme};
use http::{header, Request, Uri, Version};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::pin;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::body::ServerResponseBody;
use super::request_body::RequestBody;
use super::upstream::{
    client_body_failed, open, replay_after, replay_copy, within_server_time, Failure, SendError, ServerStream,
};
use crate::balance::Member;
use crate::cluster::Backend;
use crate::proxy::proxy_protocol::Endpoints;
use crate::proxy::quick_ack::QuickAck;
use crate::proxy::ProxyError;
use crate::upstream::{ActiveGuard, FailedConnect, Pooled, Worker};

/// Sends `req` to `member` over its shared HTTP/2 connection (opened if needed).
pub(super) async fn exchange(
    backend: &Backend,
    member: &Member,
    active: ActiveGuard,
    req: Box<Request<RequestBody>>,
    replayable: bool,
    worker: Worker,
    client: Endpoints,
) -> Result<super::upstream::Sent, Failure> {
    let req = for_h2(*req, backend, member);
    let client = Some(client);
    // A send_proxy server's connection names one client in its PROXY header: it
    // carries this request alone, never shared through the pool, and closes when
    // the response is done (its last handle dropped).
    let shared = member.send_proxy.is_none();
    let opened = if shared {
        shared_sender(member, backend, client, worker).await
    } else {
        connect(member, backend, client).await.map(|sender| (sender, true))
    };
    let (sender, fresh) = match opened {
        Ok(opened) => opened,
        Err(err) => return Err(Failure::Connect(err, Box::new(req))),
    };
    // A reused connection may have been lost just as the request went out (the
    // server closed it while idle): a request that may be sent twice goes again.
    let spare = (replayable && !fresh).then(|| replay_copy(&req));
    let req = match send_on(backend, member, sender, req).await {
        Ok(response) => return Ok((response.map(ServerResponseBody::Hyper), active)),
        Err(SendError::Failed(err)) if !fresh => *replay_after(member, err, spare)?,
        // Closed before taking the request: a new connection, unless this one was.
        Err(SendError::Unsent(req)) if !fresh => *req,
        Err(err) => return Err(err.on_fresh(member)),
    };
    // Only a pooled connection gets here (a private one is always fresh).
    let sender = match connect(member, backend, client).await {
        Ok(sender) => sender,
        Err(err) => return Err(Failure::Connect(err, Box::new(req))),
    };
    member.state.pool.put(worker, sender.clone());
    match send_on(backend, member, sender, req).await {
        Ok(response) => Ok((response.map(ServerResponseBody::Hyper), active)),
        Err(err) => Err(err.on_fresh(member)),
    }
}

/// The server's shared connection on this worker: the pooled one, or one opened
/// now. Requests that find none take turns at the worker's gate for the server:
/// the first opens it, the others find it pooled (or its failure) when their turn
/// comes. True when this request opened it.
async fn shared_sender(
    member: &Member,
    backend: &Backend,
    client: Option<Endpoints>,
    worker: Worker,
) -> Result<(Shared, bool), ProxyError> {
    let slot = &member.state.pool;
    let pooled = |slot: &crate::upstream::PoolSlot| {
        let sender = slot.take::<Shared>(worker)?;
        slot.put(worker, sender.clone());
        Some(sender)
    };
    if let Some(sender) = pooled(slot) {
        return Ok((sender, false));
    }
    let Some(pool) = slot.get::<Shared>(worker) else {
        return connect(member, backend, client).await.map(|sender| (sender, true));
    };
    let waiting_since = std::time::Instant::now();
    // An async mutex held across the connect on purpose: it is the queue of the
    // requests that would otherwise each open a connection of their own.
    let mut turn = pool.gate(worker).lock().await;
    if let Some(sender) = pooled(slot) {
        return Ok((sender, false));
    }
    if let Some(failed) = turn.as_ref().filter(|failed| failed.at >= waiting_since) {
        return Err(ProxyError::Connect {
            server: member.name.clone(),
            address: member.state.key.address,
            source: std::io::Error::other(format!("the connect this request waited for failed: {}", failed.error)),
        });
    }
    match connect(member, backend, client).await {
        Ok(sender) => {
            *turn = None;
            slot.put(worker, sender.clone());
            Ok((sender, true))
        }
        Err(err) => {
            *turn = Some(FailedConnect { at: std::time::Instant::now(), error: err.to_string() });
            Err(err)
        }
    }
}

/// The request as HTTP/2 carries it: the target's scheme and authority (from
/// Host, which HTTP/2 sends as `:authority` instead) in the URI.
fn for_h2(req: Request<RequestBody>, backend: &Backend, member: &Member) -> Request<RequestBody> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| Authority::try_from(member.state.key.address.to_string()).ok());
    let scheme = if backend.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
    let mut uri = Uri::builder().scheme(scheme);
    if let Some(authority) = authority {
        uri = uri.authority(authority);
    }
    if let Some(path) = parts.uri.path_and_query() {
        uri = uri.path_and_query(path.clone());
    } else {
        uri = uri.path_and_query("/");
    }
    if let Ok(uri) = uri.build() {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

/// Opens an HTTP/2 connection to `member`; it runs in its own task.
async fn connect(member: &Member, backend: &Backend, client: Option<Endpoints>) -> Result<Shared, ProxyError> {
    let handshake = |err: hyper::Error| ProxyError::Upstream { server: member.name.clone(), source: Box::new(err) };
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    match open(member, backend, client).await? {
        ServerStream::Plain(stream) => {
            // ACK at once when the server may be holding back the rest of a
            // response (its Nagle waiting for our delayed ACK, see `quick_ack`).
            let stream = QuickAck::http2(stream);
            let (sender, conn) = builder.handshake(TokioIo::new(stream)).await.map_err(handshake)?;
            Ok(Shared::run(sender, conn, member))
        }
        ServerStream::Tls(stream) => {
            let (sender, conn) = builder.handshake(TokioIo::new(*stream)).await.map_err(handshake)?;
            Ok(Shared::run(sender, conn, member))
        }
    }
}

/// How long a request whose connection has ended still waits for its response
/// head: one the connection delivered just before its end is on its way through
/// hyper's tasks; after this, none can come.
const LOST_GRACE: Duration = Duration::from_millis(50);

/// A server's shared HTTP/2 connection: the handle requests go out on, and the
/// signal that its connection task has ended.
#[derive(Debug, Clone)]
struct Shared {
    sender: SendRequest<RequestBody>,
    ended: CancellationToken,
}

impl Shared {
    /// Drives `conn` in its own task until it ends (then `ended` is set).
    fn run<F>(sender: SendRequest<RequestBody>, conn: F, member: &Member) -> Shared
    where
        F: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let ended = CancellationToken::new();
        let signal = ended.clone();
        let server = member.state.key.server.clone();
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%server, error = %err, "HTTP/2 server connection ended with an error");
            }
            signal.cancel();
        });
        Shared { sender, ended }
    }
}

/// Sends `req` on `conn`. A request taken just as the connection was lost can
/// be left waiting by hyper with no answer and no error (a stream opened as the
/// connection reached its end); once the connection task has ended, it gets
/// `LOST_GRACE` more, then fails as closed by the server (and may be replayed).
async fn send_on(
    backend: &Backend,
    member: &Member,
    mut conn: Shared,
    req: Request<RequestBody>,
) -> Result<http::Response<hyper::body::Incoming>, SendError> {
    let upload = req.body().start_upload();
    let sending = pin!(async { conn.sender.try_send_request(req).await.map_err(|err| send_failed(member, err)) });
    match unless_lost(&conn.ended.clone(), within_server_time(backend, member, upload, sending)).await {
        Some(sent) => sent,
        None => Err(SendError::Failed(ProxyError::ServerLost { server: member.name.clone() })),
    }
}

/// What hyper's failure to send says: the request back if it never left, else
/// whose fault it was (a failing request body is the client's).
fn send_failed(member: &Member, mut err: hyper::client::conn::TrySendError<Request<RequestBody>>) -> SendError {
    if let Some(unsent) = err.take_message() {
        return SendError::Unsent(Box::new(unsent));
    }
    let source = err.into_error();
    if source.is_user() {
        SendError::Failed(client_body_failed(Box::new(source)))
    } else {
        SendError::Failed(ProxyError::Upstream { server: member.name.clone(), source: Box::new(source) })
    }
}

/// `sending`'s outcome, or `None` once `ended` is set and `LOST_GRACE` has
/// passed without one (an outcome ready at the same time wins).
async fn unless_lost<T>(ended: &CancellationToken, sending: impl std::future::Future<Output = T>) -> Option<T> {
    let lost = async {
        ended.cancelled().await;
        tokio::time::sleep(LOST_GRACE).await;
    };
    tokio::select! {
        biased;
        outcome = sending => Some(outcome),
        () = lost => None,
    }
}

impl Pooled for Shared {
    fn is_ready(&mut self) -> bool {
        self.sender.is_ready() && !self.ended.is_cancelled()
    }
    fn is_closed(&mut self) -> bool {
        self.sender.is_closed() || self.ended.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_on_an_ended_connection_gives_up_after_the_grace_not_before() {
        let ended = CancellationToken::new();
        // Open connection: waits as long as the answer does.
        let answer = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "answer"
        };
        assert_eq!(unless_lost(&ended, answer).await, Some("answer"));
        // The connection ends: an answer never coming is given up after the grace.
        ended.cancel();
        let started = tokio::time::Instant::now();
        assert_eq!(unless_lost(&ended, std::future::pending::<&str>()).await, None);
        assert_eq!(started.elapsed(), LOST_GRACE);
        // An answer arriving within the grace still wins.
        let late = async {
            tokio::time::sleep(LOST_GRACE / 2).await;
            "late"
        };
        assert_eq!(unless_lost(&ended, late).await, Some("late"));
    }
}
