//! A running Fulcrum: the current snapshot, the listeners, the connection tasks,
//! and the operations on them (reload, graceful shutdown).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{self, Live, LiveView, Snapshot};
use crate::config::{Config, ConfigError};
use crate::fd_limit::ConnectionCap;
use crate::health::HealthChecks;
use crate::listener::{self, ListenerSlot};
use crate::upstream::IDLE_TIMEOUT;
use crate::workers::Workers;

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
    /// Loading or compiling the config panicked: a bug, reported as a failed
    /// reload so the running config keeps serving.
    #[error("internal error while loading the config: {0}")]
    Internal(String),
}

/// State shared by the instance handle, the accept loops and the admin endpoints.
#[derive(Debug)]
pub struct Shared {
    /// The running snapshot, reload outcomes and drain state.
    pub live: Arc<Live>,
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
    /// One health task per checked server.
    pub health: HealthChecks,
    /// One lookup task per `discover` entry.
    pub discovery: crate::discovery::Discovery,
    /// Where the admin listener is bound, if configured.
    admin_addr: std::sync::OnceLock<SocketAddr>,
}

/// How to start an instance, beyond the config: settings of the process rather
/// than of the file, fixed for the instance's life.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Most client connections open at once across all frontends; `None`: derived
    /// from the open-file limit when the instance starts (see `fd_limit`).
    pub connection_cap: Option<usize>,
}

/// Handle to a running balancer.
#[derive(Debug, Clone)]
pub struct Instance {
    shared: Arc<Shared>,
}

impl Instance {
    /// Loads the config file, binds every listener and starts serving on `workers`.
    pub async fn start_from_file(path: &Path, workers: Workers) -> Result<Instance, ApplyError> {
        let owned = path.to_path_buf();
        let snapshot = off_runtime(move || Ok(cluster::compile(Arc::new(Config::load(&owned)?), None)?)).await?;
        Instance::serve(snapshot, Some(path.to_path_buf()), workers, StartOptions::default())
    }

    /// Starts serving `config` on the current runtime; `path` is where a later
    /// [`Instance::reload`] reads from.
    pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Instance, ApplyError> {
        Instance::start_with(config, path, StartOptions::default()).await
    }

    /// [`Instance::start`] with process settings other than the defaults.
    pub async fn start_with(
        config: Config,
        path: Option<PathBuf>,
        options: StartOptions,
    ) -> Result<Instance, ApplyError> {
        let snapshot = off_runtime(move || Ok(cluster::compile(Arc::new(config), None)?)).await?;
        Instance::serve(snapshot, path, Workers::none(), options)
    }

    fn serve(
        first: Snapshot,
        path: Option<PathBuf>,
        workers: Workers,
        options: StartOptions,
    ) -> Result<Instance, ApplyError> {
        let connection_cap = options.connection_cap.map_or_else(ConnectionCap::for_current_limit, ConnectionCap::new);
        let shared = Arc::new(Shared {
            live: Arc::new(Live::new(first, connection_cap, Arc::new(workers))),
            config_path: path,
            listeners: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            health: HealthChecks::default(),
            discovery: crate::discovery::Discovery::default(),
            admin_addr: std::sync::OnceLock::new(),
        });
        let instance = Instance { shared };
        let first = instance.snapshot();
        instance.sync_listeners(&first, None)?;
        if let Some(address) = first.admin {
            let (control, requests) = crate::admin::Control::new();
            instance.start_admin(address, control)?;
            tokio::spawn(Instance { shared: Arc::clone(&instance.shared) }.serve_control(requests));
        }
        tokio::spawn(reap_idle_connections(Arc::clone(&instance.shared.live)));
        tokio::spawn(Instance { shared: Arc::clone(&instance.shared) }.follow_discovery());
        tokio::spawn(crate::trim::after_bursts(instance.shared.tasks.clone(), Arc::clone(&instance.shared.live)));
        tracing::info!(
            generation = first.generation,
            frontends = first.frontends.len(),
            backends = first.backends.len(),
            workers = instance.shared.live.workers.count(),
            "serving"
        );
        Ok(instance)
    }

