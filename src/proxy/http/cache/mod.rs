//! A backend's shared HTTP cache (RFC 9111), in front of its servers; the data
//! path asks it three things:
//!
//! 1. [`HttpCache::classify`]: is this request for the cache at all? GET and HEAD
//!    are; a request that must bypass it is counted and forwarded untouched; an
//!    unsafe method (POST, PUT, DELETE, PATCH, ...) is forwarded and, if it
//!    succeeds, what is stored for its URL is dropped ([`HttpCache::invalidate`]).
//! 2. [`HttpCache::lookup`]: a fresh stored response answers at once (`hit`); a
//!    stale one, or one marked `no-cache`, is revalidated with the server
//!    (`stale`); none: fetched (`miss`), with concurrent misses of one URL
//!    collapsed into one server request (`coalesce`).
//! 3. [`Fill::on_response`]: the server's answer to a revalidation (a 304 refreshes
//!    the entry and the client gets the stored body) or to a miss (stored while
//!    it streams to the client, if the policy allows and it fits `max_object`).
//!
//! Every response the cache answers or stores carries `Age`. One cache per
//! backend, shared by every worker and carried across reloads while the backend
//! keeps its name and its `cache` settings. The policy is in `policy`, keys and
//! Vary variants in `key`, the byte-bounded LRU in `store`.

mod coalesce;
mod entry;
mod key;
mod policy;
mod record;
mod store;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};

pub use key::Key;
pub use record::RecordingBody;

use super::headers::wants_upgrade;
use super::reply::error_response;
use super::ResponseBody;
use coalesce::{FlightGuard, Flights, Joined};
use entry::Entry;
use key::Variant;
use policy::{RequestDirectives, ResponseDirectives, Timing};
use record::Recorder;

/// One backend's cache.
#[derive(Debug)]
pub struct HttpCache {
    /// `cache.size`: bytes held at most.
    size: u64,
    /// `cache.max_object`: the largest response stored.
    max_object: u64,
    store: store::Store,
    flights: Arc<Flights>,
    counters: Arc<CacheCounters>,
    clock: Clock,
}

/// Lookups by outcome (`fulcrum_cache_requests_total`), kept across reloads even
/// when the settings change (and the entries go).
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Answered from the cache without asking a server.
    pub hit: AtomicU64,
    /// Nothing usable stored: fetched from a server.
    pub miss: AtomicU64,
    /// Stored but stale (or `no-cache`): revalidated with a server.
    pub stale: AtomicU64,
    /// Not for the cache: another method, a range, `no-store`, an upgrade...
    pub bypass: AtomicU64,
}

impl CacheCounters {
    /// Each counter with its `result` label.
    pub fn labelled(&self) -> [(&'static str, &AtomicU64); 4] {
        [("hit", &self.hit), ("miss", &self.miss), ("stale", &self.stale), ("bypass", &self.bypass)]
    }
}

/// The cache's idea of the time: the system clock, which tests may move forward
/// (the Age and freshness of stored responses follow it).
#[derive(Debug, Default)]
struct Clock {
    ahead_ms: AtomicU64,
}

impl Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.ahead_ms.load(Relaxed))
    }
}

/// What a request is to the cache.
#[derive(Debug)]
pub enum Class {
    /// Not for the cache: forwarded untouched (counted as a bypass).
    Bypass,
    /// An unsafe method: forwarded; if it succeeds, [`HttpCache::invalidate`].
    Unsafe(Key),
    /// A GET or HEAD the cache may answer: [`HttpCache::lookup`].
    Cacheable(Cacheable),
}

/// A GET or HEAD for the cache.
#[derive(Debug)]
pub struct Cacheable {
    key: Key,
    head: bool,
    directives: RequestDirectives,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Answered by the cache (a hit; or a 504 for `only-if-cached` without one).
    Answer(Response<ResponseBody>),
    /// Forward the request (made conditional when revalidating); hand the
    /// server's response to [`Fill::on_response`].
    Fetch(Fill),
}

