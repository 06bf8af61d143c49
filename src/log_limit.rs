//! Rate limiting for log lines that can repeat once per connection or request
//! (accept errors, failed connects): under overload they would otherwise grow the
//! log by a line or two per client and cost more than the work they report.
//!
//! A call site owns one [`LogLimit`] (usually a `static`) and logs only when
//! [`LogLimit::check`] lets it through; the line that gets through says how many
//! were held back since the previous one:
//!
//! ```
//! use fulcrum::log_limit::LogLimit;
//!
//! static CONNECT_FAILED: LogLimit = LogLimit::per_second();
//!
//! # let err = "refused";
//! if let Some(repeats) = CONNECT_FAILED.check() {
//!     tracing::warn!(error = %err, "connect failed{repeats}");
//! }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `last` before any line got through.
const NEVER: u64 = u64::MAX;

/// Lets at most one log line through per period; counts the ones it holds back.
///
/// Lock-free: a check is a clock read and an atomic load, plus a compare-exchange
/// for the one caller per period that gets through.
#[derive(Debug)]
pub struct LogLimit {
    period_ms: u64,
    /// When the last line got through, in milliseconds on [`clock_ms`]; [`NEVER`] before.
    last: AtomicU64,
    /// Lines held back since the last one got through.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// One line per second.
    pub const fn per_second() -> LogLimit {
        LogLimit::every(Duration::from_secs(1))
    }

    /// One line per `period` (rounded down to whole milliseconds).
    pub const fn every(period: Duration) -> LogLimit {
        // Saturates instead of wrapping for periods beyond u64 milliseconds.
        let millis = period.as_millis();
        let period_ms = if millis > u64::MAX as u128 { u64::MAX } else { millis as u64 };
        LogLimit { period_ms, last: AtomicU64::new(NEVER), suppressed: AtomicU64::new(0) }
    }

    /// `Some` when the caller should log now: the value reports the lines held back
    /// since the previous one and formats as a suffix for the message (empty when
    /// none were). `None`: this line is counted and held back.
    ///
    /// Lines held back at the end of a burst are reported by the next line that gets
    /// through, whenever that is.
    pub fn check(&self) -> Option<Suppressed> {
        self.check_at(clock_ms())
    }

    /// [`LogLimit::check`] at `now` milliseconds (a clock the tests control).
    fn check_at(&self, now: u64) -> Option<Suppressed> {
        let last = self.last.load(Relaxed);
        // `now` may trail `last` when another thread read the clock later and got
        // through first: that counts as within the period.
        if last != NEVER && now.saturating_sub(last) < self.period_ms {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        if self.last.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
            // Another caller got through for this period.
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        let over = if last == NEVER { Duration::ZERO } else { Duration::from_millis(now.saturating_sub(last)) };
        Some(Suppressed { count: self.suppressed.swap(0, Relaxed), over })
    }
}

/// What the line that got through reports about the ones held back before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Lines held back since the previous line got through.
    pub count: u64,
    /// Time since the previous line got through (zero for the first line).
    pub over: Duration,
}

impl fmt::Display for Suppressed {
    /// Nothing when no line was held back, else ` (and 41 more like this in the last 1.0s)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        write!(f, " (and {} more like this in the last {:.1}s)", self.count, self.over.as_secs_f64())
    }
}

/// Milliseconds since this process first asked: monotonic, and small enough that
/// [`NEVER`] is never a real reading.
fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(NEVER - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_gets_through_with_nothing_to_report() {
        let limit = LogLimit::per_second();
        let first = limit.check_at(5_000).expect("the first line is logged");
        assert_eq!(first, Suppressed { count: 0, over: Duration::ZERO });
        assert_eq!(first.to_string(), "");
    }

    #[test]
    fn one_line_per_period_reporting_what_was_held_back() {
        let limit = LogLimit::per_second();
        assert!(limit.check_at(1_000).is_some());
        for now in 1_000..2_000 {
            assert_eq!(limit.check_at(now), None, "within the period at {now}");
        }
        let next = limit.check_at(2_000).expect("a line per period");
        assert_eq!(next, Suppressed { count: 1_000, over: Duration::from_secs(1) });
        assert_eq!(next.to_string(), " (and 1000 more like this in the last 1.0s)");
        // The count starts over with each line that gets through.
        assert_eq!(limit.check_at(2_500), None);
        let later = limit.check_at(9_250).expect("after a quiet spell");
        assert_eq!(later, Suppressed { count: 1, over: Duration::from_millis(7_250) });
        assert_eq!(later.to_string(), " (and 1 more like this in the last 7.2s)");
    }

    #[test]
    fn a_clock_reading_older_than_the_last_line_is_held_back() {
        let limit = LogLimit::per_second();
        assert!(limit.check_at(3_000).is_some());
        assert_eq!(limit.check_at(2_999), None);
        assert_eq!(limit.check_at(4_000).map(|s| s.count), Some(1));
    }

    #[test]
    fn time_zero_is_a_real_reading() {
        let limit = LogLimit::every(Duration::from_millis(10));
        assert!(limit.check_at(0).is_some());
        assert_eq!(limit.check_at(9), None);
        assert!(limit.check_at(10).is_some());
    }

    #[test]
    fn racing_threads_let_exactly_one_line_through_and_count_the_rest() {
        let limit = LogLimit::per_second();
        let passed: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| (0..1_000).filter(|_| limit.check_at(42_000).is_some()).count() as u64))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(passed, 1);
        assert_eq!(limit.check_at(43_000).map(|s| s.count), Some(7_999));
    }

    #[test]
    fn the_real_clock_lets_the_first_line_through_and_holds_the_next() {
        let limit = LogLimit::every(Duration::from_secs(3600));
        assert!(limit.check().is_some());
        assert!(limit.check().is_none());
    }
}
