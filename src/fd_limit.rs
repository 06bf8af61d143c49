//! The open-file limit (RLIMIT_NOFILE): raised to the hard limit at start, as
//! HAProxy and nginx do, and the process-wide cap on client connections derived
//! from it.
//!
//! Running out of descriptors hurts in the worst places: a server connect fails
//! (a 502 for a request that had a healthy server) and the accept loop stalls, so
//! clients wait unseen in the kernel's accept queue. The cap keeps the balancer
//! below the limit instead: every admitted client connection has a descriptor left
//! for its server side, and a connection beyond the cap is accepted and refused at
//! once (see `listener`).

use std::io;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the cap at any limit: stdio, each runtime's epoll and
/// wake descriptors, one listening socket per worker and address, the admin
/// listener and its connections, health probes, DNS lookups, reading the config.
pub const FIXED_RESERVE: u64 = 64;

/// One descriptor in this many is also kept out of the cap: room for pooled idle
/// server connections beyond those in use. A new server connection is opened only
/// when the pool of that server (on that worker) has no idle one, so with one
/// server the idle and in-use ones together never exceed the admitted clients;
/// only when load moves between servers or workers do idle connections to the
/// ones left behind linger, for at most the pool's idle timeout (1.5 s). The
/// pools themselves are not counted, as a permit per pooled connection would put
/// a shared counter on every request.
pub const SHARE_RESERVE: u64 = 8;

/// Ceiling used for an unlimited hard limit when /proc/sys/fs/nr_open is unreadable
/// (Linux's default nr_open).
const DEFAULT_NR_OPEN: u64 = 1 << 20;

/// The open-file limit as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The limit in force (`RLIM_INFINITY` for none).
    pub soft: u64,
    /// How far an unprivileged process may raise `soft` (`RLIM_INFINITY` for no bound).
    pub hard: u64,
}

impl NofileLimit {
    /// This process's limit.
    pub fn current() -> io::Result<NofileLimit> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NofileLimit { soft: limit.rlim_cur, hard: limit.rlim_max })
    }

    /// Descriptors the process may have open: the soft limit, or the kernel's
    /// per-process ceiling when it is unlimited.
    pub fn usable(&self) -> u64 {
        if self.soft == libc::RLIM_INFINITY {
            nr_open()
        } else {
            self.soft
        }
    }

    /// The highest soft limit this process may set: the hard limit, or the kernel's
    /// per-process ceiling when that is unlimited.
    fn ceiling(&self) -> u64 {
        if self.hard == libc::RLIM_INFINITY {
            nr_open()
        } else {
            self.hard
        }
    }
}

/// The kernel's ceiling on descriptors per process (setrlimit refuses more).
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN)
}

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// Usable descriptors before.
    pub from: u64,
    /// Usable descriptors now.
    pub to: u64,
}

/// Raises the soft open-file limit to the hard limit (never lowers it). Errors
/// leave the limit as it was.
pub fn raise_nofile() -> io::Result<Raised> {
    let limit = NofileLimit::current()?;
    let from = limit.usable();
    let target = limit.ceiling();
    if limit.soft != libc::RLIM_INFINITY && limit.soft < target {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.hard };
        // SAFETY: setrlimit reads one rlimit from the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Raised { from, to: NofileLimit::current()?.usable() })
}

/// How many client connections fit in `limit` descriptors: each needs one for
/// itself and one for its server side, after [`FIXED_RESERVE`] and one descriptor
/// in [`SHARE_RESERVE`] are set aside. At least 1, so a tiny limit still serves.
///
/// Counted per client connection: an h2c connection with many streams in flight
/// holds a server connection per stream and can use more.
pub fn connection_cap(limit: u64) -> usize {
    let reserve = FIXED_RESERVE.saturating_add(limit / SHARE_RESERVE);
    let pairs = limit.saturating_sub(reserve) / 2;
    usize::try_from(pairs).unwrap_or(usize::MAX).clamp(1, Semaphore::MAX_PERMITS)
}

/// The process-wide cap on open client connections, shared by every accept loop
/// (all frontends, all workers). Cloning shares the same cap.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConnectionCap {
    /// A cap of `max` connections (at least 1, at most what a semaphore can count).
    pub fn new(max: usize) -> ConnectionCap {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionCap { permits: Arc::new(Semaphore::new(max)), max }
    }

    /// The cap for this process's open-file limit as it is now.
    pub fn for_current_limit() -> ConnectionCap {
        match NofileLimit::current() {
            Ok(limit) => ConnectionCap::new(connection_cap(limit.usable())),
            Err(err) => {
                // getrlimit cannot fail for RLIMIT_NOFILE; if it somehow does, do
                // not invent a limit.
                tracing::warn!(%err, "cannot read the open-file limit; client connections are not capped");
                ConnectionCap::new(Semaphore::MAX_PERMITS)
            }
        }
    }

    /// The most client connections open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A place for one more connection, given back when dropped; `None` at the cap.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_a_server_descriptor_per_connection_and_the_reserve() {
        assert_eq!(connection_cap(256), 80); // (256 - 64 - 32) / 2
        assert_eq!(connection_cap(1024), 416); // (1024 - 64 - 128) / 2
        assert_eq!(connection_cap(65_536), 28_640); // (65536 - 64 - 8192) / 2
        assert_eq!(connection_cap(1 << 20), 458_720);
        for limit in [100, 256, 1000, 1024, 4096, 10_000, 65_536, 1 << 20, 1 << 30] {
            let cap = connection_cap(limit) as u64;
            assert!(2 * cap + FIXED_RESERVE + limit / SHARE_RESERVE <= limit, "limit {limit}: cap {cap}");
        }
    }

    #[test]
    fn a_tiny_or_huge_limit_still_gives_a_usable_cap() {
        assert_eq!(connection_cap(0), 1);
        assert_eq!(connection_cap(FIXED_RESERVE), 1);
        assert_eq!(connection_cap(u64::MAX), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn an_unlimited_soft_limit_counts_as_the_kernel_ceiling() {
        let unlimited = NofileLimit { soft: libc::RLIM_INFINITY, hard: libc::RLIM_INFINITY };
        assert_eq!(unlimited.usable(), nr_open());
        assert!(nr_open() > 0);
    }

    #[test]
    fn admitted_connections_hold_their_place_until_dropped() {
        let cap = ConnectionCap::new(2);
        let shared = cap.clone();
        let first = cap.try_admit().expect("room for one");
        let second = shared.try_admit().expect("room for two");
        assert_eq!(cap.open(), 2);
        assert!(cap.try_admit().is_none(), "a clone shares the cap");
        drop(first);
        assert_eq!(shared.open(), 1);
        assert!(cap.try_admit().is_some());
        drop(second);
        assert_eq!(ConnectionCap::new(0).max(), 1);
    }

    #[test]
    fn raising_reaches_the_hard_limit_and_never_lowers() {
        let before = NofileLimit::current().unwrap();
        let raised = raise_nofile().unwrap();
        let after = NofileLimit::current().unwrap();
        assert_eq!(raised.from, before.usable());
        assert_eq!(raised.to, after.usable());
        assert!(raised.to >= raised.from);
        assert_eq!(after.hard, before.hard, "the hard limit is left alone");
        if before.hard != libc::RLIM_INFINITY {
            assert_eq!(after.soft, before.hard);
        }
    }
}
