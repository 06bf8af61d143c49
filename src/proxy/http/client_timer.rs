//! The client-side time limits of an HTTP/1.1 connection, checked whenever a read
//! from the client would block:
//!
//! - the first request head must be complete within `timeouts.request_header` of
//!   the accept (nothing sent at all: closed without a response; part of a head:
//!   408), as must every later head from its first byte;
//! - a keep-alive connection waiting for its next request is closed after
//!   `timeouts.client` without traffic; an h2c connection after `timeouts.client`
//!   without an open stream.
//!
//! While a request body is forwarded it has its own limit (see `request_body`);
//! while a response is on its way, or once the connection is upgraded, no limit
//! applies here: the server-side and tunnel timeouts govern those.
//!
//! One timer per connection, moved only when the kind of wait changes (about twice
//! per request), never re-created.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What the connection is waiting for from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The first byte of the connection's first request.
    FirstRequest,
    /// The rest of a request head.
    Head,
    /// More of a request body (reported by the body's own limit).
    Body,
    /// The next request on an idle keep-alive (or h2c) connection.
    Idle,
    /// Anything else: no client-side limit here.
    Unlimited,
    /// Not a read: the client stopped reading what we send (reported only).
    Send,
}

/// What ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The client's time waiting for this.
    Limit(Wait),
    /// The idle connection may be set aside (see [`ClientTimer::park_after`]); its
    /// idle limit goes on.
    Park,
}

/// The one timer of a client connection.
#[derive(Debug)]
pub struct ClientTimer {
    sleep: Pin<Box<Sleep>>,
    /// What `sleep` currently measures, and since when (see `poll_expired`).
    armed: Wait,
    armed_for: u64,
    request_header: Duration,
    client: Duration,
    /// Idle this long, the connection is set aside (HTTP/1.1).
    park_after: Option<Duration>,
    /// `sleep` runs to the park time of the current idle wait, not its limit, which
    /// is `idle_until`.
    park_due: bool,
    idle_until: Instant,
}

impl ClientTimer {
    /// A timer whose first request head is due at `head_due`: `request_header`
    /// after the accept for a new connection, after the first byte of the next
    /// request for one woken from idle.
    pub fn new(head_due: Instant, request_header: Duration, client: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(head_due));
        ClientTimer {
            sleep,
            armed: Wait::FirstRequest,
            armed_for: 0,
            request_header,
            client,
            park_after: None,
            park_due: false,
            idle_until: Instant::now(),
        }
    }

    /// From now on (or never, with `None`), an idle wait first runs out after
    /// `after` with [`Expired::Park`] (if that is shorter than the idle limit).
    pub fn park_after(&mut self, after: Option<Duration>) {
        self.park_after = after;
    }

    /// Runs the idle limit again from now (a grace period after a polite close).
    pub fn restart_idle(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.client);
    }

    /// When the idle wait that ended in [`Expired::Park`] runs out.
    pub fn idle_until(&self) -> Instant {
        self.idle_until
    }

    /// True while idle waits may end in [`Expired::Park`].
    pub fn parks(&self) -> bool {
        self.park_after.is_some()
    }

    /// Called when a read would block while waiting for `wait`; ready with what
    /// ran out. `epoch` tells one wait from the next of the same kind: the count of
    /// complete request heads (a whole request can come and go between two calls),
    /// or for h2c the count of requests.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, wait: Wait, epoch: u64) -> Poll<Expired> {
        if (wait, epoch) != (self.armed, self.armed_for) {
            let now = Instant::now();
            self.park_due = false;
            let limit = match wait {
                // The first head's time counts from the accept, like the first byte's.
                Wait::Head if self.armed == Wait::FirstRequest => None,
                Wait::FirstRequest | Wait::Head => Some(self.request_header),
                Wait::Idle => match self.park_after {
                    Some(park) if park < self.client => {
                        self.park_due = true;
                        self.idle_until = now + self.client;
                        Some(park)
                    }
                    _ => Some(self.client),
                },
                Wait::Unlimited | Wait::Send | Wait::Body => None,
            };
            if let Some(limit) = limit {
                self.sleep.as_mut().reset(now + limit);
            }
            self.armed = wait;
            self.armed_for = epoch;
        }
        if matches!(wait, Wait::Unlimited | Wait::Send | Wait::Body) {
            // The caller's socket readiness is registered: it wakes this reader.
            return Poll::Pending;
        }
        ready!(self.sleep.as_mut().poll(cx));
        if std::mem::take(&mut self.park_due) {
            // The idle limit goes on from where the wait started.
            self.sleep.as_mut().reset(self.idle_until);
            return Poll::Ready(Expired::Park);
        }
        Poll::Ready(Expired::Limit(wait))
    }
}

