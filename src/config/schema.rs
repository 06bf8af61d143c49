//! The YAML file as data: every key of CONFIG.md, nothing more (unknown keys are errors).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::duration::{opt_duration, HumanDuration};
use super::tls::TlsMaterial;
use super::value::{checked, BindAddr, Binds, HashKey, NameServer, StatusSet, TlsVersion};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin/metrics listener; absent means no admin endpoints.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Global timeout defaults; frontends and backends may override them.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Where clients connect.
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    /// Pools of servers that frontends and routes send traffic to.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// How servers with `discover` are looked up (default: /etc/resolv.conf).
    #[serde(default)]
    pub resolver: Option<Resolver>,
}

/// `resolver:` — the DNS servers and timings of discovery (`servers[].discover`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    /// Name servers asked in turn (port 53 unless given); absent: /etc/resolv.conf's.
    #[serde(default)]
    pub nameservers: Option<Vec<NameServer>>,
    /// How long the last good answer is kept while lookups fail (default 30s).
    #[serde(default, with = "opt_duration")]
    pub hold: Option<HumanDuration>,
    /// Shortest time between lookups of one name, whatever its TTL (default 1s).
    #[serde(default, with = "opt_duration")]
    pub min_ttl: Option<HumanDuration>,
    /// Longest time between lookups of one name (default 300s).
    #[serde(default, with = "opt_duration")]
    pub max_ttl: Option<HumanDuration>,
}

impl Resolver {
    /// `hold` when not set.
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(30);
    /// `min_ttl` when not set.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// `max_ttl` when not set.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
}

/// `admin:` — the listener serving /metrics, /healthz, /status and /api/status.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port` to listen on.
    pub bind: BindAddr,
    /// A file whose content (trimmed) is the bearer token every admin API write
    /// needs; without it every write is refused.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` by validation.
    #[serde(skip)]
    pub(super) token: Option<std::sync::Arc<str>>,
}

impl Admin {
    /// The admin token, once the config has been validated.
    pub fn token(&self) -> Option<&std::sync::Arc<str>> {
        self.token.as_ref()
    }
}

/// `timeouts:` — every field optional; unset fields fall back to the enclosing level.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect to a server.
    #[serde(default, with = "opt_duration")]
    pub connect: Option<HumanDuration>,
    /// Client-side inactivity (keep-alive idle, TCP inactivity).
    #[serde(default, with = "opt_duration")]
    pub client: Option<HumanDuration>,
    /// Waiting for / idle on a server.
    #[serde(default, with = "opt_duration")]
    pub server: Option<HumanDuration>,
    /// A whole request head must arrive within this.
    #[serde(default, with = "opt_duration")]
    pub request_header: Option<HumanDuration>,
    /// Upgraded (WebSocket) connections: inactivity limit once tunnelled.
    #[serde(default, with = "opt_duration")]
    pub tunnel: Option<HumanDuration>,
    /// Graceful shutdown: how long in-flight work may finish.
    #[serde(default, with = "opt_duration")]
    pub drain: Option<HumanDuration>,
}

/// Fully resolved timeouts (defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedTimeouts {
    /// TCP connect to a server.
    pub connect: Duration,
    /// Client-side inactivity.
    pub client: Duration,
    /// Server-side inactivity / time to response head.
    pub server: Duration,
    /// Whole request head deadline.
    pub request_header: Duration,
    /// Inactivity limit of an upgraded connection.
    pub tunnel: Duration,
    /// Graceful shutdown budget.
    pub drain: Duration,
}

impl Default for ResolvedTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            client: Duration::from_secs(60),
            server: Duration::from_secs(60),
            request_header: Duration::from_secs(10),
            tunnel: Duration::from_secs(3600),
            drain: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Applies the fields set here over `base`.
    pub fn resolve(&self, base: ResolvedTimeouts) -> ResolvedTimeouts {
        let pick = |own: Option<HumanDuration>, inherited: Duration| own.map_or(inherited, |d| d.0);
        ResolvedTimeouts {
            connect: pick(self.connect, base.connect),
            client: pick(self.client, base.client),
            server: pick(self.server, base.server),
            request_header: pick(self.request_header, base.request_header),
            tunnel: pick(self.tunnel, base.tunnel),
            drain: pick(self.drain, base.drain),
        }
    }
}

