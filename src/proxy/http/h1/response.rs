//! The server's response head, and how the body after it is framed (RFC 9112
//! section 6.3).

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::error::H1Error;
use crate::proxy::http::headers::lists_token;

/// Most header lines a response head may have (HAProxy's default is 101).
const MAX_HEADERS: usize = 128;
/// Longest response head (hyper's own limit was about 400 KiB; HAProxy's is its
/// 16 KiB buffer).
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// How the response body after the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (a HEAD request's response, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Everything until the server closes.
    UntilClose,
    /// 101: the connection now carries another protocol.
    Upgrade,
}

impl Framing {
    /// Bytes of a body follow the head (possibly none, for a body until close).
    pub(super) fn has_body(self) -> bool {
        matches!(self, Framing::Length(1..) | Framing::Chunked | Framing::UntilClose)
    }
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// What the request asked that shapes the response's framing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asked {
    /// A HEAD request: the response has no body whatever it says.
    pub head: bool,
    /// The request asked to upgrade: a 101 is welcome.
    pub upgrade: bool,
}

/// Parses the response head at the start of `buf`, skipping interim (1xx)
/// responses other than 101, and takes it out of `buf`. `None` while the head
/// is incomplete.
pub(super) fn parse(buf: &mut BytesMut, asked: Asked) -> Result<Option<Head>, H1Error> {
    loop {
        // Offsets of names and values within the head: the head becomes one
        // shared buffer whose slices are the header values (no copy each).
        // Neither array is zeroed first (6 KB written per response, into memory
        // the cache had no use for): only the lines a head has are written.
        let mut spans = [MaybeUninit::<(u32, u32, u32, u32)>::uninit(); MAX_HEADERS];
        let (length, code, minor, count) = {
            let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let status = httparse::ParserConfig::default()
                .allow_spaces_after_header_name_in_responses(true)
                .parse_response_with_uninit_headers(&mut parsed, buf, &mut lines)?;
            let httparse::Status::Complete(length) = status else {
                if buf.len() >= MAX_HEAD {
                    return Err(H1Error::HeadTooLarge(MAX_HEAD));
                }
                return Ok(None);
            };
            let base = buf.as_ptr() as usize;
            let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
            for (span, line) in spans.iter_mut().zip(parsed.headers.iter()) {
                let (name, value) = (line.name.as_bytes(), line.value);
                span.write((offset(name), name.len() as u32, offset(value), value.len() as u32));
            }
            let code = parsed.code.ok_or(H1Error::BadHead("no status code"))?;
            (length, code, parsed.version.unwrap_or(1), parsed.headers.len())
        };
        if (100..200).contains(&code) && code != 101 {
            // 100 Continue and the like: the final response follows.
            buf.advance(length);
            continue;
        }
        let head = buf.split_to(length).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for span in &spans[..count] {
            // SAFETY: the loop above wrote the first `count` spans, one per header line.
            let (name_at, name_len, value_at, value_len) = unsafe { span.assume_init() };
            let name = &head[name_at as usize..(name_at + name_len) as usize];
            let name = HeaderName::from_bytes(name).map_err(|_| H1Error::BadHead("invalid header name"))?;
            let value = head.slice(value_at as usize..(value_at + value_len) as usize);
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| H1Error::BadHead("invalid header value"))?;
            headers.append(name, value);
        }
        let status = StatusCode::from_u16(code).map_err(|_| H1Error::BadHead("invalid status code"))?;
        let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut keep_alive = keeps_alive(&headers, version);
        let framing = framing(status, &mut headers, asked, &mut keep_alive)?;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head { response, framing, keep_alive }));
    }
}

/// HTTP/1.1 keeps the connection unless told `close`; 1.0 only if told `keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    if version == Version::HTTP_11 {
        !lists_token(headers, &header::CONNECTION, "close")
    } else {
        lists_token(headers, &header::CONNECTION, "keep-alive")
    }
}

fn framing(
    status: StatusCode,
    headers: &mut HeaderMap,
    asked: Asked,
    keep_alive: &mut bool,
) -> Result<Framing, H1Error> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return if asked.upgrade { Ok(Framing::Upgrade) } else { Err(H1Error::UnaskedUpgrade) };
    }
    if asked.head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers.get_all(header::TRANSFER_ENCODING).iter().next_back() {
        let chunked = last
            .to_str()
            .ok()
            .and_then(|codings| codings.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        // With Content-Length too, the coding wins, and the connection is not
        // trusted for another response (RFC 9112 section 6.3).
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            *keep_alive = false;
        }
        if chunked {
            return Ok(Framing::Chunked);
        }
        *keep_alive = false;
        return Ok(Framing::UntilClose);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| H1Error::BadHead("invalid Content-Length"))?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(H1Error::BadHead("invalid Content-Length"));
            }
            let n: u64 = item.parse().map_err(|_| H1Error::BadHead("invalid Content-Length"))?;
            if length.is_some_and(|seen| seen != n) {
                return Err(H1Error::BadHead("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) => Ok(Framing::Length(n)),
        None => {
            *keep_alive = false;
            Ok(Framing::UntilClose)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Asked = Asked { head: false, upgrade: false };

    fn parse_all(text: &str, asked: Asked) -> Result<Option<Head>, H1Error> {
        parse(&mut BytesMut::from(text), asked)
    }

    #[test]
    fn a_head_parses_once_complete_and_leaves_the_body() {
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhel");
        let head = parse(&mut buf, GET).unwrap().unwrap();
        assert_eq!(head.response.status(), 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buf[..], b"hel");
        // Incomplete: nothing taken.
        let mut partial = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
        assert!(parse(&mut partial, GET).unwrap().is_none());
        assert_eq!(partial.len(), 27);
    }

    #[test]
    fn interim_responses_are_skipped() {
        let head = parse_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", GET).unwrap().unwrap();
        assert_eq!(head.response.status(), 204);
        assert_eq!(head.framing, Framing::Empty);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |text: &str| parse_all(text, GET).map(|head| head.map(|h| (h.framing, h.keep_alive)));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Some((Framing::Chunked, true))
        );
        // Both: chunked wins, and the connection is not reused.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Some((Framing::Chunked, false))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n").unwrap(), Some((Framing::UntilClose, false)));
        assert_eq!(framing("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap(), Some((Framing::Length(0), false)));
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").unwrap(),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n").unwrap(),
            Some((Framing::Length(2), false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").unwrap(),
            Some((Framing::Length(7), true))
        );
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n").is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(framing("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n").is_err());
        // A HEAD's response has no body, whatever its length says.
        let head = parse_all("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Asked { head: true, upgrade: false });
        assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
    }

    #[test]
    fn a_101_needs_an_upgrade_request() {
        let text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(parse_all(text, GET), Err(H1Error::UnaskedUpgrade)));
        let head = parse_all(text, Asked { head: false, upgrade: true }).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Upgrade);
    }

    #[test]
    fn garbage_and_oversized_heads_are_errors() {
        assert!(parse_all("SSH-2.0-OpenSSH\r\n\r\n", GET).is_err());
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parse_all(&long, GET), Err(H1Error::HeadTooLarge(_))));
    }
}
