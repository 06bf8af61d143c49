//! The cluster view: an immutable [`Snapshot`] compiled from a
//! [`Config`], with its route tables and hyper server
//! settings; the frontend and backend counters that outlive snapshots; and what is
//! live now ([`Live`], read by the admin listener through [`LiveView`]). Per-server
//! state lives a layer below, in [`crate::upstream`].

mod compile;
pub mod discovered;
mod http_settings;
mod live;
pub mod rate_limit;
pub mod route;
mod route_action;
pub mod sni_route;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use compile::compile;
pub use http_settings::{server_settings, ServerSettings};
pub use live::{Live, LiveView, ReloadStats, WriteAction, WriteResult};
pub use stats::{status_class, BackendStats, FrontendConnGuard, FrontendIdleGuard, FrontendStats, TlsHandshakes};

use crate::balance::{Balancer, Member};
use crate::config::{CheckKind, Config, HashKey, Mode, Protocol, ResolvedTimeouts, StatusSet};
use crate::tls::{TlsFrontend, UpstreamTls};
use route::RouteTable;

/// Everything the data path reads to decide where traffic goes. Immutable; a
/// reload builds a new one and swaps it in whole.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the first config, +1 for each applied reload.
    pub generation: u64,
    /// The config this was compiled from.
    pub config: Arc<Config>,
    /// Frontends in config order.
    pub frontends: Vec<Arc<Frontend>>,
    /// Backends in config order.
    pub backends: Vec<Arc<Backend>>,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// Global graceful-shutdown budget.
    pub drain: Duration,
    /// What discovery found, shared by every snapshot of the process.
    pub discovered: Arc<discovered::Discovered>,
}

impl Snapshot {
    /// The frontend listening on `addr`, if any.
    pub fn frontend_for_bind(&self, addr: SocketAddr) -> Option<&Arc<Frontend>> {
        self.frontends.iter().find(|f| f.binds.contains(&addr))
    }
}

/// The frontend a listener serves now, swapped on reload: each HTTP request loads
/// it when its head arrives.
pub type LiveFrontend = Arc<arc_swap::ArcSwap<Frontend>>;

/// A compiled frontend.
#[derive(Debug)]
pub struct Frontend {
    /// Unique name.
    pub name: String,
    /// Listen addresses.
    pub binds: Vec<SocketAddr>,
    /// http or tcp.
    pub mode: Mode,
    /// Limits open client connections; shared with the previous snapshot when unchanged.
    pub limiter: Option<Arc<Semaphore>>,
    /// Configured connection cap (for status display).
    pub max_connections: Option<usize>,
    /// Routes (http); the default backend is the fallback.
    pub routes: RouteTable,
    /// Routes by TLS server name (tcp frontends with routes; `None` without, so
    /// their connections are not peeked at); the default backend is the fallback.
    pub sni_routes: Option<sni_route::SniRoutes>,
    /// Backend for connections/requests no route claimed.
    pub default_backend: Option<Arc<Backend>>,
    /// Timeouts with global defaults applied.
    pub timeouts: ResolvedTimeouts,
    /// Largest accepted request head, in bytes.
    pub max_header_bytes: usize,
    /// hyper's server settings (http frontends).
    pub http: Option<ServerSettings>,
    /// Emit one access-log line per request / TCP session.
    pub access_log: bool,
    /// TLS terminated here (http frontends with `tls:`).
    pub tls: Option<Arc<TlsFrontend>>,
    /// Compress responses at or above this many bytes (unknown lengths too), by
    /// the client's Accept-Encoding; `None`: never.
    pub compress_min_size: Option<u64>,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Absolute-form requests and CONNECT go out to the destinations it allows.
    pub forward_proxy: Option<Arc<crate::proxy::http::forward_proxy::ForwardProxy>>,
    /// Some server of the config is sent PROXY headers, which name the address a
    /// client connected to: on a wildcard bind it is looked up at the accept (one
    /// `getsockname`), and only then.
    pub needs_local: bool,
    /// Requests per client address (http), beyond which 429; the buckets are in
    /// `stats.rate_table`.
    pub rate_limit: Option<rate_limit::Limit>,
    /// Counters, kept across reloads.
    pub stats: Arc<FrontendStats>,
}

/// A compiled backend: its servers and its balancer table.
#[derive(Debug)]
pub struct Backend {
    /// Unique name.
    pub name: String,
    /// Servers in config order.
    pub members: Vec<Member>,
    /// Picks among `members`.
    pub balancer: Box<dyn Balancer>,
    /// consistent_hash only.
    pub hash_key: Option<HashKey>,
    /// Failed attempts retried on another server (see `retry_on`).
    pub retries: u32,
    /// What is retried.
    pub retry_on: RetryPolicy,
    /// Timeouts with global defaults applied (connect and server apply here).
    pub timeouts: ResolvedTimeouts,
    /// Active health checking, if configured.
    pub health_check: Option<Arc<CheckSpec>>,
    /// TLS to the servers, if the backend has `tls:`.
    pub tls: Option<Arc<UpstreamTls>>,
    /// HTTP/1.1 or HTTP/2 to the servers.
    pub protocol: Protocol,
    /// Where requests wait for a server slot; `None`: refused at once.
    pub queue: Option<QueueSettings>,
    /// Passive health: servers failing in live traffic are ejected for a while.
    pub outlier: Option<OutlierSettings>,
    /// Sticky sessions by cookie.
    pub sticky: Option<StickySettings>,
    /// Counters (and the wait queue), kept across reloads.
    pub stats: Arc<BackendStats>,
    /// The shared HTTP cache in front of the servers (`cache:`), kept across
    /// reloads while its settings stay.
    pub cache: Option<Arc<crate::proxy::http::cache::HttpCache>>,
}

