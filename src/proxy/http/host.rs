//! Which authority (host and port) a request is for, by the rules of RFC 9112
//! section 3.2 (HTTP/1.x) and RFC 9113 section 8.3.1 (HTTP/2).
//!
//! - An HTTP/1.1 request needs exactly one Host header, whatever the form of its
//!   target; a request of any version with two Host lines (even equal ones), or
//!   with a Host that is not a valid `host[:port]`, is malformed: 400.
//! - HTTP/1.0 (and HTTP/2 without `:authority`) may come without any: no host.
//! - When the request target carries an authority (absolute-form
//!   `GET http://x.test/ HTTP/1.1`, authority-form `CONNECT`, or h2's `:authority`,
//!   which hyper puts in the URI), it wins over Host, both for routing and for the
//!   Host sent on to the server.
//!
//! Host syntax is RFC 3986's `host [":" port]` without userinfo: a reg-name (letters,
//! digits, `-._~`, sub-delims, %-escapes), an IPv4 address, or an IP literal in
//! brackets (`[::1]`, `[v1.x]`); the port is empty or a number up to 65535 (RFC
//! 3986 allows more digits, no TCP port has them). The host may not be empty: an
//! `http` URI with an empty host is invalid (RFC 9110 section 4.2.1).

use http::header::{self, HeaderValue};
use http::{Request, Version};

/// The authority a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestAuthority<'a> {
    /// `host[:port]` as the client wrote it (case kept): what routes match on.
    pub host: &'a str,
    /// The Host header sent on must be set to `host`: the request has none (h2), or
    /// one that the request target's authority overrides.
    pub rewrite_host: bool,
}

impl RequestAuthority<'_> {
    /// The Host header value to send on in place of the client's, when it must change.
    pub fn host_to_send(&self) -> Option<HeaderValue> {
        // `host` passed `check_authority`: visible ASCII only, always a valid value.
        self.rewrite_host.then(|| HeaderValue::from_str(self.host).ok()).flatten()
    }
}

/// Why a request's authority is refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without a Host header.
    #[error("HTTP/1.1 request without a Host header")]
    Missing,
    /// More than one Host line.
    #[error("request with more than one Host header")]
    Duplicate,
    /// The Host header is not a valid `host[:port]`.
    #[error("invalid Host header: {0}")]
    InvalidHost(#[source] InvalidAuthority),
    /// The authority of the request target (absolute-form, CONNECT, h2 `:authority`) is invalid.
    #[error("invalid authority in the request target: {0}")]
    InvalidTarget(#[source] InvalidAuthority),
}

/// What is wrong with an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAuthority {
    /// No host name or address.
    #[error("empty host")]
    EmptyHost,
    /// `user@host`: userinfo has no place in Host, nor in an http target (RFC 9110 section 4.2.4).
    #[error("userinfo is not allowed")]
    Userinfo,
    /// A byte a host name cannot hold (space, non-ASCII, ...).
    #[error("invalid character in host")]
    Character,
    /// A port that is not a number from 0 to 65535.
    #[error("invalid port")]
    Port,
    /// A bracketed IP literal that is not an IPv6 address (or IPvFuture).
    #[error("invalid IP literal")]
    IpLiteral,
}

/// The authority `req` is for: `Ok(None)` when it names none and may (HTTP/1.0,
/// HTTP/2 without `:authority`), an error when it must be answered with a 400.
pub fn request_authority<B>(req: &Request<B>) -> Result<Option<RequestAuthority<'_>>, HostError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(HostError::Duplicate),
        (Some(value), None) => {
            let text = value.to_str().map_err(|_| HostError::InvalidHost(InvalidAuthority::Character))?;
            check_authority(text).map_err(HostError::InvalidHost)?;
            Some(text)
        }
        (None, _) => None,
    };
    if host_header.is_none() && req.version() == Version::HTTP_11 {
        // Even with an absolute-form target (RFC 9112 section 3.2: "any HTTP/1.1 request").
        return Err(HostError::Missing);
    }
    if let Some(authority) = req.uri().authority() {
        let target = authority.as_str();
        check_authority(target).map_err(HostError::InvalidTarget)?;
        return Ok(Some(RequestAuthority { host: target, rewrite_host: host_header != Some(target) }));
    }
    Ok(host_header.map(|host| RequestAuthority { host, rewrite_host: false }))
}

