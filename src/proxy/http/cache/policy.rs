//! RFC 9111 as pure functions: what `Cache-Control` says (requests and
//! responses), whether a response may be stored, how long it stays fresh, and
//! how old it is. Nothing here holds state or reads a clock: the caller passes
//! the times, so the rules are tested without waiting.
//!
//! Choices where the RFC leaves room, kept simple and predictable for an operator:
//! - No heuristic freshness: a response is stored only if it says how long it is
//!   fresh (`s-maxage`, `max-age`, `Expires`), or if it asks to be revalidated on
//!   every use (`no-cache`) and carries a validator to do so. An application that
//!   says nothing about caching is never cached behind its back.
//! - Only the status codes RFC 9110 calls cacheable by default are stored (200,
//!   203, 204, 300, 301, 308, 404, 405, 410, 414, 501), and only with the
//!   explicit freshness above.
//! - Stale responses are never served: not on errors (`stale-if-error`), not with
//!   a request's `max-stale`. A stale entry is always revalidated first.
//! - `private` and `no-cache` with a field list are treated like their unqualified
//!   forms (the whole response is private / needs revalidation).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// RFC 9111 section 1.2.2: a delta-seconds value too large to represent is taken
/// as this (about 68 years).
const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// The directives of a response's `Cache-Control` that matter to a shared cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-cache`: stored, but revalidated before every use.
    pub no_cache: bool,
    /// `private`: for one user's cache only, never a shared one.
    pub private: bool,
    /// `public`: storable even for a request with `Authorization`.
    pub public: bool,
    /// `must-revalidate` (or `proxy-revalidate`): never served stale (we never
    /// do), and storable for a request with `Authorization`.
    pub must_revalidate: bool,
    /// `max-age`, in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage` (shared caches only; wins over `max-age`), in seconds.
    pub s_maxage: Option<u64>,
}

impl ResponseDirectives {
    /// The directives of `headers`' `Cache-Control` lines; the first of a
    /// repeated directive counts (RFC 9111 section 4.2.1).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = ResponseDirectives::default();
        for (name, value) in directives(headers) {
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" if d.max_age.is_none() => d.max_age = Some(delta_seconds(value)),
                "s-maxage" if d.s_maxage.is_none() => d.s_maxage = Some(delta_seconds(value)),
                _ => {}
            }
        }
        d
    }
}

/// The directives of a request's `Cache-Control` (and `Pragma: no-cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-store`: the cache neither answers nor stores this request.
    pub no_store: bool,
    /// `no-cache` (or `Pragma: no-cache` without Cache-Control): revalidate first.
    pub no_cache: bool,
    /// `max-age`: the client takes nothing older, in seconds.
    pub max_age: Option<u64>,
    /// `min-fresh`: the client wants at least this much freshness left, in seconds.
    pub min_fresh: Option<u64>,
    /// `only-if-cached`: answer from the cache or with a 504, never ask a server.
    pub only_if_cached: bool,
}

impl RequestDirectives {
    /// The directives of a request's headers.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut d = RequestDirectives::default();
        let mut any = false;
        for (name, value) in directives(headers) {
            any = true;
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "only-if-cached" => d.only_if_cached = true,
                "max-age" if d.max_age.is_none() => d.max_age = Some(delta_seconds(value)),
                "min-fresh" if d.min_fresh.is_none() => d.min_fresh = Some(delta_seconds(value)),
                _ => {}
            }
        }
        // RFC 9111 section 5.4: Pragma counts only when Cache-Control is absent.
        if !any {
            let pragma = headers.get_all(header::PRAGMA).iter().filter_map(|v| v.to_str().ok());
            d.no_cache = pragma.flat_map(|v| v.split(',')).any(|p| p.trim().eq_ignore_ascii_case("no-cache"));
        }
        d
    }
}

