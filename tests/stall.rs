//! A server that stops sending in the middle of a response body is given up on
//! after `timeouts.server`: the client's response is cut, the proxy keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers each request with a head promising 100 bytes, sends 10, then goes quiet
/// (keeping the connection open).
async fn stalling_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
                let _ = conn.read(&mut buf).await; // hold until the proxy gives up
            });
        }
    });
    addr
}

#[tokio::test]
async fn stalled_response_body_is_cut_after_the_server_timeout() {
    let (stall, ok) = (stalling_server().await, named_http("ok").await);
    let lb = start(&format!(
        r#"
frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: ok
    routes: [{{ match: {{ path_prefix: /stall }}, backend: stall }}]
backends:
  - {{ name: stall, servers: [{{ name: s, address: "{stall}" }}], timeouts: {{ server: 300ms }} }}
  - {{ name: ok, servers: [{{ name: o, address: "{}" }}] }}
"#,
        ok.addr
    ))
    .await;
    let web = lb.local_addr("web");
    let started = Instant::now();
    let mut client = tokio::net::TcpStream::connect(web).await.unwrap();
    client.write_all(b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "client still waiting after 10 s");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"), "{text}");
    assert!(elapsed >= Duration::from_millis(300), "cut before the timeout: {elapsed:?}");
    // The proxy keeps serving.
    assert_eq!(who(web).await, "200 ok");
    // Nothing of the stalled exchange stays counted as in flight.
    let server = lb.snapshot().backends[0].members[0].state.clone();
    wait_for("the stalled request to be released", Duration::from_secs(5), || server.active() == 0).await;
}
