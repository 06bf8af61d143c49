//! Listening sockets and the accept loop: connection limits, accept-error backoff,
//! and hand-off of each connection to its frontend's protocol handler.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::{AsRawFd, FromRawFd};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Frontend;
use crate::config::Mode;
use crate::proxy;

/// Pending-connection queue length asked of the kernel (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

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
    /// Current frontend for this address.
    pub frontend: ArcSwap<Frontend>,
    /// Cancelled to stop accepting (reload removed the bind, or shutdown).
    pub stop: CancellationToken,
}

/// Accepts until `slot.stop` is cancelled; every connection runs as a task on `tasks`.
///
/// Runs on the worker that will serve the accepted connections: `listener` is
/// registered with that worker's runtime here.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    slot: Arc<ListenerSlot>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
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
                // Out of fds or memory: the loop must survive; wait for resources to free up.
                tracing::error!(listener = %slot.local, %err, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let frontend = slot.frontend.load_full();
        let permit = match admit(&frontend) {
            Ok(permit) => permit,
            Err(()) => {
                frontend.stats.rejected_connections.fetch_add(1, Relaxed);
                tracing::debug!(frontend = %frontend.name, %peer, "max_connections reached; refusing");
                drop(stream);
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        tasks.spawn(handle(frontend, stream, peer, permit, shutdown.clone(), tasks.clone()));
    }
    tracing::info!(listener = %slot.local, "stopped accepting");
}

/// A permit under the frontend's `max_connections`; `Err` when it is full.
fn admit(frontend: &Frontend) -> Result<Option<OwnedSemaphorePermit>, ()> {
    match &frontend.limiter {
        None => Ok(None),
        Some(limiter) => Arc::clone(limiter).try_acquire_owned().map(Some).map_err(|_| ()),
    }
}

/// Runs one connection; the permit and the active-connection count are released on return.
async fn handle(
    frontend: Arc<Frontend>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    _permit: Option<OwnedSemaphorePermit>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let _open = frontend.stats.open_connection();
    // Registered here, with the runtime of the worker that serves it.
    match frontend.mode {
        Mode::Tcp => match TcpStream::from_std(stream) {
            Ok(stream) => proxy::tcp::serve(Arc::clone(&frontend), stream, peer).await,
            Err(err) => tracing::warn!(frontend = %frontend.name, %peer, %err, "cannot register the connection"),
        },
        Mode::Http => proxy::http::serve(Arc::clone(&frontend), stream, peer, shutdown, tasks).await,
    }
}

/// Accept errors that concern one connection only (the loop goes straight on).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}
