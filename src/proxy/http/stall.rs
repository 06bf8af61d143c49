//! A lazy inactivity timer for bodies that may stall.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Detects a body whose source sends nothing for `limit` while the body waits
/// for it. Only uninterrupted waits count: a body that is not polled for a while
/// (its reader was busy elsewhere) starts a fresh wait when it is polled again,
/// so the gap is never blamed on the source.
///
/// The timer is created only when the body first has to wait and is never moved
/// on the hot path: a wait just records when it started, and the timer is
/// re-armed when it fires before the current wait's deadline.
#[derive(Debug)]
pub struct StallTimer {
    limit: Duration,
    /// When the current wait began; `None` while not waiting.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    /// No clock read here: most bodies complete without ever waiting.
    pub fn new(limit: Duration) -> Self {
        StallTimer { limit, waiting_since: None, timer: None }
    }

    /// The limit in effect.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The body moved: the current wait, if any, is over.
    pub fn moved(&mut self) {
        self.waiting_since = None;
    }

    /// Polled while the body waits for its source: true once this wait has
    /// lasted `limit`.
    pub fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if deadline <= Instant::now() {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    async fn stalls(stall: &mut StallTimer) {
        poll_fn(|cx| if stall.stalled(cx) { Poll::Ready(()) } else { Poll::Pending }).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_between_polls_is_not_a_stall() {
        let mut stall = StallTimer::new(Duration::from_secs(10));
        // A first wait that ends before the limit.
        assert!(tokio::time::timeout(Duration::from_secs(8), stalls(&mut stall)).await.is_err());
        stall.moved();
        // Not polled for a minute (the reader was blocked elsewhere), then a new wait:
        // it gets its own full limit.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let wait_started = Instant::now();
        stalls(&mut stall).await;
        assert_eq!(wait_started.elapsed(), Duration::from_secs(10));
    }
}
