//! `backends[].retry_on`: what else than a failed connect sends a request to
//! another server — a reset, a timeout, a 502/503/504 answer — for idempotent
//! requests without a body only, each retry counted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server that reads a request and then closes without a word (`answer: false`)
/// or never answers at all (`answer: true` keeps the connection open, silent).
async fn broken(silent: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if silent {
                        let _ = stream.read(&mut buf).await;
                    } else {
                        let _ = stream.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn yaml(first: SocketAddr, second: SocketAddr, extra: &str) -> String {
    format!(
        "frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n{extra}    servers:\n      - {{ name: first, address: \"{first}\" }}\n      - {{ name: second, address: \"{second}\" }}\n"
    )
}

fn retries(lb: &fulcrum::instance::Instance) -> u64 {
    lb.snapshot().backends[0].stats.retries.load(Ordering::SeqCst)
}

async fn post(addr: SocketAddr) -> (u16, Bytes) {
    use http_body_util::BodyExt;
    let mut sender = client(addr).await;
    let req = hyper::Request::post("/").header("host", "x").body(Full::new(Bytes::from("data"))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_503_is_retried_on_another_server_for_get_but_not_for_post() {
    let (bad, good) = (answering("bad", 503).await, answering("good", 200).await);
    let lb = start(&yaml(bad.addr, good.addr, "    retry_on: [connect_failure, \"503\"]\n")).await;
    let addr = lb.local_addr("web");
    for n in 0..4 {
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!((status, &body[..]), (200, &b"good"[..]), "GET {n}");
    }
    // Round robin alternates, and each retry takes a turn: every GET tried it first.
    assert_eq!(bad.requests.load(Ordering::SeqCst), 4);
    assert_eq!(retries(&lb), 4);
    // A POST may not be sent twice: the server's 503 is the answer.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(post(addr).await);
    }
    assert!(statuses.contains(&(503, Bytes::from("bad"))), "{statuses:?}");
    assert_eq!(retries(&lb), 4, "no retry for POST");
}

#[tokio::test]
async fn with_no_other_server_the_servers_own_answer_stands() {
    let (a, b) = (answering("a", 503).await, answering("b", 503).await);
    let lb = start(&yaml(a.addr, b.addr, "    retry_on: [\"503\"]\n    retries: 3\n")).await;
    let (status, _, body) = get(lb.local_addr("web"), "/", &[]).await;
    assert_eq!(status, 503);
    assert!(body == "a" || body == "b", "a server's answer, not one made by the balancer: {body:?}");
    assert_eq!(a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst), 2, "each server once");
}

#[tokio::test]
async fn a_reset_is_retried_when_listed_and_a_502_otherwise() {
    let (reset, seen) = broken(false).await;
    let good = answering("good", 200).await;
    let lb = start(&yaml(reset, good.addr, "    retry_on: [connect_failure, reset]\n")).await;
    let addr = lb.local_addr("web");
    for _ in 0..4 {
        assert_eq!(get(addr, "/", &[]).await.2, "good");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    assert_eq!(retries(&lb), 4);
    let lb = start(&yaml(reset, good.addr, "")).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..2 {
            out.push(get(lb.local_addr("web"), "/", &[]).await.0);
        }
        out
    };
    assert!(statuses.contains(&502), "not listed: the reset is the answer: {statuses:?}");
}

#[tokio::test]
async fn a_timeout_is_retried_when_listed() {
    let (silent, seen) = broken(true).await;
    let good = answering("good", 200).await;
    let extra = "    retry_on: [timeout]\n    timeouts: { server: 300ms }\n";
    let lb = start(&yaml(silent, good.addr, extra)).await;
    let addr = lb.local_addr("web");
    for _ in 0..2 {
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), get(addr, "/", &[])).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"good"[..]));
    }
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(retries(&lb), 2);
}

#[tokio::test]
async fn connect_failures_are_not_retried_when_retry_on_leaves_them_out() {
    let closed = closed_port().await;
    let good = answering("good", 200).await;
    let lb = start(&yaml(closed, good.addr, "    retry_on: [\"503\"]\n")).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(get(lb.local_addr("web"), "/", &[]).await.0);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
}

#[test]
fn check_takes_statuses_as_numbers_or_strings_and_names_a_wrong_one() {
    let parse = |list: &str| {
        let text =
            yaml("127.0.0.1:9".parse().unwrap(), "127.0.0.1:10".parse().unwrap(), &format!("    retry_on: {list}\n"));
        fulcrum::config::Config::parse(&text).err().map(|e| e.to_string())
    };
    assert_eq!(parse("[connect_failure, reset, timeout, \"502\", 503, 504]"), None);
    let err = parse("[500]").unwrap();
    assert!(err.contains("retry_on") && err.contains("500"), "{err}");
}
