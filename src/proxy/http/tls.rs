//! An http frontend's TLS connections: the handshake (bounded by
//! `timeouts.request_header` from the accept, counted by outcome), then HTTP/2 or
//! HTTP/1.1 as ALPN chose, over [`ClientIo`] with the same client limits as plain
//! connections. A TLS connection keeps its session state while idle (it does not
//! go dormant: rustls's buffers and keys live with the session).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rustls::ProtocolVersion;
use tokio::time::Instant;

use super::{on_connection_error, Client, ClientIo};
use crate::tls::{handshake_info, TlsFrontend};

impl Client {
    /// Serves a connection of a TLS frontend until it closes.
    pub(super) async fn serve_tls(&self, stream: std::net::TcpStream, tls: &TlsFrontend) {
        let frontend = &self.frontend;
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(frontend = %frontend.name, client = %self.peer, error = %err, "cannot register the client socket");
                return;
            }
        };
        // The handshake and the first request head share one deadline.
        let head_due = Instant::now() + frontend.timeouts.request_header;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
        let counts = &frontend.stats.tls_handshakes;
        let handshake = tokio::select! {
            done = tokio::time::timeout_at(head_due, acceptor.accept(stream)) => done,
            _ = self.stop.cancelled() => return,
        };
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                counts.failed.fetch_add(1, Relaxed);
                tracing::debug!(frontend = %frontend.name, client = %self.peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_late) => {
                counts.failed.fetch_add(1, Relaxed);
                frontend.stats.client_timeouts.first_request.fetch_add(1, Relaxed);
                tracing::debug!(frontend = %frontend.name, client = %self.peer, "TLS handshake not done within request_header");
                return;
            }
        };
        let info = handshake_info(stream.get_ref().1);
        match info.version {
            Some(ProtocolVersion::TLSv1_3) => counts.tls13.fetch_add(1, Relaxed),
            _ => counts.tls12.fetch_add(1, Relaxed),
        };
        let h2 = info.h2;
        let (io, handle) = ClientIo::tls(Box::new(stream), Arc::clone(frontend), self.peer, head_due);
        let ctx = self.context(&handle, Some(info));
        let served =
            if h2 { self.serve_h2(io, ctx, &handle).await } else { self.serve_h1(io, ctx, &handle).await.map(drop) };
        if let Err(err) = served {
            on_connection_error(frontend, self.peer, err.as_ref());
        }
    }
}
