//! A running Fulcrum: the current snapshot, the listeners, the connection tasks,
//! and the operations on them (reload, graceful shutdown).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{self, Snapshot};
use crate::config::{Config, ConfigError};
use crate::health::HealthChecks;
use crate::listener::{self, ListenerSlot};

/// Why the balancer could not start or a reload could not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The balancer is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Reload outcome counters (the `fulcrum_config_*` metrics).
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Applied reloads.
    pub succeeded: AtomicU64,
    /// Rejected reloads.
    pub failed: AtomicU64,
    /// Whether the most recent reload applied (true before any reload).
    pub last_ok: AtomicBool,
    /// Errors of the last failed reload, for the status page.
    pub last_errors: Mutex<Vec<String>>,
}

/// State shared by the instance handle, the accept loops and the admin endpoints.
#[derive(Debug)]
pub struct Shared {
    /// The cluster view every new connection loads.
    pub snapshot: ArcSwap<Snapshot>,
    /// Where `reload` re-reads the config from.
    pub config_path: Option<PathBuf>,
    /// Bound addresses, keyed by the configured address.
    listeners: Mutex<HashMap<SocketAddr, Arc<ListenerSlot>>>,
    /// Serializes reloads (never held by the data path).
    reload_lock: tokio::sync::Mutex<()>,
    /// Every client connection task, for draining.
    pub tasks: TaskTracker,
    /// Cancelled when graceful shutdown starts: accept loops stop, HTTP connections finish politely.
    pub shutdown: CancellationToken,
    /// True once shutdown started (`/healthz` answers 503).
    pub draining: AtomicBool,
    /// Reload outcomes.
    pub reloads: ReloadStats,
    /// One health task per checked server.
    pub health: HealthChecks,
    /// Cancelled when the drain has finished: the admin listener stops last.
    pub finished: CancellationToken,
    /// Where the admin listener is bound, if configured.
    admin_addr: std::sync::OnceLock<SocketAddr>,
}

/// Handle to a running balancer.
#[derive(Debug, Clone)]
pub struct Instance {
    shared: Arc<Shared>,
}

impl Instance {
    /// Loads the config file, binds every listener and starts serving.
    pub async fn start_from_file(path: &Path) -> Result<Instance, ApplyError> {
        let config = Config::load(path)?;
        Instance::start(config, Some(path.to_path_buf())).await
    }

