//! Connecting to a destination the `allow` rules admit. The check is made on
//! the address actually connected to, after resolution, so a name that resolves
//! into a forbidden range cannot be used to reach it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{parse_ip, AllowList};

/// Why a destination was not connected to.
#[derive(Debug)]
pub enum DialError {
    /// The rules do not admit it (403).
    Forbidden,
    /// The name did not resolve (502).
    Unresolved(io::Error),
    /// No admitted address accepted the connection (502).
    Refused(io::Error),
    /// Resolving and connecting took longer than the connect timeout (504).
    TimedOut,
}

/// Connects to `host:port` if the rules admit it: a name a name rule admits, at
/// any of its addresses; otherwise (an IP literal, or a name no name rule admits)
/// only at addresses an address rule admits. Resolution and connection share
/// `timeout`.
pub async fn dial(rules: &AllowList, host: &str, port: u16, timeout: Duration) -> Result<TcpStream, DialError> {
    let by_name = match parse_ip(host) {
        Some(ip) if rules.admits_addr(ip) => return connect_any(&[SocketAddr::new(ip, port)], timeout).await,
        Some(_) => return Err(DialError::Forbidden),
        None => rules.admits_name(host),
    };
    // No rule could admit it: refused without a lookup, so a denied name leaks
    // nothing to DNS.
    if !by_name && !rules.has_addr_rules() {
        return Err(DialError::Forbidden);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let resolved = match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(DialError::TimedOut),
        Ok(Err(err)) => return Err(DialError::Unresolved(err)),
        Ok(Ok(addrs)) => addrs,
    };
    let addrs: Vec<SocketAddr> = resolved
        .map(|addr| SocketAddr::new(addr.ip().to_canonical(), addr.port()))
        .filter(|addr| by_name || rules.admits_addr(addr.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(if by_name {
            DialError::Unresolved(io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
        } else {
            DialError::Forbidden
        });
    }
    connect_any(&addrs, deadline.saturating_duration_since(tokio::time::Instant::now())).await
}

/// Tries `addrs` in order (a name may resolve to an address nothing listens on,
/// e.g. `::1` before `127.0.0.1`), all within `timeout`.
async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, DialError> {
    let attempts = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = err,
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempts).await {
        Err(_) => Err(DialError::TimedOut),
        Ok(Err(err)) => Err(DialError::Refused(err)),
        Ok(Ok(stream)) => {
            // Proxied requests and tunnels are often small interactive writes.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
