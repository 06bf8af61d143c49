//! A server connection between requests, and what it becomes after a 101.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy::quick_ack::QuickAck;
use crate::upstream::Pooled;

/// The byte stream to a server: plain TCP (ACKing without delay, see
/// `quick_ack`) or TLS.
#[derive(Debug)]
pub enum ServerIo {
    /// Plain TCP.
    Plain(QuickAck),
    /// TLS. Boxed: rustls's state is large.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ServerIo {
    /// ACKs what was read at once: the server may be holding back the rest of
    /// its response until it is (see `quick_ack`). Beneath TLS the response head
    /// cannot be told from the records it came in: nothing.
    pub(super) fn ack_now(&mut self) {
        if let ServerIo::Plain(stream) = self {
            stream.ack_now();
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ServerIo::Plain(stream) => stream.tcp(),
            ServerIo::Tls(stream) => stream.get_ref().0,
        }
    }
}

/// An HTTP/1.1 connection to a server. Between requests it holds no buffer:
/// one is taken when a request goes out and given back when its response ends.
#[derive(Debug)]
pub struct ServerConn {
    pub(super) io: ServerIo,
    /// Bytes read and not yet parsed or passed on.
    pub(super) buf: BytesMut,
}

impl ServerConn {
    /// A connection ready for its first request.
    pub fn new(io: ServerIo) -> Self {
        ServerConn { io, buf: BytesMut::new() }
    }

    /// True while nothing has arrived on the idle connection: no end of stream,
    /// reset, or bytes nobody asked for (any of which makes it unusable). The
    /// reactor's readiness is asked first, so a quiet connection costs no system
    /// call; one it marked readable is read once, without waiting, to know.
    fn quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.io.tcp().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        // Readiness can be stale (the last read took everything without seeing
        // the socket empty); a read that would block says so, and clears it.
        let mut probe = [0u8; 64];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }
}

impl Pooled for ServerConn {
    fn is_ready(&mut self) -> bool {
        self.buf.is_empty() && self.quiet()
    }
    fn is_closed(&mut self) -> bool {
        !self.quiet()
    }
}

/// A server connection switched to another protocol (a 101): what the server
/// sent after its response head comes first, then the stream.
#[derive(Debug)]
pub struct Upgraded {
    io: ServerIo,
    early: Bytes,
}

impl Upgraded {
    pub(super) fn new(conn: ServerConn) -> Self {
        Upgraded { io: conn.io, early: conn.buf.freeze() }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ServerIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ServerIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ServerIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Plain(stream) => stream.is_write_vectored(),
            ServerIo::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ServerIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ServerIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