/// A backend's `retry_on:` as flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A failed connect (nothing reached the server): any request.
    pub connect_failure: bool,
    /// Reset or closed before the answer: idempotent requests without a body.
    pub reset: bool,
    /// No answer within `timeouts.server`: idempotent requests without a body.
    pub timeout: bool,
    /// These statuses from the server: idempotent requests without a body.
    pub statuses: [bool; 3],
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { connect_failure: true, reset: false, timeout: false, statuses: [false; 3] }
    }
}

impl RetryPolicy {
    /// The policy `retry_on` lists (the default without it: connect failures).
    pub fn from_list(list: Option<&[crate::config::RetryOn]>) -> Self {
        use crate::config::RetryOn;
        let Some(list) = list else { return RetryPolicy::default() };
        let has = |what| list.contains(&what);
        RetryPolicy {
            connect_failure: has(RetryOn::ConnectFailure),
            reset: has(RetryOn::Reset),
            timeout: has(RetryOn::Timeout),
            statuses: [has(RetryOn::Status502), has(RetryOn::Status503), has(RetryOn::Status504)],
        }
    }

    /// A server's answer with this status is retried.
    pub fn on_status(&self, status: u16) -> bool {
        match status {
            502..=504 => self.statuses[usize::from(status - 502)],
            _ => false,
        }
    }

    /// Anything is retried after the request has been sent (a copy must be kept).
    pub fn after_send(&self) -> bool {
        self.reset || self.timeout || self.statuses.iter().any(|&on| on)
    }
}

/// A backend's `outlier_detection:`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    /// Failures in a row that eject a server.
    pub consecutive_failures: u32,
    /// The first ejection's length (doubled for each further one, up to 10x).
    pub ejection_time: Duration,
    /// Most servers ejected at once, in percent (rounded up).
    pub max_ejected_percent: u32,
}

/// A backend's `sticky:`: the cookie and each server's value in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickySettings {
    /// The cookie's name.
    pub cookie: String,
    /// Per member (same order): the cookie's value naming that server, a keyed
    /// hash of its name (the same on every instance with this config).
    pub values: Vec<String>,
}

impl StickySettings {
    /// The member a cookie value names, if any.
    pub fn member(&self, value: &str) -> Option<usize> {
        self.values.iter().position(|v| v == value)
    }
}

/// A backend's `queue:`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Most requests waiting at once.
    pub max: usize,
    /// Longest wait.
    pub timeout: Duration,
}

impl Backend {
    /// Picks a server for a request hashed to `key`, skipping `tried`.
    #[inline]
    pub fn pick(&self, key: Option<u64>, tried: &crate::balance::Tried) -> Option<(usize, &Member)> {
        self.balancer.pick(&self.members, key, tried).map(|i| (i, &self.members[i]))
    }

    /// Servers currently up.
    pub fn up_servers(&self) -> usize {
        self.members.iter().filter(|m| m.state.is_up()).count()
    }
}

/// A backend's health check, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// tcp or http.
    pub kind: CheckKind,
    /// HTTP path.
    pub path: String,
    /// HTTP Host header, if set.
    pub host: Option<String>,
    /// Statuses counted as success.
    pub expect: StatusSet,
    /// Time between probes.
    pub interval: Duration,
    /// Probe deadline.
    pub timeout: Duration,
    /// Successes to go up.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// The backend's TLS: probes speak it too.
    pub tls: Option<CheckTls>,
    /// The backend speaks HTTP/2 to its servers: http probes too.
    pub h2: bool,
}

/// A backend's TLS as its health checks use it. Equal only to the same compiled
/// TLS, so a reload that changes it restarts the checks with the new one.
#[derive(Debug, Clone)]
pub struct CheckTls(pub Arc<UpstreamTls>);

impl PartialEq for CheckTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CheckTls {}

/// The sticky cookie's value for server `server` of `backend`: a keyed hash of its
/// name (key: the backend's and the cookie's names), so every instance with the
/// same config agrees, and the value tells nothing of the server's address.
pub fn sticky_value(backend: &str, cookie: &str, server: &str) -> String {
    let seed = xxhash_rust::xxh3::xxh3_64(format!("fulcrum-sticky\0{backend}\0{cookie}").as_bytes());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64_with_seed(server.as_bytes(), seed))
}

/// A backend with no servers, named `name`, for tests where only its identity matters.
#[cfg(test)]
pub(crate) fn test_backend(name: &str) -> Arc<Backend> {
    Arc::new(Backend {
        name: name.to_string(),
        balancer: crate::balance::build(crate::config::Balance::RoundRobin, &[], None),
        members: Vec::new(),
        hash_key: None,
        retries: 0,
        retry_on: RetryPolicy::default(),
        timeouts: Default::default(),
        health_check: None,
        tls: None,
        protocol: Default::default(),
        queue: None,
        outlier: None,
        sticky: None,
        stats: Arc::new(BackendStats::new(name)),
        cache: None,
    })
}
