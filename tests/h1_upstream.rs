//! HTTP/1.1 to servers, as our own client speaks it: every response framing,
//! a pooled connection the server closed, a request lost on a reused connection
//! (a GET sent again, a POST not), a server answering before it read the
//! upload, bytes right after a 101, and responses that cannot be trusted.
//!
//! The servers here are scripted on raw sockets, so each test controls exactly
//! which bytes arrive, in how many writes, and when the connection ends.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{client, raw, start, web_config};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Reads one request head (through its blank line) from `stream`; `None` at
/// the end of the stream. Bytes past the head are left unread when possible.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A server whose every connection runs `script`; returns its address and a
/// count of connections accepted.
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream));
        }
    });
    (addr, accepted)
}

/// Writes `bytes` one at a time: every parser state meets a boundary.
async fn trickle(stream: &mut TcpStream, bytes: &[u8]) {
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return;
        }
    }
}

/// A client connection whose request bodies stream (no length known up front).
async fn streaming_client(front: SocketAddr) -> hyper::client::conn::http1::SendRequest<Streamed> {
    let stream = TcpStream::connect(front).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

type Streamed = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// A body of `pieces`, each its own frame, of no announced length.
fn streamed(pieces: Vec<Bytes>) -> Streamed {
    let frames = pieces.into_iter().map(|piece| Ok(hyper::body::Frame::data(piece)));
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

async fn get_body(front: SocketAddr, path: &str) -> (u16, Bytes) {
    let mut sender = client(front).await;
    let req = Request::get(path).header("host", "test.local").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn responses_in_every_framing_arrive_whole_however_they_are_written() {
    let (server, accepted) = scripted(|mut stream| async move {
        while let Some(head) = read_head(&mut stream).await {
            let path = head.split(' ').nth(1).unwrap_or("").to_owned();
            match path.as_str() {
                "/length" => trickle(&mut stream, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world").await,
                "/chunked" => {
                    let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n";
                    trickle(&mut stream, reply).await
                }
                "/interim" => {
                    trickle(&mut stream, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n").await;
                    trickle(&mut stream, b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninterim").await
                }
                _ => {
                    // No length: the body ends when the connection does.
                    trickle(&mut stream, b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                    return;
                }
            }
        }
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let front = fulcrum.local_addr("web");
    assert_eq!(get_body(front, "/length").await, (200, Bytes::from_static(b"hello world")));
    assert_eq!(get_body(front, "/chunked").await, (200, Bytes::from_static(b"hello world")));
    assert_eq!(get_body(front, "/interim").await, (200, Bytes::from_static(b"interim")));
    // Three responses of known end: one server connection, reused.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(get_body(front, "/close").await, (200, Bytes::from_static(b"until the end")));
    // That connection is spent: the next request opens another.
    assert_eq!(get_body(front, "/length").await, (200, Bytes::from_static(b"hello world")));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_not_used_for_the_next_request() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let (server, accepted) = scripted(move |mut stream| {
        let closed = closed_tx.clone();
        async move {
            while let Some(head) = read_head(&mut stream).await {
                if head.starts_with("POST") {
                    let mut body = [0u8; 4];
                    stream.read_exact(&mut body).await.unwrap();
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                if head.starts_with("GET /then-close") {
                    // Keep-alive said, and then the server's idle close.
                    drop(stream);
                    let _ = closed.send(());
                    return;
                }
            }
        }
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let front = fulcrum.local_addr("web");
    assert_eq!(get_body(front, "/then-close").await.0, 200);
    closed_rx.recv().await.unwrap();
    // A POST may not be replayed: had the dead connection been taken from the
    // pool, the request would have been lost on it (502).
    let mut sender = client(front).await;
    let req = Request::post("/").header("host", "test.local").body(Full::new(Bytes::from_static(b"data"))).unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A server that answers a connection's first request and takes the second
/// without answering it (it reads it, then closes): what a server whose idle
/// limit ran out just as the request arrived looks like. Every request head it
/// reads goes to the receiver.
async fn answers_once_per_connection() -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<String>) {
    let (heads_tx, heads) = mpsc::unbounded_channel();
    let (addr, accepted) = scripted(move |mut stream| {
        let heads = heads_tx.clone();
        async move {
            let mut answered = false;
            while let Some(head) = read_head(&mut stream).await {
                if head.starts_with("POST") {
                    let mut body = [0u8; 4];
                    let _ = stream.read_exact(&mut body).await;
                }
                let _ = heads.send(head);
                if answered {
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                answered = true;
            }
        }
    })
    .await;
    (addr, accepted, heads)
}

#[tokio::test]
async fn a_get_lost_on_a_reused_connection_is_sent_again_on_a_new_one() {
    let (server, accepted, mut heads) = answers_once_per_connection().await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let front = fulcrum.local_addr("web");
    assert_eq!(get_body(front, "/first").await, (200, Bytes::from_static(b"ok")));
    // Reuses the pooled connection, which takes the request and closes: the
    // GET goes out again, the same, on a new connection.
    assert_eq!(get_body(front, "/second?q=1").await, (200, Bytes::from_static(b"ok")));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert!(heads.recv().await.unwrap().starts_with("GET /first "));
    let (lost, again) = (heads.recv().await.unwrap(), heads.recv().await.unwrap());
    assert!(lost.starts_with("GET /second?q=1 HTTP/1.1\r\n"), "{lost}");
    assert_eq!(lost, again);
}

#[tokio::test]
async fn a_post_lost_on_a_reused_connection_is_not_sent_again() {
    let (server, accepted, _heads) = answers_once_per_connection().await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let front = fulcrum.local_addr("web");
    assert_eq!(get_body(front, "/first").await.0, 200);
    let mut sender = client(front).await;
    let req = Request::post("/").header("host", "test.local").body(Full::new(Bytes::from_static(b"data"))).unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_answering_before_reading_the_upload_is_heard() {
    let (server, _) = scripted(|mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
                .await;
            // Reads nothing more, and holds the connection: the upload stalls.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let mut sender = streaming_client(fulcrum.local_addr("web")).await;
    // 16 MiB in 64 KiB pieces, more than the socket buffers on the way hold.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let body = streamed(vec![chunk; 256]);
    let req = Request::post("/upload").header("host", "test.local").body(body).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await.expect("answered");
    let response = response.unwrap();
    assert_eq!(response.status(), 413);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect()).await.unwrap().unwrap();
    assert_eq!(body.to_bytes(), "too big\n");
}

#[tokio::test]
async fn bytes_the_server_sends_with_its_101_reach_the_client_first() {
    let (server, _) = scripted(|mut stream| async move {
        if read_head(&mut stream).await.is_some() {
            let reply = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: chat\r\n\r\nwelcome\n";
            stream.write_all(reply).await.unwrap();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: test.local\r\nConnection: upgrade\r\nUpgrade: chat\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"welcome\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&seen));
    stream.write_all(b"ping\n").await.unwrap();
    let mut echo = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping\n");
}

#[tokio::test]
async fn responses_that_cannot_be_framed_safely_are_refused_with_502() {
    let (server, accepted) = scripted(|mut stream| async move {
        let Some(head) = read_head(&mut stream).await else { return };
        let reply: &[u8] = match head.split(' ').nth(1).unwrap_or("") {
            "/two-lengths" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "/unasked-101" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: chat\r\n\r\n",
            "/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            _ => b"NOT HTTP AT ALL\r\n\r\n",
        };
        let _ = stream.write_all(reply).await;
        let _ = read_head(&mut stream).await;
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let front = fulcrum.local_addr("web");
    for path in ["/two-lengths", "/unasked-101", "/garbage"] {
        let reply =
            raw(front, format!("GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
        assert!(reply.starts_with("HTTP/1.1 502"), "{path}: {reply}");
    }
    // A broken chunk comes after the head: the client's response is cut (before
    // or after its head went out), never passed on as complete.
    let mut sender = client(front).await;
    let req = Request::get("/bad-chunk").header("host", "test.local").body(Full::new(Bytes::new())).unwrap();
    if let Ok(response) = sender.send_request(req).await {
        assert_eq!(response.status(), 200);
        assert!(response.into_body().collect().await.is_err(), "a cut body, not a complete one");
    }
    // None of those connections went back to the pool.
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_request_body_of_unknown_length_goes_chunked() {
    let (server, _) = scripted(|mut stream| async move {
        let Some(head) = read_head(&mut stream).await else { return };
        assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked\r\n"), "{head}");
        // The whole chunked body, up to its last chunk.
        let mut body = Vec::new();
        let mut buf = [0u8; 1024];
        while !body.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
        stream.write_all(reply.as_bytes()).await.unwrap();
    })
    .await;
    let fulcrum = start(&web_config(&[("app1", server)], "")).await;
    let mut sender = streaming_client(fulcrum.local_addr("web")).await;
    let body = streamed(vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defgh")]);
    let req = Request::post("/").header("host", "test.local").body(body).unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = response.into_body().collect().await.unwrap().to_bytes();
    // Each piece its own chunk or several in one: decoded, the same bytes.
    let text = String::from_utf8_lossy(&seen).into_owned();
    let mut decoded = String::new();
    let mut rest = text.as_str();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    assert_eq!(decoded, "abcdefgh");
}
