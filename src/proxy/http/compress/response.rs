//! Which responses are compressed, and the header changes compression makes.

use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, VARY};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body;

use crate::proxy::http::body::ResponseBody;

/// Whether the Content-Type is one that compresses well: text, JSON, JavaScript,
/// SVG, XML. Images, video, archives and fonts (woff2) are compressed already.
pub(super) fn compressible_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    kind == "text"
        || matches!(
            essence.as_str(),
            "application/json" | "application/javascript" | "application/xml" | "image/svg+xml"
        )
        || subtype.ends_with("+json")
        || subtype.ends_with("+xml")
}

/// Whether a response of a compressible type may and should be compressed.
pub(super) fn qualifies(response: &Response<ResponseBody>, min_size: u64) -> bool {
    let status = response.status();
    let headers = response.headers();
    // No body (1xx, 204, 304), or a byte range of the identity body (206): its
    // offsets would not survive coding.
    if status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT)
    {
        return false;
    }
    if headers.contains_key(CONTENT_RANGE) || encoded(headers) || no_transform(headers) {
        return false;
    }
    match known_length(response) {
        // Too small to gain from it; an empty body gains nothing at any size.
        Some(length) => length > 0 && length >= min_size,
        // A streamed body of unknown length is usually not small.
        None => true,
    }
}

/// The body's length when known: from Content-Length, else from the body.
fn known_length(response: &Response<ResponseBody>) -> Option<u64> {
    let declared = response.headers().get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.trim().parse().ok());
    declared.or_else(|| response.body().size_hint().exact())
}

/// Whether the body already has a content coding (other than `identity`).
fn encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|value| match value.to_str() {
        Ok(value) => {
            value.split(',').any(|coding| !coding.trim().is_empty() && !coding.trim().eq_ignore_ascii_case("identity"))
        }
        Err(_) => true,
    })
}

/// Whether Cache-Control forbids changing the payload (RFC 9111 5.2.2.6).
fn no_transform(headers: &HeaderMap) -> bool {
    list_items(headers, CACHE_CONTROL).any(|directive| {
        let name = directive.split('=').next().unwrap_or("").trim();
        name.eq_ignore_ascii_case("no-transform")
    })
}

/// Adds `Accept-Encoding` to Vary, into the existing value (one Vary line), unless
/// it is listed already or Vary is `*`.
pub(super) fn add_vary(headers: &mut HeaderMap) {
    if list_items(headers, VARY).any(|item| item == "*" || item.eq_ignore_ascii_case("accept-encoding")) {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(VARY) {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(b"Accept-Encoding");
    match HeaderValue::from_bytes(&joined) {
        Ok(value) => {
            headers.insert(VARY, value);
        }
        // Cannot happen (joined from valid values), but a second line is as good.
        Err(_) => {
            headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }
}

/// Makes a strong ETag weak: it named the identity bytes, and the coded ones
/// differ (RFC 9110 8.8.3). One that is not a valid entity-tag is removed rather
/// than left looking strong.
pub(super) fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else { return };
    let tag = etag.as_bytes().trim_ascii();
    if tag.starts_with(b"W/") {
        return;
    }
    if tag.len() >= 2 && tag.starts_with(b"\"") && tag.ends_with(b"\"") {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag);
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(ETAG, weak);
            return;
        }
    }
    headers.remove(ETAG);
}

/// The comma-separated items of every `name` line, trimmed, empty ones skipped.
fn list_items(headers: &HeaderMap, name: http::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: http::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn compressible_types() {
        for ty in [
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "text/javascript",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
            "application/problem+json",
            "application/atom+xml",
        ] {
            assert!(compressible_type(&with(CONTENT_TYPE, ty)), "{ty}");
        }
        for ty in ["image/png", "application/octet-stream", "font/woff2", "application/zip", "text", ""] {
            assert!(!compressible_type(&with(CONTENT_TYPE, ty)), "{ty}");
        }
        assert!(!compressible_type(&HeaderMap::new()));
    }

    #[test]
    fn encodings_and_cache_control() {
        assert!(encoded(&with(CONTENT_ENCODING, "gzip")));
        assert!(!encoded(&with(CONTENT_ENCODING, "identity")));
        assert!(no_transform(&with(CACHE_CONTROL, "public, No-Transform, max-age=60")));
        assert!(!no_transform(&with(CACHE_CONTROL, "public, max-age=60")));
    }

    #[test]
    fn vary_is_joined_once() {
        let mut headers = with(VARY, "Origin");
        headers.append(VARY, HeaderValue::from_static("Cookie"));
        add_vary(&mut headers);
        add_vary(&mut headers);
        let lines: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(lines, ["Origin, Cookie, Accept-Encoding"]);
        let mut star = with(VARY, "*");
        add_vary(&mut star);
        assert_eq!(star.get(VARY).unwrap(), "*");
    }

    #[test]
    fn etags_weaken_or_go() {
        let mut strong = with(ETAG, "\"abc\"");
        weaken_etag(&mut strong);
        assert_eq!(strong.get(ETAG).unwrap(), "W/\"abc\"");
        let mut weak = with(ETAG, "W/\"abc\"");
        weaken_etag(&mut weak);
        assert_eq!(weak.get(ETAG).unwrap(), "W/\"abc\"");
        let mut bogus = with(ETAG, "abc");
        weaken_etag(&mut bogus);
        assert!(bogus.get(ETAG).is_none());
    }
}
