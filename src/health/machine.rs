//! The rise/fall state machine of one server. Only its health task owns one; the
//! data path sees the verdict through [`ServerState::set_up`](crate::upstream::ServerState::set_up).

/// Consecutive probe results turned into an up/down verdict, HAProxy-style: an up
/// server goes down after `fall` failures in a row, a down one comes up after `rise`
/// successes in a row. A server never checked before starts down and comes up on its
/// first success (HAProxy's `init-state down`), so a new server gets traffic quickly
/// but never before it has answered once.
#[derive(Debug, Clone)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
    /// Next success brings the server up whatever `rise` says.
    fast_start: bool,
}

impl RiseFall {
    /// A machine for a server that has never been checked: down, up after one success.
    pub fn new_server(rise: u32, fall: u32) -> Self {
        RiseFall { rise: rise.max(1), fall: fall.max(1), up: false, streak: 0, fast_start: true }
    }

    /// A machine continuing from a known state (a server kept across a reload).
    pub fn resume(rise: u32, fall: u32, up: bool) -> Self {
        RiseFall { rise: rise.max(1), fall: fall.max(1), up, streak: 0, fast_start: false }
    }

    /// Current verdict.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one probe result; returns the new verdict when it flipped.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match (success, self.fast_start) {
            (true, true) => 1,
            (true, false) => self.rise,
            (false, _) => self.fall,
        };
        if self.streak < needed {
            return None;
        }
        self.up = success;
        self.streak = 0;
        self.fast_start = false;
        Some(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(machine: &mut RiseFall, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|&r| machine.record(r)).collect()
    }

    #[test]
    fn goes_down_after_fall_consecutive_failures() {
        let mut m = RiseFall::resume(2, 3, true);
        assert_eq!(run(&mut m, &[false, false]), [None, None]);
        assert!(m.is_up());
        assert_eq!(m.record(false), Some(false));
        assert!(!m.is_up());
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut m = RiseFall::resume(2, 3, true);
        assert_eq!(run(&mut m, &[false, false, true, false, false, true]), [None; 6]);
        assert!(m.is_up());
    }

    #[test]
    fn comes_back_after_rise_consecutive_successes() {
        let mut m = RiseFall::resume(2, 3, false);
        assert_eq!(run(&mut m, &[true, false, true]), [None, None, None]);
        assert_eq!(m.record(true), Some(true));
        assert!(m.is_up());
    }

    #[test]
    fn a_new_server_starts_down_and_comes_up_on_its_first_success() {
        let mut m = RiseFall::new_server(5, 3);
        assert!(!m.is_up());
        assert_eq!(run(&mut m, &[false, false, false, false]), [None; 4]);
        assert_eq!(m.record(true), Some(true));
        // After that, the usual fall and rise apply.
        assert_eq!(run(&mut m, &[false, false, false]), [None, None, Some(false)]);
        assert_eq!(run(&mut m, &[true, true, true, true, true]), [None, None, None, None, Some(true)]);
    }

    #[test]
    fn rise_and_fall_of_one() {
        let mut m = RiseFall::resume(1, 1, true);
        assert_eq!(run(&mut m, &[false, true, false]), [Some(false), Some(true), Some(false)]);
    }
}
