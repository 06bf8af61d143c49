//! Layer-7 proxying over real loopback sockets: routing, headers, keep-alive,
//! streaming, balancer-made errors, h2c and upgrades.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn web(backends: &str, routes: &str, extra: &str) -> String {
    format!(
        "frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: main
{extra}
    routes:
{routes}
backends:
{backends}"
    )
}

#[tokio::test]
async fn routes_by_host_prefix_path_method_and_header() {
    let names = ["main", "api", "wild", "exact", "posts", "canary"];
    let mut backends = String::new();
    for name in names {
        let server = named_http(name).await;
        backends.push_str(&format!("  - {{name: {name}, servers: [{{name: {name}1, address: '{}'}}]}}\n", server.addr));
    }
    let routes = "      - {match: {header: {name: X-Canary, value: '1'}}, backend: canary}
      - {match: {host: api.example.com, path_prefix: /v1/}, backend: api}
      - {match: {host: '*.example.org'}, backend: wild}
      - {match: {path: /exact}, backend: exact}
      - {match: {method: POST}, backend: posts}";
    let fulcrum = start(&web(&backends, routes, "")).await;
    let addr = fulcrum.local_addr("web");
    let body = |host: &'static str, path: &'static str, method: &'static str, canary: bool| async move {
        let mut sender = client(addr).await;
        let mut req = Request::builder().method(method).uri(path).header("host", host);
        if canary {
            req = req.header("x-canary", "1");
        }
        let resp = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    assert_eq!(body("api.example.com:8080", "/v1/users", "GET", false).await, "api");
    assert_eq!(body("api.example.com", "/v2/users", "GET", false).await, "main");
    assert_eq!(body("shop.example.org", "/", "GET", false).await, "wild");
    assert_eq!(body("example.org", "/", "GET", false).await, "main", "*.example.org does not match the bare domain");
    assert_eq!(body("x", "/exact", "GET", false).await, "exact");
    assert_eq!(body("x", "/exact/more", "GET", false).await, "main");
    assert_eq!(body("x", "/anything", "POST", false).await, "posts");
    assert_eq!(body("api.example.com", "/v1/users", "GET", true).await, "canary");
    assert_eq!(body("x", "/", "GET", false).await, "main");
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop() {
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let (status, headers, _) = get(
        fulcrum.local_addr("web"),
        "/p?q=1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9v"),
            ("te", "trailers"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen-x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-seen-x-forwarded-proto"], "http");
    assert_eq!(headers["x-seen-x-forwarded-host"], "test.local");
    assert_eq!(headers["x-seen-host"], "test.local");
    assert_eq!(headers["x-seen-via"], "1.1 fulcrum");
    assert_eq!(headers["x-seen-uri"], "/p?q=1");
    for gone in ["x-seen-x-private", "x-seen-keep-alive", "x-seen-proxy-authorization", "x-seen-te"] {
        assert!(!headers.contains_key(gone), "{gone} must not reach the server");
    }
}

#[tokio::test]
async fn keep_alive_reuses_server_connections() {
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let mut sender = client(fulcrum.local_addr("web")).await;
    for _ in 0..200 {
        let req = Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 200);
    let connections = server.connections.load(Ordering::SeqCst);
    assert!(connections <= 3, "200 requests used {connections} server connections");
}

async fn sha_server() -> HttpServer {
    // Answers POST with the SHA-256 of the body, GET /big with a 64 MiB body.
    http_server(
        "sha",
        Arc::new(|_, req| {
            use sha2::Digest;
            if req.uri().path() == "/big" {
                return Response::new(Full::new(Bytes::from(pattern(64 << 20))));
            }
            let digest = sha2::Sha256::digest(req.body());
            Response::new(Full::new(Bytes::from(format!("{}:{:x}", req.body().len(), digest))))
        }),
    )
    .await
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect()
}

#[tokio::test]
async fn large_bodies_stream_intact_both_ways() {
    use sha2::Digest;
    let server = sha_server().await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let addr = fulcrum.local_addr("web");

    // 64 MiB upload with Content-Length.
    let payload = Bytes::from(pattern(64 << 20));
    let expected = format!("{}:{:x}", payload.len(), sha2::Sha256::digest(&payload));
    let mut sender = client(addr).await;
    let req = Request::post("/up").header("host", "x").body(Full::new(payload.clone())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), expected.as_bytes());

    // 64 MiB download.
    let req = Request::get("/big").header("host", "x").body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 64 << 20);
    assert_eq!(sha2::Sha256::digest(&body), sha2::Sha256::digest(&payload));

    // Chunked upload (raw, so the framing is exactly chunked).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let expected = format!("11:{:x}", sha2::Sha256::digest(b"hello world"));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(&expected), "{reply}");
}

