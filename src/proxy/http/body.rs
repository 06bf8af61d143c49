//! Body types on both sides of the proxy. Bodies stream frame by frame (hyper
//! applies backpressure); nothing is buffered whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::access_log::AccessRecord;
use crate::cluster::{ActiveGuard, ServerState};

/// A request body on its way to a server.
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client.
    Client(Incoming),
    /// No body (replayed requests, health checks).
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from a server; the server connection goes back to the pool at its end.
    Upstream(UpstreamBody),
    /// A short body made by the balancer itself (error pages).
    Static(Option<Bytes>),
}

impl ResponseBody {
    /// A balancer-made body.
    pub fn fixed(bytes: Bytes) -> Self {
        ResponseBody::Static(Some(bytes))
    }

    /// No body.
    pub fn empty() -> Self {
        ResponseBody::Static(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Static(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.inner.is_end_stream(),
            ResponseBody::Static(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.inner.size_hint(),
            ResponseBody::Static(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Static(None) => SizeHint::with_exact(0),
        }
    }
}

/// A server's response body. Holds the request's in-flight count on the server
/// until the body ends, then returns the connection to the server's pool.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<(SendRequest<RequestBody>, Arc<ServerState>)>,
    _active: Option<ActiveGuard>,
    /// The access-log line, written when this body is dropped.
    access: Option<Box<AccessRecord>>,
}

impl UpstreamBody {
    /// Wraps `inner`; `sender` returns to `server`'s pool when the body completes.
    pub fn new(
        inner: Incoming,
        sender: SendRequest<RequestBody>,
        server: Arc<ServerState>,
        active: ActiveGuard,
        access: Option<Box<AccessRecord>>,
    ) -> Self {
        let mut body = UpstreamBody { inner, release: Some((sender, server)), _active: Some(active), access };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        self._active = None;
        if let Some(access) = &mut self.access {
            access.complete = true;
        }
        if let Some((sender, server)) = self.release.take() {
            server.pool.put(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(access), Poll::Ready(Some(Ok(frame)))) = (&mut self.access, &polled) {
            access.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            // An error leaves the connection unusable: drop it instead of pooling it.
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
