//! Taking a server slot for a request (http) or a connection (tcp): the balancer
//! picks a server with room and one of its slots is reserved, exactly (never above
//! `max_connections`, whatever the number of workers). When no usable server has
//! room, the request waits in the backend's queue (`backends[].queue`), in order,
//! until a slot is handed over to it; a full queue, an expected wait longer than
//! the queue's timeout, or the timeout itself answer 503 (tcp: close).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::time::Instant;

use super::error::ProxyError;
use crate::balance::{active_tier_is_backup, Member, Tried};
use crate::cluster::{Backend, QueueSettings};
use crate::upstream::{ActiveGuard, WaitQueue};

/// A slot on server `index` of `backend` for a request hashed to `key` (servers
/// in `tried` are skipped; `prefer`, a sticky session's server, first if it can
/// take it): at once when a server has room and nobody waits, otherwise through
/// the backend's queue.
pub async fn acquire(
    backend: &Backend,
    key: Option<u64>,
    prefer: Option<usize>,
    tried: &Tried,
) -> Result<(usize, ActiveGuard), ProxyError> {
    let queue = &backend.stats.queue;
    // A sticky session's server, while it can take the request itself.
    if let Some(index) = prefer.filter(|&index| index < backend.members.len()) {
        let backup_tier = active_tier_is_backup(&backend.members);
        if could_take(&backend.members, index, backup_tier, tried) && !backend.members[index].state.is_ejected() {
            if let Some(guard) = backend.members[index].state.try_reserve() {
                return Ok((index, guard));
            }
        }
    }
    // While anyone waits, a newcomer queues behind: freed slots go to the waiters.
    if queue.is_empty() || backend.queue.is_none() {
        if let Some(found) = reserve(backend, key, tried) {
            return Ok(found);
        }
    }
    let Some(settings) = backend.queue else { return Err(no_server(backend)) };
    if !could_serve(backend, tried) {
        // Down, drained or tried, not merely busy: waiting would not help.
        return Err(no_server(backend));
    }
    let started = Instant::now();
    let deadline = started + settings.timeout;
    let mut first = false;
    loop {
        let ticket = {
            let mut waiters = queue.lock();
            if waiters.len() >= settings.max || expected_wait_too_long(backend, &settings, queue, waiters.len()) {
                queue.refused.fetch_add(1, Relaxed);
                return Err(ProxyError::QueueFull { backend: backend.name.clone() });
            }
            let ticket = if first { waiters.join_front() } else { waiters.join() };
            // Looked at again now that this waiter is visible: a slot freed just
            // before it joined went back to its server with nobody to hand it to.
            if waiters.len() == 1 {
                if let Some(found) = reserve(backend, key, tried) {
                    waiters.leave(ticket.id);
                    drop(waiters);
                    queue.wait.observe(started.elapsed().as_secs_f64());
                    return Ok(found);
                }
            }
            ticket
        };
        let mut place = Place { queue, id: Some(ticket.id) };
        let mut grant = ticket.grant;
        let waited = tokio::time::timeout_at(deadline, &mut grant).await;
        let id = place.id.take().expect("set above");
        let guard = match waited {
            Ok(Ok(guard)) => guard,
            // The sender went without a slot: cannot happen while queued; look again.
            Ok(Err(_)) => {
                queue.leave(id);
                continue;
            }
            Err(_elapsed) => {
                let handed = if queue.leave(id) { None } else { grant.try_recv().ok() };
                match handed {
                    // Handed over just as the time ran out: served after all.
                    Some(guard) => guard,
                    None => {
                        queue.refused.fetch_add(1, Relaxed);
                        queue.wait.observe(started.elapsed().as_secs_f64());
                        return Err(ProxyError::QueueTimeout {
                            backend: backend.name.clone(),
                            timeout: settings.timeout,
                        });
                    }
                }
            }
        };
        let backup_tier = active_tier_is_backup(&backend.members);
        let index = backend.members.iter().position(|member| Arc::ptr_eq(&member.state, guard.server()));
        match index {
            Some(index) if could_take(&backend.members, index, backup_tier, tried) => {
                queue.wait.observe(started.elapsed().as_secs_f64());
                return Ok((index, guard));
            }
            _ => {
                // A server this request must not use (drained, backup, tried, or
                // gone with a reload): the slot goes back unoffered (the other
                // waiters could not use it either) and this one waits on, first.
                guard.release_quietly();
                if let Some(found) = reserve(backend, key, tried) {
                    queue.wait.observe(started.elapsed().as_secs_f64());
                    return Ok(found);
                }
                first = true;
            }
        }
    }
}

/// A place in the queue, given up if the request goes away while it waits (the
/// client left): it must not hold up the waiters behind it, nor count toward `max`.
struct Place<'q> {
    queue: &'q WaitQueue,
    id: Option<u64>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // Not queued any more: a slot was handed over, and goes on to the next
            // waiter as the ticket that holds it drops.
            self.queue.leave(id);
        }
    }
}

/// A slot on a server with room, picked by the balancer; `None` when none has room.
fn reserve(backend: &Backend, key: Option<u64>, tried: &Tried) -> Option<(usize, ActiveGuard)> {
    // A server may fill up between the pick and the reservation (another worker
    // took its last slot): it is full for the next pick, so this ends.
    for _ in 0..=backend.members.len() {
        let (index, member) = backend.pick(key, tried)?;
        if let Some(guard) = member.state.try_reserve() {
            return Some((index, guard));
        }
    }
    None
}

/// Member `index` may serve this request apart from its load: up, weighted, of
/// the tier in use, not tried yet.
fn could_take(members: &[Member], index: usize, backup_tier: bool, tried: &Tried) -> bool {
    let member = &members[index];
    member.backup == backup_tier && !tried.contains(index) && member.weight > 0 && member.state.is_up()
}

/// Some server could serve this request once it has room.
fn could_serve(backend: &Backend, tried: &Tried) -> bool {
    let backup_tier = active_tier_is_backup(&backend.members);
    (0..backend.members.len()).any(|index| could_take(&backend.members, index, backup_tier, tried))
}

/// The wait a newcomer behind `ahead` waiters can expect (each place takes the
/// mean time a slot is held, spread over the slots of the usable servers) is
/// already longer than the queue's timeout: better refused now than in 5 s.
fn expected_wait_too_long(backend: &Backend, settings: &QueueSettings, queue: &WaitQueue, ahead: usize) -> bool {
    let mean = queue.mean_hold();
    if mean.is_zero() {
        return false;
    }
    let backup_tier = active_tier_is_backup(&backend.members);
    let slots: u64 = (backend.members.iter().enumerate())
        .filter(|&(index, _)| could_take(&backend.members, index, backup_tier, &Tried::default()))
        .map(|(_, member)| member.max_connections)
        .sum();
    if slots == 0 || backend.members.iter().any(|member| member.max_connections == 0 && member.state.is_up()) {
        return false;
    }
    let expected_us = mean.as_micros() * (ahead as u128 + 1) / u128::from(slots);
    expected_us > settings.timeout.as_micros()
}

fn no_server(backend: &Backend) -> ProxyError {
    ProxyError::NoServer { backend: backend.name.clone() }
}
