//! The health task of one server: probe on a ticker, feed the rise/fall machine,
//! publish transitions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::machine::RiseFall;
use super::probe::Probe;
use crate::cluster::CheckSpec;
use crate::config::ProxyVersion;
use crate::upstream::{unix_ms, CheckResult, ServerKey, ServerState};

/// Probes `state`'s server per `spec` (after a PROXY header if it expects one)
/// until `stop` is cancelled.
///
/// A server never checked before is down and gets its first probe within the first
/// eighth of the interval (so it takes traffic soon, but thousands of servers do not
/// all connect in the same millisecond); a server carried over from a previous config
/// resumes from its current state at its own phase of the interval.
pub async fn run(
    state: Arc<ServerState>,
    spec: Arc<CheckSpec>,
    tls_name: Option<ServerName<'static>>,
    send_proxy: Option<ProxyVersion>,
    stop: CancellationToken,
) {
    let fresh = state.checks_total.load(std::sync::atomic::Ordering::Relaxed) == 0 && !state.is_up();
    let mut machine = if fresh {
        RiseFall::new_server(spec.rise, spec.fall)
    } else {
        RiseFall::resume(spec.rise, spec.fall, state.is_up())
    };
    let window = if fresh { spec.interval / 8 } else { spec.interval };
    let first = tokio::time::Instant::now() + phase(&state.key, window);
    let mut ticker = tokio::time::interval_at(first, spec.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let probe = Probe::new(&spec, state.key.address, tls_name).with_send_proxy(send_proxy);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = probe.run() => outcome,
        };
        let ok = outcome.is_ok();
        let detail = match outcome {
            Ok(what) => what,
            Err(err) => err.to_string(),
        };
        if let Some(up) = machine.record(ok) {
            if state.set_up(up) {
                log_transition(&state.key, up, &detail);
                if up {
                    state.offer_to_waiters();
                }
            }
        }
        state.record_check(CheckResult { ok, detail, at_ms: unix_ms(), duration: started.elapsed() });
    }
}

fn log_transition(key: &ServerKey, up: bool, detail: &str) {
    if up {
        tracing::info!(backend = %key.backend, server = %key.server, address = %key.address, check = %detail, "server is UP");
    } else {
        tracing::warn!(backend = %key.backend, server = %key.server, address = %key.address, check = %detail, "server is DOWN");
    }
}

/// A fixed offset within `window` derived from the server's identity, so checks of
/// many servers spread out evenly and the same server keeps its slot.
fn phase(key: &ServerKey, window: Duration) -> Duration {
    let seed = crate::balance::hash_key(format!("{}/{}/{}", key.backend, key.server, key.address).as_bytes());
    let fraction = (seed >> 11) as f64 / (1u64 << 53) as f64;
    window.mul_f64(fraction)
}
