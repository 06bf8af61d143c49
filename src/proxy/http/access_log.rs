//! The HTTP access log: one line per request, written when the response body ends
//! (or the client goes away), so it carries the bytes sent and the total duration.
//!
//! A record exists only when the frontend has `access_log: true`; otherwise the
//! data path carries a `None` and formats nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::Method;

use crate::cluster::{Backend, Frontend};

/// What is known of one request, logged on drop.
#[derive(Debug)]
pub struct AccessRecord {
    client: SocketAddr,
    frontend: Arc<Frontend>,
    backend: Option<Arc<Backend>>,
    server: Option<usize>,
    method: Method,
    path: Option<PathAndQuery>,
    status: u16,
    started: Instant,
    head: Duration,
    /// Response body bytes sent so far.
    pub bytes: u64,
    /// The response body reached its end (false: the client or server went away).
    pub complete: bool,
}

impl AccessRecord {
    /// A record for a request answered with `status` (the head is being sent now),
    /// or `None` when the frontend does not log.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        frontend: &Arc<Frontend>,
        client: SocketAddr,
        backend: Option<&Arc<Backend>>,
        server: Option<usize>,
        method: &Method,
        path: Option<&PathAndQuery>,
        status: u16,
        started: Instant,
    ) -> Option<Box<AccessRecord>> {
        frontend.access_log.then(|| {
            Box::new(AccessRecord {
                client,
                frontend: Arc::clone(frontend),
                backend: backend.cloned(),
                server,
                method: method.clone(),
                path: path.cloned(),
                status,
                started,
                head: started.elapsed(),
                bytes: 0,
                complete: false,
            })
        })
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let backend = self.backend.as_deref();
        let server = backend.zip(self.server).map_or("-", |(b, i)| b.members[i].name.as_str());
        tracing::info!(
            target: "fulcrum::access",
            client = %self.client,
            frontend = %self.frontend.name,
            backend = %backend.map_or("-", |b| b.name.as_str()),
            server = %server,
            method = %self.method,
            path = %self.path.as_ref().map_or("/", |p| p.as_str()),
            status = self.status,
            bytes = self.bytes,
            head_ms = self.head.as_secs_f64() * 1000.0,
            total_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            complete = self.complete,
            "http"
        );
    }
}
