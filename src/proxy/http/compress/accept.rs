//! The Accept-Encoding parser (RFC 9110 section 12.5.3). Lenient where it costs
//! nothing (spaces, case, unknown parameters) and never fails: a malformed
//! element is skipped, so a bad header at worst means an uncompressed response.

use http::HeaderValue;

use super::Encoding;

/// Our codings, in the order that breaks a tie of q-values.
const PREFERENCE: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

/// The q-values (in thousandths) a client gave, by what each element named.
#[derive(Debug, Default, PartialEq, Eq)]
struct Accepted {
    br: Option<u16>,
    zstd: Option<u16>,
    gzip: Option<u16>,
    any: Option<u16>,
}

impl Accepted {
    /// The q-value of `encoding`: its own element's, or else the `*` one's, or 0
    /// (not listed: not acceptable).
    fn q(&self, encoding: Encoding) -> u16 {
        let own = match encoding {
            Encoding::Brotli => self.br,
            Encoding::Zstd => self.zstd,
            Encoding::Gzip => self.gzip,
        };
        own.or(self.any).unwrap_or(0)
    }
}

/// The best coding the Accept-Encoding `values` allow, or None when the client
/// sent none or accepts none of ours (identity only, or everything with q=0).
pub(super) fn best<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<Encoding> {
    let mut accepted = Accepted::default();
    for value in values {
        // A value that is not visible ASCII names none of our codings.
        let Ok(value) = value.to_str() else { continue };
        for element in value.split(',') {
            if let Some((coding, q)) = parse_element(element) {
                record(&mut accepted, coding, q);
            }
        }
    }
    // Highest q wins; `max_by_key` keeps the last of equals, so scan in reverse.
    let best = PREFERENCE.iter().rev().copied().max_by_key(|&encoding| accepted.q(encoding))?;
    (accepted.q(best) > 0).then_some(best)
}

/// Notes one element's q-value. A coding listed twice keeps its highest q.
fn record(accepted: &mut Accepted, coding: &str, q: u16) {
    let slot = if coding.eq_ignore_ascii_case("br") {
        &mut accepted.br
    } else if coding.eq_ignore_ascii_case("zstd") {
        &mut accepted.zstd
    } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
        // RFC 9110 8.4.1.3: x-gzip is an alias of gzip.
        &mut accepted.gzip
    } else if coding == "*" {
        &mut accepted.any
    } else {
        return;
    };
    *slot = Some(slot.map_or(q, |old| old.max(q)));
}

/// One `coding;q=0.5` element: its coding and q-value in thousandths (1000 when
/// none is given), or None for an empty or malformed one.
fn parse_element(element: &str) -> Option<(&str, u16)> {
    let mut params = element.split(';');
    let coding = params.next()?.trim();
    if coding.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in params {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            q = parse_q(value.trim())?;
        }
    }
    Some((coding, q))
}

/// A qvalue (`0`, `0.5`, `1.000`, at most three decimals, at most 1) in
/// thousandths; None when malformed.
fn parse_q(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    // "5" -> 500, "05" -> 50, "005" -> 5.
    let thousandths =
        frac.bytes().zip([100u16, 10, 1]).map(|(digit, unit)| u16::from(digit - b'0') * unit).sum::<u16>();
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(header: &str) -> Option<Encoding> {
        best([HeaderValue::from_str(header).unwrap()].iter())
    }

    #[test]
    fn q_values_parse_strictly() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("0.001"), Some(1));
        assert_eq!(parse_q("0."), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("1.0001"), None);
        assert_eq!(parse_q("2"), None);
        assert_eq!(parse_q("-1"), None);
        assert_eq!(parse_q(""), None);
        assert_eq!(parse_q("0.x"), None);
        assert_eq!(parse_q("0.+5"), None);
    }

    #[test]
    fn elements_parse_with_spaces_and_parameters() {
        assert_eq!(parse_element(" gzip "), Some(("gzip", 1000)));
        assert_eq!(parse_element("br ; q=0.2"), Some(("br", 200)));
        assert_eq!(parse_element("br;Q=0.2"), Some(("br", 200)));
        assert_eq!(parse_element("zstd;level=3;q=0.7"), Some(("zstd", 700)));
        assert_eq!(parse_element(""), None);
        assert_eq!(parse_element(" ;q=1"), None);
        assert_eq!(parse_element("gzip;q"), None);
        assert_eq!(parse_element("gzip;q=abc"), None);
    }

    #[test]
    fn the_highest_q_wins() {
        assert_eq!(pick("br;q=0.5, gzip;q=1"), Some(Encoding::Gzip));
        assert_eq!(pick("gzip;q=0.8, zstd;q=0.9"), Some(Encoding::Zstd));
        assert_eq!(pick("gzip, deflate"), Some(Encoding::Gzip));
    }

    #[test]
    fn ties_go_to_br_then_zstd_then_gzip() {
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Encoding::Brotli));
        assert_eq!(pick("gzip, zstd"), Some(Encoding::Zstd));
        assert_eq!(pick("*"), Some(Encoding::Brotli));
    }

    #[test]
    fn zero_refuses_and_star_fills_in() {
        assert_eq!(pick("br;q=0, *"), Some(Encoding::Zstd));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("gzip, *;q=0"), Some(Encoding::Gzip));
        assert_eq!(pick("*;q=0.1, gzip;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0, zstd;q=0, gzip;q=0"), None);
    }

    #[test]
    fn nothing_of_ours_is_none() {
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("deflate, compress"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick(",,, ;;"), None);
    }

    #[test]
    fn case_aliases_and_repeats() {
        assert_eq!(pick("GZIP"), Some(Encoding::Gzip));
        assert_eq!(pick("x-gzip"), Some(Encoding::Gzip));
        // The best q of a coding listed twice counts.
        assert_eq!(pick("gzip;q=0, gzip;q=0.5"), Some(Encoding::Gzip));
    }

    #[test]
    fn a_malformed_element_is_skipped_not_fatal() {
        assert_eq!(pick("br;q=9, gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=, gzip;q=0.3"), Some(Encoding::Gzip));
    }

    #[test]
    fn several_header_lines_add_up() {
        let lines = [HeaderValue::from_static("gzip;q=0.4"), HeaderValue::from_static("zstd;q=0.6")];
        assert_eq!(best(lines.iter()), Some(Encoding::Zstd));
    }

    #[test]
    fn non_ascii_values_are_ignored() {
        let lines = [HeaderValue::from_bytes(b"br\xff").unwrap(), HeaderValue::from_static("gzip")];
        assert_eq!(best(lines.iter()), Some(Encoding::Gzip));
    }
}
