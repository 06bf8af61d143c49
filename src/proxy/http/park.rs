//! Where a worker's plain client connections wait while their clients send
//! nothing: from the accept until the first byte, and between requests once idle
//! a while. A parked connection is neither a task nor registered with tokio: it is
//! its socket in the worker's own epoll set, its bookkeeping ([`Connection`]) and
//! a deadline, about 200 bytes in all, as in HAProxy and nginx, where an idle
//! connection is a descriptor in the poller and a small struct. (Waiting in a
//! task instead costs the task, tokio's registration and a timer: ~1.2 KiB.)
//!
//! One task per worker watches the set. When a client sends something (or
//! closes), the connection leaves the park, is registered with tokio again and
//! gets a task that serves it. When its deadline passes it is closed and counted,
//! and when its listener stops (shutdown, or a reload removed it) it is closed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::{poll_fn, Future};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::dormant::Awaiting;
use super::Connection;
use crate::epoll::Epoll;

/// A connection handed to the park, and what it waits for.
#[derive(Debug)]
pub struct Parked {
    /// The connection's bookkeeping (client, seat, open count), allocated once at
    /// the accept: parking and waking move it, never copy or reallocate it, so
    /// no long-lived allocation lands among the pages a request freed.
    pub conn: Box<Connection>,
    /// The socket, not registered with tokio.
    pub socket: std::net::TcpStream,
    /// When the wait runs out.
    pub deadline: Instant,
    /// The first request, or the next one of a kept-alive connection.
    pub awaiting: Awaiting,
}

/// The park of one worker. Bound to the runtime of the first connection it takes
/// (each worker's connections all run on that worker's runtime).
#[derive(Debug, Default)]
pub struct Park {
    bound: OnceLock<Option<Arc<Shared>>>,
}

impl Park {
    /// An empty park, bound on first use.
    pub fn new() -> Self {
        Park::default()
    }

    /// Parks a connection until its client sends something, its deadline passes
    /// or its listener stops. Gives it back when it cannot be parked (the epoll
    /// set could not be made, or the socket not added to it): the caller then
    /// waits for it itself.
    pub fn hold(&self, parked: Parked) -> Result<(), Parked> {
        if parked.conn.client.stop.is_cancelled() {
            return Ok(()); // Dropped: closed, as its listener asked.
        }
        match self.bound.get_or_init(Shared::start) {
            Some(shared) => shared.hold(parked),
            None => Err(parked),
        }
    }

    /// Connections parked right now.
    pub fn len(&self) -> usize {
        match self.bound.get() {
            Some(Some(shared)) => shared.lock().live,
            _ => 0,
        }
    }

    /// True when no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The set, shared by the connections' tasks (which park) and the watching task.
#[derive(Debug)]
struct Shared {
    epoll: AsyncFd<Epoll>,
    shelf: Mutex<Shelf>,
}

/// A parked connection with its place in the tracker of open connections (a
/// drain waits for parked connections too; they close as soon as it starts).
#[derive(Debug)]
struct Entry {
    parked: Parked,
    _tracked: TaskTrackerToken,
}

/// One place of the shelf (inline: parking allocates nothing); its generation
/// tells a token of its current entry from one of an earlier entry.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// The connections of one listener, closed together when it stops.
struct Group {
    /// The listener's identity: the address of its live frontend.
    listener: usize,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    members: usize,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("listener", &self.listener).field("members", &self.members).finish()
    }
}

/// The parked connections and their deadlines.
#[derive(Debug, Default)]
struct Shelf {
    slots: Vec<Slot>,
    vacant: Vec<u32>,
    /// Deadlines by token, earliest first. A connection that left the park leaves
    /// its deadline behind, skipped when due (its slot's generation moved on) or
    /// dropped by [`Shelf::compact`].
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Connections parked.
    live: usize,
    groups: Vec<Group>,
    /// The watching task, woken when it must look again sooner than it planned.
    watcher: Option<Waker>,
    /// The deadline the watching task's timer is set for.
    armed: Option<Instant>,
}

