//! Client-side time limits of http frontends over real loopback sockets:
//! `request_header` for heads, `client` for idle keep-alive and h2c connections,
//! for request bodies that stop arriving and for clients that stop reading.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An http frontend `web` (with `timeouts`) in front of one server.
fn web(server: std::net::SocketAddr, timeouts: &str) -> String {
    format!(
        "frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: main
    timeouts: {timeouts}
backends:
  - {{name: main, servers: [{{name: s, address: '{server}'}}]}}
"
    )
}

/// Like [`web`], with the server's `timeouts.server` set to `server_timeout`.
fn web_with_server_timeout(server: std::net::SocketAddr, timeouts: &str, server_timeout: &str) -> String {
    web(server, timeouts).replace("servers:", &format!("timeouts: {{server: {server_timeout}}}, servers:"))
}

/// The frontend's count of what each client limit ended, by `limit` label.
fn ended_by(fulcrum: &fulcrum::instance::Instance) -> Vec<(&'static str, u64)> {
    let snapshot = fulcrum.snapshot();
    let counters = &snapshot.frontends[0].stats.client_timeouts;
    counters.labelled().iter().map(|(limit, count)| (*limit, count.load(Ordering::Relaxed))).collect()
}

/// `ended_by` with exactly these non-zero counts.
fn only(counts: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    ["first_request", "head", "body", "idle", "send"]
        .iter()
        .map(|limit| (*limit, counts.iter().find(|(l, _)| l == limit).map_or(0, |(_, n)| *n)))
        .collect()
}

/// Reads until the peer closes (at most 5 s); what was received.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("{what}: connection not closed"))
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn idle_h2c_connection_is_closed_after_client_timeout() {
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 200ms, client: 1s}")).await;
    let (mut sender, conn) = h2c(fulcrum.local_addr("web")).await;
    // Two requests 500 ms apart (longer than request_header, shorter than client).
    for _ in 0..2 {
        let req = Request::get("http://h2.example/x").body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Then no stream for `client`: the connection ends. The bound leaves room for a
    // loaded machine oversleeping above, and still tells `client` from request_header.
    let idle_since = std::time::Instant::now() - Duration::from_millis(500);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await.expect("idle h2c connection closed");
    // Closed politely (GOAWAY), not cut: the client's connection ends without an error.
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    assert!(idle_since.elapsed() >= Duration::from_millis(700), "closed after {:?}", idle_since.elapsed());
    assert_eq!(ended_by(&fulcrum), only(&[("idle", 1)]));
}

#[tokio::test]
async fn connection_without_a_request_is_closed_after_request_header() {
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 300ms}")).await;
    let addr = fulcrum.local_addr("web");
    // Silent: closed without a response (a browser's spare connection gets no 408).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let reply = read_until_closed(&mut silent, "silent connection").await;
    assert!(reply.is_empty(), "{reply}");
    // A prefix of the h2 preface and then nothing: the protocol is never decided,
    // still a request started too slowly.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"PRI * HT").await.unwrap();
    let reply = read_until_closed(&mut stalled, "stalled preface").await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    let snapshot = fulcrum.snapshot();
    assert_eq!(snapshot.frontends[0].stats.responses[3].load(Ordering::Relaxed), 1, "one 408 counted");
    assert_eq!(ended_by(&fulcrum), only(&[("first_request", 1), ("head", 1)]));
    // Still serving, h1 and h2c alike.
    assert_eq!(get(addr, "/", &[]).await.0, 200);
}

#[tokio::test]
async fn first_head_is_due_request_header_after_the_accept_not_after_its_first_byte() {
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 1s}")).await;
    let connected = std::time::Instant::now();
    let mut late = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    // The connection sits with nothing to do for most of its time, then starts
    // a head it never finishes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    late.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let reply = read_until_closed(&mut late, "late head").await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    let took = connected.elapsed();
    // 1 s from the accept; a deadline restarted by the first byte would be 1.7 s.
    assert!(took < Duration::from_millis(1400), "408 after {took:?}");
    assert_eq!(ended_by(&fulcrum), only(&[("head", 1)]));
}

