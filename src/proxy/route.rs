//! HTTP route matching, compiled once per snapshot: first match wins.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

use crate::cluster::Backend;
use crate::config::RouteMatch;

/// How a route's `host` is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Equal, ignoring ASCII case.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored lower-case with the dot).
    Suffix(String),
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    host: Option<HostPattern>,
    path_prefix: Option<String>,
    path: Option<String>,
    method: Option<Method>,
    header: Option<(HeaderName, HeaderValue)>,
    /// Where matching requests go.
    pub backend: Arc<Backend>,
}

/// What a route looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Host from the `Host` header or the URI authority, with any port still on it.
    pub host: Option<&'a str>,
    /// Path (no query).
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
}

impl Route {
    /// Compiles a validated `match:` for `backend`.
    pub fn compile(m: &RouteMatch, backend: Arc<Backend>) -> Route {
        let host = m.host.as_ref().map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_ascii_lowercase()),
            None => HostPattern::Exact(h.to_ascii_lowercase()),
        });
        let header = m.header.as_ref().and_then(|h| {
            Some((HeaderName::from_bytes(h.name.as_bytes()).ok()?, HeaderValue::from_str(&h.value).ok()?))
        });
        Route {
            host,
            path_prefix: m.path_prefix.clone(),
            path: m.path.clone(),
            method: m.method.as_ref().and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
            header,
            backend,
        }
    }

    /// True when every condition of the route holds for the request.
    pub fn matches(&self, req: &RequestFacts<'_>) -> bool {
        if let Some(pattern) = &self.host {
            let Some(host) = req.host.map(strip_port) else { return false };
            let ok = match pattern {
                HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
                HostPattern::Suffix(suffix) => {
                    host.len() > suffix.len()
                        && host.is_char_boundary(host.len() - suffix.len())
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }
            };
            if !ok {
                return false;
            }
        }
        if self.path_prefix.as_ref().is_some_and(|p| !req.path.starts_with(p.as_str())) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| req.path != p) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| req.method != m) {
            return false;
        }
        if let Some((name, value)) = &self.header {
            if !req.headers.get_all(name).iter().any(|v| v == value) {
                return false;
            }
        }
        true
    }
}

/// Routes of one frontend, in order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// A table over `routes` (evaluated in order).
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The backend of the first matching route.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&Arc<Backend>> {
        self.routes.iter().find(|r| r.matches(req)).map(|r| &r.backend)
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn port_is_ignored() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
