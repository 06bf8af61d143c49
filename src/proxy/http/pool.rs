//! Keep-alive connections to one server, reused across requests (and reloads:
//! the pool lives in the server's shared state).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::request_body::RequestBody;

/// How long a pooled connection may sit idle. Shorter than the keep-alive of
/// common app servers (gunicorn 2s, Node 5s), so a server's own idle close rarely
/// races with our reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Idle connections kept per server; more are closed when they free up.
pub const MAX_IDLE: usize = 128;

type Idle = Vec<(SendRequest<RequestBody>, Instant)>;

/// Idle HTTP/1.1 connections to one server, most recently used last — one stack
/// per worker thread, because a connection is driven by a task on the worker that
/// opened it and reusing it from another worker would cost cross-thread wakeups.
#[derive(Debug)]
pub struct Pool {
    per_worker: Box<[Mutex<Idle>]>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool { per_worker: (0..crate::workers::count()).map(|_| Mutex::default()).collect() }
    }
}

impl Pool {
    fn local(&self) -> &Mutex<Idle> {
        &self.per_worker[crate::workers::current() % self.per_worker.len()]
    }

    /// Takes a live idle connection (newest first), dropping expired or closed ones.
    pub fn take(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.local().lock().expect("pool poisoned");
        let now = Instant::now();
        while let Some((sender, since)) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection after its response completed.
    pub fn put(&self, sender: SendRequest<RequestBody>) {
        if !sender.is_ready() {
            return;
        }
        let mut idle = self.local().lock().expect("pool poisoned");
        let now = Instant::now();
        // The oldest entries sit at the front; expire them as we go.
        if idle.first().is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT) {
            idle.retain(|(s, since)| now.duration_since(*since) < IDLE_TIMEOUT && !s.is_closed());
        }
        if idle.len() < MAX_IDLE {
            idle.push((sender, now));
        }
    }

    /// Closes connections idle past [`IDLE_TIMEOUT`] or already closed by the server,
    /// so a quiet server does not keep sockets open on both ends; returns how many.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        for idle in &self.per_worker {
            let mut idle = idle.lock().expect("pool poisoned");
            let before = idle.len();
            idle.retain(|(s, since)| now.duration_since(*since) < IDLE_TIMEOUT && !s.is_closed());
            closed += before - idle.len();
        }
        closed
    }

    /// Idle connections held now (for metrics).
    pub fn idle_count(&self) -> usize {
        self.per_worker.iter().map(|idle| idle.lock().expect("pool poisoned").len()).sum()
    }
}