/// `mode:` of a frontend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Layer 7: HTTP/1.1 and h2c, routed.
    #[default]
    Http,
    /// Layer 4: bytes copied both ways.
    Tcp,
}

/// One entry of `frontends:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// Unique name, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// Listening address(es).
    pub bind: Binds,
    /// `http` (default) or `tcp`.
    #[serde(default)]
    pub mode: Mode,
    /// Client connections open at once; further ones are refused.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Backend for traffic no route matched.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Overrides of the global timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Largest accepted request head in bytes (HTTP only); default 64 KiB.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// Per-request access log line (HTTP) or per-connection line (TCP).
    #[serde(default)]
    pub access_log: bool,
    /// Terminate TLS on this frontend (http only).
    #[serde(default)]
    pub tls: Option<FrontendTls>,
    /// Requests per client address, beyond which 429 (http frontends).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Compress responses by Accept-Encoding (http frontends).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Act as a forward proxy: absolute-form requests and CONNECT (http frontends).
    #[serde(default)]
    pub forward_proxy: Option<ForwardProxyConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) whose
    /// client address is the one used everywhere (logs, X-Forwarded-For, hashing).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `tls:` of an http frontend: TLS is terminated here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    /// Each serves the DNS names of its certificate (SANs, wildcards); the first is
    /// the default for clients without (or with an unknown) SNI.
    pub certificates: Vec<CertificateFiles>,
    /// Refuse handshakes whose SNI no certificate serves (or without SNI).
    #[serde(default)]
    pub strict_sni: bool,
    /// Protocols offered by ALPN, in order of preference (default `[h2, http/1.1]`).
    #[serde(default)]
    pub alpn: Option<Vec<Alpn>>,
    /// Oldest TLS version accepted (default 1.2).
    #[serde(default)]
    pub min_version: Option<TlsVersion>,
    /// CA bundle (PEM) client certificates must chain to; set, a client without a
    /// valid certificate is refused (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Session ticket keys shared by several instances (one per line, 64 hex
    /// digits; the first encrypts, all decrypt), so a client resumes on any of
    /// them; rotate by adding a new first line and reloading. Default: keys of this
    /// process alone, rotated every 6 hours.
    #[serde(default)]
    pub ticket_keys: Option<PathBuf>,
    /// The files read and checked, set by validation so compiling never reads a file.
    #[serde(skip)]
    pub(super) loaded: Option<Arc<TlsMaterial>>,
}

impl FrontendTls {
    /// The certificates, keys and CAs the files hold, once the config has been validated.
    pub fn material(&self) -> Option<&Arc<TlsMaterial>> {
        self.loaded.as_ref()
    }
}

/// One `{cert, key}` of `tls.certificates`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM: the chain, leaf first.
    pub cert: PathBuf,
    /// PEM: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A protocol offered by ALPN.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 over TLS.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}

impl Alpn {
    /// The protocol's ALPN identifier.
    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::H2 => b"h2",
            Alpn::Http11 => b"http/1.1",
        }
    }
}

/// One entry of `routes:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Conditions, all of which must hold.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Backend that gets the matching requests (the only action of a tcp route).
    #[serde(default)]
    pub backend: Option<String>,
    /// Files served from disk (http).
    #[serde(default, rename = "static")]
    pub static_files: Option<StaticAction>,
    /// A redirect (http).
    #[serde(default)]
    pub redirect: Option<RedirectAction>,
    /// A fixed response (http).
    #[serde(default)]
    pub respond: Option<RespondAction>,
}

