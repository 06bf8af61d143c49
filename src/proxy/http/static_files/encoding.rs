//! Which precompressed sibling a request's Accept-Encoding allows.

use http::header::ACCEPT_ENCODING;
use http::HeaderMap;

/// A precompressed sibling's coding, in the order they are preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Br,
    Gzip,
}

impl Coding {
    /// Preferred first: brotli files are smaller.
    pub const ALL: [Coding; 2] = [Coding::Br, Coding::Gzip];

    /// The sibling's name is the file's with this appended.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Gzip => ".gz",
        }
    }

    /// Its Content-Encoding value.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The codings a client accepts (q > 0), from every Accept-Encoding field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct Accepts {
    br: bool,
    gzip: bool,
}

impl Accepts {
    /// Reads the request's Accept-Encoding. A coding listed by name is decided by
    /// its own q; one not listed by `*`'s; absent both, not accepted.
    pub fn from_headers(headers: &HeaderMap) -> Accepts {
        let (mut br, mut gzip, mut any) = (None, None, None);
        for value in headers.get_all(ACCEPT_ENCODING) {
            // Not visible ASCII: not a list we can read; it accepts nothing.
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or_default().trim();
                let slot = if name.eq_ignore_ascii_case("br") {
                    &mut br
                } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                    &mut gzip
                } else if name == "*" {
                    &mut any
                } else {
                    continue;
                };
                *slot = Some(positive_q(parts));
            }
        }
        Accepts { br: br.or(any).unwrap_or(false), gzip: gzip.or(any).unwrap_or(false) }
    }

    /// Whether `coding` may be sent.
    pub fn allows(self, coding: Coding) -> bool {
        match coding {
            Coding::Br => self.br,
            Coding::Gzip => self.gzip,
        }
    }
}

/// Whether an item's parameters leave it acceptable: no `q`, or a q above 0.
/// A malformed q refuses the coding (sending what the client may not decode is
/// the worse mistake).
fn positive_q<'a>(params: impl Iterator<Item = &'a str>) -> bool {
    for param in params {
        let Some((key, value)) = param.split_once('=') else { continue };
        if key.trim().eq_ignore_ascii_case("q") {
            let value = value.trim();
            // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
            let well_formed = value.len() <= 5
                && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && matches!(value.as_bytes().first(), Some(b'0' | b'1'));
            return well_formed && value.parse::<f32>().is_ok_and(|q| q > 0.0);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accepts(values: &[&str]) -> (bool, bool) {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        let a = Accepts::from_headers(&headers);
        (a.allows(Coding::Br), a.allows(Coding::Gzip))
    }

    #[test]
    fn names_and_q_values() {
        assert_eq!(accepts(&[]), (false, false));
        assert_eq!(accepts(&["gzip, deflate, br"]), (true, true));
        assert_eq!(accepts(&["br;q=0, gzip"]), (false, true));
        assert_eq!(accepts(&["BR;Q=0.5, GZIP;q=0.000"]), (true, false));
        assert_eq!(accepts(&["identity"]), (false, false));
        assert_eq!(accepts(&["x-gzip"]), (false, true));
        assert_eq!(accepts(&["gzip", "br"]), (true, true));
    }

    #[test]
    fn star_covers_the_unlisted_only() {
        assert_eq!(accepts(&["*"]), (true, true));
        assert_eq!(accepts(&["*;q=0"]), (false, false));
        assert_eq!(accepts(&["br;q=0, *"]), (false, true));
        assert_eq!(accepts(&["*;q=0, gzip"]), (false, true));
    }

    #[test]
    fn malformed_q_refuses() {
        assert_eq!(accepts(&["br;q=abc, gzip;q=2"]), (false, false));
        assert_eq!(accepts(&["br;q=nan"]), (false, false));
        assert_eq!(accepts(&["br;q=1.0"]), (true, false));
    }
}
