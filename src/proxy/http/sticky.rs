//! Sticky sessions by an inserted cookie (`backends[].sticky: {cookie: NAME}`):
//! the request's cookie names the server it prefers, the cookie is kept from the
//! servers, and a response from a server the cookie did not name sets it anew.
//!
//! Cookies are parsed by hand, without allocating: `name=value` pairs separated by
//! `;` (RFC 6265 section 4.2.1 writes `"; "`, but missing or extra spaces are
//! tolerated), a value possibly in double quotes. HTTP/2 clients may split them
//! over several `cookie` headers (RFC 9113 section 8.2.3): every line is read.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use crate::cluster::StickySettings;

/// The attributes of every sticky cookie: for the whole site, out of scripts'
/// reach, and not sent on cross-site subrequests (a session cookie needs none of that).
const ATTRIBUTES: &[u8] = b"; Path=/; HttpOnly; SameSite=Lax";
/// Added when the client's connection is TLS: the browser then sends it only over TLS.
const SECURE: &[u8] = b"; Secure";

/// The server the request's sticky cookie names: the first of its values that
/// names a server (a client may hold stale copies under other domains or paths).
pub fn named_server(settings: &StickySettings, headers: &HeaderMap) -> Option<usize> {
    values(headers, &settings.cookie).find_map(|value| settings.member(std::str::from_utf8(unquote(value)).ok()?))
}

/// Adds the `Set-Cookie` naming `server` to a response, unless the request's
/// cookie already named it (`named`): the client keeps what it has.
pub fn remember(settings: &StickySettings, named: Option<usize>, server: usize, secure: bool, headers: &mut HeaderMap) {
    if named != Some(server) {
        headers.append(header::SET_COOKIE, set_cookie(settings, server, secure));
    }
}

/// `NAME=VALUE; Path=/; HttpOnly; SameSite=Lax` (and `; Secure`) for `server`.
/// Built when a session starts or moves, not on every request of it.
fn set_cookie(settings: &StickySettings, server: usize, secure: bool) -> HeaderValue {
    let value = settings.values[server].as_bytes();
    let name = settings.cookie.as_bytes();
    let length = name.len() + 1 + value.len() + ATTRIBUTES.len() + if secure { SECURE.len() } else { 0 };
    let mut line = Vec::with_capacity(length);
    line.extend_from_slice(name);
    line.push(b'=');
    line.extend_from_slice(value);
    line.extend_from_slice(ATTRIBUTES);
    if secure {
        line.extend_from_slice(SECURE);
    }
    // Validated config: a token name and a hex value.
    HeaderValue::from_maybe_shared(Bytes::from(line)).expect("a cookie name and a hex value make a valid header")
}

/// Every value of cookie `name` in the request's Cookie header(s), in order, as
/// sent (quotes included).
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| pairs(line.as_bytes()))
        .filter(move |(pair_name, _)| *pair_name == name.as_bytes())
        .map(|(_, value)| value)
}

/// Removes cookie `name` from the request's Cookie header(s), keeping the other
/// cookies in order; a header left with none is dropped. Allocates only when the
/// cookie is there.
pub fn strip(headers: &mut HeaderMap, name: &str) {
    if values(headers, name).next().is_none() {
        return;
    }
    let mut lines = headers.get_all(header::COOKIE).iter();
    if let (Some(_), None) = (lines.next(), lines.next()) {
        // One line (HTTP/1.1 always, HTTP/2 often): no list of lines needed.
        if let Some(rest) = headers.remove(header::COOKIE).and_then(|line| without(line, name)) {
            headers.insert(header::COOKIE, rest);
        }
        return;
    }
    // Several lines: taken out and put back, without the cookie, in their order.
    let kept: Vec<HeaderValue> = match headers.entry(header::COOKIE) {
        header::Entry::Occupied(entry) => entry.remove_entry_mult().1.filter_map(|line| without(line, name)).collect(),
        header::Entry::Vacant(_) => return,
    };
    for line in kept {
        headers.append(header::COOKIE, line);
    }
}

/// `line` without cookie `name` (unchanged when it has none); `None` when no
/// cookie is left.
fn without(line: HeaderValue, name: &str) -> Option<HeaderValue> {
    let bytes = line.as_bytes();
    if !pairs(bytes).any(|(pair_name, _)| pair_name == name.as_bytes()) {
        return Some(line);
    }
    let mut rest = Vec::with_capacity(bytes.len());
    for segment in segments(bytes).filter(|segment| split(segment).0 != name.as_bytes()) {
        if !rest.is_empty() {
            rest.extend_from_slice(b"; ");
        }
        rest.extend_from_slice(segment);
    }
    if rest.is_empty() {
        return None;
    }
    // Trimmed pieces of a valid header value, joined by "; ", are valid.
    let mut rest = HeaderValue::from_maybe_shared(Bytes::from(rest)).expect("pieces of a valid header value");
    rest.set_sensitive(line.is_sensitive());
    Some(rest)
}

/// The `(name, value)` pairs of one Cookie line.
fn pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    segments(line).map(split)
}

/// The non-empty `;`-separated pieces of one Cookie line, trimmed.
fn segments(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b';').map(<[u8]>::trim_ascii).filter(|segment| !segment.is_empty())
}

/// A piece's name and value, trimmed; a piece without `=` is a value with an
/// empty name (RFC 6265bis section 5.7), which no sticky cookie has.
fn split(segment: &[u8]) -> (&[u8], &[u8]) {
    match segment.iter().position(|&b| b == b'=') {
        Some(eq) => (segment[..eq].trim_ascii(), segment[eq + 1..].trim_ascii()),
        None => (b"", segment),
    }
}

