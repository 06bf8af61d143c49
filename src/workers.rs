//! Thread-per-core serving: `--threads N` (N > 1) starts N worker threads, each
//! running its own single-threaded tokio runtime. Every bound address gets one
//! SO_REUSEPORT socket per worker, so the kernel spreads new connections and each
//! is accepted by the worker that serves it; from then on the connection, its
//! requests, its pooled server connections and its timers live on that one thread,
//! with no work-stealing scheduler and no cross-thread wakeups. Health checks, the
//! admin listener and signals stay on the main runtime.
//!
//! The kernel's SO_REUSEPORT hash spreads connections unevenly when there are few
//! of them (64 long-lived keep-alive clients may split 40/24), so an accept loop
//! hands a connection to the least loaded worker when its own worker has more open
//! connections: the cost is one cross-thread spawn, paid only by those connections.
//!
//! Without worker threads (tests, `--threads 1`) everything runs on the current
//! runtime. The topology is a value handed to the instance, never a global.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::proxy::http::Park;
use crate::upstream::Worker;

/// Open client connections of one worker, on a cache line of its own (every accept
/// on every worker reads all of them).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Load(AtomicUsize);

/// The worker threads serving connections.
#[derive(Debug)]
pub struct Workers {
    /// One runtime handle per worker thread; empty: serve on the current runtime.
    handles: Vec<Handle>,
    /// Open client connections per worker.
    load: Arc<[Load]>,
    /// Where each worker's idle plain connections wait.
    parks: Arc<[Arc<Park>]>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers { handles: Vec::new(), load: Arc::new([Load::default()]), parks: Arc::new([Arc::new(Park::new())]) }
    }
}

/// A client connection counted on the worker that serves it, until dropped.
#[derive(Debug)]
pub struct Placed {
    load: Arc<[Load]>,
    index: usize,
}

impl Placed {
    /// The worker the connection runs on.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load[self.index].0.fetch_sub(1, Relaxed);
    }
}

impl Workers {
    /// No worker threads: connections are served on the runtime that starts them.
    pub fn none() -> Self {
        Workers::default()
    }

    /// Starts `count` worker threads, each with its own single-threaded runtime.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new().name(format!("fulcrum-worker-{index}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        // The receiver is waiting below; it reports the failure.
                        tx.send(Err(err)).ok();
                        return;
                    }
                };
                if tx.send(Ok(runtime.handle().clone())).is_ok() {
                    runtime.block_on(std::future::pending::<()>());
                }
            })?;
            let handle = rx.recv().map_err(|_| std::io::Error::other("worker thread died while starting"))??;
            handles.push(handle);
        }
        let load = (0..count.max(1)).map(|_| Load::default()).collect();
        let parks = (0..count.max(1)).map(|_| Arc::new(Park::new())).collect();
        Ok(Workers { handles, load, parks })
    }

    /// Picks the worker for a connection accepted on worker `accepted`: that one,
    /// unless another has fewer open connections, then the least loaded (staying
    /// put on ties, which costs nothing). Counts the connection there.
    pub fn place(&self, accepted: usize) -> Placed {
        let own = accepted % self.load.len();
        let mut index = own;
        let mut least = self.load[own].0.load(Relaxed);
        for (other, load) in self.load.iter().enumerate() {
            let open = load.0.load(Relaxed);
            if open < least {
                (index, least) = (other, open);
            }
        }
        self.load[index].0.fetch_add(1, Relaxed);
        Placed { load: Arc::clone(&self.load), index }
    }

    /// Open client connections per worker.
    pub fn loads(&self) -> Vec<usize> {
        self.load.iter().map(|load| load.0.load(Relaxed)).collect()
    }

    /// How many workers serve connections (1 without worker threads).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// Worker `index` as the data path sees it.
    pub fn worker(&self, index: usize) -> Worker {
        Worker { index: index % self.count(), count: self.count() }
    }

    /// Where worker `index` parks its idle plain connections.
    pub fn park(&self, index: usize) -> Arc<Park> {
        Arc::clone(&self.parks[index % self.parks.len()])
    }

    /// Connections parked (idle, plain) on all workers right now.
    pub fn parked(&self) -> usize {
        self.parks.iter().map(|park| park.len()).sum()
    }

    /// Runs `future` on worker `index`, or on the current runtime without workers.
    pub fn spawn_on<F>(&self, index: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(future);
        } else {
            self.handles[index % self.handles.len()].spawn(future);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(count: usize) -> Workers {
        Workers {
            handles: Vec::new(),
            load: (0..count).map(|_| Load::default()).collect(),
            parks: (0..count).map(|_| Arc::new(Park::new())).collect(),
        }
    }

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_stay_put_on_ties() {
        let workers = workers(2);
        // The kernel hands every connection to worker 0: they still split evenly.
        let placed: Vec<Placed> = (0..6).map(|_| workers.place(0)).collect();
        assert_eq!(placed.iter().map(Placed::index).collect::<Vec<_>>(), [0, 1, 0, 1, 0, 1]);
        assert_eq!(workers.loads(), [3, 3]);
        drop(placed);
        assert_eq!(workers.loads(), [0, 0]);
        let here = workers.place(1);
        assert_eq!(here.index(), 1, "a tie keeps the connection where it was accepted");
    }
}
