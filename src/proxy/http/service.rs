//! One client request: route, pick, rewrite, forward, and answer — with a
//! balancer-made response when something fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use super::access_log::AccessRecord;
use super::body::{ResponseBody, ServerResponseBody, UpstreamBody};
use super::cache::{Class, Fill, HttpCache, Lookup};
use super::client_state::ClientHandle;
use super::compress;
use super::forward_proxy::ForwardProxy;
use super::headers::{accepts_trailers, add_forwarding, strip_hop_by_hop, wants_upgrade};
use super::host::request_authority;
use super::reply::{error_response, error_response_saying};
use super::request_body::RequestBody;
use super::sticky;
use super::tunnel;
use super::upstream::{forward, Exchange};
use crate::balance::hash_key;
use crate::cluster::route::{RequestFacts, RouteAction};
use crate::cluster::{Backend, Frontend, LiveFrontend};
use crate::config::{HashKey, Mode};
use crate::log_limit::LogLimit;
use crate::proxy::proxy_protocol::Endpoints;
use crate::proxy::tcp::hash_ip;
use crate::proxy::ProxyError;
use crate::tls::{HandshakeInfo, X_CLIENT_CERT_SUBJECT};
use crate::upstream::Worker;

/// Requests answered with a balancer-made error, across every connection.
static REQUEST_FAILED: LogLimit = LogLimit::per_second();

/// Per-connection context shared by the requests of one client connection.
#[derive(Debug)]
pub struct ConnContext {
    /// The frontend as the listener serves it now: each request loads the current
    /// one, so a reload reaches kept-alive and h2c connections at their next request.
    live: LiveFrontend,
    /// The frontend the connection was accepted on, used should a reload turn the
    /// listener into a tcp frontend under it.
    accepted: Arc<Frontend>,
    /// The client address.
    pub peer: SocketAddr,
    /// The client and the address it connected to, for `send_proxy` servers.
    endpoints: Endpoints,
    /// The worker thread serving this connection (for the server connection pools).
    worker: Worker,
    /// The client IP as a header value, formatted at the connection's first request.
    client_ip: OnceLock<HeaderValue>,
    /// Where upgraded tunnels run, so a drain waits for them too.
    pub tasks: TaskTracker,
    /// The client socket, for what was seen while reading it.
    client: ClientHandle,
    /// Requests received so far on this connection.
    requests: AtomicU64,
    /// The TLS handshake, on a TLS frontend.
    tls: Option<HandshakeInfo>,
}

/// One request as the service sees it: the snapshot's frontend current when its
/// head arrived, kept until the request ends.
struct Current {
    frontend: Arc<Frontend>,
    /// The listener no longer serves HTTP: answer this request and close.
    closing: bool,
    started: Instant,
}

impl ConnContext {
    /// Context for a new connection from `peer`, accepted on `accepted`.
    pub fn new(
        live: LiveFrontend,
        accepted: Arc<Frontend>,
        endpoints: Endpoints,
        worker: Worker,
        client: ClientHandle,
        tasks: TaskTracker,
        tls: Option<HandshakeInfo>,
    ) -> Self {
        Self {
            live,
            accepted,
            peer: endpoints.source,
            endpoints,
            worker,
            client_ip: OnceLock::new(),
            tasks,
            client,
            requests: AtomicU64::new(0),
            tls,
        }
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let open = self.client.request_started();
        let now = self.current();
        // Files go out with sendfile where nothing but the socket sees the bytes.
        let plain_http1 = self.tls.is_none() && req.version() != Version::HTTP_2;
        // Read before the request is consumed; nothing at all without `compression`.
        let compression =
            now.frontend.compress_min_size.map(|min| (min, compress::negotiate(req.method(), req.headers())));
        // Each level of a request's future is pinned where it is made, here and
        // down to the server exchange: a future awaited directly is copied once
        // more into its awaitee slot, and these are kilobytes, copied into cold
        // memory on every request (callgrind: 6% of the instructions and a fifth
        // of the L1 cache misses per proxied request went to those copies).
        let mut response = pin!(self.answer(now, req)).await;
        if let Some((min_size, encoding)) = compression {
            response = match encoding {
                Some(encoding) => compress::apply(encoding, min_size, response),
                None => {
                    compress::vary(&mut response);
                    response
                }
            };
        }
        if plain_http1 {
            response.body_mut().send_files_directly(&self.client);
        }
        response.body_mut().hold(open);
        Ok(response)
    }