    /// Starts serving `config`; `path` is where a later [`Instance::reload`] reads from.
    pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Instance, ApplyError> {
        let snapshot = cluster::compile(Arc::new(config), None)?;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            config_path: path,
            listeners: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
            reloads: ReloadStats { last_ok: AtomicBool::new(true), ..Default::default() },
            health: HealthChecks::default(),
            finished: CancellationToken::new(),
            admin_addr: std::sync::OnceLock::new(),
        });
        let instance = Instance { shared };
        let first = instance.shared.snapshot.load_full();
        instance.sync_listeners(&first)?;
        if let Some(address) = first.admin {
            instance.start_admin(address)?;
        }
        tokio::spawn(reap_idle_connections(Arc::clone(&instance.shared)));
        tracing::info!(
            generation = first.generation,
            frontends = first.frontends.len(),
            backends = first.backends.len(),
            "serving"
        );
        Ok(instance)
    }

    /// Binds the admin listener and serves it until the instance has finished.
    fn start_admin(&self, address: SocketAddr) -> Result<(), ApplyError> {
        let bind_error = |source| ApplyError::Bind { address, source };
        let socket = listener::open(address, false).and_then(tokio::net::TcpListener::from_std).map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        let _ = self.shared.admin_addr.set(local);
        tracing::info!(address = %local, "admin listening");
        tokio::spawn(crate::admin::serve(socket, Arc::clone(&self.shared)));
        Ok(())
    }

    /// Where the admin endpoints are served, if `admin.bind` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr.get().copied()
    }

    /// The shared state (for the admin endpoints).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The current cluster view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Addresses actually bound for `frontend` (resolves port 0).
    pub fn local_addrs(&self, frontend: &str) -> Vec<SocketAddr> {
        let listeners = self.shared.listeners.lock().expect("listener map poisoned");
        let mut addrs: Vec<SocketAddr> =
            listeners.values().filter(|slot| slot.frontend.load().name == frontend).map(|slot| slot.local).collect();
        addrs.sort();
        addrs
    }

    /// The first bound address of `frontend`; panics when it has none (for tests and tools).
    pub fn local_addr(&self, frontend: &str) -> SocketAddr {
        self.local_addrs(frontend).first().copied().unwrap_or_else(|| panic!("frontend {frontend:?} is not listening"))
    }

    /// Re-reads the config file and applies it; on any error the old config stays.
    pub async fn reload(&self) -> Result<u64, ApplyError> {
        let Some(path) = self.shared.config_path.clone() else {
            return Err(ApplyError::Config(ConfigError::Invalid(vec![crate::config::Issue::new(
                "",
                "no config file to reload from",
            )])));
        };
        let result = match Config::load(&path) {
            Ok(config) => self.apply(config).await,
            Err(err) => Err(err.into()),
        };
        self.record_reload(&result);
        result
    }

    /// Applies a new config: validate and compile fully, bind new addresses, then swap.
    pub async fn apply(&self, config: Config) -> Result<u64, ApplyError> {
        let _serial = self.shared.reload_lock.lock().await;
        if self.shared.shutdown.is_cancelled() {
            return Err(ApplyError::ShuttingDown);
        }
        let previous = self.shared.snapshot.load_full();
        let next = Arc::new(cluster::compile(Arc::new(config), Some(&previous))?);
        if next.admin != previous.admin {
            tracing::warn!(
                running = ?self.admin_addr(),
                configured = ?next.admin,
                "admin.bind changed; the admin listener moves only at restart"
            );
        }
        self.sync_listeners(&next)?;
        let generation = next.generation;
        tracing::info!(generation, "config applied");
        Ok(generation)
    }

    fn record_reload(&self, result: &Result<u64, ApplyError>) {
        let stats = &self.shared.reloads;
        let mut last_errors = stats.last_errors.lock().expect("reload errors poisoned");
        match result {
            Ok(_) => {
                stats.succeeded.fetch_add(1, Relaxed);
                stats.last_ok.store(true, Relaxed);
                last_errors.clear();
            }
            Err(err) => {
                stats.failed.fetch_add(1, Relaxed);
                stats.last_ok.store(false, Relaxed);
                *last_errors = match err {
                    ApplyError::Config(config) => config.lines(),
                    other => vec![other.to_string()],
                };
                for line in last_errors.iter() {
                    tracing::error!(error = %line, "reload rejected; keeping the running config");
                }
            }
        }
    }

    /// Makes the bound sockets match `next`, then publishes `next`. Binds first, so a
    /// bind failure leaves everything as it was; unchanged addresses keep their socket.
    fn sync_listeners(&self, next: &Arc<Snapshot>) -> Result<(), ApplyError> {
        let mut listeners = self.shared.listeners.lock().expect("listener map poisoned");
        let mut opened = Vec::new();
        for frontend in &next.frontends {
            for &address in &frontend.binds {
                if listeners.contains_key(&address) {
                    continue;
                }
                let bind_error = |source| ApplyError::Bind { address, source };
                let group = listener::open_group(address, crate::workers::count()).map_err(bind_error)?;
                let local = group[0].local_addr().map_err(bind_error)?;
                opened.push((address, local, group, Arc::clone(frontend)));
            }
        }
        // Nothing below can fail: publish.
        self.shared.snapshot.store(Arc::clone(next));
        self.shared.health.sync(next, &self.shared.shutdown);
        listeners.retain(|address, slot| match next.frontend_for_bind(*address) {
            Some(frontend) => {
                slot.frontend.store(Arc::clone(frontend));
                true
            }
            None => {
                slot.stop.cancel();
                false
            }
        });
        for (configured, local, group, frontend) in opened {
            let slot = Arc::new(ListenerSlot {
                configured,
                local,
                frontend: ArcSwap::new(frontend),
                stop: self.shared.shutdown.child_token(),
            });
            tracing::info!(frontend = %slot.frontend.load().name, address = %local, "listening");
            // One accept loop per worker, each on its own SO_REUSEPORT socket: a
            // connection is accepted by the thread that will serve it.
            for (worker, socket) in group.into_iter().enumerate() {
                crate::workers::spawn_on(
                    worker,
                    listener::accept_loop(
                        socket,
                        Arc::clone(&slot),
                        self.shared.tasks.clone(),
                        self.shared.shutdown.clone(),
                    ),
                );
            }
            listeners.insert(configured, slot);
        }
        Ok(())
    }

    /// Graceful shutdown: stop accepting, let in-flight work finish for up to the
    /// drain timeout. Returns true when everything finished in time.
    pub async fn shutdown(&self) -> bool {
        self.shared.draining.store(true, Relaxed);
        self.shared.shutdown.cancel();
        self.shared.listeners.lock().expect("listener map poisoned").clear();
        self.shared.tasks.close();
        let drain = self.snapshot().drain;
        let finished = tokio::time::timeout(drain, self.shared.tasks.wait()).await.is_ok();
        if finished {
            tracing::info!("drained; all connections finished");
        } else {
            tracing::warn!(open = self.shared.tasks.len(), ?drain, "drain timeout; closing remaining connections");
        }
        self.shared.finished.cancel();
        finished
    }

    /// Open client connections right now.
    pub fn open_connections(&self) -> usize {
        self.shared.tasks.len()
    }
}

/// Closes pooled server connections that sat idle too long, every half idle timeout,
/// until the instance has finished.
async fn reap_idle_connections(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(crate::proxy::http::IDLE_TIMEOUT / 2);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shared.finished.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let snapshot = shared.snapshot.load_full();
        let closed: usize = snapshot.backends.iter().flat_map(|b| b.members.iter()).map(|m| m.state.pool.reap()).sum();
        if closed > 0 {
            tracing::debug!(closed, "closed idle pooled server connections");
        }
    }
}
