//! Graceful shutdown of the real binary: SIGTERM stops accepting at once, lets the
//! in-flight request finish, closes idle keep-alive connections, and exits 0.

mod common;

use std::process::{Command, Stdio};
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    let port = free_port();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut connected = None;
    for _ in 0..400 {
        if let Ok(stream) = TcpStream::connect(front).await {
            connected = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut idle = connected.expect("fulcrum listening");
    // A keep-alive connection that answered once and then sits idle.
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));

    let mut slow = TcpStream::connect(front).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let release = arrivals.recv().await.expect("slow request reached the app");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };

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

    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}
