//! Layer-4 proxying over real loopback sockets.

mod common;

use std::collections::HashMap;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn weighted_round_robin_across_three_servers() {
    let (a, b, c) = (greeter("a").await, greeter("b").await, greeter("c").await);
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends:
  - name: pool
    servers:
      - {{name: a, address: '{a}', weight: 1}}
      - {{name: b, address: '{b}', weight: 1}}
      - {{name: c, address: '{c}', weight: 2}}
"
    ))
    .await;
    let addr = fulcrum.local_addr("db");
    let mut order = Vec::new();
    for _ in 0..40 {
        order.push(read_greeting(addr).await);
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in &order {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    assert_eq!((counts["a"], counts["b"], counts["c"]), (10, 10, 20), "order: {order:?}");
    assert!(order.windows(2).all(|w| !(w[0] == "c" && w[1] == "c")), "c came in a burst: {order:?}");
}

#[tokio::test]
async fn dead_server_is_skipped_by_connect_retry() {
    let dead = closed_port().await;
    let live = greeter("live").await;
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends:
  - name: pool
    retries: 2
    servers:
      - {{name: dead, address: '{dead}'}}
      - {{name: live, address: '{live}'}}
"
    ))
    .await;
    let addr = fulcrum.local_addr("db");
    for _ in 0..10 {
        assert_eq!(read_greeting(addr).await, "live");
    }
    let snapshot = fulcrum.snapshot();
    let dead_state = &snapshot.backends[0].members[0].state;
    assert!(dead_state.connect_errors.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn max_connections_refuses_the_extra_connection() {
    let server = holding_greeter("s").await;
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool, max_connections: 2}}]
backends: [{{name: pool, servers: [{{name: s, address: '{server}'}}]}}]
"
    ))
    .await;
    let addr = fulcrum.local_addr("db");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut line = [0u8; 2];
        stream.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"s\n");
        held.push(stream);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = extra.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the third connection must be closed without reaching the server");
    let stats = &fulcrum.snapshot().frontends[0].stats;
    assert_eq!(stats.rejected_connections.load(std::sync::atomic::Ordering::Relaxed), 1);

    // A slot frees when a held connection closes.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..200 {
        let mut again = TcpStream::connect(addr).await.unwrap();
        let mut line = [0u8; 2];
        if again.read_exact(&mut line).await.is_ok() {
            ok = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(ok, "a freed slot admits a new connection");
}

#[tokio::test]
async fn half_close_still_delivers_the_reply() {
    // The server reads until EOF, then answers with the byte count.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        stream.write_all(format!("got {}", all.len()).as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends: [{{name: pool, servers: [{{name: s, address: '{server}'}}]}}]
"
    ))
    .await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("db")).await.unwrap();
    stream.write_all(b"hello world").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 11");
}

#[tokio::test]
async fn sixteen_mib_each_way_intact() {
    let server = echo().await;
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends: [{{name: pool, servers: [{{name: s, address: '{server}'}}]}}]
"
    ))
    .await;
    let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let expected = Sha256::digest(&payload);
    let stream = TcpStream::connect(fulcrum.local_addr("db")).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), 16 << 20);
    assert_eq!(Sha256::digest(&back), expected);
    let stats = &fulcrum.snapshot().frontends[0].stats;
    assert_eq!(stats.received_bytes.load(std::sync::atomic::Ordering::Relaxed), 16 << 20);
}

#[tokio::test]
async fn no_server_up_closes_the_connection() {
    let dead = closed_port().await;
    let fulcrum = start(&format!(
        "frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends: [{{name: pool, retries: 1, servers: [{{name: dead, address: '{dead}'}}]}}]
"
    ))
    .await;
    assert_eq!(read_greeting(fulcrum.local_addr("db")).await, "");
}

#[tokio::test]
async fn idle_sessions_time_out_and_active_ones_do_not() {
    let server = echo().await;
    let fulcrum = start(&format!(
        "timeouts: {{client: 300ms, server: 300ms}}
frontends: [{{name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool}}]
backends: [{{name: pool, servers: [{{name: e, address: '{server}'}}]}}]
"
    ))
    .await;
    let addr = fulcrum.local_addr("db");
    // Active: a message every 100 ms for 1.2 s (four times the limit) stays open.
    let mut active = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    for round in 0..12 {
        echo_round(&mut active, &format!("tick {round}")).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(1200));
    // Idle: closed by the proxy after the limit, well before the test's own bound.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    echo_round(&mut quiet, "hello").await;
    let went_quiet = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), quiet.read(&mut buf))
        .await
        .expect("idle session never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let idle_for = went_quiet.elapsed();
    assert!(idle_for >= std::time::Duration::from_millis(250), "closed too early: {idle_for:?}");
    assert!(idle_for < std::time::Duration::from_secs(2), "closed late: {idle_for:?}");
}