#[tokio::test]
async fn request_body_that_stops_arriving_gets_a_408_after_client_timeout() {
    // A server that reads whatever it gets and never answers: only the client-side
    // limit can end this exchange.
    let server = sink_server().await;
    // The server timeout is shorter than `client`: it counts only once the body is sent.
    let yaml = web_with_server_timeout(server, "{request_header: 5s, client: 500ms}", "200ms");
    let fulcrum = start(&yaml).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    stream.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nfirst bytes").await.unwrap();
    let reply = read_until_closed(&mut stream, "stalled upload").await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert_eq!(fulcrum.snapshot().frontends[0].stats.responses[3].load(Ordering::Relaxed), 1);
    assert_eq!(ended_by(&fulcrum), only(&[("body", 1)]));
}

#[tokio::test]
async fn pipelined_request_to_a_slow_server_is_not_cut_as_idle() {
    // The second request is read together with the first, so no byte arrives while
    // the server takes longer than `client` over it: the connection is busy, not idle.
    let server = slow_http(Duration::from_millis(700)).await;
    let fulcrum = start(&web(server, "{client: 300ms}")).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    stream.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    for _ in 0..2 {
        let reply = read_response(&mut stream).await;
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("late"), "{reply}");
    }
}

/// A connection to `addr` on which `request` was answered 200, kept open.
async fn answered(addr: std::net::SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let reply = read_response(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    stream
}

#[tokio::test]
async fn keep_alive_idle_is_limited_by_client_and_heads_by_request_header() {
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 200ms, client: 1500ms}")).await;
    let addr = fulcrum.local_addr("web");
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    // Idle three times request_header between requests: still open (client is 1.5 s).
    let mut stream = answered(addr, request).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(request).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));

    // Then idle until `client` runs out: closed without a response.
    let idle_since = std::time::Instant::now();
    let rest = read_until_closed(&mut stream, "idle keep-alive").await;
    assert!(rest.is_empty(), "{rest}");
    assert!(idle_since.elapsed() >= Duration::from_millis(1000), "closed after {:?}", idle_since.elapsed());

    // A later head that stalls gets its 408 from request_header, well before `client`.
    let mut stream = answered(addr, request).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let head_started = std::time::Instant::now();
    let rest = read_until_closed(&mut stream, "stalled later head").await;
    assert!(rest.starts_with("HTTP/1.1 408 "), "{rest}");
    assert!(head_started.elapsed() < Duration::from_millis(1000), "408 after {:?}", head_started.elapsed());
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    assert_eq!(ended_by(&fulcrum), only(&[("idle", 1), ("head", 1)]));
}

#[tokio::test]
async fn refused_upgrade_keeps_the_connection_under_http_rules() {
    // A server that answers 200 to everything, ignoring `Upgrade`.
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 300ms, client: 600ms}")).await;
    let addr = fulcrum.local_addr("web");
    let upgrade = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n";

    // A request with both framing headers after a refused upgrade still gets its 400.
    let mut stream = answered(addr, upgrade).await;
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut stream, "conflict after upgrade").await.starts_with("HTTP/1.1 400 "));

    // And an idle connection after a refused upgrade is still closed after `client`.
    let mut stream = answered(addr, upgrade).await;
    assert!(read_until_closed(&mut stream, "idle after upgrade").await.is_empty());
}

