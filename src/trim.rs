//! Giving memory back after a burst. glibc's allocator keeps what a burst of
//! connections freed (per-thread arenas, pages in the middle of the heap), so the
//! process would stay at its peak size for good; `malloc_trim` returns those free
//! pages to the kernel. It walks the heap, so it runs only once the load (open
//! connections plus requests received in the last interval) has dropped well below
//! the peak seen since the last trim, on the blocking pool. Requests count too:
//! after a burst of requests on kept-alive connections the connections stay, but
//! what their requests used was freed.

use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::cluster::Live;

/// How often the load is looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// How long after the end of a burst the trim waits: the burst's kept-alive
/// connections first set their buffers aside (after 1 s idle, see
/// `proxy::http::PARK_AFTER`), so their memory is free when the heap is walked.
const SETTLE: Duration = Duration::from_millis(1500);

/// Load (connections and requests) that must have ended since the peak before a
/// trim is worth its walk.
const MIN_DROP: usize = 256;

/// Decides when to trim: after a load fell to `keep` quarters of its peak since
/// the last trim, and by at least `MIN_DROP` (256).
#[derive(Debug)]
pub struct TrimPolicy {
    peak: usize,
    keep: usize,
}

impl TrimPolicy {
    /// Open connections: they hardly swing under a steady load, so a quarter of
    /// them closing is the end of a burst.
    pub fn connections() -> Self {
        TrimPolicy { peak: 0, keep: 3 }
    }

    /// Requests per interval: these swing under a steady load, so only a fall to a
    /// quarter is the end of a burst (a trim holds the allocator's lock while it
    /// walks the heap: not something to do every few seconds under load).
    pub fn requests() -> Self {
        TrimPolicy { peak: 0, keep: 1 }
    }

    /// Records the load now; true when memory should be trimmed now.
    pub fn observe(&mut self, load: usize) -> bool {
        self.peak = self.peak.max(load);
        let dropped = self.peak - load;
        if dropped >= MIN_DROP && load.saturating_mul(4) <= self.peak.saturating_mul(self.keep) {
            self.peak = load;
            true
        } else {
            false
        }
    }

    /// A trim happened for another reason: the peak starts again from `load`.
    pub fn reset(&mut self, load: usize) {
        self.peak = load;
    }
}

/// Trims after bursts of `tasks` (the connection tasks) or of requests to the
/// servers of `live`'s snapshot, until the instance has finished.
pub async fn after_bursts(tasks: TaskTracker, live: Arc<Live>) {
    let finished = live.finished.clone();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut by_connections, mut by_requests) = (TrimPolicy::connections(), TrimPolicy::requests());
    let mut last_requests = 0;
    loop {
        tokio::select! {
            _ = finished.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // Requests since the last look: a burst on kept-alive connections leaves
        // the connections open but frees what its requests used.
        let snapshot = live.snapshot.load_full();
        let requests: u64 = snapshot.frontends.iter().map(|f| f.stats.http_requests.load(Relaxed)).sum();
        let recent = usize::try_from(requests.saturating_sub(last_requests)).unwrap_or(usize::MAX);
        last_requests = requests;
        let open = tasks.len();
        // Both observed every time, so each keeps its own peak.
        let due = by_connections.observe(open) | by_requests.observe(recent);
        if due {
            by_connections.reset(open);
            by_requests.reset(recent);
            tokio::select! {
                _ = finished.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
            match tokio::task::spawn_blocking(trim).await {
                Ok(released) => tracing::debug!(released, "returned free memory to the kernel"),
                Err(err) => tracing::warn!(%err, "memory trim failed"),
            }
        }
    }
}

/// Returns free heap memory to the kernel; true when some was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim only hands free pages back; it touches no live allocation.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::TrimPolicy;

    #[test]
    fn trims_once_after_connections_close_and_not_on_small_swings() {
        let mut policy = TrimPolicy::connections();
        assert!(!policy.observe(8000), "rising: nothing to give back");
        assert!(!policy.observe(7000), "a small dip");
        assert!(policy.observe(100), "the burst is over");
        assert!(!policy.observe(100), "already trimmed");
        assert!(!policy.observe(300), "a few new connections");
        assert!(!policy.observe(100), "too few ended to be worth a walk of the heap");
        assert!(policy.observe(0), "all of them closed");
    }

    #[test]
    fn request_rates_trim_only_when_a_burst_is_over() {
        let mut policy = TrimPolicy::requests();
        assert!(!policy.observe(30_000));
        assert!(!policy.observe(20_000), "a steady load swings");
        assert!(!policy.observe(9_000), "still under load");
        assert!(policy.observe(0), "the burst is over");
        assert!(!policy.observe(0));
    }
}