impl Route {
    /// The action keys the route sets, by name.
    pub fn actions(&self) -> Vec<&'static str> {
        let set = [
            ("backend", self.backend.is_some()),
            ("static", self.static_files.is_some()),
            ("redirect", self.redirect.is_some()),
            ("respond", self.respond.is_some()),
        ];
        set.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
    }
}

/// `static:` of a route: files under a directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticAction {
    /// The directory (relative paths: against the config file's directory).
    pub root: PathBuf,
    /// File served for a directory (none: a directory is a 404).
    #[serde(default)]
    pub index: Option<String>,
    /// Drop the route's `path_prefix` from the request path first (like nginx `alias`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// `root` against the config file's directory, checked to be a directory by validation.
    #[serde(skip)]
    pub(super) resolved_root: Option<PathBuf>,
}

impl StaticAction {
    /// The root directory, once the config has been validated.
    pub fn resolved_root(&self) -> Option<&std::path::Path> {
        self.resolved_root.as_deref()
    }
}

/// `redirect:` of a route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    /// Scheme and authority (and optionally a path prefix) to send the client to;
    /// the request's path and query are kept.
    pub to: String,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default)]
    pub status: Option<u16>,
}

/// `respond:` of a route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RespondAction {
    /// The status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// The body (default empty).
    #[serde(default)]
    pub body: Option<String>,
    /// Its Content-Type (default text/plain; charset=utf-8).
    #[serde(default)]
    pub content_type: Option<String>,
}

/// `match:` of a route.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Exact host or `*.suffix`; the port is ignored.
    #[serde(default)]
    pub host: Option<String>,
    /// Path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Path equals this.
    #[serde(default)]
    pub path: Option<String>,
    /// Request method equals this (any token).
    #[serde(default, deserialize_with = "checked::method")]
    pub method: Option<http::Method>,
    /// A header equals a value.
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    /// tcp only: the TLS ClientHello's server name is this, or matches `*.suffix`.
    #[serde(default)]
    pub sni: Option<String>,
}

/// `header: {name, value}` in a route match.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[serde(deserialize_with = "checked::header_name")]
    pub name: http::HeaderName,
    /// Exact value.
    #[serde(deserialize_with = "checked::header_value")]
    pub value: http::HeaderValue,
}

/// `balance:` of a backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Ketama ring over `hash_key`.
    ConsistentHash,
    /// Power of two choices: two random usable servers, the less loaded wins.
    Random,
}

/// One entry of `backends:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// Balancing algorithm.
    #[serde(default)]
    pub balance: Balance,
    /// `consistent_hash` only: what to hash (default `source_ip`).
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// Connect failures retried on another server.
    #[serde(default)]
    pub retries: Option<u32>,
    /// The pool.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Active health checking; absent means servers are always up.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Overrides of the global timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// TLS to the servers (and their health checks).
    #[serde(default)]
    pub tls: Option<BackendTls>,
    /// The HTTP version spoken to the servers (default http1).
    #[serde(default)]
    pub protocol: Protocol,
    /// Where requests wait when every usable server is at its `max_connections`;
    /// absent: they are refused at once (503, tcp: closed).
    #[serde(default)]
    pub queue: Option<Queue>,
    /// consistent_hash only: no server above this factor x the mean load; an
    /// over-loaded server's keys go on round the ring (bounded loads).
    #[serde(default)]
    pub hash_balance_factor: Option<f64>,
    /// A server that comes up ramps its weight from 10% to 100% over this long.
    #[serde(default, with = "opt_duration")]
    pub slow_start: Option<HumanDuration>,
    /// Passive health: ejects servers failing in live traffic.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Sticky sessions by an inserted cookie.
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// What a request is retried on another server for (default: connect_failure).
    #[serde(default)]
    pub retry_on: Option<Vec<RetryOn>>,
    /// A shared HTTP cache (RFC 9111) in front of the servers.
    #[serde(default)]
    pub cache: Option<BackendCache>,
}

