//! Signals to the real binary: SIGHUP reloads the file; SIGTERM stops accepting at
//! once, lets the in-flight request finish, closes idle keep-alive connections, and
//! exits 0; a second SIGTERM exits without waiting.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// An app server that holds each request until the test releases it.
async fn held_server() -> (std::net::SocketAddr, mpsc::Receiver<oneshot::Sender<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let (release, released) = oneshot::channel();
                arrived.send(release).await.unwrap();
                released.await.unwrap();
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await.unwrap();
            });
        }
    });
    (addr, rx)
}

async fn read_response(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if text.contains("\r\n\r\n") && text.ends_with("slow") || text.ends_with("ok") {
            break;
        }
    }
    String::from_utf8(reply).unwrap()
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_refuses_new_connections_and_exits_zero() {
    let (app, mut arrivals) = held_server().await;
    let quick = common::named_http("ok").await;
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fulcrum.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
timeouts: {{ drain: 10s }}
frontends:
  - name: web
    bind: 127.0.0.1:{port}
    mode: http
    default_backend: quick
    routes: [{{ match: {{ path_prefix: /slow }}, backend: held }}]
backends:
  - {{ name: held, servers: [{{ name: h, address: "{app}" }}] }}
  - {{ name: quick, servers: [{{ name: q, address: "{}" }}] }}
"#,
            quick.addr
        ),
    )
    .unwrap();
    let child = common::spawn_fulcrum(&["run".as_ref(), "--config".as_ref(), config.as_os_str()], port).await;
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut idle = TcpStream::connect(front).await.unwrap();
    // A keep-alive connection that answered once and then sits idle.
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));

    let mut slow = TcpStream::connect(front).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let release = arrivals.recv().await.expect("slow request reached the app");

    common::signal(&child, libc::SIGTERM);

    // New connections are refused at once...
    let mut refused = false;
    for _ in 0..400 {
        if TcpStream::connect(front).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    // ...the idle keep-alive connection is closed...
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("idle connection closed");
    assert_eq!(n.unwrap_or(0), 0, "idle connection got bytes instead of a close");
    // ...and the in-flight request still completes.
    release.send(()).unwrap();
    let reply = read_response(&mut slow).await;
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("slow"), "{reply}");

    let status = common::exit_status(child).await;
    assert!(status.success(), "exit status {status}");
}

/// Starts `fulcrum run` on `yaml` written into `dir`, once `port` accepts.
async fn run_binary(dir: &std::path::Path, yaml: &str, port: u16) -> std::process::Child {
    let config = dir.join("fulcrum.yaml");
    std::fs::write(&config, yaml).unwrap();
    common::spawn_fulcrum(&["run".as_ref(), "--config".as_ref(), config.as_os_str()], port).await
}

fn config_for(port: u16, name: &str, server: std::net::SocketAddr) -> String {
    format!(
        "frontends:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, default_backend: app }}\nbackends:\n  - {{ name: app, servers: [{{ name: {name}, address: \"{server}\" }}] }}\n"
    )
}

#[tokio::test]
async fn sighup_reloads_the_file_and_keeps_serving_on_a_bad_one() {
    let (a, b) = (common::named_http("a").await, common::named_http("b").await);
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = run_binary(dir.path(), &config_for(port, "a", a.addr), port).await;
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(common::who(front).await, "200 a");

    std::fs::write(dir.path().join("fulcrum.yaml"), config_for(port, "b", b.addr)).unwrap();
    common::signal(&child, libc::SIGHUP);
    let mut switched = false;
    for _ in 0..400 {
        if common::who(front).await == "200 b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(switched, "SIGHUP did not apply the new file");

    // A broken file: the running config stays.
    std::fs::write(dir.path().join("fulcrum.yaml"), "frontends: [").unwrap();
    common::signal(&child, libc::SIGHUP);
    for _ in 0..20 {
        assert_eq!(common::who(front).await, "200 b");
    }
    common::signal(&child, libc::SIGTERM);
    let status = common::exit_status(child).await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_second_sigterm_exits_without_waiting_for_the_drain() {
    let (app, mut arrivals) = held_server().await;
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("timeouts: {{ drain: 60s }}\n{}", config_for(port, "held", app));
    let child = run_binary(dir.path(), &yaml, port).await;
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let _release = arrivals.recv().await.expect("request reached the app");
    common::signal(&child, libc::SIGTERM);
    // Wait until the first signal is being handled (the listener closes), then send the second.
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    common::signal(&child, libc::SIGTERM);
    let started = std::time::Instant::now();
    common::exit_status(child).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "second signal did not cut the 60 s drain ({waited:?})");
}
