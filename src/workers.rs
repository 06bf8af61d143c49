//! Thread-per-core serving: `--threads N` (N > 1) starts N worker threads, each
//! running its own single-threaded tokio runtime. Every bound address gets one
//! SO_REUSEPORT socket per worker, so the kernel spreads new connections and each
//! is accepted by the worker that serves it; from then on the connection, its
//! requests, its pooled server connections and its timers live on that one thread,
//! with no work-stealing scheduler and no cross-thread wakeups. Health checks, the
//! admin listener and signals stay on the main runtime.
//!
//! Without workers (tests, `--threads 1`) everything runs on the current runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;

static WORKERS: OnceLock<Workers> = OnceLock::new();

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

struct Workers {
    handles: Vec<Handle>,
}

/// Starts `count` worker threads. Call once, before the first connection.
pub fn start(count: usize) -> std::io::Result<()> {
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name(format!("fulcrum-worker-{index}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = tx.send(Err(err));
                    return;
                }
            };
            WORKER_INDEX.with(|cell| cell.set(index));
            let _ = tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })?;
        let handle = rx.recv().map_err(|_| std::io::Error::other("worker thread died while starting"))??;
        handles.push(handle);
    }
    WORKERS.set(Workers { handles }).map_err(|_| std::io::Error::other("workers already started"))
}

/// Runs `future` on worker `index`, or on the current runtime when there are none.
pub fn spawn_on<F>(index: usize, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match WORKERS.get() {
        Some(workers) => {
            workers.handles[index % workers.handles.len()].spawn(future);
        }
        None => {
            tokio::spawn(future);
        }
    }
}

/// How many workers serve connections (1 without workers).
pub fn count() -> usize {
    WORKERS.get().map_or(1, |workers| workers.handles.len())
}

/// Index of the worker running the calling thread (0 outside workers).
#[inline]
pub fn current() -> usize {
    WORKER_INDEX.with(Cell::get)
}
