//! Smooth weighted round robin.
//!
//! The order is computed once per snapshot with the "smooth" rule (each turn every
//! server gains its weight, the richest is picked and pays the total), so weights
//! 1,1,2 give `c a c b`-like interleavings and never a burst of the heaviest server.
//! A pick is then one atomic increment and an index into that sequence.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{active_tier_is_backup, eligible, Balancer, Member, Tried};

/// Weighted round robin over precomputed smooth sequences (one per tier).
#[derive(Debug)]
pub struct RoundRobin {
    primary: Vec<u32>,
    backup: Vec<u32>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// Builds the primary and backup sequences over `members`.
    pub fn new(members: &[Member]) -> Self {
        RoundRobin {
            primary: smooth_sequence(members, false),
            backup: smooth_sequence(members, true),
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next eligible index in `members` in weighted order.
    pub(super) fn next(&self, members: &[Member], tried: &Tried) -> Option<usize> {
        let backup = active_tier_is_backup(members);
        let sequence = if backup { &self.backup } else { &self.primary };
        if sequence.is_empty() {
            return None;
        }
        let start = self.cursor.fetch_add(1, Relaxed);
        // A server ramping up (slow start) takes its turn with the probability of
        // its ramp; a turn it lets go passes on. Should every candidate let its
        // turn go, the first one takes it after all.
        let mut passed = None;
        for step in 0..sequence.len() {
            let index = sequence[(start + step) % sequence.len()] as usize;
            if !eligible(members, index, backup, tried) {
                continue;
            }
            let ramp = members[index].ramp();
            if ramp < 1.0 && unit_interval(start.wrapping_add(step)) >= ramp {
                passed.get_or_insert(index);
                continue;
            }
            if step > 0 {
                // The skipped slots are consumed, so the server after a down one
                // does not get its share twice.
                self.cursor.fetch_add(step, Relaxed);
            }
            return Some(index);
        }
        passed
    }
}

/// A number in [0, 1) spread evenly over successive `n` (a fixed mix, no state).
fn unit_interval(n: usize) -> f64 {
    let mixed = super::hash_key(&(n as u64).to_le_bytes());
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

impl Balancer for RoundRobin {
    fn pick(&self, members: &[Member], _key: Option<u64>, tried: &Tried) -> Option<usize> {
        self.next(members, tried)
    }
}

/// One full cycle over the members of one tier, as evenly spread as possible.
///
/// Server `i` of `n` with weight `w` gets its `k`-th turn at time `(k + (i + ½)/n) / w`
/// within the cycle: its turns are evenly spaced, and the phase offset keeps servers of
/// equal weight from landing on the same instant. Sorting all turns by time gives the
/// order: weights 1,1,2 give `a c b c`, which stays smooth across cycle boundaries
/// (a plain "smooth weighted round robin" gives `c a b c`, a burst of c when repeated).
/// Weights are divided by their gcd first, so the cycle is as short as possible.
fn smooth_sequence(members: &[Member], backup: bool) -> Vec<u32> {
    let tier: Vec<(u32, u64)> = members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.backup == backup && m.weight > 0)
        .map(|(i, m)| (i as u32, u64::from(m.weight)))
        .collect();
    let divisor = tier.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let n = tier.len() as u64;
    // Turn time as a fraction: (2kn + 2i + 1) / (2n * w).
    let mut turns: Vec<(u64, u64, u32)> = Vec::new();
    for (slot, &(index, weight)) in tier.iter().enumerate() {
        let weight = weight / divisor;
        for k in 0..weight {
            turns.push((2 * k * n + 2 * slot as u64 + 1, 2 * n * weight, index));
        }
    }
    turns.sort_by(|a, b| {
        (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1))).then(a.2.cmp(&b.2))
    });
    turns.into_iter().map(|(_, _, index)| index).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share_of_b(members: &[Member]) -> f64 {
        let rr = RoundRobin::new(members);
        let picks = 10_000;
        let b = (0..picks).filter(|_| rr.pick(members, None, &Tried::default()) == Some(1)).count();
        b as f64 / picks as f64
    }