/// `cache:` of a backend: a shared HTTP cache held in memory.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendCache {
    /// Bytes held at most (heads and bodies); the least recently used go first.
    pub size: super::value::ByteSize,
    /// Largest response stored (default 8MiB, at most `size`); larger ones are
    /// streamed through uncached.
    #[serde(default)]
    pub max_object: Option<super::value::ByteSize>,
}

impl BackendCache {
    /// `max_object` when not set (capped at `size`).
    pub const DEFAULT_MAX_OBJECT: u64 = 8 << 20;

    /// The largest response stored, in bytes.
    pub fn max_object(&self) -> u64 {
        self.max_object.map_or(Self::DEFAULT_MAX_OBJECT.min(self.size.bytes()), |m| m.bytes())
    }
}

/// One entry of `retry_on:` (a status may be written as a number or a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connect failed (refused, timed out, TLS): nothing reached the server.
    ConnectFailure,
    /// The server reset or closed the connection before answering.
    Reset,
    /// The server did not answer within `timeouts.server`.
    Timeout,
    /// The server answered 502.
    Status502,
    /// The server answered 503.
    Status503,
    /// The server answered 504.
    Status504,
}

impl RetryOn {
    const EXPECTED: &'static str = "connect_failure, reset, timeout, 502, 503 or 504";

    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "connect_failure" => RetryOn::ConnectFailure,
            "reset" => RetryOn::Reset,
            "timeout" => RetryOn::Timeout,
            "502" => RetryOn::Status502,
            "503" => RetryOn::Status503,
            "504" => RetryOn::Status504,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(RetryOn::EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<RetryOn, E> {
                RetryOn::from_word(word).ok_or_else(|| E::custom(format!("{word:?}: expected {}", RetryOn::EXPECTED)))
            }
            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<RetryOn, E> {
                self.visit_str(&code.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<RetryOn, E> {
                self.visit_str(&code.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `outlier_detection:` of a backend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row (5xx, connect errors, resets, timeouts) that eject (default 5).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// First ejection's length (default 30s); doubled for each further one, up to 10x.
    #[serde(default, with = "opt_duration")]
    pub ejection_time: Option<HumanDuration>,
    /// Most servers ejected at once, in percent of the backend's, rounded up (default 50).
    #[serde(default)]
    pub max_ejected_percent: Option<u32>,
}

impl OutlierDetection {
    /// Failures in a row when unset.
    pub const DEFAULT_FAILURES: u32 = 5;
    /// First ejection when unset.
    pub const DEFAULT_EJECTION: std::time::Duration = std::time::Duration::from_secs(30);
    /// Ejected share when unset.
    pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;
}

/// `sticky:` of a backend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sticky {
    /// The cookie's name.
    pub cookie: String,
}

/// `queue:` of a backend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Most requests waiting at once (default 1000); beyond: 503.
    #[serde(default)]
    pub max: Option<usize>,
    /// Longest wait (default 5s); then 503.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<HumanDuration>,
}

impl Queue {
    /// Most waiters when `max` is unset.
    pub const DEFAULT_MAX: usize = 1000;
    /// Longest wait when `timeout` is unset.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
}

/// `protocol:` of a backend: how HTTP reaches its servers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, a pooled connection per request in flight.
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2 over TLS (ALPN h2), every request of a worker multiplexed on one connection.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/2 over plain TCP (prior knowledge).
    #[serde(rename = "h2c")]
    H2c,
}

impl Protocol {
    /// HTTP/2, over TLS or not.
    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2 | Protocol::H2c)
    }
}

/// `tls:` of a backend: its servers are spoken to over TLS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// Verify the servers' certificates (default true); a failed verification is a 502.
    #[serde(default = "default_verify")]
    pub verify: bool,
    /// CA bundle (PEM) the servers' certificates chain to; default: the system's CAs.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and verified in the servers' certificates; default:
    /// each server's host as written in its `address`.
    #[serde(default)]
    pub sni: Option<String>,
    /// The CA certificates read by validation (the system's when `ca` is unset).
    #[serde(skip)]
    pub(super) roots: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
}

