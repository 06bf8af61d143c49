//! Rate limits per client address (`frontends[].rate_limit`): a token bucket per
//! client, `burst` tokens deep, refilled at `requests` per `per`; a request finds a
//! token or is answered 429 with `Retry-After`. One table per frontend, shared by
//! all workers (a per-worker table would multiply the limit by the worker count),
//! in shards so that workers rarely meet on a lock, and bounded: a full shard
//! forgets a client whose bucket has refilled (it would start full anyway), or
//! else the one seen least recently.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shards of a table: a power of two, well above the worker count.
const SHARDS: usize = 64;

/// Clients a table remembers at most (about 48 bytes each, so ~5 MiB).
pub const MAX_CLIENTS: usize = 100_000;

/// A frontend's limit: `rate` tokens a second, `burst` at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size: requests a client may send at once after a quiet spell.
    pub burst: f64,
}

impl Limit {
    /// `requests` per `per`, up to `burst` at once.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Self {
        Limit { rate: f64::from(requests) / per.as_secs_f64(), burst: f64::from(burst.max(1)) }
    }
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// Tokens now, at most `burst`.
    fn refilled(&self, limit: &Limit, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * limit.rate).min(limit.burst)
    }
}

/// The clients of one frontend and their buckets.
#[derive(Debug)]
pub struct RateTable {
    shards: Box<[Mutex<HashMap<IpAddr, Bucket>>]>,
    per_shard: usize,
}

impl Default for RateTable {
    fn default() -> Self {
        RateTable::with_capacity(MAX_CLIENTS)
    }
}

impl RateTable {
    /// A table remembering at most about `clients` clients.
    pub fn with_capacity(clients: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        RateTable { shards, per_shard: clients.div_ceil(SHARDS).max(1) }
    }

    /// Takes a token for `client` under `limit`: `Ok` when it had one, else how
    /// long until it will.
    pub fn check(&self, client: IpAddr, limit: &Limit, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[shard_of(client)];
        let mut buckets = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = match buckets.get(&client) {
            Some(bucket) => bucket.refilled(limit, now),
            None => {
                if buckets.len() >= self.per_shard {
                    evict(&mut buckets, limit, now);
                }
                limit.burst
            }
        };
        if tokens >= 1.0 {
            buckets.insert(client, Bucket { tokens: tokens - 1.0, at: now });
            Ok(())
        } else {
            buckets.insert(client, Bucket { tokens, at: now });
            Err(Duration::from_secs_f64((1.0 - tokens) / limit.rate))
        }
    }

    /// Clients remembered right now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().map_or(0, |buckets| buckets.len())).sum()
    }

    /// True when no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shard_of(client: IpAddr) -> usize {
    let bytes = match client {
        IpAddr::V4(v4) => u128::from(u32::from(v4)).to_le_bytes(),
        IpAddr::V6(v6) => u128::from(v6).to_le_bytes(),
    };
    (crate::balance::hash_key(&bytes) as usize) & (SHARDS - 1)
}

/// Makes room in a full shard: every client whose bucket has refilled goes (it
/// would start full if it came back); if none has, the one seen least recently.
fn evict(buckets: &mut HashMap<IpAddr, Bucket>, limit: &Limit, now: Instant) {
    let before = buckets.len();
    buckets.retain(|_, bucket| bucket.refilled(limit, now) < limit.burst);
    if buckets.len() < before {
        return;
    }
    if let Some(oldest) = buckets.iter().min_by_key(|(_, bucket)| bucket.at).map(|(client, _)| *client) {
        buckets.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_then_the_rate_and_a_wait_until_the_next_token() {
        let table = RateTable::default();
        let limit = Limit::new(10, Duration::from_secs(1), 3);
        let start = Instant::now();
        for n in 0..3 {
            assert_eq!(table.check(ip(1), &limit, start), Ok(()), "request {n} of the burst");
        }
        let wait = table.check(ip(1), &limit, start).unwrap_err();
        assert!((Duration::from_millis(99)..=Duration::from_millis(101)).contains(&wait), "{wait:?}");
        // Another client has its own bucket.
        assert_eq!(table.check(ip(2), &limit, start), Ok(()));
        // 100 ms later: one token back, one request.
        let later = start + Duration::from_millis(100);
        assert_eq!(table.check(ip(1), &limit, later), Ok(()));
        assert!(table.check(ip(1), &limit, later).is_err());
        // A long quiet spell refills to the burst, not beyond.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(table.check(ip(1), &limit, much_later), Ok(()));
        }
        assert!(table.check(ip(1), &limit, much_later).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let table = RateTable::with_capacity(SHARDS * 4);
        let limit = Limit::new(1, Duration::from_secs(1), 1);
        let start = Instant::now();
        for n in 0..50_000u32 {
            let client = IpAddr::from(n.to_be_bytes());
            let _ = table.check(client, &limit, start + Duration::from_millis(u64::from(n)));
        }
        assert!(table.len() <= SHARDS * 4, "{} clients remembered", table.len());
    }

    #[test]
    fn a_full_shard_forgets_refilled_clients_first_then_the_least_recent() {
        let limit = Limit::new(1, Duration::from_secs(1), 1);
        let now = Instant::now();
        let refilled = Bucket { tokens: 0.0, at: now - Duration::from_secs(10) };
        let limited = Bucket { tokens: 0.0, at: now - Duration::from_millis(500) };
        let recent = Bucket { tokens: 0.0, at: now };
        let mut buckets = HashMap::from([(ip(1), refilled), (ip(2), limited), (ip(3), recent)]);
        evict(&mut buckets, &limit, now);
        assert!(!buckets.contains_key(&ip(1)) && buckets.len() == 2, "the refilled one goes");
        evict(&mut buckets, &limit, now);
        assert_eq!(buckets.keys().collect::<Vec<_>>(), [&ip(3)], "then the least recent");
    }
}