/// Checks RFC 3986 `host [":" port]` (no userinfo, non-empty host, port <= 65535).
fn check_authority(text: &str) -> Result<(), InvalidAuthority> {
    if text.as_bytes().contains(&b'@') {
        return Err(InvalidAuthority::Userinfo);
    }
    let port = if let Some(literal) = text.strip_prefix('[') {
        let end = literal.find(']').ok_or(InvalidAuthority::IpLiteral)?;
        check_ip_literal(&literal[..end])?;
        match &literal[end + 1..] {
            "" => return Ok(()),
            rest => rest.strip_prefix(':').ok_or(InvalidAuthority::Character)?,
        }
    } else {
        let (host, port) = match text.as_bytes().iter().position(|&b| b == b':') {
            Some(colon) => (&text[..colon], &text[colon + 1..]),
            None => (text, ""),
        };
        if host.is_empty() {
            return Err(InvalidAuthority::EmptyHost);
        }
        check_reg_name(host)?;
        port
    };
    // Empty (`x.test:`) is allowed; digits only, and a TCP port.
    if port.bytes().all(|b| b.is_ascii_digit()) && (port.is_empty() || port.parse::<u16>().is_ok()) {
        Ok(())
    } else {
        Err(InvalidAuthority::Port)
    }
}

/// The bytes a `reg-name` may hold as they are: unreserved and sub-delims (a
/// table: this runs on every request's Host).
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (an IPv4 address is one too).
fn check_reg_name(host: &str) -> Result<(), InvalidAuthority> {
    let bytes = host.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escape = bytes.get(i + 1..i + 3).ok_or(InvalidAuthority::Character)?;
                if !escape.iter().all(u8::is_ascii_hexdigit) {
                    return Err(InvalidAuthority::Character);
                }
                i += 3;
                continue;
            }
            b if REG_NAME[b as usize] => {}
            _ => return Err(InvalidAuthority::Character),
        }
        i += 1;
    }
    Ok(())
}

