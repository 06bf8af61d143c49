//! A reload reaches connections that stay open across it: each request is served
//! on the config current when its head arrives, on HTTP/1.1 keep-alive and h2c
//! connections alike; a server the reload removed gets no new request, and its
//! idle pooled connections are closed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};

fn config(servers: &[(&str, SocketAddr)]) -> String {
    web_config(servers, "")
}

/// The server that answered one request on an open HTTP/1.1 connection.
async fn on_h1(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> String {
    let req = Request::get("/").header("host", "test.local").body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// The server that answered one request on an open h2c connection.
async fn on_h2(sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>) -> String {
    let req = Request::get("http://test.local/").body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Starts s1 and s2 behind Fulcrum and returns the servers' state of s1 once a
/// connection to it sits idle in the pool.
async fn two_servers() -> (fulcrum::instance::Instance, tempfile::NamedTempFile, HttpServer, HttpServer) {
    let (s1, s2) = (named_http("s1").await, named_http("s2").await);
    let (lb, file) = start_file(&config(&[("s1", s1.addr), ("s2", s2.addr)])).await;
    (lb, file, s1, s2)
}

fn server_state(lb: &fulcrum::instance::Instance, name: &str) -> Arc<fulcrum::upstream::ServerState> {
    let snapshot = lb.snapshot();
    let member = snapshot.backends[0].members.iter().find(|m| m.name == name).expect("server in the config");
    Arc::clone(&member.state)
}

#[tokio::test]
async fn keep_alive_connection_follows_a_reload() {
    let (lb, file, s1, s2) = two_servers().await;
    let mut conn = client(lb.local_addr("web")).await;
    let mut seen = vec![on_h1(&mut conn).await, on_h1(&mut conn).await];
    seen.sort();
    assert_eq!(seen, ["s1", "s2"], "both servers in rotation before the reload");
    let s1_state = server_state(&lb, "s1");
    wait_for("s1's connection back in the pool", std::time::Duration::from_secs(5), || s1_state.pool.idle_count() == 1)
        .await;

    reload_with(&lb, &file, &config(&[("s2", s2.addr)])).await;
    assert_eq!(s1_state.pool.idle_count(), 0, "the removed server's idle connection is closed by the reload");
    let s1_requests = s1.requests.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(on_h1(&mut conn).await, "s2", "the same connection's next requests use the new config");
    }
    assert_eq!(s1.requests.load(std::sync::atomic::Ordering::SeqCst), s1_requests);

    // And back: a server added by a reload gets requests on the same connection.
    reload_with(&lb, &file, &config(&[("s1", s1.addr), ("s2", s2.addr)])).await;
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        seen.push(on_h1(&mut conn).await);
    }
    assert!(seen.iter().any(|s| s == "s1"), "s1 is back in rotation: {seen:?}");
}

#[tokio::test]
async fn h2c_connection_follows_a_reload() {
    let (lb, file, s1, s2) = two_servers().await;
    let (mut conn, _driver) = h2c::<Full<Bytes>>(lb.local_addr("web")).await;
    let mut seen = vec![on_h2(&mut conn).await, on_h2(&mut conn).await];
    seen.sort();
    assert_eq!(seen, ["s1", "s2"]);

    reload_with(&lb, &file, &config(&[("s2", s2.addr)])).await;
    let s1_requests = s1.requests.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..6 {
        assert_eq!(on_h2(&mut conn).await, "s2", "new streams on the same connection use the new config");
    }
    assert_eq!(s1.requests.load(std::sync::atomic::Ordering::SeqCst), s1_requests);
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let slow = slow_http(std::time::Duration::from_secs(1)).await;
    let fast = named_http("fast").await;
    let (lb, file) = start_file(&config(&[("slow", slow)])).await;
    let web = lb.local_addr("web");
    let mut conn = client(web).await;
    let req = Request::get("/late").header("host", "test.local").body(Full::new(Bytes::new())).unwrap();
    let pending = tokio::spawn(async move {
        let resp = conn.send_request(req).await.unwrap();
        let status = resp.status();
        let _ = resp.into_body().collect().await.unwrap();
        (status, conn)
    });
    let slow_state = server_state(&lb, "slow");
    wait_for("the request to reach the slow server", std::time::Duration::from_secs(5), || slow_state.active() == 1)
        .await;
    reload_with(&lb, &file, &config(&[("fast", fast.addr)])).await;
    let (status, mut conn) = pending.await.unwrap();
    assert_eq!(status, 200, "the removed server still answers the request it had");
    assert_eq!(on_h1(&mut conn).await, "fast");
    assert_eq!(slow_state.pool.idle_count(), 0, "a removed server's connection is not pooled again");
}

#[tokio::test]
async fn a_listener_removed_by_a_reload_closes_its_kept_alive_connections() {
    let s1 = named_http("s1").await;
    let two = format!(
        "{}  - {{ name: old, bind: 127.0.0.2:0, mode: http, default_backend: app }}\n",
        config(&[("s1", s1.addr)]).split("backends:").next().unwrap()
    ) + "backends:"
        + config(&[("s1", s1.addr)]).split("backends:").nth(1).unwrap();
    let (lb, file) = start_file(&two).await;
    let stream = tokio::net::TcpStream::connect(lb.local_addr("old")).await.unwrap();
    let (mut conn, driver) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(driver);
    assert_eq!(on_h1(&mut conn).await, "s1");
    reload_with(&lb, &file, &config(&[("s1", s1.addr)])).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the idle connection on the removed listener is closed");
}

#[tokio::test]
async fn a_listener_turned_tcp_answers_the_next_request_and_closes() {
    let s1 = named_http("s1").await;
    let (lb, file) = start_file(&config(&[("s1", s1.addr)])).await;
    let stream = tokio::net::TcpStream::connect(lb.local_addr("web")).await.unwrap();
    let (mut conn, driver) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let driver = tokio::spawn(driver);
    assert_eq!(on_h1(&mut conn).await, "s1");
    reload_with(&lb, &file, &config(&[("s1", s1.addr)]).replace("mode: http", "mode: tcp")).await;
    let req = Request::get("/").header("host", "test.local").body(Full::new(Bytes::new())).unwrap();
    let resp = conn.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "the request is still served, on the config it was accepted with");
    assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "then the connection closes");
}
