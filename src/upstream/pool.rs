//! Keep-alive connections to one server, reused across requests (and reloads:
//! the pool lives in the server's shared state).

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a pooled connection may sit idle. Shorter than the keep-alive of
/// common app servers (gunicorn 2s, Node 5s), so a server's own idle close rarely
/// races with our reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Idle connections kept per server and worker; more are closed when they free up.
/// As many as a busy worker has requests in flight to one server: with 1,000
/// clients, a cap of 128 closed most connections after their response and opened
/// new ones for the next requests (9% more CPU per request, p99 70 -> 50 ms at 1024).
/// Unused ones go after [`IDLE_TIMEOUT`] anyway.
pub const MAX_IDLE: usize = 1024;

/// Which worker thread the caller runs on, and how many there are. Passed down
/// from the accept loop that took the connection, so the pool never has to ask a
/// process-wide registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker's index, below `count`.
    pub index: usize,
    /// Workers serving connections (1 without worker threads).
    pub count: usize,
}

impl Worker {
    /// The only worker of a process without worker threads.
    pub const SOLE: Worker = Worker { index: 0, count: 1 };
}

/// A connection a [`Pool`] can hold.
pub trait Pooled: Send + 'static {
    /// The connection can take a new request now.
    fn is_ready(&mut self) -> bool;
    /// The connection is gone (the server closed it, or it failed).
    fn is_closed(&mut self) -> bool;
}

type Idle<C> = Vec<(C, Instant)>;

/// One worker's turn at opening a shared connection (HTTP/2) to one server:
/// requests that find none pooled take turns here, so a burst opens one
/// connection and the rest find it in the pool, instead of each opening its own.
pub type ConnectGate = tokio::sync::Mutex<Option<FailedConnect>>;

/// The last connect through a [`ConnectGate`] failed: requests that waited for it
/// fail too (and may be retried elsewhere) rather than each trying again in turn,
/// which would hold the last of them for as many connect timeouts as waited.
#[derive(Debug, Clone)]
pub struct FailedConnect {
    /// When it failed.
    pub at: Instant,
    /// What it said.
    pub error: String,
}

/// Idle connections to one server, most recently used last — one stack per
/// worker thread, because a connection is driven by a task on the worker that
/// opened it and reusing it from another worker would cost cross-thread wakeups.
#[derive(Debug)]
pub struct Pool<C> {
    per_worker: Box<[Mutex<Idle<C>>]>,
    gates: Box<[ConnectGate]>,
}

