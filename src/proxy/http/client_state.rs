//! What the parties of a client connection tell each other: the socket wrapper
//! hyper reads through ([`super::io::ClientIo`]), the connection handler and the
//! service answering each request.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;

use futures_util::task::AtomicWaker;

use super::sendfile::Pending;

/// State shared by one client connection's socket wrapper, handler and service.
#[derive(Debug)]
pub(super) struct Flags {
    /// Index of the request whose head had both Content-Length and
    /// Transfer-Encoding (`u64::MAX`: none).
    pub ambiguous_head: AtomicU64,
    /// Requests handed to the service and not yet fully answered.
    pub open_requests: AtomicU32,
    /// Requests handed to the service so far.
    pub requests_started: AtomicU64,
    /// The connection was switched to another protocol (101): a tunnel now.
    pub upgraded: AtomicBool,
    /// Woken when the last open request ends, for a reader that waits with no
    /// limit meanwhile and must then start the idle limit (h2 streams end in
    /// their own tasks).
    pub idle_waker: AtomicWaker,
    /// An h2c (or unfollowable HTTP/1.1) connection stayed idle for
    /// `timeouts.client`: the handler closes it politely (GOAWAY).
    pub idle_expired: AtomicBool,
    /// The handler waiting for `idle_expired`.
    pub handler_waker: AtomicWaker,
    /// File ranges announced to the socket wrapper, to send with `sendfile`.
    pub sendfile: Pending,
}

impl Flags {
    /// A fresh connection's: nothing seen yet.
    pub fn new() -> Self {
        Flags {
            ambiguous_head: AtomicU64::new(u64::MAX),
            open_requests: AtomicU32::new(0),
            requests_started: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            idle_waker: AtomicWaker::new(),
            idle_expired: AtomicBool::new(false),
            handler_waker: AtomicWaker::new(),
            sendfile: Pending::default(),
        }
    }
}

/// What the handler and the service keep of the client connection while hyper
/// owns its socket wrapper.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    pub(super) flags: Arc<Flags>,
}

impl ClientHandle {
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

    /// Resolves when the connection has been idle long enough to be closed politely.
    pub async fn idle_expired(&self) {
        poll_fn(|cx| {
            self.flags.handler_waker.register(cx.waker());
            if self.flags.idle_expired.load(Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Announces that the body's next placeholder stands for `len` bytes of
    /// `file` from `offset` (see `sendfile`).
    pub(super) fn queue_file(&self, file: Arc<std::fs::File>, offset: u64, len: usize) {
        self.flags.sendfile.push(file, offset, len);
    }

    /// Records that the connection now tunnels another protocol: the HTTP client
    /// limits stop (the tunnel has its own).
    pub fn upgraded(&self) {
        self.flags.upgraded.store(true, Relaxed);
    }
}

/// A request not yet fully answered (see [`ClientHandle::request_started`]).
#[derive(Debug)]
pub struct OpenRequest(Arc<Flags>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        if self.0.open_requests.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_waker.wake();
        }
    }
}
