//! Power of two choices (`balance: random`): two usable servers drawn at random
//! (in proportion to their weights, ramped while they come up), and the one with
//! fewer requests in flight relative to its weight wins. Nearly as even as least
//! connections, without every pick reading every server's counter, and no herd:
//! several workers picking at once rarely all land on the same idle server.

use std::cell::Cell;

use super::{active_tier_is_backup, eligible, Balancer, Member, Tried};

/// The power-of-two-choices balancer (no per-snapshot state).
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// Builds over `members` (nothing to precompute).
    pub fn new(_members: &[Member]) -> Self {
        PowerOfTwo
    }
}

thread_local! {
    /// xorshift state, per thread: no shared cache line between workers.
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let thread = std::thread::current().id();
    super::hash_key(format!("{nanos}{thread:?}").as_bytes()) | 1
}

/// A random number in [0, 1).
fn random() -> f64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// One eligible server drawn in proportion to its effective weight, skipping
/// `except`; `total` is the sum of the weights it may draw from.
fn draw(members: &[Member], backup: bool, tried: &Tried, except: Option<usize>, total: f64) -> Option<usize> {
    if total <= 0.0 {
        return None;
    }
    let mut target = random() * total;
    let mut last = None;
    for index in (0..members.len()).filter(|&index| Some(index) != except) {
        if !eligible(members, index, backup, tried) {
            continue;
        }
        last = Some(index);
        let weight = members[index].effective_weight();
        if target < weight {
            return Some(index);
        }
        target -= weight;
    }
    // Rounding (or a ramp that moved since the total) left a sliver at the end.
    last
}

impl Balancer for PowerOfTwo {
    fn pick(&self, members: &[Member], _key: Option<u64>, tried: &Tried) -> Option<usize> {
        let backup = active_tier_is_backup(members);
        let total: f64 = (0..members.len())
            .filter(|&index| eligible(members, index, backup, tried))
            .map(|index| members[index].effective_weight())
            .sum();
        let first = draw(members, backup, tried, None, total)?;
        let rest = total - members[first].effective_weight();
        let Some(second) = draw(members, backup, tried, Some(first), rest) else { return Some(first) };
        let score = |index: usize| (members[index].state.active() + 1) as f64 / members[index].effective_weight();
        Some(if score(second) < score(first) { second } else { first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_members;

    #[test]
    fn the_less_loaded_of_two_wins_and_weights_set_the_draws() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 2, false)]);
        let balancer = PowerOfTwo::new(&members);
        // `a` busy: with two candidates out of three it loses whenever drawn with another.
        let _busy: Vec<_> = (0..50).map(|_| members[0].state.track_request()).collect();
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[balancer.pick(&members, None, &Tried::default()).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0, "the busy server is never the better of two: {counts:?}");
        assert!(counts[2] > counts[1], "c weighs twice b: {counts:?}");
    }

    #[test]
    fn idle_servers_of_equal_weight_share_and_tried_ones_are_skipped() {
        let members = test_members(&[("a", 1, false), ("b", 1, false)]);
        let balancer = PowerOfTwo::new(&members);
        let mut tried = Tried::default();
        tried.insert(1);
        for _ in 0..100 {
            assert_eq!(balancer.pick(&members, None, &tried), Some(0));
        }
        tried.insert(0);
        assert_eq!(balancer.pick(&members, None, &tried), None);
        // Both idle and alike: ties keep the first draw, a coin toss.
        let mut b = 0;
        for _ in 0..10_000 {
            b += usize::from(balancer.pick(&members, None, &Tried::default()) == Some(1));
        }
        assert!((4_000..=6_000).contains(&b), "b: {b} of 10,000");
        // Idle, the heavier server wins (its share of the load is the smallest),
        // as with least_conn.
        let members = test_members(&[("a", 1, false), ("b", 3, false)]);
        assert!((0..100).all(|_| balancer.pick(&members, None, &Tried::default()) == Some(1)));
    }
}
