//! One request on one connection, up to the response head: the head and body go
//! out while the response is read, in the request's own task.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{Method, Request, Response};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

use super::body::{Home, ServerBody};
use super::conn::ServerConn;
use super::error::H1Error;
use super::request::{self, BodyFraming};
use super::response::{self, Asked};
use crate::proxy::http::body::BodyError;
use crate::proxy::http::request_body::RequestBody;

/// Bytes asked of the socket per read of a response head.
const HEAD_READ: usize = 4096;

/// Why a request got no response head.
#[derive(Debug)]
pub enum Sending {
    /// The connection failed before taking any byte of the request: here it is back.
    Unsent(Box<Request<RequestBody>>),
    /// The server broke the exchange (the request may have reached it). A request
    /// without a body comes back, to be sent again elsewhere if its method allows
    /// (so that no copy of every request is kept in case).
    Server(H1Error, Option<Box<Request<RequestBody>>>),
    /// The client's request body failed on its way.
    ClientBody(BodyError),
}

/// Sends `req` on `conn` and reads the response head. The body is sent as the
/// client provides it; a response that comes before the whole body is taken
/// (a server refusing an upload) ends the upload, and the connection is then
/// not reused. The response body ends the exchange, sending `conn` to `home`.
pub async fn send(
    mut conn: ServerConn,
    req: Box<Request<RequestBody>>,
    home: Home,
) -> Result<Response<ServerBody>, Sending> {
    let (mut parts, body) = req.into_parts();
    let asked =
        Asked { head: parts.method == Method::HEAD, upgrade: parts.headers.contains_key(http::header::UPGRADE) };
    let (head, framing) = request::encode(&mut parts, &body);
    let body_done = framing == BodyFraming::Empty;
    let mut upload = Upload { head, out: VecDeque::new(), body, framing, body_done, failed: None };
    // What of the body the client has sent already goes out with the head, in
    // one write (a small upload is usually all there).
    let first = match upload.body_done {
        true => None,
        false => match poll_fn(|cx| Poll::Ready(upload.take_frame(cx))).await {
            Poll::Ready(Ok(data)) => data,
            Poll::Ready(Err(err)) => return Err(Sending::ClientBody(err)),
            Poll::Pending => None,
        },
    };
    // The first write: failing before any byte, the request can go elsewhere,
    // with what was taken of its body given back.
    match poll_fn(|cx| upload.write_out(&mut conn, cx)).await {
        Ok(written) if written > 0 => {}
        _ => {
            let mut body = upload.body;
            if let Some(data) = first {
                body.unread(data);
            }
            return Err(Sending::Unsent(Box::new(Request::from_parts(parts, body))));
        }
    }
    let mut upload = Some(upload);
    let head = poll_fn(|cx| {
        if let Some(sending) = upload.as_mut() {
            match sending.poll(&mut conn, cx) {
                Poll::Ready(Ok(())) => upload = None,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {}
            }
        }
        poll_head(&mut conn, asked, cx).map_err(|err| match upload.as_mut().and_then(|u| u.failed.take()) {
            // No response after a failed write: the write's error says more.
            Some(write_error) => Sending::Server(H1Error::Io(write_error), None),
            None => Sending::Server(err, None),
        })
    })
    .await;
    let head = match head {
        Ok(head) => head,
        // A request without a body goes back whole (see `Sending::Server`).
        Err(Sending::Server(err, None)) if body_done => {
            return Err(Sending::Server(err, Some(Box::new(Request::from_parts(parts, RequestBody::Empty)))));
        }
        Err(failed) => return Err(failed),
    };
    // A response before the whole body went: the server will not read the rest
    // as this request's, so the connection is not reused.
    let keep_alive = head.keep_alive && upload.is_none();
    Ok(head.response.map(|()| ServerBody::new(conn, head.framing, keep_alive, home)))
}

/// The request on its way out: the head, the body's pieces to write, then more
/// of the body from the client.
struct Upload {
    /// What is left of the head to write.
    head: Bytes,
    /// Pieces of the body to write (allocated only for a request with a body).
    out: VecDeque<Bytes>,
    body: RequestBody,
    framing: BodyFraming,
    body_done: bool,
    /// A write failed: the server may still have answered (and closed), so the
    /// response is looked for before this is reported.
    failed: Option<std::io::Error>,
}

