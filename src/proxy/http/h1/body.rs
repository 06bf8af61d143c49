//! The response body, read from the server connection as the client takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use super::chunked::{Chunked, Decoded};
use super::conn::{ServerConn, Upgraded};
use super::error::H1Error;
use super::response::Framing;
use crate::upstream::{ServerState, Worker};

/// Bytes asked of the socket per read of a body whose size is unknown.
const READ_SIZE: usize = 16 * 1024;
/// At most this many bytes per read of a long body of known size.
const MAX_READ: usize = 256 * 1024;

/// Where the connection goes at the end of the body: the server's pool, for
/// this worker. `None`: it is closed (a `send_proxy` server's connection).
pub type Home = Option<(Arc<ServerState>, Worker)>;

/// A server's response body. Its end returns the connection to the pool, if the
/// server keeps it and nothing is left over; dropped before its end, it closes
/// the connection.
#[derive(Debug)]
pub struct ServerBody {
    /// `None` once the body is done (or the connection broke).
    conn: Option<ServerConn>,
    state: State,
    keep_alive: bool,
    home: Home,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// Upgraded (101): the connection is the tunnel's to take.
    Upgrade,
    Done,
}

impl ServerBody {
    pub(super) fn new(conn: ServerConn, framing: Framing, keep_alive: bool, home: Home) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::UntilClose => State::UntilClose,
            Framing::Upgrade => State::Upgrade,
        };
        let mut body = ServerBody { conn: Some(conn), state, keep_alive, home };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// After a 101: the connection, to carry the other protocol.
    pub fn upgrade(&mut self) -> Option<Upgraded> {
        if !matches!(self.state, State::Upgrade) {
            return None;
        }
        self.state = State::Done;
        self.conn.take().map(Upgraded::new)
    }

    /// The body is complete: the connection goes home, if it may.
    fn finish(&mut self) {
        self.state = State::Done;
        let Some(mut conn) = self.conn.take() else { return };
        // Bytes past the response's end would be read as the next response's:
        // such a server's connection is not reused.
        if !self.keep_alive || !conn.buf.is_empty() {
            return;
        }
        if let Some((server, worker)) = self.home.take() {
            // An idle connection keeps no buffer.
            conn.buf = BytesMut::new();
            server.pool.put(worker, conn);
        }
    }

    fn fail(&mut self, err: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(err)))
    }

    /// Reads more of the body into the buffer; `Ok(false)` at the end of stream.
    fn read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<bool, H1Error>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Ok(false)) };
        if conn.buf.capacity() - conn.buf.len() < want.min(READ_SIZE) {
            conn.buf.reserve(want);
        }
        let read = ready!(poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf))?;
        Poll::Ready(Ok(read > 0))
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match &mut this.state {
                State::Done | State::Upgrade => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).clamp(READ_SIZE / 4, MAX_READ);
                    match ready!(this.read(cx, want)) {
                        Ok(true) => {}
                        Ok(false) => return this.fail(H1Error::ClosedInBody),
                        Err(err) => return this.fail(err),
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Some(Decoded::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Decoded::Trailers(trailers))) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(Decoded::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => match ready!(this.read(cx, READ_SIZE)) {
                        Ok(true) => {}
                        Ok(false) => return this.fail(H1Error::ClosedInBody),
                        Err(err) => return this.fail(err),
                    },
                    Err(err) => return this.fail(err),
                },
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.read(cx, READ_SIZE)) {
                        Ok(true) => {}
                        // The end of stream is this body's end; the connection is spent.
                        Ok(false) => {
                            this.state = State::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Err(err) => return this.fail(err),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done | State::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
