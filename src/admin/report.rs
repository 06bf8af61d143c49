//! The status report behind `/api/status` and `/status`: one walk over the current
//! snapshot, reading the same atomics the data path updates.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::balance::Member;
use crate::cluster::LiveView;
use crate::cluster::{Backend, Frontend};
use crate::config::Mode;
use crate::upstream::unix_ms;

/// Everything the status page shows.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Fulcrum's version.
    pub version: &'static str,
    /// Config generation being served (1 = as started).
    pub generation: u64,
    /// True once graceful shutdown started.
    pub draining: bool,
    /// Reload outcomes.
    pub reloads: ReloadReport,
    /// Client connections against the process-wide cap, and per worker thread.
    pub connections: ConnectionsReport,
    /// Frontends in config order.
    pub frontends: Vec<FrontendReport>,
    /// Backends in config order.
    pub backends: Vec<BackendReport>,
}

/// Client connections of the whole process.
#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    /// Most client connections open at once (from the open-file limit).
    pub cap: usize,
    /// Open now, across every frontend.
    pub open: usize,
    /// Open now on each worker thread.
    pub per_worker: Vec<usize>,
}

/// Reload counters and the last failure.
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    /// Applied reloads.
    pub succeeded: u64,
    /// Rejected reloads.
    pub failed: u64,
    /// Whether the most recent reload applied (true before any).
    pub last_ok: bool,
    /// Errors of the last rejected reload.
    pub last_errors: Vec<String>,
}

/// One frontend.
#[derive(Debug, Serialize)]
pub struct FrontendReport {
    /// Name.
    pub name: String,
    /// `http` or `tcp`.
    pub mode: &'static str,
    /// Listen addresses as configured.
    pub binds: Vec<String>,
    /// Connection cap, if any.
    pub max_connections: Option<usize>,
    /// Open client connections.
    pub active_connections: u64,
    /// Open HTTP/1.1 connections between requests (holding no buffer).
    pub idle_connections: u64,
    /// Accepted client connections.
    pub connections_total: u64,
    /// Refused at the cap.
    pub rejected_connections: u64,
    /// HTTP requests received.
    pub http_requests: u64,
    /// Requests per second over the last sampling interval.
    pub request_rate: f64,
    /// Bytes from clients.
    pub received_bytes: u64,
    /// Bytes to clients.
    pub sent_bytes: u64,
    /// Responses by class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// The certificates served, on a TLS frontend (`null` otherwise).
    pub certificates: Option<Vec<CertificateReport>>,
}

/// A certificate a TLS frontend serves.
#[derive(Debug, Serialize)]
pub struct CertificateReport {
    /// The names it serves (SANs).
    pub names: Vec<String>,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

/// One backend.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    /// Name.
    pub name: String,
    /// Balancing algorithm.
    pub balance: String,
    /// Servers currently up.
    pub up_servers: usize,
    /// Responses by class, `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Connect failures retried on another server.
    pub retries: u64,
    /// The backend's queue, if it has one.
    pub queue: Option<QueueReport>,
    /// The backend's HTTP cache, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// Whether servers are health-checked.
    pub health_checked: bool,
    /// Servers in config order (a `discover` entry's members where it stands).
    pub servers: Vec<ServerReport>,
    /// The backend's `discover` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovered: Vec<DiscoveredReport>,
}

/// A `discover` entry of a backend: its members are the servers named `<name>/...`.
#[derive(Debug, Serialize)]
pub struct DiscoveredReport {
    /// The entry's name.
    pub name: String,
    /// The name looked up (`host:port`, or an SRV name).
    pub address: String,
    /// `dns` or `srv`.
    pub discover: &'static str,
    /// Members it resolves to now.
    pub servers: usize,
    /// Failed lookups so far.
    pub errors: u64,
}

/// A backend's HTTP cache.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    /// `cache.size`: bytes it may hold.
    pub size: u64,
    /// Bytes it holds now.
    pub bytes: u64,
    /// Responses it holds now (each Vary variant counts).
    pub entries: u64,
    /// Lookups answered from it.
    pub hits: u64,
    /// Lookups that found nothing usable (fetched).
    pub misses: u64,
    /// Lookups that revalidated a stale entry.
    pub stale: u64,
    /// Requests not for the cache.
    pub bypassed: u64,
}

