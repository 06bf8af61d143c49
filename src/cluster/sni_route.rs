//! Routes of tcp frontends, by the server name (SNI) of the client's TLS
//! ClientHello: compiled once per snapshot, first match wins. Only a tcp frontend
//! with routes has a table; one without keeps the plain accept-connect-copy path.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{Backend, Frontend};
use crate::config::{self, Issue, Mode, RouteMatch};

/// How a route's `sni` is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SniPattern {
    /// Equal, ignoring ASCII case (stored lower-case).
    Exact(Box<[u8]>),
    /// `*.example.com`: one label, then `.example.com` (stored lower-case, with the dot).
    OneLabel(Box<[u8]>),
}

impl SniPattern {
    /// The pattern of a validated `sni` value.
    fn new(sni: &str) -> Self {
        let lower = sni.to_ascii_lowercase().into_bytes();
        match lower.strip_prefix(b"*") {
            Some(suffix) => SniPattern::OneLabel(suffix.into()),
            None => SniPattern::Exact(lower.into()),
        }
    }

    fn matches(&self, name: &[u8]) -> bool {
        match self {
            SniPattern::Exact(exact) => name.eq_ignore_ascii_case(exact),
            SniPattern::OneLabel(suffix) => {
                name.len() > suffix.len() && {
                    let (label, tail) = name.split_at(name.len() - suffix.len());
                    // `*` stands for exactly one label: not empty, no dot in it.
                    tail.eq_ignore_ascii_case(suffix) && !label.contains(&b'.')
                }
            }
        }
    }
}

/// One compiled tcp route.
#[derive(Debug)]
struct SniRoute {
    pattern: SniPattern,
    backend: Arc<Backend>,
}

/// The routes of one tcp frontend, in order, with the counters of the
/// connections refused before routing.
#[derive(Debug)]
pub struct SniRoutes {
    routes: Box<[SniRoute]>,
    /// Connections closed because their first flight was no routable ClientHello;
    /// kept across reloads, like the frontend's other counters.
    pub refused: Arc<SniRefused>,
}

impl SniRoutes {
    /// The backend of the first route matching `server_name`; `None` when no route
    /// matches or the client sent no name (the frontend's default backend applies).
    pub fn find(&self, server_name: Option<&[u8]>) -> Option<&Arc<Backend>> {
        let name = server_name?;
        self.routes.iter().find(|r| r.pattern.matches(name)).map(|r| &r.backend)
    }
}

/// What closed the connections of a routed tcp frontend before a backend was chosen.
#[derive(Debug, Default)]
pub struct SniRefused {
    /// First bytes that are not a TLS ClientHello, or one whose lengths contradict each other.
    pub invalid: AtomicU64,
    /// A ClientHello longer than the bound on what is peeked.
    pub too_large: AtomicU64,
    /// No complete ClientHello within `timeouts.request_header`.
    pub timeout: AtomicU64,
    /// The client closed (or reset) the connection before its ClientHello was complete.
    pub closed: AtomicU64,
}

impl SniRefused {
    /// Each counter with a `reason` label, for export.
    pub fn labelled(&self) -> [(&'static str, &AtomicU64); 4] {
        [
            ("invalid", &self.invalid),
            ("too_large", &self.too_large),
            ("timeout", &self.timeout),
            ("closed", &self.closed),
        ]
    }
}

/// Compiles the routes of frontend `f` (`frontends[i]`) when it is a tcp frontend
/// with routes; `None` otherwise. Counters carry over from `previous`, the
/// frontend of the same name in the previous snapshot.
pub(super) fn compile(
    i: usize,
    f: &config::Frontend,
    backends: &HashMap<&str, &Arc<Backend>>,
    previous: Option<&Frontend>,
    issues: &mut Vec<Issue>,
) -> Option<SniRoutes> {
    if f.mode != Mode::Tcp || f.routes.is_empty() {
        return None;
    }
    let mut routes = Vec::with_capacity(f.routes.len());
    for (j, r) in f.routes.iter().enumerate() {
        let path = format!("frontends[{i}].routes[{j}]");
        let name = r.backend.as_deref().unwrap_or_default();
        let Some(backend) = backends.get(name) else {
            issues.push(Issue::new(format!("{path}.backend"), format!("no backend named {name:?}")));
            continue;
        };
        let RouteMatch { sni: Some(sni), .. } = &r.matches else {
            issues.push(Issue::new(format!("{path}.match.sni"), "missing: the config was not validated"));
            continue;
        };
        routes.push(SniRoute { pattern: SniPattern::new(sni), backend: Arc::clone(backend) });
    }
    let refused = previous.and_then(|p| p.sni_routes.as_ref()).map(|p| Arc::clone(&p.refused)).unwrap_or_default();
    Some(SniRoutes { routes: routes.into(), refused })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::cluster::test_backend as backend;

    fn table(patterns: &[&str]) -> SniRoutes {
        let routes = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| SniRoute { pattern: SniPattern::new(p), backend: backend(&i.to_string()) })
            .collect();
        SniRoutes { routes, refused: Arc::default() }
    }

    fn found(table: &SniRoutes, name: Option<&str>) -> Option<String> {
        table.find(name.map(str::as_bytes)).map(|b| b.name.clone())
    }

    #[test]
    fn exact_and_one_label_wildcards_ignore_case() {
        let routes = table(&["a.site.test", "*.site.test", "*.b.test"]);
        let cases = [
            ("a.site.test", Some("0")),
            ("A.SITE.Test", Some("0")),
            ("x.site.test", Some("1")),
            ("X.Site.TEST", Some("1")),
            ("site.test", None),
            (".site.test", None),
            ("a.b.site.test", None),
            ("c.b.test", Some("2")),
            ("b.test", None),
            ("xsite.test", None),
            ("a.site.test.", None),
        ];
        for (name, want) in cases {
            assert_eq!(found(&routes, Some(name)).as_deref(), want, "{name}");
        }
        assert_eq!(found(&routes, None), None);
    }

    #[test]
    fn first_match_wins() {
        let routes = table(&["*.site.test", "a.site.test"]);
        assert_eq!(found(&routes, Some("a.site.test")).as_deref(), Some("0"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        /// The plain reading of the rules: lower-case both; exact is equality;
        /// `*.suffix` is a non-empty, dot-free label followed by `.suffix`.
        #[test]
        fn matching_follows_the_rules(
            pattern in "(\\*\\.)?[a-cA-C]{1,2}(\\.[a-cA-C]{1,2}){0,2}",
            // Labels from a small alphabet, so that names often end in a pattern's
            // suffix, with zero to several labels (some empty) in front of it.
            name in "([a-cA-C]{0,2}\\.){0,3}[a-cA-C]{1,2}(\\.[a-cA-C]{1,2}){0,2}|[\\x00-\\xff]{0,6}",
        ) {
            let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
            let expected = match p.strip_prefix("*.") {
                Some(suffix) => n
                    .strip_suffix(suffix)
                    .and_then(|head| head.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                None => n == p,
            };
            prop_assert_eq!(SniPattern::new(&pattern).matches(name.as_bytes()), expected);
        }
    }
}