#[tokio::test]
async fn blank_line_or_partial_pipelined_head_then_silence_gets_a_408() {
    let server = named_http("s").await;
    let fulcrum = start(&web(server.addr, "{request_header: 300ms, client: 30s}")).await;
    let addr = fulcrum.local_addr("web");
    for (what, bytes) in [
        ("CRLF after a request", &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n\r\n"[..]),
        ("partial pipelined head", b"GET / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\n"),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"), "{what}");
        let rest = read_until_closed(&mut stream, what).await;
        assert!(rest.starts_with("HTTP/1.1 408 "), "{what}: {rest}");
    }
}

#[tokio::test]
async fn client_that_stops_reading_is_dropped_after_client_timeout() {
    // /big answers 64 MiB: far more than the socket buffers between us and the client.
    let server = http_server(
        "big",
        std::sync::Arc::new(|_, _| hyper::Response::new(Full::new(Bytes::from(vec![b'x'; 64 << 20])))),
    )
    .await;
    let fulcrum = start(&web(server.addr, "{client: 500ms}")).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    stream.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1024];
    let _ = stream.read(&mut first).await.unwrap();
    // The client keeps its socket open but reads no more: the proxy gives up on it and
    // releases the server side (no connection stays active on the server).
    let snapshot = fulcrum.snapshot();
    let server_state = &snapshot.backends[0].members[0].state;
    wait_for("the response to be abandoned", Duration::from_secs(10), || {
        server_state.active() == 0 && snapshot.frontends[0].stats.active_connections.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(ended_by(&fulcrum), only(&[("send", 1)]));
    drop(stream);
}

/// A server that reads (and discards) everything it is sent and never answers.
async fn sink_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move { tokio::io::copy(&mut stream, &mut tokio::io::sink()).await });
        }
    });
    server
}

/// A request body fed through a channel, so a test can stop sending mid-body;
/// with its length when known (sent as Content-Length).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>, Option<u64>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|data| data.map(|data| Ok(http_body::Frame::data(data))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.1.map(http_body::SizeHint::with_exact).unwrap_or_default()
    }
}

