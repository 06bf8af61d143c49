//! The real binary with `--threads 3`: connections spread over per-core worker
//! runtimes, each with its own server-connection pool, and drain still works.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_keep_alive_clients_and_drain() {
    let app = common::named_http("app").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fulcrum.yaml");
    std::fs::write(
        &config,
        format!(
            "frontends:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, default_backend: app }}\nbackends:\n  - {{ name: app, servers: [{{ name: a, address: \"{}\" }}] }}\n",
            app.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["run", "--threads", "3", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut up = false;
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(front).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!("fulcrum did not start");
    }

    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 50;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut sender = common::client(front).await;
                let mut ok = 0;
                for _ in 0..PER_CLIENT {
                    sender.ready().await.unwrap();
                    let req = hyper::Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    let status = resp.status();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    if status == 200 && body == "app" {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for client in clients {
        ok += client.await.unwrap();
    }
    assert_eq!(ok, CLIENTS * PER_CLIENT);
    assert_eq!(app.requests.load(Ordering::SeqCst), CLIENTS * PER_CLIENT);
    // Keep-alive to the server on every worker: at most one server connection per
    // client connection, far fewer than requests.
    let server_connections = app.connections.load(Ordering::SeqCst);
    assert!(server_connections <= CLIENTS, "{server_connections} server connections for {CLIENTS} clients");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}
