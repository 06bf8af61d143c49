//! A client's request body on its way to a server, and who the upload waits for.
//!
//! While the body waits for the client, the client's pace is the limit: no
//! progress for `timeouts.client` fails the body, which the service answers with
//! a 408. While it waits for the server to take what was handed over, and once it
//! is all sent, the server's: [`Upload::server_quiet`] lets the sender give up
//! after `timeouts.server` without progress (504).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::BodyError;
use super::client_timer::{ClientTimedOut, Wait};
use super::stall::StallTimer;

/// A request body on its way to a server.
#[derive(Debug)]
pub enum RequestBody {
    /// Streamed from the client.
    Client {
        /// The client's body.
        body: Incoming,
        /// Fails the body when the client stops sending.
        client_stall: StallTimer,
        /// Shared with the sender waiting for the response.
        upload: Arc<Upload>,
        /// Data taken from `body` and given back (see [`RequestBody::unread`]):
        /// it comes first.
        unread: Option<Bytes>,
    },
    /// No body (replayed requests, health checks).
    Empty,
}

/// Progress of a request body, as the sender waiting for the response sees it.
#[derive(Debug)]
pub struct Upload {
    started: Instant,
    /// When the body last moved (a frame passed, or it ended), in ns since `started`.
    last_progress_ns: AtomicU64,
    /// The body is waiting for the client to send more.
    waiting_on_client: AtomicBool,
}

impl Upload {
    fn new() -> Self {
        Upload {
            started: Instant::now(),
            last_progress_ns: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
        }
    }

    fn progressed(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_progress_ns.store(ns, Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_progress_ns.load(Relaxed))
    }

    /// Resolves once the upload, and then the wait for the response, has been the
    /// server's turn for `limit` without progress. Time the body spends waiting for
    /// the client does not count (the client's own limit covers it; after such a
    /// wait the server may get up to twice `limit`). Bytes already handed to the
    /// connection count as sent: the server reading them is part of its `limit`,
    /// as with HAProxy's `timeout server`.
    pub async fn server_quiet(&self, limit: Duration) {
        loop {
            let since = self.last_progress();
            tokio::time::sleep_until(since + limit).await;
            if self.waiting_on_client.load(Acquire) {
                tokio::time::sleep(limit).await;
            } else if self.last_progress() == since {
                return;
            }
        }
    }
}

impl RequestBody {
    /// A body streamed from the client, failed after `client_limit` without bytes.
    pub fn client(body: Incoming, client_limit: Duration) -> Self {
        RequestBody::Client {
            body,
            client_stall: StallTimer::new(client_limit),
            upload: Arc::new(Upload::new()),
            unread: None,
        }
    }

    /// Gives back `data`, taken from this body but not sent (the connection
    /// failed before taking any of it): it is the first frame again.
    pub fn unread(&mut self, data: Bytes) {
        if let RequestBody::Client { unread, .. } = self {
            *unread = Some(data);
        }
    }

    /// Starts (or restarts, for another attempt) the server's clock on the body
    /// still to send; `None` when there is none.
    pub fn start_upload(&self) -> Option<Arc<Upload>> {
        match self {
            RequestBody::Client { body, upload, unread, .. } if unread.is_some() || !body.is_end_stream() => {
                upload.progressed();
                Some(Arc::clone(upload))
            }
            _ => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let RequestBody::Client { body, client_stall, upload, unread } = self.get_mut() else {
            return Poll::Ready(None);
        };
        if let Some(data) = unread.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => {
                // Only time spent waiting for the client counts against it (see
                // StallTimer): while the server is slow to take the upload, this body
                // is not polled.
                upload.waiting_on_client.store(true, Relaxed);
                if client_stall.stalled(cx) {
                    let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, ClientTimedOut(Wait::Body));
                    return Poll::Ready(Some(Err(Box::new(timed_out))));
                }
                Poll::Pending
            }
            Poll::Ready(polled) => {
                // Progress first: a reader that sees "not waiting" sees it too.
                upload.progressed();
                upload.waiting_on_client.store(false, Release);
                client_stall.moved();
                Poll::Ready(polled.map(|frame| frame.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client { body, unread, .. } => unread.is_none() && body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client { body, unread: None, .. } => body.size_hint(),
            RequestBody::Client { body, unread: Some(data), .. } => {
                let hint = body.size_hint();
                let mut with = SizeHint::new();
                with.set_lower(hint.lower() + data.len() as u64);
                if let Some(upper) = hint.upper() {
                    with.set_upper(upper + data.len() as u64);
                }
                with
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