impl BackendTls {
    /// The CA certificates trusted, once the config has been validated.
    pub fn roots(&self) -> Option<&Arc<Vec<rustls::pki_types::CertificateDer<'static>>>> {
        self.roots.as_ref()
    }
}

fn default_verify() -> bool {
    true
}

/// One entry of `servers:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Unique within the backend.
    pub name: String,
    /// `host:port`; a host name is resolved when the config is validated.
    pub address: String,
    /// `address` resolved, set by validation (which resolves each name once), so
    /// that compiling a validated config never resolves or fails.
    #[serde(skip)]
    pub(super) resolved: Option<SocketAddr>,
    /// 0..=256, default 1; 0 takes no new traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Connections open at once to this server; 0 = unlimited.
    #[serde(default)]
    pub max_connections: usize,
    /// Used only when no non-backup server is up.
    #[serde(default)]
    pub backup: bool,
    /// Send a PROXY protocol header (v1 or v2) first on every connection to the server.
    #[serde(default)]
    pub send_proxy: Option<ProxyVersion>,
    /// The entry stands for the servers DNS names: `dns` (A/AAAA of the address's
    /// host, each a server on the entry's port) or `srv` (the address is an SRV name).
    #[serde(default)]
    pub discover: Option<Discover>,
}

/// `discover:` of a server entry.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Discover {
    /// Every A and AAAA record of the host is a server.
    Dns,
    /// Every target of the SRV records is a server (their weights, ports and priorities).
    Srv,
}

/// `forward_proxy:` of a frontend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardProxyConfig {
    /// Destinations: host names (`*.example.com` wildcards), IPs and CIDRs.
    pub allow: super::AllowList,
    /// Ports CONNECT may reach (default: 443).
    #[serde(default)]
    pub connect_ports: Option<Vec<u16>>,
}

/// `compression:` of a frontend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// Smallest body compressed, in bytes (default 1024); a body of unknown
    /// length is compressed.
    #[serde(default)]
    pub min_size: Option<u64>,
}

/// `rate_limit:` of a frontend: a token bucket per client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per `per`.
    pub requests: u32,
    /// The period `requests` are counted over (default 1s).
    #[serde(default, with = "opt_duration")]
    pub per: Option<HumanDuration>,
    /// Bucket size: requests at once after a quiet spell (default `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What a bucket belongs to.
    #[serde(default)]
    pub key: RateLimitKey,
}

/// `key:` of a rate limit.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The client's address (from the PROXY header when the frontend takes one).
    #[default]
    SourceIp,
}

/// `send_proxy:` of a server: the PROXY protocol version it expects.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

impl Server {
    /// The address `address` resolved to, once the config has been validated.
    pub fn resolved_address(&self) -> Option<SocketAddr> {
        self.resolved
    }
}

fn default_weight() -> u32 {
    1
}

/// `kind:` of a health check.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A TCP connect succeeds.
    #[default]
    Tcp,
    /// `GET path` answers with an expected status.
    Http,
}

/// `health_check:` of a backend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp` or `http`.
    #[serde(default)]
    pub kind: CheckKind,
    /// HTTP only: the path to GET.
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP only: `Host` header to send.
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP only: `200`, `200-399` or `[200, 204]`.
    #[serde(default)]
    pub expect_status: Option<StatusSet>,
    /// Time between probes (default 2s).
    #[serde(default, with = "opt_duration")]
    pub interval: Option<HumanDuration>,
    /// Probe deadline (default 1s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<HumanDuration>,
    /// Consecutive successes to mark up (default 2).
    #[serde(default)]
    pub rise: Option<u32>,
    /// Consecutive failures to mark down (default 3).
    #[serde(default)]
    pub fall: Option<u32>,
}
