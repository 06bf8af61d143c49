//! Layer 4: connect to a server (retrying others on failure) and copy bytes both
//! ways, propagating half-closes, until both sides are done or the session idles out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use super::connect::connect_server;
use super::copy::{pipe_tcp, Counted, Idle};
use super::retry::{on_servers, Attempt};
use crate::balance::hash_key;
use crate::cluster::Frontend;
use crate::config::HashKey;
use crate::log_limit::LogLimit;

/// Sessions closed for want of a server, across every tcp frontend.
static NO_SERVER: LogLimit = LogLimit::per_second();

/// Proxies one accepted client connection of a tcp frontend.
pub async fn serve(frontend: Arc<Frontend>, client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Some(backend) = frontend.default_backend.as_ref() else {
        if let Some(repeats) = NO_SERVER.check() {
            tracing::warn!(frontend = %frontend.name, %peer, "no backend; closing{repeats}");
        }
        return;
    };
    let key = match backend.hash_key {
        Some(HashKey::SourceIp) => Some(hash_ip(peer)),
        _ => None,
    };
    let connect = |member, ()| async move {
        match connect_server(member, backend.timeouts.connect).await {
            Ok(stream) => Attempt::Done(stream),
            Err(err) => Attempt::Retry(err, ()),
        }
    };
    let (index, upstream) = match on_servers(backend, key, (), connect).await {
        Ok(found) => found,
        Err(err) => {
            if let Some(repeats) = NO_SERVER.check() {
                tracing::warn!(frontend = %frontend.name, backend = %backend.name, %peer, error = %err, "closing client: no server reachable{repeats}");
            }
            return;
        }
    };
    let member = &backend.members[index];
    let _active = member.state.track_connection();
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
