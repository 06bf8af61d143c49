//! HTTP/2 to a backend's servers (`protocol: h2` over TLS, `h2c` without): one
//! connection per server and worker carries every request in flight to it, as
//! streams. The connection stays in the server's pool while in use (it is shared,
//! not lent); a request finding it closed (GOAWAY, reset) gets a new one, once,
//! as does an idempotent bodiless request that a reused connection lost before
//! its answer (the same replay as on a reused HTTP/1.1 connection).

use http::uri::{Authority, Scheme};
use http::{header, Request, Uri, Version};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::request_body::RequestBody;
use super::upstream::{open, replay_copy, send, Failure, SendError, ServerStream, TrySend};
use crate::balance::Member;
use crate::cluster::Backend;
use crate::proxy::proxy_protocol::Endpoints;
use crate::proxy::ProxyError;
use crate::upstream::{ActiveGuard, FailedConnect, Pooled, Worker};

/// Sends `req` to `member` over its shared HTTP/2 connection (opened if needed).
pub(super) async fn exchange(
    backend: &Backend,
    member: &Member,
    active: ActiveGuard,
    req: Request<RequestBody>,
    replayable: bool,
    worker: Worker,
    client: Endpoints,
) -> Result<super::upstream::Sent, Failure> {
    let req = for_h2(req, backend, member);
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
    let req = match send(backend, member, sender, req).await {
        Ok((response, _)) => return Ok((response, None, active)),
        Err(SendError::Failed(err)) => match spare {
            Some(copy) if !matches!(err, ProxyError::ServerTimeout { .. }) => {
                tracing::debug!(server = %member.name, error = %err, "reused HTTP/2 connection failed; replaying on a new one");
                copy
            }
            _ => return Err(Failure::Sent(err)),
        },
        // Closed before taking the request: a new connection, unless this one was.
        Err(SendError::Unsent(req)) if !fresh => *req,
        Err(SendError::Unsent(_)) => {
            return Err(Failure::Sent(ProxyError::ServerClosed { server: member.name.clone() }));
        }
    };
    // Only a pooled connection gets here (a private one is always fresh).
    let sender = match connect(member, backend, client).await {
        Ok(sender) => sender,
        Err(err) => return Err(Failure::Connect(err, Box::new(req))),
    };
    member.state.pool.put(worker, sender.clone());
    match send(backend, member, sender, req).await {
        Ok((response, _)) => Ok((response, None, active)),
        Err(SendError::Unsent(_)) => Err(Failure::Sent(ProxyError::ServerClosed { server: member.name.clone() })),
        Err(SendError::Failed(err)) => Err(Failure::Sent(err)),
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
) -> Result<(SendRequest<RequestBody>, bool), ProxyError> {
    let slot = &member.state.pool;
    let pooled = |slot: &crate::upstream::PoolSlot| {
        let sender = slot.take::<SendRequest<RequestBody>>(worker)?;
        slot.put(worker, sender.clone());
        Some(sender)
    };
    if let Some(sender) = pooled(slot) {
        return Ok((sender, false));
    }
    let Some(pool) = slot.get::<SendRequest<RequestBody>>(worker) else {
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
async fn connect(
    member: &Member,
    backend: &Backend,
    client: Option<Endpoints>,
) -> Result<SendRequest<RequestBody>, ProxyError> {
    let handshake = |err| ProxyError::Upstream { server: member.name.clone(), source: err };
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    match open(member, backend, client).await? {
        ServerStream::Plain(stream) => {
            let (sender, conn) = builder.handshake(TokioIo::new(stream)).await.map_err(handshake)?;
            tokio::spawn(run(conn, member));
            Ok(sender)
        }
        ServerStream::Tls(stream) => {
            let (sender, conn) = builder.handshake(TokioIo::new(*stream)).await.map_err(handshake)?;
            tokio::spawn(run(conn, member));
            Ok(sender)
        }
    }
}

/// Drives a server connection until it ends.
fn run<F>(conn: F, member: &Member) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
{
    let server = member.state.key.server.clone();
    async move {
        if let Err(err) = conn.await {
            tracing::debug!(%server, error = %err, "HTTP/2 server connection ended with an error");
        }
    }
}

impl Pooled for SendRequest<RequestBody> {
    fn is_ready(&self) -> bool {
        SendRequest::is_ready(self)
    }
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

impl TrySend for SendRequest<RequestBody> {
    fn try_send(
        &mut self,
        req: Request<RequestBody>,
    ) -> impl std::future::Future<
        Output = Result<http::Response<hyper::body::Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>>,
    > + Send {
        self.try_send_request(req)
    }
}
