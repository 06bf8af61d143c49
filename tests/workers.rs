//! The real binary with `--threads 3`: connections spread over per-core worker
//! runtimes, each with its own server-connection pool, and drain still works.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_serve_keep_alive_clients_and_drain() {
    let app = common::named_http("app").await;
    let port = common::free_port();
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
    let args = ["run".as_ref(), "--threads".as_ref(), "3".as_ref(), "--config".as_ref(), config.as_os_str()];
    let child = common::spawn_fulcrum(&args, port).await;
    let front = std::net::SocketAddr::from(([127, 0, 0, 1], port));

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

    common::signal(&child, libc::SIGTERM);
    let status = common::exit_status(child).await;
    assert!(status.success(), "{status}");
}

/// Long-lived connections split evenly between two workers whatever the kernel's
/// SO_REUSEPORT hash does: an accept loop hands a connection to the other worker
/// when that one has fewer open.
#[tokio::test]
async fn long_lived_connections_are_balanced_over_the_workers() {
    let app = common::named_http("app").await;
    let (_dir, config) = common::config_file(&common::web_config(&[("a", app.addr)], ""));
    let workers = fulcrum::workers::Workers::start(2).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&config, workers).await.unwrap();
    let front = lb.local_addr("web");
    let mut open = Vec::new();
    for _ in 0..64 {
        let mut sender = common::client(front).await;
        let req = hyper::Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "app");
        open.push(sender);
    }
    assert_eq!(lb.worker_loads(), [32, 32]);
    drop(open);
    common::wait_for("the connections to close", std::time::Duration::from_secs(5), || lb.worker_loads() == [0, 0])
        .await;
}
