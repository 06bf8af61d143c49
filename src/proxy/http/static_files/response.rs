//! The HTTP responses of a static site.

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, LOCATION,
    VARY,
};
use http::{HeaderValue, Response, StatusCode, Uri};

use super::lookup::Rep;
use super::stream::FileBody;
use crate::proxy::http::body::ResponseBody;

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static BYTES: HeaderValue = HeaderValue::from_static("bytes");
static ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");
static GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

/// What is sent of a found file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// 304: the client's copy is current.
    NotModified,
    /// 200: the whole representation.
    Full,
    /// 206: bytes `.0` to `.1` inclusive.
    Partial(u64, u64),
    /// 416: the range starts past the end.
    Unsatisfiable,
}

/// A found file's body, as read on the blocking pool.
#[derive(Debug)]
pub(super) enum Content {
    /// HEAD, 304, 416, or no byte to send.
    Empty,
    /// A small file, read whole.
    Whole(Bytes),
    /// Streamed chunk by chunk.
    Stream(FileBody),
}

/// The response for a found file.
pub(super) fn file(rep: &Rep, plan: Plan, content: Content) -> Response<ResponseBody> {
    let body = match content {
        Content::Empty => ResponseBody::empty(),
        Content::Whole(bytes) => ResponseBody::fixed(bytes),
        Content::Stream(file) => ResponseBody::File(file, None),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    // Generated from hex digits and an HTTP date: always valid values.
    if let Ok(etag) = HeaderValue::try_from(rep.validators.etag.as_str()) {
        headers.insert(ETAG, etag);
    }
    if let Ok(date) = HeaderValue::try_from(rep.validators.last_modified()) {
        headers.insert(LAST_MODIFIED, date);
    }
    if rep.vary {
        headers.insert(VARY, ACCEPT_ENCODING.clone());
    }
    let (status, length) = match plan {
        Plan::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        Plan::Unsatisfiable => {
            headers.insert(ACCEPT_RANGES, BYTES.clone());
            headers.insert(CONTENT_RANGE, header_value(format!("bytes */{}", rep.len)));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            return response;
        }
        Plan::Full => (StatusCode::OK, rep.len),
        Plan::Partial(first, last) => {
            headers.insert(CONTENT_RANGE, header_value(format!("bytes {first}-{last}/{}", rep.len)));
            (StatusCode::PARTIAL_CONTENT, last - first + 1)
        }
    };
    headers.insert(ACCEPT_RANGES, BYTES.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(rep.content_type));
    if let Some(coding) = rep.coding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
    }
    // Explicit, not from the body: a HEAD's body is empty but its length is the GET's.
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    *response.status_mut() = status;
    response
}

/// 404: absent, outside the root, refused path, or a directory without index.
pub(super) fn not_found() -> Response<ResponseBody> {
    text(StatusCode::NOT_FOUND, b"404 Not Found\n")
}

/// 403: the file system refused to let us read it.
pub(super) fn forbidden() -> Response<ResponseBody> {
    text(StatusCode::FORBIDDEN, b"403 Forbidden\n")
}

/// 500: an unexpected file system error (logged where it happened).
pub(super) fn failed() -> Response<ResponseBody> {
    text(StatusCode::INTERNAL_SERVER_ERROR, b"500 Internal Server Error: the file could not be read\n")
}

/// 405 for a method other than GET and HEAD.
pub(super) fn method_not_allowed() -> Response<ResponseBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, b"405 Method Not Allowed: GET or HEAD only\n");
    response.headers_mut().insert(ALLOW, GET_HEAD.clone());
    response
}

/// 301 to the directory's URL with its trailing slash, query kept.
pub(super) fn add_slash(uri: &Uri) -> Response<ResponseBody> {
    let location = match uri.query() {
        Some(query) => format!("{}/?{query}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    // From a parsed URI's path and query: valid header bytes.
    match HeaderValue::try_from(location) {
        Ok(location) => response.headers_mut().insert(LOCATION, location),
        Err(_) => return not_found(),
    };
    response
}

fn text(status: StatusCode, body: &'static [u8]) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::fixed(Bytes::from_static(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN.clone());
    response
}

/// A value made of ASCII digits and punctuation here.
fn header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}