#[tokio::test]
async fn balancer_made_errors_are_counted_and_the_proxy_keeps_serving() {
    let server = named_http("s").await;
    let slow = slow_http(Duration::from_secs(5)).await;
    let dead = closed_port().await;
    let backends = format!(
        "  - {{name: main, servers: [{{name: s, address: '{}'}}]}}
  - {{name: dead, servers: [{{name: d, address: '{dead}'}}]}}
  - {{name: empty, servers: []}}
  - {{name: slow, timeouts: {{server: 300ms}}, servers: [{{name: slow, address: '{}'}}]}}
",
        server.addr, slow
    );
    let routes = "      - {match: {path_prefix: /dead}, backend: dead}
      - {match: {path_prefix: /empty}, backend: empty}
      - {match: {path_prefix: /slow}, backend: slow}";
    let fulcrum =
        start(&web(&backends, routes, "    timeouts: {request_header: 300ms}\n    max_header_bytes: 8192")).await;
    let addr = fulcrum.local_addr("web");

    let status = |reply: &str| reply.split(' ').nth(1).unwrap_or("").to_string();
    // 400: invalid header name; a non-chunked Transfer-Encoding; two different Content-Lengths.
    let reply = raw(addr, b"GET / HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n").await;
    assert_eq!(status(&reply), "400", "{reply}");
    let reply = raw(addr, b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n").await;
    assert_eq!(status(&reply), "400", "{reply}");
    let reply = raw(addr, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab").await;
    assert_eq!(status(&reply), "400", "{reply}");
    // 408: the head never completes.
    let reply = raw(addr, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
    assert_eq!(status(&reply), "408", "{reply}");
    // 431: head over the limit.
    let big = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let reply = raw(addr, big.as_bytes()).await;
    assert_eq!(status(&reply), "431", "{reply}");
    // 502, 503, 504.
    assert_eq!(get(addr, "/dead", &[]).await.0, 502);
    assert_eq!(get(addr, "/empty", &[]).await.0, 503);
    assert_eq!(get(addr, "/slow", &[]).await.0, 504);
    // Still serving.
    assert_eq!(get(addr, "/", &[]).await.0, 200);

    let snapshot = fulcrum.snapshot();
    let fe = &snapshot.frontends[0].stats;
    assert_eq!(fe.responses[3].load(Ordering::Relaxed), 5, "400 x3, 408, 431 counted");
    assert_eq!(fe.responses[4].load(Ordering::Relaxed), 3, "502, 503, 504 counted");
    let by_name =
        |n: &str| snapshot.backends.iter().find(|b| b.name == n).unwrap().stats.responses[4].load(Ordering::Relaxed);
    assert_eq!((by_name("dead"), by_name("empty"), by_name("slow")), (1, 1, 1));
}

#[tokio::test]
async fn server_closing_idle_connections_causes_no_502() {
    // An app server with a 1 s keep-alive: it closes idle connections after 1 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(1))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = conn.await;
            });
        }
    });
    let fulcrum =
        start(&web(&format!("  - {{name: main, servers: [{{name: s, address: '{addr}'}}]}}\n"), "      []", "")).await;
    let front = fulcrum.local_addr("web");
    let mut sender = client(front).await;
    for i in 0..30 {
        let req = Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        resp.into_body().collect().await.unwrap();
        // ~1 s apart, jittered around the server's idle limit.
        tokio::time::sleep(Duration::from_millis(950 + (i % 5) * 25)).await;
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_answered() {
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let (mut sender, _conn) = h2c(fulcrum.local_addr("web")).await;
    let req = Request::get("http://h2.example/x").body(Full::new(Bytes::new())).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.headers()["x-seen-host"], "h2.example");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "s");
}

#[tokio::test]
async fn upgrade_tunnels_bytes_both_ways() {
    let server = upgrade_echo_server().await;
    let fulcrum =
        start(&web(&format!("  - {{name: main, servers: [{{name: s, address: '{server}'}}]}}\n"), "      []", ""))
            .await;
    let mut stream = open_tunnel(fulcrum.local_addr("web")).await;
    for round in 0..5 {
        let msg = format!("ping {round}");
        stream.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg.as_bytes());
    }
}

