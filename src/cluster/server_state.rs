//! Per-server shared state: health and counters, kept across reloads.
//!
//! The data path, the health checker and the metrics exporter all read and write
//! these same atomics; there is no second set of counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proxy::http::Pool;

/// Identity of a server across reloads: a reload that keeps all three keeps the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// Resolved address.
    pub address: SocketAddr,
}

/// Live state of one server.
#[derive(Debug)]
pub struct ServerState {
    /// Who this is.
    pub key: ServerKey,
    up: AtomicBool,
    /// Connections open to the server right now (TCP sessions and pooled HTTP connections in use).
    pub active: AtomicU64,
    /// Connections opened to the server.
    pub connections_total: AtomicU64,
    /// Connects that failed (refused, timed out, unreachable).
    pub connect_errors: AtomicU64,
    /// HTTP requests sent to the server.
    pub requests_total: AtomicU64,
    /// Failed health checks.
    pub check_failures: AtomicU64,
    /// up<->down transitions.
    pub state_changes: AtomicU64,
    /// Unix time (ms) of the last up<->down transition, or of creation.
    pub last_change_ms: AtomicU64,
    /// Idle keep-alive HTTP connections to the server.
    pub pool: Pool,
}

impl ServerState {
    /// A new server, initially `up` or not.
    pub fn new(key: ServerKey, up: bool) -> Arc<Self> {
        Arc::new(Self {
            key,
            up: AtomicBool::new(up),
            active: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            state_changes: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(unix_ms()),
            pool: Pool::default(),
        })
    }

    /// True when the server may get new traffic.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Publishes a health verdict; returns true when it flipped the state.
    pub fn set_up(&self, up: bool) -> bool {
        let flipped = self.up.swap(up, Relaxed) != up;
        if flipped {
            self.state_changes.fetch_add(1, Relaxed);
            self.last_change_ms.store(unix_ms(), Relaxed);
        }
        flipped
    }

    /// Open connections right now.
    #[inline]
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Counts a new TCP session to the server as open until the guard drops.
    pub fn track_connection(self: &Arc<Self>) -> ActiveGuard {
        self.connections_total.fetch_add(1, Relaxed);
        self.track_request()
    }

    /// Counts an HTTP request in flight on the server until the guard drops (the
    /// connection itself may be pooled and reused).
    pub fn track_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Keeps a server's `active` count raised while alive.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ServerState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
