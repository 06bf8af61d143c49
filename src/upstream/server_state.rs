//! Per-server shared state: health and counters, kept across reloads.
//!
//! The data path, the health checker and the metrics exporter all read and write
//! these same atomics; there is no second set of counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, HistogramOpts};

use super::admin_state::AdminOverride;
use super::wait_queue::WaitQueue;
use super::PoolSlot;

/// Identity of a server across reloads: a reload that keeps all three keeps the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// Backend name.
    pub backend: String,
    /// Server name.
    pub server: String,
    /// Resolved address.
    pub address: SocketAddr,
    /// Spoken to in HTTP/2: its pooled connections are of another kind, so a
    /// reload that changes the protocol makes it a new server (with a new pool).
    pub http2: bool,
}

/// Live state of one server.
#[derive(Debug)]
pub struct ServerState {
    /// Who this is.
    pub key: ServerKey,
    up: AtomicBool,
    /// Connections open to the server right now (TCP sessions and pooled HTTP connections in use).
    pub active: AtomicU64,
    /// `max_connections` as the current config has it (0: unlimited).
    pub limit: AtomicU64,
    /// Unix time (ms) the server last came up (or back from an ejection), while it
    /// ramps up under `slow_start`; 0: not ramping.
    ramp_from_ms: AtomicU64,
    /// Ramp up the first time it comes up too (a server added by a reload).
    ramp_first_up: AtomicBool,
    /// Failures in a row seen in live traffic (outlier detection).
    failures: AtomicU32,
    /// Unix time (ms) an ejection ends; 0: not ejected.
    ejected_until_ms: AtomicU64,
    /// Ejections in a row without a healthy spell between them (each doubles the next).
    ejection_streak: AtomicU32,
    /// Unix time (ms) the last ejection ended (or ends).
    last_ejection_end_ms: AtomicU64,
    /// Outlier ejections so far.
    pub ejections: AtomicU64,
    /// What an operator set through the admin API (kept across reloads).
    pub admin: AdminOverride,
    /// The backend's wait queue: a slot freed goes to its oldest waiter.
    queue: OnceLock<Arc<WaitQueue>>,
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
    pub pool: PoolSlot,
    /// The server's address as a Host header value, for requests that name no host
    /// (HTTP/1.0 without Host): they are sent on as HTTP/1.1, which needs one.
    pub host_header: Option<http::HeaderValue>,
    /// Request start to response head, for requests this server answered.
    pub response_duration: Histogram,
    /// Health probes run.
    pub checks_total: AtomicU64,
    /// Time each health probe took (`fulcrum_server_check_duration_seconds`).
    pub check_duration: Histogram,
    /// The most recent probe, for the status page (written by the health task only).
    pub last_check: Mutex<Option<CheckResult>>,
}

/// Outcome of one health probe.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The probe passed.
    pub ok: bool,
    /// What happened (`connected`, `HTTP 503 not expected`, `connect: refused`...).
    pub detail: String,
    /// Unix time (ms) the probe finished.
    pub at_ms: u64,
    /// How long it took.
    pub duration: Duration,
}

