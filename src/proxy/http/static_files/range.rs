//! The Range request header (RFC 9110 section 14.2), for one byte range.

use http::header::RANGE;
use http::HeaderMap;

/// What the Range header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeRequest {
    /// No Range header.
    Absent,
    /// A Range header this server answers with the whole file: several ranges
    /// (allowed by RFC 9110; multipart bodies are not worth their cost here), an
    /// unknown unit or a malformed set.
    Whole,
    /// One byte range.
    One(ByteRange),
}

/// One `bytes=` range, not yet held against the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `first-last` or `first-` (to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl RangeRequest {
    /// Reads the request's Range header.
    pub fn from_headers(headers: &HeaderMap) -> RangeRequest {
        let mut values = headers.get_all(RANGE).iter();
        let Some(value) = values.next() else { return RangeRequest::Absent };
        // Several Range fields are several ranges.
        if values.next().is_some() {
            return RangeRequest::Whole;
        }
        match value.to_str().ok().and_then(parse) {
            Some(range) => RangeRequest::One(range),
            None => RangeRequest::Whole,
        }
    }
}

/// Parses `bytes=first-last`, `bytes=first-` or `bytes=-suffix`; `None` for
/// anything else, several ranges included.
fn parse(value: &str) -> Option<ByteRange> {
    let (unit, set) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(ByteRange::Suffix(number(last)?));
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(ByteRange::From(first, None));
    }
    let last = number(last)?;
    // first > last is invalid syntax (ignored), not an unsatisfiable range.
    (first <= last).then_some(ByteRange::From(first, Some(last)))
}

/// Digits only: `u64::from_str` would take a `+` sign.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl ByteRange {
    /// The inclusive byte positions of this range in a file of `len` bytes
    /// (`len` > 0), or `None` when it is unsatisfiable (416).
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(first, _) if first >= len => None,
            ByteRange::From(first, last) => Some((first, last.map_or(len - 1, |last| last.min(len - 1)))),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((len.saturating_sub(n), len - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(values: &[&str]) -> RangeRequest {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(RANGE, HeaderValue::from_str(value).unwrap());
        }
        RangeRequest::from_headers(&headers)
    }

    #[test]
    fn one_range_forms() {
        assert_eq!(request(&[]), RangeRequest::Absent);
        assert_eq!(request(&["bytes=0-99"]), RangeRequest::One(ByteRange::From(0, Some(99))));
        assert_eq!(request(&["bytes=100-"]), RangeRequest::One(ByteRange::From(100, None)));
        assert_eq!(request(&["bytes=-5"]), RangeRequest::One(ByteRange::Suffix(5)));
        assert_eq!(request(&["Bytes = 1 - 2"]), RangeRequest::One(ByteRange::From(1, Some(2))));
    }

    #[test]
    fn several_or_malformed_mean_the_whole_file() {
        for value in ["bytes=0-1,3-4", "bytes=5-1", "bytes=abc", "bytes=+1-2", "items=0-1", "bytes=-", "bytes=1", "0-1"]
        {
            assert_eq!(request(&[value]), RangeRequest::Whole, "{value}");
        }
        assert_eq!(request(&["bytes=0-1", "bytes=2-3"]), RangeRequest::Whole);
        assert_eq!(request(&["bytes=99999999999999999999999-"]), RangeRequest::Whole);
    }

    #[test]
    fn resolve_against_length() {
        assert_eq!(ByteRange::From(0, Some(4)).resolve(10), Some((0, 4)));
        assert_eq!(ByteRange::From(5, Some(100)).resolve(10), Some((5, 9)));
        assert_eq!(ByteRange::From(9, None).resolve(10), Some((9, 9)));
        assert_eq!(ByteRange::From(10, None).resolve(10), None);
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
    }
}
