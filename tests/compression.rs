//! Response compression: Accept-Encoding negotiation and which responses are
//! compressed, with the coded bytes decoded back by the reference decoders.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use fulcrum::proxy::http::compress::{apply, negotiate, vary, Encoding};
use fulcrum::proxy::http::ResponseBody;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

const ALL: [Encoding; 3] = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

fn accepting(value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
    headers
}

/// Text that compresses like real text does: words from a small vocabulary in a
/// pseudo-random order (deterministic).
fn text(len: usize) -> Bytes {
    const WORDS: [&str; 16] = [
        "balancer", "server", "client", "request", "response", "header", "body", "frame", "stream", "cache", "the",
        "of", "and", "<div>", "</div>", "\n",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push_str(WORDS[(seed >> 60) as usize]);
        out.push(' ');
    }
    out.truncate(len);
    Bytes::from(out)
}

fn response(content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::fixed(body));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The body's data frames, in order.
async fn frames(response: Response<ResponseBody>) -> Vec<Bytes> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body error");
        if let Ok(data) = frame.into_data() {
            out.push(data);
        }
    }
    out
}

fn decode(encoding: Encoding, coded: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Gzip => flate2::read::GzDecoder::new(coded).read_to_end(&mut out).unwrap(),
        Encoding::Brotli => brotli::Decompressor::new(coded, 4096).read_to_end(&mut out).unwrap(),
        Encoding::Zstd => zstd::stream::read::Decoder::new(coded).unwrap().read_to_end(&mut out).unwrap(),
    };
    out
}

fn concat(frames: &[Bytes]) -> Bytes {
    let mut all = BytesMut::new();
    for frame in frames {
        all.extend_from_slice(frame);
    }
    all.freeze()
}

#[test]
fn the_highest_q_value_wins() {
    let get = Method::GET;
    assert_eq!(negotiate(&get, &accepting("br;q=0.5, gzip;q=1")), Some(Encoding::Gzip));
    assert_eq!(negotiate(&get, &accepting("gzip;q=0.5, zstd;q=0.6")), Some(Encoding::Zstd));
    assert_eq!(negotiate(&get, &accepting("gzip, deflate, br, zstd")), Some(Encoding::Brotli));
    assert_eq!(negotiate(&get, &accepting("br;q=0, *")), Some(Encoding::Zstd));
}

#[test]
fn refusals_and_identity_negotiate_nothing() {
    let get = Method::GET;
    assert_eq!(negotiate(&get, &accepting("*;q=0")), None);
    assert_eq!(negotiate(&get, &accepting("identity")), None);
    assert_eq!(negotiate(&get, &accepting("gzip;q=0, br;q=0.000")), None);
    assert_eq!(negotiate(&get, &HeaderMap::new()), None);
    assert_eq!(negotiate(&get, &accepting("gzip;q=2, br;q=oops")), None);
}

#[test]
fn head_is_never_compressed() {
    assert_eq!(negotiate(&Method::HEAD, &accepting("gzip, br, zstd")), None);
}

#[tokio::test]
async fn each_coding_round_trips_with_its_headers() {
    let plain = text(20_000);
    for encoding in ALL {
        let mut response = response("text/html; charset=utf-8", plain.clone());
        let headers = response.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(plain.len()));
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let coded = apply(encoding, 1024, response);
        let headers = coded.headers();
        let token = match encoding {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        };
        assert_eq!(headers.get(CONTENT_ENCODING).unwrap(), token);
        assert!(headers.get(CONTENT_LENGTH).is_none(), "{encoding:?}: the length changed");
        assert!(headers.get(ACCEPT_RANGES).is_none(), "{encoding:?}: ranges of the coded body are not served");
        assert_eq!(headers.get(ETAG).unwrap(), "W/\"v1\"");
        assert_eq!(headers.get(VARY).unwrap(), "Accept-Encoding");
        let coded = concat(&frames(coded).await);
        assert!(coded.len() < plain.len() / 2, "{encoding:?}: {} bytes", coded.len());
        assert_eq!(decode(encoding, &coded), plain, "{encoding:?}");
    }
}

#[tokio::test]
async fn compressible_types_are_compressed() {
    for ty in [
        "application/json",
        "application/javascript",
        "text/javascript",
        "image/svg+xml",
        "application/xml",
        "application/ld+json",
        "application/rss+xml",
        "text/css",
    ] {
        let coded = apply(Encoding::Gzip, 0, response(ty, text(2000)));
        assert_eq!(coded.headers().get(CONTENT_ENCODING).unwrap(), "gzip", "{ty}");
    }
}

/// Asserts `response` went out as it was, with only Vary added when `vary`.
async fn untouched(response: Response<ResponseBody>, body: &Bytes, vary: bool) {
    assert!(response.headers().get(CONTENT_ENCODING).is_none_or(|coding| coding != "br"));
    assert_eq!(response.headers().get(VARY).is_some(), vary);
    assert_eq!(concat(&frames(response).await), body);
}

#[tokio::test]
async fn an_encoded_body_is_left_alone() {
    let body = text(5000);
    let mut already = response("text/plain", body.clone());
    already.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let out = apply(Encoding::Brotli, 0, already);
    assert_eq!(out.headers().get(CONTENT_ENCODING).unwrap(), "gzip");
    untouched(out, &body, true).await;
}

