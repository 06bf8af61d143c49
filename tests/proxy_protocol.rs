//! The PROXY protocol over real loopback sockets: frontends with
//! `proxy_protocol: true` take the client from each connection's v1 or v2 header
//! (http, h2c, TLS and tcp; X-Forwarded-For, hashing, access logs) and close
//! connections without a valid one, unanswered, at once or after
//! `request_header`; servers with `send_proxy: v1|v2` get a header naming the
//! client and the address it connected to on each new connection, which then
//! serves that client's request only; their health checks send LOCAL / UNKNOWN.

mod common;
#[path = "proxy_protocol/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fulcrum::config::{Config, ConfigError};
use fulcrum::instance::Instance;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use servers::{proxy_echo, proxy_http, proxy_http_with, v1, v2, v2_local};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

/// Starts Fulcrum on `yaml`, PROXY protocol keys included. While validation
/// still refuses them as not supported yet (a PENDING check in src/config), the
/// config is validated without them and they are set on the result; once it
/// accepts them this is `common::start`.
async fn start_lb(yaml: &str) -> Instance {
    let pending = |issue: &fulcrum::config::Issue| {
        issue.message == "not supported by this build yet"
            && (issue.path.ends_with(".proxy_protocol") || issue.path.ends_with(".send_proxy"))
    };
    match Config::parse(yaml) {
        Ok(_) => return start(yaml).await,
        Err(ConfigError::Invalid(issues)) if issues.iter().all(pending) => {}
        Err(err) => panic!("test config invalid:\n{err}\n{yaml}"),
    }
    let wanted = Config::parse_unvalidated(yaml).unwrap();
    let without =
        yaml.replace(", proxy_protocol: true", "").replace(", send_proxy: v1", "").replace(", send_proxy: v2", "");
    let mut config = Config::parse(&without).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{without}"));
    for (frontend, wanted) in config.frontends.iter_mut().zip(&wanted.frontends) {
        frontend.proxy_protocol = wanted.proxy_protocol;
    }
    for (backend, wanted) in config.backends.iter_mut().zip(&wanted.backends) {
        for (server, wanted) in backend.servers.iter_mut().zip(&wanted.servers) {
            server.send_proxy = wanted.send_proxy;
        }
    }
    Instance::start(config, None).await.expect("fulcrum starts")
}

/// Frontend `front` (`mode`, with `proxy_protocol: true` and the `more` keys) in
/// front of backend `app`, whose servers are `servers` (YAML flow items).
fn config(mode: &str, more: &str, servers: &str) -> String {
    format!(
        "frontends:
  - {{ name: front, bind: 127.0.0.1:0, mode: {mode}, default_backend: app, proxy_protocol: true{more} }}
backends:
  - {{ name: app, servers: [{servers}] }}
"
    )
}

fn server(name: &str, addr: SocketAddr, send_proxy: &str) -> String {
    format!("{{ name: {name}, address: '{addr}'{send_proxy} }}")
}

/// The value of response header `name` in a raw response.
fn header_value(reply: &str, name: &str) -> Option<String> {
    let head = reply.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

/// Reads until the peer closes (at most 5 s); what was received.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("{what}: connection not closed"))
        .unwrap_or_default();
    String::from_utf8_lossy(&reply).into_owned()
}

/// Sends `bytes` on a new connection to `addr` and reads until it closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream, &String::from_utf8_lossy(bytes)).await
}

#[tokio::test]
async fn http_clients_are_named_by_v1_and_v2_headers_tcp4_and_tcp6() {
    let app = named_http("app").await;
    let lb = start_lb(&config("http", "", &server("s", app.addr, ""))).await;
    let front = lb.local_addr("front");
    for (header, client) in [
        (v1("203.0.113.7:56324", "192.0.2.1:80"), "203.0.113.7"),
        (v1("[2001:db8::7]:56324", "[2001:db8::1]:80"), "2001:db8::7"),
        (v2("198.51.100.8:1000", "192.0.2.1:80"), "198.51.100.8"),
        (v2("[2001:db8::8]:1000", "[2001:db8::1]:80"), "2001:db8::8"),
    ] {
        let reply = exchange(front, &[header.as_slice(), GET].concat()).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert_eq!(header_value(&reply, "x-seen-x-forwarded-for").as_deref(), Some(client), "{reply}");
    }
}

