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

/// The hop-by-hop headers a head carries (RFC 9110 §7.6.1), found in one pass
/// over its names.
#[derive(Default)]
struct HopByHop {
    connection: bool,
    keep_alive: bool,
    te: bool,
    trailer: bool,
    transfer_encoding: bool,
    upgrade: bool,
    /// `Proxy-Connection` and any other `Proxy-*` (e.g. `Proxy-Authorization`).
    proxy: bool,
}

impl HopByHop {
    fn find(headers: &HeaderMap) -> Self {
        let mut found = HopByHop::default();
        for name in headers.keys() {
            // Standard names compare as one integer; the others by their bytes.
            if name == header::CONNECTION {
                found.connection = true;
            } else if name == header::TE {
                found.te = true;
            } else if name == header::TRAILER {
                found.trailer = true;
            } else if name == header::TRANSFER_ENCODING {
                found.transfer_encoding = true;
            } else if name == header::UPGRADE {
                found.upgrade = true;
            } else if name == KEEP_ALIVE {
                found.keep_alive = true;
            } else if name.as_str().starts_with("proxy-") {
                found.proxy = true;
            }
        }
        found
    }

    fn any(&self) -> bool {
        self.connection
            || self.keep_alive
            || self.te
            || self.trailer
            || self.transfer_encoding
            || self.upgrade
            || self.proxy
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header lists.
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set again.
/// Only what is there is removed: most heads carry none or only `Connection`, and
/// each removal is a hash lookup.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let found = HopByHop::find(headers);
    if !found.any() {
        return;
    }
    if found.connection {
        // Names listed in Connection are hop-by-hop too; collected only when
        // there are some (rare), so the common path does not allocate.
        if let Some(listed) = connection_listed(headers) {
            for name in listed {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    let upgrade = if found.upgrade { headers.remove(header::UPGRADE) } else { None };
    if found.keep_alive {
        headers.remove(&KEEP_ALIVE);
    }
    if found.te {
        headers.remove(header::TE);
    }
    if found.trailer {
        headers.remove(header::TRAILER);
    }
    if found.transfer_encoding {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found.proxy {
        let proxied: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("proxy-")).cloned().collect();
        for name in proxied {
            headers.remove(name);
        }
    }
    if let Some(upgrade) = upgrade.filter(|_| keep_upgrade) {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn connection_listed(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut listed = None;
    for token in headers.get_all(header::CONNECTION).iter().flat_map(|value| tokens(value.as_bytes())) {
        // The common tokens are recognized without allocating.
        if [&b"close"[..], b"keep-alive", b"upgrade"].iter().any(|known| token.eq_ignore_ascii_case(known)) {
            continue;
        }
        // HeaderName::from_bytes lowercases as it parses.
        if let Ok(name) = HeaderName::from_bytes(token) {
            listed.get_or_insert_with(Vec::new).push(name);
        }
    }
    listed
}

/// The elements of a comma-separated header value, trimmed, empty ones skipped
/// (bytes: no UTF-8 check, no char searching).
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// True when a `name` header of `headers` lists `token` (ASCII case ignored).
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// True when the request's `TE` accepts trailers (`TE: trailers`, as gRPC sends).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    lists_token(headers, &header::TE, "trailers")
}

/// True when the request asks to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && lists_token(headers, &header::CONNECTION, "upgrade")
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
    fn a_head_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut headers = map(&[("host", "a.example"), ("x-forwarded-for", "1.1.1.1"), ("accept", "*/*")]);
        let before = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, before);
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_too() {
        for name in ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"] {
            let mut headers = map(&[(name, "x"), ("content-type", "text/plain")]);
            strip_hop_by_hop(&mut headers, false);
            let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(names, ["content-type"], "{name}");
        }
    }

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped() {
        let found: Vec<&[u8]> = tokens(b" Keep-Alive ,, close,\tX-Secret ,").collect();
        assert_eq!(found, [&b"Keep-Alive"[..], b"close", b"X-Secret"]);
        let headers = map(&[("connection", "keep-alive"), ("connection", " Upgrade ")]);
        assert!(lists_token(&headers, &header::CONNECTION, "upgrade"));
        assert!(!lists_token(&headers, &header::CONNECTION, "close"));
        assert!(!lists_token(&map(&[("connection", "closed")]), &header::CONNECTION, "close"));
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