/// A token: a slot's index and its generation, as epoll hands it back.
fn token(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn listener_of(conn: &Connection) -> usize {
    Arc::as_ptr(&conn.client.live) as *const () as usize
}

impl Shelf {
    /// Puts `entry` on a free slot; its token.
    fn insert(&mut self, entry: Entry) -> u64 {
        let deadline = entry.parked.deadline;
        let index = match self.vacant.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some(entry);
        let token = token(index, slot.generation);
        self.deadlines.push(Reverse((deadline, token)));
        self.live += 1;
        token
    }

    /// Takes the entry `token` names, if it is still parked; it is no longer
    /// counted idle or in its group.
    fn take(&mut self, token: u64) -> Option<Entry> {
        let index = token as u32 as usize;
        let slot = self.slots.get_mut(index)?;
        if u64::from(slot.generation) != token >> 32 {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.vacant.push(index as u32);
        self.live -= 1;
        let listener = listener_of(&entry.parked.conn);
        if let Some(group) = self.groups.iter_mut().find(|group| group.listener == listener) {
            group.members -= 1;
        }
        if entry.parked.awaiting == Awaiting::NextRequest {
            entry.parked.conn.client.frontend.stats.idle_connections.fetch_sub(1, Relaxed);
        }
        Some(entry)
    }

    /// Drops the deadlines of connections gone, once they outnumber the parked
    /// ones; with nothing parked, gives back all the room a burst took.
    fn compact(&mut self) {
        if self.live == 0 {
            if self.slots.capacity() > 0 || self.deadlines.capacity() > 0 {
                // Every deadline left is stale and every slot vacant.
                self.slots = Vec::new();
                self.vacant = Vec::new();
                self.deadlines = BinaryHeap::new();
            }
            return;
        }
        if self.deadlines.len() <= 2 * self.live + 1024 {
            return;
        }
        let live = self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let entry = slot.entry.as_ref()?;
            Some(Reverse((entry.parked.deadline, token(index as u32, slot.generation))))
        });
        self.deadlines = live.collect();
    }
}

