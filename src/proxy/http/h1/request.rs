//! The request head as it goes to the server, and how its body is framed.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http_body::Body;

use crate::proxy::http::request_body::RequestBody;

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// Nothing follows the head.
    Empty,
    /// `Content-Length` bytes follow, as they are.
    Length,
    /// Chunked: each piece with its size, then the last chunk.
    Chunked,
}

/// Decides the body's framing, setting `Content-Length` or `Transfer-Encoding`
/// as it needs, and writes the head. The client's `Content-Length` stands when
/// it has one (its body is checked against it on the way in); a body of known
/// size gets a length, any other one is chunked. `Transfer-Encoding` is
/// hop-by-hop: only ours goes out.
pub(super) fn encode(parts: &mut Parts, body: &RequestBody) -> (Bytes, BodyFraming) {
    let framing = frame(parts, body);
    let headers = &parts.headers;
    let size = 32
        + parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    match (parts.uri.scheme(), parts.uri.path_and_query()) {
        (None, Some(origin)) => out.put_slice(origin.as_str().as_bytes()),
        // Absolute or authority form, as the caller made it.
        _ => out.put_slice(parts.uri.to_string().as_bytes()),
    }
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    (out.freeze(), framing)
}

fn frame(parts: &mut Parts, body: &RequestBody) -> BodyFraming {
    let headers = &mut parts.headers;
    headers.remove(header::TRANSFER_ENCODING);
    if body.is_end_stream() {
        return BodyFraming::Empty;
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return BodyFraming::Length;
    }
    match body.size_hint().exact() {
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            BodyFraming::Length
        }
        None => {
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            BodyFraming::Chunked
        }
    }
}

/// The line that announces a chunk of `length` bytes.
pub(super) fn chunk_size_line(length: usize) -> Bytes {
    Bytes::from(format!("{length:x}\r\n"))
}

/// What ends a chunked body (no trailers: an HTTP/1.1 server was not told to
/// expect them, see `service::prepare`).
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn head(req: Request<()>, body: RequestBody) -> (String, BodyFraming) {
        let (mut parts, ()) = req.into_parts();
        let (bytes, framing) = encode(&mut parts, &body);
        (String::from_utf8(bytes.to_vec()).unwrap(), framing)
    }

    #[test]
    fn a_bodiless_request_is_its_head() {
        let req = Request::get("/a?b=1").header("host", "example").header("x-two", "2").body(()).unwrap();
        let (text, framing) = head(req, RequestBody::Empty);
        assert_eq!(text, "GET /a?b=1 HTTP/1.1\r\nhost: example\r\nx-two: 2\r\n\r\n");
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn a_stray_transfer_encoding_on_an_empty_body_is_dropped() {
        let req = Request::post("/").header("transfer-encoding", "chunked").body(()).unwrap();
        let (text, framing) = head(req, RequestBody::Empty);
        assert_eq!(text, "POST / HTTP/1.1\r\n\r\n");
        assert_eq!(framing, BodyFraming::Empty);
    }

    #[test]
    fn the_asterisk_form_goes_as_it_is() {
        let req = Request::options("*").body(()).unwrap();
        assert_eq!(head(req, RequestBody::Empty).0, "OPTIONS * HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunk_lines_are_hex() {
        assert_eq!(&chunk_size_line(255)[..], b"ff\r\n");
        assert_eq!(&chunk_size_line(1)[..], b"1\r\n");
    }
}
