//! Sticky sessions by cookie (`backends[].sticky: {cookie: NAME}`) over real
//! loopback sockets: the first response names its server in a cookie, later
//! requests carrying it stay there (where round robin would spread them), the
//! servers never see the cookie, a cookie naming a server that cannot take the
//! request (refusing connections, drained by a reload) or naming none is replaced,
//! instances with the same config agree on the values, HTTP/2 clients' split
//! cookie headers are handled, TLS clients get `Secure`, and balancer-made errors
//! set nothing.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use common::pki::Pki;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;

const COOKIE: &str = "FULCRUM_SERVER";
/// What every sticky cookie carries after its value, on a plain connection.
const ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";

/// Frontend `web` in front of backend `app` (round robin, sticky) with
/// `servers` as (name, address, weight); `extra` goes into the backend.
fn config(servers: &[(&str, SocketAddr, u32)], extra: &str) -> String {
    let servers: String = servers
        .iter()
        .map(|(name, addr, weight)| format!("      - {{ name: {name}, address: \"{addr}\", weight: {weight} }}\n"))
        .collect();
    format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
    balance: round_robin
    sticky: {{ cookie: {COOKIE} }}
{extra}    servers:
{servers}"
    )
}

/// Three named servers, `a`, `b` and `c`, each of weight 1.
async fn three() -> (Vec<HttpServer>, Vec<(&'static str, SocketAddr, u32)>) {
    let servers = vec![named_http("a").await, named_http("b").await, named_http("c").await];
    let list = vec![("a", servers[0].addr, 1), ("b", servers[1].addr, 1), ("c", servers[2].addr, 1)];
    (servers, list)
}

/// The value of the sticky cookie a response sets (`None`: it sets none), after
/// checking it is the only Set-Cookie and carries the attributes `attributes`.
fn cookie_set(headers: &HeaderMap, attributes: &str) -> Option<String> {
    let mut lines = headers.get_all("set-cookie").iter();
    let line = lines.next()?.to_str().unwrap().to_string();
    assert!(lines.next().is_none(), "a single Set-Cookie: {headers:?}");
    let rest = line.strip_prefix(&format!("{COOKIE}=")).unwrap_or_else(|| panic!("not the sticky cookie: {line}"));
    let (value, rest) = rest.split_at(rest.find(';').unwrap_or(rest.len()));
    assert_eq!(rest, attributes, "attributes of {line}");
    assert!(!value.is_empty(), "{line}");
    Some(value.to_string())
}

/// One GET `/` with `cookie` (if any): the answering server's name and the sticky
/// value the response sets.
async fn visit(addr: SocketAddr, cookie: Option<&str>) -> (String, Option<String>, HeaderMap) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, headers, body) = get(addr, "/", &headers).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let set = cookie_set(&headers, ATTRIBUTES);
    (String::from_utf8(body.to_vec()).unwrap(), set, headers)
}

/// The sticky value of each server, learnt from fresh visits (round robin
/// reaches every one of the `n` within `n` cookie-less visits).
async fn values(addr: SocketAddr, n: usize) -> HashMap<String, String> {
    let mut values = HashMap::new();
    for _ in 0..n {
        let (server, set, _) = visit(addr, None).await;
        let value = set.unwrap_or_else(|| panic!("a cookie-less request to {server} got no cookie"));
        if let Some(before) = values.insert(server.clone(), value.clone()) {
            assert_eq!(before, value, "{server} named two ways");
        }
    }
    values
}

#[tokio::test]
async fn a_session_stays_on_its_server_and_is_not_told_again() {
    let (servers, list) = three().await;
    let lb = start(&config(&list, "")).await;
    let addr = lb.local_addr("web");
    let (first, value, _) = visit(addr, None).await;
    let value = value.expect("the first response sets the cookie");
    let index = ["a", "b", "c"].iter().position(|n| *n == first).unwrap();
    let before: Vec<usize> = servers.iter().map(|s| s.requests.load(Ordering::SeqCst)).collect();
    let cookie = format!("{COOKIE}={value}");
    for round in 0..20 {
        let (server, set, _) = visit(addr, Some(&cookie)).await;
        assert_eq!(server, first, "request {round} left its server");
        assert_eq!(set, None, "request {round} was told the cookie it sent");
    }
    // Round robin would have given each other server a third of those 20.
    for (i, server) in servers.iter().enumerate() {
        let expected = if i == index { before[i] + 20 } else { before[i] };
        assert_eq!(server.requests.load(Ordering::SeqCst), expected, "requests to server {i}");
    }
    // Without the cookie, the balancing goes on as before: spread, and told.
    let spread = values(addr, 3).await;
    assert_eq!(spread.len(), 3, "round robin without cookies: {spread:?}");
    assert_eq!(spread[&first], value);
}

