//! What is running now, as the instance publishes it: the current snapshot, the
//! outcome of reloads, whether a drain started, and the connections the process
//! serves (its cap, its workers). The instance writes it; the
//! admin listener reads it through [`LiveView`], which can change nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::Snapshot;
use crate::fd_limit::ConnectionCap;
use crate::workers::Workers;

/// Reload outcome counters (the `fulcrum_config_*` metrics).
#[derive(Debug)]
pub struct ReloadStats {
    /// Applied reloads.
    pub succeeded: AtomicU64,
    /// Rejected reloads.
    pub failed: AtomicU64,
    /// Whether the most recent reload applied (true before any reload).
    pub last_ok: AtomicBool,
    /// Errors of the last failed reload, for the status page.
    last_errors: Mutex<Vec<String>>,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_errors: Mutex::new(Vec::new()),
        }
    }
}

impl ReloadStats {
    /// Records an applied reload.
    pub fn record_success(&self) {
        self.succeeded.fetch_add(1, Relaxed);
        self.last_ok.store(true, Relaxed);
        self.errors().clear();
    }

    /// Records a rejected reload and why.
    pub fn record_failure(&self, errors: Vec<String>) {
        self.failed.fetch_add(1, Relaxed);
        self.last_ok.store(false, Relaxed);
        *self.errors() = errors;
    }

    /// Errors of the last failed reload (empty after a success).
    pub fn last_errors(&self) -> Vec<String> {
        self.errors().clone()
    }

    fn errors(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // Only whole vectors are ever stored: a poisoned lock still holds a valid one.
        self.last_errors.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running state published by the instance.
#[derive(Debug)]
pub struct Live {
    /// The cluster view every new connection and request loads.
    pub snapshot: ArcSwap<Snapshot>,
    /// Reload outcomes.
    pub reloads: ReloadStats,
    /// True once shutdown started (`/healthz` answers 503).
    pub draining: AtomicBool,
    /// Cancelled when the drain has finished: the admin listener stops last.
    pub finished: CancellationToken,
    /// Open client connections allowed across every frontend and worker.
    pub connection_cap: ConnectionCap,
    /// The threads serving connections, with their open connections.
    pub workers: Arc<Workers>,
    /// Admin API writes, by action and result.
    pub admin_writes: [[std::sync::atomic::AtomicU64; 3]; 4],
}

/// What an admin API write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAction {
    /// A server's state or weight.
    Server,
    /// A reload of the config file.
    Reload,
    /// A config checked.
    ConfigCheck,
    /// A backend's HTTP cache purged.
    CachePurge,
}

impl WriteAction {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteAction::Server => "server",
            WriteAction::Reload => "reload",
            WriteAction::ConfigCheck => "config_check",
            WriteAction::CachePurge => "cache_purge",
        }
    }
}

/// How an admin API write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// Done.
    Ok,
    /// No or a wrong token, or writes disabled.
    Denied,
    /// Refused: bad body, unknown name, or it failed.
    Invalid,
}

impl WriteResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteResult::Ok => "ok",
            WriteResult::Denied => "denied",
            WriteResult::Invalid => "invalid",
        }
    }
}

impl Live {
    /// Publishes `first` as the running snapshot, served by `workers` under `connection_cap`.
    pub fn new(first: Snapshot, connection_cap: ConnectionCap, workers: Arc<Workers>) -> Self {
        Live {
            snapshot: ArcSwap::from_pointee(first),
            reloads: ReloadStats::default(),
            draining: AtomicBool::new(false),
            finished: CancellationToken::new(),
            connection_cap,
            workers,
            admin_writes: Default::default(),
        }
    }
}

/// A read-only view of [`Live`], for the admin listener.
#[derive(Debug, Clone)]
pub struct LiveView(Arc<Live>);

impl LiveView {
    /// A view of `live`.
    pub fn new(live: Arc<Live>) -> Self {
        LiveView(live)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.snapshot.load_full()
    }

    /// Counts an admin API write.
    pub fn count_write(&self, action: WriteAction, result: WriteResult) {
        self.writes(action, result).fetch_add(1, Relaxed);
    }

    /// The counter of admin API writes of `action` that ended in `result`.
    pub fn writes(&self, action: WriteAction, result: WriteResult) -> &std::sync::atomic::AtomicU64 {
        &self.0.admin_writes[action as usize][result as usize]
    }

    /// Reload outcomes so far.
    pub fn reloads(&self) -> &ReloadStats {
        &self.0.reloads
    }

    /// True once a graceful shutdown started.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Relaxed)
    }

    /// The process-wide connection cap and the client connections open under it.
    pub fn connections(&self) -> (usize, usize) {
        (self.0.connection_cap.max(), self.0.connection_cap.open())
    }

    /// Open client connections per worker thread.
    pub fn worker_loads(&self) -> Vec<usize> {
        self.0.workers.loads()
    }

    /// Resolves when the drain has finished.
    pub fn finished(&self) -> WaitForCancellationFuture<'_> {
        self.0.finished.cancelled()
    }
}
