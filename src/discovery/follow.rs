//! One task per `discover` entry: look the name up, record its members, wait for
//! its TTL (clamped, with jitter), again, until the entry leaves the config.

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lookup::{self, LookupError};
use crate::cluster::discovered::{Discovered, EntryKey};

/// The `resolver:` timings, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the last good set is kept while lookups fail.
    pub hold: Duration,
    /// Bounds on the time between lookups.
    pub min_ttl: Duration,
    /// See `min_ttl`.
    pub max_ttl: Duration,
}

impl Timing {
    /// When to look up again after an answer with `ttl`: clamped to
    /// [min_ttl, max_ttl], then up to 10% earlier, so entries and instances that
    /// started together do not ask the name servers in lockstep.
    pub fn after_answer(&self, ttl: Duration, jitter: f64) -> Duration {
        let wait = ttl.clamp(self.min_ttl, self.max_ttl);
        wait.mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0)).max(self.min_ttl.min(wait))
    }

    /// When to try again after a failed lookup: soon (min_ttl, at least 100 ms),
    /// so an entry recovers quickly once its name servers answer again.
    pub fn after_error(&self) -> Duration {
        self.min_ttl.max(Duration::from_millis(100))
    }
}

/// Where a task reports to.
pub struct Follow {
    /// The entry.
    pub key: EntryKey,
    /// The resolver (or why there is none: then every lookup fails).
    pub resolver: Result<Arc<TokioResolver>, String>,
    /// See [`Timing`].
    pub timing: Timing,
    /// Where answers go.
    pub discovered: Arc<Discovered>,
    /// Told when an entry's members changed: the snapshot must be compiled again.
    pub changed: Arc<Notify>,
    /// Cancelled when the entry leaves the config or the process stops.
    pub stop: CancellationToken,
}

impl Follow {
    /// Runs until `stop`.
    pub async fn run(self) {
        // Since when lookups have failed without a good answer in between.
        let mut failing_since: Option<Instant> = None;
        let mut round: u64 = 0;
        loop {
            let result = match &self.resolver {
                Ok(resolver) => tokio::select! {
                    _ = self.stop.cancelled() => return,
                    result = lookup::lookup(resolver, &self.key) => result,
                },
                Err(why) => Err(LookupError::NoResolver(why.clone())),
            };
            round += 1;
            let wait = match result {
                Ok(answer) => {
                    if failing_since.take().is_some() {
                        tracing::info!(backend = %self.key.backend, server = %self.key.server, "discovery answers again");
                    }
                    let found = answer.targets.len();
                    if self.discovered.set(&self.key, answer.targets) {
                        tracing::info!(backend = %self.key.backend, server = %self.key.server, servers = found, "discovered servers changed");
                        self.changed.notify_one();
                    }
                    self.timing.after_answer(answer.ttl, jitter(&self.key, round))
                }
                Err(err) => {
                    self.discovered.count_error(&self.key);
                    let now = Instant::now();
                    let since = *failing_since.get_or_insert_with(|| {
                        tracing::warn!(backend = %self.key.backend, server = %self.key.server, error = %err, hold = ?self.timing.hold, "discovery lookup failed; holding the last good servers");
                        now
                    });
                    // Held long enough: the name is really gone (or empty).
                    if now.duration_since(since) >= self.timing.hold && self.discovered.set(&self.key, Vec::new()) {
                        tracing::warn!(backend = %self.key.backend, server = %self.key.server, "discovery failed for longer than hold; its servers removed");
                        self.changed.notify_one();
                    }
                    self.timing.after_error()
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A number in [0, 1) that differs between entries, rounds and processes.
fn jitter(key: &EntryKey, round: u64) -> f64 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one((key, round));
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing =
        Timing { hold: Duration::from_secs(30), min_ttl: Duration::from_secs(5), max_ttl: Duration::from_secs(60) };

    #[test]
    fn the_ttl_is_clamped_and_jittered_at_most_ten_percent_earlier() {
        assert_eq!(TIMING.after_answer(Duration::from_secs(1), 0.0), Duration::from_secs(5));
        assert_eq!(TIMING.after_answer(Duration::from_secs(3600), 0.0), Duration::from_secs(60));
        assert_eq!(TIMING.after_answer(Duration::from_secs(30), 1.0), Duration::from_secs(27));
        // Never below min_ttl, jitter or not.
        assert_eq!(TIMING.after_answer(Duration::from_secs(5), 1.0), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_in_range() {
        let key = EntryKey {
            backend: "b".into(),
            server: "s".into(),
            kind: crate::config::Discover::Dns,
            address: "a.test:1".into(),
        };
        assert!((0..100).map(|round| jitter(&key, round)).all(|j| (0.0..1.0).contains(&j)));
    }
}