/// A value without its surrounding double quotes, if it has them.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> StickySettings {
        StickySettings { cookie: "SRV".into(), values: vec!["aaaa".into(), "bbbb".into(), "cccc".into()] }
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::COOKIE, line.parse().unwrap());
        }
        headers
    }

    fn cookie_lines(headers: &HeaderMap) -> Vec<&str> {
        headers.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect()
    }

    fn stripped(lines: &[&str]) -> Vec<String> {
        let mut headers = headers(lines);
        strip(&mut headers, "SRV");
        cookie_lines(&headers).into_iter().map(String::from).collect()
    }

    #[test]
    fn finds_values_with_or_without_spaces() {
        let headers = headers(&["a=1;SRV=bbbb ;  b = 2"]);
        assert_eq!(values(&headers, "SRV").collect::<Vec<_>>(), [b"bbbb"]);
        assert_eq!(values(&headers, "b").collect::<Vec<_>>(), [b"2"]);
        assert_eq!(values(&headers, "S").count(), 0, "a prefix is not the name");
        assert_eq!(values(&headers, "srv").count(), 0, "names are case-sensitive");
    }

    #[test]
    fn empty_and_nameless_pieces_are_not_cookies() {
        let headers = headers(&[";; SRV; =x; a=", ""]);
        assert_eq!(values(&headers, "SRV").count(), 0, "`SRV` alone is a value, not a name");
        assert_eq!(values(&headers, "a").collect::<Vec<_>>(), [b""]);
    }

    #[test]
    fn names_the_server_of_a_known_value_quoted_or_not() {
        assert_eq!(named_server(&settings(), &headers(&["x=1; SRV=cccc"])), Some(2));
        assert_eq!(named_server(&settings(), &headers(&["SRV=\"bbbb\""])), Some(1));
        assert_eq!(named_server(&settings(), &headers(&["SRV=zzzz"])), None);
        assert_eq!(named_server(&settings(), &headers(&["SRV="])), None);
        assert_eq!(named_server(&settings(), &HeaderMap::new()), None);
    }

    #[test]
    fn a_stale_copy_does_not_hide_a_valid_one() {
        assert_eq!(named_server(&settings(), &headers(&["SRV=gone; SRV=aaaa"])), Some(0));
        assert_eq!(named_server(&settings(), &headers(&["SRV=gone", "SRV=bbbb"])), Some(1));
    }

    #[test]
    fn finds_values_across_http2_cookie_lines() {
        let headers = headers(&["a=1", "SRV=bbbb", "b=2"]);
        assert_eq!(named_server(&settings(), &headers), Some(1));
    }

    #[test]
    fn strips_only_the_sticky_cookie_keeping_order() {
        assert_eq!(stripped(&["a=1; SRV=aaaa; b=2"]), ["a=1; b=2"]);
        assert_eq!(stripped(&["SRV=aaaa; a=1"]), ["a=1"]);
        assert_eq!(stripped(&["a=1;SRV=aaaa"]), ["a=1"]);
        assert_eq!(stripped(&["a=1;b=2 ;SRV = x;c=\"3\""]), ["a=1; b=2; c=\"3\""]);
        assert_eq!(stripped(&["SRV=1; a=1; SRV=2"]), ["a=1"], "every copy goes");
    }

    #[test]
    fn a_line_left_empty_is_dropped() {
        assert!(stripped(&["SRV=aaaa"]).is_empty());
        assert!(stripped(&[" SRV=aaaa ; "]).is_empty());
        assert!(stripped(&["SRV=aaaa", "SRV=bbbb"]).is_empty());
    }

    #[test]
    fn strips_across_http2_cookie_lines() {
        assert_eq!(stripped(&["a=1", "SRV=aaaa", "b=2; SRV=x; c=3"]), ["a=1", "b=2; c=3"]);
    }

    #[test]
    fn lines_without_it_are_left_untouched() {
        assert_eq!(stripped(&["a=1;b=2"]), ["a=1;b=2"], "not even respaced");
        assert_eq!(stripped(&["SRVX=1", "XSRV=2"]), ["SRVX=1", "XSRV=2"]);
        let mut none = HeaderMap::new();
        strip(&mut none, "SRV");
        assert!(none.is_empty());
    }

    #[test]
    fn keeps_a_line_sensitive() {
        let mut value = HeaderValue::from_static("a=1; SRV=aaaa");
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value);
        strip(&mut headers, "SRV");
        assert!(headers[header::COOKIE].is_sensitive());
    }

    #[test]
    fn set_cookie_names_the_server_with_its_attributes() {
        let line = set_cookie(&settings(), 1, false);
        assert_eq!(line, "SRV=bbbb; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(set_cookie(&settings(), 2, true), "SRV=cccc; Path=/; HttpOnly; SameSite=Lax; Secure");
    }

    #[test]
    fn remembers_only_when_the_server_changes() {
        let mut headers = HeaderMap::new();
        remember(&settings(), Some(1), 1, false, &mut headers);
        assert!(headers.is_empty(), "the cookie already named it");
        remember(&settings(), Some(0), 1, false, &mut headers);
        remember(&settings(), None, 2, false, &mut headers);
        let set: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set[0].to_str().unwrap().starts_with("SRV=bbbb;"));
        assert!(set[1].to_str().unwrap().starts_with("SRV=cccc;"));
    }
}