/// The client took longer than its limit (which one is in the error).
#[derive(Debug, thiserror::Error)]
#[error("client timed out waiting for {0:?}")]
pub struct ClientTimedOut(pub Wait);

impl ClientTimedOut {
    /// True when a client limit is somewhere in `err`'s chain of causes (hyper
    /// wraps the I/O or body error carrying it).
    pub fn caused(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(err);
        while let Some(err) = cause {
            let io = err.downcast_ref::<std::io::Error>().and_then(|e| e.get_ref());
            if io.is_some_and(|e| e.is::<ClientTimedOut>()) {
                return true;
            }
            cause = err.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A new connection's timer: 10 s for a head, `client` idle.
    fn new_timer(client: Duration) -> ClientTimer {
        ClientTimer::new(Instant::now() + Duration::from_secs(10), Duration::from_secs(10), client)
    }

    async fn expires(timer: &mut ClientTimer, wait: Wait, heads: u64) -> Wait {
        match poll_fn(|cx| timer.poll_expired(cx, wait, heads)).await {
            Expired::Limit(wait) => wait,
            Expired::Park => panic!("parked without park_after"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_head_counts_from_accept_later_heads_from_their_start() {
        let started = Instant::now();
        let mut timer = new_timer(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(expires(&mut timer, Wait::Head, 0).await, Wait::Head);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let mut timer = new_timer(Duration::from_secs(60));
        let _ = poll_fn(|cx| Poll::Ready(timer.poll_expired(cx, Wait::Unlimited, 0))).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let head_started = Instant::now();
        assert_eq!(expires(&mut timer, Wait::Head, 1).await, Wait::Head);
        assert_eq!(head_started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_uses_the_client_timeout_and_unlimited_never_fires() {
        let mut timer = new_timer(Duration::from_secs(60));
        let unlimited = tokio::time::timeout(Duration::from_secs(3600), expires(&mut timer, Wait::Unlimited, 1));
        assert!(unlimited.await.is_err(), "no limit while a response is on its way");
        let idle_started = Instant::now();
        assert_eq!(expires(&mut timer, Wait::Idle, 1).await, Wait::Idle);
        assert_eq!(idle_started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_again_after_another_request_starts_over() {
        let mut timer = new_timer(Duration::from_secs(60));
        let first_idle = tokio::time::timeout(Duration::from_secs(30), expires(&mut timer, Wait::Idle, 1));
        assert!(first_idle.await.is_err());
        // A request was read and answered without the read ever blocking in between.
        let idle_started = Instant::now();
        assert_eq!(expires(&mut timer, Wait::Idle, 2).await, Wait::Idle);
        assert_eq!(idle_started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_parks_first_then_runs_to_its_limit() {
        let mut timer = new_timer(Duration::from_secs(60));
        timer.park_after(Some(Duration::from_secs(1)));
        let idle_started = Instant::now();
        assert_eq!(poll_fn(|cx| timer.poll_expired(cx, Wait::Idle, 1)).await, Expired::Park);
        assert_eq!(idle_started.elapsed(), Duration::from_secs(1));
        assert_eq!(expires(&mut timer, Wait::Idle, 1).await, Wait::Idle);
        assert_eq!(idle_started.elapsed(), Duration::from_secs(60), "the limit counts from the start of the wait");
        // A limit shorter than the park time: no park.
        let mut timer = new_timer(Duration::from_millis(500));
        timer.park_after(Some(Duration::from_secs(1)));
        assert_eq!(expires(&mut timer, Wait::Idle, 1).await, Wait::Idle);
    }
}
