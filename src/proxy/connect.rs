//! Opening connections to servers, with the retry-on-another-server policy.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpStream;

use super::error::ProxyError;
use crate::balance::{Member, Tried};
use crate::cluster::Backend;

/// Connects to one server within `timeout`, counting a failure on the server.
pub async fn connect_server(member: &Member, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let address = member.state.key.address;
    let result = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(server = %member.name, %err, "cannot set TCP_NODELAY");
            }
            return Ok(stream);
        }
        Ok(Err(source)) => ProxyError::Connect { server: member.name.clone(), address, source },
        Err(_) => ProxyError::ConnectTimeout { server: member.name.clone(), address, timeout },
    };
    member.state.connect_errors.fetch_add(1, Relaxed);
    Err(result)
}

/// Picks a server and connects to it; on a connect failure, tries another server,
/// up to `backend.retries` more times. Returns the server's index and the stream.
pub async fn connect_with_retries(
    backend: &Backend,
    key: Option<u64>,
    tried: &mut Tried,
) -> Result<(usize, TcpStream), ProxyError> {
    let mut last_error = None;
    for attempt in 0..=backend.retries {
        let Some((index, member)) = backend.pick(key, tried) else { break };
        if attempt > 0 {
            backend.stats.retries.fetch_add(1, Relaxed);
        }
        tried.insert(index);
        match connect_server(member, backend.timeouts.connect).await {
            Ok(stream) => return Ok((index, stream)),
            Err(err) => {
                tracing::warn!(backend = %backend.name, error = %err, "connect failed");
                last_error = Some(err);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoServer { backend: backend.name.clone() }))
}