impl<C: Pooled> Pool<C> {
    /// An empty pool for `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        Pool {
            per_worker: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            gates: (0..workers).map(|_| ConnectGate::default()).collect(),
        }
    }

    /// `worker`'s turn at opening a shared connection (see [`ConnectGate`]).
    pub fn gate(&self, worker: Worker) -> &ConnectGate {
        &self.gates[worker.index % self.gates.len()]
    }

    fn stack(&self, index: usize) -> MutexGuard<'_, Idle<C>> {
        // A panic while holding the lock leaves at worst a stale entry behind, which
        // the readiness checks below skip: never reason to fail every later request.
        self.per_worker[index % self.per_worker.len()].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a live idle connection of `worker` (newest first), dropping expired or closed ones.
    pub fn take(&self, worker: Worker) -> Option<C> {
        let mut idle = self.stack(worker.index);
        let now = Instant::now();
        while let Some((mut conn, since)) = idle.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && conn.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection after its response completed.
    pub fn put(&self, worker: Worker, mut conn: C) {
        if !conn.is_ready() {
            return;
        }
        let mut idle = self.stack(worker.index);
        let now = Instant::now();
        // The oldest entries sit at the front; expire them as we go.
        if idle.first().is_some_and(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT) {
            idle.retain_mut(|(c, since)| now.duration_since(*since) < IDLE_TIMEOUT && !c.is_closed());
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Closes connections idle past [`IDLE_TIMEOUT`] or already closed by the server;
    /// returns how many.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        (0..self.per_worker.len())
            .map(|index| {
                let mut idle = self.stack(index);
                let before = idle.len();
                idle.retain_mut(|(c, since)| now.duration_since(*since) < IDLE_TIMEOUT && !c.is_closed());
                before - idle.len()
            })
            .sum()
    }

    /// Closes every idle connection; returns how many.
    pub fn close_all(&self) -> usize {
        (0..self.per_worker.len()).map(|index| self.stack(index).drain(..).count()).sum()
    }

    /// Idle connections held now (for metrics).
    pub fn idle_count(&self) -> usize {
        (0..self.per_worker.len()).map(|index| self.stack(index).len()).sum()
    }
}

/// What the server's state needs of its pool without knowing the connection type.
trait AnyPool: Send + Sync + std::fmt::Debug {
    fn reap(&self) -> usize;
    fn close_all(&self) -> usize;
    fn idle_count(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
}

impl<C: Pooled + std::fmt::Debug> AnyPool for Pool<C> {
    fn reap(&self) -> usize {
        Pool::reap(self)
    }
    fn close_all(&self) -> usize {
        Pool::close_all(self)
    }
    fn idle_count(&self) -> usize {
        Pool::idle_count(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A server's pool of idle connections, of whatever type the data path pools.
///
/// The server state lives below the data path and cannot name its connection
/// type; the pool is made on first use by the data path, which does. Once the
/// server has left the config ([`PoolSlot::retire`]) nothing is pooled any more.
#[derive(Debug, Default)]
pub struct PoolSlot {
    pool: OnceLock<Box<dyn AnyPool>>,
    retired: AtomicBool,
    /// In maintenance: nothing is pooled until it ends.
    suspended: AtomicBool,
}

impl PoolSlot {
    /// The pool of `C` connections, made for `worker.count` workers on first use.
    /// `None` only if a different connection type was pooled first (a bug; then
    /// nothing is pooled rather than anything mixed up).
    #[inline]
    pub fn get<C: Pooled + std::fmt::Debug>(&self, worker: Worker) -> Option<&Pool<C>> {
        self.pool.get_or_init(|| Box::new(Pool::<C>::new(worker.count))).as_any().downcast_ref()
    }

    /// Takes an idle connection for `worker`.
    #[inline]
    pub fn take<C: Pooled + std::fmt::Debug>(&self, worker: Worker) -> Option<C> {
        self.get::<C>(worker)?.take(worker)
    }

    /// Returns a connection for reuse, unless the server has left the config.
    pub fn put<C: Pooled + std::fmt::Debug>(&self, worker: Worker, conn: C) {
        if self.retired.load(SeqCst) || self.suspended.load(SeqCst) {
            return;
        }
        let Some(pool) = self.get::<C>(worker) else { return };
        pool.put(worker, conn);
        // A retire that ran meanwhile may have emptied the pool before this put.
        if self.retired.load(SeqCst) {
            pool.close_all();
        }
    }

    /// The server left the config: close its idle connections now and pool none
    /// of those still in use. Returns how many were closed.
    pub fn retire(&self) -> usize {
        self.retired.store(true, SeqCst);
        self.pool.get().map_or(0, |pool| pool.close_all())
    }

    /// Maintenance starts (`true`: idle connections closed now, none pooled until
    /// it ends) or ends. Returns how many were closed.
    pub fn suspend(&self, suspended: bool) -> usize {
        self.suspended.store(suspended, SeqCst);
        if suspended {
            self.pool.get().map_or(0, |pool| pool.close_all())
        } else {
            0
        }
    }

    /// Closes connections idle too long or closed by the server; returns how many.
    pub fn reap(&self) -> usize {
        self.pool.get().map_or(0, |pool| pool.reap())
    }

    /// Idle connections held now (for metrics).
    pub fn idle_count(&self) -> usize {
        self.pool.get().map_or(0, |pool| pool.idle_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug)]
    struct Conn(Arc<AtomicBool>);

    impl Pooled for Conn {
        fn is_ready(&mut self) -> bool {
            !self.0.load(SeqCst)
        }
        fn is_closed(&mut self) -> bool {
            self.0.load(SeqCst)
        }
    }

    fn conn() -> (Conn, Arc<AtomicBool>) {
        let closed = Arc::new(AtomicBool::new(false));
        (Conn(Arc::clone(&closed)), closed)
    }

    #[test]
    fn workers_keep_their_own_connections() {
        let slot = PoolSlot::default();
        let (a, b) = (Worker { index: 0, count: 2 }, Worker { index: 1, count: 2 });
        slot.put(a, conn().0);
        assert!(slot.take::<Conn>(b).is_none());
        assert!(slot.take::<Conn>(a).is_some());
    }

    #[test]
    fn closed_connections_are_skipped() {
        let slot = PoolSlot::default();
        let (c, closed) = conn();
        slot.put(Worker::SOLE, c);
        closed.store(true, SeqCst);
        assert!(slot.take::<Conn>(Worker::SOLE).is_none());
    }

    #[test]
    fn a_retired_slot_closes_and_pools_nothing() {
        let slot = PoolSlot::default();
        slot.put(Worker::SOLE, conn().0);
        assert_eq!(slot.retire(), 1);
        slot.put(Worker::SOLE, conn().0);
        assert_eq!(slot.idle_count(), 0);
    }

    #[test]
    fn a_poisoned_lock_does_not_fail_later_requests() {
        let pool = Arc::new(Pool::<Conn>::new(1));
        pool.put(Worker::SOLE, conn().0);
        let held = Arc::clone(&pool);
        let panicked = std::thread::spawn(move || {
            let _guard = held.stack(0);
            panic!("poison the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(pool.per_worker[0].is_poisoned());
        assert!(pool.take(Worker::SOLE).is_some());
        pool.put(Worker::SOLE, conn().0);
        assert_eq!(pool.reap(), 0);
        assert_eq!(pool.idle_count(), 1);
    }
}