/// A request the cache sent to a server, waiting for the answer.
#[derive(Debug)]
pub struct Fill {
    cache: Arc<HttpCache>,
    key: Key,
    /// The stored response being revalidated.
    entry: Option<Arc<Entry>>,
    /// The client's request headers as it sent them (for Vary, Authorization,
    /// and its own validators).
    request: HeaderMap,
    head: bool,
    request_time: SystemTime,
    /// Held by a leader: released once its response is stored or known not to be.
    flight: Option<FlightGuard>,
}

/// What becomes of the server's response.
#[derive(Debug)]
pub enum Filled {
    /// The server confirmed the stored response (304): the response head now is
    /// the stored one's (or a 304 for the client's own validators); send this
    /// body in place of the server's empty one.
    FromEntry(ResponseBody),
    /// Stream the server's body through this recorder into the cache.
    Record(Recorder),
    /// Send the server's response on untouched.
    Pass,
}

impl HttpCache {
    /// An empty cache of `size` bytes storing responses of up to `max_object`.
    pub fn new(size: u64, max_object: u64) -> HttpCache {
        HttpCache {
            size,
            max_object,
            store: store::Store::new(size, max_object),
            flights: Arc::default(),
            counters: Arc::default(),
            clock: Clock::default(),
        }
    }

    /// The cache a reload gives a backend: `previous` itself (entries and all)
    /// when its settings are the same, else a new one keeping its counters.
    pub fn carried(previous: Option<&Arc<HttpCache>>, size: u64, max_object: u64) -> Arc<HttpCache> {
        match previous {
            Some(cache) if cache.size == size && cache.max_object == max_object => Arc::clone(cache),
            Some(cache) => {
                Arc::new(HttpCache { counters: Arc::clone(&cache.counters), ..HttpCache::new(size, max_object) })
            }
            None => Arc::new(HttpCache::new(size, max_object)),
        }
    }

    /// `cache.size`.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `cache.max_object`.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Bytes held now (heads and bodies).
    pub fn bytes(&self) -> u64 {
        self.store.bytes()
    }

    /// Stored responses now (each Vary variant counts).
    pub fn entries(&self) -> u64 {
        self.store.len()
    }

