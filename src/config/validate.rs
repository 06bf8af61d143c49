//! Semantic checks after parsing. Every problem is collected (not just the first),
//! each with the key path it is about.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::duration::HumanDuration;
use super::error::Issue;
use super::schema::*;

/// Highest server weight accepted.
pub const MAX_WEIGHT: u32 = 256;
/// Most requests a backend's queue may hold.
const MAX_QUEUE: usize = 1_000_000;

/// Most connect retries accepted.
pub const MAX_RETRIES: u32 = 16;
/// Most weight units in one consistent-hash backend: each unit is 400 points on the
/// ring (16 bytes each), so this caps a ring at about 100 MiB (64 servers of weight 256).
pub const MAX_RING_WEIGHT: u64 = 16_384;
/// Highest `max_connections` of a frontend or a server. Far above what one process
/// serves, far below tokio's semaphore limit (which panics beyond `usize::MAX >> 3`).
pub const MAX_CONNECTIONS: usize = 10_000_000;
/// Smallest `max_header_bytes`: hyper's HTTP/1 parser cannot enforce a head limit below 8 KiB.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Largest `max_header_bytes`.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Highest health check `rise` and `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// Largest `cache.size` of a backend (held in memory).
const MAX_CACHE_SIZE: u64 = 1 << 40;
/// Largest `cache.max_object` (a response being stored is held whole in memory).
const MAX_CACHE_OBJECT: u64 = 1 << 30;

/// The longest a duration key may be, with its spelling for messages. Every timeout
/// is added to `Instant::now()` somewhere; a bound keeps that from overflowing (a
/// panic) and catches unit typos (`30d` for `30s`).
#[derive(Clone, Copy)]
struct MaxDuration {
    max: Duration,
    text: &'static str,
}

const HOUR: MaxDuration = MaxDuration { max: Duration::from_secs(3600), text: "1h" };
const DAY: MaxDuration = MaxDuration { max: Duration::from_secs(24 * 3600), text: "1d" };
const THIRTY_DAYS: MaxDuration = MaxDuration { max: Duration::from_secs(30 * 24 * 3600), text: "30d" };

/// Resolves `host:port` (IP literal or host name) to its first address. Blocks on DNS.
pub fn resolve_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{text:?} is not host:port"));
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{host:?} resolves to no address")),
        Err(err) => Err(format!("cannot resolve {host:?}: {err}")),
    }
}

/// Why `sni` (a tcp route's match) is not an exact DNS name or a `*.suffix`
/// pattern, if it is not.
fn sni_problem(sni: &str) -> Option<&'static str> {
    let name = sni.strip_prefix("*.").unwrap_or(sni);
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Some("is an IP address: clients send no server name for those (the default_backend gets them)");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Some("is not a DNS name or *.suffix pattern (letters, digits, '-', '_' and '.'; '*.' only in front)");
    }
    if name.len() > 253 || name.split('.').any(|label| label.is_empty() || label.len() > 63) {
        return Some(
            "is not a DNS name (labels of 1 to 63 characters, at most 253 in all, no leading or trailing dot)",
        );
    }
    None
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// What a `discover` entry's address names: for `dns` the host and port
/// (`app.svc:8000`), for `srv` the SRV name (`_http._tcp.app.svc`, no port: the
/// records carry it). Either must be a DNS name, not an IP address.
pub fn discovered_name(kind: Discover, address: &str) -> Result<(&str, u16), String> {
    let (host, port) = match kind {
        Discover::Dns => {
            let Some((host, port)) = address.rsplit_once(':') else {
                return Err(format!("{address:?}: discover: dns needs host:port"));
            };
            match port.parse::<u16>() {
                Ok(port) if port != 0 => (host, port),
                _ => return Err(format!("{address:?}: invalid port")),
            }
        }
        Discover::Srv if address.contains(':') => {
            return Err(format!("{address:?}: discover: srv takes an SRV name without a port (the records give it)"))
        }
        Discover::Srv => (address, 0),
    };
    let labels_ok = host.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if host.is_empty() || host.len() > 253 || !labels_ok || host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?} is not a DNS name to discover servers by"));
    }
    Ok((host, port))
}

