//! The chunked transfer coding of a response body (RFC 9112 section 7.1): sizes,
//! data, and the trailer section at the end.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::error::H1Error;

/// Longest chunk-size line (size and extensions).
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailers, then the final CRLF.
    Trailers,
    /// Past the end.
    Done,
}

/// What the decoder found in the bytes it was given.
#[derive(Debug)]
pub(super) enum Decoded {
    /// Body data.
    Data(Bytes),
    /// The trailer fields (only when there are some), then the end.
    Trailers(HeaderMap),
    /// The end of the body.
    End,
}

impl Chunked {
    /// The next piece of the body from `buf` (taking it out of `buf`); `None`
    /// when more bytes are needed.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, H1Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = line_end(buf, MAX_SIZE_LINE)? else { return Ok(None) };
                    let size = chunk_size(&buf[..line])?;
                    buf.advance(line + 2);
                    *self = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = if left == 0 { Chunked::DataEnd } else { Chunked::Data(left) };
                    return Ok(Some(Decoded::Data(data)));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => return self.trailers(buf),
                Chunked::Done => return Ok(Some(Decoded::End)),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, H1Error> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            *self = Chunked::Done;
            return Ok(Some(Decoded::End));
        }
        let mut lines = [httparse::EMPTY_HEADER; 32];
        match httparse::parse_headers(buf, &mut lines) {
            Ok(httparse::Status::Complete((length, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes());
                    let value = HeaderValue::from_bytes(field.value);
                    let (Ok(name), Ok(value)) = (name, value) else {
                        return Err(H1Error::BadChunk("invalid trailer field"));
                    };
                    trailers.append(name, value);
                }
                buf.advance(length);
                *self = Chunked::Done;
                Ok(Some(Decoded::Trailers(trailers)))
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => Ok(None),
            Ok(httparse::Status::Partial) => Err(H1Error::BadChunk("trailer section too long")),
            Err(_) => Err(H1Error::BadChunk("invalid trailer section")),
        }
    }
}

/// Where the CRLF ending the line at the start of `buf` is; `None` if not in yet.
fn line_end(buf: &[u8], limit: usize) -> Result<Option<usize>, H1Error> {
    match buf.iter().take(limit).position(|&b| b == b'\n') {
        Some(0) => Err(H1Error::BadChunk("empty chunk-size line")),
        Some(at) if buf[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err(H1Error::BadChunk("chunk-size line not ended by CRLF")),
        None if buf.len() >= limit => Err(H1Error::BadChunk("chunk-size line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (hex digits, then optional extensions, ignored).
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(H1Error::BadChunk("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest.iter().find(|&&b| b != b' ' && b != b'\t'), Some(b';') | None);
    if !rest_ok {
        return Err(H1Error::BadChunk("invalid chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| H1Error::BadChunk("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| H1Error::BadChunk("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; the data and trailers.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), H1Error> {
        let mut decoder = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Some(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
                Some(Decoded::Trailers(fields)) => trailers = Some(fields),
                Some(Decoded::End) => return Ok((data, trailers)),
                None if fed < wire.len() => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
                None => return Err(H1Error::ClosedInBody),
            }
        }
    }

    #[test]
    fn chunks_decode_however_they_are_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(decode_in_steps(wire, step).unwrap(), (b"hello, world".to_vec(), None), "step {step}");
        }
    }

    #[test]
    fn trailers_come_at_the_end() {
        let wire = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-b: 2\r\n\r\n";
        for step in [1, 4, wire.len()] {
            let (data, trailers) = decode_in_steps(wire, step).unwrap();
            assert_eq!(data, b"abc");
            let trailers = trailers.unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-b"], "2");
        }
    }

    #[test]
    fn malformed_chunking_is_an_error() {
        for wire in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"1234567890abcdef0\r\n",
            b"-1\r\n",
            b"5 x\r\nhello\r\n",
        ] {
            assert!(
                matches!(decode_in_steps(wire, 3), Err(H1Error::BadChunk(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = vec![b'1'; MAX_SIZE_LINE + 1];
        assert!(decode_in_steps(&long, 1000).is_err());
    }
}
