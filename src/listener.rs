//! Listening sockets and the accept loop: connection limits, accept-error backoff,
//! and hand-off of each connection to its frontend's protocol handler.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::{AsRawFd, FromRawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Frontend, LiveFrontend};
use crate::config::Mode;
use crate::fd_limit::ConnectionCap;
use crate::log_limit::LogLimit;
use crate::proxy;
use crate::workers::{Placed, Workers};

/// Pending-connection queue length asked of the kernel (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// What an http frontend's client gets when it is refused: written in one
/// non-blocking send on the fresh socket (its send buffer is empty, so it fits).
const REFUSED_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 65\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n503 Service Unavailable: too many connections; try again shortly\n";

/// Accept errors that are not about one connection (out of descriptors or memory):
/// one log line per second across every listener and worker.
static ACCEPT_FAILED: LogLimit = LogLimit::per_second();
/// Connections refused at the process-wide cap.
static AT_CAP: LogLimit = LogLimit::per_second();

/// A listening socket registered with the runtime. Accepted connections come out
/// as plain non-blocking sockets, registered only with the runtime that serves them.
pub type Listener = AsyncFd<std::net::TcpListener>;

/// Opens a non-blocking listening socket with SO_REUSEADDR and a deep backlog;
/// with `reuse_port`, several sockets (one per worker) can share the address and the
/// kernel spreads new connections over them.
pub fn open(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Opens `count` sockets on `addr` (one per worker), all on the same port even when
/// `addr` asks for port 0.
pub fn open_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let reuse_port = count > 1;
    let first = open(addr, reuse_port)?;
    let bound = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(open(bound, reuse_port)?);
    }
    Ok(group)
}

/// Registers `listener` with the current runtime.
fn register(listener: std::net::TcpListener) -> io::Result<Listener> {
    // SAFETY: the AsyncFd owns the listener, so its descriptor stays valid and the
    // same for the AsyncFd's whole life.
    unsafe { AsyncFd::register(listener) }.map_err(io::Error::from)
}

/// Waits for and accepts one connection, non-blocking and close-on-exec from the start.
async fn accept(listener: &Listener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(result) = ready.try_io(|fd| accept4(fd.get_ref())) {
            return result;
        }
    }
}

fn accept4(listener: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    // SAFETY: `try_init` hands a zeroed sockaddr_storage and its length to accept4,
    // which fills at most that many bytes; the returned descriptor is new and ours.
    let (fd, addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(listener.as_raw_fd(), storage.cast(), len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })?
    };
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = addr.as_socket().ok_or_else(|| io::Error::other("accepted a non-IP connection"))?;
    Ok((stream, peer))
}

/// What the accept loop of one bound address serves. The frontend is swapped on
/// reload; connections already accepted keep the one they started with.
#[derive(Debug)]
pub struct ListenerSlot {
    /// Address as configured (the diffing key across reloads).
    pub configured: SocketAddr,
    /// Address actually bound (differs when the configured port is 0).
    pub local: SocketAddr,
    /// Current frontend for this address, shared with the connections it accepted.
    pub frontend: LiveFrontend,
    /// Cancelled when the bind is removed by a reload, or at shutdown: the accept
    /// loops stop, and the HTTP connections accepted here finish their requests and close.
    pub stop: CancellationToken,
}

