//! Connections of a `proxy_protocol` http frontend: each starts with a PROXY
//! header from the load balancer in front, read before anything else (before the
//! TLS handshake, before the h2 preface is looked for, before the connection is
//! parked), whose client the connection goes by from then on: the requests'
//! client, X-Forwarded-For, `hash_key: source_ip`, access logs.

use std::sync::Arc;

use tokio::time::Instant;

use super::dormant::{Awaiting, Dormant};
use super::io::{self, Transport};
use super::park::Parked;
use super::{run, run_unparked, Client, Connection};
use crate::proxy::proxy_protocol::{self, HeaderError, HeaderSource};

/// Serves `conn` once its PROXY header is in. The header, the TLS handshake and
/// the first request head share one `request_header` deadline from the accept; the
/// connection waits in its task only until the header is in.
pub(super) async fn serve(mut conn: Box<Connection>, stream: std::net::TcpStream) {
    let frontend = Arc::clone(&conn.client.frontend);
    let head_due = Instant::now() + frontend.timeouts.request_header;
    match &frontend.tls {
        Some(tls) => {
            let Some(stream) = conn.client.register_tls(stream) else { return };
            if !conn.client.accept_header(&stream, head_due).await {
                return;
            }
            let Some(tls) = Box::pin(conn.client.handshake(stream, tls, head_due)).await else { return };
            run(conn, Dormant::handshaken(tls, head_due), true).await
        }
        None => {
            let socket = match io::register(stream) {
                Ok(socket) => socket,
                Err(err) => {
                    let client = &conn.client;
                    tracing::warn!(frontend = %frontend.name, client = %client.peer, error = %err, "cannot register the client socket");
                    return;
                }
            };
            if !conn.client.accept_header(&socket, head_due).await {
                return;
            }
            let awaiting = Awaiting::FirstRequest;
            match socket.get_ref().peek(&mut [0u8]) {
                // Nothing after the header yet: the park waits for it, to the same deadline.
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let socket = socket.into_inner();
                    let park = Arc::clone(&conn.client.park);
                    if let Err(parked) = park.hold(Parked { conn, socket, deadline: head_due, awaiting }) {
                        run_unparked(parked).await;
                    }
                }
                // Bytes, an end of stream or an error: hyper reads which.
                _ => run(conn, Dormant { socket: Transport::Plain(socket), deadline: head_due, awaiting }, true).await,
            }
        }
    }
}

impl Client {
    /// Reads the connection's PROXY header by `due`, and goes by the client it
    /// names from then on (a LOCAL or UNKNOWN header leaves the connection's own).
    /// False when there is no valid header in time: the connection is to be
    /// closed without a word (counted and logged here).
    async fn accept_header<S: HeaderSource>(&mut self, socket: &S, due: Instant) -> bool {
        let read = tokio::select! {
            read = tokio::time::timeout_at(due, proxy_protocol::read(socket)) => read,
            _ = self.stop.cancelled() => return false,
        };
        let err = match read {
            Ok(Ok(received)) => {
                match received.endpoints {
                    Some(ends) => {
                        self.peer = ends.source;
                        self.local = ends.destination;
                    }
                    None => self.find_local(socket.sock()),
                }
                return true;
            }
            Ok(Err(err)) => err,
            Err(_late) => HeaderError::Timeout(self.frontend.timeouts.request_header),
        };
        proxy_protocol::refused(&self.frontend, self.peer, &err);
        false
    }
}
