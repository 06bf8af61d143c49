//! Requests (or tcp connections) waiting for a server slot. A server's
//! `max_connections` caps what it is given at once; when every usable server of a
//! backend is at its cap, the request waits here, in order, shared by all workers
//! (a queue per worker would let one worker's clients wait while a slot is free
//! on another's side). A slot freed while someone waits is handed over to the
//! oldest waiter directly, never raced for: while anyone waits, a newcomer does
//! not take a free slot itself but queues behind (see `cluster::acquire`).
//!
//! Kept across reloads with the backend's counters: waiters of the old snapshot
//! and of the new one share the servers' slots, so they share the queue too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts};
use tokio::sync::oneshot;

use super::server_state::{ActiveGuard, ServerState};

/// Upper bounds of the queue-wait histogram, in seconds.
const WAIT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One backend's waiters and what is known of its service times.
#[derive(Debug)]
pub struct WaitQueue {
    waiters: Mutex<VecDeque<Waiter>>,
    /// `waiters.len()`, readable without the lock (a slot's release and every
    /// newcomer look at it).
    len: AtomicUsize,
    next_id: AtomicU64,
    /// The backend has a `queue` in the current config: only then are slot hold
    /// times measured (a clock read and a shared write per request).
    enabled: AtomicBool,
    /// Mean time a slot is held, in microseconds (exponentially weighted), for
    /// the expected wait of a newcomer.
    mean_hold_us: AtomicU64,
    /// Waits that ended in a refusal: queue full, expected wait too long, timed out.
    pub refused: AtomicU64,
    /// Time spent waiting, by those who got a slot or timed out.
    pub wait: Histogram,
}

/// A request waiting for a slot; dropping its receiver gives up its place.
#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<ActiveGuard>,
}

/// A place in the queue; the slot arrives on `grant`.
#[derive(Debug)]
pub struct Ticket {
    /// To give the place up ([`WaitQueue::leave`]).
    pub id: u64,
    /// The slot, handed over by whoever freed it.
    pub grant: oneshot::Receiver<ActiveGuard>,
}

impl WaitQueue {
    /// An empty queue for backend `backend`.
    pub fn new(backend: &str) -> Self {
        let opts =
            HistogramOpts::new("fulcrum_backend_queue_wait_seconds", "Time spent waiting in the queue, by backend.")
                .const_label("backend", backend)
                .buckets(WAIT_BUCKETS.to_vec());
        WaitQueue {
            waiters: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
            mean_hold_us: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            wait: Histogram::with_opts(opts).expect("static histogram options are valid"),
        }
    }

    /// Requests waiting right now.
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(SeqCst)
    }

    /// True when nobody waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiters, locked (nothing awaits while it is held).
    pub fn lock(&self) -> Waiters<'_> {
        Waiters { queue: self, waiters: self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) }
    }

    /// Whether the backend's config has a queue (set at each compile).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Relaxed);
    }

    /// True when the backend's config has a queue.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Mean time a slot is held so far; zero before anything was measured.
    pub fn mean_hold(&self) -> Duration {
        Duration::from_micros(self.mean_hold_us.load(Relaxed))
    }

    /// Folds the time a slot was held into the mean (weight 1/16: follows a change
    /// of the servers' pace within a few dozen requests).
    pub fn observe_hold(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        let _ = self.mean_hold_us.fetch_update(Relaxed, Relaxed, |mean| {
            Some(if mean == 0 { sample } else { mean - mean / 16 + sample / 16 })
        });
    }

    /// Gives up the place `id` (timed out, or the client left). False when it is no
    /// longer queued: a slot was handed over meanwhile and is in its ticket.
    pub fn leave(&self, id: u64) -> bool {
        let mut waiters = self.lock();
        let Some(at) = waiters.waiters.iter().position(|waiter| waiter.id == id) else { return false };
        waiters.waiters.remove(at);
        waiters.sync_len();
        true
    }

    /// A slot of `server` was just freed, or it came up: hands the oldest waiters
    /// still waiting as many slots as the server has room for.
    pub fn offer(&self, server: &Arc<ServerState>) {
        let mut unclaimed = None;
        {
            let mut waiters = self.lock();
            while !waiters.waiters.is_empty() {
                let guard = match unclaimed.take() {
                    Some(guard) => guard,
                    None => match server.try_reserve() {
                        Some(guard) => guard,
                        // Down, or full again: the next release offers.
                        None => break,
                    },
                };
                let waiter = waiters.waiters.pop_front().expect("not empty");
                // On success, the next waiter gets another slot if the server has
                // more room (it came up, or a reload raised its limit).
                if let Err(guard) = waiter.grant.send(guard) {
                    // That waiter gave up without leaving yet: the next one gets it.
                    unclaimed = Some(guard);
                }
            }
            waiters.sync_len();
        }
        // Released outside the lock: nobody was left to take it.
        drop(unclaimed);
    }
}

/// The queue's waiters, locked.
pub struct Waiters<'a> {
    queue: &'a WaitQueue,
    waiters: MutexGuard<'a, VecDeque<Waiter>>,
}

impl Waiters<'_> {
    /// Waiters right now.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Takes the last place.
    pub fn join(&mut self) -> Ticket {
        let id = self.queue.next_id.fetch_add(1, Relaxed);
        let (grant, receiver) = oneshot::channel();
        self.waiters.push_back(Waiter { id, grant });
        self.sync_len();
        Ticket { id, grant: receiver }
    }

    /// Takes the first place: for a waiter handed a slot it could not use, who
    /// keeps its turn.
    pub fn join_front(&mut self) -> Ticket {
        let id = self.queue.next_id.fetch_add(1, Relaxed);
        let (grant, receiver) = oneshot::channel();
        self.waiters.push_front(Waiter { id, grant });
        self.sync_len();
        Ticket { id, grant: receiver }
    }

    /// Gives up the place `id`, if still queued.
    pub fn leave(&mut self, id: u64) {
        if let Some(at) = self.waiters.iter().position(|waiter| waiter.id == id) {
            self.waiters.remove(at);
            self.sync_len();
        }
    }

    fn sync_len(&mut self) {
        self.queue.len.store(self.waiters.len(), SeqCst);
    }
}
