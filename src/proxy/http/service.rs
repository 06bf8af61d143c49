//! One client request: route, pick, rewrite, forward, and answer — with a
//! balancer-made response when something fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::access_log::AccessRecord;
use super::body::{ResponseBody, UpstreamBody};
use super::client_state::ClientHandle;
use super::headers::{add_forwarding, strip_hop_by_hop, wants_upgrade};
use super::reply::error_response;
use super::request_body::RequestBody;
use super::tunnel;
use super::upstream::{forward, Exchange};
use crate::balance::hash_key;
use crate::cluster::{Backend, Frontend};
use crate::config::HashKey;
use crate::proxy::route::RequestFacts;
use crate::proxy::tcp::hash_ip;
use crate::proxy::ProxyError;

/// Per-connection context shared by the requests of one client connection.
#[derive(Debug)]
pub struct ConnContext {
    /// The frontend this connection was accepted on (fixed for its lifetime).
    pub frontend: Arc<Frontend>,
    /// The client address.
    pub peer: SocketAddr,
    /// The client IP as a header value, formatted at the connection's first request.
    client_ip: OnceLock<HeaderValue>,
    /// Where upgraded tunnels run, so a drain waits for them too.
    pub tasks: TaskTracker,
    /// The client socket, for what was seen while reading it.
    client: ClientHandle,
    /// Requests received so far on this connection.
    requests: AtomicU64,
}

impl ConnContext {
    /// Context for a new connection from `peer`.
    pub fn new(frontend: Arc<Frontend>, peer: SocketAddr, client: ClientHandle, tasks: TaskTracker) -> Self {
        Self { frontend, peer, client_ip: OnceLock::new(), tasks, client, requests: AtomicU64::new(0) }
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let open = self.client.request_started();
        let mut response = self.answer(req).await;
        response.body_mut().hold(open);
        Ok(response)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let frontend = &self.frontend;
        frontend.stats.http_requests.fetch_add(1, Relaxed);
        // hyper delivers an HTTP/1.1 connection's requests in order, one at a time.
        let index = self.requests.fetch_add(1, Relaxed);
        if self.client.is_ambiguous(index) {
            return self.fail(None, ProxyError::AmbiguousFraming, &req, started);
        }
        let Some(backend) = self.route(&req) else {
            return self.fail(None, ProxyError::NoRoute, &req, started);
        };
        let key = backend.hash_key.as_ref().and_then(|k| self.hash(k, &req));
        let method = req.method().clone();
        let path = req.uri().path_and_query().cloned();
        let (request, client_upgrade) = self.prepare(req);
        match forward(backend, key, request).await {
            Ok(exchange) => self.relay(backend, exchange, client_upgrade, Forwarded { started, method, path }),
            Err(err) => {
                tracing::warn!(frontend = %frontend.name, backend = %backend.name, client = %self.peer, error = %err, "request failed");
                let status = err.status();
                if matches!(err, ProxyError::ClientBody { timed_out: true, .. }) {
                    frontend.stats.client_timeouts.body.fetch_add(1, Relaxed);
                }
                self.count(Some(backend), status.as_u16());
                backend.stats.response_duration.observe(started.elapsed().as_secs_f64());
                let record = AccessRecord::start(
                    &self.frontend,
                    self.peer,
                    Some(backend),
                    None,
                    &method,
                    path.as_ref(),
                    status.as_u16(),
                    started,
                );
                drop(record);
                error_response(status, err.closes_connection())
            }
        }
    }

    fn route(&self, req: &Request<Incoming>) -> Option<&Arc<Backend>> {
        let frontend = &self.frontend;
        if !frontend.routes.is_empty() {
            let facts = RequestFacts {
                method: req.method(),
                host: request_host(req),
                path: req.uri().path(),
                headers: req.headers(),
            };
            if let Some(backend) = frontend.routes.find(&facts) {
                return Some(backend);
            }
        }
        frontend.default_backend.as_ref()
    }