    /// Lookups by outcome.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Moves the cache's clock `by` forward: stored responses age as if that much
    /// time had passed (for tests; an operator has no use for it).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.ahead_ms.fetch_add(by.as_millis() as u64, Relaxed);
    }

    /// Drops every stored response whose path (and query) starts with
    /// `path_prefix`, on any host; how many were dropped.
    pub fn purge(&self, path_prefix: &str) -> u64 {
        self.store.purge(|key| key::path_of(key).starts_with(path_prefix))
    }

    /// What `req` (for `host`, over TLS if `https`) is to the cache. Counts the bypasses.
    pub fn classify<B>(&self, req: &Request<B>, host: Option<&str>, https: bool) -> Class {
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let head = match *req.method() {
            http::Method::GET => false,
            http::Method::HEAD => true,
            ref method => {
                self.counters.bypass.fetch_add(1, Relaxed);
                if policy::invalidates(method) {
                    return Class::Unsafe(Key::new(https, host, path));
                }
                return Class::Bypass;
            }
        };
        let headers = req.headers();
        let directives = RequestDirectives::parse(headers);
        if directives.no_store || wants_upgrade(headers) || policy::bypassing_headers(headers) {
            self.counters.bypass.fetch_add(1, Relaxed);
            return Class::Bypass;
        }
        Class::Cacheable(Cacheable { key: Key::new(https, host, path), head, directives })
    }

    /// The answer for a `class` request that a fresh stored response gives, if
    /// one does: the common case, taken without the rest of [`HttpCache::lookup`]
    /// (which looks again, and may wait).
    pub fn fresh<B>(&self, class: &Class, req: &Request<B>) -> Option<Response<ResponseBody>> {
        let Class::Cacheable(Cacheable { key, head, directives }) = class else { return None };
        let now = self.clock.now();
        let entry = self.store.get(key, req.headers())?;
        if !entry.timing.usable(now, entry.no_cache, directives) {
            return None;
        }
        self.counters.hit.fetch_add(1, Relaxed);
        Some(entry.respond(now, *head, req.headers()))
    }

    /// Looks `wanted` up: an answer from the cache, or what to forward (`req` is
    /// made conditional for a revalidation, and loses the client's own
    /// validators for a fetch meant to be stored: the cache wants the whole
    /// response). A miss may first wait for a concurrent request for the same
    /// URL to fill the cache.
    pub async fn lookup<B>(self: &Arc<Self>, wanted: Cacheable, req: &mut Request<B>) -> Lookup {
        let Cacheable { key, head, directives } = wanted;
        let mut waited = false;
        loop {
            let now = self.clock.now();
            let found = self.store.get(&key, req.headers());
            if let Some(entry) = &found {
                if entry.timing.usable(now, entry.no_cache, &directives) {
                    self.counters.hit.fetch_add(1, Relaxed);
                    return Lookup::Answer(entry.respond(now, head, req.headers()));
                }
            }
            if directives.only_if_cached {
                self.counters.miss.fetch_add(1, Relaxed);
                return Lookup::Answer(error_response(StatusCode::GATEWAY_TIMEOUT, false));
            }
            // A HEAD is never stored (it has no body to store): nobody waits on it,
            // and it waits on nobody.
            let flight = if head || waited {
                None
            } else {
                match self.flights.join(&key.shared()) {
                    Joined::Leader(guard) => Some(guard),
                    Joined::Crowded => None,
                    Joined::Wait(done) => {
                        // Whether the leader finished or the wait timed out, look
                        // again: a hit now, or this request goes to the server itself.
                        let finished = coalesce::wait(done, coalesce::WAIT).await;
                        tracing::trace!(key = key.as_str(), finished, "waited for a concurrent miss");
                        waited = true;
                        continue;
                    }
                }
            };
            let counter = if found.is_some() { &self.counters.stale } else { &self.counters.miss };
            counter.fetch_add(1, Relaxed);
            let request = req.headers().clone();
            match &found {
                Some(entry) => entry.make_conditional(req.headers_mut()),
                None if !head => {
                    req.headers_mut().remove(header::IF_NONE_MATCH);
                    req.headers_mut().remove(header::IF_MODIFIED_SINCE);
                }
                // A HEAD goes as the client sent it; its answer is the client's.
                None => {}
            }
            return Lookup::Fetch(Fill {
                cache: Arc::clone(self),
                key,
                entry: found,
                request,
                head,
                request_time: now,
                flight,
            });
        }
    }

    /// After an unsafe request for `key` answered `status` with `headers`: on
    /// success (2xx, 3xx) drops what is stored for the URL, and for the
    /// same-origin URLs its Location and Content-Location name (RFC 9111 section 4.4).
    pub fn invalidate(&self, key: &Key, status: StatusCode, headers: &HeaderMap) {
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        self.store.remove(key);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let named = headers.get(&name).and_then(|v| v.to_str().ok()).and_then(|v| same_origin_path(key, v));
            if let Some(path) = named {
                self.store.remove(&key.with_path(path));
            }
        }
    }

    /// Stores `entry` under `key`.
    fn store(&self, key: &Key, entry: Entry) {
        self.store.insert(key, Arc::new(entry));
    }
}

/// The path a Location or Content-Location `value` names on `key`'s origin: a
/// path (not `//host`), or an absolute URL of the same scheme and host.
fn same_origin_path<'v>(key: &Key, value: &'v str) -> Option<&'v str> {
    let path = if value.starts_with('/') && !value.starts_with("//") {
        value
    } else {
        let origin = key.origin();
        let head = value.get(..origin.len()).filter(|head| head.eq_ignore_ascii_case(origin))?;
        Some(&value[head.len()..]).filter(|rest| rest.starts_with('/'))?
    };
    // The key has no fragment.
    Some(path.split('#').next().unwrap_or(path))
}