/// A backend's wait queue.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    /// Waiting right now.
    pub length: usize,
    /// Most that may wait.
    pub max: usize,
    /// Longest wait, in milliseconds.
    pub timeout_ms: u64,
    /// Waits ended in a 503 so far (timeout, full, expected wait too long).
    pub refused: u64,
    /// Waits that ended (served or refused) so far.
    pub waits: u64,
    /// Their mean, in milliseconds.
    pub mean_wait_ms: f64,
}

/// One server.
#[derive(Debug, Serialize)]
pub struct ServerReport {
    /// Name.
    pub name: String,
    /// Resolved address.
    pub address: String,
    /// Takes traffic.
    pub up: bool,
    /// Weight (0 = draining).
    pub weight: u32,
    /// Used only when no primary is up.
    pub backup: bool,
    /// Open connections / requests in flight.
    pub active_connections: u64,
    /// Connections opened.
    pub connections_total: u64,
    /// HTTP requests sent.
    pub http_requests: u64,
    /// Failed connects.
    pub connect_errors: u64,
    /// Failed health checks.
    pub check_failures: u64,
    /// up<->down transitions.
    pub state_changes: u64,
    /// Seconds since the last transition (or since the server appeared).
    pub seconds_since_change: f64,
    /// Idle pooled keep-alive connections.
    pub idle_pooled_connections: usize,
    /// The most recent health probe.
    pub last_check: Option<CheckReport>,
    /// What an operator set: "ready", "drain" or "maint".
    pub admin_state: &'static str,
    /// When a timed admin override lapses (unix ms), if it does.
    pub admin_until_ms: Option<u64>,
    /// Ejected by outlier detection right now.
    pub ejected: bool,
    /// Outlier ejections so far.
    pub ejections: u64,
    /// Ramping up after coming up (`slow_start`): the share of its weight it gets now.
    pub ramp: Option<f64>,
}

/// One health probe.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Passed.
    pub ok: bool,
    /// What happened.
    pub detail: String,
    /// Seconds since it finished.
    pub seconds_ago: f64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

/// Builds the report from the current snapshot; `rate` gives a frontend's
/// recent request rate.
pub fn build(live: &LiveView, rate: impl Fn(&str) -> f64) -> StatusReport {
    let snapshot = live.snapshot();
    let reloads = live.reloads();
    let now = unix_ms();
    let discovered = snapshot.discovered.report();
    StatusReport {
        version: env!("CARGO_PKG_VERSION"),
        generation: snapshot.generation,
        draining: live.draining(),
        reloads: ReloadReport {
            succeeded: reloads.succeeded.load(Relaxed),
            failed: reloads.failed.load(Relaxed),
            last_ok: reloads.last_ok.load(Relaxed),
            last_errors: reloads.last_errors(),
        },
        connections: {
            let (cap, open) = live.connections();
            ConnectionsReport { cap, open, per_worker: live.worker_loads() }
        },
        frontends: snapshot.frontends.iter().map(|f| frontend(f, &snapshot.config, rate(&f.name))).collect(),
        backends: snapshot
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut report = backend(b, snapshot.config.backends.get(i).map(|c| c.balance), now);
                report.discovered = (discovered.iter())
                    .filter(|entry| entry.key.backend == b.name)
                    .map(|entry| DiscoveredReport {
                        name: entry.key.server.clone(),
                        address: entry.key.address.clone(),
                        discover: match entry.key.kind {
                            crate::config::Discover::Dns => "dns",
                            crate::config::Discover::Srv => "srv",
                        },
                        servers: entry.servers,
                        errors: entry.errors,
                    })
                    .collect();
                report
            })
            .collect(),
    }
}

