//! A client connection with nothing to do: before its first byte, and between
//! requests once it has been idle a while (see `PARK_AFTER`). It holds its socket
//! (and, over TLS, rustls's session) and a deadline, nothing else: no hyper
//! connection, no buffer, no request state. Whatever its requests allocated was freed when it went dormant, so an
//! idle keep-alive connection costs what a freshly accepted one does, and its
//! few bytes were allocated at the accept, beside the other connections', not
//! scattered among the freed pages of its last request.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::io::Transport;
use crate::cluster::Frontend;

/// What a dormant connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The first byte of the connection's first request.
    FirstRequest,
    /// The first byte of the next request of a kept-alive connection.
    NextRequest,
}

/// A connection with nothing to do.
#[derive(Debug)]
pub struct Dormant {
    pub socket: Transport,
    /// When the wait runs out: the client is gone for good.
    pub deadline: Instant,
    pub awaiting: Awaiting,
}

/// How a dormant connection's wait ended.
#[derive(Debug)]
pub enum Woken {
    /// The client sent something (or closed): serve it.
    Readable,
    /// Nothing came before the deadline: close without a word (counted).
    TimedOut,
    /// The listener stops (shutdown, or a reload removed it): close.
    Stopped,
    /// The socket failed.
    Failed(std::io::Error),
}

impl Dormant {
    /// A connection just accepted: its first request is due `request_header` from now.
    pub fn accepted(socket: Transport, frontend: &Frontend) -> Self {
        let deadline = Instant::now() + frontend.timeouts.request_header;
        Dormant { socket, deadline, awaiting: Awaiting::FirstRequest }
    }

    /// A TLS connection whose handshake is done; its first head is due at `head_due`.
    pub fn handshaken(tls: Transport, head_due: Instant) -> Self {
        Dormant { socket: tls, deadline: head_due, awaiting: Awaiting::FirstRequest }
    }

    /// A kept-alive connection whose idle limit runs out at `deadline`.
    pub fn idle(socket: Transport, deadline: Instant) -> Self {
        Dormant { socket, deadline, awaiting: Awaiting::NextRequest }
    }

    /// Waits until the client sends something, the deadline passes or `stop` is
    /// cancelled. A kept-alive connection counts as idle on its frontend meanwhile.
    ///
    /// Polled by hand rather than with `select!` over `readable()`: the socket's
    /// own reader slot holds the waker, so the wait carries no waiter node of its
    /// own (160 bytes less on every idle connection).
    pub async fn wait(&self, frontend: &Frontend, stop: &CancellationToken) -> Woken {
        let _idle = (self.awaiting == Awaiting::NextRequest).then(|| frontend.stats.idle_connection());
        let mut stopped = pin!(stop.cancelled());
        let mut expired = pin!(tokio::time::sleep_until(self.deadline));
        poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woken::Stopped);
            }
            // The readiness stays set: what woke this is read by the request's reader.
            match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Woken::Readable),
                Poll::Ready(Err(err)) => return Poll::Ready(Woken::Failed(err)),
                Poll::Pending => {}
            }
            if expired.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let counters = &frontend.stats.client_timeouts;
            let counter = match self.awaiting {
                Awaiting::FirstRequest => &counters.first_request,
                Awaiting::NextRequest => &counters.idle,
            };
            counter.fetch_add(1, Relaxed);
            Poll::Ready(Woken::TimedOut)
        })
        .await
    }
}