/// Pieces queued for one write at most.
const MAX_PIECES: usize = 8;

impl Upload {
    /// Takes the body's next frame if the client has it ready, queued framed for
    /// the wire; its data (to give back if none of it is sent), `Pending` if
    /// the client has sent nothing more yet.
    fn take_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BodyError>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let data = match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers (not sent to an HTTP/1.1 server) and empty frames.
                    _ => return Poll::Ready(Ok(None)),
                };
                if self.framing == BodyFraming::Chunked {
                    self.out.push_back(request::chunk_size_line(data.len()));
                    self.out.push_back(data.clone());
                    self.out.push_back(Bytes::from_static(b"\r\n"));
                } else {
                    self.out.push_back(data.clone());
                }
                Poll::Ready(Ok(Some(data)))
            }
            Poll::Ready(None) => {
                if self.framing == BodyFraming::Chunked {
                    self.out.push_back(Bytes::from_static(request::LAST_CHUNK));
                }
                self.body_done = true;
                Poll::Ready(Ok(None))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Nothing is waiting to be written.
    fn written(&self) -> bool {
        self.head.is_empty() && self.out.is_empty()
    }

    /// One write of what is queued (the head and up to `MAX_PIECES` pieces);
    /// how much went.
    fn write_out(&mut self, conn: &mut ServerConn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut slices = [IoSlice::new(&[]); MAX_PIECES + 1];
        let head = usize::from(!self.head.is_empty());
        slices[0] = IoSlice::new(&self.head);
        let count = head + self.out.len().min(MAX_PIECES);
        for (slice, piece) in slices[head..].iter_mut().zip(self.out.iter()) {
            *slice = IoSlice::new(piece);
        }
        let written = ready!(Pin::new(&mut conn.io).poll_write_vectored(cx, &slices[..count]))?;
        let from_head = written.min(self.head.len());
        self.head.advance(from_head);
        let mut left = written - from_head;
        while left > 0 {
            let Some(front) = self.out.front_mut() else { break };
            if left >= front.len() {
                left -= front.len();
                self.out.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(written))
    }

    /// Writes what there is to write; `Ready(Ok)` once all of the body is out.
    fn poll(&mut self, conn: &mut ServerConn, cx: &mut Context<'_>) -> Poll<Result<(), Sending>> {
        if self.failed.is_some() {
            return Poll::Pending;
        }
        loop {
            // Take what the client has ready, so it goes out in one write.
            while !self.body_done && self.out.len() < MAX_PIECES {
                match self.take_frame(cx) {
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(Sending::ClientBody(err))),
                    Poll::Pending => break,
                }
            }
            if self.written() {
                if let Poll::Ready(Err(err)) = Pin::new(&mut conn.io).poll_flush(cx) {
                    self.failed = Some(err);
                    return Poll::Pending;
                }
                return if self.body_done { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            match self.write_out(conn, cx) {
                Poll::Ready(Ok(0)) => {
                    self.failed = Some(std::io::ErrorKind::WriteZero.into());
                    return Poll::Pending;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => {
                    self.failed = Some(err);
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Reads until the response head is complete. A read that leaves the head
/// incomplete, or ends exactly where it does with a body still to come, is
/// ACKed at once: a server writing its response in pieces with Nagle on holds
/// the next piece until then (see `quick_ack`).
fn poll_head(conn: &mut ServerConn, asked: Asked, cx: &mut Context<'_>) -> Poll<Result<response::Head, H1Error>> {
    let mut unacked = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&mut conn.buf, asked)? {
                Some(head) => {
                    if unacked && conn.buf.is_empty() && head.framing.has_body() {
                        conn.io.ack_now();
                    }
                    return Poll::Ready(Ok(head));
                }
                // The next read either waits (and this ACK went) or brings more.
                None if unacked => conn.io.ack_now(),
                None => {}
            }
        }
        if conn.buf.capacity() - conn.buf.len() < HEAD_READ / 4 {
            conn.buf.reserve(HEAD_READ);
        }
        match poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
            Poll::Ready(Ok(0)) if conn.buf.is_empty() => return Poll::Ready(Err(H1Error::ClosedBeforeResponse)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(H1Error::ClosedInHead)),
            Poll::Ready(Ok(_)) => unacked = true,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
            Poll::Pending => return Poll::Pending,
        }
    }
}
