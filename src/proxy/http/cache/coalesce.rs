//! Collapsing concurrent misses: the first request to miss a key goes to the
//! server (the leader); the others for the same key wait until the leader's
//! response is stored (or found not storable) and then look again, so a burst of
//! requests for a cold URL costs the server one request.
//!
//! Waiting is bounded both ways: at most [`MAX_WAITERS`] wait on one leader, and
//! none longer than [`WAIT`]; beyond either, a request goes to the server itself
//! (a slow server gets more requests, but no client waits on another's fate forever).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// Most requests waiting on one leader.
pub const MAX_WAITERS: usize = 1024;
/// Longest a request waits on a leader (nginx's `proxy_cache_lock_timeout` default).
pub const WAIT: Duration = Duration::from_secs(5);

/// The keys being fetched now. One mutex for the whole cache: it is taken only
/// on a miss (twice: to join, and when the leader is done), never on a hit.
#[derive(Debug, Default)]
pub struct Flights {
    table: Mutex<HashMap<Arc<str>, Flight>>,
}

#[derive(Debug)]
struct Flight {
    /// Never sent on: dropped when the leader is done, which wakes every receiver.
    _done: watch::Sender<()>,
    done: watch::Receiver<()>,
    waiters: usize,
}

/// What a request missing `key` does.
#[derive(Debug)]
pub enum Joined {
    /// Goes to the server; the others wait until the guard drops.
    Leader(FlightGuard),
    /// Waits for the leader (see [`wait`]).
    Wait(watch::Receiver<()>),
    /// Too many are waiting already: goes to the server without waiting.
    Crowded,
}

/// Held by the leader while its response is fetched and stored; dropping it
/// (stored, not storable, failed, or the client gone) releases the waiters.
#[derive(Debug)]
pub struct FlightGuard {
    flights: Arc<Flights>,
    key: Arc<str>,
}

impl Flights {
    /// Joins the flight for `key`, or starts it.
    pub fn join(self: &Arc<Self>, key: &Arc<str>) -> Joined {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = table.get_mut(key) {
            if flight.waiters >= MAX_WAITERS {
                return Joined::Crowded;
            }
            flight.waiters += 1;
            return Joined::Wait(flight.done.clone());
        }
        let (tx, rx) = watch::channel(());
        table.insert(Arc::clone(key), Flight { _done: tx, done: rx, waiters: 0 });
        Joined::Leader(FlightGuard { flights: Arc::clone(self), key: Arc::clone(key) })
    }

    /// Keys being fetched now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Removing the flight drops its sender: every waiter wakes.
        let flight = self.flights.table.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
        drop(flight);
    }
}

/// Waits for the leader of `done` to finish, at most `limit`; false if it did not.
pub async fn wait(mut done: watch::Receiver<()>, limit: Duration) -> bool {
    // `changed` fails once the sender is gone: that is the signal.
    tokio::time::timeout(limit, async { while done.changed().await.is_ok() {} }).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_leader_is_done() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = Arc::from("http://x/");
        let Joined::Leader(guard) = flights.join(&key) else { panic!("the first is the leader") };
        let Joined::Wait(first) = flights.join(&key) else { panic!("the second waits") };
        let Joined::Wait(second) = flights.join(&key) else { panic!("the third waits") };
        let waiting = tokio::spawn(async move { (wait(first, WAIT).await, wait(second, WAIT).await) });
        tokio::task::yield_now().await;
        drop(guard);
        assert_eq!(waiting.await.unwrap(), (true, true));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join(&key), Joined::Leader(_)), "a new flight after the last");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_are_bounded_in_time_and_number() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = Arc::from("http://x/slow");
        let _leader = flights.join(&key);
        let Joined::Wait(done) = flights.join(&key) else { panic!("waits") };
        assert!(!wait(done, WAIT).await, "gave up after WAIT");
        for _ in 1..MAX_WAITERS {
            assert!(matches!(flights.join(&key), Joined::Wait(_)));
        }
        assert!(matches!(flights.join(&key), Joined::Crowded));
    }
}
