//! `Config` -> `Snapshot`: resolve names to references, build balancer tables,
//! and carry live state over from the previous snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::discovered::EntryKey;
use super::route::{Route, RouteAction, RouteTable};
use super::{Backend, BackendStats, CheckSpec, Frontend, Snapshot};
use crate::balance::{self, Member};
use crate::config::{self, Config, ConfigError, HashKey, Issue};
use crate::upstream::{ServerKey, ServerState};

/// Largest request head accepted when a frontend does not say.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Compiles a validated config. State of servers, frontends and backends that also
/// exist in `previous` is carried over, so counters and health survive a reload.
///
/// Every value was parsed and checked when the config was loaded (server names
/// resolved too), so this neither parses, resolves nor fails for a config that
/// [`Config::parse`] or [`Config::load`] returned. Errors are left only for configs
/// built or deserialized some other way, which this refuses rather than panic on.
pub fn compile(config: Arc<Config>, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigError> {
    let global = config.global_timeouts();
    let carry = Carry::from(previous);
    // One registry for the process's life, from the first snapshot on.
    let discovered = previous.map(|p| Arc::clone(&p.discovered)).unwrap_or_default();
    let mut issues = Vec::new();

    let mut backends: Vec<Arc<Backend>> = Vec::with_capacity(config.backends.len());
    for (i, b) in config.backends.iter().enumerate() {
        let stats =
            carry.backends.get(b.name.as_str()).cloned().unwrap_or_else(|| Arc::new(BackendStats::new(&b.name)));
        let mut members = Vec::with_capacity(b.servers.len());
        for (j, s) in b.servers.iter().enumerate() {
            // What each entry stands for: itself, or the members discovery found for it.
            let found: Vec<Found> = match s.discover {
                Some(kind) => {
                    let key =
                        EntryKey { backend: b.name.clone(), server: s.name.clone(), kind, address: s.address.clone() };
                    let targets = discovered.targets(&key);
                    (targets.iter())
                        .map(|t| Found {
                            name: key.member_name(t.addr),
                            address: t.addr,
                            weight: t.weight.unwrap_or(s.weight),
                            backup: s.backup || t.backup,
                            tls_host: t.host.clone(),
                        })
                        .collect()
                }
                None => match s.resolved_address() {
                    Some(address) => vec![Found {
                        name: s.name.clone(),
                        address,
                        weight: s.weight,
                        backup: s.backup,
                        tls_host: None,
                    }],
                    None => {
                        issues.push(Issue::new(
                            format!("backends[{i}].servers[{j}].address"),
                            "not resolved: the config was not validated",
                        ));
                        continue;
                    }
                },
            };
            for found in found {
                let key = ServerKey {
                    backend: b.name.clone(),
                    server: found.name.clone(),
                    address: found.address,
                    http2: b.protocol.is_h2(),
                };
                // Without health checks a server is always up. With them, a server new to
                // this process waits for its first check instead of receiving traffic blind.
                let state = carry.servers.get(&key).cloned().unwrap_or_else(|| {
                    let state = ServerState::new(key, b.health_check.is_none());
                    // Added by a reload or found by discovery: a newcomer ramps up (slow
                    // start) once it is up; the servers of the first config all start together.
                    if previous.is_some() {
                        state.ramp_when_up();
                    }
                    state
                });
                // A server belongs to one backend for life (its identity names it).
                state.attach_queue(&stats.queue);
                // An IP address is a name too (verified against the certificate's IP SANs).
                let tls_name = b.tls.as_ref().map(|_| {
                    (found.tls_host.as_deref().and_then(crate::tls::server_name))
                        .or_else(|| crate::tls::server_name(&s.address))
                        .unwrap_or_else(|| found.address.ip().into())
                });
                members.push(Member {
                    tls_name,
                    name: found.name,
                    // An operator's drain, maint or weight (admin API) wins over the file's.
                    weight: state.admin.weight(found.weight),
                    backup: found.backup,
                    max_connections: s.max_connections as u64,
                    send_proxy: s.send_proxy,
                    slow_start_ms: b.slow_start.map_or(0, |d| d.0.as_millis() as u64),
                    state,
                });
            }
        }
        if b.balance == config::Balance::ConsistentHash {
            fit_ring(&b.name, &mut members);
        }
        let tls = b.tls.as_ref().and_then(|tls| match crate::tls::client_config(tls, b.protocol) {
            Ok(compiled) => Some(Arc::new(compiled)),
            Err(err) => {
                issues.push(Issue::new(format!("backends[{i}].tls"), err.to_string()));
                None
            }
        });
        let health_check = b.health_check.as_ref().map(|hc| {
            Arc::new(CheckSpec {
                kind: hc.kind,
                path: hc.path.clone().unwrap_or_else(|| "/".into()),
                host: hc.host.clone(),
                expect: hc.expect_status.clone().unwrap_or_default(),
                interval: hc.interval.map_or(std::time::Duration::from_secs(2), |d| d.0),
                timeout: hc.timeout.map_or(std::time::Duration::from_secs(1), |d| d.0),
                rise: hc.rise.unwrap_or(2),
                fall: hc.fall.unwrap_or(3),
                tls: tls.clone().map(super::CheckTls),
                h2: b.protocol.is_h2(),
            })
        });
        let hash_key = match b.balance {
            // source_ip is the documented default.
            config::Balance::ConsistentHash => Some(b.hash_key.clone().unwrap_or(HashKey::SourceIp)),
            _ => None,
        };
        let queue = b.queue.as_ref().map(|queue| super::QueueSettings {
            max: queue.max.unwrap_or(config::Queue::DEFAULT_MAX),
            timeout: queue.timeout.map_or(config::Queue::DEFAULT_TIMEOUT, |d| d.0),
        });
        let outlier = b.outlier_detection.as_ref().map(|o| super::OutlierSettings {
            consecutive_failures: o.consecutive_failures.unwrap_or(config::OutlierDetection::DEFAULT_FAILURES),
            ejection_time: o.ejection_time.map_or(config::OutlierDetection::DEFAULT_EJECTION, |d| d.0),
            max_ejected_percent: o.max_ejected_percent.unwrap_or(config::OutlierDetection::DEFAULT_MAX_EJECTED_PERCENT),
        });
        let sticky = b.sticky.as_ref().map(|sticky| super::StickySettings {
            values: members.iter().map(|m| super::sticky_value(&b.name, &sticky.cookie, &m.name)).collect(),
            cookie: sticky.cookie.clone(),
        });
        backends.push(Arc::new(Backend {
            queue,
            outlier,
            sticky,
            tls,
            protocol: b.protocol,
            name: b.name.clone(),
            balancer: balance::build(b.balance, &members, b.hash_balance_factor),
            members,
            hash_key,
            // Listing what to retry asks for a retry: one unless `retries` says.
            retries: b.retries.unwrap_or(if b.retry_on.is_some() { 1 } else { 0 }),
            retry_on: super::RetryPolicy::from_list(b.retry_on.as_deref()),
            timeouts: b.timeouts.resolve(global),
            health_check,
            stats,
            cache: b.cache.map(|cache| {
                let previous = carry.caches.get(b.name.as_str());
                crate::proxy::http::cache::HttpCache::carried(previous, cache.size.bytes(), cache.max_object())
            }),
        }));
    }
    let by_name: HashMap<&str, &Arc<Backend>> = backends.iter().map(|b| (b.name.as_str(), b)).collect();

    let mut frontends = Vec::with_capacity(config.frontends.len());
    for (i, f) in config.frontends.iter().enumerate() {
        let lookup = |name: &str, path: String, issues: &mut Vec<Issue>| match by_name.get(name) {
            Some(backend) => Some(Arc::clone(backend)),
            None => {
                issues.push(Issue::new(path, format!("no backend named {name:?}")));
                None
            }
        };
        let default_backend = f
            .default_backend
            .as_deref()
            .and_then(|name| lookup(name, format!("frontends[{i}].default_backend"), &mut issues));
        // A tcp frontend's routes match the TLS server name: compiled apart (sni_routes).
        let http_routes = if f.mode == config::Mode::Http { &f.routes[..] } else { &[] };
        let mut routes = Vec::with_capacity(http_routes.len());
        for (j, r) in http_routes.iter().enumerate() {
            let path = format!("frontends[{i}].routes[{j}]");
            let action = if let Some(name) = &r.backend {
                lookup(name, format!("{path}.backend"), &mut issues).map(RouteAction::Backend)
            } else {
                super::route_action::compile(r, &path, &mut issues)
            };
            if let Some(action) = action {
                routes.push(Route::with_action(&r.matches, action));
            }
        }
        let previous = carry.frontends.get(f.name.as_str());
        let limiter = match f.max_connections {
            // Validation caps it far lower; tokio would panic here.
            Some(limit) if limit > Semaphore::MAX_PERMITS => {
                issues.push(Issue::new(format!("frontends[{i}].max_connections"), "too large"));
                None
            }
            Some(limit) => Some(
                previous
                    .filter(|prev| prev.max_connections == Some(limit))
                    .and_then(|prev| prev.limiter.clone())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(limit))),
            ),
            None => None,
        };
        let max_header_bytes = f.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        let tls = super::tls::compile(i, f, &mut issues);
        let sni_routes = super::sni_route::compile(i, f, &by_name, previous.copied(), &mut issues);
        frontends.push(Arc::new(Frontend {
            name: f.name.clone(),
            binds: f.bind.addrs().to_vec(),
            mode: f.mode,
            limiter,
            max_connections: f.max_connections,
            routes: RouteTable::new(routes),
            sni_routes,
            default_backend,
            timeouts: f.timeouts.resolve(global),
            max_header_bytes,
            http: (f.mode == crate::config::Mode::Http).then(|| super::server_settings(max_header_bytes)),
            access_log: f.access_log,
            compress_min_size: f.compression.as_ref().map(|c| c.min_size.unwrap_or(1024)),
            proxy_protocol: f.proxy_protocol,
            forward_proxy: f.forward_proxy.as_ref().map(|forward| {
                let ports = forward.connect_ports.as_deref().unwrap_or(&[443]);
                Arc::new(crate::proxy::http::forward_proxy::ForwardProxy::new(forward.allow.clone(), ports))
            }),
            needs_local: config.backends.iter().flat_map(|b| &b.servers).any(|s| s.send_proxy.is_some()),
            rate_limit: f.rate_limit.as_ref().map(|limit| {
                let per = limit.per.map_or(std::time::Duration::from_secs(1), |d| d.0);
                super::rate_limit::Limit::new(limit.requests, per, limit.burst.unwrap_or(limit.requests))
            }),
            tls,
            stats: previous.map(|p| Arc::clone(&p.stats)).unwrap_or_default(),
        }));
    }

    let admin = config.admin.as_ref().map(|a| a.bind.addr());
    if !issues.is_empty() {
        return Err(ConfigError::Invalid(issues));
    }
    Ok(Snapshot {
        generation: previous.map_or(1, |p| p.generation + 1),
        drain: global.drain,
        config,
        frontends,
        backends,
        admin,
        discovered,
    })
}

