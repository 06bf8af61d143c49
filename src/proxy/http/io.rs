//! The client socket as hyper sees it: counts bytes for the frontend, follows the
//! request framing (see [`FramingWatch`]), closes a connection that opens without a
//! request in time, and stays reachable after hyper gives up on it, so a slow
//! request head can still get a 408.
//!
//! It sits on [`AsyncFd`] rather than tokio's `TcpStream` to save a syscall per
//! request: after a read shorter than the buffer the socket is known to be empty,
//! so readiness is cleared at once instead of being discovered by one more `recv`
//! failing with `EAGAIN` (which hyper's keep-alive read otherwise costs every request).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::framing::FramingWatch;
use crate::cluster::Frontend;

/// What an HTTP/2 prior-knowledge connection opens with; until the client has sent
/// something else (or all of it) hyper has not started its own head timer.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection shared between hyper and the connection handler.
#[derive(Debug)]
pub struct ClientIo {
    stream: Arc<AsyncFd<std::net::TcpStream>>,
    frontend: Arc<Frontend>,
    flags: Arc<Flags>,
    framing: FramingWatch,
    opening: Option<Opening>,
}

/// State the handler and the service read while hyper owns the [`ClientIo`].
#[derive(Debug)]
struct Flags {
    /// The client sent bytes since our last write: a request is in progress.
    mid_request: AtomicBool,
    /// Index of the request whose head had both Content-Length and
    /// Transfer-Encoding (`u64::MAX`: none).
    ambiguous_head: AtomicU64,
}

/// The start of a connection, before hyper's HTTP/1 head timer runs: the protocol
/// is being detected (h1 or h2c), which waits for bytes with no limit of its own.
/// `request_header` bounds it, so a connection that sends nothing, or a prefix of
/// the h2 preface and then nothing, is closed.
#[derive(Debug)]
struct Opening {
    deadline: Pin<Box<Sleep>>,
    /// How many bytes so far matched the h2 preface.
    matched: usize,
}

impl ClientIo {
    /// Wraps an accepted stream; the returned handle keeps the socket reachable.
    /// `stream` must be non-blocking; it is registered with the current runtime.
    /// `opening_limit` is how long the client may take to start its first request.
    pub fn new(
        stream: std::net::TcpStream,
        frontend: Arc<Frontend>,
        opening_limit: Duration,
    ) -> io::Result<(ClientIo, ClientHandle)> {
        // SAFETY: the AsyncFd owns the stream, so its descriptor stays open and the
        // same for the AsyncFd's whole life.
        let registered = unsafe { AsyncFd::register(stream) };
        let stream = Arc::new(registered.map_err(io::Error::from)?);
        let flags = Arc::new(Flags { mid_request: AtomicBool::new(false), ambiguous_head: AtomicU64::new(u64::MAX) });
        let handle = ClientHandle { stream: Arc::clone(&stream), flags: Arc::clone(&flags) };
        let opening = Some(Opening { deadline: Box::pin(tokio::time::sleep(opening_limit)), matched: 0 });
        Ok((ClientIo { stream, frontend, flags, framing: FramingWatch::default(), opening }, handle))
    }

    /// Accounts for `data`, just read from the client.
    fn on_received(&mut self, data: &[u8]) {
        self.flags.mid_request.store(true, Relaxed);
        Self::count(&self.frontend.stats.received_bytes, data.len());
        if let Some(index) = self.framing.feed(data) {
            self.flags.ambiguous_head.store(index, Relaxed);
        }
        if let Some(opening) = &mut self.opening {
            let more = data.len().min(H2_PREFACE.len() - opening.matched);
            if data[..more] != H2_PREFACE[opening.matched..opening.matched + more] {
                // Not h2: hyper's HTTP/1 parser and its head timer take over.
                self.opening = None;
            } else {
                opening.matched += more;
                if opening.matched == H2_PREFACE.len() {
                    self.opening = None;
                }
            }
        }
    }

    /// While the connection opens, whether its deadline has passed.
    fn poll_opening(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(opening) = &mut self.opening else { return Poll::Pending };
        ready!(opening.deadline.as_mut().poll(cx));
        self.opening = None;
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, OpeningTimedOut)))
    }

    fn count(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Relaxed);
        }
    }
}

/// The client sent no request within `timeouts.request_header` of connecting.
#[derive(Debug, thiserror::Error)]
#[error("no request started within the request_header timeout")]
pub struct OpeningTimedOut;

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

    /// Best-effort write of a final raw response (the connection is closing anyway).
    pub fn try_write_final(&self, bytes: &[u8]) -> bool {
        matches!(SockRef::from(self.stream.get_ref()).send(bytes), Ok(n) if n == bytes.len())
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut ready = match this.stream.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return this.poll_opening(cx),
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