fn frontend(f: &Frontend, config: &crate::config::Config, request_rate: f64) -> FrontendReport {
    let binds = config
        .frontends
        .iter()
        .find(|c| c.name == f.name)
        .map(|c| c.bind.as_slice().to_vec())
        .unwrap_or_else(|| f.binds.iter().map(ToString::to_string).collect());
    let stats = &f.stats;
    FrontendReport {
        name: f.name.clone(),
        mode: match f.mode {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        },
        binds,
        max_connections: f.max_connections,
        active_connections: stats.active_connections.load(Relaxed),
        idle_connections: stats.idle_connections.load(Relaxed),
        connections_total: stats.connections_total.load(Relaxed),
        rejected_connections: stats.rejected_connections.load(Relaxed),
        http_requests: stats.http_requests.load(Relaxed),
        request_rate,
        received_bytes: stats.received_bytes.load(Relaxed),
        sent_bytes: stats.sent_bytes.load(Relaxed),
        responses: stats.responses.each_ref().map(|c| c.load(Relaxed)),
        certificates: f.tls.as_ref().map(|tls| {
            tls.certificates
                .iter()
                .map(|c| CertificateReport { names: c.names.clone(), not_after: c.not_after })
                .collect()
        }),
    }
}

fn backend(b: &Backend, balance: Option<crate::config::Balance>, now: u64) -> BackendReport {
    BackendReport {
        name: b.name.clone(),
        balance: balance.map_or_else(String::new, |kind| balance_name(kind).to_string()),
        up_servers: b.up_servers(),
        responses: b.stats.responses.each_ref().map(|c| c.load(Relaxed)),
        retries: b.stats.retries.load(Relaxed),
        queue: b.queue.map(|settings| {
            let queue = &b.stats.queue;
            let waits = queue.wait.get_sample_count();
            QueueReport {
                length: queue.len(),
                max: settings.max,
                timeout_ms: settings.timeout.as_millis() as u64,
                refused: queue.refused.load(Relaxed),
                waits,
                mean_wait_ms: if waits == 0 { 0.0 } else { queue.wait.get_sample_sum() * 1000.0 / waits as f64 },
            }
        }),
        cache: b.cache.as_ref().map(|cache| {
            let counters = cache.counters();
            CacheReport {
                size: cache.size(),
                bytes: cache.bytes(),
                entries: cache.entries(),
                hits: counters.hit.load(Relaxed),
                misses: counters.miss.load(Relaxed),
                stale: counters.stale.load(Relaxed),
                bypassed: counters.bypass.load(Relaxed),
            }
        }),
        health_checked: b.health_check.is_some(),
        servers: b.members.iter().map(|m| server(m, now)).collect(),
        discovered: Vec::new(),
    }
}

/// The config spelling of a balancing algorithm.
pub fn balance_name(kind: crate::config::Balance) -> &'static str {
    match kind {
        crate::config::Balance::RoundRobin => "round_robin",
        crate::config::Balance::LeastConn => "least_conn",
        crate::config::Balance::ConsistentHash => "consistent_hash",
        crate::config::Balance::Random => "random",
    }
}

fn server(m: &Member, now: u64) -> ServerReport {
    let s = &m.state;
    let ago = |at_ms: u64| now.saturating_sub(at_ms) as f64 / 1000.0;
    ServerReport {
        name: m.name.clone(),
        address: s.key.address.to_string(),
        up: s.is_up(),
        weight: m.weight,
        backup: m.backup,
        active_connections: s.active(),
        connections_total: s.connections_total.load(Relaxed),
        http_requests: s.requests_total.load(Relaxed),
        connect_errors: s.connect_errors.load(Relaxed),
        check_failures: s.check_failures.load(Relaxed),
        state_changes: s.state_changes.load(Relaxed),
        seconds_since_change: ago(s.last_change_ms.load(Relaxed)),
        idle_pooled_connections: s.pool.idle_count(),
        admin_state: s.admin.get().state.as_str(),
        admin_until_ms: s.admin.get().until_ms,
        ejected: s.is_ejected(),
        ejections: s.ejections.load(Relaxed),
        ramp: s.ramp(m.slow_start_ms),
        last_check: s.last_check.lock().expect("last check poisoned").as_ref().map(|c| CheckReport {
            ok: c.ok,
            detail: c.detail.clone(),
            seconds_ago: ago(c.at_ms),
            duration_ms: c.duration.as_secs_f64() * 1000.0,
        }),
    }
}