#[tokio::test]
async fn the_server_sees_the_other_cookies_but_never_the_sticky_one() {
    let (_servers, list) = three().await;
    let lb = start(&config(&list, "")).await;
    let addr = lb.local_addr("web");
    let (first, value, _) = visit(addr, None).await;
    let value = value.unwrap();
    let (server, set, headers) = visit(addr, Some(&format!("a=1; {COOKIE}={value}; b=2"))).await;
    assert_eq!((server.as_str(), set), (first.as_str(), None));
    assert_eq!(headers.get_all("x-seen-cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    // Missing spaces tolerated; the order of the others kept.
    let (_, _, headers) = visit(addr, Some(&format!("z=9;{COOKIE}={value};y=8;x=7"))).await;
    assert_eq!(headers.get_all("x-seen-cookie").iter().collect::<Vec<_>>(), ["z=9; y=8; x=7"]);
    // Nothing else: no Cookie header at all.
    let (server, _, headers) = visit(addr, Some(&format!("{COOKIE}={value}"))).await;
    assert_eq!(server, first);
    assert!(headers.get("x-seen-cookie").is_none(), "{headers:?}");
    // A value naming no server is kept from it too.
    let (_, _, headers) = visit(addr, Some(&format!("{COOKIE}=bogus; a=1"))).await;
    assert_eq!(headers.get_all("x-seen-cookie").iter().collect::<Vec<_>>(), ["a=1"]);
}

#[tokio::test]
async fn an_unknown_value_gets_a_fresh_cookie() {
    let (_servers, list) = three().await;
    let lb = start(&config(&list, "")).await;
    let addr = lb.local_addr("web");
    let known = values(addr, 3).await;
    for bogus in ["bogus", "", "\"\"", "0000000000000000"] {
        let (server, set, _) = visit(addr, Some(&format!("{COOKIE}={bogus}"))).await;
        assert_eq!(set.as_ref(), Some(&known[&server]), "value {bogus:?} answered by {server}");
    }
    // The name is case-sensitive: another cookie, and this one is missing.
    let (server, set, _) = visit(addr, Some(&format!("{}={}", COOKIE.to_lowercase(), known["a"]))).await;
    assert_eq!(set.as_ref(), Some(&known[&server]));
}

#[tokio::test]
async fn instances_with_the_same_config_name_servers_alike() {
    let (servers, list) = three().await;
    let yaml = config(&list, "");
    let (one, two) = (start(&yaml).await, start(&yaml).await);
    let (first, second) = (values(one.local_addr("web"), 3).await, values(two.local_addr("web"), 3).await);
    assert_eq!(first.len(), 3, "{first:?}");
    assert_eq!(first, second, "the two instances disagree");
    let distinct: std::collections::HashSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), 3, "{first:?}");
    for value in first.values() {
        for addr in servers.iter().map(|s| s.addr) {
            assert!(!value.contains(&addr.to_string()) && !value.contains(&addr.ip().to_string()), "{value} {addr}");
        }
    }
    // A session begun on one instance goes on on the other.
    let cookie = format!("{COOKIE}={}", first["b"]);
    let (server, set, _) = visit(two.local_addr("web"), Some(&cookie)).await;
    assert_eq!((server.as_str(), set), ("b", None));
}

#[tokio::test]
async fn a_cookie_naming_a_server_that_refuses_moves_and_is_replaced() {
    let (_servers, list) = three().await;
    let healthy = start(&config(&list, "")).await;
    let known = values(healthy.local_addr("web"), 3).await;
    // The same servers by name, but `b` refuses connections now (no health check:
    // it counts as up, is tried first, and its refusal is retried elsewhere).
    let dead = closed_port().await;
    let broken = [list[0], ("b", dead, 1), list[2]];
    let lb = start(&config(&broken, "    retries: 2\n")).await;
    let cookie = format!("{COOKIE}={}", known["b"]);
    for round in 0..4 {
        let (server, set, _) = visit(lb.local_addr("web"), Some(&cookie)).await;
        assert_ne!(server, "b");
        assert_eq!(set.as_ref(), Some(&known[&server]), "round {round}: the cookie moves to {server}");
    }
}

