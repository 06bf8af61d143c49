//! A server that writes its response head and body in two writes, with Nagle on
//! (Python's http.server and many small app servers do), must not cost a delayed
//! ACK (~40 ms) per request on a reused pooled server connection.
//!
//! The server sends the head; Nagle holds the body until the head is ACKed; the
//! balancer, with nothing to send back, would delay that ACK. Direct requests
//! on fresh connections are the control: a fresh socket ACKs at once. Other
//! ways of splitting a response (head in pieces, body in pieces, head with part
//! of the body) are checked too; see `src/proxy/quick_ack.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests timed each way (through the balancer, the first opens the pooled connection).
const REQUESTS: usize = 21;

/// Median latency bound: a delayed ACK costs at least 40 ms (Linux's minimum
/// delayed-ACK timeout), an ACK sent at once well under a millisecond on
/// loopback; 20 ms leaves room for a loaded machine.
const MEDIAN_LIMIT: Duration = Duration::from_millis(20);

/// An HTTP/1.1 keep-alive server that answers each request with `writes`, one
/// write each; Nagle, left on as by default, holds a write back while what was
/// sent before is not ACKed. Counts the connections it accepts.
async fn split_writes_server(writes: Vec<Vec<u8>>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let writes = Arc::new(writes);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let writes = Arc::clone(&writes);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One bodiless request head at a time (the test only sends GETs).
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(n) if n > 0 => pending.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    };
                    let request = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    pending.drain(..end);
                    for write in writes.iter() {
                        if stream.write_all(write).await.is_err() {
                            return;
                        }
                    }
                    if request.contains("connection: close") {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

/// A response head announcing `length` body bytes.
fn head(length: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n").into_bytes()
}

/// One GET on a new connection to `addr`, read to the end and checked against
/// `body`; returns its latency.
async fn timed_get(addr: SocketAddr, body: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("reply within 5 s")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    assert!(reply.ends_with(body), "{}", String::from_utf8_lossy(&reply));
    elapsed
}

/// `REQUESTS` sequential GETs, each on a new connection; their median latency and all of them.
async fn median_of_gets(addr: SocketAddr, body: &[u8]) -> (Duration, Vec<Duration>) {
    let mut all = Vec::new();
    for _ in 0..REQUESTS {
        all.push(timed_get(addr, body).await);
    }
    let mut sorted = all.clone();
    sorted.sort();
    (sorted[sorted.len() / 2], all)
}

/// Asserts that a server writing its response in `writes`, whose body ends
/// with `body`, answers through Fulcrum, over one reused server connection,
/// without delayed-ACK stalls.
async fn fast_through_reused_connection(writes: Vec<Vec<u8>>, body: &[u8]) {
    let (server, connections) = split_writes_server(writes).await;

    // Control: the server itself answers fast (a fresh connection ACKs at once).
    let (direct, _) = median_of_gets(server, body).await;
    assert!(
        direct < MEDIAN_LIMIT / 4,
        "cannot judge: the server answers slowly even directly (median {direct:?}); machine overloaded?"
    );
    assert_eq!(connections.swap(0, Ordering::SeqCst), REQUESTS);

    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let (median, all) = median_of_gets(fulcrum.local_addr("web"), body).await;
    let opened = connections.load(Ordering::SeqCst);
    println!("direct median {direct:?}; through Fulcrum median {median:?}, {opened} server connection(s): {all:?}");
    assert!(
        opened * 4 <= REQUESTS,
        "the test needs a reused server connection: {opened} server connections for {REQUESTS} requests"
    );
    let slow = all.iter().filter(|t| **t >= Duration::from_millis(35)).count();
    assert!(
        median < MEDIAN_LIMIT,
        "through Fulcrum: median {median:?} per request ({slow} of {REQUESTS} took 35 ms or more; direct median \
         {direct:?}): the balancer delays its ACKs, so the server's Nagle holds back the rest of the response. \
         All: {all:?}"
    );
}

#[tokio::test]
async fn head_and_body_in_two_writes() {
    // Python's http.server: the ACK of the head is sent as soon as it is read.
    let body = b"hello from a server that writes head and body apart\n";
    fast_through_reused_connection(vec![head(body.len()), body.to_vec()], body).await;
}

#[tokio::test]
async fn head_then_body_in_several_equal_writes() {
    // After the head, every piece waits for the ACK of what came before it
    // (pieces written meanwhile leave together).
    let pieces: Vec<Vec<u8>> = (b'a'..=b'e').map(|c| vec![c; 1000]).collect();
    let body = pieces.concat();
    fast_through_reused_connection([vec![head(body.len())], pieces].concat(), &body).await;
}

#[tokio::test]
async fn head_in_pieces() {
    // Status line, headers, body: each waits for the ACK of the one before.
    let body = b"split head\n";
    let head = head(body.len());
    let (status_line, headers) = head.split_at(b"HTTP/1.1 200 OK\r\n".len());
    fast_through_reused_connection(vec![status_line.to_vec(), headers.to_vec(), body.to_vec()], body).await;
}
