//! Properties of the response reader over any bytes a server may send: a
//! response reads the same however its bytes are split, and no input panics.

use bytes::BytesMut;
use proptest::prelude::*;

use super::chunked::{Chunked, Decoded};
use super::response::{self, Asked, Framing};

const GET: Asked = Asked { head: false, upgrade: false };

/// A response on the wire: its head, its body's chunks (chunked, or one run
/// with a Content-Length), and the body's bytes.
fn wire(status: u16, headers: &[(String, String)], chunks: &[Vec<u8>], chunked: bool) -> (Vec<u8>, Vec<u8>) {
    let body: Vec<u8> = chunks.concat();
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
    }
    (out, body)
}

/// Reads one response from `wire` handed over in pieces ending at `cuts`, as
/// the connection would: the head, then the body by its framing. The status,
/// the headers named `x-*`, the body, and what was left over.
fn read(wire: &[u8], cuts: &[usize]) -> (u16, Vec<(String, String)>, Vec<u8>, usize) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    ends.push(wire.len());
    ends.sort_unstable();
    let mut pieces = ends.into_iter();
    let mut fed = 0;
    let mut buf = BytesMut::new();
    let mut feed = |buf: &mut BytesMut| match pieces.next() {
        Some(end) => {
            buf.extend_from_slice(&wire[fed..end.max(fed)]);
            fed = end.max(fed);
            true
        }
        None => false,
    };
    let head = loop {
        if let Some(head) = response::parse(&mut buf, GET).unwrap() {
            break head;
        }
        assert!(feed(&mut buf), "the head never completed");
    };
    let status = head.response.status().as_u16();
    let headers = head
        .response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    let mut body = Vec::new();
    match head.framing {
        Framing::Length(mut left) => loop {
            let take = (left as usize).min(buf.len());
            body.extend_from_slice(&buf.split_to(take));
            left -= take as u64;
            if left == 0 {
                break;
            }
            assert!(feed(&mut buf), "the body never completed");
        },
        Framing::Chunked => {
            let mut decoder = Chunked::Size;
            loop {
                match decoder.decode(&mut buf).unwrap() {
                    Some(Decoded::Data(data)) => body.extend_from_slice(&data),
                    Some(Decoded::Trailers(_)) | Some(Decoded::End) => break,
                    None => assert!(feed(&mut buf), "the body never completed"),
                }
            }
        }
        other => panic!("unexpected framing {other:?}"),
    }
    while feed(&mut buf) {}
    (status, headers, body, buf.len())
}

fn header_line() -> impl Strategy<Value = (String, String)> {
    ("x-[a-z0-9-]{1,12}", "[ -~&&[^ ]]([ -~]{0,30}[!-~])?")
}

proptest! {
    // Like the other property tests: no regression files beside the sources.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_response_reads_the_same_however_it_is_split(
        status in 200u16..600,
        headers in proptest::collection::vec(header_line(), 0..8),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
        chunked in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        prop_assume!(status != 204 && status != 304);
        let (wire, body) = wire(status, &headers, &chunks, chunked);
        let (read_status, read_headers, read_body, left) = read(&wire, &cuts);
        prop_assert_eq!(read_status, status);
        // A header map keeps each name's values in order, not the order between names.
        let mut sent = headers.clone();
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen = read_headers;
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(seen, sent);
        prop_assert_eq!(read_body, body);
        prop_assert_eq!(left, 0);
    }

    #[test]
    fn no_bytes_make_the_head_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = response::parse(&mut buf, GET);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        buf.extend_from_slice(&bytes);
        let _ = response::parse(&mut buf, Asked { head: false, upgrade: true });
    }

    #[test]
    fn no_bytes_make_the_chunk_decoder_panic_or_spin(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut decoder = Chunked::Size;
        let mut buf = BytesMut::from(&bytes[..]);
        // Each step takes bytes or ends: at most one step per byte, plus the end.
        for _ in 0..=bytes.len() + 2 {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Data(data))) => prop_assert!(!data.is_empty()),
                Ok(Some(Decoded::Trailers(_))) => {}
                Ok(Some(Decoded::End)) | Ok(None) | Err(_) => return Ok(()),
            }
        }
        prop_assert!(false, "the decoder kept yielding without taking bytes");
    }
}
