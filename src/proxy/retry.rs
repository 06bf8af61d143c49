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
    /// Nothing reached the server, or it failed in a way `retry_on` lists and the
    /// request may be sent again: another server may be tried, with `S` handed back.
    Retry(ProxyError, S),
    /// The server answered with a status `retry_on` lists: another server gets
    /// `S` if there is one left; else this answer stands.
    RetryOr(T, S),
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
    carry: S,
    attempt: F,
) -> Result<(usize, T), ProxyError>
where
    T: Verdict,
    F: FnMut(&'b Member, ActiveGuard, S) -> Fut,
    Fut: Future<Output = Attempt<T, S>>,
{
    on_servers_preferring(backend, key, None, carry, attempt).await
}

/// [`on_servers`], trying server `prefer` first when it can take the request
/// (a sticky session's server).
pub async fn on_servers_preferring<'b, T, S, F, Fut>(
    backend: &'b Backend,
    key: Option<u64>,
    mut prefer: Option<usize>,
    mut carry: S,
    mut attempt: F,
) -> Result<(usize, T), ProxyError>
where
    T: Verdict,
    F: FnMut(&'b Member, ActiveGuard, S) -> Fut,
    Fut: Future<Output = Attempt<T, S>>,
{
    let mut tried = Tried::default();
    let mut last_error = None;
    // A retryable answer kept in case no other server is left.
    let mut answered: Option<(usize, T)> = None;
    for round in 0..=backend.retries {
        let (index, slot) = match super::slot::acquire(backend, key, prefer.take(), &tried).await {
            Ok(found) => found,
            // Nothing left to try: the server's own answer, else what went wrong.
            Err(err @ ProxyError::NoServer { .. }) if last_error.is_some() || answered.is_some() => {
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
        // Pinned where it is made (see `ConnContext::handle`).
        match std::pin::pin!(attempt(member, slot, carry)).await {
            Attempt::Done(value) => {
                super::outlier::record(backend, index, value.server_failed());
                return Ok((index, value));
            }
            Attempt::RetryOr(value, back) => {
                super::outlier::record(backend, index, value.server_failed());
                if let Some(repeats) = RETRYING.check() {
                    tracing::warn!(backend = %backend.name, server = %member.name, "server answered with a status retry_on lists; trying another server{repeats}");
                }
                carry = back;
                answered = Some((index, value));
                continue;
            }
            Attempt::Fail(err) => {
                super::outlier::record(backend, index, err.is_server_failure());
                return Err(err);
            }
            Attempt::Retry(err, back) => {
                super::outlier::record(backend, index, err.is_server_failure());
                if err.is_connect_failure() && !backend.retry_on.connect_failure {
                    return Err(err);
                }
                if let Some(repeats) = RETRYING.check() {
                    tracing::warn!(backend = %backend.name, server = %member.name, error = %err, "attempt failed; trying another server{repeats}");
                }
                carry = back;
                last_error = Some(err);
            }
        }
    }
    match (answered, last_error) {
        // A server's own answer beats a balancer-made error.
        (Some(answer), _) => Ok(answer),
        (None, Some(err)) => Err(err),
        (None, None) => Err(ProxyError::NoServer { backend: backend.name.clone() }),
    }
}

/// What an attempt that got through says of its server, for outlier detection.
pub trait Verdict {
    /// The server failed all the same (an HTTP 5xx).
    fn server_failed(&self) -> bool;
}

/// HTTP: the response head, the slot.
impl<B> Verdict for (http::Response<B>, ActiveGuard) {
    fn server_failed(&self) -> bool {
        self.0.status().is_server_error()
    }
}

/// TCP: connected.
impl Verdict for (tokio::net::TcpStream, ActiveGuard) {
    fn server_failed(&self) -> bool {
        false
    }
}
