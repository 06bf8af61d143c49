//! `frontends[].rate_limit`: a token bucket per client address; beyond it, 429
//! with Retry-After, counted, and other clients unaffected.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /` on a connection from `source` (a 127.0.0.0/8 address); the response head.
async fn get_from(source: [u8; 4], addr: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.split("\r\n\r\n").next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_retry_after_and_others_do_not() {
    let app = named_http("app").await;
    let yaml = web_config(&[("app", app.addr)], "")
        .replace("default_backend: app }", "default_backend: app, rate_limit: {requests: 1, per: 10s, burst: 3} }");
    let lb = start(&yaml).await;
    let addr = lb.local_addr("web");
    for n in 0..3 {
        let head = get_from([127, 0, 0, 2], addr).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "request {n} of the burst: {head}");
    }
    let head = get_from([127, 0, 0, 2], addr).await;
    assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .unwrap_or_else(|| panic!("no Retry-After: {head}"))
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "one token per 10 s: {retry_after}");
    // Another address has a bucket of its own.
    assert!(get_from([127, 0, 0, 3], addr).await.starts_with("HTTP/1.1 200 "));
    let stats = &lb.snapshot().frontends[0].stats;
    assert_eq!(stats.rate_limited.load(Ordering::SeqCst), 1);
    assert_eq!(stats.responses[3].load(Ordering::SeqCst), 1, "the 429 is counted as a 4xx");
    assert_eq!(app.requests.load(Ordering::SeqCst), 4, "the limited request never reached the server");
}

#[tokio::test]
async fn the_buckets_survive_a_reload() {
    let app = named_http("app").await;
    let yaml = web_config(&[("app", app.addr)], "")
        .replace("default_backend: app }", "default_backend: app, rate_limit: {requests: 1, per: 1h} }");
    let (lb, file) = start_file(&yaml).await;
    let addr = lb.local_addr("web");
    assert!(get_from([127, 0, 0, 4], addr).await.starts_with("HTTP/1.1 200 "));
    reload_with(&lb, &file, &yaml).await;
    assert!(get_from([127, 0, 0, 4], addr).await.starts_with("HTTP/1.1 429 "), "no fresh burst after a reload");
}

#[test]
fn check_wants_rate_limits_on_http_frontends_with_sane_numbers() {
    let base = "frontends:\n  - { name: f, bind: 127.0.0.1:0, mode: MODE, default_backend: b, rate_limit: LIMIT }\n\
                backends:\n  - { name: b, servers: [{ name: s, address: 127.0.0.1:9 }] }\n";
    let check = |mode: &str, limit: &str| {
        fulcrum::config::Config::parse(&base.replace("MODE", mode).replace("LIMIT", limit)).err().map(|e| e.to_string())
    };
    assert_eq!(check("http", "{requests: 100, per: 1s, burst: 200, key: source_ip}"), None);
    assert_eq!(check("http", "{requests: 100}"), None);
    let err = check("tcp", "{requests: 100}").unwrap();
    assert!(err.contains("frontends[0].rate_limit") && err.contains("http"), "{err}");
    let err = check("http", "{requests: 0}").unwrap();
    assert!(err.contains("frontends[0].rate_limit.requests"), "{err}");
    let err = check("http", "{requests: 5, per: 0s}").unwrap();
    assert!(err.contains("frontends[0].rate_limit.per"), "{err}");
    let err = check("http", "{requests: 5, key: cookie}").unwrap();
    assert!(err.contains("key"), "{err}");
}
