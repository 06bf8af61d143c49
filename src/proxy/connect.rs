//! Opening a connection to one server (the retry policy over servers is in `retry`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::TcpStream;

use super::error::ProxyError;
use crate::balance::Member;

/// Connects to one server within `timeout`, counting a failure on the server
/// unless this process ran out of descriptors (not the server's doing).
pub async fn connect_server(member: &Member, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let address = member.state.key.address;
    let result = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(server = %member.name, %err, "cannot set TCP_NODELAY");
            }
            return Ok(stream);
        }
        Ok(Err(source)) if is_out_of_descriptors(&source) => {
            return Err(ProxyError::Connect { server: member.name.clone(), address, source });
        }
        Ok(Err(source)) => ProxyError::Connect { server: member.name.clone(), address, source },
        Err(_) => ProxyError::ConnectTimeout { server: member.name.clone(), address, timeout },
    };
    member.state.connect_errors.fetch_add(1, Relaxed);
    Err(result)
}

/// The process (EMFILE) or the system (ENFILE) has no descriptor left for the socket.
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