/// The `name[=value]` directives of every `Cache-Control` line, values unquoted.
/// Scanned rather than split on commas: a quoted value may hold one.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).flat_map(|line| {
        let mut rest = line;
        std::iter::from_fn(move || loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return None;
            }
            let end = rest.find([',', '=']).unwrap_or(rest.len());
            let name = rest[..end].trim();
            rest = &rest[end..];
            let mut value = None;
            if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start();
                if let Some(quoted) = after.strip_prefix('"') {
                    // A quoted-string: up to the closing quote (escapes skipped over).
                    let mut close = quoted.len();
                    let mut escaped = false;
                    for (i, c) in quoted.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                close = i;
                                break;
                            }
                            _ => {}
                        }
                    }
                    value = Some(&quoted[..close]);
                    rest = quoted.get(close + 1..).unwrap_or("");
                    // Whatever follows the quote up to the next comma is junk.
                    rest = &rest[rest.find(',').unwrap_or(rest.len())..];
                } else {
                    let end = after.find(',').unwrap_or(after.len());
                    value = Some(after[..end].trim());
                    rest = &after[end..];
                }
            }
            if !name.is_empty() {
                return Some((name, value));
            }
        })
    })
}

/// A delta-seconds value: digits, capped (RFC 9111 section 1.2.2). A malformed
/// one is taken as 0, so the response is stale at once rather than fresh for a
/// time nobody wrote.
fn delta_seconds(value: Option<&str>) -> u64 {
    let Some(text) = value.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())) else { return 0 };
    text.parse::<u64>().map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX))
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    /// A status not cacheable by default (see the module's notes).
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The request had `Authorization` and the response did not allow sharing it
    /// (`public`, `s-maxage` or `must-revalidate`).
    Authorization,
    /// `Set-Cookie`: one client's cookie must not reach the others.
    SetCookie,
    /// `Vary: *`: no later request can be known to match.
    VaryAny,
    /// Neither explicit freshness nor `no-cache` with a validator.
    NoFreshness,
}

/// Whether the response (`status`, `headers`, parsed `directives`) to a GET may
/// be stored; `authorization`: the request carried credentials.
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    authorization: bool,
) -> Result<(), NotStorable> {
    if !matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501) {
        return Err(NotStorable::Status);
    }
    if directives.no_store {
        return Err(NotStorable::NoStore);
    }
    if directives.private {
        return Err(NotStorable::Private);
    }
    if authorization && !(directives.public || directives.s_maxage.is_some() || directives.must_revalidate) {
        return Err(NotStorable::Authorization);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    if vary_names(headers).is_none() {
        return Err(NotStorable::VaryAny);
    }
    let explicit =
        directives.s_maxage.is_some() || directives.max_age.is_some() || headers.contains_key(header::EXPIRES);
    let validated = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if !(explicit || directives.no_cache && validated) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// The request header names a response varies on, lowercased; `None` for `Vary: *`
/// (or a name that is not a valid header name, which no request can match either).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(header::VARY) {
        let line = line.to_str().ok()?;
        for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// How long a response stays fresh, from its directives and headers (RFC 9111
/// section 4.2.1): `s-maxage`, else `max-age`, else `Expires` minus `Date` (or
/// minus `response_time` without a Date). An invalid `Expires` means already
/// expired; without any of them, zero (see the module's notes on heuristics).
pub fn freshness_lifetime(directives: &ResponseDirectives, headers: &HeaderMap, response_time: SystemTime) -> Duration {
    if let Some(seconds) = directives.s_maxage.or(directives.max_age) {
        return Duration::from_secs(seconds);
    }
    let Some(expires) = headers.get(header::EXPIRES) else { return Duration::ZERO };
    let Some(expires) = http_date(expires) else { return Duration::ZERO };
    let date = headers.get(header::DATE).and_then(http_date).unwrap_or(response_time);
    expires.duration_since(date).unwrap_or(Duration::ZERO)
}

/// An HTTP date header value.
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// When a stored response was received and how old it was then; how old it is
/// at any later moment (RFC 9111 section 4.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the response (or the 304 that last refreshed it) arrived.
    pub response_time: SystemTime,
    /// Its age on arrival: the larger of what its Date implies and what its Age
    /// header said plus the time the exchange took.
    pub corrected_initial_age: Duration,
    /// How long it is fresh, counted from age zero.
    pub freshness: Duration,
}

