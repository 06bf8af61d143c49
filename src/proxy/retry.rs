//! The retry policy shared by the TCP and HTTP paths: pick a server, try it, and
//! on a failure that left nothing with the server, try another one, up to
//! `backend.retries` more times.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;

use super::error::ProxyError;
use crate::balance::{Member, Tried};
use crate::cluster::Backend;
use crate::log_limit::LogLimit;
use crate::upstream::ActiveGuard;

/// Failed attempts handed to another server, across every backend.
static RETRYING: LogLimit = LogLimit::per_second();

/// What one attempt on one server came to.
pub enum Attempt<T, S> {
    /// It worked.
    Done(T),
    /// Nothing reached the server: another may be tried, with `S` handed back.
    Retry(ProxyError, S),
    /// Something reached the server: no other server may get it.
    Fail(ProxyError),
}

/// Runs `attempt` on servers of `backend` picked for `key` (each with a slot
/// reserved on the server, see [`super::slot::acquire`]) until one is `Done`,
/// one `Fail`s, the retries are used up, or no untried server is left. `carry`
/// is what an attempt consumes and a retry gets back (the request, for HTTP).
/// Returns the index of the server that answered.
pub async fn on_servers<'b, T, S, F, Fut>(
    backend: &'b Backend,
    key: Option<u64>,
    mut carry: S,
    mut attempt: F,
) -> Result<(usize, T), ProxyError>
where
    F: FnMut(&'b Member, ActiveGuard, S) -> Fut,
    Fut: Future<Output = Attempt<T, S>>,
{
    let mut tried = Tried::default();
    let mut last_error = None;
    for round in 0..=backend.retries {
        let (index, slot) = match super::slot::acquire(backend, key, &tried).await {
            Ok(found) => found,
            // Nothing left to try: the first failure says what went wrong.
            Err(err @ ProxyError::NoServer { .. }) if last_error.is_some() => {
                drop(err);
                break;
            }
            Err(err) => return Err(err),
        };
        let member = &backend.members[index];
        if round > 0 {
            backend.stats.retries.fetch_add(1, Relaxed);
        }
        tried.insert(index);
        match attempt(member, slot, carry).await {
            Attempt::Done(value) => return Ok((index, value)),
            Attempt::Fail(err) => return Err(err),
            Attempt::Retry(err, back) => {
                if let Some(repeats) = RETRYING.check() {
                    tracing::warn!(backend = %backend.name, server = %member.name, error = %err, "connect failed; trying another server{repeats}");
                }
                carry = back;
                last_error = Some(err);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoServer { backend: backend.name.clone() }))
}
