//! What discovery has found: the current members of every `discover` entry.
//!
//! Discovery tasks (src/discovery/) write here; [`compile`](super::compile) reads
//! it to turn each entry into one server per member. One registry serves every
//! snapshot of a process (each carries it over to the next), so a reload from
//! the file and a change found by DNS both compile from the latest answers. The
//! data path never reads it: it sees members only through the snapshot.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::config::Discover;

/// One `discover` entry of the config: a change to any part is a new entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// The backend it belongs to.
    pub backend: String,
    /// The entry's `name`; its members are named `<name>/<ip>` (srv: `<name>/<ip>:<port>`).
    pub server: String,
    /// How its address is looked up.
    pub kind: Discover,
    /// The entry's `address` as written (`host:port`, or an SRV name).
    pub address: String,
}

impl EntryKey {
    /// The name a member at `addr` gets.
    pub fn member_name(&self, addr: SocketAddr) -> String {
        match self.kind {
            Discover::Dns => format!("{}/{}", self.server, addr.ip()),
            Discover::Srv => format!("{}/{}", self.server, addr),
        }
    }
}

/// One member found for an entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// From the SRV record (scaled into 1..=256); `None`: the entry's weight.
    pub weight: Option<u32>,
    /// An SRV target of a less preferred priority: used like a `backup` server.
    pub backup: bool,
    /// The SRV target's host name (TLS server name); `None` for `dns` entries,
    /// which use the host of their address.
    pub host: Option<Arc<str>>,
}

/// The last good answer for an entry, and its error count.
#[derive(Debug, Default)]
struct EntryState {
    targets: Arc<[Target]>,
    errors: u64,
}

/// Every entry's current members (see the module doc).
#[derive(Debug, Default)]
pub struct Discovered {
    entries: Mutex<HashMap<EntryKey, EntryState>>,
}

/// One entry as the metrics and status page report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReport {
    /// The entry.
    pub key: EntryKey,
    /// Members it resolves to now (the held set while lookups fail).
    pub servers: usize,
    /// Failed lookups since the entry was configured.
    pub errors: u64,
}

impl Discovered {
    fn entries(&self) -> MutexGuard<'_, HashMap<EntryKey, EntryState>> {
        // Each write replaces whole values: still consistent after a panic.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The members `key` resolves to now (none before its first answer).
    pub fn targets(&self, key: &EntryKey) -> Arc<[Target]> {
        self.entries().get(key).map(|state| Arc::clone(&state.targets)).unwrap_or_else(|| Arc::from([]))
    }

    /// Records an answer (sorted here, so order in DNS does not matter); true when
    /// the members changed, which is when the snapshot must be compiled again.
    pub fn set(&self, key: &EntryKey, mut targets: Vec<Target>) -> bool {
        targets.sort();
        targets.dedup_by(|a, b| a.addr == b.addr);
        let mut entries = self.entries();
        let state = entries.entry(key.clone()).or_default();
        if *state.targets == *targets {
            return false;
        }
        state.targets = targets.into();
        true
    }

    /// Counts a failed lookup of `key`.
    pub fn count_error(&self, key: &EntryKey) {
        self.entries().entry(key.clone()).or_default().errors += 1;
    }

    /// Forgets entries the config no longer has.
    pub fn retain(&self, configured: &HashSet<EntryKey>) {
        self.entries().retain(|key, _| configured.contains(key));
    }

    /// Every entry with an answer or an error so far, sorted by backend and name.
    pub fn report(&self) -> Vec<EntryReport> {
        let mut report: Vec<EntryReport> = (self.entries().iter())
            .map(|(key, state)| EntryReport { key: key.clone(), servers: state.targets.len(), errors: state.errors })
            .collect();
        report.sort_by(|a, b| (&a.key.backend, &a.key.server).cmp(&(&b.key.backend, &b.key.server)));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EntryKey {
        EntryKey { backend: "app".into(), server: "pods".into(), kind: Discover::Dns, address: "app.svc:80".into() }
    }

    fn target(addr: &str) -> Target {
        Target { addr: addr.parse().unwrap(), weight: None, backup: false, host: None }
    }

    #[test]
    fn an_answer_in_another_order_is_no_change() {
        let found = Discovered::default();
        assert!(found.set(&key(), vec![target("10.0.0.1:80"), target("10.0.0.2:80")]));
        assert!(!found.set(&key(), vec![target("10.0.0.2:80"), target("10.0.0.1:80")]));
        assert!(found.set(&key(), vec![target("10.0.0.2:80")]));
        assert_eq!(found.targets(&key()).len(), 1);
    }

    #[test]
    fn errors_are_counted_and_entries_left_out_of_the_config_forgotten() {
        let found = Discovered::default();
        found.count_error(&key());
        found.count_error(&key());
        assert_eq!(found.report()[0].errors, 2);
        found.retain(&HashSet::new());
        assert!(found.report().is_empty());
    }

    #[test]
    fn member_names_carry_the_entry_name() {
        let addr = "[::1]:8080".parse().unwrap();
        assert_eq!(key().member_name(addr), "pods/::1");
        assert_eq!(EntryKey { kind: Discover::Srv, ..key() }.member_name(addr), "pods/[::1]:8080");
    }
}