impl Timing {
    /// The timing of a response to a request sent at `request_time` and answered
    /// at `response_time`, with `headers` (Date, Age) and `freshness`.
    pub fn new(request_time: SystemTime, response_time: SystemTime, headers: &HeaderMap, freshness: Duration) -> Self {
        let apparent_age = headers
            .get(header::DATE)
            .and_then(http_date)
            .and_then(|date| response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let age_value = headers.get(header::AGE).map_or(0, |v| delta_seconds(v.to_str().ok().map(str::trim)));
        let response_delay = response_time.duration_since(request_time).unwrap_or(Duration::ZERO);
        let corrected_age_value = Duration::from_secs(age_value) + response_delay;
        Timing { response_time, corrected_initial_age: apparent_age.max(corrected_age_value), freshness }
    }

    /// The response's age at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        self.corrected_initial_age + now.duration_since(self.response_time).unwrap_or(Duration::ZERO)
    }

    /// The `Age` header for the response at `now`: whole seconds.
    pub fn age_header(&self, now: SystemTime) -> HeaderValue {
        HeaderValue::from(self.age(now).as_secs())
    }

    /// Whether the response may be used at `now` without asking the server: fresh,
    /// not marked `no-cache`, and within what the request accepts.
    pub fn usable(&self, now: SystemTime, no_cache: bool, request: &RequestDirectives) -> bool {
        if no_cache || request.no_cache {
            return false;
        }
        let age = self.age(now);
        if age >= self.freshness {
            return false;
        }
        if request.max_age.is_some_and(|max| age > Duration::from_secs(max)) {
            return false;
        }
        let left = self.freshness - age;
        request.min_fresh.is_none_or(|min| left >= Duration::from_secs(min))
    }
}

