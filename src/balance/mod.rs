//! Server selection. Each algorithm is built once per snapshot from the backend's
//! server list and then picks per connection/request without allocating.

mod consistent_hash;
mod least_conn;
mod power_of_two;
mod round_robin;

use std::sync::Arc;

pub use consistent_hash::ConsistentHash;
pub use least_conn::LeastConn;
pub use power_of_two::PowerOfTwo;
pub use round_robin::RoundRobin;

use crate::config::Balance;
use crate::upstream::ServerState;

/// What a balancer knows of one server: its static config and its live state.
#[derive(Debug, Clone)]
pub struct Member {
    /// Server name (the consistent-hash ring is seeded from it).
    pub name: String,
    /// 0..=256; 0 takes no new traffic.
    pub weight: u32,
    /// Used only when no primary is up.
    pub backup: bool,
    /// Connections allowed at once; 0 = unlimited.
    pub max_connections: u64,
    /// Live health and counters.
    pub state: Arc<ServerState>,
    /// A PROXY protocol header goes first on each connection to the server.
    pub send_proxy: Option<crate::config::ProxyVersion>,
    /// The backend's `slow_start` in ms (0: none): a server that comes up ramps
    /// its weight from 10% to 100% over it.
    pub slow_start_ms: u64,
    /// The name the server is known by in TLS (its address's host as configured),
    /// when its backend speaks TLS to it.
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl Member {
    /// Can take new traffic at all (up, not ejected, weight > 0, below its connection cap).
    #[inline]
    pub fn usable(&self) -> bool {
        self.weight > 0
            && self.state.is_up()
            && (self.max_connections == 0 || self.state.active() < self.max_connections)
            && !self.state.is_ejected()
    }

    /// The share of its weight the server gets now: below 1 while it ramps up
    /// after coming up (`slow_start`), else 1.
    #[inline]
    pub fn ramp(&self) -> f64 {
        self.state.ramp(self.slow_start_ms).unwrap_or(1.0)
    }

    /// Its weight as balancing sees it now (ramped).
    #[inline]
    pub fn effective_weight(&self) -> f64 {
        f64::from(self.weight) * self.ramp()
    }
}

/// Servers a request already tried (connect retries go to another server).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tried {
    bits: [u64; 4],
}

impl Tried {
    /// Marks server `index` as tried. Indices past 255 are not tracked.
    pub fn insert(&mut self, index: usize) {
        if index < 256 {
            self.bits[index / 64] |= 1 << (index % 64);
        }
    }

    /// True when `index` was tried.
    #[inline]
    pub fn contains(&self, index: usize) -> bool {
        index < 256 && self.bits[index / 64] & (1 << (index % 64)) != 0
    }
}

/// Which tier takes traffic now: primaries while any is usable, else backups.
#[inline]
pub fn active_tier_is_backup(members: &[Member]) -> bool {
    !members.iter().any(|m| !m.backup && m.weight > 0 && m.state.is_up())
}

/// True when `members[index]` may be picked for this request.
#[inline]
pub fn eligible(members: &[Member], index: usize, backup_tier: bool, tried: &Tried) -> bool {
    let member = &members[index];
    member.backup == backup_tier && !tried.contains(index) && member.usable()
}

/// One selection algorithm, built for one backend's server list.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Picks the index of an eligible server, or `None` when none is.
    ///
    /// `key` is the hash of the request's hash key (`consistent_hash` only; `None`
    /// when the request lacks it). `members` is the same list the balancer was built from.
    fn pick(&self, members: &[Member], key: Option<u64>, tried: &Tried) -> Option<usize>;
}

/// Builds the balancer `kind` over `members`; `hash_balance_factor` bounds the
/// loads of `consistent_hash`.
pub fn build(kind: Balance, members: &[Member], hash_balance_factor: Option<f64>) -> Box<dyn Balancer> {
    match kind {
        Balance::RoundRobin => Box::new(RoundRobin::new(members)),
        Balance::LeastConn => Box::new(LeastConn::new(members)),
        Balance::ConsistentHash => Box::new(ConsistentHash::new(members, hash_balance_factor)),
        Balance::Random => Box::new(PowerOfTwo::new(members)),
    }
}

/// Hashes key bytes for `consistent_hash` (fixed seed: identical on every instance).
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Members with fresh, up state, for the algorithm tests.
#[cfg(test)]
pub(crate) fn test_members(spec: &[(&str, u32, bool)]) -> Vec<Member> {
    use crate::upstream::ServerKey;
    spec.iter()
        .enumerate()
        .map(|(i, &(name, weight, backup))| Member {
            tls_name: None,
            name: name.to_string(),
            weight,
            backup,
            max_connections: 0,
            send_proxy: None,
            slow_start_ms: 0,
            state: ServerState::new(
                ServerKey {
                    backend: "test".into(),
                    server: name.into(),
                    address: ([127, 0, 0, 1], 10_000 + i as u16).into(),
                    http2: false,
                },
                true,
            ),
        })
        .collect()
}
