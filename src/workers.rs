//! Thread-per-core serving: `--threads N` (N > 1) starts N worker threads, each
//! running its own single-threaded tokio runtime. Every bound address gets one
//! SO_REUSEPORT socket per worker, so the kernel spreads new connections and each
//! is accepted by the worker that serves it; from then on the connection, its
//! requests, its pooled server connections and its timers live on that one thread,
//! with no work-stealing scheduler and no cross-thread wakeups. Health checks, the
//! admin listener and signals stay on the main runtime.
//!
//! Without worker threads (tests, `--threads 1`) everything runs on the current
//! runtime. The topology is a value handed to the instance, never a global.

use std::future::Future;

use tokio::runtime::Handle;

use crate::upstream::Worker;

/// The worker threads serving connections.
#[derive(Debug, Default)]
pub struct Workers {
    /// One runtime handle per worker thread; empty: serve on the current runtime.
    handles: Vec<Handle>,
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
        Ok(Workers { handles })
    }

    /// How many workers serve connections (1 without worker threads).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// Worker `index` as the data path sees it.
    pub fn worker(&self, index: usize) -> Worker {
        Worker { index: index % self.count(), count: self.count() }
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