    /// The frontend this request is served by: the listener's current one.
    fn current(&self) -> Current {
        let frontend = self.live.load_full();
        let started = Instant::now();
        if frontend.mode == Mode::Http {
            Current { frontend, closing: false, started }
        } else {
            Current { frontend: Arc::clone(&self.accepted), closing: true, started }
        }
    }

    async fn answer(&self, now: Current, req: Request<Incoming>) -> Response<ResponseBody> {
        now.frontend.stats.http_requests.fetch_add(1, Relaxed);
        // hyper delivers an HTTP/1.1 connection's requests in order, one at a time.
        let index = self.requests.fetch_add(1, Relaxed);
        if self.client.is_ambiguous(index) {
            return self.fail(&now, None, ProxyError::AmbiguousFraming, req.method(), req.uri().path_and_query());
        }
        if let Some(limit) = &now.frontend.rate_limit {
            let stats = &now.frontend.stats;
            if let Err(retry_after) = stats.rate_table.check(self.peer.ip(), limit, std::time::Instant::now()) {
                stats.rate_limited.fetch_add(1, Relaxed);
                let err = ProxyError::RateLimited { retry_after };
                return self.fail(&now, None, err, req.method(), req.uri().path_and_query());
            }
        }
        // After the rate limit: going out through the proxy counts as a request too.
        if let Some(forward) = now.frontend.forward_proxy.as_ref().filter(|_| ForwardProxy::wants(&req)) {
            // Boxed, as is every answer below that is not a pooled server's: a
            // request's future is copied whole at each level of its call chain
            // and into hyper, so the room of these rarer, larger state machines
            // would be copied for every proxied request (at 44 KB, memmove was
            // 6.7% of the CPU of a proxied request; now about 7 KB).
            return Box::pin(self.forward_out(&now, forward, req)).await;
        }
        let authority = match request_authority(&req) {
            Ok(authority) => authority,
            Err(err) => return self.fail(&now, None, err.into(), req.method(), req.uri().path_and_query()),
        };
        let backend = match route(&now.frontend, &req, authority.map(|a| a.host)) {
            Some(Target::Backend(backend)) => Arc::clone(backend),
            Some(Target::Answer(action)) => return Box::pin(self.answer_locally(&now, action, &req)).await,
            None => {
                // A frontend that is (also) a forward proxy: the client meant a
                // proxy and sent no destination (Squid answers 400 too).
                let err = match now.frontend.forward_proxy {
                    Some(_) => ProxyError::NotAProxyRequest,
                    None => ProxyError::NoRoute,
                };
                return self.fail(&now, None, err, req.method(), req.uri().path_and_query());
            }
        };
        let host = authority.and_then(|a| a.host_to_send());
        let name_server = authority.is_none();
        let mut response = match &backend.cache {
            None => pin!(self.to_backend(&now, &backend, req, host, name_server, None)).await,
            Some(cache) => {
                let class = cache.classify(&req, authority.map(|a| a.host), self.tls.is_some());
                match cache.fresh(&class, &req) {
                    Some(hit) => self.answered_by_cache(&now, &backend, &req, hit),
                    // Boxed: requests to backends without a cache do not carry its
                    // state, nor do fresh hits, answered above.
                    None => Box::pin(self.through_cache(&now, &backend, cache, class, req, host, name_server)).await,
                }
            }
        };
        if now.closing {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Forwards `req` to a server of `backend` and relays its answer. With `fill`,
    /// the backend's cache takes the answer first (see [`Fill::on_response`]);
    /// boxed, so that requests without one do not carry its room.
    async fn to_backend(
        &self,
        now: &Current,
        backend: &Arc<Backend>,
        req: Request<Incoming>,
        host: Option<HeaderValue>,
        name_server: bool,
        fill: Option<Box<Fill>>,
    ) -> Response<ResponseBody> {
        let key = backend.hash_key.as_ref().and_then(|k| self.hash(k, &req));
        let named = backend.sticky.as_ref().and_then(|s| sticky::named_server(s, req.headers()));
        let method = req.method().clone();
        let path = req.uri().path_and_query().cloned();
        let (request, client_upgrade) = self.prepare(&now.frontend, req, host, backend);
        match pin!(forward(backend, key, named, self.endpoints, request, name_server, self.worker)).await {
            Ok(mut exchange) => {
                let server = exchange.server;
                let filled = fill.map(|fill| {
                    // What the cache keeps of the head is end to end only.
                    strip_hop_by_hop(exchange.response.headers_mut(), false);
                    fill.on_response(&mut exchange.response)
                });
                let mut response = self.relay(now, backend, exchange, client_upgrade, method, path);
                if let Some(filled) = filled {
                    response = response.map(|body| filled.body(body));
                }
                if let Some(settings) = &backend.sticky {
                    sticky::remember(settings, named, server, self.tls.is_some(), response.headers_mut());
                }
                response
            }
            // A balancer-made error names no server: no cookie (and nothing stored).
            Err(err) => self.fail(now, Some(backend), err, &method, path.as_ref()),
        }
    }

    /// A request to a backend with a cache: answered from it, forwarded for it to
    /// fill or revalidate, or forwarded past it (`class`, from [`HttpCache::classify`]).
    #[allow(clippy::too_many_arguments)]
    async fn through_cache(
        &self,
        now: &Current,
        backend: &Arc<Backend>,
        cache: &Arc<HttpCache>,
        class: Class,
        mut req: Request<Incoming>,
        host: Option<HeaderValue>,
        name_server: bool,
    ) -> Response<ResponseBody> {
        match class {
            Class::Bypass => self.to_backend(now, backend, req, host, name_server, None).await,
            Class::Unsafe(key) => {
                let response = self.to_backend(now, backend, req, host, name_server, None).await;
                cache.invalidate(&key, response.status(), response.headers());
                response
            }
            Class::Cacheable(wanted) => match cache.lookup(wanted, &mut req).await {
                Lookup::Fetch(fill) => {
                    self.to_backend(now, backend, req, host, name_server, Some(Box::new(fill))).await
                }
                Lookup::Answer(response) => self.answered_by_cache(now, backend, &req, response),
            },
        }
    }

    /// A response from `backend`'s cache, no server asked: counted and logged
    /// like a route's own answer.
    fn answered_by_cache(
        &self,
        now: &Current,
        backend: &Arc<Backend>,
        req: &Request<Incoming>,
        response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let status = response.status().as_u16();
        count(&now.frontend, Some(backend), status);
        let path = req.uri().path_and_query();
        let record =
            AccessRecord::start(&now.frontend, self.peer, Some(backend), None, req.method(), path, status, now.started);
        response.map(|body| body.logged(record))
    }

    /// The hash of the request's key; `None` when the request lacks it (the
    /// balancer then falls back to round robin).
    fn hash(&self, key: &HashKey, req: &Request<Incoming>) -> Option<u64> {
        match key {
            HashKey::SourceIp => Some(hash_ip(self.peer)),
            HashKey::Uri => Some(hash_key(req.uri().path_and_query().map_or(b"/", |pq| pq.as_str().as_bytes()))),
            HashKey::Path => Some(hash_key(req.uri().path().as_bytes())),
            HashKey::Header(name) => req.headers().get(name).map(|v| hash_key(v.as_bytes())),
            HashKey::Cookie(name) => sticky::values(req.headers(), name).next().map(hash_key),
        }
    }

    /// Rewrites the client's request for `backend`'s server: origin-form URI, HTTP/1.1,
    /// Host set to `host` when the request target's authority overrides the client's
    /// (h2 `:authority`, absolute-form), hop-by-hop headers and the sticky cookie
    /// out, forwarding headers in.
    fn prepare(
        &self,
        frontend: &Frontend,
        mut req: Request<Incoming>,
        host: Option<HeaderValue>,
        backend: &Backend,
    ) -> (Box<Request<RequestBody>>, Option<hyper::upgrade::OnUpgrade>) {
        let upgrading = req.version() == Version::HTTP_11 && wants_upgrade(req.headers());
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let from_h2 = parts.version == Version::HTTP_2;
        if let Some(host) = host {
            parts.headers.insert(header::HOST, host);
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path);
        }
        parts.version = Version::HTTP_11;
        // Hop-by-hop, but what it says holds end to end: trailers are passed on.
        // An HTTP/2 server gets it (gRPC needs it); an HTTP/1.1 one would need
        // `Connection: TE` with it, and is not sent it.
        let trailers = backend.protocol.is_h2() && accepts_trailers(&parts.headers);
        strip_hop_by_hop(&mut parts.headers, upgrading);
        // The balancer's own cookie: the server has no use for it.
        if let Some(settings) = &backend.sticky {
            sticky::strip(&mut parts.headers, &settings.cookie);
        }
        if trailers {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        // HTTP/2 clients may split cookies over several lines (RFC 9113 8.2.3); an
        // HTTP/1.1 server expects one, so they are joined with "; " on the way.
        if from_h2 && !backend.protocol.is_h2() {
            join_cookies(&mut parts.headers);
        }
        let host = parts.headers.get(header::HOST).cloned();
        let client_ip = self.client_ip.get_or_init(|| {
            HeaderValue::from_str(&self.peer.ip().to_string()).expect("an IP address is a valid header value")
        });
        add_forwarding(&mut parts.headers, client_ip, host.as_ref(), self.tls.is_some());
        if let Some(tls) = &self.tls {
            // Only what this handshake verified reaches the server under this name.
            parts.headers.remove(&X_CLIENT_CERT_SUBJECT);
            if let Some(subject) = &tls.client_subject {
                parts.headers.insert(X_CLIENT_CERT_SUBJECT.clone(), subject.clone());
            }
        }
        // Boxed: it goes down several levels of the request's future, each of
        // which would otherwise carry (and copy, into cold memory) its 344 bytes.
        (Box::new(Request::from_parts(parts, RequestBody::client(body, frontend.timeouts.client))), client_upgrade)
    }

    /// Turns the server's response into the client's.
    fn relay(
        &self,
        now: &Current,
        backend: &Arc<Backend>,
        exchange: Exchange,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        method: http::Method,
        path: Option<PathAndQuery>,
    ) -> Response<ResponseBody> {
        let Exchange { mut response, server, active } = exchange;
        let member = &backend.members[server];
        let status = response.status();
        let elapsed = now.started.elapsed().as_secs_f64();
        backend.stats.response_duration.observe(elapsed);
        member.state.response_duration.observe(elapsed);
        count(&now.frontend, Some(backend), status.as_u16());
        let record = AccessRecord::start(
            &now.frontend,
            self.peer,
            Some(backend),
            Some(server),
            &method,
            path.as_ref(),
            status.as_u16(),
            now.started,
        );
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let server_upgrade = match response.body_mut() {
                ServerResponseBody::Own(body) => body.upgrade(),
                ServerResponseBody::Hyper(_) => None,
            };
            if let (Some(client_upgrade), Some(server_upgrade)) = (client_upgrade, server_upgrade) {
                self.client.upgraded();
                tunnel::spawn(&self.tasks, Arc::clone(&now.frontend), client_upgrade, server_upgrade, active);
                strip_hop_by_hop(response.headers_mut(), true);
                drop(record);
                return response.map(|_| ResponseBody::empty());
            }
        }
        strip_hop_by_hop(response.headers_mut(), false);
        let idle_limit = backend.timeouts.server;
        response.map(|body| ResponseBody::Upstream(UpstreamBody::new(body, active, record, idle_limit)))
    }

    /// A forward-proxy request (absolute-form or CONNECT): out to the destination
    /// it names if the frontend's `forward_proxy` allows it; counted and logged.
    async fn forward_out(
        &self,
        now: &Current,
        forward: &ForwardProxy,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let (method, target) = (req.method().clone(), req.uri().path_and_query().cloned());
        let timeouts = &now.frontend.timeouts;
        let response = forward.serve(req, timeouts.connect, timeouts.client, &self.tasks).await;
        let status = response.status().as_u16();
        count(&now.frontend, None, status);
        let record =
            AccessRecord::start(&now.frontend, self.peer, None, None, &method, target.as_ref(), status, now.started);
        response.map(|body| body.logged(record))
    }

    /// A request a route answers here (`static`, `redirect`, `respond`): counted
    /// and logged like any other.
    async fn answer_locally(
        &self,
        now: &Current,
        action: &RouteAction,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let response = super::local::answer(action, req).await;
        let status = response.status().as_u16();
        count(&now.frontend, None, status);
        let path = req.uri().path_and_query();
        let record = AccessRecord::start(&now.frontend, self.peer, None, None, req.method(), path, status, now.started);
        response.map(|body| body.logged(record))
    }

    /// The one place a request that gets no server response is counted, logged and
    /// answered with a balancer-made status.
    fn fail(
        &self,
        now: &Current,
        backend: Option<&Arc<Backend>>,
        err: ProxyError,
        method: &http::Method,
        path: Option<&PathAndQuery>,
    ) -> Response<ResponseBody> {
        let frontend = &now.frontend;
        let status = err.status();
        if matches!(err, ProxyError::ClientBody { timed_out: true, .. }) {
            frontend.stats.client_timeouts.body.fetch_add(1, Relaxed);
        }
        if let Some(backend) = backend {
            backend.stats.response_duration.observe(now.started.elapsed().as_secs_f64());
        }
        // Counted always; logged at most once a second (a dead server or a flood of
        // bad requests would otherwise write a line per request).
        if let Some(repeats) = REQUEST_FAILED.check() {
            let backend = backend.map_or("-", |b| b.name.as_str());
            tracing::warn!(frontend = %frontend.name, backend, client = %self.peer, status = status.as_u16(), error = %err, "request failed{repeats}");
        }
        count(frontend, backend, status.as_u16());
        let record =
            AccessRecord::start(frontend, self.peer, backend, None, method, path, status.as_u16(), now.started);
        let response = match err.client_text() {
            Some(text) => error_response_saying(status, err.closes_connection(), text),
            None => error_response(status, err.closes_connection()),
        };
        let mut response = response.map(|body| body.logged(record));
        if let ProxyError::RateLimited { retry_after } = err {
            // Whole seconds, rounded up: a client that waits that long finds a token.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(http::header::RETRY_AFTER, seconds.max(1).into());
        }
        response
    }
}

/// The backend a request for `host` goes to: the first matching route's, else the default.
fn route<'f>(frontend: &'f Frontend, req: &Request<Incoming>, host: Option<&str>) -> Option<Target<'f>> {
    if !frontend.routes.is_empty() {
        let facts = RequestFacts { method: req.method(), host, path: req.uri().path(), headers: req.headers() };
        match frontend.routes.find(&facts) {
            Some(RouteAction::Backend(backend)) => return Some(Target::Backend(backend)),
            Some(action) => return Some(Target::Answer(action)),
            None => {}
        }
    }
    frontend.default_backend.as_ref().map(Target::Backend)
}

/// Joins several `cookie` lines into one, in order (nothing to do for one).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (lines.next(), lines.next()) else { return };
    let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// Where a request goes: a backend's servers, or an answer made here.
enum Target<'f> {
    Backend(&'f Arc<Backend>),
    /// `static`, `redirect` or `respond`.
    Answer(&'f RouteAction),
}

/// Counts a response sent to the client, on the frontend and its backend.
fn count(frontend: &Frontend, backend: Option<&Arc<Backend>>, code: u16) {
    frontend.stats.count_response(code);
    if let Some(backend) = backend {
        backend.stats.count_response(code);
    }
}
