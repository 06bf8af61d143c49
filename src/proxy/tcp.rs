//! Layer 4: connect to a server (retrying others on failure) and copy bytes both
//! ways, propagating half-closes, until both sides are done or the session idles out.
//! A frontend with routes first picks the backend by the server name of the
//! client's TLS ClientHello, peeked at without being read, so the server still
//! gets every byte the client sent.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::connect::connect_server;
use super::copy::{pipe_tcp, Counted, Idle};
use super::proxy_protocol::{self, Endpoints, HeaderError};
use super::retry::{on_servers, Attempt};
use super::sni::{self, Peeked, Refusal, ServerName};
use crate::balance::{hash_key, Member};
use crate::cluster::sni_route::SniRoutes;
use crate::cluster::Frontend;
use crate::config::HashKey;
use crate::log_limit::LogLimit;

/// Sessions closed for want of a server, across every tcp frontend.
static NO_SERVER: LogLimit = LogLimit::per_second();

/// Proxies one accepted client connection of a tcp frontend from `peer`.
///
/// On a `proxy_protocol` frontend the connection's PROXY header is read first:
/// its client is the session's from then on. The header and the ClientHello
/// (when routing by SNI) share one `request_header` deadline.
pub async fn serve(frontend: Arc<Frontend>, client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let due = tokio::time::Instant::now() + frontend.timeouts.request_header;
    let (peer, destination) = match frontend.proxy_protocol {
        false => (peer, None),
        true => match tokio::time::timeout_at(due, proxy_protocol::read(&client)).await {
            Ok(Ok(received)) => match received.endpoints {
                Some(ends) => (ends.source, Some(ends.destination)),
                None => (peer, None),
            },
            Ok(Err(err)) => return proxy_protocol::refused(&frontend, peer, &err),
            Err(_) => {
                let err = HeaderError::Timeout(frontend.timeouts.request_header);
                return proxy_protocol::refused(&frontend, peer, &err);
            }
        },
    };
    let backend = match &frontend.sni_routes {
        // No routes: nothing to wait for, straight to the server.
        None => frontend.default_backend.as_ref(),
        Some(routes) => match tokio::time::timeout_at(due, peek_hello(&client)).await {
            Ok(Ok(name)) => routes.find(name.as_ref().map(ServerName::as_bytes)).or(frontend.default_backend.as_ref()),
            Ok(Err(why)) => return refuse(&frontend, routes, peer, why),
            Err(_) => return refuse(&frontend, routes, peer, Unroutable::Timeout),
        },
    };
    let Some(backend) = backend else {
        if let Some(repeats) = NO_SERVER.check() {
            tracing::warn!(frontend = %frontend.name, %peer, "no backend; closing{repeats}");
        }
        return;
    };
    let key = match backend.hash_key {
        Some(HashKey::SourceIp) => Some(hash_ip(peer)),
        _ => None,
    };
    let client_ref = &client;
    let connect = |member, slot, ()| async move {
        // Only a send_proxy server needs them (the local address is a syscall).
        let ends = wants_header(member).then(|| endpoints(client_ref, peer, destination)).flatten();
        match connect_server(member, backend.timeouts.connect, ends).await {
            Ok(stream) => Attempt::Done((stream, slot)),
            // The slot goes back with the failure.
            Err(err) => Attempt::Retry(err, ()),
        }
    };
    let (index, (upstream, _slot)) = match on_servers(backend, key, (), connect).await {
        Ok(found) => found,
        Err(err) => {
            if let Some(repeats) = NO_SERVER.check() {
                tracing::warn!(frontend = %frontend.name, backend = %backend.name, %peer, error = %err, "closing client: no server reachable{repeats}");
            }
            return;
        }
    };
    let member = &backend.members[index];
    member.state.connections_total.fetch_add(1, Relaxed);
    let idle = Idle::new(frontend.timeouts.client, backend.timeouts.server);
    let up = Counted::new(Some(&frontend.stats.received_bytes));
    let down = Counted::new(Some(&frontend.stats.sent_bytes));
    let result = pipe_tcp(client, upstream, &idle, &up, &down).await;
    let outcome = match &result {
        Ok(()) => "closed",
        Err(_) if idle.timed_out() => "idle timeout",
        Err(_) => "error",
    };
    if let Err(err) = &result {
        tracing::debug!(frontend = %frontend.name, server = %member.name, %peer, error = %err, outcome, "tcp session ended");
    }
    if frontend.access_log {
        tracing::info!(
            target: "fulcrum::access",
            client = %peer,
            frontend = %frontend.name,
            backend = %backend.name,
            server = %member.name,
            bytes_in = up.get(),
            bytes_out = down.get(),
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            "tcp"
        );
    }
}

