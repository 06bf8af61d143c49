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
//! still to come: the head/body split). A timer that ACKed whatever else was
//! left unacknowledged for 2 ms also caught a server holding back the rest of a
//! body, but it fired after most responses with 1,000 busy clients and doubled
//! the CPU per request there; that rarer case still waits for the delayed ACK.
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
use std::task::{ready, Context, Poll};

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
    /// HTTP/1.1 responses to our requests.
    Http1(Head),
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

/// Progress through the head of the server's reply to our last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Past the head, or the reply is not an HTTP response head (a tunnel).
    Done,
    /// `seen` bytes of a head read so far, the last `matched` of them its final CRLFCRLF.
    Reading { seen: usize, matched: u8 },
}

const HEAD_START: &[u8] = b"HTTP/";
const HEAD_END: &[u8] = b"\r\n\r\n";

impl Head {
    /// Follows `data` through the head; true when the server may be holding
    /// back the rest of the response: the head is incomplete, or `data` ends
    /// exactly where the head does.
    fn read(&mut self, data: &[u8]) -> bool {
        let Head::Reading { seen, mut matched } = *self else { return false };
        for (i, &byte) in data.iter().enumerate() {
            if HEAD_START.get(seen + i).is_some_and(|&expected| byte != expected) {
                *self = Head::Done;
                return false;
            }
            matched = match byte {
                b'\r' if matched == 2 => 3,
                b'\r' => 1,
                b'\n' if matched == 1 || matched == 3 => matched + 1,
                _ => 0,
            };
            if usize::from(matched) == HEAD_END.len() {
                if i + 1 < data.len() {
                    *self = Head::Done;
                    return false;
                }
                // The body comes next, or the final head after an interim (1xx) one.
                *self = Head::Reading { seen: 0, matched: 0 };
                return true;
            }
        }
        *self = Head::Reading { seen: seen + data.len(), matched };
        true
    }
}

impl QuickAck {
    /// Wraps a connected server stream.
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, follow: Follow::Http1(Head::Done) }
    }

    /// Wraps a connected server stream that speaks HTTP/2.
    pub fn http2(stream: TcpStream) -> Self {
        Self { stream, follow: Follow::Http2(Frames::default()) }
    }

    /// The socket beneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends the pending ACK now (if any) and leaves delayed-ACK mode.
    fn ack_now(&mut self) {
        #[cfg(target_os = "linux")]
        if let Err(err) = socket2::SockRef::from(&self.stream).set_quickack(true) {
            tracing::trace!(%err, "cannot set TCP_QUICKACK");
        }
    }

    /// Data was read: ACK it now if the server may be holding back the rest.
    fn on_data(&mut self, data: &[u8]) {
        let waiting = match &mut self.follow {
            Follow::Http1(head) => head.read(data),
            Follow::Http2(frames) => frames.read(data),
        };
        if waiting {
            self.ack_now();
        }
    }

    /// We wrote: that segment carries the ACK, and a new response head comes next.
    fn on_write(&mut self, written: usize) {
        if let (true, Follow::Http1(head)) = (written > 0, &mut self.follow) {
            *head = Head::Reading { seen: 0, matched: 0 };
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
        let written = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        this.on_write(written);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.stream).poll_write_vectored(cx, bufs))?;
        this.on_write(written);
        Poll::Ready(Ok(written))
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
    use super::{Frames, Head};

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

    fn reading() -> Head {
        Head::Reading { seen: 0, matched: 0 }
    }

    #[test]
    fn a_read_ending_with_the_head_wants_the_ack_now() {
        let mut head = reading();
        assert!(head.read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"));
        // The body follows: not a head.
        assert!(!head.read(b"hello"));
        assert_eq!(head, Head::Done);
    }

    #[test]
    fn a_head_split_anywhere_wants_the_ack_until_it_ends() {
        let whole = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for cut in 1..whole.len() {
            let mut head = reading();
            assert!(head.read(&whole[..cut]), "cut at {cut}");
            assert!(head.read(&whole[cut..]), "cut at {cut}");
            assert!(!head.read(b"body"), "cut at {cut}");
        }
        let mut head = reading();
        for byte in whole {
            assert!(head.read(&[*byte]));
        }
    }

    #[test]
    fn head_and_body_in_one_read_need_no_ack_now() {
        let mut head = reading();
        assert!(!head.read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert_eq!(head, Head::Done);
        assert!(!head.read(b"HTTP/1.1 200 OK\r\n\r\n"), "past the head until our next write");
    }

    #[test]
    fn an_interim_head_then_the_final_one() {
        let mut head = reading();
        assert!(head.read(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(head.read(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(!head.read(b"x"));
    }

    #[test]
    fn bytes_that_are_no_response_head_are_not_scanned() {
        let mut head = reading();
        assert!(!head.read(b"\x81\x05hello\r\n\r\n"));
        assert_eq!(head, Head::Done);
        let mut head = reading();
        assert!(head.read(b"HTT"));
        assert!(!head.read(b"Q/1.1 200 OK\r\n\r\n"));
        assert!(!Head::Done.read(b"HTTP/1.1 200 OK\r\n\r\n"));
    }
}