#[tokio::test]
async fn hash_by_header_is_sticky() {
    let (a, b, c) = (named_http("a").await, named_http("b").await, named_http("c").await);
    let backends = format!(
        "  - name: main
    balance: consistent_hash
    hash_key: header:X-User
    servers:
      - {{name: a, address: '{}'}}
      - {{name: b, address: '{}'}}
      - {{name: c, address: '{}'}}
",
        a.addr, b.addr, c.addr
    );
    let fulcrum = start(&web(&backends, "      []", "")).await;
    let addr = fulcrum.local_addr("web");
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = get(addr, "/", &[("x-user", &user)]).await.2;
        for _ in 0..3 {
            assert_eq!(get(addr, "/", &[("x-user", &user)]).await.2, first, "{user} moved");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "30 users all hashed to one server");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    // Both framing headers in one head: a 400 and the connection closes, whichever
    // comes first (hyper alone would frame it as chunked and drop Content-Length),
    // so the bytes after the body are never read as a second request.
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let addr = fulcrum.local_addr("web");
    let smuggle = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    for head in [
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n",
    ] {
        let reply = raw(addr, format!("{head}{smuggle}").as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "exactly one response: {reply}");
        assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
        assert!(!reply.contains("smuggled"), "{reply}");
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 0, "nothing reached the server");

    // Pipelined behind good requests (one with a body that looks like a conflicting
    // head): only the ambiguous request is refused.
    let decoy = "GET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
    let pipeline = format!(
        "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{decoy}\
         POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{decoy}\r\n0\r\n\r\n\
         POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n{smuggle}",
        decoy.len(),
        decoy.len()
    );
    let reply = raw(addr, pipeline.as_bytes()).await;
    let statuses: Vec<&str> = reply.match_indices("HTTP/1.1 ").map(|(i, _)| &reply[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "200", "400"], "{reply}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    let snapshot = fulcrum.snapshot();
    assert_eq!(snapshot.frontends[0].stats.responses[3].load(Ordering::Relaxed), 3, "each 400 counted");
}

#[tokio::test]
async fn idle_pooled_server_connections_are_closed_after_the_idle_timeout() {
    // A server that answers one keep-alive request per connection and reports when
    // the proxy closes the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf).await;
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                let answered = std::time::Instant::now();
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let _ = closed_tx.send((n, answered.elapsed())).await;
            });
        }
    });
    let fulcrum =
        start(&web(&format!("  - {{name: main, servers: [{{name: s, address: '{server}'}}]}}\n"), "      []", ""))
            .await;
    assert_eq!(get(fulcrum.local_addr("web"), "/", &[]).await.0, 200);
    let pool = &fulcrum.snapshot().backends[0].members[0].state.pool;
    wait_for("the connection to be pooled", std::time::Duration::from_secs(2), || pool.idle_count() == 1).await;
    let (n, idle_for) = tokio::time::timeout(std::time::Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the pooled connection was never closed")
        .unwrap();
    assert_eq!(n, 0, "the proxy sent another request instead of closing");
    let limit = fulcrum::upstream::IDLE_TIMEOUT;
    assert!(idle_for >= limit && idle_for < limit * 3, "closed after {idle_for:?} (idle timeout {limit:?})");
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn request_sent_with_fin_is_still_answered() {
    // `printf 'GET / ...' | nc`: the request and the client's FIN arrive together.
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    for _ in 0..20 {
        let mut stream = TcpStream::connect(fulcrum.local_addr("web")).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut reply))
            .await
            .expect("hung after the client's FIN")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("s"), "{reply}");
    }
}

#[tokio::test]
async fn drain_closes_idle_h2_and_keep_alive_connections_politely() {
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    let web = fulcrum.local_addr("web");
    // An h2c connection that answered once and then sits idle.
    let (mut sender, h2_conn) = h2c(web).await;
    let req = Request::get("http://h2.example/").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    // An HTTP/1.1 keep-alive connection, idle too.
    let mut h1 = client(web).await;
    let req = Request::get("/").header("host", "x").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1.send_request(req).await.unwrap().status(), 200);

    let drain = tokio::spawn({
        let fulcrum = fulcrum.clone();
        async move { fulcrum.shutdown().await }
    });
    // h2: GOAWAY, then the connection ends cleanly (the client's driver returns Ok).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), h2_conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "h2 connection did not end cleanly: {ended:?}");
    // h1: closed, so the client can no longer send on it.
    wait_for("the idle h1 connection to close", std::time::Duration::from_secs(5), || h1.is_closed()).await;
    assert!(drain.await.unwrap(), "drain finished in time");
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let server = named_http("s").await;
    let fulcrum = start(&web(
        &format!("  - {{name: main, servers: [{{name: s, address: '{}'}}]}}\n", server.addr),
        "      []",
        "",
    ))
    .await;
    // Three requests in one write; the last asks to close so the reply ends.
    let reply = raw(
        fulcrum.local_addr("web"),
        b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\nGET /3 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 3, "{reply}");
    let order: Vec<&str> = reply.lines().filter_map(|l| l.strip_prefix("x-seen-uri: ")).collect();
    assert_eq!(order, ["/1", "/2", "/3"]);
}