/// One server an entry of `servers:` stands for.
struct Found {
    name: String,
    address: std::net::SocketAddr,
    weight: u32,
    backup: bool,
    /// An SRV target's host name, for TLS.
    tls_host: Option<Arc<str>>,
}

/// Discovery may bring more members than the file could list: scales their weights
/// down (none below 1) so the consistent-hash ring stays within the size validation
/// allows a file.
fn fit_ring(backend: &str, members: &mut [Member]) {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    if total <= config::MAX_RING_WEIGHT {
        return;
    }
    for member in members.iter_mut() {
        member.weight = ((u64::from(member.weight) * config::MAX_RING_WEIGHT / total) as u32).max(1);
    }
    tracing::warn!(backend, total, "discovered servers' weights scaled down to fit the consistent-hash ring");
}

/// State found in the previous snapshot, by identity.
#[derive(Default)]
struct Carry<'a> {
    servers: HashMap<ServerKey, Arc<ServerState>>,
    backends: HashMap<&'a str, Arc<BackendStats>>,
    frontends: HashMap<&'a str, &'a Frontend>,
    /// HTTP caches by backend name: kept (entries and all) while the settings stay.
    caches: HashMap<&'a str, Arc<crate::proxy::http::cache::HttpCache>>,
}

impl<'a> Carry<'a> {
    fn from(previous: Option<&'a Snapshot>) -> Self {
        let Some(prev) = previous else { return Carry::default() };
        Carry {
            servers: prev
                .backends
                .iter()
                .flat_map(|b| b.members.iter().map(|m| (m.state.key.clone(), Arc::clone(&m.state))))
                .collect(),
            backends: prev.backends.iter().map(|b| (b.name.as_str(), Arc::clone(&b.stats))).collect(),
            frontends: prev.frontends.iter().map(|f| (f.name.as_str(), f.as_ref())).collect(),
            caches: (prev.backends.iter())
                .filter_map(|b| Some((b.name.as_str(), Arc::clone(b.cache.as_ref()?))))
                .collect(),
        }
    }
}