    /// Binds the admin listener and serves it until the instance has finished.
    fn start_admin(&self, address: SocketAddr, control: crate::admin::Control) -> Result<(), ApplyError> {
        let bind_error = |source| ApplyError::Bind { address, source };
        let socket = listener::open(address, false).and_then(tokio::net::TcpListener::from_std).map_err(bind_error)?;
        let local = socket.local_addr().map_err(bind_error)?;
        let _ = self.shared.admin_addr.set(local);
        tracing::info!(address = %local, "admin listening");
        tokio::spawn(crate::admin::serve(socket, LiveView::new(Arc::clone(&self.shared.live)), control));
        Ok(())
    }

    /// Where the admin endpoints are served, if `admin.bind` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr.get().copied()
    }

    /// The shared state (health tasks, connection tasks, shutdown token).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The running snapshot, reload outcomes and drain state.
    pub fn live(&self) -> &Arc<Live> {
        &self.shared.live
    }

    /// The current cluster view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.live.snapshot.load_full()
    }

    /// Addresses actually bound for `frontend` (resolves port 0).
    pub fn local_addrs(&self, frontend: &str) -> Vec<SocketAddr> {
        let listeners = self.listeners();
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
        let result = match self.shared.config_path.clone() {
            Some(path) => self.apply_with(move |previous| compile_next(Config::load(&path)?, previous)).await,
            None => Err(ApplyError::Config(ConfigError::Invalid(vec![crate::config::Issue::new(
                "",
                "no config file to reload from",
            )]))),
        };
        self.record_reload(&result);
        result
    }

    /// Applies a new config: validate and compile fully, bind new addresses, then swap.
    pub async fn apply(&self, config: Config) -> Result<u64, ApplyError> {
        self.apply_with(move |previous| compile_next(config, previous)).await
    }

    /// Builds the next snapshot with `build` (off the async runtime: reading files,
    /// resolving server names and compiling may block), then binds and publishes it.
    async fn apply_with(
        &self,
        build: impl FnOnce(&Snapshot) -> Result<Snapshot, ApplyError> + Send + 'static,
    ) -> Result<u64, ApplyError> {
        let _serial = self.shared.reload_lock.lock().await;
        if self.shared.shutdown.is_cancelled() {
            return Err(ApplyError::ShuttingDown);
        }
        let previous = self.snapshot();
        let base = Arc::clone(&previous);
        let next = Arc::new(off_runtime(move || build(&base)).await?);
        if next.admin != previous.admin {
            tracing::warn!(
                running = ?self.admin_addr(),
                configured = ?next.admin,
                "admin.bind changed; the admin listener moves only at restart"
            );
        }
        self.sync_listeners(&next, Some(&previous))?;
        let generation = next.generation;
        tracing::info!(generation, "config applied");
        Ok(generation)
    }

    /// Runs what the admin API asks, one operation at a time, and lapses timed
    /// admin overrides (checked every second), until the instance has finished.
    async fn serve_control(self, mut requests: crate::admin::Requests) {
        use crate::admin::Op;
        let finished = self.shared.live.finished.clone();
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let op = tokio::select! {
                _ = finished.cancelled() => return,
                _ = ticker.tick() => {
                    let now = crate::upstream::unix_ms();
                    let snapshot = self.snapshot();
                    let lapsed: Vec<String> = (snapshot.backends.iter())
                        .flat_map(|b| b.members.iter().map(move |m| (b, m)))
                        .filter(|(_, m)| m.state.admin.lapse(now))
                        .map(|(b, m)| {
                            m.state.pool.suspend(false);
                            format!("{}/{}", b.name, m.name)
                        })
                        .collect();
                    if lapsed.is_empty() {
                        continue;
                    }
                    tracing::info!(servers = ?lapsed, "admin override lapsed; back to the config's state and weight");
                    if let Err(err) = self.reapply().await {
                        tracing::error!(error = %err, "cannot apply the lapsed override");
                    }
                    continue;
                }
                op = requests.recv() => match op {
                    Some(op) => op,
                    None => return,
                },
            };
            match op {
                Op::Reapply(done) => {
                    let _ = done.send(self.reapply().await.map_err(|err| err.to_string()));
                }
                Op::Reload(done) => {
                    let outcome = self.reload().await.map_err(|err| match err {
                        ApplyError::Config(config) => config.lines(),
                        other => vec![other.to_string()],
                    });
                    let _ = done.send(outcome);
                }
                Op::Check(text, done) => {
                    let base = (self.shared.config_path.as_deref())
                        .and_then(|path| path.parent())
                        .filter(|dir| !dir.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."))
                        .to_path_buf();
                    let checked = tokio::task::spawn_blocking(move || Config::parse_in(&text, &base)).await;
                    let errors = match checked {
                        Ok(Ok(_)) => Vec::new(),
                        Ok(Err(err)) => err.lines(),
                        Err(err) => vec![format!("the check failed: {err}")],
                    };
                    let _ = done.send(errors);
                }
            }
        }
    }

    /// Compiles the running config again whenever discovery found other members
    /// for an entry (several changes close together make one swap), until shutdown.
    async fn follow_discovery(self) {
        let changed = self.shared.discovery.changed();
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            if let Err(err) = self.reapply().await {
                tracing::error!(error = %err, "cannot apply the discovered servers");
            }
        }
    }

    /// Compiles the running config again (admin overrides applied) and swaps it in.
    async fn reapply(&self) -> Result<u64, ApplyError> {
        let config = (*self.snapshot().config).clone();
        self.apply(config).await
    }

    fn record_reload(&self, result: &Result<u64, ApplyError>) {
        let stats = &self.shared.live.reloads;
        match result {
            Ok(_) => stats.record_success(),
            Err(err) => {
                let lines = match err {
                    ApplyError::Config(config) => config.lines(),
                    other => vec![other.to_string()],
                };
                for line in &lines {
                    tracing::error!(error = %line, "reload rejected; keeping the running config");
                }
                stats.record_failure(lines);
            }
        }
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<ListenerSlot>>> {
        // The map is only ever changed whole-entry at a time: still valid after a panic.
        self.shared.listeners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the bound sockets match `next`, then publishes `next`. Binds first, so a
    /// bind failure leaves everything as it was; unchanged addresses keep their socket.
    /// Servers of `previous` that `next` no longer has get their idle pooled
    /// connections closed.
    fn sync_listeners(&self, next: &Arc<Snapshot>, previous: Option<&Snapshot>) -> Result<(), ApplyError> {
        let workers = &self.shared.live.workers;
        let mut listeners = self.listeners();
        let mut opened = Vec::new();
        for frontend in &next.frontends {
            for &address in &frontend.binds {
                if listeners.contains_key(&address) {
                    continue;
                }
                let bind_error = |source| ApplyError::Bind { address, source };
                let group = listener::open_group(address, workers.count()).map_err(bind_error)?;
                let local = group[0].local_addr().map_err(bind_error)?;
                opened.push((address, local, group, Arc::clone(frontend)));
            }
        }
        // Nothing below can fail: publish.
        self.shared.live.snapshot.store(Arc::clone(next));
        self.shared.health.sync(next, &self.shared.shutdown);
        self.shared.discovery.sync(next, &self.shared.shutdown);
        if let Some(previous) = previous {
            retire_removed_servers(previous, next);
        }
        // The servers' limits as the new config has them (their state is shared with
        // the previous snapshot, so only once it is published); new servers, or
        // raised limits, make room for whoever waits.
        for backend in &next.backends {
            backend.stats.queue.set_enabled(backend.queue.is_some());
            for member in &backend.members {
                member.state.limit.store(member.max_connections, Relaxed);
                member.state.offer_to_waiters();
            }
        }
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
                frontend: Arc::new(ArcSwap::new(frontend)),
                stop: self.shared.shutdown.child_token(),
            });
            tracing::info!(frontend = %slot.frontend.load().name, address = %local, "listening");
            // One accept loop per worker, each on its own SO_REUSEPORT socket: a
            // connection is accepted by the thread that will serve it.
            for (worker, socket) in group.into_iter().enumerate() {
                let accepting = listener::accept_loop(
                    socket,
                    Arc::clone(&slot),
                    worker,
                    Arc::clone(workers),
                    self.shared.tasks.clone(),
                    self.shared.live.connection_cap.clone(),
                );
                workers.spawn_on(worker, accepting);
            }
            listeners.insert(configured, slot);
        }
        Ok(())
    }

    /// Graceful shutdown: stop accepting, let in-flight work finish for up to the
    /// drain timeout. Returns true when everything finished in time.
    pub async fn shutdown(&self) -> bool {
        self.shared.live.draining.store(true, Relaxed);
        self.shared.shutdown.cancel();
        self.listeners().clear();
        self.shared.tasks.close();
        let drain = self.snapshot().drain;
        let finished = tokio::time::timeout(drain, self.shared.tasks.wait()).await.is_ok();
        if finished {
            tracing::info!("drained; all connections finished");
        } else {
            tracing::warn!(open = self.shared.tasks.len(), ?drain, "drain timeout; closing remaining connections");
        }
        self.shared.live.finished.cancel();
        finished
    }

    /// Open client connections per worker thread.
    pub fn worker_loads(&self) -> Vec<usize> {
        self.shared.live.workers.loads()
    }

    /// Open client connections right now (parked ones included).
    pub fn open_connections(&self) -> usize {
        self.shared.tasks.len()
    }

    /// Idle plain client connections waiting in the workers' parks right now.
    pub fn parked_connections(&self) -> usize {
        self.shared.live.workers.parked()
    }
}