/// Why a routed connection was closed before a backend was chosen.
#[derive(Debug)]
enum Unroutable {
    /// Its first bytes are no ClientHello that can be routed.
    Refused(Refusal),
    /// No complete ClientHello within `timeouts.request_header`.
    Timeout,
    /// The client closed its side before its ClientHello was complete.
    Closed,
    /// Reading the socket failed (a reset, mostly).
    Io(io::Error),
}

/// Counts and logs a connection closed before routing. Debug level only: these
/// are port scanners and broken clients, which must not flood the log.
fn refuse(frontend: &Frontend, routes: &SniRoutes, peer: SocketAddr, why: Unroutable) {
    let refused = &routes.refused;
    let counter = match &why {
        Unroutable::Refused(Refusal::TooLarge) => &refused.too_large,
        Unroutable::Refused(_) => &refused.invalid,
        Unroutable::Timeout => &refused.timeout,
        Unroutable::Closed | Unroutable::Io(_) => &refused.closed,
    };
    counter.fetch_add(1, Relaxed);
    match why {
        Unroutable::Refused(refusal) => {
            tracing::debug!(frontend = %frontend.name, %peer, reason = refusal.as_str(), "closing tcp client: no routable ClientHello");
        }
        Unroutable::Timeout => {
            tracing::debug!(frontend = %frontend.name, %peer, timeout = ?frontend.timeouts.request_header, "closing tcp client: no ClientHello within request_header");
        }
        Unroutable::Closed => {
            tracing::debug!(frontend = %frontend.name, %peer, "tcp client closed before its ClientHello was complete");
        }
        Unroutable::Io(err) => {
            tracing::debug!(frontend = %frontend.name, %peer, error = %err, "tcp client failed before its ClientHello was complete");
        }
    }
}

/// Waits until the client's first flight holds a whole ClientHello (or enough of
/// it to know its server name, or to know it is none) and returns the name. The
/// bytes are peeked (MSG_PEEK), never read: they stay queued for the server.
///
/// The buffer lives only until the route is chosen; sized for the largest first
/// flight looked at, its pages are touched only as far as the client has written.
async fn peek_hello(client: &TcpStream) -> Result<Option<ServerName>, Unroutable> {
    let mut buf = Vec::with_capacity(sni::MAX_HELLO_BYTES);
    let mut seen = 0;
    loop {
        // Readiness alone does not yield to the scheduler; should the socket ever
        // report readable with nothing new, the request_header timer must still run.
        tokio::task::consume_budget().await;
        let ready = client.ready(Interest::READABLE).await.map_err(Unroutable::Io)?;
        let peeked = client.try_io(Interest::READABLE, || {
            let n = peek(client, &mut buf)?;
            // Peeking leaves the bytes queued, so the socket stays readable: with
            // nothing new since the last look, report WouldBlock, which clears that
            // readiness (unless new bytes raced in) and waits for the next arrival
            // instead of spinning on the same bytes. At end of stream there is no
            // next arrival: go on, and the loop ends below.
            if n == seen && !ready.is_read_closed() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        let n = match peeked {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(Unroutable::Io(err)),
        };
        match sni::parse(&buf) {
            Peeked::Hello(name) => return Ok(name),
            Peeked::Refused(why) => return Err(Unroutable::Refused(why)),
            Peeked::NeedMore if n >= sni::MAX_HELLO_BYTES => return Err(Unroutable::Refused(Refusal::TooLarge)),
            Peeked::NeedMore if n == seen => return Err(Unroutable::Closed),
            Peeked::NeedMore => seen = n,
        }
    }
}

/// Copies what the client has sent so far into `buf` (replacing its contents)
/// without taking it off the socket.
fn peek(client: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let n = socket2::SockRef::from(client).peek(buf.spare_capacity_mut())?;
    // SAFETY: `peek` wrote (initialised) the first `n` bytes of the spare
    // capacity, and never more than its length.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// The server expects a PROXY header first (a named fn: the connect closure's
/// argument type is not known where its body is checked).
fn wants_header(member: &Member) -> bool {
    member.send_proxy.is_some()
}

/// The session's client and the address it connected to: the PROXY header's
/// destination if it had one, else the socket's local address.
fn endpoints(client: &TcpStream, source: SocketAddr, destination: Option<SocketAddr>) -> Option<Endpoints> {
    let destination = match destination {
        Some(destination) => destination,
        None => client.local_addr().ok()?,
    };
    Some(Endpoints { source, destination })
}

/// Hash of the client's IP (not its port), for `hash_key: source_ip`.
pub fn hash_ip(peer: SocketAddr) -> u64 {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => hash_key(&v4.octets()),
            None => hash_key(&ip.octets()),
        },
    }
}
