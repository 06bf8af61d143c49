//! Upstream state: what Fulcrum keeps per server across snapshots — health,
//! counters and idle keep-alive connections. It sits below balancing and the
//! cluster view, which read it, and knows nothing of either.

mod admin_state;
mod pool;
mod server_state;
mod wait_queue;

pub use admin_state::{AdminOverride, AdminState, AdminView};
pub use pool::{ConnectGate, FailedConnect, Pool, PoolSlot, Pooled, Worker, IDLE_TIMEOUT, MAX_IDLE};
pub use server_state::{unix_ms, ActiveGuard, CheckResult, ServerKey, ServerState, DURATION_BUCKETS};
pub use wait_queue::{Ticket, WaitQueue, Waiters};
