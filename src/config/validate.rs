//! Semantic checks after parsing. Every problem is collected (not just the first),
//! each with the key path it is about.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;

use super::error::Issue;
use super::schema::*;

/// Highest server weight accepted.
pub const MAX_WEIGHT: u32 = 256;
/// Most connect retries accepted.
pub const MAX_RETRIES: u32 = 16;

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (TCP and HTTP).
    SourceIp,
    /// Path and query of the request (HTTP).
    Uri,
    /// Path only (HTTP).
    Path,
    /// The value of a request header, name lower-cased (HTTP).
    Header(String),
    /// The value of a cookie (HTTP).
    Cookie(String),
}

impl HashKey {
    /// True for keys only an HTTP request has.
    pub fn needs_http(&self) -> bool {
        !matches!(self, HashKey::SourceIp)
    }
}

/// Parses `source_ip | uri | path | header:NAME | cookie:NAME`.
pub fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let bad = || format!("unknown hash_key {text:?}; expected source_ip, uri, path, header:NAME or cookie:NAME");
    match text {
        "source_ip" => Ok(HashKey::SourceIp),
        "uri" => Ok(HashKey::Uri),
        "path" => Ok(HashKey::Path),
        _ => match text.split_once(':') {
            Some(("header", name)) if is_token(name) => Ok(HashKey::Header(name.to_ascii_lowercase())),
            Some(("header", _)) => Err(format!("{text:?}: header name must be a valid HTTP header name")),
            Some(("cookie", name)) if is_token(name) => Ok(HashKey::Cookie(name.to_string())),
            Some(("cookie", _)) => Err(format!("{text:?}: cookie name must be a non-empty token")),
            _ => Err(bad()),
        },
    }
}

/// A set of HTTP status codes: `200`, `200-399`, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<RangeInclusive<u16>>);

impl StatusSet {
    /// True when `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|range| range.contains(&code))
    }
}

impl Default for StatusSet {
    /// HAProxy's default for `httpchk`: 2xx and 3xx pass.
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

/// Parses `expect_status` from its YAML value.
pub fn parse_expect_status(value: &serde_yaml::Value) -> Result<StatusSet, String> {
    use serde_yaml::Value;
    fn one(value: &Value) -> Result<RangeInclusive<u16>, String> {
        let range = match value {
            Value::Number(n) => {
                let code = n.as_u64().ok_or_else(|| format!("{n} is not a status code"))?;
                code..=code
            }
            Value::String(text) => {
                let parse = |s: &str| {
                    s.trim().parse::<u64>().map_err(|_| format!("{text:?} is not a status code or range like 200-399"))
                };
                match text.split_once('-') {
                    Some((lo, hi)) => parse(lo)?..=parse(hi)?,
                    None => {
                        let code = parse(text)?;
                        code..=code
                    }
                }
            }
            other => return Err(format!("expected a status code or range, found {other:?}")),
        };
        let (lo, hi) = (*range.start(), *range.end());
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(format!("status range {lo}-{hi} must lie within 100-599, low end first"));
        }
        Ok(lo as u16..=hi as u16)
    }
    match value {
        Value::Sequence(items) if items.is_empty() => Err("expect_status list is empty".into()),
        Value::Sequence(items) => items.iter().map(one).collect::<Result<_, _>>().map(StatusSet),
        single => one(single).map(|range| StatusSet(vec![range])),
    }
}

/// Resolves `host:port` (IP literal or host name) to its first address.
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

