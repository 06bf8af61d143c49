//! An HTTP/1.1 keep-alive connection between requests holds no request state and
//! no buffer: hyper's connection ends when the client has been idle for a second
//! and a new one starts with the next request. A plain one meanwhile waits in its
//! worker's park, with no task: so does one that has not sent its first byte yet.
//! These tests show it happens (the frontend's `idle_connections` gauge, the
//! parked count) and that nothing of HTTP changes across it.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: std::net::SocketAddr, timeouts: &str) -> String {
    web_config(&[("s", server)], &format!("timeouts: {timeouts}"))
}

fn idle(lb: &fulcrum::instance::Instance) -> u64 {
    lb.snapshot().frontends[0].stats.idle_connections.load(Ordering::SeqCst)
}

async fn wait_idle(lb: &fulcrum::instance::Instance, count: u64) {
    wait_for(&format!("{count} idle connection(s)"), Duration::from_secs(5), || idle(lb) == count).await;
}

/// Reads from `stream` until `text` has arrived (at most 5 s).
async fn read_until(stream: &mut TcpStream, text: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&got).contains(text) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} not received; got {:?}", String::from_utf8_lossy(&got)));
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_keep_alive_connection_between_requests_is_idle_and_serves_the_next() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let mut conn = client(lb.local_addr("web")).await;
    for round in 0..3 {
        let req = hyper::Request::post("/upload").header("host", "x").body(Full::new(Bytes::from("payload"))).unwrap();
        let resp = conn.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "app");
        wait_idle(&lb, 1).await;
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), 3);
    drop(conn);
    wait_idle(&lb, 0).await;
}

#[tokio::test]
async fn pipelined_requests_and_a_split_head_after_idle_are_served_in_order() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let mut stream = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    stream.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let got = read_until(&mut stream, "x-seen-uri: /2").await;
    assert!(got.find("x-seen-uri: /1").unwrap() < got.find("x-seen-uri: /2").unwrap(), "{got}");
    wait_idle(&lb, 1).await;
    // The next head arrives in two pieces: the first one wakes the connection.
    stream.write_all(b"GET /3 HTTP/1.1\r\nho").await.unwrap();
    wait_idle(&lb, 0).await;
    stream.write_all(b"st: x\r\n\r\n").await.unwrap();
    read_until(&mut stream, "x-seen-uri: /3").await;
    assert_eq!(app.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn idle_limits_still_apply_after_a_connection_went_idle() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{request_header: 300ms, client: 1500ms}")).await;
    let addr = lb.local_addr("web");
    // Idle past `client`, set aside on the way: closed without a response, counted as idle.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_until(&mut stream, "app").await;
    wait_idle(&lb, 1).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
    // A head started after the idle wait and then stalled: 408 from request_header.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_until(&mut stream, "app").await;
    wait_idle(&lb, 1).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let got = read_until(&mut stream, "408").await;
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    let counters = &lb.snapshot().frontends[0].stats.client_timeouts;
    assert_eq!(counters.idle.load(Ordering::SeqCst), 1);
    assert_eq!(counters.head.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn h2c_connections_are_never_counted_idle() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let (mut sender, _conn) = h2c::<Full<Bytes>>(lb.local_addr("web")).await;
    let resp = sender.send_request(hyper::Request::get("http://x/").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(resp.unwrap().status(), 200);
    assert_eq!(idle(&lb), 0);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let mut stream = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_until(&mut stream, "app").await;
    wait_idle(&lb, 1).await;
    assert!(tokio::time::timeout(Duration::from_secs(5), lb.shutdown()).await.unwrap(), "drained at once");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

fn parked(lb: &fulcrum::instance::Instance, count: usize) -> impl FnMut() -> bool + '_ {
    move || lb.parked_connections() == count
}

#[tokio::test]
async fn idle_plain_connections_wait_parked_and_wake_for_each_request() {
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let mut stream = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    wait_for("parked from the accept", Duration::from_secs(5), parked(&lb, 1)).await;
    assert_eq!(lb.open_connections(), 1, "a parked connection is still open");
    assert_eq!(idle(&lb), 0, "no request yet: not a kept-alive idle connection");
    for round in 0..3 {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let got = read_until(&mut stream, "app").await;
        assert!(got.starts_with("HTTP/1.1 200 "), "round {round}: {got}");
        wait_for("parked after the request", Duration::from_secs(5), parked(&lb, 1)).await;
        assert_eq!(idle(&lb), 1, "round {round}");
        assert_eq!(lb.open_connections(), 1, "round {round}");
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), 3);
    drop(stream);
    wait_for("closed", Duration::from_secs(5), || lb.open_connections() == 0).await;
    assert_eq!((lb.parked_connections(), idle(&lb)), (0, 0));
}

#[tokio::test]
async fn many_parked_connections_waking_at_once_are_all_served() {
    // More than one batch of the epoll set's readiness.
    const CLIENTS: usize = 300;
    let app = named_http("app").await;
    let lb = start(&config(app.addr, "{client: 30s}")).await;
    let addr = lb.local_addr("web");
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for("all parked", Duration::from_secs(10), parked(&lb, CLIENTS)).await;
    for stream in &mut streams {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        let got = read_until(stream, "app").await;
        assert!(got.starts_with("HTTP/1.1 200 "), "client {index}: {got}");
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), CLIENTS);
    wait_for("all parked again", Duration::from_secs(10), parked(&lb, CLIENTS)).await;
    assert_eq!(idle(&lb), CLIENTS as u64);
}

#[tokio::test]
async fn a_reload_that_removes_the_listener_closes_its_parked_connections() {
    let app = named_http("app").await;
    let yaml = config(app.addr, "{client: 30s}");
    let (lb, file) = start_file(&yaml).await;
    let addr = lb.local_addr("web");
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_until(&mut kept_alive, "app").await;
    wait_for("both parked", Duration::from_secs(5), parked(&lb, 2)).await;
    // The frontend moves to another address: the old listener stops.
    let port = free_port();
    reload_with(&lb, &file, &yaml.replace("bind: 127.0.0.1:0", &format!("bind: 127.0.0.1:{port}"))).await;
    for (name, stream) in [("fresh", &mut fresh), ("kept alive", &mut kept_alive)] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("{name}: still open"))
            .unwrap();
        assert!(rest.is_empty(), "{name}: {}", String::from_utf8_lossy(&rest));
    }
    wait_for("none parked", Duration::from_secs(5), parked(&lb, 0)).await;
    assert_eq!(idle(&lb), 0);
}
