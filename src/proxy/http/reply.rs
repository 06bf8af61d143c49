//! Responses made by the balancer itself: a short plain-text body per status.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A balancer-made response for `status`, e.g. `503 Service Unavailable`.
pub fn error_response(status: StatusCode, close: bool) -> Response<ResponseBody> {
    error_response_saying(status, close, error_body(status))
}

/// [`error_response`] with `text` as its body: for an error whose status alone
/// would mislead the client about what to change.
pub fn error_response_saying(status: StatusCode, close: bool, text: &'static [u8]) -> Response<ResponseBody> {
    let body = Bytes::from_static(text);
    let mut response = Response::new(ResponseBody::fixed(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, TEXT_PLAIN.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn error_body(status: StatusCode) -> &'static [u8] {
    match status.as_u16() {
        400 => b"400 Bad Request: the request could not be parsed\n",
        408 => b"408 Request Timeout: the request was not received in time\n",
        429 => b"429 Too Many Requests: over this client's rate limit, see Retry-After\n",
        431 => b"431 Request Header Fields Too Large\n",
        502 => b"502 Bad Gateway: the server refused, reset or broke the connection\n",
        503 => b"503 Service Unavailable: no server is available for this request\n",
        504 => b"504 Gateway Timeout: the server did not answer in time\n",
        _ => b"error\n",
    }
}

/// The raw HTTP/1.1 bytes of a 408 (written on a socket hyper has given up on).
pub const RAW_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 58\r\nconnection: close\r\n\r\n408 Request Timeout: the request was not received in time\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_408_length_matches_body() {
        let body = error_body(StatusCode::REQUEST_TIMEOUT);
        let text = std::str::from_utf8(RAW_408).unwrap();
        assert!(text.ends_with(std::str::from_utf8(body).unwrap()));
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