#[tokio::test]
async fn ranges_are_left_alone() {
    let body = text(5000);
    let mut partial = response("text/plain", body.clone());
    *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
    partial.headers_mut().insert(CONTENT_RANGE, HeaderValue::from_static("bytes 0-4999/10000"));
    untouched(apply(Encoding::Brotli, 0, partial), &body, true).await;
    // A Content-Range on another status (a 416's `*/len`) is a range too.
    let mut ranged = response("text/plain", body.clone());
    ranged.headers_mut().insert(CONTENT_RANGE, HeaderValue::from_static("bytes */10000"));
    untouched(apply(Encoding::Brotli, 0, ranged), &body, true).await;
}

#[tokio::test]
async fn no_transform_is_respected() {
    let body = text(5000);
    let mut response = response("application/json", body.clone());
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, no-transform"));
    untouched(apply(Encoding::Brotli, 0, response), &body, true).await;
}

#[tokio::test]
async fn small_bodies_are_left_alone() {
    let body = text(500);
    // Known from the body itself.
    untouched(apply(Encoding::Brotli, 1000, response("text/plain", body.clone())), &body, true).await;
    // Known from Content-Length.
    let mut declared = response("text/plain", body.clone());
    declared.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let out = apply(Encoding::Brotli, 1000, declared);
    assert_eq!(out.headers().get(CONTENT_LENGTH).unwrap(), "500");
    untouched(out, &body, true).await;
    // At the threshold: compressed.
    let at = apply(Encoding::Brotli, 500, response("text/plain", body.clone()));
    assert_eq!(at.headers().get(CONTENT_ENCODING).unwrap(), "br");
    assert_eq!(decode(Encoding::Brotli, &concat(&frames(at).await)), body);
}

#[tokio::test]
async fn incompressible_types_are_left_alone_without_vary() {
    let body = text(5000);
    let mut png = response("image/png", body.clone());
    png.headers_mut().insert(ETAG, HeaderValue::from_static("\"img\""));
    let out = apply(Encoding::Brotli, 0, png);
    assert_eq!(out.headers().get(ETAG).unwrap(), "\"img\"");
    untouched(out, &body, false).await;
    let mut untyped = Response::new(ResponseBody::fixed(body.clone()));
    vary(&mut untyped);
    untouched(apply(Encoding::Brotli, 0, untyped), &body, false).await;
}

#[tokio::test]
async fn bodiless_statuses_are_left_alone() {
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let mut response = response("text/html", Bytes::new());
        *response.status_mut() = status;
        response.headers_mut().insert(ETAG, HeaderValue::from_static("\"v1\""));
        let out = apply(Encoding::Gzip, 0, response);
        // A 304 keeps the strong validator it revalidated.
        assert_eq!(out.headers().get(ETAG).unwrap(), "\"v1\"");
        untouched(out, &Bytes::new(), true).await;
    }
    // An error page with a body is compressed like any other.
    let mut missing = response("text/html", text(3000));
    *missing.status_mut() = StatusCode::NOT_FOUND;
    assert_eq!(apply(Encoding::Gzip, 0, missing).headers().get(CONTENT_ENCODING).unwrap(), "gzip");
}

#[tokio::test]
async fn vary_is_appended_once() {
    let mut response = response("text/css", text(3000));
    response.headers_mut().insert(VARY, HeaderValue::from_static("Origin"));
    let out = apply(Encoding::Zstd, 0, response);
    let lines: Vec<_> = out.headers().get_all(VARY).iter().collect();
    assert_eq!(lines, ["Origin, Accept-Encoding"]);

    let mut listed = self::response("text/css", text(3000));
    listed.headers_mut().insert(VARY, HeaderValue::from_static("accept-encoding, Origin"));
    let out = apply(Encoding::Zstd, 0, listed);
    let lines: Vec<_> = out.headers().get_all(VARY).iter().collect();
    assert_eq!(lines, ["accept-encoding, Origin"]);

    // Not compressed, as the client accepts nothing: Vary all the same.
    let mut plain = self::response("text/css", text(3000));
    vary(&mut plain);
    vary(&mut plain);
    let lines: Vec<_> = plain.headers().get_all(VARY).iter().collect();
    assert_eq!(lines, ["Accept-Encoding"]);
}

#[tokio::test]
async fn weak_etags_stay_weak() {
    let mut response = response("text/plain", text(3000));
    response.headers_mut().insert(ETAG, HeaderValue::from_static("W/\"v2\""));
    let out = apply(Encoding::Gzip, 0, response);
    assert_eq!(out.headers().get(ETAG).unwrap(), "W/\"v2\"");
}

#[tokio::test]
async fn a_large_body_streams_as_several_coded_frames() {
    let plain = text(4 << 20);
    for encoding in ALL {
        let out = frames(apply(encoding, 0, response("text/plain", plain.clone()))).await;
        assert!(out.len() >= 4, "{encoding:?}: {} frames", out.len());
        // No frame carries the whole coded body: it went out as it was made.
        let coded = concat(&out);
        let largest = out.iter().map(Bytes::len).max().unwrap_or(0);
        assert!(largest < coded.len() / 2, "{encoding:?}: a frame of {largest} of {} bytes", coded.len());
        assert_eq!(decode(encoding, &coded), plain, "{encoding:?}");
    }
}

#[tokio::test]
async fn an_empty_body_is_not_coded() {
    let out = apply(Encoding::Gzip, 0, response("text/plain", Bytes::new()));
    assert!(out.headers().get(CONTENT_ENCODING).is_none());
    untouched(out, &Bytes::new(), true).await;
}
