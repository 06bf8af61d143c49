//! Least connections, relative to weight.
//!
//! A server's load is `(active + 1) / weight` (the `+ 1` counts the connection we are
//! about to add, so heavier servers win ties at zero); a server ramping up after it
//! came up (`slow_start`) counts with its ramped weight. Among equal scores the scan starts at a
//! rotating offset, so idle servers share the traffic instead of the first one taking it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{active_tier_is_backup, eligible, Balancer, Member, Tried};

/// Least-connections balancer.
#[derive(Debug, Default)]
pub struct LeastConn {
    offset: AtomicUsize,
}

impl LeastConn {
    /// Builds over `members` (nothing to precompute).
    pub fn new(_members: &[Member]) -> Self {
        LeastConn::default()
    }
}

impl Balancer for LeastConn {
    fn pick(&self, members: &[Member], _key: Option<u64>, tried: &Tried) -> Option<usize> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let backup = active_tier_is_backup(members);
        let start = self.offset.fetch_add(1, Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        for step in 0..n {
            let index = (start + step) % n;
            if !eligible(members, index, backup, tried) {
                continue;
            }
            let member = &members[index];
            // A server ramping up (slow start) counts as lighter in weight.
            let score = (member.state.active() + 1) as f64 / member.effective_weight();
            if best.is_none_or(|(_, best_score)| score < best_score) {
                best = Some((index, score));
            }
        }
        best.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_members;

    #[test]
    fn a_server_ramping_up_counts_as_lighter() {
        let mut members = test_members(&[("a", 1, false), ("b", 1, false)]);
        for member in &mut members {
            member.slow_start_ms = 10_000;
        }
        // b came up 1 s ago: weight x 0.19. With a at 2 in flight and b at 0,
        // b scores 1 / 0.19 = 5.3 against a's 3 / 1: a still wins.
        members[1].state.ramp_from(crate::upstream::unix_ms() - 1_000);
        let lc = LeastConn::new(&members);
        let _held: Vec<_> = (0..2).map(|_| members[0].state.track_request()).collect();
        assert_eq!(lc.pick(&members, None, &Tried::default()), Some(0));
        // Without the ramp, the idle server wins.
        members[1].state.ramp_from(0);
        assert_eq!(lc.pick(&members, None, &Tried::default()), Some(1));
    }

    #[test]
    fn picks_the_server_with_fewest_connections() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]);
        let lc = LeastConn::new(&members);
        let _a1 = members[0].state.track_connection();
        let _a2 = members[0].state.track_connection();
        let _c1 = members[2].state.track_connection();
        for _ in 0..5 {
            assert_eq!(lc.pick(&members, None, &Tried::default()), Some(1));
        }
    }

    #[test]
    fn rebalances_after_connections_close() {
        let members = test_members(&[("a", 1, false), ("b", 1, false)]);
        let lc = LeastConn::new(&members);
        let mut held = Vec::new();
        // Fill up: each pick takes a connection on the chosen server.
        for _ in 0..10 {
            let i = lc.pick(&members, None, &Tried::default()).unwrap();
            held.push((i, members[i].state.track_connection()));
        }
        assert_eq!(members[0].state.active(), 5);
        assert_eq!(members[1].state.active(), 5);
        // Close three on b: the next three picks go to b.
        let mut closed = 0;
        held.retain(|(i, _)| {
            if *i == 1 && closed < 3 {
                closed += 1;
                false
            } else {
                true
            }
        });
        for _ in 0..3 {
            let i = lc.pick(&members, None, &Tried::default()).unwrap();
            assert_eq!(i, 1);
            held.push((i, members[i].state.track_connection()));
        }
    }

    #[test]
    fn weight_scales_the_share_of_connections() {
        let members = test_members(&[("a", 1, false), ("b", 3, false)]);
        let lc = LeastConn::new(&members);
        let mut held = Vec::new();
        for _ in 0..40 {
            let i = lc.pick(&members, None, &Tried::default()).unwrap();
            held.push(members[i].state.track_connection());
        }
        assert_eq!(members[0].state.active(), 10);
        assert_eq!(members[1].state.active(), 30);
    }

    #[test]
    fn ties_are_shared_not_always_the_first() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]);
        let lc = LeastConn::new(&members);
        let mut counts = [0; 3];
        // Short requests: nothing stays open, every pick is a tie.
        for _ in 0..300 {
            counts[lc.pick(&members, None, &Tried::default()).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn skips_down_and_tried_and_uses_backups_last() {
        let members = test_members(&[("a", 1, false), ("b", 1, false), ("c", 1, true)]);
        let lc = LeastConn::new(&members);
        members[0].state.set_up(false);
        let mut tried = Tried::default();
        assert_eq!(lc.pick(&members, None, &tried), Some(1));
        tried.insert(1);
        assert_eq!(lc.pick(&members, None, &tried), None);
        members[1].state.set_up(false);
        assert_eq!(lc.pick(&members, None, &Tried::default()), Some(2));
    }
}