/// Starts a `total`-byte POST to `path` through `addr`, written as fast as the
/// proxy takes it; the side its answer arrives on.
async fn upload(addr: std::net::SocketAddr, path: &str, total: usize) -> tokio::net::tcp::OwnedReadHalf {
    let (from_proxy, mut to_proxy) = TcpStream::connect(addr).await.unwrap().into_split();
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n");
    tokio::spawn(async move {
        to_proxy.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..(total >> 20) {
            if to_proxy.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    from_proxy
}

/// The first bytes the proxy answers on `from_proxy`, within `limit`.
async fn first_reply(mut from_proxy: tokio::net::tcp::OwnedReadHalf, limit: Duration, what: &str) -> String {
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, from_proxy.read(&mut reply)).await.expect(what).unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

/// A raw HTTP/1.1 server: reads a head; for a path containing `/slow` it reads
/// nothing more for `pause`; then it reads the Content-Length body and answers `ok`.
async fn pausing_server(pause: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let length: u64 = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    if head.contains("/slow") {
                        tokio::time::sleep(pause).await;
                    }
                    tokio::io::copy(&mut (&mut stream).take(length), &mut tokio::io::sink()).await.unwrap();
                    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_request_body_that_stops_arriving_gets_a_408() {
    let server = sink_server().await;
    let yaml = web_with_server_timeout(server, "{request_header: 5s, client: 500ms}", "200ms");
    let fulcrum = start(&yaml).await;
    let (mut sender, _conn) = h2c(fulcrum.local_addr("web")).await;
    let (more, body) = tokio::sync::mpsc::channel(1);
    let req = Request::post("http://h2.example/upload").body(ChannelBody(body, None)).unwrap();
    let answer = tokio::spawn(async move { sender.send_request(req).await });
    more.send(Bytes::from_static(b"first bytes")).await.unwrap();
    // Then nothing more, with the stream left open.
    let response = tokio::time::timeout(Duration::from_secs(5), answer).await.expect("stalled h2c upload answered");
    assert_eq!(response.unwrap().unwrap().status(), 408);
    assert_eq!(ended_by(&fulcrum), only(&[("body", 1)]));
    drop(more);
}

#[tokio::test]
async fn body_the_framing_watch_cannot_follow_still_gets_a_408() {
    let server = sink_server().await;
    let yaml = web_with_server_timeout(server, "{request_header: 5s, client: 500ms}", "200ms");
    let fulcrum = start(&yaml).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    // An `Upgrade` header with a body turns the watch off; to hyper it is a plain POST.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\nupgrade: foo\r\ncontent-length: 100\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let reply = read_until_closed(&mut stream, "stalled upload after an unfollowable head").await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
}

#[tokio::test]
async fn server_that_stops_reading_the_request_body_gets_a_504() {
    // Accepts and never reads: the upload fills the socket buffers and stops moving.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let yaml = web_with_server_timeout(server, "{request_header: 5s, client: 5s}", "500ms");
    let fulcrum = start(&yaml).await;
    let from_proxy = upload(fulcrum.local_addr("web"), "/upload", 256 << 20).await;
    let reply = first_reply(from_proxy, Duration::from_secs(8), "answered after the server stopped reading").await;
    assert!(reply.starts_with("HTTP/1.1 504 "), "{reply}");
}

#[tokio::test]
async fn server_slow_to_read_an_upload_is_not_blamed_on_the_client() {
    // The server reads the head, pauses longer than `timeouts.client`, then reads
    // the rest: meanwhile the proxy stops reading the client (backpressure), which
    // must not count as the client stalling.
    let server = pausing_server(Duration::from_millis(1500)).await;
    let fulcrum = start(&web(server, "{request_header: 5s, client: 300ms}")).await;
    let from_proxy = upload(fulcrum.local_addr("web"), "/slow", 32 << 20).await;
    let reply = first_reply(from_proxy, Duration::from_secs(10), "answered").await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

#[tokio::test]
async fn client_slow_to_read_a_download_is_not_blamed_on_the_server() {
    // The client pauses reading longer than `timeouts.server`: the proxy stops reading
    // the server meanwhile (backpressure), which must not count as the server stalling.
    let total: usize = 32 << 20;
    let server = http_server(
        "big",
        std::sync::Arc::new(move |_, _| hyper::Response::new(Full::new(Bytes::from(vec![b'x'; total])))),
    )
    .await;
    let yaml = web_with_server_timeout(server.addr, "{client: 5s}", "300ms");
    let fulcrum = start(&yaml).await;
    let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
    stream.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1024];
    let _ = stream.read(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rest = read_until_closed(&mut stream, "download").await;
    let head = String::from_utf8_lossy(&first);
    let head_len = head.find("\r\n\r\n").expect("head in the first read") + 4;
    assert_eq!(1024 - head_len + rest.len(), total, "the whole body arrived");
}

#[tokio::test]
async fn h2c_stream_is_not_starved_by_another_streams_slow_upload() {
    // Stream 1 uploads to a server that pauses reading; stream 2's five bytes must
    // still get through (the connection window is not all stream 1's), and stream 2
    // must not get a 408 blamed on its client.
    let server = pausing_server(Duration::from_secs(3)).await;
    let yaml = web_with_server_timeout(server, "{request_header: 5s, client: 1s}", "10s");
    let fulcrum = start(&yaml).await;
    let (sender, _conn) = h2c(fulcrum.local_addr("web")).await;
    let (more, body) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..32 {
            if more.send(Bytes::from(vec![b'x'; 1 << 20])).await.is_err() {
                return;
            }
        }
    });
    let mut first = sender.clone();
    let _slow = tokio::spawn(async move {
        first
            .send_request(Request::post("http://h2.example/slow").body(ChannelBody(body, Some(32 << 20))).unwrap())
            .await
    });
    // Once stream 1 has filled what it can (its server is not reading)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (more, body) = tokio::sync::mpsc::channel(1);
    more.send(Bytes::from_static(b"hello")).await.unwrap();
    drop(more);
    let mut second = sender.clone();
    let started = std::time::Instant::now();
    let req = Request::post("http://h2.example/fast").body(ChannelBody(body, Some(5))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), second.send_request(req))
        .await
        .expect("stream 2 answered")
        .unwrap();
    assert_eq!(response.status(), 200, "stream 2 after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "stream 2 waited {:?}", started.elapsed());
}