/// Inside `[...]`: an IPv6 address, or `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )`.
fn check_ip_literal(inner: &str) -> Result<(), InvalidAuthority> {
    if let Some(future) = inner.strip_prefix(['v', 'V']) {
        let (version, rest) = future.split_once('.').ok_or(InvalidAuthority::IpLiteral)?;
        let version_ok = !version.is_empty() && version.bytes().all(|b| b.is_ascii_hexdigit());
        let rest_ok =
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b));
        return if version_ok && rest_ok { Ok(()) } else { Err(InvalidAuthority::IpLiteral) };
    }
    inner.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| InvalidAuthority::IpLiteral)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    fn h1(hosts: &[&str]) -> Result<Option<(String, bool)>, HostError> {
        let req = request(Version::HTTP_11, "/", hosts);
        request_authority(&req).map(|a| a.map(|a| (a.host.to_string(), a.rewrite_host)))
    }

    #[test]
    fn http11_needs_a_host_http10_does_not() {
        assert_eq!(h1(&[]), Err(HostError::Missing));
        assert_eq!(h1(&["x.test"]), Ok(Some(("x.test".into(), false))));
        let req = request(Version::HTTP_10, "/", &[]);
        assert_eq!(request_authority(&req), Ok(None));
        let req = request(Version::HTTP_10, "/", &["x.test:8080"]);
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "x.test:8080", rewrite_host: false })));
    }

    #[test]
    fn two_host_lines_are_refused_even_when_equal() {
        assert_eq!(h1(&["a.test", "b.test"]), Err(HostError::Duplicate));
        assert_eq!(h1(&["a.test", "a.test"]), Err(HostError::Duplicate));
        let req = request(Version::HTTP_10, "/", &["a.test", "a.test"]);
        assert_eq!(request_authority(&req), Err(HostError::Duplicate));
        // Also when the target's authority would win anyway.
        let req = request(Version::HTTP_11, "http://c.test/", &["a.test", "a.test"]);
        assert_eq!(request_authority(&req), Err(HostError::Duplicate));
        let req = request(Version::HTTP_2, "http://c.test/", &["a.test", "a.test"]);
        assert_eq!(request_authority(&req), Err(HostError::Duplicate));
    }

    #[test]
    fn invalid_host_values_are_refused() {
        use InvalidAuthority::*;
        for (value, why) in [
            ("", EmptyHost),
            (":80", EmptyHost),
            ("a b", Character),
            ("x.test/path", Character),
            ("x.test:port", Port),
            ("x.test:99999", Port),
            ("x.test:65536", Port),
            ("x.test:-1", Port),
            ("x.test:80:80", Port),
            ("u@x.test", Userinfo),
            ("u:p@x.test:80", Userinfo),
            ("[::1", IpLiteral),
            ("[not-ip]:80", IpLiteral),
            ("[::1]x", Character),
            ("[fe80::1%25eth0]", IpLiteral),
            ("x%zz.test", Character),
            ("x%4", Character),
        ] {
            assert_eq!(h1(&[value]), Err(HostError::InvalidHost(why)), "{value:?}");
        }
        // Bytes that are not visible ASCII (obs-text) cannot be a host either.
        let mut req = request(Version::HTTP_11, "/", &[]);
        req.headers_mut().insert(header::HOST, HeaderValue::from_bytes("bücher.test".as_bytes()).unwrap());
        assert_eq!(request_authority(&req), Err(HostError::InvalidHost(InvalidAuthority::Character)));
    }

    #[test]
    fn valid_host_values_are_kept_as_written() {
        for value in [
            "x.test",
            "X.Test",
            "x.test:",
            "x.test:0",
            "x.test:65535",
            "x.test:00080",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "[2001:db8::1]:",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.test",
            "b%C3%BCcher.test",
            "under_score.test",
            "localhost",
        ] {
            assert_eq!(h1(&[value]), Ok(Some((value.to_string(), false))), "{value:?}");
        }
    }

    #[test]
    fn absolute_form_target_wins_over_host() {
        let req = request(Version::HTTP_11, "http://b.test/x?y", &["a.test"]);
        let found = request_authority(&req).unwrap().unwrap();
        assert_eq!(found, RequestAuthority { host: "b.test", rewrite_host: true });
        assert_eq!(found.host_to_send().unwrap(), "b.test");
        // Same value: nothing to rewrite.
        let req = request(Version::HTTP_11, "http://b.test:8080/", &["b.test:8080"]);
        let found = request_authority(&req).unwrap().unwrap();
        assert_eq!(found, RequestAuthority { host: "b.test:8080", rewrite_host: false });
        assert_eq!(found.host_to_send(), None);
        // HTTP/1.1 still needs the Host line (RFC 9112 section 3.2); HTTP/1.0 does not.
        let req = request(Version::HTTP_11, "http://b.test/", &[]);
        assert_eq!(request_authority(&req), Err(HostError::Missing));
        let req = request(Version::HTTP_10, "http://b.test/", &[]);
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "b.test", rewrite_host: true })));
        // A bad Host is refused even though the target would win.
        let req = request(Version::HTTP_11, "http://b.test/", &["a b"]);
        assert_eq!(request_authority(&req), Err(HostError::InvalidHost(InvalidAuthority::Character)));
        // CONNECT's authority-form target is an authority too.
        let req = Request::builder().method("CONNECT").uri("c.test:443").header("host", "a.test").body(()).unwrap();
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "c.test:443", rewrite_host: true })));
    }

    #[test]
    fn invalid_target_authority_is_refused() {
        let req = request(Version::HTTP_11, "http://u@b.test/", &["b.test"]);
        assert_eq!(request_authority(&req), Err(HostError::InvalidTarget(InvalidAuthority::Userinfo)));
        let req = request(Version::HTTP_2, "http://u:p@b.test/", &[]);
        assert_eq!(request_authority(&req), Err(HostError::InvalidTarget(InvalidAuthority::Userinfo)));
    }

    #[test]
    fn h2_authority_wins_over_host() {
        let req = request(Version::HTTP_2, "http://h2.test/x", &[]);
        let found = request_authority(&req).unwrap().unwrap();
        assert_eq!(found, RequestAuthority { host: "h2.test", rewrite_host: true });
        assert_eq!(found.host_to_send().unwrap(), "h2.test");
        let req = request(Version::HTTP_2, "http://h2.test/x", &["other.test"]);
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "h2.test", rewrite_host: true })));
        let req = request(Version::HTTP_2, "http://h2.test/x", &["h2.test"]);
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "h2.test", rewrite_host: false })));
        // Without :authority the Host header names it; with neither there is none.
        let req = request(Version::HTTP_2, "/x", &["other.test"]);
        assert_eq!(request_authority(&req), Ok(Some(RequestAuthority { host: "other.test", rewrite_host: false })));
        let req = request(Version::HTTP_2, "/x", &[]);
        assert_eq!(request_authority(&req), Ok(None));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(HostError::InvalidHost(InvalidAuthority::Port).to_string(), "invalid Host header: invalid port");
    }
}
