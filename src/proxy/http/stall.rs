//! A lazy inactivity timer for bodies that may stall.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Detects a body that makes no progress for `limit`. The timer is created only
/// when the body first has to wait, and progress only records a timestamp: the
/// timer is re-armed when it fires early, not on every frame.
#[derive(Debug)]
pub struct StallTimer {
    limit: Duration,
    /// Set when the body first waits, then on every frame.
    last_progress: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    /// No clock read here: most bodies complete without ever waiting.
    pub fn new(limit: Duration) -> Self {
        StallTimer { limit, last_progress: None, timer: None }
    }

    /// The limit in effect.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The body moved: the limit counts from now.
    pub fn progress(&mut self) {
        if self.timer.is_some() {
            self.last_progress = Some(Instant::now());
        }
    }

    /// Polled while the body waits: true once it has waited `limit` since progress.
    pub fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let last_progress = *self.last_progress.get_or_insert_with(Instant::now);
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(last_progress + limit)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let deadline = self.last_progress.unwrap_or(last_progress) + limit;
            if deadline <= Instant::now() {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
    }
}
