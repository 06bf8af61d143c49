//! Response bodies on their way to the client. Bodies stream frame by frame (hyper
//! applies backpressure); nothing is buffered whole.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::access_log::AccessRecord;
use super::cache::RecordingBody;
use super::client_state::{ClientHandle, OpenRequest};
use super::compress::CompressedBody;
use super::h1::ServerBody;
use super::stall::StallTimer;
use super::static_files::FileBody;
use crate::upstream::ActiveGuard;

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ResponseBody {
    /// Streamed from a server; the server connection goes back to the pool at its end.
    Upstream(UpstreamBody),
    /// A short body made by the balancer itself (error pages), and the request it
    /// answers, open until the body is written.
    Static(Option<Bytes>, Option<OpenRequest>),
    /// A file of a `static` route, read chunk by chunk as the client takes it, and
    /// the request it answers, open until the body is written.
    File(FileBody, Option<OpenRequest>),
    /// Another body coded on its way (gzip, brotli, zstd). Boxed: it holds a
    /// `ResponseBody`, and its encoder would make every response body larger.
    Compressed(Box<CompressedBody>),
    /// A server's body copied into the cache as it is sent (see `cache::record`).
    /// Boxed: only responses being stored carry the copy.
    Recording(Box<RecordingBody>),
    /// A body made here (a route's answer, the cache's, an error page) with its
    /// access-log line, written when the body is done. Boxed: only frontends with
    /// `access_log: true` carry one.
    Logged(Box<LoggedBody>),
}

impl ResponseBody {
    /// A balancer-made body.
    pub fn fixed(bytes: Bytes) -> Self {
        ResponseBody::Static(Some(bytes), None)
    }

    /// No body.
    pub fn empty() -> Self {
        ResponseBody::Static(None, None)
    }

    /// This body with `access` written when it is done (bytes sent counted);
    /// as it is when the frontend does not log.
    pub fn logged(self, access: Option<Box<AccessRecord>>) -> Self {
        match access {
            Some(access) => {
                let mut body = LoggedBody { inner: self, access };
                body.access.complete = body.inner.is_end_stream();
                ResponseBody::Logged(Box::new(body))
            }
            None => self,
        }
    }

    /// Sends a static route's file with `sendfile(2)` through `client`'s socket
    /// (see `sendfile`), if this body is such a file and nothing on its way would
    /// read its bytes. Only for a plain HTTP/1.1 connection: the caller knows.
    pub fn send_files_directly(&mut self, client: &ClientHandle) {
        match self {
            ResponseBody::File(body, _) => body.send_directly(client.clone()),
            ResponseBody::Logged(body) => body.inner.send_files_directly(client),
            // Compression reads the bytes; the rest are not files.
            _ => {}
        }
    }

    /// Keeps `open` (the request this body answers) until the body is done.
    pub fn hold(&mut self, open: OpenRequest) {
        match self {
            ResponseBody::Upstream(body) => body.open = Some(open),
            ResponseBody::Static(_, slot) | ResponseBody::File(_, slot) => *slot = Some(open),
            ResponseBody::Compressed(body) => body.hold(open),
            ResponseBody::Recording(body) => body.hold(open),
            ResponseBody::Logged(body) => body.inner.hold(open),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ResponseBody::Static(bytes, _) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::File(body, _) => Pin::new(body).poll_frame(cx),
            ResponseBody::Compressed(body) => Pin::new(body.as_mut()).poll_frame(cx),
            ResponseBody::Recording(body) => Pin::new(body.as_mut()).poll_frame(cx),
            ResponseBody::Logged(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(body) => body.inner.is_end_stream(),
            ResponseBody::Static(bytes, _) => bytes.is_none(),
            ResponseBody::File(body, _) => body.is_end_stream(),
            ResponseBody::Compressed(body) => body.is_end_stream(),
            ResponseBody::Recording(body) => body.is_end_stream(),
            ResponseBody::Logged(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(body) => body.inner.size_hint(),
            ResponseBody::Static(Some(bytes), _) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Static(None, _) => SizeHint::with_exact(0),
            ResponseBody::File(body, _) => body.size_hint(),
            ResponseBody::Compressed(body) => body.size_hint(),
            ResponseBody::Recording(body) => body.size_hint(),
            ResponseBody::Logged(body) => body.inner.size_hint(),
        }
    }
}

/// A body made here and its access-log line (see [`ResponseBody::logged`]).
#[derive(Debug)]
pub struct LoggedBody {
    inner: ResponseBody,
    access: Box<AccessRecord>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.as_mut().get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.access.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
                this.access.complete = this.inner.is_end_stream();
            }
            Poll::Ready(None) => this.access.complete = true,
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

/// Error of a body sent to the client: the server's, or a stall we detected.
pub type BodyError = crate::proxy::error::BoxError;

/// A server's response body as it comes off the connection: read by our
/// HTTP/1.1 client, or by hyper's (HTTP/2, and the forward proxy's destinations).
#[derive(Debug)]
pub enum ServerResponseBody {
    /// HTTP/1.1: the body owns its connection and takes it back to the pool at its end.
    Own(ServerBody),
    /// hyper's.
    Hyper(Incoming),
}

impl Body for ServerResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ServerResponseBody::Own(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            ServerResponseBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServerResponseBody::Own(body) => body.is_end_stream(),
            ServerResponseBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ServerResponseBody::Own(body) => body.size_hint(),
            ServerResponseBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// A server's response body on its way to the client. Holds the request's
/// in-flight count on the server until the body ends.
///
/// A server that stops sending mid-body for `timeouts.server` is given up on: the
/// client's response is cut (it cannot be turned into a 504 any more) and the server
/// connection is dropped rather than pooled.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: ServerResponseBody,
    _active: Option<ActiveGuard>,
    /// The access-log line, written when this body is dropped.
    access: Option<Box<AccessRecord>>,
    stall: StallTimer,
    /// Keeps the client connection from counting as idle until the body is done.
    open: Option<OpenRequest>,
}

/// The server stopped sending in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("server sent nothing for {0:?} in the middle of the response body")]
pub struct BodyStalled(Duration);

impl UpstreamBody {
    /// Wraps `inner`, holding `active` until it ends.
    pub fn new(
        inner: ServerResponseBody,
        active: ActiveGuard,
        access: Option<Box<AccessRecord>>,
        idle_limit: Duration,
    ) -> Self {
        let mut body =
            UpstreamBody { inner, _active: Some(active), access, stall: StallTimer::new(idle_limit), open: None };
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
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            if self.stall.stalled(cx) {
                // The server connection is dropped (closed) with this body.
                return Poll::Ready(Some(Err(Box::new(BodyStalled(self.stall.limit())))));
            }
            return Poll::Pending;
        }
        self.stall.moved();
        if let (Some(access), Poll::Ready(Some(Ok(frame)))) = (&mut self.access, &polled) {
            access.bytes += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
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
