//! A client that writes a request's head and body apart with Nagle on (many HTTP
//! client libraries do for uploads) waits for our ACK of the head before it sends
//! the body. Fulcrum ACKs at once while a request is incomplete, as HAProxy does,
//! instead of leaving it to the kernel's delayed ACK (40 ms per request).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn an_upload_written_as_head_then_body_is_not_held_back() {
    let app = named_http("app").await;
    let lb = start(&web_config(&[("a", app.addr)], "")).await;
    // Nagle stays on (tokio's default): the body waits for the ACK of the head.
    let mut stream = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let mut took = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        stream.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n").await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let reply = read_response(&mut stream).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(20), "median {median:?} per upload: held back by a delayed ACK ({took:?})");
}
