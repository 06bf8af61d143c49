//! Response compression (`frontends[].compression`): gzip, brotli or zstd, chosen
//! by the request's Accept-Encoding, for responses of a compressible type at or
//! above `min_size`. The body is streamed through the encoder frame by frame,
//! never buffered whole.
//!
//! The service calls [`negotiate`] on the request before forwarding it (the
//! request is gone by the time the response is there), then [`apply`] on the
//! response.

mod accept;
mod encoder;
mod response;
mod stream;

use http::header::{ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue, Method, Response};

use super::body::ResponseBody;
pub use stream::CompressedBody;

/// A content coding the balancer compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
    /// `gzip` (RFC 1952).
    Gzip,
}

impl Encoding {
    /// The coding's name in Content-Encoding and Accept-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// What the client accepts, read from the request before it is forwarded: the
/// best of br, zstd, gzip by Accept-Encoding q-values (q=0 refuses; `*` counts;
/// identity only -> None); None for HEAD, whose response has no body to compress.
/// Equal q-values are broken by br, then zstd, then gzip: the smaller output
/// for text at the levels used here.
pub fn negotiate(method: &Method, headers: &HeaderMap) -> Option<Encoding> {
    if method == Method::HEAD {
        return None;
    }
    accept::best(headers.get_all(http::header::ACCEPT_ENCODING).iter())
}

/// Compresses `response` with `encoding` when it qualifies: a compressible
/// Content-Type, no Content-Encoding already, not a range (206, Content-Range),
/// no `Cache-Control: no-transform`, a status that has a body, and a body of at
/// least `min_size` bytes when its length is known (an unknown length is
/// compressed). Then Content-Encoding is set, Content-Length and Accept-Ranges
/// removed (the length and the byte offsets are those of the coded body now),
/// `Vary: Accept-Encoding` added, a strong ETag made weak (the bytes differ from
/// the identity ones), and the body streamed through the encoder, trailers passed
/// on.
///
/// A response that does not qualify still gets `Vary: Accept-Encoding` when its
/// type is compressible: a cache must know another client may get another coding.
pub fn apply(encoding: Encoding, min_size: u64, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if !response::compressible_type(response.headers()) {
        return response;
    }
    response::add_vary(response.headers_mut());
    if !response::qualifies(&response, min_size) {
        return response;
    }
    let encoder = match encoder::Encoder::new(encoding) {
        Ok(encoder) => encoder,
        // The encoder could not be set up (zstd's context allocation): the body
        // goes out as it is, which is always correct.
        Err(err) => {
            tracing::warn!(error = %err, coding = encoding.token(), "cannot start a response encoder");
            return response;
        }
    };
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    // An `identity` Content-Encoding (the only one that qualifies) is replaced.
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    response::weaken_etag(headers);
    Response::from_parts(parts, ResponseBody::Compressed(Box::new(CompressedBody::new(encoder, body))))
}

/// Adds `Vary: Accept-Encoding` to a response of a compressible type that is not
/// compressed because the client accepts no coding ([`negotiate`] gave None): a
/// shared cache must not serve it to a client that does, nor the reverse.
pub fn vary(response: &mut Response<ResponseBody>) {
    if response::compressible_type(response.headers()) {
        response::add_vary(response.headers_mut());
    }
}
