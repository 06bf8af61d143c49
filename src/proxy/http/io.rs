//! The client socket as hyper sees it: counts bytes for the frontend and stays
//! reachable after hyper gives up on it, so a slow request head can still get a 408.
//!
//! It sits on [`AsyncFd`] rather than tokio's `TcpStream` to save a syscall per
//! request: after a read shorter than the buffer the socket is known to be empty,
//! so readiness is cleared at once instead of being discovered by one more `recv`
//! failing with `EAGAIN` (which hyper's keep-alive read otherwise costs every request).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::cluster::Frontend;

/// A client connection shared between hyper and the connection handler.
#[derive(Debug)]
pub struct ClientIo {
    stream: Arc<AsyncFd<std::net::TcpStream>>,
    frontend: Arc<Frontend>,
    /// The client sent bytes since our last write: a request is in progress.
    mid_request: Arc<AtomicBool>,
}

impl ClientIo {
    /// Wraps an accepted stream; the returned handle keeps the socket reachable.
    /// `stream` must be non-blocking; it is registered with the current runtime.
    pub fn new(stream: std::net::TcpStream, frontend: Arc<Frontend>) -> io::Result<(ClientIo, ClientHandle)> {
        // SAFETY: the AsyncFd owns the stream, so its descriptor stays open and the
        // same for the AsyncFd's whole life.
        let registered = unsafe { AsyncFd::register(stream) };
        let stream = Arc::new(registered.map_err(io::Error::from)?);
        let mid_request = Arc::new(AtomicBool::new(false));
        let handle = ClientHandle { stream: Arc::clone(&stream), mid_request: Arc::clone(&mid_request) };
        Ok((ClientIo { stream, frontend, mid_request }, handle))
    }

    fn count(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Relaxed);
        }
    }
}

/// What the handler keeps of the client socket while hyper owns the [`ClientIo`].
#[derive(Debug)]
pub struct ClientHandle {
    stream: Arc<AsyncFd<std::net::TcpStream>>,
    mid_request: Arc<AtomicBool>,
}

impl ClientHandle {
    /// True when the client started a request we have not answered.
    pub fn mid_request(&self) -> bool {
        self.mid_request.load(Relaxed)
    }

    /// Best-effort write of a final raw response (the connection is closing anyway).
    pub fn try_write_final(&self, bytes: &[u8]) -> bool {
        matches!(SockRef::from(self.stream.get_ref()).send(bytes), Ok(n) if n == bytes.len())
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.stream.poll_read_ready(cx))?;
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
                        self.mid_request.store(true, Relaxed);
                        Self::count(&self.frontend.stats.received_bytes, n);
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
                    self.mid_request.store(false, Relaxed);
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
                    self.mid_request.store(false, Relaxed);
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
