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
    /// What answers matching requests.
    pub action: RouteAction,
}

/// What a route does with the requests it matches.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward them to a backend's servers.
    Backend(Arc<Backend>),
    /// Answer from files on disk.
    Static(Arc<crate::proxy::http::StaticSite>),
    /// Send the client elsewhere, path and query kept.
    Redirect(Redirect),
    /// A fixed response.
    Respond(FixedResponse),
}

/// A compiled `redirect:`.
#[derive(Debug)]
pub struct Redirect {
    /// Scheme, authority and optional path prefix, without a trailing slash.
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    pub status: http::StatusCode,
}

/// A compiled `respond:`.
#[derive(Debug)]
pub struct FixedResponse {
    /// The status.
    pub status: http::StatusCode,
    /// The body (shared, never copied per request).
    pub body: bytes::Bytes,
    /// Its Content-Type.
    pub content_type: HeaderValue,
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
    /// Compiles a validated `match:` whose requests go to `backend`.
    pub fn compile(m: &RouteMatch, backend: Arc<Backend>) -> Route {
        Route::with_action(m, RouteAction::Backend(backend))
    }

    /// Compiles a validated `match:` answered by `action`.
    pub fn with_action(m: &RouteMatch, action: RouteAction) -> Route {
        let host = m.host.as_ref().map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_ascii_lowercase()),
            None => HostPattern::Exact(h.to_ascii_lowercase()),
        });
        let header = m.header.as_ref().map(|h| (h.name.clone(), h.value.clone()));
        Route {
            host,
            path_prefix: m.path_prefix.clone(),
            path: m.path.clone(),
            method: m.method.clone(),
            header,
            action,
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

    /// The action of the first matching route.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&RouteAction> {
        self.routes.iter().find(|r| r.matches(req)).map(|r| &r.action)
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
    use super::*;
    use crate::config::HeaderMatch;
    use proptest::prelude::*;

    #[test]
    fn port_is_ignored() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    use crate::cluster::test_backend as backend;

    /// A request as the property sees it (owned, to be generated).
    #[derive(Debug, Clone)]
    struct Facts {
        method: Method,
        host: Option<String>,
        path: String,
        headers: http::HeaderMap,
    }

    /// The documented rules (CONFIG.md), written out plainly: the index of the first
    /// route whose every condition holds. Host: exact, or `*.suffix` matching a
    /// longer name, ASCII case ignored, the port (after the last colon, or after an
    /// IP literal's `]`) ignored. Path prefix and path: byte-wise. Method: exact,
    /// case-sensitive. Header: some line with that name (any case) has exactly the value.
    fn reference(routes: &[RouteMatch], req: &Facts) -> Option<usize> {
        routes.iter().position(|m| {
            let host_ok = m.host.as_ref().is_none_or(|pattern| {
                let Some(host) = req.host.as_deref() else { return false };
                let name = match host.strip_prefix('[') {
                    Some(rest) => rest.find(']').map_or(host, |end| &host[..end + 2]),
                    None => host.rfind(':').map_or(host, |colon| &host[..colon]),
                };
                let (name, pattern) = (name.to_ascii_lowercase(), pattern.to_ascii_lowercase());
                match pattern.strip_prefix('*') {
                    Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
                    None => name == pattern,
                }
            });
            host_ok
                && m.path_prefix.as_ref().is_none_or(|p| req.path.starts_with(p.as_str()))
                && m.path.as_ref().is_none_or(|p| req.path == *p)
                && m.method.as_ref().is_none_or(|want| req.method.as_str() == want.as_str())
                && m.header.as_ref().is_none_or(|h| {
                    req.headers.iter().any(|(name, value)| {
                        name.as_str().eq_ignore_ascii_case(h.name.as_str()) && value.as_bytes() == h.value.as_bytes()
                    })
                })
        })
    }

    const NAMES: &[&str] = &["example.com", "api.example.com", "a.b.example.com", "example.org", "x", "_dmarc.x-y"];
    const PATHS: &[&str] = &["/", "/v1", "/v1/", "/v1/users", "/exact", "/\u{fc}n\u{ef}/", "/a%2Fb"];
    const METHODS: &[&str] = &["GET", "POST", "get", "PURGE", "M-SEARCH"];
    const HEADER_NAMES: &[&str] = &["X-Canary", "x-user", "Accept"];
    const HEADER_VALUES: &[&str] = &["1", "0", "a b", "", "v=1; w"];

    /// Flips the ASCII case of the letters chosen by `mask`.
    fn recase(text: &str, mask: u64) -> String {
        text.chars()
            .enumerate()
            .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    /// A `match:` that `fulcrum check` accepts.
    fn route_match() -> impl Strategy<Value = RouteMatch> {
        let host = prop_oneof![
            proptest::sample::select(NAMES).prop_map(str::to_string),
            proptest::sample::select(NAMES).prop_map(|n| format!("*.{n}")),
        ];
        let header = (proptest::sample::select(HEADER_NAMES), proptest::sample::select(HEADER_VALUES)).prop_map(
            |(name, value)| HeaderMatch {
                name: http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value: http::HeaderValue::from_static(value),
            },
        );
        (
            (proptest::option::weighted(0.6, host), any::<u64>()),
            proptest::option::weighted(0.3, proptest::sample::select(PATHS)),
            proptest::option::weighted(0.2, proptest::sample::select(PATHS)),
            proptest::option::weighted(0.3, proptest::sample::select(METHODS)),
            proptest::option::weighted(0.3, header),
        )
            .prop_map(|((host, mask), path_prefix, path, method, header)| RouteMatch {
                host: host.map(|h| recase(&h, mask)),
                path_prefix: path_prefix.map(str::to_string),
                path: path.map(str::to_string),
                method: method.map(|m| http::Method::from_bytes(m.as_bytes()).unwrap()),
                header,
                sni: None,
            })
    }

    /// Requests near the routes' values: odd case, ports, sub-names, IP literals,
    /// non-ASCII names, and anything at all now and then.
    fn facts() -> impl Strategy<Value = Facts> {
        let name = prop_oneof![
            4 => (proptest::sample::select(NAMES), proptest::sample::select(&["", "www.", ".", "\u{e9}."][..]))
                .prop_map(|(n, sub)| format!("{sub}{n}")),
            1 => proptest::sample::select(&["", "[::1]", "[::1", "b\u{fc}cher.example.com", "example.com.", "COM"][..])
                .prop_map(str::to_string),
            1 => any::<String>(),
        ];
        let host = (name, any::<u64>(), proptest::sample::select(&["", ":80", ":", ":8080:9", "]:1"][..]))
            .prop_map(|(name, mask, port)| format!("{}{port}", recase(&name, mask)));
        let path = prop_oneof![
            4 => (proptest::sample::select(PATHS), proptest::sample::select(&["", "x", "/", "\u{fc}", "?q"][..]))
                .prop_map(|(p, tail)| format!("{p}{tail}")),
            1 => any::<String>(),
        ];
        let method = prop_oneof![
            4 => proptest::sample::select(METHODS).prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
            1 => Just(Method::DELETE),
        ];
        let header = (
            proptest::sample::select(HEADER_NAMES),
            prop_oneof![
                4 => proptest::sample::select(HEADER_VALUES).prop_map(|v| v.as_bytes().to_vec()),
                1 => proptest::collection::vec(any::<u8>(), 0..8),
            ],
        );
        (method, proptest::option::weighted(0.9, host), path, proptest::collection::vec(header, 0..4)).prop_map(
            |(method, host, path, pairs)| {
                let mut headers = http::HeaderMap::new();
                for (name, value) in pairs {
                    if let Ok(value) = HeaderValue::from_bytes(&value) {
                        headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                    }
                }
                Facts { method, host, path, headers }
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 1024,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Random tables and requests: no panic, and the first matching route is the
        /// one the plain reading of the rules picks.
        #[test]
        fn first_match_is_the_reference_one(
            matches in proptest::collection::vec(route_match(), 0..6),
            requests in proptest::collection::vec(facts(), 1..12),
        ) {
            let routes = matches.iter().enumerate().map(|(i, m)| Route::compile(m, backend(&i.to_string()))).collect();
            let table = RouteTable::new(routes);
            prop_assert_eq!(table.is_empty(), matches.is_empty());
            for req in &requests {
                let facts = RequestFacts {
                    method: &req.method,
                    host: req.host.as_deref(),
                    path: &req.path,
                    headers: &req.headers,
                };
                let found = table.find(&facts).map(|action| match action {
                    RouteAction::Backend(backend) => backend.name.clone(),
                    other => format!("{other:?}"),
                });
                prop_assert_eq!(found, reference(&matches, req).map(|i| i.to_string()), "request {:?}", req);
            }
        }
    }
}