/// Upper bounds of the response-duration histogram, in seconds.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets of the health-check duration histogram, in seconds.
const CHECK_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl ServerState {
    /// A new server, initially `up` or not.
    pub fn new(key: ServerKey, up: bool) -> Arc<Self> {
        let opts =
            HistogramOpts::new("fulcrum_server_check_duration_seconds", "Time each health probe took, by server.")
                .const_label("backend", key.backend.as_str())
                .const_label("server", key.server.as_str())
                .buckets(CHECK_BUCKETS.to_vec());
        let check_duration = Histogram::with_opts(opts).expect("static histogram options are valid");
        let opts = HistogramOpts::new(
            "fulcrum_server_response_duration_seconds",
            "Time from request start to response head, by server.",
        )
        .const_label("backend", key.backend.as_str())
        .const_label("server", key.server.as_str())
        .buckets(DURATION_BUCKETS.to_vec());
        let response_duration = Histogram::with_opts(opts).expect("static histogram options are valid");
        let host_header = http::HeaderValue::try_from(key.address.to_string()).ok();
        Arc::new(Self {
            host_header,
            key,
            up: AtomicBool::new(up),
            active: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            ramp_from_ms: AtomicU64::new(0),
            ramp_first_up: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            last_ejection_end_ms: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            admin: AdminOverride::default(),
            queue: OnceLock::new(),
            connections_total: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            state_changes: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(unix_ms()),
            pool: PoolSlot::default(),
            response_duration,
            checks_total: AtomicU64::new(0),
            check_duration,
            last_check: Mutex::new(None),
        })
    }

    /// True when the server may get new traffic.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Publishes a health verdict; returns true when it flipped the state. A server
    /// that comes back up ramps up (`slow_start`); so does one coming up for the
    /// first time if a reload added it.
    pub fn set_up(&self, up: bool) -> bool {
        let flipped = self.up.swap(up, Relaxed) != up;
        if flipped {
            let before = self.state_changes.fetch_add(1, Relaxed);
            let now = unix_ms();
            self.last_change_ms.store(now, Relaxed);
            if up && (before > 0 || self.ramp_first_up.load(Relaxed)) {
                self.ramp_from_ms.store(now, Relaxed);
            }
        }
        flipped
    }

    /// Marks a server added by a reload: it ramps up from when it is up (now, if it is).
    pub fn ramp_when_up(&self) {
        self.ramp_first_up.store(true, Relaxed);
        if self.is_up() {
            self.ramp_from_ms.store(unix_ms(), Relaxed);
        }
    }

    /// Share of its weight a server gets while ramping up over `slow_start_ms`: 10%
    /// when it comes up, 100% at the end; `None` when it is not ramping.
    #[inline]
    pub fn ramp(&self, slow_start_ms: u64) -> Option<f64> {
        let from = self.ramp_from_ms.load(Relaxed);
        if from == 0 || slow_start_ms == 0 {
            return None;
        }
        let elapsed = unix_ms().saturating_sub(from);
        if elapsed >= slow_start_ms {
            // Done: later picks need not read the clock.
            let _ = self.ramp_from_ms.compare_exchange(from, 0, Relaxed, Relaxed);
            return None;
        }
        Some(0.1 + 0.9 * elapsed as f64 / slow_start_ms as f64)
    }

    /// Ejected by outlier detection right now. An ejection that ran out ends here,
    /// and the server ramps up again from then.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        if until == 0 {
            return false;
        }
        if unix_ms() < until {
            return true;
        }
        if self.ejected_until_ms.compare_exchange(until, 0, Relaxed, Relaxed).is_ok() {
            self.ramp_from_ms.store(until, Relaxed);
        }
        false
    }

    /// Unix time (ms) the current ejection ends; 0 when not ejected (or it ran out).
    pub fn ejected_until_ms(&self) -> u64 {
        if self.is_ejected() {
            self.ejected_until_ms.load(Relaxed)
        } else {
            0
        }
    }

    /// Starts a ramp as if the server had come up at `at_ms` (tests of slow start).
    #[doc(hidden)]
    pub fn ramp_from(&self, at_ms: u64) {
        self.ramp_from_ms.store(at_ms, Relaxed);
    }

    /// Records how a request (or connect) on this server went, for outlier
    /// detection; true when failures in a row have reached `consecutive` (and
    /// stay so until an ejection resets them).
    pub fn record_outcome(&self, failed: bool, consecutive: u32) -> bool {
        if !failed {
            self.failures.store(0, Relaxed);
            return false;
        }
        self.failures.fetch_add(1, Relaxed) + 1 >= consecutive
    }

    /// Ejects the server for `base` doubled for each ejection in a row (at most 10x
    /// `base`); the streak is forgotten after a healthy spell as long as the longest
    /// ejection. Returns how long.
    pub fn eject(&self, base: Duration) -> Duration {
        let now = unix_ms();
        let longest = base.saturating_mul(10);
        // The last ejection ended a healthy spell ago: start again from `base`.
        let last_end = self.last_ejection_end_ms.load(Relaxed);
        if last_end != 0 && now.saturating_sub(last_end) > longest.as_millis() as u64 {
            self.ejection_streak.store(0, Relaxed);
        }
        let streak = self.ejection_streak.fetch_add(1, Relaxed).min(4);
        let length = base.saturating_mul(1 << streak).min(longest);
        let until = now + length.as_millis() as u64;
        self.ejected_until_ms.store(until, Relaxed);
        self.last_ejection_end_ms.store(until, Relaxed);
        self.failures.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        length
    }

    /// Records a health probe's outcome (called by the server's health task only).
    pub fn record_check(&self, result: CheckResult) {
        self.checks_total.fetch_add(1, Relaxed);
        self.check_duration.observe(result.duration.as_secs_f64());
        if !result.ok {
            self.check_failures.fetch_add(1, Relaxed);
        }
        *self.last_check.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
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
    /// connection itself may be pooled and reused), whatever the server's limit.
    pub fn track_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, SeqCst);
        self.guard()
    }

    /// Takes one of the server's slots (a request in flight, or a tcp session)
    /// if it is up and below its `limit`; the slot is held until the guard drops.
    /// Exact across workers: the count never goes above the limit.
    pub fn try_reserve(self: &Arc<Self>) -> Option<ActiveGuard> {
        if !self.is_up() || self.is_ejected() {
            return None;
        }
        let limit = self.limit.load(Relaxed);
        if limit == 0 {
            self.active.fetch_add(1, SeqCst);
        } else {
            self.active.fetch_update(SeqCst, SeqCst, |active| (active < limit).then_some(active + 1)).ok()?;
        }
        Some(self.guard())
    }

    /// Hands the waiters of the backend's queue what room the server has: after it
    /// came up, or a reload gave it (or its backend) room.
    pub fn offer_to_waiters(self: &Arc<Self>) {
        if let Some(queue) = self.queue.get() {
            if !queue.is_empty() {
                queue.offer(self);
            }
        }
    }

    /// Ties the server to its backend's wait queue (once: a server belongs to one
    /// backend for its whole life).
    pub fn attach_queue(&self, queue: &Arc<WaitQueue>) {
        let _ = self.queue.set(Arc::clone(queue));
    }

    fn guard(self: &Arc<Self>) -> ActiveGuard {
        // Timed only where a queue wants the mean (the clock read is not free).
        let since = self.queue.get().filter(|queue| queue.enabled()).map(|_| Instant::now());
        ActiveGuard { server: Arc::clone(self), since, quiet: false }
    }
}

/// Keeps a server's `active` count raised while alive; on drop the slot goes to
/// the oldest waiter of the backend's queue, if any.
#[derive(Debug)]
pub struct ActiveGuard {
    server: Arc<ServerState>,
    since: Option<Instant>,
    quiet: bool,
}

impl ActiveGuard {
    /// The server the slot is on.
    pub fn server(&self) -> &Arc<ServerState> {
        &self.server
    }

    /// Gives the slot back without handing it to a waiter: for a waiter that was
    /// handed a slot it cannot use (the server drained meanwhile), which would only
    /// go round the other waiters, who cannot use it either.
    pub fn release_quietly(mut self) {
        self.quiet = true;
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let server = &self.server;
        server.active.fetch_sub(1, SeqCst);
        if let Some(queue) = server.queue.get() {
            if let Some(since) = self.since {
                queue.observe_hold(since.elapsed());
            }
            // After the decrement (SeqCst): a waiter that joined before it is seen
            // here, one that joins after it finds the slot free when it looks again.
            if !self.quiet && !queue.is_empty() {
                queue.offer(server);
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