impl Shared {
    /// Makes the epoll set, registers it with the current runtime and starts the
    /// task watching it; `None` (logged) when that fails.
    fn start() -> Option<Arc<Shared>> {
        let made = Epoll::new().and_then(|epoll| {
            // SAFETY: the AsyncFd owns the set, whose descriptor stays open and the
            // same for the AsyncFd's whole life.
            unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }.map_err(std::io::Error::from)
        });
        let epoll = match made {
            Ok(epoll) => epoll,
            Err(err) => {
                tracing::warn!(%err, "cannot make the epoll set for idle connections; they wait in their own tasks");
                return None;
            }
        };
        let shared = Arc::new(Shared { epoll, shelf: Mutex::new(Shelf::default()) });
        tokio::spawn(Arc::clone(&shared).watch());
        Some(shared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shelf> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.shelf.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hold(&self, parked: Parked) -> Result<(), Parked> {
        let listener = listener_of(&parked.conn);
        let deadline = parked.deadline;
        let tracked = parked.conn.client.tasks.token();
        let mut shelf = self.lock();
        let token = shelf.insert(Entry { parked, _tracked: tracked });
        let index = token as u32 as usize;
        let added = {
            let entry = shelf.slots[index].entry.as_ref().map(|entry| &entry.parked);
            let socket = &entry.expect("just inserted").socket;
            self.epoll.get_ref().watch(socket.as_fd(), token)
        };
        if let Err(err) = added {
            tracing::debug!(%err, "cannot add an idle connection to the epoll set; it waits in its task");
            let entry = shelf.slots[index].entry.take().expect("just inserted");
            shelf.slots[index].generation = shelf.slots[index].generation.wrapping_add(1);
            shelf.vacant.push(index as u32);
            shelf.live -= 1;
            // Not yet counted idle or in a group: nothing else to undo.
            drop(shelf);
            return Err(entry.parked);
        }
        let conn = &shelf.slots[index].entry.as_ref().expect("just inserted").parked;
        if conn.awaiting == Awaiting::NextRequest {
            conn.conn.client.frontend.stats.idle_connections.fetch_add(1, Relaxed);
        }
        let stop = conn.conn.client.stop.clone();
        let mut wake = shelf.armed.is_none_or(|armed| deadline < armed);
        match shelf.groups.iter_mut().find(|group| group.listener == listener) {
            Some(group) => group.members += 1,
            None => {
                shelf.groups.push(Group { listener, stopped: Box::pin(stop.cancelled_owned()), members: 1 });
                wake = true;
            }
        }
        if wake {
            if let Some(watcher) = &shelf.watcher {
                watcher.wake_by_ref();
            }
        }
        Ok(())
    }

    /// The watching task: runs as long as the runtime does.
    async fn watch(self: Arc<Self>) {
        // Set to the earliest deadline whenever there is one.
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        let mut tokens = Vec::with_capacity(crate::epoll::BATCH);
        poll_fn(|cx| self.poll_watch(cx, timer.as_mut(), &mut tokens)).await
    }

    fn poll_watch(&self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>, tokens: &mut Vec<u64>) -> Poll<()> {
        let mut woken = Vec::new();
        let mut closed = Vec::new();
        {
            let mut shelf = self.lock();
            if !shelf.watcher.as_ref().is_some_and(|watcher| watcher.will_wake(cx.waker())) {
                shelf.watcher = Some(cx.waker().clone());
            }
            self.close_stopped(&mut shelf, cx, &mut closed);
            self.take_readable(&mut shelf, cx, tokens, &mut woken);
            let now = Instant::now();
            while let Some(&Reverse((due, token))) = shelf.deadlines.peek() {
                if due > now {
                    break;
                }
                shelf.deadlines.pop();
                if let Some(entry) = shelf.take(token) {
                    count_timeout(&entry.parked);
                    closed.push(entry);
                }
            }
            shelf.compact();
            shelf.armed = shelf.deadlines.peek().map(|&Reverse((due, _))| due);
            if let Some(due) = shelf.armed {
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
        }
        // Outside the lock: closing sockets, spawning tasks.
        drop(closed);
        for entry in woken {
            let Entry { parked, _tracked } = entry;
            // Spawned (and tracked) before the park's token drops: the drain never
            // sees the connection as gone.
            super::resume(parked);
        }
        Poll::Pending
    }

    /// Takes out the connections of listeners that stopped.
    fn close_stopped(&self, shelf: &mut Shelf, cx: &mut Context<'_>, closed: &mut Vec<Entry>) {
        let mut stopped = Vec::new();
        shelf.groups.retain_mut(|group| {
            if group.stopped.as_mut().poll(cx).is_ready() {
                stopped.push(group.listener);
                return false;
            }
            group.members > 0
        });
        if stopped.is_empty() {
            return;
        }
        let tokens: Vec<u64> = (shelf.slots.iter().enumerate())
            .filter_map(|(index, slot)| {
                let entry = slot.entry.as_ref()?;
                stopped.contains(&listener_of(&entry.parked.conn)).then(|| token(index as u32, slot.generation))
            })
            .collect();
        closed.extend(tokens.into_iter().filter_map(|token| shelf.take(token)));
    }

    /// Takes out the connections whose clients sent something (or closed).
    fn take_readable(&self, shelf: &mut Shelf, cx: &mut Context<'_>, tokens: &mut Vec<u64>, woken: &mut Vec<Entry>) {
        loop {
            let mut ready = match self.epoll.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(err)) => {
                    tracing::error!(%err, "the epoll set of idle connections failed");
                    return;
                }
                Poll::Pending => return,
            };
            tokens.clear();
            let more = match self.epoll.get_ref().ready(tokens) {
                Ok(more) => more,
                Err(err) => {
                    tracing::error!(%err, "cannot read the epoll set of idle connections");
                    return;
                }
            };
            if !more {
                ready.clear_ready();
            }
            for &token in tokens.iter() {
                let Some(entry) = shelf.take(token) else { continue };
                if let Err(err) = self.epoll.get_ref().unwatch(entry.parked.socket.as_fd()) {
                    tracing::debug!(%err, "cannot remove a woken connection from the epoll set");
                }
                woken.push(entry);
            }
        }
    }
}

/// Counts a parked connection whose client sent nothing in time.
fn count_timeout(parked: &Parked) {
    let counters = &parked.conn.client.frontend.stats.client_timeouts;
    let counter = match parked.awaiting {
        Awaiting::FirstRequest => &counters.first_request,
        Awaiting::NextRequest => &counters.idle,
    };
    counter.fetch_add(1, Relaxed);
}