/// Accepts until `slot.stop` is cancelled; every connection runs as a task on `tasks`.
/// A connection beyond the frontend's `max_connections` or the process-wide `cap`
/// is accepted and refused at once, so its client learns it straight away instead
/// of waiting unseen in the kernel's accept queue.
///
/// Runs on worker `worker`: `listener` is registered with that worker's runtime
/// here, and a connection is served there unless another worker has fewer open
/// connections (see [`Workers::place`]).
pub async fn accept_loop(
    listener: std::net::TcpListener,
    slot: Arc<ListenerSlot>,
    worker: usize,
    workers: Arc<Workers>,
    tasks: TaskTracker,
    cap: ConnectionCap,
) {
    let listener = match register(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(listener = %slot.local, %err, "cannot register the listening socket; not accepting on it");
            return;
        }
    };
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = slot.stop.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(err) if is_per_connection(&err) => {
                tracing::debug!(listener = %slot.local, %err, "accept: connection gone before it was taken");
                continue;
            }
            Err(err) => {
                // Out of fds or memory: the loop must survive; wait for resources to
                // free up. The connection stays queued for the next try.
                if let Some(repeats) = ACCEPT_FAILED.check() {
                    tracing::error!(listener = %slot.local, %err, ?backoff, "accept failed; backing off{repeats}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let frontend = slot.frontend.load_full();
        let admitted = match admit(&frontend, &cap) {
            Ok(admitted) => admitted,
            Err(full) => {
                refuse(&frontend, stream, peer, full, &cap);
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        let placed = workers.place(worker);
        let target = placed.index();
        let seat = Seat { _admitted: admitted, _placed: placed };
        // One task per connection, whose future is the protocol's own: an idle HTTP
        // connection carries neither a TCP session's state nor a second allocation.
        match frontend.mode {
            Mode::Tcp => launch(serve_tcp(frontend, stream, peer, seat), target, worker, &workers, &tasks),
            Mode::Http => {
                let client = proxy::http::Client {
                    live: Arc::clone(&slot.frontend),
                    frontend,
                    peer,
                    local: slot.local,
                    worker: workers.worker(target),
                    stop: slot.stop.clone(),
                    tasks: tasks.clone(),
                    park: workers.park(target),
                };
                launch(proxy::http::serve(client, stream, seat), target, worker, &workers, &tasks);
            }
        }
    }
    tracing::info!(listener = %slot.local, "stopped accepting");
}

/// What an open connection holds, given back when it ends: its places under the
/// limits and its count on the worker serving it.
#[derive(Debug)]
pub struct Seat {
    _admitted: Admitted,
    _placed: Placed,
}

/// The places a connection holds under the limits while it is open.
#[derive(Debug)]
struct Admitted {
    /// Under the frontend's `max_connections`, if it has one.
    _frontend: Option<OwnedSemaphorePermit>,
    /// Under the process-wide cap.
    _process: OwnedSemaphorePermit,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy)]
enum Full {
    /// The frontend's `max_connections`.
    Frontend,
    /// The process-wide cap derived from the open-file limit.
    Process,
}

/// A place under the frontend's `max_connections` and under the process-wide cap.
fn admit(frontend: &Frontend, cap: &ConnectionCap) -> Result<Admitted, Full> {
    let own = match &frontend.limiter {
        None => None,
        Some(limiter) => Some(Arc::clone(limiter).try_acquire_owned().map_err(|_| Full::Frontend)?),
    };
    let process = cap.try_admit().ok_or(Full::Process)?;
    Ok(Admitted { _frontend: own, _process: process })
}

/// Refuses a connection that found its frontend or the process full: counted,
/// answered with a 503 on http frontends, and closed, all before the next accept.
fn refuse(frontend: &Frontend, stream: std::net::TcpStream, peer: SocketAddr, full: Full, cap: &ConnectionCap) {
    frontend.stats.rejected_connections.fetch_add(1, Relaxed);
    match full {
        Full::Frontend => tracing::debug!(frontend = %frontend.name, %peer, "max_connections reached; refusing"),
        Full::Process => {
            if let Some(repeats) = AT_CAP.check() {
                tracing::warn!(
                    frontend = %frontend.name,
                    %peer,
                    max = cap.max(),
                    "connection cap reached (derived from the open-file limit); refusing{repeats}"
                );
            }
        }
    }
    // Plain HTTP only (a TLS client would take it for a broken handshake): the
    // client has most likely sent its request already, so a short answer beats a
    // bare close. Best effort: closing with that request unread may reset the
    // connection before the client reads the answer. The socket is non-blocking,
    // but its send buffer is empty: the write cannot stall.
    if frontend.mode == Mode::Http && frontend.tls.is_none() {
        match (&stream).write_all(REFUSED_503) {
            Ok(()) => frontend.stats.count_response(503),
            Err(err) => tracing::debug!(%peer, %err, "cannot send the 503 to a refused connection"),
        }
    }
    drop(stream);
}

/// Runs a connection's task on worker `target`, tracked by `tasks`; `here` is the
/// worker running the accept loop.
fn launch<F>(serving: F, target: usize, here: usize, workers: &Workers, tasks: &TaskTracker)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if target == here {
        tasks.spawn(serving);
    } else {
        workers.spawn_on(target, tasks.track_future(serving));
    }
}

/// Runs one tcp connection; its places under the limits and the active-connection
/// count are released on return.
async fn serve_tcp(frontend: Arc<Frontend>, stream: std::net::TcpStream, peer: SocketAddr, _seat: Seat) {
    let _open = frontend.stats.open_connection();
    // Registered here, with the runtime of the worker that serves it.
    match TcpStream::from_std(stream) {
        Ok(stream) => proxy::tcp::serve(Arc::clone(&frontend), stream, peer).await,
        Err(err) => tracing::warn!(frontend = %frontend.name, %peer, %err, "cannot register the connection"),
    }
}

/// Accept errors that concern one connection only (the loop goes straight on).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_503_declares_its_body_length() {
        let text = std::str::from_utf8(REFUSED_503).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
    }
}
