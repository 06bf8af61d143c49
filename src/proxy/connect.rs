//! Opening a connection to one server (the retry policy over servers is in `retry`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::proxy_protocol::{Endpoints, Outgoing};
use crate::balance::Member;

/// Connects to one server within `timeout`, counting a failure on the server
/// unless this process ran out of descriptors (not the server's doing).
///
/// A `send_proxy` server is first sent its PROXY header, naming `client` (the
/// client's address and the one it connected to), within the same `timeout`: it
/// is the connection's first bytes, before any TLS.
pub async fn connect_server(
    member: &Member,
    timeout: Duration,
    client: Option<Endpoints>,
) -> Result<TcpStream, ProxyError> {
    let address = member.state.key.address;
    let result = match tokio::time::timeout(timeout, open(member, client)).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(source)) if is_out_of_descriptors(&source) => {
            return Err(ProxyError::Connect { server: member.name.clone(), address, source });
        }
        Ok(Err(source)) => ProxyError::Connect { server: member.name.clone(), address, source },
        Err(_) => ProxyError::ConnectTimeout { server: member.name.clone(), address, timeout },
    };
    member.state.connect_errors.fetch_add(1, Relaxed);
    Err(result)
}

async fn open(member: &Member, client: Option<Endpoints>) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(member.state.key.address).await?;
    // Before the header: Nagle would hold the request back behind it until the
    // server's (maybe delayed) ACK.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(server = %member.name, %err, "cannot set TCP_NODELAY");
    }
    if let Some(version) = member.send_proxy {
        // Into an empty send buffer: never waits.
        stream.write_all(Outgoing::new(version, client).as_bytes()).await?;
    }
    Ok(stream)
}

/// The process (EMFILE) or the system (ENFILE) has no descriptor left for the socket.
fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
