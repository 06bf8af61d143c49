//! The forward proxy (`frontends[].forward_proxy`) driven through a bare hyper
//! server whose every request goes to `ForwardProxy::serve`: absolute-form
//! forwarding, CONNECT tunnels, and the `allow` / `connect_ports` checks, which
//! are made on the address actually connected to.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fulcrum::config::{AllowList, Config};
use fulcrum::proxy::http::forward_proxy::ForwardProxy;
use fulcrum::proxy::http::ResponseBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A proxy on 127.0.0.1:0 serving every request `wants` accepts (others: 421).
async fn proxy(allow: &[&str], connect_ports: &[u16]) -> SocketAddr {
    let rules = AllowList::parse(&strings(allow)).expect("valid rules");
    let proxy = Arc::new(ForwardProxy::new(rules, connect_ports));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let proxy = Arc::clone(&proxy);
                    async move {
                        if !ForwardProxy::wants(&req) {
                            let mut response = Response::new(ResponseBody::empty());
                            *response.status_mut() = StatusCode::MISDIRECTED_REQUEST;
                            return Ok::<_, Infallible>(response);
                        }
                        Ok(proxy
                            .serve(
                                req,
                                Duration::from_secs(5),
                                Duration::from_secs(30),
                                &tokio_util::task::TaskTracker::new(),
                            )
                            .await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Sends `GET <target>` (absolute form) through the proxy with `headers`.
async fn get_via(proxy: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response<Bytes> {
    let mut sender = client(proxy).await;
    let mut req = Request::get(target);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

/// Sends `CONNECT <target>` on a raw connection; returns the stream (positioned
/// after the response head) and the status code.
async fn connect_via(proxy: SocketAddr, target: &str) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    // Byte by byte: whatever follows the head belongs to the tunnel.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("a response head");
        head.push(byte);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    (stream, status)
}

#[tokio::test]
async fn absolute_form_get_allowed_by_cidr_reaches_the_target_without_proxy_headers() {
    let target = named_http("target").await;
    let proxy = proxy(&["127.0.0.0/8"], &[]).await;
    let url = format!("http://{}/path?q=1", target.addr);
    let response = get_via(
        proxy,
        &url,
        &[("proxy-authorization", "Basic c2VjcmV0"), ("proxy-connection", "keep-alive"), ("x-kept", "yes")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), b"target");
    let seen = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(seen("x-seen-host").as_deref(), Some(target.addr.to_string().as_str()));
    assert_eq!(seen("x-seen-uri").as_deref(), Some("/path?q=1"), "origin form is sent");
    assert_eq!(seen("x-seen-x-kept").as_deref(), Some("yes"));
    assert_eq!(seen("x-seen-proxy-authorization"), None, "credentials for the proxy never leave it");
    assert_eq!(seen("x-seen-proxy-connection"), None);
}

#[tokio::test]
async fn a_destination_outside_allow_is_refused_before_connecting() {
    let target = named_http("target").await;
    let proxy = proxy(&["10.0.0.0/8", "*.example.com"], &[target.addr.port()]).await;
    let response = get_via(proxy, &format!("http://{}/", target.addr), &[]).await;
    assert_eq!(response.status(), 403);
    let (_, status) = connect_via(proxy, &target.addr.to_string()).await;
    assert_eq!(status, 403);
    assert_eq!(target.connections.load(Ordering::SeqCst), 0, "nothing was connected to the target");
}

#[tokio::test]
async fn a_name_rule_admits_its_name_but_an_address_rule_never_admits_a_name_resolving_outside_it() {
    let target = named_http("target").await;
    let url = format!("http://localhost:{}/", target.addr.port());

    // `localhost` named by a rule: admitted whatever it resolves to.
    let by_name = proxy(&["localhost", "10.0.0.0/8"], &[]).await;
    let response = get_via(by_name, &url, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), b"target");
    let host = response.headers().get("x-seen-host").unwrap().to_str().unwrap().to_string();
    assert_eq!(host, format!("localhost:{}", target.addr.port()));
    let before = target.connections.load(Ordering::SeqCst);

    // Not named: its resolved addresses (loopback) are outside 10.0.0.0/8.
    let by_address = proxy(&["other.example", "*.localhost.example", "10.0.0.0/8"], &[]).await;
    assert_eq!(get_via(by_address, &url, &[]).await.status(), 403);
    assert_eq!(target.connections.load(Ordering::SeqCst), before, "nothing was connected to the target");

    // Not named, but resolved into an admitted range: admitted.
    let in_range = proxy(&["127.0.0.0/8", "::1/128"], &[]).await;
    assert_eq!(get_via(in_range, &url, &[]).await.status(), 200);
}

#[tokio::test]
async fn connect_to_an_allowed_port_tunnels_both_ways_and_honours_half_close() {
    let echo = echo().await;
    let proxy = proxy(&["127.0.0.1"], &[echo.port()]).await;
    let (mut tunnel, status) = connect_via(proxy, &echo.to_string()).await;
    assert_eq!(status, 200);
    echo_round(&mut tunnel, "hello through the tunnel").await;
    echo_round(&mut tunnel, "and again").await;
    // Our half-close reaches the echo server, which still answers, then closes:
    // what we sent after the last round comes back, then the end of stream.
    tunnel.write_all(b"last words").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes after both half-closes")
        .unwrap();
    assert_eq!(rest, b"last words");
}

#[tokio::test]
async fn connect_to_a_port_outside_connect_ports_is_refused() {
    let echo = echo().await;
    let proxy = proxy(&["127.0.0.0/8"], &[443]).await;
    let (_, status) = connect_via(proxy, &echo.to_string()).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn malformed_or_unreachable_targets_get_their_status() {
    let closed = closed_port().await;
    let proxy = proxy(&["127.0.0.0/8"], &[closed.port()]).await;
    let (_, status) = connect_via(proxy, &closed.to_string()).await;
    assert_eq!(status, 502, "connect refused");
    assert_eq!(get_via(proxy, &format!("http://{closed}/"), &[]).await.status(), 502);
    let (_, status) = connect_via(proxy, "127.0.0.1").await;
    assert_eq!(status, 400, "CONNECT without a port");
    let (_, status) = connect_via(proxy, "user@127.0.0.1:1").await;
    assert_eq!(status, 400, "userinfo in the target");
}

#[tokio::test]
async fn origin_form_requests_are_not_for_the_proxy() {
    let proxy = proxy(&["127.0.0.0/8"], &[]).await;
    assert_eq!(get(proxy, "/", &[]).await.0, 421);
}

#[test]
fn bad_entries_are_refused_by_name_with_their_key_path() {
    let config = |allow: &str, ports: &str| {
        format!(
            "frontends:\n  - name: out\n    bind: 127.0.0.1:0\n    mode: http\n    forward_proxy: {{allow: {allow}, connect_ports: {ports}}}\n"
        )
    };
    for bad in ["10.0.0.0/33", "fe80::/200", "*.*.example.com", "bad name", "", "a..b"] {
        let err = Config::parse(&config(&format!("[\"127.0.0.1\", {bad:?}]"), "[443]")).unwrap_err().to_string();
        assert!(
            err.contains("frontends[0].forward_proxy.allow") && err.contains(&format!("{bad:?}")),
            "{bad:?}: {err}"
        );
    }
    let err = Config::parse(&config("[\"127.0.0.1\"]", "[443, 0]")).unwrap_err().to_string();
    assert!(err.contains("frontends[0].forward_proxy.connect_ports"), "{err}");
    Config::parse(&config("[\"*.example.com\", \"example.org\", \"10.0.0.0/8\", \"::1/128\", \"fd00::1\"]", "[443]"))
        .expect("valid entries");
}
