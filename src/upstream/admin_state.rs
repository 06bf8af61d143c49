//! What an operator set on a server through the admin API: a state (ready, drain,
//! maint) and a weight, optionally until a time. Kept in the server's state, so it
//! survives reloads for as long as the server stays in the config (its identity)
//! and vanishes with it; applied when a snapshot is compiled (a drained or
//! maintained server weighs 0 there).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// A server's admin state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Normal: takes traffic as health and weight allow.
    Ready,
    /// No new requests or connections (sticky ones included); in-flight work
    /// finishes; health checks go on.
    Drain,
    /// No traffic at all; idle pooled connections closed.
    Maint,
}

impl AdminState {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// From the API's word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }
}

/// No weight override.
const NO_WEIGHT: u32 = u32::MAX;

/// The override of one server (atomics: read by compiles and reports, written by
/// the admin API one write at a time).
#[derive(Debug)]
pub struct AdminOverride {
    state: AtomicU8,
    weight: AtomicU32,
    /// Unix ms when the override lapses by itself; 0: it does not.
    until_ms: AtomicU64,
}

impl Default for AdminOverride {
    fn default() -> Self {
        AdminOverride { state: AtomicU8::new(0), weight: AtomicU32::new(NO_WEIGHT), until_ms: AtomicU64::new(0) }
    }
}

/// An override as read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminView {
    /// The state set.
    pub state: AdminState,
    /// The weight set, if any.
    pub weight: Option<u32>,
    /// When it lapses, if it does.
    pub until_ms: Option<u64>,
}

impl AdminOverride {
    /// The override now.
    pub fn get(&self) -> AdminView {
        let weight = self.weight.load(Relaxed);
        let until = self.until_ms.load(Relaxed);
        AdminView {
            state: AdminState::from_u8(self.state.load(Relaxed)),
            weight: (weight != NO_WEIGHT).then_some(weight),
            until_ms: (until != 0).then_some(until),
        }
    }

    /// Sets the state and/or the weight (what is `None` stays), lapsing at
    /// `until_ms` (a write without it makes the whole override permanent).
    pub fn set(&self, state: Option<AdminState>, weight: Option<u32>, until_ms: Option<u64>) {
        if let Some(state) = state {
            self.state.store(state.to_u8(), Relaxed);
        }
        if let Some(weight) = weight {
            self.weight.store(weight, Relaxed);
        }
        self.until_ms.store(until_ms.unwrap_or(0), Relaxed);
    }

    /// The weight a compile gives the server whose file says `configured`.
    pub fn weight(&self, configured: u32) -> u32 {
        let view = self.get();
        match view.state {
            AdminState::Drain | AdminState::Maint => 0,
            AdminState::Ready => view.weight.unwrap_or(configured),
        }
    }

    /// Clears an override whose time has come; true when one did.
    pub fn lapse(&self, now_ms: u64) -> bool {
        let until = self.until_ms.load(Relaxed);
        if until == 0 || now_ms < until {
            return false;
        }
        self.state.store(0, Relaxed);
        self.weight.store(NO_WEIGHT, Relaxed);
        self.until_ms.store(0, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_and_maint_weigh_nothing_a_weight_replaces_the_files_and_a_timed_one_lapses() {
        let admin = AdminOverride::default();
        assert_eq!(admin.weight(3), 3);
        admin.set(Some(AdminState::Drain), None, None);
        assert_eq!((admin.get().state, admin.weight(3)), (AdminState::Drain, 0));
        admin.set(Some(AdminState::Ready), Some(7), Some(1_000));
        assert_eq!(admin.weight(3), 7);
        assert!(!admin.lapse(999));
        assert!(admin.lapse(1_000));
        assert_eq!(admin.get(), AdminView { state: AdminState::Ready, weight: None, until_ms: None });
        assert_eq!(admin.weight(3), 3);
        assert!(!admin.lapse(5_000), "nothing left to lapse");
    }
}