    /// The hash of the request's key; `None` when the request lacks it (the
    /// balancer then falls back to round robin).
    fn hash(&self, key: &HashKey, req: &Request<Incoming>) -> Option<u64> {
        match key {
            HashKey::SourceIp => Some(hash_ip(self.peer)),
            HashKey::Uri => Some(hash_key(req.uri().path_and_query().map_or(b"/", |pq| pq.as_str().as_bytes()))),
            HashKey::Path => Some(hash_key(req.uri().path().as_bytes())),
            HashKey::Header(name) => req.headers().get(name.as_str()).map(|v| hash_key(v.as_bytes())),
            HashKey::Cookie(name) => cookie(req.headers(), name).map(hash_key),
        }
    }

    /// Rewrites the client's request for the server: origin-form URI, HTTP/1.1,
    /// Host present, hop-by-hop headers out, forwarding headers in.
    fn prepare(&self, mut req: Request<Incoming>) -> (Request<RequestBody>, Option<hyper::upgrade::OnUpgrade>) {
        let upgrading = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // h2 requests carry the host in the URI authority; HTTP/1.1 servers want a Host header.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(value) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, value);
            }
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers, upgrading);
        let host = parts.headers.get(header::HOST).cloned();
        let client_ip = self.client_ip.get_or_init(|| {
            HeaderValue::from_str(&self.peer.ip().to_string()).expect("an IP address is a valid header value")
        });
        add_forwarding(&mut parts.headers, client_ip, host.as_ref());
        (Request::from_parts(parts, RequestBody::client(body, self.frontend.timeouts.client)), client_upgrade)
    }

    /// Turns the server's response into the client's.
    fn relay(
        &self,
        backend: &Arc<Backend>,
        exchange: Exchange,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        forwarded: Forwarded,
    ) -> Response<ResponseBody> {
        let Exchange { mut response, sender, server, active } = exchange;
        let Forwarded { started, method, path } = forwarded;
        let member = &backend.members[server];
        let status = response.status();
        let elapsed = started.elapsed().as_secs_f64();
        backend.stats.response_duration.observe(elapsed);
        member.state.response_duration.observe(elapsed);
        self.count(Some(backend), status.as_u16());
        let record = AccessRecord::start(
            &self.frontend,
            self.peer,
            Some(backend),
            Some(server),
            &method,
            path.as_ref(),
            status.as_u16(),
            started,
        );
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let server_upgrade = hyper::upgrade::on(&mut response);
                self.client.upgraded();
                tunnel::spawn(&self.tasks, Arc::clone(&self.frontend), client_upgrade, server_upgrade, sender, active);
                strip_hop_by_hop(response.headers_mut(), true);
                drop(record);
                return response.map(|_| ResponseBody::empty());
            }
        }
        strip_hop_by_hop(response.headers_mut(), false);
        let state = Arc::clone(&member.state);
        let idle_limit = backend.timeouts.server;
        response.map(|body| ResponseBody::Upstream(UpstreamBody::new(body, sender, state, active, record, idle_limit)))
    }

    fn fail(
        &self,
        backend: Option<&Arc<Backend>>,
        err: ProxyError,
        req: &Request<Incoming>,
        started: Instant,
    ) -> Response<ResponseBody> {
        let status = err.status();
        tracing::warn!(frontend = %self.frontend.name, client = %self.peer, error = %err, "request refused");
        self.count(backend, status.as_u16());
        let record = AccessRecord::start(
            &self.frontend,
            self.peer,
            backend,
            None,
            req.method(),
            req.uri().path_and_query(),
            status.as_u16(),
            started,
        );
        drop(record);
        error_response(status, err.closes_connection())
    }

    fn count(&self, backend: Option<&Arc<Backend>>, code: u16) {
        self.frontend.stats.count_response(code);
        if let Some(backend) = backend {
            backend.stats.count_response(code);
        }
    }
}

/// What the service keeps of a request while a server answers it.
struct Forwarded {
    started: Instant,
    method: http::Method,
    path: Option<PathAndQuery>,
}

/// The host a request is for: the Host header, else the URI authority (h2).
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The value of cookie `name` from the request's Cookie header(s).
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::cookie;

    #[test]
    fn finds_cookie_among_several() {
        let mut headers = http::HeaderMap::new();
        headers.append("cookie", "a=1; session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
    }
}