/// Parses a listen address: `IP:PORT`, or `*:PORT` / `:PORT` for every IPv4 address.
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix("*:").or_else(|| text.strip_prefix(':')) {
        return port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
            .map_err(|_| format!("{text:?}: invalid port"));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not a listen address like 127.0.0.1:8080, [::1]:8080 or *:8080"))
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Checks a parsed config; returns every problem found (empty when valid).
pub fn validate(config: &Config) -> Vec<Issue> {
    let mut v = Validator::default();
    v.config(config);
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
            match parse_bind(&admin.bind) {
                Ok(addr) => {
                    binds.insert(addr, "admin.bind".into());
                }
                Err(msg) => self.err("admin.bind", msg),
            }
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

    fn timeouts(&mut self, path: &str, timeouts: &Timeouts) {
        let fields = [
            ("connect", timeouts.connect),
            ("client", timeouts.client),
            ("server", timeouts.server),
            ("request_header", timeouts.request_header),
            ("tunnel", timeouts.tunnel),
        ];
        for (key, value) in fields {
            if value.is_some_and(|d| d.0.is_zero()) {
                self.err(format!("{path}.{key}"), "must be greater than 0");
            }
        }
    }

    fn frontend(
        &mut self,
        path: &str,
        frontend: &Frontend,
        backends: &HashMap<&str, &Backend>,
        binds: &mut HashMap<SocketAddr, String>,
    ) {
        let list = frontend.bind.as_slice();
        if list.is_empty() {
            self.err(format!("{path}.bind"), "at least one address is required");
        }
        for (j, bind) in list.iter().enumerate() {
            let bind_path = match frontend.bind {
                Binds::One(_) => format!("{path}.bind"),
                Binds::Many(_) => format!("{path}.bind[{j}]"),
            };
            match parse_bind(bind) {
                Ok(addr) => {
                    if let Some(other) = binds.get(&addr) {
                        self.err(&bind_path, format!("{addr} is already bound by {other}"));
                    } else {
                        binds.insert(addr, bind_path);
                    }
                }
                Err(msg) => self.err(bind_path, msg),
            }
        }
        if frontend.max_connections == Some(0) {
            self.err(format!("{path}.max_connections"), "must be at least 1 (omit it for no limit)");
        }
        if let Some(limit) = frontend.max_header_bytes {
            // hyper's HTTP/1 parser cannot enforce a head limit below 8 KiB.
            if !(8192..=1 << 20).contains(&limit) {
                self.err(format!("{path}.max_header_bytes"), "must be between 8192 and 1048576");
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
                if !frontend.routes.is_empty() {
                    self.err(
                        format!("{path}.routes"),
                        "routes need mode: http (a tcp frontend has no requests to route)",
                    );
                }
                if frontend.default_backend.is_none() {
                    self.err(format!("{path}.default_backend"), "a tcp frontend needs a default_backend");
                }
                if frontend.max_header_bytes.is_some() {
                    self.err(format!("{path}.max_header_bytes"), "only applies to mode: http");
                }
            }
            Mode::Http => {
                if frontend.default_backend.is_none() && frontend.routes.is_empty() {
                    self.err(path, "needs a default_backend or at least one route");
                }
            }
        }
        for (j, route) in frontend.routes.iter().enumerate() {
            let route_path = format!("{path}.routes[{j}]");
            if !backends.contains_key(route.backend.as_str()) {
                self.err(format!("{route_path}.backend"), format!("no backend named {:?}", route.backend));
            }
            self.route_match(&format!("{route_path}.match"), &route.matches);
        }
    }

    fn route_match(&mut self, path: &str, m: &RouteMatch) {
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
        if let Some(method) = &m.method {
            if !is_token(method) {
                self.err(format!("{path}.method"), format!("{method:?} is not an HTTP method"));
            }
        }
        if let Some(header) = &m.header {
            if !is_token(&header.name) {
                self.err(format!("{path}.header.name"), format!("{:?} is not a valid header name", header.name));
            }
            if http::HeaderValue::from_str(&header.value).is_err() {
                self.err(format!("{path}.header.value"), "contains characters a header value cannot hold");
            }
        }
    }

    fn backend(&mut self, path: &str, backend: &Backend) {
        self.timeouts(&format!("{path}.timeouts"), &backend.timeouts);
        match (&backend.hash_key, backend.balance) {
            (Some(_), balance) if balance != Balance::ConsistentHash => {
                self.err(format!("{path}.hash_key"), "only applies to balance: consistent_hash");
            }
            (Some(key), _) => {
                if let Err(msg) = parse_hash_key(key) {
                    self.err(format!("{path}.hash_key"), msg);
                }
            }
            (None, _) => {}
        }
        if backend.retries.is_some_and(|r| r > MAX_RETRIES) {
            self.err(format!("{path}.retries"), format!("at most {MAX_RETRIES}"));
        }
        self.unique_names(&format!("{path}.servers"), backend.servers.iter().map(|s| s.name.as_str()));
        for (j, server) in backend.servers.iter().enumerate() {
            let server_path = format!("{path}.servers[{j}]");
            if let Err(msg) = resolve_address(&server.address) {
                self.err(format!("{server_path}.address"), msg);
            }
            if server.weight > MAX_WEIGHT {
                self.err(
                    format!("{server_path}.weight"),
                    format!("{} is out of range 0..={MAX_WEIGHT}", server.weight),
                );
            }
        }
        if let Some(check) = &backend.health_check {
            self.health_check(&format!("{path}.health_check"), check);
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
        if let Some(value) = &check.expect_status {
            if let Err(msg) = parse_expect_status(value) {
                self.err(format!("{path}.expect_status"), msg);
            }
        }
        for (key, value) in [("interval", check.interval), ("timeout", check.timeout)] {
            if value.is_some_and(|d| d.0.is_zero()) {
                self.err(format!("{path}.{key}"), "must be greater than 0");
            }
        }
        for (key, value) in [("rise", check.rise), ("fall", check.fall)] {
            if value == Some(0) {
                self.err(format!("{path}.{key}"), "must be at least 1");
            }
        }
    }

    /// A backend hashing on an HTTP-only key cannot serve a tcp frontend.
    fn hash_keys_fit_modes(&mut self, config: &Config, backends: &HashMap<&str, &Backend>) {
        for (i, frontend) in config.frontends.iter().enumerate() {
            if frontend.mode != Mode::Tcp {
                continue;
            }
            let Some(name) = &frontend.default_backend else { continue };
            let Some(backend) = backends.get(name.as_str()) else { continue };
            if let Some(Ok(key)) = backend.hash_key.as_deref().map(parse_hash_key) {
                if key.needs_http() {
                    self.err(
                        format!("frontends[{i}].default_backend"),
                        format!(
                            "backend {name:?} hashes on {:?}, which a tcp frontend does not have; use source_ip",
                            backend.hash_key.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
}
