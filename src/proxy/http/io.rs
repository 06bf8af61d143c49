//! The client socket as hyper sees it: counts bytes for the frontend, follows the
//! request framing (see [`FramingWatch`]), applies the client-side time limits
//! (see [`ClientTimer`]), and stays reachable after hyper gives up on it, so a slow
//! request head can still get a 408.
//!
//! It sits on [`AsyncFd`] rather than tokio's `TcpStream` to save a syscall per
//! request: after a read shorter than the buffer the socket is known to be empty,
//! so readiness is cleared at once instead of being discovered by one more `recv`
//! failing with `EAGAIN` (which hyper's keep-alive read otherwise costs every request).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client_timer::{ClientTimedOut, ClientTimer, Wait};
use super::framing::FramingWatch;
use crate::cluster::Frontend;

/// A client connection shared between hyper and the connection handler.
#[derive(Debug)]
pub struct ClientIo {
    stream: Arc<AsyncFd<std::net::TcpStream>>,
    frontend: Arc<Frontend>,
    flags: Arc<Flags>,
    framing: FramingWatch,
    timer: ClientTimer,
    /// Bytes read from the client so far.
    received: u64,
}

/// State the handler and the service read while hyper owns the [`ClientIo`].
#[derive(Debug)]
struct Flags {
    /// The client sent bytes since our last write: a request is in progress.
    mid_request: AtomicBool,
    /// Index of the request whose head had both Content-Length and
    /// Transfer-Encoding (`u64::MAX`: none).
    ambiguous_head: AtomicU64,
    /// Requests handed to the service and not yet fully answered.
    open_requests: AtomicU32,
    /// Requests handed to the service so far.
    requests_started: AtomicU64,
}

impl ClientIo {
    /// Wraps an accepted stream; the returned handle keeps the socket reachable.
    /// `stream` must be non-blocking; it is registered with the current runtime.
    /// Its time limits are the frontend's `request_header` and `client` timeouts.
    pub fn new(stream: std::net::TcpStream, frontend: Arc<Frontend>) -> io::Result<(ClientIo, ClientHandle)> {
        // SAFETY: the AsyncFd owns the stream, so its descriptor stays open and the
        // same for the AsyncFd's whole life.
        let registered = unsafe { AsyncFd::register(stream) };
        let stream = Arc::new(registered.map_err(io::Error::from)?);
        let flags = Arc::new(Flags {
            mid_request: AtomicBool::new(false),
            ambiguous_head: AtomicU64::new(u64::MAX),
            open_requests: AtomicU32::new(0),
            requests_started: AtomicU64::new(0),
        });
        let handle = ClientHandle { stream: Arc::clone(&stream), flags: Arc::clone(&flags) };
        let timer = ClientTimer::new(frontend.timeouts.request_header, frontend.timeouts.client);
        Ok((ClientIo { stream, frontend, flags, framing: FramingWatch::default(), timer, received: 0 }, handle))
    }

    /// Accounts for `data`, just read from the client.
    fn on_received(&mut self, data: &[u8]) {
        self.flags.mid_request.store(true, Relaxed);
        self.received += data.len() as u64;
        Self::count(&self.frontend.stats.received_bytes, data.len());
        if let Some(index) = self.framing.feed(data) {
            self.flags.ambiguous_head.store(index, Relaxed);
        }
    }

    fn count(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Relaxed);
        }
    }

    /// What a read that would block is waiting for, and since when (see
    /// [`ClientTimer::poll_expired`]).
    fn wait(&self) -> (Wait, u64) {
        let framing = &self.framing;
        let busy = self.flags.open_requests.load(Relaxed) > 0;
        if framing.is_h2() {
            // Idle once no stream is open, from the end of the last one: the client's
            // pings and window updates do not keep an unused connection open.
            let wait = if busy { Wait::Unlimited } else { Wait::Idle };
            return (wait, self.flags.requests_started.load(Relaxed));
        }
        let wait = if framing.is_off() {
            Wait::Unlimited
        } else if framing.in_head() {
            Wait::Head
        } else if !framing.between_requests() {
            return (Wait::Body, self.received);
        } else if framing.heads() == 0 {
            Wait::FirstRequest
        } else if self.flags.mid_request.load(Relaxed) || busy {
            Wait::Unlimited // a request is being answered
        } else {
            Wait::Idle
        };
        (wait, framing.heads())
    }

    /// A read would block: whether the client has run out of time.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (wait, epoch) = self.wait();
        let expired = ready!(self.timer.poll_expired(cx, wait, epoch));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, ClientTimedOut(expired))))
    }
}

/// What the handler and the service keep of the client socket while hyper owns the [`ClientIo`].
#[derive(Debug, Clone)]
pub struct ClientHandle {
    stream: Arc<AsyncFd<std::net::TcpStream>>,
    flags: Arc<Flags>,
}

impl ClientHandle {
    /// True when the client started a request we have not answered.
    pub fn mid_request(&self) -> bool {
        self.flags.mid_request.load(Relaxed)
    }

    /// True when the head of request number `index` (0 for the connection's first)
    /// carried both Content-Length and Transfer-Encoding.
    pub fn is_ambiguous(&self, index: u64) -> bool {
        self.flags.ambiguous_head.load(Relaxed) == index
    }

    /// Marks a request as being answered until the guard drops (with the response
    /// body, for a streamed one): the connection is not idle meanwhile, even when
    /// the request was pipelined and no byte is read for it.
    pub fn request_started(&self) -> OpenRequest {
        self.flags.open_requests.fetch_add(1, Relaxed);
        self.flags.requests_started.fetch_add(1, Relaxed);
        OpenRequest(Arc::clone(&self.flags))
    }

    /// Best-effort write of a final raw response (the connection is closing anyway).
    pub fn try_write_final(&self, bytes: &[u8]) -> bool {
        matches!(SockRef::from(self.stream.get_ref()).send(bytes), Ok(n) if n == bytes.len())
    }
}

/// A request not yet fully answered (see [`ClientHandle::request_started`]).
#[derive(Debug)]
pub struct OpenRequest(Arc<Flags>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open_requests.fetch_sub(1, Relaxed);
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut ready = match this.stream.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return this.poll_timer(cx),
            };
            // Read straight into the uninitialized part of hyper's buffer (zeroing
            // it first cost ~3% of CPU per request).
            // SAFETY: `recv` only writes into the slice, and exactly the `n` bytes it
            // reports are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            match ready.try_io(|fd| SockRef::from(fd.get_ref()).recv(unfilled)) {
                Ok(Ok(n)) => {
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 {
                        if n < wanted {
                            // Drained; tokio only forgets readiness it saw before now.
                            ready.clear_ready();
                        }
                        let start = buf.filled().len() - n;
                        this.on_received(&buf.filled()[start..]);
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.stream.poll_write_ready(cx))?;
            match ready.try_io(|fd| SockRef::from(fd.get_ref()).send(data)) {
                Ok(Ok(n)) => {
                    self.flags.mid_request.store(false, Relaxed);
                    Self::count(&self.frontend.stats.sent_bytes, n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.stream.poll_write_ready(cx))?;
            match ready.try_io(|fd| io::Write::write_vectored(&mut fd.get_ref(), bufs)) {
                Ok(Ok(n)) => {
                    self.flags.mid_request.store(false, Relaxed);
                    Self::count(&self.frontend.stats.sent_bytes, n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(SockRef::from(self.stream.get_ref()).shutdown(std::net::Shutdown::Write))
    }
}