/// A bare file name (a static route's `index`): not empty, not `.` or `..`, and
/// without a path separator or NUL, so joining it to a directory stays in it.
pub fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Checks a parsed config; returns every problem found (empty when valid). Resolves
/// each server address (blocking DNS, each distinct name once) and stores the result
/// in the config, for compiling it without resolving again.
pub fn validate(config: &mut Config, base: &Path) -> Vec<Issue> {
    let mut v = Validator::default();
    v.config(config);
    v.resolve_servers(&mut config.backends);
    v.load_tls(&mut config.frontends, base);
    v.load_backend_tls(&mut config.backends, base);
    if let Some(admin) = &mut config.admin {
        v.load_admin_token(admin, base);
    }
    v.resolve_static_roots(&mut config.frontends, base);
    v.issues
}

#[derive(Default)]
struct Validator {
    issues: Vec<Issue>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue::new(path, message));
    }

    fn config(&mut self, config: &Config) {
        self.timeouts("timeouts", &config.timeouts);
        let mut binds: HashMap<SocketAddr, String> = HashMap::new();
        if let Some(admin) = &config.admin {
            binds.insert(admin.bind.addr(), "admin.bind".into());
        }
        if config.frontends.is_empty() {
            self.err("frontends", "at least one frontend is required");
        }

        let backends: HashMap<&str, &Backend> = config.backends.iter().map(|b| (b.name.as_str(), b)).collect();
        self.unique_names("frontends", config.frontends.iter().map(|f| f.name.as_str()));
        self.unique_names("backends", config.backends.iter().map(|b| b.name.as_str()));
        for (i, frontend) in config.frontends.iter().enumerate() {
            self.frontend(&format!("frontends[{i}]"), frontend, &backends, &mut binds);
        }
        for (i, backend) in config.backends.iter().enumerate() {
            self.backend(&format!("backends[{i}]"), backend);
        }
        self.hash_keys_fit_modes(config, &backends);
        if let Some(resolver) = &config.resolver {
            self.resolver(resolver);
        }
    }

    fn resolver(&mut self, resolver: &crate::config::Resolver) {
        if resolver.nameservers.as_ref().is_some_and(Vec::is_empty) {
            self.err("resolver.nameservers", "at least one name server (or leave it out for /etc/resolv.conf's)");
        }
        self.duration_at_most("resolver.hold".into(), resolver.hold, DAY);
        self.duration("resolver.min_ttl".into(), resolver.min_ttl, HOUR);
        self.duration("resolver.max_ttl".into(), resolver.max_ttl, DAY);
        let min = resolver.min_ttl.map_or(crate::config::Resolver::DEFAULT_MIN_TTL, |d| d.0);
        let max = resolver.max_ttl.map_or(crate::config::Resolver::DEFAULT_MAX_TTL, |d| d.0);
        if min > max {
            self.err("resolver.min_ttl", "must not exceed max_ttl");
        }
    }

    fn unique_names<'a>(&mut self, list: &str, names: impl Iterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for (i, name) in names.enumerate() {
            let path = format!("{list}[{i}].name");
            if !is_name(name) {
                self.err(&path, format!("{name:?} is not a valid name (use letters, digits, '_', '.', '-')"));
            } else if !seen.insert(name) {
                self.err(&path, format!("duplicate name {name:?}"));
            }
        }
    }

    /// A duration that must be above zero and at most `limit`.
    fn duration(&mut self, path: String, value: Option<HumanDuration>, limit: MaxDuration) {
        match value {
            Some(d) if d.0.is_zero() => self.err(path, "must be greater than 0"),
            value => self.duration_at_most(path, value, limit),
        }
    }

    /// A duration that may be zero but no more than `limit`.
    fn duration_at_most(&mut self, path: String, value: Option<HumanDuration>, limit: MaxDuration) {
        if value.is_some_and(|d| d.0 > limit.max) {
            self.err(path, format!("must be at most {}", limit.text));
        }
    }

    /// A number that must lie within `min..=max`.
    fn number<N: PartialOrd + std::fmt::Display>(&mut self, path: String, value: Option<N>, min: N, max: N) {
        match value {
            Some(n) if n < min => self.err(path, format!("must be at least {min}")),
            Some(n) if n > max => self.err(path, format!("must be at most {max}")),
            _ => {}
        }
    }

    fn timeouts(&mut self, path: &str, timeouts: &Timeouts) {
        let fields = [
            ("connect", timeouts.connect, HOUR),
            ("client", timeouts.client, THIRTY_DAYS),
            ("server", timeouts.server, THIRTY_DAYS),
            ("request_header", timeouts.request_header, HOUR),
            ("tunnel", timeouts.tunnel, THIRTY_DAYS),
        ];
        for (key, value, limit) in fields {
            self.duration(format!("{path}.{key}"), value, limit);
        }
        // 0 is meaningful here: exit without waiting.
        self.duration_at_most(format!("{path}.drain"), timeouts.drain, DAY);
    }

    fn frontend(
        &mut self,
        path: &str,
        frontend: &Frontend,
        backends: &HashMap<&str, &Backend>,
        binds: &mut HashMap<SocketAddr, String>,
    ) {
        if let Some(forward) = &frontend.forward_proxy {
            if frontend.mode != Mode::Http {
                self.err(format!("{path}.forward_proxy"), "only applies to http frontends");
            }
            if forward.connect_ports.as_ref().is_some_and(|ports| ports.contains(&0)) {
                self.err(format!("{path}.forward_proxy.connect_ports"), "bad entry 0: not a port");
            }
        }
        if let Some(compression) = &frontend.compression {
            if frontend.mode != Mode::Http {
                self.err(format!("{path}.compression"), "only applies to http frontends");
            }
            self.number(format!("{path}.compression.min_size"), compression.min_size, 0, 1 << 30);
        }
        if let Some(limit) = &frontend.rate_limit {
            let limit_path = format!("{path}.rate_limit");
            if frontend.mode != Mode::Http {
                self.err(&limit_path, "only applies to http frontends");
            }
            self.number(format!("{limit_path}.requests"), Some(limit.requests), 1, 10_000_000);
            self.duration(format!("{limit_path}.per"), limit.per, HOUR);
            self.number(format!("{limit_path}.burst"), limit.burst, 1, 10_000_000);
        }
        if frontend.bind.addrs().is_empty() {
            self.err(format!("{path}.bind"), "at least one address is required");
        }
        for (j, &addr) in frontend.bind.addrs().iter().enumerate() {
            let bind_path = frontend.bind.path(path, j);
            if let Some(other) = binds.get(&addr) {
                self.err(&bind_path, format!("{addr} is already bound by {other}"));
            } else {
                binds.insert(addr, bind_path);
            }
        }
        match frontend.max_connections {
            Some(0) => self.err(format!("{path}.max_connections"), "must be at least 1 (omit it for no limit)"),
            limit => self.number(format!("{path}.max_connections"), limit, 1, MAX_CONNECTIONS),
        }
        if let Some(limit) = frontend.max_header_bytes {
            if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&limit) {
                self.err(
                    format!("{path}.max_header_bytes"),
                    format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
                );
            }
        }
        self.timeouts(&format!("{path}.timeouts"), &frontend.timeouts);
        if let Some(name) = &frontend.default_backend {
            if !backends.contains_key(name.as_str()) {
                self.err(format!("{path}.default_backend"), format!("no backend named {name:?}"));
            }
        }
        match frontend.mode {
            Mode::Tcp => {
                // Routes are optional (by sni); the default takes what they leave.
                if frontend.default_backend.is_none() {
                    self.err(format!("{path}.default_backend"), "a tcp frontend needs a default_backend");
                }
                if frontend.max_header_bytes.is_some() {
                    self.err(format!("{path}.max_header_bytes"), "only applies to mode: http");
                }
            }
            Mode::Http => {
                // A forward proxy alone is a complete frontend: requests name their destination.
                let proxies = frontend.forward_proxy.is_some();
                if frontend.default_backend.is_none() && frontend.routes.is_empty() && !proxies {
                    self.err(path, "needs a default_backend, a route or a forward_proxy");
                }
            }
        }
        for (j, route) in frontend.routes.iter().enumerate() {
            let route_path = format!("{path}.routes[{j}]");
            self.route_action(&route_path, route, frontend.mode);
            if let Some(backend) = &route.backend {
                if !backends.contains_key(backend.as_str()) {
                    self.err(format!("{route_path}.backend"), format!("no backend named {backend:?}"));
                }
            }
            match frontend.mode {
                Mode::Tcp => self.sni_match(&format!("{route_path}.match"), &route.matches),
                Mode::Http => self.route_match(&format!("{route_path}.match"), &route.matches),
            }
        }
    }

    /// A route has exactly one action (a tcp route: a backend), each well formed.
    fn route_action(&mut self, path: &str, route: &Route, mode: Mode) {
        let actions = route.actions();
        match (actions.as_slice(), mode) {
            ([], _) => self.err(path, "needs one action: backend, static, redirect or respond"),
            ([_], Mode::Http) | (["backend"], Mode::Tcp) => {}
            ([action], Mode::Tcp) => self.err(format!("{path}.{action}"), "a tcp route's only action is backend"),
            (many, _) => self.err(path, format!("has {} actions ({}): give exactly one", many.len(), many.join(", "))),
        }
        if let Some(redirect) = &route.redirect {
            let parsed = redirect.to.parse::<http::Uri>();
            let absolute = parsed.as_ref().is_ok_and(|uri| uri.scheme().is_some() && uri.authority().is_some());
            if !absolute || redirect.to.contains('?') {
                self.err(format!("{path}.redirect.to"), "an absolute URL without a query, like https://example.com");
            }
            if redirect.status.is_some_and(|status| ![301, 302, 303, 307, 308].contains(&status)) {
                self.err(format!("{path}.redirect.status"), "one of 301, 302, 303, 307, 308");
            }
        }
        if let Some(respond) = &route.respond {
            if respond.status.is_some_and(|status| !(200..=599).contains(&status)) {
                self.err(format!("{path}.respond.status"), "a status within 200..=599");
            }
            if respond.content_type.as_deref().is_some_and(|t| http::HeaderValue::from_str(t).is_err()) {
                self.err(format!("{path}.respond.content_type"), "not a valid header value");
            }
            if respond.body.as_ref().is_some_and(|body| body.len() > 1 << 20) {
                self.err(format!("{path}.respond.body"), "at most 1 MiB");
            }
        }
        if let Some(files) = &route.static_files {
            if files.strip_prefix && route.matches.path_prefix.is_none() {
                self.err(format!("{path}.static.strip_prefix"), "needs the route's match.path_prefix");
            }
            if files.index.as_deref().is_some_and(|index| !is_file_name(index)) {
                self.err(format!("{path}.static.index"), "a file name, like index.html (no '/', '\\', '.' or '..')");
            }
        }
    }

    /// A tcp route matches the ClientHello's server name, and nothing else: a tcp
    /// frontend sees no request.
    fn sni_match(&mut self, path: &str, m: &RouteMatch) {
        // Destructured whole so that a new match key must be placed here too.
        let RouteMatch { host, path_prefix, path: exact_path, method, header, sni } = m;
        let http_only = [
            ("host", host.is_some()),
            ("path_prefix", path_prefix.is_some()),
            ("path", exact_path.is_some()),
            ("method", method.is_some()),
            ("header", header.is_some()),
        ];
        for (key, set) in http_only {
            if set {
                self.err(format!("{path}.{key}"), "only applies to mode: http (a tcp route matches sni only)");
            }
        }
        match sni {
            None => self.err(format!("{path}.sni"), "a tcp route needs sni (an exact name or *.suffix)"),
            Some(sni) => {
                if let Some(problem) = sni_problem(sni) {
                    self.err(format!("{path}.sni"), format!("{sni:?} {problem}"));
                }
            }
        }
    }

    /// Method and header are checked as they are parsed; the rest here.
    fn route_match(&mut self, path: &str, m: &RouteMatch) {
        if m.sni.is_some() {
            self.err(format!("{path}.sni"), "sni matches route tcp frontends (http routes match host)");
        }
        if let Some(host) = &m.host {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            let valid = !bare.is_empty()
                && bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !valid {
                self.err(format!("{path}.host"), format!("{host:?} is not a host name or *.suffix pattern"));
            }
        }
        for (key, value) in [("path_prefix", &m.path_prefix), ("path", &m.path)] {
            if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
                self.err(format!("{path}.{key}"), "must start with '/'");
            }
        }
    }

    fn backend(&mut self, path: &str, backend: &Backend) {
        self.timeouts(&format!("{path}.timeouts"), &backend.timeouts);
        match (backend.protocol, &backend.tls) {
            (Protocol::H2, None) => {
                self.err(format!("{path}.protocol"), "h2 needs tls (HTTP/2 without TLS is h2c)");
            }
            (Protocol::H2c, Some(_)) => {
                self.err(format!("{path}.protocol"), "h2c is HTTP/2 without TLS; over tls it is h2");
            }
            _ => {}
        }
        if backend.hash_key.is_some() && backend.balance != Balance::ConsistentHash {
            self.err(format!("{path}.hash_key"), "only applies to balance: consistent_hash");
        }
        self.number(format!("{path}.retries"), backend.retries, 0, MAX_RETRIES);
        self.unique_names(&format!("{path}.servers"), backend.servers.iter().map(|s| s.name.as_str()));
        for (j, server) in backend.servers.iter().enumerate() {
            let server_path = format!("{path}.servers[{j}]");
            if server.weight > MAX_WEIGHT {
                self.err(
                    format!("{server_path}.weight"),
                    format!("{} is out of range 0..={MAX_WEIGHT}", server.weight),
                );
            }
            // 0 means unlimited.
            self.number(format!("{server_path}.max_connections"), Some(server.max_connections), 0, MAX_CONNECTIONS);
            if let Some(kind) = server.discover {
                if let Err(msg) = discovered_name(kind, &server.address) {
                    self.err(format!("{server_path}.address"), msg);
                }
            }
        }
        let ring_weight: u64 = backend.servers.iter().map(|s| u64::from(s.weight)).sum();
        if backend.balance == Balance::ConsistentHash && ring_weight > MAX_RING_WEIGHT {
            self.err(
                format!("{path}.servers"),
                format!("consistent_hash: the weights add up to {ring_weight}; at most {MAX_RING_WEIGHT} (each unit is 400 ring points)"),
            );
        }
        if let Some(check) = &backend.health_check {
            self.health_check(&format!("{path}.health_check"), check);
        }
        if let Some(factor) = backend.hash_balance_factor {
            if backend.balance != Balance::ConsistentHash {
                self.err(format!("{path}.hash_balance_factor"), "only applies to balance: consistent_hash");
            } else if !(factor > 1.0 && factor <= 100.0) {
                self.err(
                    format!("{path}.hash_balance_factor"),
                    "must be above 1.0 (1.25 is a good start) and at most 100",
                );
            }
        }
        self.duration(format!("{path}.slow_start"), backend.slow_start, HOUR);
        if let Some(outlier) = &backend.outlier_detection {
            let path = format!("{path}.outlier_detection");
            self.number(format!("{path}.consecutive_failures"), outlier.consecutive_failures, 1, 1000);
            self.duration(format!("{path}.ejection_time"), outlier.ejection_time, HOUR);
            self.number(format!("{path}.max_ejected_percent"), outlier.max_ejected_percent, 1, 100);
        }
        if let Some(sticky) = &backend.sticky {
            let valid = !sticky.cookie.is_empty()
                && sticky.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                self.err(format!("{path}.sticky.cookie"), format!("{:?} is not a valid cookie name", sticky.cookie));
            }
        }
        if let Some(queue) = &backend.queue {
            self.number(format!("{path}.queue.max"), queue.max, 1, MAX_QUEUE);
            self.duration(format!("{path}.queue.timeout"), queue.timeout, HOUR);
            if backend.servers.iter().all(|server| server.max_connections == 0) {
                self.err(
                    format!("{path}.queue"),
                    "no server has max_connections, so nothing would ever wait: set servers[].max_connections",
                );
            }
        }
        if let Some(cache) = &backend.cache {
            self.cache(&format!("{path}.cache"), cache);
        }
    }

    /// `cache:` of a backend: a size above zero, and objects that fit in it.
    fn cache(&mut self, path: &str, cache: &BackendCache) {
        let size = cache.size.bytes();
        if size == 0 {
            self.err(format!("{path}.size"), "must be greater than 0");
        } else if size > MAX_CACHE_SIZE {
            self.err(format!("{path}.size"), "must be at most 1TiB (the cache is held in memory)");
        }
        match cache.max_object.map(|m| m.bytes()) {
            Some(0) => self.err(format!("{path}.max_object"), "must be greater than 0"),
            Some(max) if max > MAX_CACHE_OBJECT => self.err(
                format!("{path}.max_object"),
                "must be at most 1GiB (a response being stored is held in memory until it is whole)",
            ),
            Some(max) if max > size => self.err(
                format!("{path}.max_object"),
                format!("{} is more than the cache's size ({})", super::ByteSize(max), cache.size),
            ),
            _ => {}
        }
    }

    fn health_check(&mut self, path: &str, check: &HealthCheck) {
        if check.kind == CheckKind::Tcp {
            for (key, set) in [
                ("path", check.path.is_some()),
                ("host", check.host.is_some()),
                ("expect_status", check.expect_status.is_some()),
            ] {
                if set {
                    self.err(format!("{path}.{key}"), "only applies to kind: http");
                }
            }
        }
        if check.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            self.err(format!("{path}.path"), "must start with '/'");
        }
        self.duration(format!("{path}.interval"), check.interval, DAY);
        self.duration(format!("{path}.timeout"), check.timeout, HOUR);
        for (key, value) in [("rise", check.rise), ("fall", check.fall)] {
            self.number(format!("{path}.{key}"), value, 1, MAX_RISE_FALL);
        }
    }

    /// A backend hashing on an HTTP-only key cannot serve a tcp frontend.
    fn hash_keys_fit_modes(&mut self, config: &Config, backends: &HashMap<&str, &Backend>) {
        for (i, frontend) in config.frontends.iter().enumerate() {
            if frontend.mode != Mode::Tcp {
                continue;
            }
            let routes = (frontend.routes.iter().enumerate())
                .filter_map(|(j, r)| Some((format!("routes[{j}].backend"), r.backend.as_ref()?)));
            let uses = frontend.default_backend.iter().map(|name| ("default_backend".to_string(), name)).chain(routes);
            for (key, name) in uses {
                let Some(backend) = backends.get(name.as_str()) else { continue };
                if let Some(hash) = backend.hash_key.as_ref().filter(|hash| hash.needs_http()) {
                    self.err(
                        format!("frontends[{i}].{key}"),
                        format!(
                            "backend {name:?} hashes on \"{hash}\", which a tcp frontend does not have; use source_ip"
                        ),
                    );
                }
            }
        }
    }

    /// Reads and checks every TLS frontend's certificates, keys and CAs, keeping
    /// them in the config (see [`FrontendTls::material`]).
    fn load_tls(&mut self, frontends: &mut [Frontend], base: &Path) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        for (i, frontend) in frontends.iter_mut().enumerate() {
            let path = format!("frontends[{i}].tls");
            let Some(tls) = &mut frontend.tls else { continue };
            if frontend.mode == Mode::Tcp {
                self.err(
                    &path,
                    "TLS is terminated on mode: http only (a tcp frontend passes TLS through; route it by sni)",
                );
                continue;
            }
            if tls.alpn.as_ref().is_some_and(Vec::is_empty) {
                self.err(format!("{path}.alpn"), "at least one protocol (or omit it for [h2, http/1.1])");
            }
            match super::tls::load(&path, tls, base, now) {
                Ok(material) => tls.loaded = Some(std::sync::Arc::new(material)),
                Err(problems) => problems.into_iter().for_each(|(at, message)| self.err(at, message)),
            }
        }
    }

    /// Resolves each `static.root` against the config's directory; it must be a directory.
    fn resolve_static_roots(&mut self, frontends: &mut [Frontend], base: &Path) {
        for (i, frontend) in frontends.iter_mut().enumerate() {
            for (j, route) in frontend.routes.iter_mut().enumerate() {
                let Some(files) = &mut route.static_files else { continue };
                let root = base.join(&files.root);
                if root.is_dir() {
                    files.resolved_root = Some(root);
                } else {
                    self.err(
                        format!("frontends[{i}].routes[{j}].static.root"),
                        format!("{}: not a directory", root.display()),
                    );
                }
            }
        }
    }

    /// Reads the admin token: the file's content, trimmed, at least 16 bytes (a
    /// short token is guessable over the network).
    fn load_admin_token(&mut self, admin: &mut Admin, base: &Path) {
        let Some(file) = &admin.token_file else { return };
        let path = base.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim();
                if token.len() < 16 {
                    self.err(
                        "admin.token_file",
                        format!("{}: the token must be at least 16 characters", path.display()),
                    );
                } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.err("admin.token_file", format!("{}: the token must be one word", path.display()));
                } else {
                    admin.token = Some(token.into());
                }
            }
            Err(err) => self.err("admin.token_file", format!("{}: {err}", path.display())),
        }
    }

    /// Reads the CAs each TLS backend trusts, and checks its `sni`.
    fn load_backend_tls(&mut self, backends: &mut [Backend], base: &Path) {
        for (i, backend) in backends.iter_mut().enumerate() {
            let path = format!("backends[{i}].tls");
            let Some(tls) = &mut backend.tls else { continue };
            if let Some(sni) = &tls.sni {
                if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
                    self.err(format!("{path}.sni"), format!("{sni:?} is not a DNS name or an IP address"));
                }
            }
            if !tls.verify && tls.ca.is_none() {
                continue;
            }
            match super::tls::backend_roots(&path, tls.ca.as_deref(), base) {
                Ok(roots) => tls.roots = Some(roots),
                Err((at, message)) => self.err(at, message),
            }
        }
    }

    /// Resolves every server address, each distinct one once, into `Server::resolved`.
    fn resolve_servers(&mut self, backends: &mut [Backend]) {
        let mut seen: HashMap<String, Result<SocketAddr, String>> = HashMap::new();
        for (i, backend) in backends.iter_mut().enumerate() {
            for (j, server) in backend.servers.iter_mut().enumerate() {
                // Discovered entries are names looked up while running, not now.
                if server.discover.is_some() {
                    continue;
                }
                let resolved =
                    seen.entry(server.address.clone()).or_insert_with(|| resolve_address(&server.address)).clone();
                match resolved {
                    Ok(addr) if addr.port() == 0 => {
                        self.err(format!("backends[{i}].servers[{j}].address"), "port 0 cannot be connected to");
                    }
                    Ok(addr) => server.resolved = Some(addr),
                    Err(msg) => self.err(format!("backends[{i}].servers[{j}].address"), msg),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "frontends:\n  - { name: web, bind: 127.0.0.1:8080, default_backend: app }\nbackends:\n  - name: app\n    servers: [{ name: a, address: 127.0.0.1:8001 }]\n";

    fn issues(yaml: &str) -> Vec<String> {
        let mut config = Config::parse_unvalidated(yaml).expect("parses");
        validate(&mut config, Path::new(".")).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn validation_resolves_each_server_once_into_the_config() {
        let mut config = Config::parse_unvalidated(BASE).unwrap();
        assert_eq!(config.backends[0].servers[0].resolved_address(), None);
        assert!(validate(&mut config, Path::new(".")).is_empty());
        assert_eq!(config.backends[0].servers[0].resolved_address(), Some(SocketAddr::from(([127, 0, 0, 1], 8001))));
    }

    #[test]
    fn numbers_have_upper_bounds() {
        let cases = [
            ("max_connections: 18446744073709551615", "frontends[0].max_connections: must be at most 10000000"),
            ("max_connections: 0", "frontends[0].max_connections: must be at least 1"),
        ];
        for (key, expected) in cases {
            let yaml = BASE.replace("default_backend: app }", &format!("default_backend: app, {key} }}"));
            assert!(issues(&yaml).iter().any(|i| i.starts_with(expected)), "{key}: {:?}", issues(&yaml));
        }
        let server = BASE.replace("8001 }", "8001, max_connections: 10000001 }");
        assert_eq!(issues(&server), ["backends[0].servers[0].max_connections: must be at most 10000000"]);
        let heavy: String = (0..65)
            .map(|i| format!("      - {{ name: s{i}, address: 127.0.0.1:{}, weight: 256 }}\n", 9000 + i))
            .collect();
        let ring = format!(
            "{}    balance: consistent_hash\n    servers:\n{heavy}",
            BASE.split("    servers:").next().unwrap()
        );
        assert_eq!(
            issues(&ring),
            ["backends[0].servers: consistent_hash: the weights add up to 16640; at most 16384 (each unit is 400 ring points)"]
        );
        let check = format!("{BASE}    health_check: {{ rise: 101, fall: 0 }}\n");
        assert_eq!(
            issues(&check),
            ["backends[0].health_check.rise: must be at most 100", "backends[0].health_check.fall: must be at least 1"]
        );
    }

    #[test]
    fn durations_have_upper_bounds() {
        let yaml = format!("timeouts: {{ client: 400000000000y, connect: 2h, drain: 0s, tunnel: 30d }}\n{BASE}");
        assert_eq!(issues(&yaml), ["timeouts.connect: must be at most 1h", "timeouts.client: must be at most 30d"]);
        let check = format!("{BASE}    health_check: {{ interval: 2d, timeout: 0s }}\n");
        assert_eq!(
            issues(&check),
            [
                "backends[0].health_check.interval: must be at most 1d",
                "backends[0].health_check.timeout: must be greater than 0"
            ]
        );
    }

    #[test]
    fn server_port_zero_is_rejected() {
        assert_eq!(
            issues(&BASE.replace(":8001", ":0")),
            ["backends[0].servers[0].address: port 0 cannot be connected to"]
        );
    }

    /// A tcp frontend named `edge` (with `extra` keys) routing `routes` (flow
    /// mappings) to backend `app` of [`BASE`].
    fn tcp_routes(extra: &str, routes: &[&str]) -> String {
        let routes: String = routes.iter().map(|r| format!("      - {r}\n")).collect();
        BASE.replace(
            "frontends:\n",
            &format!(
                "frontends:\n  - name: edge\n    bind: 127.0.0.1:8443\n    mode: tcp\n{extra}    routes:\n{routes}"
            ),
        )
    }

    #[test]
    fn tcp_routes_match_sni_only() {
        let ok = [
            "{ match: { sni: a.site.test }, backend: app }",
            "{ match: { sni: \"*.site.test\" }, backend: app }",
            "{ match: { sni: \"*.Test\" }, backend: app }",
        ];
        assert_eq!(issues(&tcp_routes("    default_backend: app\n", &ok)), Vec::<String>::new());
        let http_keys = tcp_routes(
            "    default_backend: app\n",
            &[
                "{ match: { sni: a.test, host: a.test }, backend: app }",
                "{ match: { path_prefix: /, method: GET }, backend: app }",
                "{ match: {}, backend: ghost }",
            ],
        );
        assert_eq!(
            issues(&http_keys),
            [
                "frontends[0].routes[0].match.host: only applies to mode: http (a tcp route matches sni only)",
                "frontends[0].routes[1].match.path_prefix: only applies to mode: http (a tcp route matches sni only)",
                "frontends[0].routes[1].match.method: only applies to mode: http (a tcp route matches sni only)",
                "frontends[0].routes[1].match.sni: a tcp route needs sni (an exact name or *.suffix)",
                "frontends[0].routes[2].backend: no backend named \"ghost\"",
                "frontends[0].routes[2].match.sni: a tcp route needs sni (an exact name or *.suffix)",
            ]
        );
        // Routes or not, a tcp frontend needs its default backend.
        assert_eq!(
            issues(&tcp_routes("", &ok[..1])),
            ["frontends[0].default_backend: a tcp frontend needs a default_backend"]
        );
        // And sni stays out of http routes.
        let http = BASE.replace(
            "default_backend: app }",
            "default_backend: app, routes: [{ match: { sni: a.test }, backend: app }] }",
        );
        assert_eq!(
            issues(&http),
            ["frontends[0].routes[0].match.sni: sni matches route tcp frontends (http routes match host)"]
        );
    }

    #[test]
    fn sni_must_be_a_dns_name_or_a_one_label_wildcard() {
        let long_label = format!("{}.test", "a".repeat(64));
        let long_name = ["abcdefghij"; 26].join(".");
        let bad = [
            "\"*\"",
            "\"*.\"",
            "\"a.*.test\"",
            "\"**.test\"",
            "\"*a.test\"",
            "\"\"",
            "a..test",
            ".a.test",
            "a.test.",
            "\"a test\"",
            "\"b\\u00fccher.test\"",
            "10.0.0.1",
            "\"::1\"",
            &long_label,
            &long_name,
        ];
        for sni in bad {
            let yaml =
                tcp_routes("    default_backend: app\n", &[&format!("{{ match: {{ sni: {sni} }}, backend: app }}")]);
            let found = issues(&yaml);
            assert!(found.len() == 1 && found[0].starts_with("frontends[0].routes[0].match.sni: "), "{sni}: {found:?}");
        }
        let at_most = format!("{}.test", ["abcdefghi"; 24].join("."));
        assert!(at_most.len() <= 253);
        let yaml =
            tcp_routes("    default_backend: app\n", &[&format!("{{ match: {{ sni: {at_most} }}, backend: app }}")]);
        assert_eq!(issues(&yaml), Vec::<String>::new());
    }

    #[test]
    fn tcp_route_backends_must_not_hash_on_http_keys() {
        let yaml = tcp_routes("    default_backend: app\n", &["{ match: { sni: a.test }, backend: app }"]).replace(
            "  - name: app\n",
            "  - name: app\n    balance: consistent_hash\n    hash_key: \"header:X-User\"\n",
        );
        assert_eq!(
            issues(&yaml),
            [
                "frontends[0].default_backend: backend \"app\" hashes on \"header:x-user\", which a tcp frontend does not have; use source_ip",
                "frontends[0].routes[0].backend: backend \"app\" hashes on \"header:x-user\", which a tcp frontend does not have; use source_ip",
            ]
        );
    }
}
