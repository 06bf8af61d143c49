//! A frontend's forward proxy (`frontends[].forward_proxy`): absolute-form
//! requests (`GET http://host/ HTTP/1.1`) forwarded to the host they name, and
//! CONNECT tunnels, both only to destinations the `allow` rules admit (checked
//! on the address actually connected to) and CONNECT only to `connect_ports`.

mod dial;
mod forward;
mod tunnel;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::body::ResponseBody;
use crate::config::AllowList;
use crate::upstream::{ServerKey, ServerState};
use dial::DialError;

/// A frontend's forward proxy, compiled once per snapshot.
#[derive(Debug)]
pub struct ForwardProxy {
    rules: AllowList,
    connect_ports: Vec<u16>,
    /// Stands for "whatever host a request names": a response body streamed from
    /// a destination is an upstream body, which counts itself on a server.
    destinations: Arc<ServerState>,
}

impl ForwardProxy {
    /// A forward proxy to the destinations `rules` admits (parsed with the
    /// config), CONNECT only to `connect_ports`.
    pub fn new(rules: AllowList, connect_ports: &[u16]) -> ForwardProxy {
        let key = ServerKey {
            backend: "forward_proxy".to_string(),
            server: "forward_proxy".to_string(),
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            http2: false,
        };
        ForwardProxy { rules, connect_ports: connect_ports.to_vec(), destinations: ServerState::new(key, true) }
    }

    /// True when `req` is for the forward proxy: CONNECT, or an absolute-form `http://` target.
    ///
    /// Absolute form counts only on HTTP/1.x: every HTTP/2 request carries a scheme
    /// and an authority, which do not make it a proxy request. An extended CONNECT
    /// (HTTP/2 `:protocol`, e.g. WebSocket) is a request to this frontend, not a tunnel.
    pub fn wants(req: &Request<Incoming>) -> bool {
        if req.method() == Method::CONNECT {
            return req.extensions().get::<hyper::ext::Protocol>().is_none();
        }
        matches!(req.version(), Version::HTTP_10 | Version::HTTP_11)
            && req.uri().scheme() == Some(&http::uri::Scheme::HTTP)
            && req.uri().authority().is_some()
    }

    /// Serves a request [`wants`](Self::wants) accepted: forwards an absolute-form
    /// request, or answers a CONNECT 200 and tunnels it. Destinations `allow` does
    /// not admit and CONNECT ports outside `connect_ports` get 403; a failed
    /// resolution or connect 502, a slow one 504 (`connect_timeout`), a malformed
    /// target 400. `idle` bounds a response body's or a tunnel's inactivity.
    /// A tunnel runs on `tasks`, so a drain waits for it.
    pub async fn serve(
        &self,
        req: Request<Incoming>,
        connect_timeout: Duration,
        idle: Duration,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Response<ResponseBody> {
        if req.method() == Method::CONNECT {
            tunnel::connect(self, req, connect_timeout, idle, tasks).await
        } else {
            forward::forward(self, req, connect_timeout, idle).await
        }
    }
}

/// A short text answer made by the proxy itself.
fn reply(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::fixed(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The answer to a destination that could not be reached.
fn dial_failed(err: DialError, host: &str, port: u16) -> Response<ResponseBody> {
    match err {
        DialError::Forbidden => {
            tracing::debug!(host, port, "forward proxy: destination not allowed");
            reply(StatusCode::FORBIDDEN, "destination not allowed\n")
        }
        DialError::Unresolved(err) => {
            tracing::debug!(host, port, error = %err, "forward proxy: name did not resolve");
            reply(StatusCode::BAD_GATEWAY, "destination name did not resolve\n")
        }
        DialError::Refused(err) => {
            tracing::debug!(host, port, error = %err, "forward proxy: connect failed");
            reply(StatusCode::BAD_GATEWAY, "cannot connect to the destination\n")
        }
        DialError::TimedOut => {
            tracing::debug!(host, port, "forward proxy: connect timed out");
            reply(StatusCode::GATEWAY_TIMEOUT, "connecting to the destination timed out\n")
        }
    }
}

/// The host and port of a request target's authority, or None when it is not a
/// plain `host[:port]` (userinfo is refused: it has no meaning to a proxy and
/// hides the real host from a careless reader).
fn target(authority: &http::uri::Authority, default_port: Option<u16>) -> Option<(String, u16)> {
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let port = authority.port_u16().or(default_port).filter(|port| *port != 0)?;
    Some((authority.host().to_string(), port))
}
