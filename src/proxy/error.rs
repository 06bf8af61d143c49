//! Errors of the data path, and the one place that maps them to HTTP statuses.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// Any error, boxed: those of our HTTP/1.1 client and of hyper's alike.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection or request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request head had both Content-Length and Transfer-Encoding: refused, as
    /// servers behind us might frame it differently (request smuggling).
    #[error("request has both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    /// The client's request body failed on its way to the server: the client
    /// stopped sending for `timeouts.client`, reset, or sent broken chunking.
    #[error("client request body failed: {source}")]
    ClientBody {
        /// The client stopped sending (rather than broke the body).
        timed_out: bool,
        /// What the body's reader saw.
        #[source]
        source: BoxError,
    },
    /// The request's Host is missing (HTTP/1.1), repeated or invalid (RFC 9112 section 3.2).
    #[error(transparent)]
    BadHost(#[from] crate::proxy::http::HostError),
    /// No route matched and the frontend has no default backend.
    #[error("no route matches and there is no default backend")]
    NoRoute,
    /// A forward proxy's frontend got a request with no destination in it (an
    /// origin-form target, not `http://host/...` or CONNECT) and nothing else
    /// of the frontend takes it: the client is not speaking to a proxy.
    #[error("a proxy request needs an absolute URI (http://host/...) or CONNECT")]
    NotAProxyRequest,
    /// Every server of the backend is down, drained, full or already tried.
    #[error("backend {backend}: no server available")]
    NoServer {
        /// Backend name.
        backend: String,
    },
    /// The client is over the frontend's rate limit: a token is back after `retry_after`.
    #[error("client over the rate limit; next request in {retry_after:?}")]
    RateLimited {
        /// When the client may try again.
        retry_after: Duration,
    },
    /// Every usable server was at its `max_connections` and the backend's queue
    /// was full, or the expected wait already longer than the queue's timeout.
    #[error("backend {backend}: every server is at max_connections and the queue is full")]
    QueueFull {
        /// Backend name.
        backend: String,
    },
    /// The request waited in the backend's queue for the queue's whole timeout.
    #[error("backend {backend}: no server slot within the queue timeout ({timeout:?})")]
    QueueTimeout {
        /// Backend name.
        backend: String,
        /// The queue's timeout.
        timeout: Duration,
    },
    /// The server refused or reset the connect.
    #[error("connect to server {server} ({address}) failed: {source}")]
    Connect {
        /// Server name.
        server: String,
        /// Server address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connect did not complete within `timeouts.connect`.
    #[error("connect to server {server} ({address}) timed out after {timeout:?}")]
    ConnectTimeout {
        /// Server name.
        server: String,
        /// Server address.
        address: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The TLS handshake with the server failed (its certificate did not verify,
    /// no common version or suite, or it is not speaking TLS).
    #[error("TLS to server {server} ({address}) failed: {source}")]
    Tls {
        /// Server name.
        server: String,
        /// Server address.
        address: SocketAddr,
        /// What rustls saw.
        #[source]
        source: std::io::Error,
    },
    /// The server broke the HTTP exchange (reset, closed early, spoke garbage).
    #[error("server {server}: {source}")]
    Upstream {
        /// Server name.
        server: String,
        /// What the HTTP client saw.
        #[source]
        source: BoxError,
    },
    /// The server closed a fresh connection before taking the request.
    #[error("server {server} closed the connection before the request was sent")]
    ServerClosed {
        /// Server name.
        server: String,
    },
    /// The server's HTTP/2 connection ended while the request waited for its
    /// response head (the request may have reached the server).
    #[error("server {server}'s connection ended before it answered")]
    ServerLost {
        /// Server name.
        server: String,
    },
    /// The server sent no response head within `timeouts.server`.
    #[error("server {server} sent no response within {timeout:?}")]
    ServerTimeout {
        /// Server name.
        server: String,
        /// The limit.
        timeout: Duration,
    },
}

impl ProxyError {
    /// The status a client gets for this failure: the single mapping of errors to codes.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AmbiguousFraming
            | ProxyError::BadHost(_)
            | ProxyError::NotAProxyRequest
            | ProxyError::ClientBody { timed_out: false, .. } => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody { timed_out: true, .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoRoute
            | ProxyError::NoServer { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::ServerClosed { .. }
            | ProxyError::ServerLost { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::ServerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The body a client gets for this failure where its status's usual text
    /// would mislead (see `reply::error_response`).
    pub fn client_text(&self) -> Option<&'static [u8]> {
        match self {
            ProxyError::NotAProxyRequest => {
                Some(b"400 Bad Request: this is a forward proxy; ask for an absolute URI (GET http://host/path) or CONNECT host:port\n")
            }
            _ => None,
        }
    }

    /// True when the server is to blame (outlier detection counts these): it
    /// could not be reached, reset or closed on the request, or took too long.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::Tls { .. }
                | ProxyError::Upstream { .. }
                | ProxyError::ServerClosed { .. }
                | ProxyError::ServerLost { .. }
                | ProxyError::ServerTimeout { .. }
        )
    }

    /// True when the failure happened before the request left for a server, so
    /// another server may be tried.
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. } | ProxyError::Tls { .. })
    }

    /// True when the client connection must close after the error response: what
    /// follows on it cannot be trusted to start a new request.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ProxyError::AmbiguousFraming | ProxyError::BadHost(_) | ProxyError::ClientBody { .. })
    }
}