/// Compiles `config` as the successor of `previous`.
fn compile_next(config: Config, previous: &Snapshot) -> Result<Snapshot, ApplyError> {
    Ok(cluster::compile(Arc::new(config), Some(previous))?)
}

/// Runs `work` on the blocking pool: loading a config reads files and resolves
/// server names, which must not stall the connections served on this runtime. A
/// panic in it (a bug) becomes an error, so a reload fails and the old config stays.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApplyError> + Send + 'static,
) -> Result<T, ApplyError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => {
            let reason = match err.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_string()),
                Err(err) => err.to_string(),
            };
            tracing::error!(%reason, "loading the config panicked");
            Err(ApplyError::Internal(reason))
        }
    }
}

/// Closes the idle pooled connections of servers `previous` had and `next` has not
/// (in-flight requests finish, and their connections are not pooled again).
fn retire_removed_servers(previous: &Snapshot, next: &Snapshot) {
    let kept: std::collections::HashSet<*const crate::upstream::ServerState> =
        next.backends.iter().flat_map(|b| b.members.iter()).map(|m| Arc::as_ptr(&m.state)).collect();
    for backend in &previous.backends {
        for member in backend.members.iter().filter(|m| !kept.contains(&Arc::as_ptr(&m.state))) {
            let closed = member.state.pool.retire();
            tracing::debug!(backend = %backend.name, server = %member.name, closed, "server left the config; idle connections closed");
        }
    }
}

/// Closes pooled server connections that sat idle too long, every half idle timeout,
/// until the instance has finished.
async fn reap_idle_connections(live: Arc<Live>) {
    let mut ticker = tokio::time::interval(IDLE_TIMEOUT / 2);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = live.finished.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let snapshot = live.snapshot.load_full();
        let closed: usize = snapshot.backends.iter().flat_map(|b| b.members.iter()).map(|m| m.state.pool.reap()).sum();
        if closed > 0 {
            tracing::debug!(closed, "closed idle pooled server connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_loading_becomes_an_error() {
        let result: Result<(), ApplyError> = off_runtime(|| panic!("compile bug")).await;
        match result {
            Err(ApplyError::Internal(reason)) => assert!(reason.contains("compile bug"), "{reason}"),
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
}
