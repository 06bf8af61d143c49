//! `/metrics`: the Prometheus text exposition, built at scrape time from the
//! current snapshot's atomics — the same counters the data path updates, so there is
//! no second set to drift. Frontends and servers a reload removed are simply not in
//! the snapshot any more, so their series disappear; kept ones carry their state
//! across reloads, so their counters never reset.

use std::sync::atomic::Ordering::Relaxed;

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::cluster::LiveView;
use crate::cluster::Snapshot;
use crate::config::Mode;
use crate::upstream::AdminState;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Renders every metric as Prometheus text.
pub fn render(live: &LiveView) -> String {
    let snapshot = live.snapshot();
    let registry = Registry::new();
    let mut families = Families { registry: &registry };

    let build = families.gauge("fulcrum_build_info", "Fulcrum build; always 1.", &["version"]);
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    families
        .gauge("fulcrum_config_generation", "Config generation served (first load = 1).", &[])
        .with_label_values(&[])
        .set(snapshot.generation as i64);
    let reloads = families.counter("fulcrum_config_reloads_total", "Config reloads by result.", &["result"]);
    reloads.with_label_values(&["success"]).inc_by(live.reloads().succeeded.load(Relaxed));
    reloads.with_label_values(&["failure"]).inc_by(live.reloads().failed.load(Relaxed));
    families
        .gauge("fulcrum_config_last_reload_success", "1 if the last reload applied, else 0.", &[])
        .with_label_values(&[])
        .set(i64::from(live.reloads().last_ok.load(Relaxed)));
    let writes =
        families.counter("fulcrum_admin_writes_total", "Admin API writes by action and result.", &["action", "result"]);
    for (action, result, count) in super::write::counts(live) {
        writes.with_label_values(&[action, result]).inc_by(count);
    }
    families
        .gauge("fulcrum_draining", "1 once graceful shutdown started.", &[])
        .with_label_values(&[])
        .set(i64::from(live.draining()));

    let (cap, open) = live.connections();
    families
        .gauge(
            "fulcrum_connection_cap",
            "Client connections the process accepts at once (from the open-file limit).",
            &[],
        )
        .with_label_values(&[])
        .set(i64::try_from(cap).unwrap_or(i64::MAX));
    families
        .gauge("fulcrum_open_connections", "Client connections open now, across every frontend.", &[])
        .with_label_values(&[])
        .set(i64::try_from(open).unwrap_or(i64::MAX));
    let per_worker =
        families.gauge("fulcrum_worker_connections", "Client connections open on each worker thread.", &["worker"]);
    for (worker, load) in live.worker_loads().into_iter().enumerate() {
        per_worker.with_label_values(&[&worker.to_string()]).set(i64::try_from(load).unwrap_or(i64::MAX));
    }

    frontends(&mut families, &snapshot);
    backends(&mut families, &snapshot);
    caches(&mut families, &snapshot);
    discovery(&mut families, &snapshot);

    families.register(prometheus::process_collector::ProcessCollector::for_self());
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding into a Vec cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Each `discover` entry: its members now and its failed lookups.
fn discovery(families: &mut Families, snapshot: &Snapshot) {
    let labels = &["backend", "name"];
    let servers =
        families.gauge("fulcrum_discovery_servers", "Servers a discovered name currently resolves to.", labels);
    let errors = families.counter(
        "fulcrum_discovery_errors_total",
        "Failed resolutions of a discovered name (the last good set is held).",
        labels,
    );
    for entry in snapshot.discovered.report() {
        let labels = [entry.key.backend.as_str(), entry.key.server.as_str()];
        servers.with_label_values(&labels).set(i64::try_from(entry.servers).unwrap_or(i64::MAX));
        errors.with_label_values(&labels).inc_by(entry.errors);
    }
}

/// Each backend cache: lookups by outcome and the bytes it holds.
fn caches(families: &mut Families, snapshot: &Snapshot) {
    let requests = families.counter(
        "fulcrum_cache_requests_total",
        "HTTP cache lookups: hit (answered from the cache), stale (revalidated with a server), miss (fetched), \
         bypass (not for the cache: other methods, ranges, no-store).",
        &["backend", "result"],
    );
    let bytes = families.gauge("fulcrum_cache_bytes", "Bytes held by the HTTP cache (heads and bodies).", &["backend"]);
    for b in &snapshot.backends {
        let Some(cache) = &b.cache else { continue };
        for (result, count) in cache.counters().labelled() {
            requests.with_label_values(&[b.name.as_str(), result]).inc_by(count.load(Relaxed));
        }
        bytes.with_label_values(&[b.name.as_str()]).set(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
    }
}

fn frontends(families: &mut Families, snapshot: &Snapshot) {
    let labels = &["frontend"];
    let connections = families.counter("fulcrum_frontend_connections_total", "Accepted client connections.", labels);
    let active = families.gauge("fulcrum_frontend_active_connections", "Open client connections.", labels);
    let idle = families.gauge(
        "fulcrum_frontend_idle_connections",
        "Open HTTP/1.1 client connections between requests (they hold no buffer).",
        labels,
    );
    let rejected = families.counter(
        "fulcrum_frontend_rejected_connections_total",
        "Connections refused at the frontend's max_connections or the process-wide connection cap.",
        labels,
    );
    let requests = families.counter("fulcrum_frontend_http_requests_total", "HTTP requests received.", labels);
    let rate_limited =
        families.counter("fulcrum_frontend_rate_limited_total", "Requests answered 429 by the rate limit.", labels);
    let proxy_refused = families.counter(
        "fulcrum_frontend_proxy_protocol_refused_total",
        "Connections closed for their PROXY protocol header: invalid, too_large, closed (before it was whole), timeout.",
        &["frontend", "reason"],
    );
    let received = families.counter("fulcrum_frontend_received_bytes_total", "Bytes received from clients.", labels);
    let sent = families.counter("fulcrum_frontend_sent_bytes_total", "Bytes sent to clients.", labels);
    let sendfile = families.counter(
        "fulcrum_frontend_sendfile_bytes_total",
        "Of the bytes sent to clients, file bytes sent with sendfile (static routes over plain HTTP/1.1).",
        labels,
    );
    let responses = families.counter(
        "fulcrum_frontend_http_responses_total",
        "HTTP responses sent by class, including those made before routing (400, 408, 431).",
        &["frontend", "code"],
    );
    let client_timeouts = families.counter(
        "fulcrum_frontend_client_timeouts_total",
        "HTTP connections and requests ended by a client-side limit: first_request (no byte within request_header), \
         head and body (408), idle (keep-alive or h2c idle for client), send (client stopped reading).",
        &["frontend", "limit"],
    );
    let handshakes = families.counter(
        "fulcrum_tls_handshakes_total",
        "TLS handshakes on TLS frontends: result ok by negotiated version, failed (version unknown).",
        &["frontend", "version", "result"],
    );
    let expiry = families.gauge(
        "fulcrum_tls_certificate_expiry_timestamp_seconds",
        "notAfter of each served certificate (unix time), by its first name.",
        &["frontend", "name"],
    );
    let passthrough_refused = families.counter(
        "fulcrum_frontend_tls_passthrough_refused_total",
        "tcp frontends routing by SNI: connections closed because their first bytes were no routable ClientHello \
         (invalid: not TLS or inconsistent lengths, too_large, timeout: not complete within request_header, \
         closed: the client went away first).",
        &["frontend", "reason"],
    );
    for f in &snapshot.frontends {
        let name = [f.name.as_str()];
        let s = &f.stats;
        if let Some(routes) = &f.sni_routes {
            for (reason, count) in routes.refused.labelled() {
                passthrough_refused.with_label_values(&[f.name.as_str(), reason]).inc_by(count.load(Relaxed));
            }
        }
        if let Some(tls) = &f.tls {
            for (version, result, count) in s.tls_handshakes.labelled() {
                handshakes.with_label_values(&[f.name.as_str(), version, result]).inc_by(count.load(Relaxed));
            }
            for cert in &tls.certificates {
                expiry.with_label_values(&[f.name.as_str(), cert.name.as_str()]).set(cert.not_after);
            }
        }
        connections.with_label_values(&name).inc_by(s.connections_total.load(Relaxed));
        active.with_label_values(&name).set(s.active_connections.load(Relaxed) as i64);
        idle.with_label_values(&name).set(s.idle_connections.load(Relaxed) as i64);
        rejected.with_label_values(&name).inc_by(s.rejected_connections.load(Relaxed));
        requests.with_label_values(&name).inc_by(s.http_requests.load(Relaxed));
        rate_limited.with_label_values(&name).inc_by(s.rate_limited.load(Relaxed));
        if f.proxy_protocol {
            let reasons = crate::proxy::proxy_protocol::REFUSAL_REASONS.iter().zip(&s.proxy_protocol_refused);
            for (reason, count) in reasons {
                proxy_refused.with_label_values(&[f.name.as_str(), reason]).inc_by(count.load(Relaxed));
            }
        }
        received.with_label_values(&name).inc_by(s.received_bytes.load(Relaxed));
        sent.with_label_values(&name).inc_by(s.sent_bytes.load(Relaxed));
        sendfile.with_label_values(&name).inc_by(s.sendfile_bytes.load(Relaxed));
        for (class, count) in CLASSES.iter().zip(&s.responses) {
            responses.with_label_values(&[f.name.as_str(), class]).inc_by(count.load(Relaxed));
        }
        if f.mode == Mode::Http {
            for (limit, count) in s.client_timeouts.labelled() {
                client_timeouts.with_label_values(&[f.name.as_str(), limit]).inc_by(count.load(Relaxed));
            }
        }
    }
}

fn backends(families: &mut Families, snapshot: &Snapshot) {
    let responses = families.counter(
        "fulcrum_backend_http_responses_total",
        "HTTP responses sent by class, balancer-made errors included.",
        &["backend", "code"],
    );
    let up_servers = families.gauge("fulcrum_backend_up_servers", "Servers currently up.", &["backend"]);
    let retries =
        families.counter("fulcrum_backend_retries_total", "Failed attempts retried on another server.", &["backend"]);
    let queue_length =
        families.gauge("fulcrum_backend_queue_length", "Requests/connections waiting for a server.", &["backend"]);
    let queue_refused = families.counter(
        "fulcrum_backend_queue_timeouts_total",
        "Waits that ended in 503 (timeout, full queue, or an expected wait past the timeout).",
        &["backend"],
    );
    let labels = &["backend", "server"];
    let up = families.gauge("fulcrum_server_up", "1 if the server takes traffic, else 0.", labels);
    let weight = families.gauge("fulcrum_server_weight", "Configured weight (0 = no new traffic).", labels);
    let active = families.gauge("fulcrum_server_active_connections", "Open connections to the server.", labels);
    let connections = families.counter("fulcrum_server_connections_total", "Connections opened to the server.", labels);
    let requests = families.counter("fulcrum_server_http_requests_total", "HTTP requests sent to the server.", labels);
    let connect_errors = families.counter("fulcrum_server_connect_errors_total", "Failed connects.", labels);
    let checks = families.counter("fulcrum_server_checks_total", "Health probes run.", labels);
    let check_failures = families.counter("fulcrum_server_check_failures_total", "Failed health checks.", labels);
    let changes = families.counter("fulcrum_server_state_changes_total", "up<->down transitions.", labels);
    let ejections = families.counter("fulcrum_server_ejections_total", "Outlier ejections.", labels);
    let admin_state = families.gauge(
        "fulcrum_server_admin_state",
        "1 for the server's admin state (ready, drain, maint), 0 for the others.",
        &["backend", "server", "state"],
    );
    let ejected = families.gauge("fulcrum_server_ejected", "1 while ejected by outlier detection.", labels);
    let idle = families.gauge(
        "fulcrum_server_idle_pooled_connections",
        "Idle keep-alive connections pooled for reuse.",
        labels,
    );
    for b in &snapshot.backends {
        for (class, count) in CLASSES.iter().zip(&b.stats.responses) {
            responses.with_label_values(&[b.name.as_str(), class]).inc_by(count.load(Relaxed));
        }
        up_servers.with_label_values(&[b.name.as_str()]).set(b.up_servers() as i64);
        retries.with_label_values(&[b.name.as_str()]).inc_by(b.stats.retries.load(Relaxed));
        families.histogram(b.stats.response_duration.clone());
        let queue = &b.stats.queue;
        queue_length.with_label_values(&[b.name.as_str()]).set(queue.len() as i64);
        queue_refused.with_label_values(&[b.name.as_str()]).inc_by(queue.refused.load(Relaxed));
        if b.queue.is_some() {
            families.histogram(queue.wait.clone());
        }
        for m in &b.members {
            let s = &m.state;
            let names = [b.name.as_str(), m.name.as_str()];
            up.with_label_values(&names).set(i64::from(s.is_up()));
            weight.with_label_values(&names).set(i64::from(m.weight));
            active.with_label_values(&names).set(s.active() as i64);
            connections.with_label_values(&names).inc_by(s.connections_total.load(Relaxed));
            requests.with_label_values(&names).inc_by(s.requests_total.load(Relaxed));
            connect_errors.with_label_values(&names).inc_by(s.connect_errors.load(Relaxed));
            checks.with_label_values(&names).inc_by(s.checks_total.load(Relaxed));
            check_failures.with_label_values(&names).inc_by(s.check_failures.load(Relaxed));
            changes.with_label_values(&names).inc_by(s.state_changes.load(Relaxed));
            ejections.with_label_values(&names).inc_by(s.ejections.load(Relaxed));
            let current = s.admin.get().state;
            for state in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
                let labels = [b.name.as_str(), m.name.as_str(), state.as_str()];
                admin_state.with_label_values(&labels).set(i64::from(state == current));
            }
            ejected.with_label_values(&names).set(i64::from(s.is_ejected()));
            idle.with_label_values(&names).set(s.pool.idle_count() as i64);
            families.histogram(s.response_duration.clone());
            if b.health_check.is_some() {
                families.histogram(s.check_duration.clone());
            }
        }
    }
}

/// Registers metric families into the scrape's registry.
struct Families<'a> {
    registry: &'a Registry,
}

impl Families<'_> {
    fn counter(&mut self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name and labels");
        self.register(vec.clone());
        vec
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name and labels");
        self.register(vec.clone());
        vec
    }

    /// A histogram that lives in the cluster state (shared with the data path).
    fn histogram(&mut self, histogram: prometheus::Histogram) {
        self.register(histogram);
    }

    fn register(&mut self, collector: impl Collector + 'static) {
        if let Err(err) = self.registry.register(Box::new(collector)) {
            tracing::error!(error = %err, "metric registration failed; series omitted from this scrape");
        }
    }
}