#[tokio::test]
async fn a_local_or_unknown_header_leaves_the_real_client() {
    let app = named_http("app").await;
    let lb = start_lb(&config("http", "", &server("s", app.addr, ""))).await;
    let front = lb.local_addr("front");
    for header in [v2_local(), b"PROXY UNKNOWN\r\n".to_vec(), b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()] {
        let reply = exchange(front, &[header.as_slice(), GET].concat()).await;
        assert_eq!(header_value(&reply, "x-seen-x-forwarded-for").as_deref(), Some("127.0.0.1"), "{reply}");
    }
}

#[tokio::test]
async fn a_header_in_pieces_then_a_parked_wait_then_the_request() {
    let app = named_http("app").await;
    let lb = start_lb(&config("http", "", &server("s", app.addr, ""))).await;
    let mut stream = TcpStream::connect(lb.local_addr("front")).await.unwrap();
    for piece in v2("203.0.113.9:4444", "192.0.2.1:80").chunks(5) {
        stream.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    // The header is in and nothing follows: the connection waits in the park.
    wait_for("the connection parked", Duration::from_secs(5), || lb.parked_connections() == 1).await;
    stream.write_all(GET).await.unwrap();
    let reply = read_until_closed(&mut stream, "request after the header").await;
    assert_eq!(header_value(&reply, "x-seen-x-forwarded-for").as_deref(), Some("203.0.113.9"), "{reply}");
}

#[tokio::test]
async fn h2c_is_told_apart_after_the_header() {
    let app = named_http("app").await;
    let lb = start_lb(&config("http", "", &server("s", app.addr, ""))).await;
    let mut stream = TcpStream::connect(lb.local_addr("front")).await.unwrap();
    stream.write_all(&v1("203.0.113.10:5000", "192.0.2.1:80")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://test/").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-x-forwarded-for"], "203.0.113.10");
}

#[tokio::test]
async fn tls_follows_the_header() {
    let pki = common::pki::Pki::new();
    let leaf = pki.leaf("site", &["a.test"], false);
    let app = named_http("app").await;
    let tls =
        format!(", tls: {{ certificates: [{{ cert: '{}', key: '{}' }}] }}", leaf.cert.display(), leaf.key.display());
    let lb = start_lb(&config("http", &tls, &server("s", app.addr, ""))).await;
    let mut stream = TcpStream::connect(lb.local_addr("front")).await.unwrap();
    stream.write_all(&v2("203.0.113.11:6000", "192.0.2.1:443")).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/").header("host", "a.test").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-x-forwarded-for"], "203.0.113.11");
    assert_eq!(resp.headers()["x-seen-x-forwarded-proto"], "https");
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_unanswered() {
    let app = named_http("app").await;
    let (echo, mut echo_headers) = proxy_echo().await;
    // request_header far off: what closes these is the refusal, not the limit.
    let more = ", timeouts: { request_header: 30s }";
    let http = start_lb(&config("http", more, &server("s", app.addr, ""))).await;
    let tcp = start_lb(&config("tcp", more, &server("s", echo, ", send_proxy: v1"))).await;
    let mut oversized = v2_local();
    oversized[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    let inputs: [&[u8]; 5] = [
        GET,
        b"\x16\x03\x01\x00\x05hello",
        &oversized,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 junk\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30",
    ];
    for input in inputs {
        for front in [http.local_addr("front"), tcp.local_addr("front")] {
            let started = Instant::now();
            let reply = exchange(front, input).await;
            assert_eq!(reply, "", "answered {:?}", String::from_utf8_lossy(input));
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 0, "a refused connection reached the server");
    assert!(echo_headers.try_recv().is_err(), "a refused tcp connection reached the server");
    for lb in [&http, &tcp] {
        let refused = &lb.snapshot().frontends[0].stats.proxy_protocol_refused;
        let counts: Vec<u64> = refused.iter().map(|count| count.load(Ordering::SeqCst)).collect();
        assert_eq!(counts.iter().sum::<u64>(), 5, "every refusal counted: {counts:?}");
        assert!(counts[1] >= 1, "the oversized header counted as too_large: {counts:?}");
    }
}

#[tokio::test]
async fn a_header_too_slow_is_closed_after_request_header_and_counted() {
    let app = named_http("app").await;
    let more = ", timeouts: { request_header: 300ms }";
    let http = start_lb(&config("http", more, &server("s", app.addr, ""))).await;
    let tcp = start_lb(&config("tcp", more, &server("s", app.addr, ""))).await;
    for lb in [&http, &tcp] {
        for sent in [&b""[..], b"PROXY TCP4 203.0.113.7 ", &v2("203.0.113.7:1", "192.0.2.1:80")[..20]] {
            let started = Instant::now();
            let mut stream = TcpStream::connect(lb.local_addr("front")).await.unwrap();
            stream.write_all(sent).await.unwrap();
            let reply = read_until_closed(&mut stream, "a slow header").await;
            assert_eq!(reply, "");
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(300), "closed after {waited:?}, before request_header");
        }
        let stats = &lb.snapshot().frontends[0].stats;
        assert_eq!(stats.client_timeouts.first_request.load(Ordering::Relaxed), 3);
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn send_proxy_names_the_client_and_the_address_it_connected_to() {
    let (one, two, three) = (proxy_http().await, proxy_http().await, proxy_http().await);
    let yaml = format!(
        "frontends:
  - {{ name: one, bind: 127.0.0.1:0, mode: http, default_backend: b1 }}
  - {{ name: two, bind: 0.0.0.0:0, mode: http, default_backend: b2 }}
  - {{ name: three, bind: 127.0.0.3:0, mode: http, default_backend: b3, proxy_protocol: true }}
backends:
  - {{ name: b1, servers: [{}] }}
  - {{ name: b2, servers: [{}] }}
  - {{ name: b3, servers: [{}] }}
",
        server("s1", one.addr, ", send_proxy: v1"),
        server("s2", two.addr, ", send_proxy: v2"),
        server("s3", three.addr, ", send_proxy: v2"),
    );
    let lb = start_lb(&yaml).await;
    for (front, mut app, prefix) in [("one", one, &b"PROXY TCP4 "[..]), ("two", two, b"\r\n\r\n\0\r\nQUIT\n\x21\x11")] {
        // A wildcard bind: the address the client connected to is the socket's own.
        let port = lb.local_addr(front).port();
        let front: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut stream = TcpStream::connect(front).await.unwrap();
        let client = stream.local_addr().unwrap();
        stream.write_all(GET).await.unwrap();
        let reply = read_until_closed(&mut stream, "GET").await;
        assert_eq!(header_value(&reply, "x-proxy"), Some(format!("{client} {front}")), "{reply}");
        let header = app.headers.recv().await.unwrap();
        assert!(header.raw.starts_with(prefix), "{:?}", header.raw);
    }
    // Behind a load balancer: the client its header names is passed on.
    let incoming = v1("203.0.113.7:56324", "192.0.2.1:80");
    let reply = exchange(lb.local_addr("three"), &[incoming.as_slice(), GET].concat()).await;
    assert_eq!(header_value(&reply, "x-proxy").as_deref(), Some("203.0.113.7:56324 192.0.2.1:80"), "{reply}");
}

/// A kept-alive HTTP/1.1 client and its own address.
async fn keep_alive_client(front: SocketAddr) -> (hyper::client::conn::http1::SendRequest<Empty<Bytes>>, SocketAddr) {
    let stream = TcpStream::connect(front).await.unwrap();
    let me = stream.local_addr().unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    (sender, me)
}

/// One GET on `sender`: the response's `x-proxy` and `x-connection`.
async fn ask(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> (String, String) {
    let req = hyper::Request::get("/").header("host", "test").body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = |name: &str| resp.headers()[name].to_str().unwrap().to_string();
    let answer = (seen("x-proxy"), seen("x-connection"));
    resp.into_body().collect().await.unwrap();
    answer
}

#[tokio::test]
async fn a_send_proxy_connection_serves_one_client_request_only() {
    let app = proxy_http().await;
    let yaml = format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - {{ name: app, servers: [{}] }}
",
        server("s", app.addr, ", send_proxy: v2")
    );
    let lb = start_lb(&yaml).await;
    let front = lb.local_addr("web");
    let mut clients = [keep_alive_client(front).await, keep_alive_client(front).await];
    let mut connections = Vec::new();
    for turn in [0, 1, 0, 1] {
        let (sender, me) = &mut clients[turn];
        let (named, connection) = ask(sender).await;
        assert_eq!(named, format!("{me} {front}"), "a request went out under another client's header");
        assert!(!connections.contains(&connection), "server connection {connection} reused");
        connections.push(connection);
        // The response is read: its connection did not go back to the pool.
        assert_eq!(lb.snapshot().backends[0].members[0].state.pool.idle_count(), 0);
    }
    // Closed once their response was read, not kept idle in a pool.
    wait_for("every server connection closed", Duration::from_secs(5), || app.closed.load(Ordering::SeqCst) == 4).await;
    assert_eq!(app.connections.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_h2c_server_connection_with_a_header_is_not_shared_between_clients() {
    let app = proxy_http_with(true).await;
    let yaml = format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - {{ name: app, protocol: h2c, servers: [{}] }}
",
        server("s", app.addr, ", send_proxy: v1")
    );
    let lb = start_lb(&yaml).await;
    let front = lb.local_addr("web");
    let mut clients = [keep_alive_client(front).await, keep_alive_client(front).await];
    let mut connections = Vec::new();
    for turn in [0, 1, 0] {
        let (sender, me) = &mut clients[turn];
        let (named, connection) = ask(sender).await;
        assert_eq!(named, format!("{me} {front}"), "a request went out under another client's header");
        assert!(!connections.contains(&connection), "server connection {connection} shared");
        connections.push(connection);
        assert_eq!(lb.snapshot().backends[0].members[0].state.pool.idle_count(), 0);
    }
    wait_for("every server connection closed", Duration::from_secs(5), || app.closed.load(Ordering::SeqCst) == 3).await;
}

#[tokio::test]
async fn tcp_sessions_send_the_client_on_in_a_header() {
    let (behind_lb, mut first) = proxy_echo().await;
    let (direct, mut second) = proxy_echo().await;
    let yaml = format!(
        "frontends:
  - {{ name: t1, bind: 127.0.0.1:0, mode: tcp, default_backend: e1, proxy_protocol: true }}
  - {{ name: t2, bind: 127.0.0.2:0, mode: tcp, default_backend: e2 }}
backends:
  - {{ name: e1, servers: [{}] }}
  - {{ name: e2, servers: [{}] }}
",
        server("s1", behind_lb, ", send_proxy: v2"),
        server("s2", direct, ", send_proxy: v1"),
    );
    let lb = start_lb(&yaml).await;

    let mut stream = TcpStream::connect(lb.local_addr("t1")).await.unwrap();
    stream.write_all(&[v1("203.0.113.7:56324", "192.0.2.1:443").as_slice(), b"hello"].concat()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "203.0.113.7:56324 192.0.2.1:443\n");
    // The bytes after the client's header reach the server untouched.
    let mut echoed = [0u8; 5];
    reader.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
    assert!(first.recv().await.unwrap().raw.starts_with(b"\r\n\r\n\0\r\nQUIT\n"));

    let front = lb.local_addr("t2");
    let stream = TcpStream::connect(front).await.unwrap();
    let me = stream.local_addr().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, format!("{me} {front}\n"));
    let header = second.recv().await.unwrap().raw;
    let v1 = format!("PROXY TCP4 {} {} {} {}\r\n", me.ip(), front.ip(), me.port(), front.port());
    assert_eq!(String::from_utf8_lossy(&header), v1);
}

#[tokio::test]
async fn health_checks_of_send_proxy_servers_send_local_and_unknown() {
    let (mut with_v1, mut with_v2) = (proxy_http().await, proxy_http().await);
    let yaml = format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
    health_check: {{ kind: http, path: /healthz, interval: 50ms, timeout: 1s }}
    servers: [{}, {}]
",
        server("s1", with_v1.addr, ", send_proxy: v1"),
        server("s2", with_v2.addr, ", send_proxy: v2"),
    );
    let _lb = start_lb(&yaml).await;
    let probe = tokio::time::timeout(Duration::from_secs(5), with_v1.headers.recv()).await.unwrap().unwrap();
    assert_eq!(probe.raw, b"PROXY UNKNOWN\r\n");
    let probe = tokio::time::timeout(Duration::from_secs(5), with_v2.headers.recv()).await.unwrap().unwrap();
    assert_eq!(probe.raw, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
}

#[tokio::test]
async fn source_ip_hashing_uses_the_client_from_the_header() {
    let (a, b) = (named_http("a").await, named_http("b").await);
    let yaml = format!(
        "frontends:
  - {{ name: front, bind: 127.0.0.1:0, mode: http, default_backend: app, proxy_protocol: true }}
backends:
  - name: app
    balance: consistent_hash
    hash_key: source_ip
    servers: [{}, {}]
",
        server("a", a.addr, ""),
        server("b", b.addr, ""),
    );
    let lb = start_lb(&yaml).await;
    let front = lb.local_addr("front");
    let served_by = |ip: String| async move {
        let reply = exchange(front, &[v1(&format!("{ip}:1000"), "192.0.2.1:80").as_slice(), GET].concat()).await;
        reply.rsplit("\r\n\r\n").next().unwrap().to_string()
    };
    let mut seen = Vec::new();
    for n in 1..=16 {
        seen.push(served_by(format!("198.51.100.{n}")).await);
    }
    // Every connection comes from 127.0.0.1: only the headers' addresses spread them.
    assert!(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()), "{seen:?}");
    for _ in 0..3 {
        assert_eq!(served_by("198.51.100.1".to_string()).await, seen[0]);
    }
}

// Current-thread runtime: the subscriber set for this thread sees every task.
#[tokio::test]
async fn access_logs_name_the_client_from_the_header_and_refusals_are_logged() {
    let (captured, _guard) = Captured::install("fulcrum::access=info,fulcrum::proxy::proxy_protocol=info");

    let app = named_http("app").await;
    let echo = echo().await;
    let http = start_lb(&config("http", ", access_log: true", &server("s", app.addr, ""))).await;
    let tcp = start_lb(&config("tcp", ", access_log: true", &server("s", echo, ""))).await;
    exchange(http.local_addr("front"), &[v1("203.0.113.21:2100", "192.0.2.1:80").as_slice(), GET].concat()).await;
    let mut session = TcpStream::connect(tcp.local_addr("front")).await.unwrap();
    session.write_all(&v2("203.0.113.22:2200", "192.0.2.1:80")).await.unwrap();
    session.shutdown().await.unwrap();
    read_until_closed(&mut session, "tcp session").await;
    for client in ["client=203.0.113.21:2100", "client=203.0.113.22:2200"] {
        wait_for(client, Duration::from_secs(5), || captured.text().contains(client)).await;
    }
    // Refusals are logged at most once a second across the process (other tests
    // here refuse connections too): refuse until one gets through.
    let refusal = "no valid PROXY protocol header";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !captured.text().contains(refusal) {
        assert!(Instant::now() < deadline, "no refusal logged");
        assert_eq!(exchange(http.local_addr("front"), GET).await, "");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