    #[test]
    fn a_server_ramping_up_gets_a_share_rising_with_its_ramp() {
        let mut members = test_members(&[("a", 1, false), ("b", 1, false)]);
        for member in &mut members {
            member.slow_start_ms = 30_000;
        }
        let now = crate::upstream::unix_ms();
        // 3 s into 30 s: weight x 0.19, share 0.19 / 1.19 = 16%.
        members[1].state.ramp_from(now - 3_000);
        let early = share_of_b(&members);
        assert!((0.10..0.22).contains(&early), "early share {early}");
        // 27 s in: weight x 0.91, share 48%.
        members[1].state.ramp_from(now - 27_000);
        let late = share_of_b(&members);
        assert!((0.42..0.52).contains(&late), "late share {late}");
        // Ramp over: an even split, and the ramp is forgotten.
        members[1].state.ramp_from(now - 31_000);
        assert_eq!(share_of_b(&members), 0.5);
        assert_eq!(members[1].state.ramp(30_000), None);
    }

    #[test]
    fn a_ramping_server_alone_still_takes_every_request() {
        let mut members = test_members(&[("a", 1, false)]);
        members[0].slow_start_ms = 30_000;
        members[0].state.ramp_from(crate::upstream::unix_ms());
        let rr = RoundRobin::new(&members);
        assert!((0..100).all(|_| rr.pick(&members, None, &Tried::default()) == Some(0)));
    }
    use crate::balance::test_members;

    fn picks(balancer: &RoundRobin, members: &[Member], n: usize) -> Vec<&'static str> {
        let names = ["a", "b", "c", "d", "e"];
        (0..n).map(|_| names[balancer.next(members, &Tried::default()).unwrap()]).collect()
    }

    #[test]
    fn weighted_shares_are_exact_over_a_cycle() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 2, false)]);
        let rr = RoundRobin::new(&members);
        let cycle = picks(&rr, &members, 400);
        for (name, share) in [("a", 100), ("b", 100), ("c", 200)] {
            assert_eq!(cycle.iter().filter(|&&n| n == name).count(), share, "{name} in {cycle:?}");
        }
    }

    #[test]
    fn heavy_server_is_interleaved_never_bursty() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 2, false)]);
        let rr = RoundRobin::new(&members);
        let order = picks(&rr, &members, 12);
        assert_eq!(order[..4], ["a", "c", "b", "c"]);
        for pair in order.windows(2) {
            assert!(!(pair[0] == "c" && pair[1] == "c"), "burst of c in {order:?}");
        }
        // Weights 5,2,1: no server ever gets more turns in a row than its weight forces.
        let members = test_members(&[("a", 5, false), ("b", 2, false), ("c", 1, false)]);
        let rr = RoundRobin::new(&members);
        let order = picks(&rr, &members, 80);
        let longest_run = order.chunk_by(|x, y| x == y).map(|run| run.len()).max().unwrap();
        assert!(longest_run <= 2, "run of {longest_run} in {order:?}");
    }

    #[test]
    fn weight_zero_gets_nothing_and_backups_wait_for_primaries() {
        let members = test_members(&[("a", 0, false), ("b", 1, false), ("c", 1, true)]);
        let rr = RoundRobin::new(&members);
        assert!(picks(&rr, &members, 10).iter().all(|&n| n == "b"));
        members[1].state.set_up(false);
        assert!(picks(&rr, &members, 10).iter().all(|&n| n == "c"));
        members[2].state.set_up(false);
        assert_eq!(rr.next(&members, &Tried::default()), None);
    }

    #[test]
    fn a_down_server_does_not_double_its_neighbour() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]);
        members[2].state.set_up(false);
        let rr = RoundRobin::new(&members);
        let order = picks(&rr, &members, 300);
        let a = order.iter().filter(|&&n| n == "a").count();
        assert!((140..=160).contains(&a), "a got {a} of 300 with c down");
    }

    #[test]
    fn tried_servers_are_skipped() {
        let members = test_members(&[("a", 1, false), ("b", 1, false)]);
        let rr = RoundRobin::new(&members);
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..4 {
            assert_eq!(rr.next(&members, &tried), Some(1));
        }
        tried.insert(1);
        assert_eq!(rr.next(&members, &tried), None);
    }
}
