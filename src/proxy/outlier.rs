//! Outlier detection (passive health): failures seen in live traffic — 5xx
//! answers, connect errors, resets, timeouts — eject a server after
//! `consecutive_failures` of them in a row, for `ejection_time`, doubled for each
//! further ejection (up to 10x) until a healthy spell; at most
//! `max_ejected_percent` of the backend's servers (rounded up, so one server of
//! two can be) are out at once. An ejected server gets no new traffic; once the
//! time is up it comes back through slow start (see `ServerState::is_ejected`).

use crate::cluster::Backend;
use crate::log_limit::LogLimit;

/// Ejections refused because enough servers are out already.
static AT_MAX: LogLimit = LogLimit::per_second();

/// Records how an attempt on server `index` of `backend` went; ejects it when
/// this failure completes a run of `consecutive_failures`.
pub fn record(backend: &Backend, index: usize, failed: bool) {
    let Some(settings) = &backend.outlier else { return };
    let member = &backend.members[index];
    if !member.state.record_outcome(failed, settings.consecutive_failures) {
        return;
    }
    let _deciding = backend.stats.ejecting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if member.state.is_ejected() {
        return;
    }
    let out = backend.members.iter().filter(|m| m.state.is_ejected()).count();
    let allowed = (backend.members.len() * settings.max_ejected_percent as usize).div_ceil(100);
    if out >= allowed {
        if let Some(repeats) = AT_MAX.check() {
            tracing::warn!(backend = %backend.name, server = %member.name, ejected = out, "server failing, but max_ejected_percent of the backend is ejected already{repeats}");
        }
        return;
    }
    let length = member.state.eject(settings.ejection_time);
    tracing::warn!(
        backend = %backend.name,
        server = %member.name,
        failures = settings.consecutive_failures,
        ejected_for = ?length,
        "server ejected: failing in live traffic"
    );
}
