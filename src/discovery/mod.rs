//! DNS and SRV discovery: servers entries with `discover` stand for whatever
//! their name resolves to.
//!
//! One task per entry looks its name up on its own schedule ([`follow`]) and
//! records the members in the process's [`Discovered`](crate::cluster::discovered::Discovered) registry; a change wakes
//! the instance, which compiles the running config again and swaps the snapshot,
//! exactly like a reload (the data path takes no lock and sees members only
//! through the snapshot). A member keeps its health and counters while its
//! address stays: it is the same server identity to `compile`.

mod follow;
mod lookup;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::discovered::EntryKey;
use crate::cluster::Snapshot;
use crate::config::{self, Config};
pub use follow::Timing;

/// The running discovery tasks of an instance.
#[derive(Debug, Default)]
pub struct Discovery {
    running: Mutex<Running>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Running {
    /// The `resolver:` the tasks were started with; another one restarts them all.
    resolver: Option<config::Resolver>,
    tasks: HashMap<EntryKey, CancellationToken>,
}

impl Discovery {
    /// Notified when some entry's members changed: compile again.
    pub fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        // Changed only by sync, whole entries at a time: consistent after a panic.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the tasks match `snapshot`'s config: starts one for each new entry,
    /// stops those of entries it no longer has (all of them when `resolver:`
    /// changed). Tasks are children of `stop` (the instance's shutdown).
    pub fn sync(&self, snapshot: &Snapshot, stop: &CancellationToken) {
        let wanted = entries(&snapshot.config);
        snapshot.discovered.retain(&wanted);
        let mut running = self.running();
        if running.resolver != snapshot.config.resolver {
            for (_, task) in running.tasks.drain() {
                task.cancel();
            }
            running.resolver = snapshot.config.resolver.clone();
        }
        running.tasks.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                task.cancel();
            }
            keep
        });
        let new: Vec<EntryKey> = wanted.into_iter().filter(|key| !running.tasks.contains_key(key)).collect();
        if new.is_empty() {
            return;
        }
        let settings = running.resolver.clone();
        let resolver = lookup::resolver(settings.as_ref()).map(Arc::new);
        if let Err(err) = &resolver {
            tracing::error!(error = %err, "cannot set up the DNS resolver; discovered servers cannot be found");
        }
        let settings = settings.unwrap_or_default();
        let timing = Timing {
            hold: settings.hold.map_or(config::Resolver::DEFAULT_HOLD, |d| d.0),
            min_ttl: settings.min_ttl.map_or(config::Resolver::DEFAULT_MIN_TTL, |d| d.0),
            max_ttl: settings.max_ttl.map_or(config::Resolver::DEFAULT_MAX_TTL, |d| d.0),
        };
        for key in new {
            let task = stop.child_token();
            running.tasks.insert(key.clone(), task.clone());
            let follow = follow::Follow {
                key,
                resolver: resolver.clone(),
                timing,
                discovered: Arc::clone(&snapshot.discovered),
                changed: Arc::clone(&self.changed),
                stop: task,
            };
            tokio::spawn(follow.run());
        }
    }
}

/// Every `discover` entry of `config`.
fn entries(config: &Config) -> HashSet<EntryKey> {
    (config.backends.iter())
        .flat_map(|b| b.servers.iter().map(move |s| (b, s)))
        .filter_map(|(b, s)| {
            s.discover.map(|kind| EntryKey {
                backend: b.name.clone(),
                server: s.name.clone(),
                kind,
                address: s.address.clone(),
            })
        })
        .collect()
}
