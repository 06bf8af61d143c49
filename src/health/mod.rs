//! Active health checks: one task per checked server, kept in step with the snapshot.
//!
//! The tasks alone own the rise/fall counters; the data path only reads the up/down
//! verdict from [`ServerState`]. [`HealthChecks::sync`] runs after every snapshot swap:
//! it starts tasks for new servers, restarts them when a backend's check changed, stops
//! them for servers that left the config, and marks servers of unchecked backends up.

mod machine;
mod probe;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub use machine::RiseFall;
pub use probe::{Probe, ProbeError};

use crate::cluster::{CheckSpec, Snapshot};
use crate::config::ProxyVersion;
use crate::upstream::{ServerKey, ServerState};

/// The running health tasks, by server.
#[derive(Debug, Default)]
pub struct HealthChecks {
    running: Mutex<HashMap<ServerKey, Running>>,
}

#[derive(Debug)]
struct Running {
    spec: Arc<CheckSpec>,
    state: Arc<ServerState>,
    /// The server's `send_proxy`: a change restarts its probes.
    send_proxy: Option<ProxyVersion>,
    stop: CancellationToken,
}

impl HealthChecks {
    /// Makes the running tasks match `snapshot`. Tasks are children of `parent`, so
    /// cancelling it stops them all.
    pub fn sync(&self, snapshot: &Snapshot, parent: &CancellationToken) {
        let mut running = self.running.lock().expect("health task map poisoned");
        let mut wanted = HashMap::new();
        for backend in &snapshot.backends {
            let Some(spec) = &backend.health_check else {
                for member in &backend.members {
                    if member.state.set_up(true) {
                        tracing::info!(backend = %backend.name, server = %member.name, "health check removed; server is UP");
                        member.state.offer_to_waiters();
                    }
                }
                continue;
            };
            for member in &backend.members {
                let task = (Arc::clone(spec), Arc::clone(&member.state), member.tls_name.clone(), member.send_proxy);
                wanted.insert(member.state.key.clone(), task);
            }
        }
        running.retain(|key, task| {
            let keep = wanted.get(key).is_some_and(|(spec, state, _, send_proxy)| {
                *task.spec == **spec && Arc::ptr_eq(&task.state, state) && task.send_proxy == *send_proxy
            });
            if !keep {
                task.stop.cancel();
            }
            keep
        });
        for (key, (spec, state, tls_name, send_proxy)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let stop = parent.child_token();
            tokio::spawn(task::run(Arc::clone(&state), Arc::clone(&spec), tls_name, send_proxy, stop.clone()));
            running.insert(key, Running { spec, state, send_proxy, stop });
        }
    }

    /// Servers with a running health task.
    pub fn len(&self) -> usize {
        self.running.lock().expect("health task map poisoned").len()
    }

    /// True when no server is being checked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        if let Ok(running) = self.running.get_mut() {
            for task in running.values() {
                task.stop.cancel();
            }
        }
    }
}