impl Fill {
    /// Takes the server's response head: a 304 for the stored response refreshes
    /// it (the head is rewritten to the stored one's); a storable response is
    /// given its Age and recorded as it streams; anything else passes untouched.
    pub fn on_response<B>(self, response: &mut Response<B>) -> Filled {
        let now = self.cache.clock.now();
        let status = response.status();
        let authorization = self.request.contains_key(header::AUTHORIZATION);
        if status == StatusCode::NOT_MODIFIED {
            let Some(entry) = &self.entry else { return Filled::Pass };
            let refreshed = Arc::new(entry.refreshed(response.headers(), self.request_time, now));
            let directives = ResponseDirectives::parse(&refreshed.headers);
            if policy::storable(refreshed.status, &refreshed.headers, &directives, authorization).is_ok() {
                self.cache.store.insert(&self.key, Arc::clone(&refreshed));
            } else {
                // The server no longer lets it be shared: this client gets it, nobody else.
                self.cache.store.remove_entry(&self.key, entry);
            }
            let (head, body) = refreshed.respond(now, self.head, &self.request).into_parts();
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            return Filled::FromEntry(body);
        }
        if self.head {
            return Filled::Pass;
        }
        let directives = ResponseDirectives::parse(response.headers());
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let fits = length.is_none_or(|length| length <= self.max_object());
        if !fits || policy::storable(status, response.headers(), &directives, authorization).is_err() {
            // The server answers otherwise now: what was stored is outdated (unless
            // the server merely failed, when the entry may serve once it is back).
            if let (Some(entry), false) = (&self.entry, status.is_server_error()) {
                self.cache.store.remove_entry(&self.key, entry);
            }
            return Filled::Pass;
        }
        let freshness = policy::freshness_lifetime(&directives, response.headers(), now);
        let timing = Timing::new(self.request_time, now, response.headers(), freshness);
        let variant = Variant::of(&policy::vary_names(response.headers()).unwrap_or_default(), &self.request);
        response.headers_mut().insert(header::AGE, timing.age_header(now));
        let limit = usize::try_from(self.max_object()).unwrap_or(usize::MAX);
        let recorder = Recorder {
            key: self.key,
            status,
            headers: response.headers().clone(),
            variant,
            timing,
            no_cache: directives.no_cache,
            body: bytes::BytesMut::new(),
            limit,
            flight: self.flight,
            cache: self.cache,
        };
        Filled::Record(recorder.expecting(length))
    }

    fn max_object(&self) -> u64 {
        self.cache.max_object
    }
}

impl Filled {
    /// The client's response body made of the server's `body` and this outcome.
    pub fn body(self, body: ResponseBody) -> ResponseBody {
        match self {
            // The server's (empty) body ends its exchange as it drops.
            Filled::FromEntry(stored) => stored,
            Filled::Record(recorder) => ResponseBody::Recording(Box::new(RecordingBody::new(body, recorder))),
            Filled::Pass => body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_on_the_same_origin_only() {
        let key = Key::new(false, Some("shop.test"), "/cart");
        assert_eq!(same_origin_path(&key, "/items/1#top"), Some("/items/1"));
        assert_eq!(same_origin_path(&key, "http://SHOP.test/items/2"), Some("/items/2"));
        assert_eq!(same_origin_path(&key, "https://shop.test/items/2"), None, "another scheme");
        assert_eq!(same_origin_path(&key, "http://shop.test.evil/x"), None);
        assert_eq!(same_origin_path(&key, "//other.test/x"), None);
        assert_eq!(same_origin_path(&key, "items/3"), None, "relative references are left alone");
    }

    #[test]
    fn a_reload_keeps_the_cache_if_its_settings_stay() {
        let first = HttpCache::carried(None, 1 << 20, 1 << 10);
        first.counters.hit.fetch_add(3, Relaxed);
        let same = HttpCache::carried(Some(&first), 1 << 20, 1 << 10);
        assert!(Arc::ptr_eq(&first, &same));
        let resized = HttpCache::carried(Some(&first), 2 << 20, 1 << 10);
        assert!(!Arc::ptr_eq(&first, &resized));
        assert_eq!(resized.counters.hit.load(Relaxed), 3, "counters go on");
    }
}