#[tokio::test]
async fn a_cookie_naming_a_drained_server_moves_after_a_reload() {
    let (servers, list) = three().await;
    let (lb, file) = start_file(&config(&list, "")).await;
    let addr = lb.local_addr("web");
    let known = values(addr, 3).await;
    let cookie = format!("{COOKIE}={}", known["b"]);
    assert_eq!(visit(addr, Some(&cookie)).await.0, "b");
    let drained = [list[0], ("b", list[1].1, 0), list[2]];
    reload_with(&lb, &file, &config(&drained, "")).await;
    let before = servers[1].requests.load(Ordering::SeqCst);
    let mut moved_to = std::collections::HashSet::new();
    for _ in 0..4 {
        let (server, set, _) = visit(addr, Some(&cookie)).await;
        assert_ne!(server, "b", "a drained server took a sticky request");
        assert_eq!(set.as_ref(), Some(&known[&server]), "the cookie moves to {server}");
        moved_to.insert(server);
    }
    assert_eq!(servers[1].requests.load(Ordering::SeqCst), before);
    // With the cookie it was given, the session stays where it moved.
    let (server, value) = (moved_to.iter().next().unwrap(), &known[moved_to.iter().next().unwrap()]);
    let (again, set, _) = visit(addr, Some(&format!("{COOKIE}={value}"))).await;
    assert_eq!((&again, set), (server, None));
}

#[tokio::test]
async fn balancer_made_errors_set_no_cookie() {
    let dead = closed_port().await;
    let lb = start(&config(&[("only", dead, 1)], "")).await;
    for cookie in [None, Some(format!("{COOKIE}=whatever"))] {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        let (status, headers, _) = get(lb.local_addr("web"), "/", &headers).await;
        assert_eq!(status, 502);
        assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    }
}

#[tokio::test]
async fn h2c_clients_split_cookies_over_several_headers() {
    let (_servers, list) = three().await;
    let lb = start(&config(&list, "")).await;
    let (mut sender, _conn) = h2c::<Full<Bytes>>(lb.local_addr("web")).await;
    let mut send = |cookies: &[String]| {
        let mut req = hyper::Request::get("http://h2.example/");
        for cookie in cookies {
            req = req.header("cookie", cookie.as_str());
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let response = sender.send_request(req);
        async move {
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), hyper::Version::HTTP_2);
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (String::from_utf8(body.to_vec()).unwrap(), headers)
        }
    };
    let (first, headers) = send(&[]).await;
    let value = cookie_set(&headers, ATTRIBUTES).expect("a first h2 response sets the cookie");
    let cookies = ["a=1".to_string(), format!("{COOKIE}={value}"), "b=2; c=3".to_string()];
    for round in 0..6 {
        let (server, headers) = send(&cookies).await;
        assert_eq!(server, first, "round {round}");
        assert_eq!(cookie_set(&headers, ATTRIBUTES), None);
        // One line for the HTTP/1.1 server (RFC 9113 8.2.3), in order; the sticky one is gone.
        let seen: Vec<_> = headers.get_all("x-seen-cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(seen, ["a=1; b=2; c=3"]);
    }
    // A request whose only cookie line is the sticky one sends none on.
    let (server, headers) = send(&[format!("{COOKIE}={value}"), format!("{COOKIE}=stale")]).await;
    assert_eq!(server, first);
    assert!(headers.get("x-seen-cookie").is_none(), "{headers:?}");
}

#[tokio::test]
async fn tls_clients_get_a_secure_cookie() {
    let pki = Pki::new();
    let leaf = pki.leaf("site", &["a.test"], false);
    let app = named_http("app").await;
    let yaml = format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app,
       tls: {{certificates: [{{cert: '{}', key: '{}'}}]}} }}
backends:
  - {{ name: app, sticky: {{cookie: {COOKIE}}}, servers: [{{ name: s, address: '{}' }}] }}
",
        leaf.cert.display(),
        leaf.key.display(),
        app.addr
    );
    let lb = start(&yaml).await;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let schemes = provider.signature_verification_algorithms.supported_schemes();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(fulcrum::tls::NoVerification(schemes)))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(lb.local_addr("web")).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/").header("host", "a.test").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(cookie_set(response.headers(), &format!("{ATTRIBUTES}; Secure")).is_some(), "{response:?}");
}
