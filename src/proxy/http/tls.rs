//! The handshake of an http frontend's TLS connections: bounded by
//! `timeouts.request_header` from the accept (a PROXY header before it counts
//! too), counted by outcome, a bounded number at once per worker. The connection
//! is then served like a plain one (HTTP/2 or HTTP/1.1 as ALPN chose, the same
//! client limits; dormant while idle, keeping only rustls's session state).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rustls::server::Acceptor;
use rustls::ProtocolVersion;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use super::io::{TlsConnection, Transport};
use super::Client;
use crate::tls::{handshake_info, TlsFrontend};

/// TLS handshakes a worker runs at once, counted from the client's ClientHello to
/// the end of the handshake; more wait for a turn (within their `request_header`).
/// A handshake's steps are short bursts of CPU (key exchange, signature), but a
/// flood of new clients queues thousands of them ahead of the reads of established
/// connections on the same worker: the bound keeps what is queued ahead of them
/// short (measured: keep-alive HTTPS p99 during a flood of 256 concurrent new
/// clients 12.6-13.7 ms unbounded, 9.5-9.9 ms bounded, handshakes/s the same). A
/// client that has not sent its ClientHello holds no turn (a slow or silent one
/// cannot block the others); one answering our flight holds its turn for that
/// round trip, so the bound is generous.
const HANDSHAKES_PER_WORKER: usize = 64;

thread_local! {
    /// The handshake turns of the worker running on this thread (each worker is a
    /// single-threaded runtime, so a connection's task stays on its thread).
    static HANDSHAKE_TURNS: Arc<Semaphore> = Arc::new(Semaphore::new(HANDSHAKES_PER_WORKER));
}

impl Client {
    /// Registers a TLS connection's socket with the runtime serving it; `None`
    /// (logged) if it cannot be.
    pub(super) fn register_tls(&self, stream: std::net::TcpStream) -> Option<tokio::net::TcpStream> {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!(frontend = %self.frontend.name, client = %self.peer, error = %err, "cannot register the client socket");
                None
            }
        }
    }

    /// Runs the TLS handshake of a connection to a TLS frontend, due by
    /// `head_due` (the first request head's deadline too); the connection, or
    /// `None` when it failed (counted).
    pub(super) async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        tls: &TlsFrontend,
        head_due: Instant,
    ) -> Option<Transport> {
        let frontend = &self.frontend;
        let counts = &frontend.stats.tls_handshakes;
        let turns = HANDSHAKE_TURNS.with(Arc::clone);
        let config = Arc::clone(&tls.config);
        let handshake = async move {
            let hello = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
            // Never closed: a failure would only mean no bound.
            let _turn = turns.acquire_owned().await.ok();
            hello.into_stream(config).await
        };
        let handshake = tokio::select! {
            done = tokio::time::timeout_at(head_due, handshake) => done,
            _ = self.stop.cancelled() => return None,
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                counts.failed.fetch_add(1, Relaxed);
                tracing::debug!(frontend = %frontend.name, client = %self.peer, error = %err, "TLS handshake failed");
                return None;
            }
            Err(_late) => {
                counts.failed.fetch_add(1, Relaxed);
                frontend.stats.client_timeouts.first_request.fetch_add(1, Relaxed);
                tracing::debug!(frontend = %frontend.name, client = %self.peer, "TLS handshake not done within request_header");
                return None;
            }
        };
        let info = handshake_info(stream.get_ref().1);
        match info.version {
            Some(ProtocolVersion::TLSv1_3) => counts.tls13.fetch_add(1, Relaxed),
            _ => counts.tls12.fetch_add(1, Relaxed),
        };
        Some(Transport::Tls(Box::new(TlsConnection { stream, info })))
    }
}
