//! A stored response: its head, its whole body, the variant it was selected by
//! and its timing; the responses made from it (a hit, a 304 to a client's
//! conditional request) and its refresh by a server's 304.

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::key::Variant;
use super::policy::{self, ResponseDirectives, Timing};
use crate::proxy::http::ResponseBody;

/// What an entry costs beyond its bytes (its node in the store, the index slot,
/// the allocations' headers), so that many small entries are not counted as free.
const ENTRY_OVERHEAD: u64 = 256;
/// What one header line costs beyond its name and value (the map's slot).
const HEADER_OVERHEAD: u64 = 32;

/// Fields a 304 does not replace in the stored response (RFC 9111 section 3.2):
/// they describe the stored body, which the 304 does not carry.
const KEPT_ON_REFRESH: [header::HeaderName; 5] =
    [header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::CONTENT_RANGE, header::TRANSFER_ENCODING, header::AGE];

/// Fields of a stored 200 repeated in a 304 to a client (RFC 9110 section 15.4.5).
const IN_NOT_MODIFIED: [header::HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// One stored response. Immutable: a refresh stores a new entry (sharing the body).
#[derive(Debug)]
pub struct Entry {
    /// The server's status.
    pub status: StatusCode,
    /// The server's header fields, hop-by-hop and Age removed, Content-Length set
    /// to the stored body's length.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The request header values it answers (its Vary).
    pub variant: Variant,
    /// When it arrived, how old it was, how long it is fresh.
    pub timing: Timing,
    /// `Cache-Control: no-cache`: revalidated before every use.
    pub no_cache: bool,
}

impl Entry {
    /// An entry for a response with `status` and `headers` (directives already
    /// parsed into `timing` and `no_cache`) whose body was `body`.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        variant: Variant,
        timing: Timing,
        no_cache: bool,
    ) -> Entry {
        // The age is the cache's to tell, at each use.
        headers.remove(header::AGE);
        headers.remove(header::TRANSFER_ENCODING);
        // A 204 has no body and may not say a length (RFC 9110 section 8.6).
        if status == StatusCode::NO_CONTENT {
            headers.remove(header::CONTENT_LENGTH);
        } else {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        Entry { status, headers, body, variant, timing, no_cache }
    }

    /// Bytes the entry takes, stored under a key of `key_len` bytes.
    pub fn weight(&self, key_len: usize) -> u64 {
        let headers: u64 = (self.headers.iter())
            .map(|(name, value)| (name.as_str().len() + value.len()) as u64 + HEADER_OVERHEAD)
            .sum();
        ENTRY_OVERHEAD + key_len as u64 + headers + self.body.len() as u64 + self.variant.weight() as u64
    }

    /// The response to a client's request with `request` headers at `now`: the
    /// stored one with its Age (without its body for a HEAD), or a 304 when the
    /// request's own validators match.
    pub fn respond(&self, now: SystemTime, head: bool, request: &HeaderMap) -> Response<ResponseBody> {
        if self.status == StatusCode::OK && policy::not_modified(request, &self.headers) {
            return self.not_modified(now);
        }
        let body =
            if head || self.body.is_empty() { ResponseBody::empty() } else { ResponseBody::fixed(self.body.clone()) };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response.headers_mut().insert(header::AGE, self.timing.age_header(now));
        response
    }

    /// A 304 for a client whose validators match this entry.
    fn not_modified(&self, now: SystemTime) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        for name in IN_NOT_MODIFIED {
            for value in self.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::AGE, self.timing.age_header(now));
        response
    }

    /// Sets `request`'s validators to this entry's (If-None-Match from its ETag,
    /// If-Modified-Since from its Last-Modified), replacing the client's own:
    /// the server's 304 must be about what the cache holds.
    pub fn make_conditional(&self, request: &mut HeaderMap) {
        request.remove(header::IF_NONE_MATCH);
        request.remove(header::IF_MODIFIED_SINCE);
        if let Some(etag) = self.headers.get(header::ETAG) {
            request.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = self.headers.get(header::LAST_MODIFIED) {
            request.insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
    }

    /// This entry updated by a server's 304 (`update`, to a request sent at
    /// `request_time`, received at `response_time`): the 304's fields replace the
    /// stored ones (but those describing the body), and its Date, Age and
    /// freshness restart the entry's timing. The body is shared, not copied.
    pub fn refreshed(&self, update: &HeaderMap, request_time: SystemTime, response_time: SystemTime) -> Entry {
        let mut headers = self.headers.clone();
        for name in update.keys() {
            if KEPT_ON_REFRESH.contains(name) {
                continue;
            }
            headers.remove(name);
            for value in update.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let directives = ResponseDirectives::parse(&headers);
        let freshness = policy::freshness_lifetime(&directives, &headers, response_time);
        let timing = Timing::new(request_time, response_time, update, freshness);
        Entry::new(self.status, headers, self.body.clone(), self.variant.clone(), timing, directives.no_cache)
    }
}

#[cfg(test)]
pub(super) fn test_entry(body: &'static [u8], variant: Variant) -> Entry {
    let timing = Timing {
        response_time: SystemTime::UNIX_EPOCH,
        corrected_initial_age: std::time::Duration::ZERO,
        freshness: std::time::Duration::from_secs(60),
    };
    Entry::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(body), variant, timing, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stored() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
        headers.insert(header::AGE, HeaderValue::from_static("3"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timing = Timing {
            response_time: at,
            corrected_initial_age: Duration::from_secs(3),
            freshness: Duration::from_secs(10),
        };
        Entry::new(StatusCode::OK, headers, Bytes::from_static(b"hello"), Variant::default(), timing, false)
    }

    #[test]
    fn stored_heads_carry_their_own_length_and_no_age() {
        let entry = stored();
        assert_eq!(entry.headers[header::CONTENT_LENGTH], "5");
        assert!(!entry.headers.contains_key(header::AGE));
        let later = entry.timing.response_time + Duration::from_secs(4);
        let response = entry.respond(later, false, &HeaderMap::new());
        assert_eq!(response.headers()[header::AGE], "7");
        let head = entry.respond(later, true, &HeaderMap::new());
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "5", "a HEAD tells the GET's length");
        assert!(http_body::Body::is_end_stream(head.body()));
    }

    #[test]
    fn matching_client_validators_get_a_304_with_the_cache_fields() {
        let entry = stored();
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        let response = entry.respond(entry.timing.response_time, false, &request);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], "\"v1\"");
        assert!(!response.headers().contains_key(header::CONTENT_TYPE));
        assert_eq!(response.headers()[header::AGE], "3");
    }

    #[test]
    fn a_304_refreshes_fields_and_timing_but_not_the_body() {
        let entry = stored();
        let mut update = HeaderMap::new();
        update.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
        update.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        update.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let sent = entry.timing.response_time + Duration::from_secs(100);
        let refreshed = entry.refreshed(&update, sent, sent + Duration::from_secs(1));
        assert_eq!(refreshed.headers[header::CACHE_CONTROL], "max-age=600");
        assert_eq!(refreshed.headers[header::CONTENT_LENGTH], "5");
        assert_eq!(refreshed.headers[header::CONTENT_TYPE], "text/plain");
        assert_eq!(refreshed.body, "hello");
        assert_eq!(refreshed.timing.freshness, Duration::from_secs(600));
        assert_eq!(refreshed.timing.corrected_initial_age, Duration::from_secs(1));
    }

    #[test]
    fn revalidation_sends_the_entrys_validators_not_the_clients() {
        let entry = stored();
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"client\""));
        request.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"));
        entry.make_conditional(&mut request);
        assert_eq!(request[header::IF_NONE_MATCH], "\"v1\"");
        assert!(!request.contains_key(header::IF_MODIFIED_SINCE), "the entry has no Last-Modified");
    }
}
