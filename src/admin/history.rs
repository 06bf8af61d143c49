//! The last 15 minutes per backend, sampled every second from the counters the
//! data path keeps anyway: requests/s, 5xx/s, and p50/p99 of the response time
//! (from the second's share of the response-time histogram). A fixed ring per
//! backend (900 samples of 16 bytes: ~14 KiB), so memory is bounded whatever
//! runs; served at `/api/history` and drawn on the status page.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::cluster::Backend;
use crate::upstream::DURATION_BUCKETS;

/// Samples kept: 15 minutes at one a second.
pub const SAMPLES: usize = 900;

/// One second of one backend.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Unix time (s) of the sample.
    pub at: u64,
    /// Responses per second.
    pub rps: f32,
    /// 5xx responses per second (balancer-made ones included).
    pub errors: f32,
    /// Median response time, ms (0 without responses).
    pub p50_ms: f32,
    /// 99th percentile response time, ms.
    pub p99_ms: f32,
}

/// What a backend's counters read at the last sample.
#[derive(Debug, Clone, Default)]
struct Last {
    responses: u64,
    errors: u64,
    buckets: Vec<u64>,
}

/// The rings of every backend.
#[derive(Debug, Default)]
pub struct History {
    by_backend: HashMap<String, (Last, VecDeque<Sample>)>,
}

impl History {
    /// Takes one sample of each backend, `elapsed` seconds after the last; forgets
    /// backends that left the config.
    pub fn sample(&mut self, backends: &[std::sync::Arc<Backend>], at: u64, elapsed: f64) {
        self.by_backend.retain(|name, _| backends.iter().any(|b| &b.name == name));
        for backend in backends {
            let responses: u64 =
                backend.stats.responses.iter().map(|c| c.load(std::sync::atomic::Ordering::Relaxed)).sum();
            let errors = backend.stats.responses[4].load(std::sync::atomic::Ordering::Relaxed);
            let buckets = cumulative_buckets(&backend.stats.response_duration);
            let (last, ring) = self.by_backend.entry(backend.name.clone()).or_insert_with(|| {
                (Last { responses, errors, buckets: buckets.clone() }, VecDeque::with_capacity(SAMPLES))
            });
            let new_buckets: Vec<u64> = buckets
                .iter()
                .zip(last.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect();
            let per_second = |now: u64, then: u64| (now.saturating_sub(then) as f64 / elapsed.max(0.001)) as f32;
            let sample = Sample {
                at,
                rps: per_second(responses, last.responses),
                errors: per_second(errors, last.errors),
                p50_ms: quantile_ms(&new_buckets, 0.50),
                p99_ms: quantile_ms(&new_buckets, 0.99),
            };
            if ring.len() == SAMPLES {
                ring.pop_front();
            }
            ring.push_back(sample);
            *last = Last { responses, errors, buckets };
        }
    }

    /// A backend's samples, oldest first.
    pub fn of(&self, backend: &str) -> Vec<Sample> {
        self.by_backend.get(backend).map(|(_, ring)| ring.iter().copied().collect()).unwrap_or_default()
    }

    /// Every backend's samples.
    pub fn all(&self) -> HashMap<&str, Vec<Sample>> {
        self.by_backend.iter().map(|(name, (_, ring))| (name.as_str(), ring.iter().copied().collect())).collect()
    }
}

/// The histogram's cumulative bucket counts, the +Inf one last.
fn cumulative_buckets(histogram: &prometheus::Histogram) -> Vec<u64> {
    use prometheus::core::Collector;
    let families = histogram.collect();
    let Some(metric) = families.first().and_then(|family| family.get_metric().first()) else { return Vec::new() };
    let h = metric.get_histogram();
    let mut out: Vec<u64> = h.get_bucket().iter().map(|b| b.get_cumulative_count()).collect();
    out.push(h.get_sample_count());
    out
}

/// The `q` quantile, in ms, of one second's responses given as cumulative bucket
/// counts: interpolated within the bucket it falls in (Prometheus's
/// histogram_quantile does the same).
fn quantile_ms(cumulative: &[u64], q: f64) -> f32 {
    let Some(&total) = cumulative.last() else { return 0.0 };
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut below = 0u64;
    for (index, &count) in cumulative.iter().enumerate() {
        let upper_bound = DURATION_BUCKETS.get(index).copied().unwrap_or(f64::INFINITY);
        if count as f64 >= rank {
            if upper_bound.is_infinite() {
                // Beyond the last bound: say the last bound (as Prometheus does).
                return (lower_bound * 1000.0) as f32;
            }
            let in_bucket = (count - below).max(1) as f64;
            let seconds = lower_bound + (upper_bound - lower_bound) * (rank - below as f64) / in_bucket;
            return (seconds * 1000.0) as f32;
        }
        below = count;
        lower_bound = upper_bound;
    }
    (lower_bound * 1000.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        // Bounds 0.5 ms, 1 ms, 2.5 ms ...: 100 responses, all between 1 and 2.5 ms.
        let mut cumulative = vec![0, 0];
        cumulative.extend(std::iter::repeat_n(100, DURATION_BUCKETS.len() - 2 + 1));
        let p50 = quantile_ms(&cumulative, 0.5);
        assert!((1.7..1.8).contains(&p50), "{p50}");
        assert_eq!(quantile_ms(&[0; 16], 0.99), 0.0, "no responses");
    }
}
