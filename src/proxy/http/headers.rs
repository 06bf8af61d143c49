//! Header rewriting between client and server: hop-by-hop headers are stripped,
//! forwarding headers added. Constant values are built once, not per request.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Forwarded-Proto` of a plain connection.
static PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
/// `X-Forwarded-Proto` of a TLS connection.
static PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
/// Our `Via` entry.
static VIA: HeaderValue = HeaderValue::from_static("1.1 fulcrum");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1).
fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set again.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Names listed in Connection are hop-by-hop too; collect them only when present
    // (rare), so the common path does not allocate.
    if let Some(listed) = connection_listed(headers) {
        for name in listed {
            headers.remove(&name);
        }
    }
    let upgrade = if keep_upgrade { headers.remove(header::UPGRADE) } else { None };
    let has_fixed = headers.keys().any(is_fixed_hop_by_hop);
    if has_fixed {
        headers.remove(header::CONNECTION);
        headers.remove(&KEEP_ALIVE);
        headers.remove(header::TE);
        headers.remove(header::TRAILER);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::UPGRADE);
        headers.remove(&PROXY_CONNECTION);
        if headers.keys().any(|n| n.as_str().starts_with("proxy-")) {
            let proxied: Vec<HeaderName> =
                headers.keys().filter(|n| n.as_str().starts_with("proxy-")).cloned().collect();
            for name in proxied {
                headers.remove(name);
            }
        }
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn connection_listed(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut listed = None;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            // The common tokens are recognized without allocating.
            if ["close", "keep-alive", "upgrade"].iter().any(|known| token.eq_ignore_ascii_case(known)) {
                continue;
            }
            // HeaderName::from_bytes lowercases as it parses.
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.get_or_insert_with(Vec::new).push(name);
            }
        }
    }
    listed
}

/// True when the request's `TE` accepts trailers (`TE: trailers`, as gRPC sends).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))))
}

/// True when the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Adds `X-Forwarded-For` (appending to a client-sent one), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` (the Host the client asked for) and `Via`; `https` when the
/// client's connection was TLS.
pub fn add_forwarding(headers: &mut HeaderMap, client_ip: &HeaderValue, host: Option<&HeaderValue>, https: bool) {
    match headers.get(&X_FORWARDED_FOR) {
        None => {
            headers.insert(X_FORWARDED_FOR.clone(), client_ip.clone());
        }
        Some(existing) => {
            // Several XFF lines are one comma-separated list; fold them into one.
            let mut joined = Vec::with_capacity(existing.len() + client_ip.len() + 2);
            for (i, value) in headers.get_all(&X_FORWARDED_FOR).iter().enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                headers.insert(X_FORWARDED_FOR.clone(), value);
            }
        }
    }
    let proto = if https { &PROTO_HTTPS } else { &PROTO_HTTP };
    headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    headers.append(header::VIA, VIA.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut headers = map(&[
            ("connection", "Keep-Alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "basic x"),
            ("upgrade", "websocket"),
            ("host", "a.example"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-keep"]);
    }

    #[test]
    fn upgrade_survives_when_upgrading() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends() {
        let ip = HeaderValue::from_static("10.0.0.9");
        let mut headers = map(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        add_forwarding(&mut headers, &ip, Some(&HeaderValue::from_static("h.example")), false);
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "h.example");
        assert_eq!(headers["via"], "1.1 fulcrum");
    }
}
