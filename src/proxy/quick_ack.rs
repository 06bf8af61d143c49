//! A server socket that does not leave the server waiting for our ACK (Linux
//! `TCP_QUICKACK`).
//!
//! A server that writes a response in pieces with Nagle on (head, then body:
//! Python's http.server and many small app servers) sends the second piece only
//! once the first is ACKed. On a reused connection Linux delays our ACK by at
//! least 40 ms (delayed-ACK "pingpong" mode, entered because we sent the request
//! soon after the previous response arrived), hoping to piggyback it on data of
//! ours, and we have none to send until the response is complete.
//!
//! Setting `TCP_QUICKACK` leaves that mode and sends a pending ACK at once; it
//! is not sticky (our next write re-enters the mode). Setting it after every
//! read would cost a pure ACK per response that would otherwise ride on the
//! next request (measured on loopback with small responses: one more segment
//! and ~15% more CPU per request), so it is set only when a read leaves the
//! response head incomplete or ends exactly at its end (the body, if any, is
//! still to come: the head/body split). Our HTTP/1.1 client parses the head
//! itself, so it says when (`QuickAck::ack_now`, see `proxy::http::h1`). A
//! timer that ACKed whatever else was left unacknowledged for 2 ms also caught
//! a server holding back the rest of a body, but it fired after most responses
//! with 1,000 busy clients and doubled the CPU per request there; that rarer
//! case still waits for the delayed ACK.
//!
//! HTTP/2 servers do the same with frames: HEADERS written as soon as the
//! response starts, DATA when the body is ready (hyper-based servers such as
//! tonic leave Nagle on unless told). There the ACK is sent when a read ends
//! exactly at the end of a HEADERS or DATA frame whose stream is still open:
//! more of that response is to come, and it may be held back.
//!
//! The bytes are never changed: a wrong guess costs one ACK, never data.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A server connection's stream that ACKs without delay when the server may be waiting.
#[derive(Debug)]
pub struct QuickAck {
    stream: TcpStream,
    follow: Follow,
}

/// What the server's bytes are followed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// HTTP/1.1: the owner, who parses the responses, says when.
    Told,
    /// HTTP/2 frames.
    Http2(Frames),
}

/// Progress through the server's HTTP/2 frames (RFC 9113 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Frames {
    /// Bytes of the current frame's 9-byte header read so far, and them.
    header: [u8; 9],
    have: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u32,
    /// The last frame whose header was read leaves its stream open for more
    /// of the response (HEADERS or DATA without END_STREAM, or CONTINUATION).
    open: bool,
}

impl Frames {
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const CONTINUATION: u8 = 0x9;
    const END_STREAM: u8 = 0x1;

    /// Follows `data` through the frames; true when it ends exactly at the end
    /// of a frame after which that stream's response goes on.
    fn read(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let take = data.len().min(self.payload_left as usize);
                self.payload_left -= take as u32;
                data = &data[take..];
                continue;
            }
            let take = data.len().min(9 - usize::from(self.have));
            self.header[usize::from(self.have)..usize::from(self.have) + take].copy_from_slice(&data[..take]);
            self.have += take as u8;
            data = &data[take..];
            if self.have == 9 {
                self.have = 0;
                let [a, b, c, kind, flags, ..] = self.header;
                self.payload_left = u32::from_be_bytes([0, a, b, c]);
                self.open = match kind {
                    Frames::DATA | Frames::HEADERS => flags & Frames::END_STREAM == 0,
                    Frames::CONTINUATION => self.open,
                    _ => false,
                };
            }
        }
        self.have == 0 && self.payload_left == 0 && self.open
    }
}

impl QuickAck {
    /// Wraps a connected server stream whose owner says when to ACK ([`QuickAck::ack_now`]).
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, follow: Follow::Told }
    }

    /// Wraps a connected server stream that speaks HTTP/2.
    pub fn http2(stream: TcpStream) -> Self {
        Self { stream, follow: Follow::Http2(Frames::default()) }
    }

    /// The socket beneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends the pending ACK now (if any) and leaves delayed-ACK mode: for an
    /// owner that knows the server may be waiting for it.
    pub fn ack_now(&mut self) {
        #[cfg(target_os = "linux")]
        if let Err(err) = socket2::SockRef::from(&self.stream).set_quickack(true) {
            tracing::trace!(%err, "cannot set TCP_QUICKACK");
        }
    }

    /// Data was read: ACK it now if the server may be holding back the rest.
    fn on_data(&mut self, data: &[u8]) {
        if let Follow::Http2(frames) = &mut self.follow {
            if frames.read(data) {
                self.ack_now();
            }
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_data(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    /// An HTTP/2 frame header: `length` payload bytes follow.
    fn frame(length: u32, kind: u8, flags: u8) -> Vec<u8> {
        let mut bytes = length.to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        bytes.extend(std::iter::repeat_n(b'x', length as usize));
        bytes
    }

    #[test]
    fn http2_wants_the_ack_when_a_read_ends_a_frame_of_an_open_stream() {
        let headers = frame(20, Frames::HEADERS, 0x4);
        let data_end = frame(5, Frames::DATA, Frames::END_STREAM);
        let settings = frame(6, 0x4, 0);
        let mut frames = Frames::default();
        // Head alone: the body may be held back.
        assert!(frames.read(&headers));
        assert!(!frames.read(&data_end));
        // Head and body in one read, settings: nothing waits.
        let mut both = headers.clone();
        both.extend_from_slice(&data_end);
        assert!(!frames.read(&both));
        assert!(!frames.read(&settings));
        // Split anywhere: only the read that ends the HEADERS frame asks.
        for cut in 1..headers.len() {
            let mut frames = Frames::default();
            assert!(!frames.read(&headers[..cut]), "cut at {cut}");
            assert!(frames.read(&headers[cut..]), "cut at {cut}");
        }
        // A streamed body: each DATA frame of the open stream asks.
        assert!(frames.read(&frame(3, Frames::DATA, 0)));
        assert!(frames.read(&frame(0, Frames::CONTINUATION, 0x4)));
    }
}