/// Methods whose success invalidates what the cache holds for the URL (RFC 9111
/// section 4.4): every method but the safe ones.
pub fn invalidates(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Request headers that make the cache step aside: a range (stored responses are
/// whole), or preconditions other than the validators the cache answers itself.
pub fn bypassing_headers(headers: &HeaderMap) -> bool {
    [header::RANGE, header::IF_RANGE, header::IF_MATCH, header::IF_UNMODIFIED_SINCE]
        .iter()
        .any(|name| headers.contains_key(name))
}

/// Whether a client's conditional GET/HEAD (`request`) is answered 304 by a
/// stored 200 with `stored` headers (RFC 9110 section 13.2.2): If-None-Match,
/// when present, decides alone (weak comparison); else If-Modified-Since against
/// Last-Modified.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let none_match: Vec<&HeaderValue> = request.get_all(header::IF_NONE_MATCH).iter().collect();
    if !none_match.is_empty() {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else { return false };
        let ours = etag.trim().trim_start_matches("W/");
        return none_match
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|list| list.trim() == "*" || entity_tags(list).any(|tag| tag.trim_start_matches("W/") == ours));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(http_date);
    let modified = stored.get(header::LAST_MODIFIED).and_then(http_date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// The entity tags of an If-None-Match list, each with its `W/` if weak. Scanned
/// rather than split on commas: a tag may hold one.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let start = rest;
        let tagged = rest.strip_prefix("W/").unwrap_or(rest);
        let quoted = tagged.strip_prefix('"')?;
        let close = quoted.find('"')?;
        let len = start.len() - quoted.len() + close + 1;
        rest = &start[len..];
        Some(&start[..len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn response(value: &str) -> ResponseDirectives {
        ResponseDirectives::parse(&headers(&[("cache-control", value)]))
    }

    #[test]
    fn response_directives_parse_case_quotes_and_several_lines() {
        let d = response("Public, MAX-AGE=60, s-maxage=\"120\"");
        assert_eq!((d.public, d.max_age, d.s_maxage), (true, Some(60), Some(120)));
        let d = response("no-cache=\"Set-Cookie, X-Foo\", max-age=5");
        assert!(d.no_cache, "a field list is treated as plain no-cache");
        assert_eq!(d.max_age, Some(5), "the comma inside the quotes does not split");
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "private"), ("cache-control", "max-age=9")]));
        assert_eq!((d.private, d.max_age), (true, Some(9)));
        assert!(response("proxy-revalidate").must_revalidate);
        assert!(response(" no-store ,,").no_store);
    }

    #[test]
    fn delta_seconds_first_wins_malformed_is_zero_huge_is_capped() {
        assert_eq!(response("max-age=10, max-age=99").max_age, Some(10));
        assert_eq!(response("max-age=abc").max_age, Some(0));
        assert_eq!(response("max-age=").max_age, Some(0));
        assert_eq!(response("max-age=-5").max_age, Some(0));
        assert_eq!(response("max-age=99999999999999999999999").max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(response("s-maxage=7").s_maxage, Some(7));
    }

    #[test]
    fn request_directives_and_pragma() {
        let d = RequestDirectives::parse(&headers(&[("cache-control", "max-age=0, min-fresh=5, only-if-cached")]));
        assert_eq!((d.max_age, d.min_fresh, d.only_if_cached, d.no_cache), (Some(0), Some(5), true, false));
        assert!(RequestDirectives::parse(&headers(&[("cache-control", "no-store")])).no_store);
        assert!(RequestDirectives::parse(&headers(&[("pragma", "no-cache")])).no_cache);
        // Cache-Control present: Pragma is ignored.
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=60")]);
        assert!(!RequestDirectives::parse(&both).no_cache);
    }

    fn check(status: u16, lines: &[(&str, &str)], authorization: bool) -> Result<(), NotStorable> {
        let h = headers(lines);
        storable(StatusCode::from_u16(status).unwrap(), &h, &ResponseDirectives::parse(&h), authorization)
    }

    #[test]
    fn storability_rules() {
        assert_eq!(check(200, &[("cache-control", "max-age=60")], false), Ok(()));
        assert_eq!(check(404, &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")], false), Ok(()));
        assert_eq!(check(200, &[], false), Err(NotStorable::NoFreshness));
        assert_eq!(
            check(200, &[("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")], false),
            Err(NotStorable::NoFreshness)
        );
        assert_eq!(check(200, &[("cache-control", "no-cache"), ("etag", "\"a\"")], false), Ok(()));
        assert_eq!(check(200, &[("cache-control", "no-cache")], false), Err(NotStorable::NoFreshness));
        assert_eq!(check(200, &[("cache-control", "no-store, max-age=60")], false), Err(NotStorable::NoStore));
        assert_eq!(check(200, &[("cache-control", "private, max-age=60")], false), Err(NotStorable::Private));
        assert_eq!(check(302, &[("cache-control", "max-age=60")], false), Err(NotStorable::Status));
        assert_eq!(check(500, &[("cache-control", "max-age=60")], false), Err(NotStorable::Status));
        assert_eq!(check(206, &[("cache-control", "max-age=60")], false), Err(NotStorable::Status));
        let cookie = [("cache-control", "max-age=60"), ("set-cookie", "a=b")];
        assert_eq!(check(200, &cookie, false), Err(NotStorable::SetCookie));
        assert_eq!(check(200, &[("cache-control", "max-age=60"), ("vary", "*")], false), Err(NotStorable::VaryAny));
        assert_eq!(check(200, &[("cache-control", "max-age=60")], true), Err(NotStorable::Authorization));
        for shared in ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"] {
            assert_eq!(check(200, &[("cache-control", shared)], true), Ok(()), "{shared}");
        }
    }

    #[test]
    fn vary_lists() {
        let names = vary_names(&headers(&[("vary", "Accept-Encoding, X-Lang"), ("vary", "accept-encoding")])).unwrap();
        assert_eq!(names, ["accept-encoding", "x-lang"]);
        assert_eq!(vary_names(&headers(&[("vary", "x, *")])), None);
        assert_eq!(vary_names(&HeaderMap::new()), Some(vec![]));
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires() {
        let at = httpdate::parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT").unwrap();
        let lifetime = |lines: &[(&str, &str)]| {
            let h = headers(lines);
            freshness_lifetime(&ResponseDirectives::parse(&h), &h, at).as_secs()
        };
        assert_eq!(lifetime(&[("cache-control", "max-age=60, s-maxage=5")]), 5);
        assert_eq!(lifetime(&[("cache-control", "max-age=60"), ("expires", "Mon, 01 Jan 2024 01:00:00 GMT")]), 60);
        let expires = [("date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("expires", "Mon, 01 Jan 2024 00:10:00 GMT")];
        assert_eq!(lifetime(&expires), 600);
        // Without a Date, counted from when it arrived.
        assert_eq!(lifetime(&[("expires", "Mon, 01 Jan 2024 00:00:30 GMT")]), 30);
        assert_eq!(lifetime(&[("expires", "0")]), 0, "an invalid Expires is already expired");
        assert_eq!(lifetime(&[("expires", "Sun, 31 Dec 2023 00:00:00 GMT")]), 0);
        assert_eq!(lifetime(&[]), 0);
    }

    #[test]
    fn age_takes_the_larger_of_date_and_age_header_plus_delay() {
        let sent = httpdate::parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT").unwrap();
        let received = sent + Duration::from_secs(2);
        let minutes = Duration::from_secs(600);
        // Date 100s before the response arrived: 100s old on arrival.
        let t = Timing::new(sent, received, &headers(&[("date", "Sun, 31 Dec 2023 23:58:22 GMT")]), minutes);
        assert_eq!(t.corrected_initial_age, Duration::from_secs(100));
        // An Age header plus the 2s the exchange took wins when larger.
        let t =
            Timing::new(sent, received, &headers(&[("date", "Mon, 01 Jan 2024 00:00:02 GMT"), ("age", "30")]), minutes);
        assert_eq!(t.corrected_initial_age, Duration::from_secs(32));
        // A Date in the future counts as no age.
        let t = Timing::new(sent, received, &headers(&[("date", "Mon, 01 Jan 2024 01:00:00 GMT")]), minutes);
        assert_eq!(t.corrected_initial_age, Duration::from_secs(2));
        // Resident time adds up.
        assert_eq!(t.age(received + Duration::from_secs(10)), Duration::from_secs(12));
        assert_eq!(t.age_header(received + Duration::from_millis(10_999)), HeaderValue::from(12u64));
    }

    #[test]
    fn usable_needs_freshness_and_what_the_request_accepts() {
        let at = httpdate::parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT").unwrap();
        let t = Timing { response_time: at, corrected_initial_age: Duration::ZERO, freshness: Duration::from_secs(60) };
        let any = RequestDirectives::default();
        assert!(t.usable(at + Duration::from_secs(59), false, &any));
        assert!(!t.usable(at + Duration::from_secs(60), false, &any), "stale at its lifetime");
        assert!(!t.usable(at, true, &any), "response no-cache");
        assert!(!t.usable(at, false, &RequestDirectives { no_cache: true, ..any }));
        let max_age = RequestDirectives { max_age: Some(10), ..any };
        assert!(t.usable(at + Duration::from_secs(10), false, &max_age));
        assert!(!t.usable(at + Duration::from_secs(11), false, &max_age));
        let min_fresh = RequestDirectives { min_fresh: Some(30), ..any };
        assert!(t.usable(at + Duration::from_secs(30), false, &min_fresh));
        assert!(!t.usable(at + Duration::from_secs(31), false, &min_fresh));
    }

    #[test]
    fn client_conditionals_against_a_stored_response() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]);
        assert!(not_modified(&headers(&[("if-none-match", "\"v0\", \"v1\"")]), &stored), "weak comparison");
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&headers(&[("if-none-match", "\"v2\"")]), &stored));
        // If-None-Match decides alone, even when If-Modified-Since would match.
        let both = headers(&[("if-none-match", "\"v2\""), ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")]);
        assert!(!not_modified(&both, &stored));
        assert!(not_modified(&headers(&[("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT")]), &stored));
        assert!(!not_modified(&headers(&[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")]), &stored));
        assert!(!not_modified(&HeaderMap::new(), &stored));
        assert_eq!(entity_tags("\"a,b\", W/\"c\"").collect::<Vec<_>>(), ["\"a,b\"", "W/\"c\""]);
    }

    #[test]
    fn unsafe_methods_invalidate_and_ranges_bypass() {
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(invalidates(&method), "{method}");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!invalidates(&method), "{method}");
        }
        assert!(bypassing_headers(&headers(&[("range", "bytes=0-1")])));
        assert!(!bypassing_headers(&headers(&[("if-none-match", "\"a\"")])));
    }
}
