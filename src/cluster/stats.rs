//! Per-frontend and per-backend counters, kept across reloads by name.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::{Histogram, HistogramOpts};

use std::sync::Arc;

use crate::upstream::{WaitQueue, DURATION_BUCKETS};

/// Counters of one frontend; the data path updates them, `/metrics` reads them.
#[derive(Debug, Default)]
pub struct FrontendStats {
    /// Accepted client connections.
    pub connections_total: AtomicU64,
    /// Open client connections.
    pub active_connections: AtomicU64,
    /// Open HTTP/1.1 connections waiting for their next request, holding no
    /// request state or buffer.
    pub idle_connections: AtomicU64,
    /// Connections refused at `max_connections`.
    pub rejected_connections: AtomicU64,
    /// HTTP requests received.
    pub http_requests: AtomicU64,
    /// Bytes read from clients.
    pub received_bytes: AtomicU64,
    /// Bytes written to clients.
    pub sent_bytes: AtomicU64,
    /// Of `sent_bytes`, file bytes sent with `sendfile(2)` (static routes over
    /// plain HTTP/1.1).
    pub sendfile_bytes: AtomicU64,
    /// HTTP responses sent by status class (index 0 = 1xx ... 4 = 5xx), including
    /// those made before a backend was chosen (400, 408, 431, no route).
    pub responses: [AtomicU64; 5],
    /// HTTP connections and requests ended by a client-side time limit.
    pub client_timeouts: ClientTimeouts,
    /// TLS handshakes, by outcome.
    pub tls_handshakes: TlsHandshakes,
    /// Requests answered 429 by the frontend's rate limit.
    pub rate_limited: AtomicU64,
    /// Connections closed for their PROXY header, by reason (see
    /// `proxy::proxy_protocol::REFUSAL_REASONS`).
    pub proxy_protocol_refused: [AtomicU64; 4],
    /// The rate limit's buckets, one per client (kept across reloads with the
    /// counters, so a reload does not hand every client a fresh burst).
    pub rate_table: super::rate_limit::RateTable,
}

/// TLS handshakes of a frontend, by outcome and version.
#[derive(Debug, Default)]
pub struct TlsHandshakes {
    /// Completed with TLS 1.2.
    pub tls12: AtomicU64,
    /// Completed with TLS 1.3.
    pub tls13: AtomicU64,
    /// Refused or broken off (no shared version or cipher, unknown SNI with
    /// `strict_sni`, a bad client certificate, a client that went away or took
    /// longer than `request_header`), by the version offered when known.
    pub failed: AtomicU64,
}

impl TlsHandshakes {
    /// Each counter with its `version` and `result` labels.
    pub fn labelled(&self) -> [(&'static str, &'static str, &AtomicU64); 3] {
        [("1.2", "ok", &self.tls12), ("1.3", "ok", &self.tls13), ("unknown", "failed", &self.failed)]
    }
}

/// What each client-side time limit of an http frontend has ended.
#[derive(Debug, Default)]
pub struct ClientTimeouts {
    /// Connections that sent no byte within `request_header` (closed silently).
    pub first_request: AtomicU64,
    /// Request heads not complete within `request_header` (408).
    pub head: AtomicU64,
    /// Request bodies the client stopped sending for `client` (408).
    pub body: AtomicU64,
    /// Keep-alive or h2c connections idle for `client` (closed).
    pub idle: AtomicU64,
    /// Connections whose client stopped reading for `client` (dropped).
    pub send: AtomicU64,
}

impl ClientTimeouts {
    /// Each counter with its `limit` label.
    pub fn labelled(&self) -> [(&'static str, &AtomicU64); 5] {
        [
            ("first_request", &self.first_request),
            ("head", &self.head),
            ("body", &self.body),
            ("idle", &self.idle),
            ("send", &self.send),
        ]
    }
}

/// Keeps a frontend's `active_connections` raised while alive.
#[derive(Debug)]
pub struct FrontendConnGuard<'a>(&'a FrontendStats);

/// Index of a status code's class in a `[_; 5]` counter array.
#[inline]
pub fn status_class(code: u16) -> usize {
    (code / 100).clamp(1, 5) as usize - 1
}

impl FrontendStats {
    /// Counts one response with status `code`.
    #[inline]
    pub fn count_response(&self, code: u16) {
        self.responses[status_class(code)].fetch_add(1, Relaxed);
    }

    /// Counts an accepted connection as open until the guard drops.
    pub fn open_connection(&self) -> FrontendConnGuard<'_> {
        self.connections_total.fetch_add(1, Relaxed);
        self.active_connections.fetch_add(1, Relaxed);
        FrontendConnGuard(self)
    }
}

/// Keeps a frontend's `idle_connections` raised while alive.
#[derive(Debug)]
pub struct FrontendIdleGuard<'a>(&'a FrontendStats);

impl FrontendStats {
    /// Counts a connection as idle until the guard drops.
    pub fn idle_connection(&self) -> FrontendIdleGuard<'_> {
        self.idle_connections.fetch_add(1, Relaxed);
        FrontendIdleGuard(self)
    }
}

impl Drop for FrontendIdleGuard<'_> {
    fn drop(&mut self) {
        self.0.idle_connections.fetch_sub(1, Relaxed);
    }
}

impl Drop for FrontendConnGuard<'_> {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Relaxed);
    }
}

/// Counters of one backend.
#[derive(Debug)]
pub struct BackendStats {
    /// Responses sent by status class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Request start to response head.
    pub response_duration: Histogram,
    /// Connect failures retried on another server.
    pub retries: AtomicU64,
    /// Requests waiting for a server slot.
    pub queue: Arc<WaitQueue>,
    /// Held while deciding an outlier ejection, so concurrent ones cannot eject
    /// more than `max_ejected_percent` between them.
    pub ejecting: std::sync::Mutex<()>,
}

impl BackendStats {
    /// Fresh counters for backend `name`.
    pub fn new(name: &str) -> Self {
        let opts = HistogramOpts::new(
            "fulcrum_backend_response_duration_seconds",
            "Time from request start to response head, by backend.",
        )
        .const_label("backend", name)
        .buckets(DURATION_BUCKETS.to_vec());
        Self {
            responses: Default::default(),
            response_duration: Histogram::with_opts(opts).expect("static histogram options are valid"),
            retries: AtomicU64::new(0),
            queue: Arc::new(WaitQueue::new(name)),
            ejecting: std::sync::Mutex::new(()),
        }
    }

    /// Counts one response with status `code`.
    #[inline]
    pub fn count_response(&self, code: u16) {
        self.responses[status_class(code)].fetch_add(1, Relaxed);
    }
}
