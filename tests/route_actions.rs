//! A route's action: a backend, files from disk (`static`), a `redirect` keeping
//! path and query, or a fixed `respond`; exactly one per route, which check says.

mod common;

use std::sync::atomic::Ordering;

use common::*;

fn config(routes: &str, app: std::net::SocketAddr) -> String {
    format!(
        "frontends:\n  - name: web\n    bind: 127.0.0.1:0\n    mode: http\n    default_backend: app\n    routes:\n{routes}\
         backends:\n  - {{ name: app, servers: [{{ name: a, address: \"{app}\" }}] }}\n"
    )
}

#[tokio::test]
async fn redirect_keeps_path_and_query_and_respond_answers_without_a_server() {
    let app = named_http("app").await;
    let routes = concat!(
        "      - match: {host: old.example.com}\n",
        "        redirect: {to: \"https://new.example.com/\", status: 308}\n",
        "      - match: {path: /ping}\n",
        "        respond: {status: 200, body: \"pong\\n\", content_type: text/plain}\n",
        "      - match: {path: /gone}\n",
        "        respond: {status: 410}\n",
    );
    let lb = start(&config(routes, app.addr)).await;
    let web = lb.local_addr("web");
    let reply = raw(web, b"GET /a/b?x=1&y=2 HTTP/1.1\r\nhost: old.example.com\r\nconnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 308 "), "{reply}");
    assert!(reply.contains("location: https://new.example.com/a/b?x=1&y=2\r\n"), "{reply}");
    let (status, headers, body) = get(web, "/ping", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"pong\n"[..]));
    assert_eq!(headers["content-type"], "text/plain");
    let (status, _, body) = get(web, "/gone", &[]).await;
    assert_eq!((status, body.len()), (410, 0));
    // Anything else still goes to the backend.
    assert_eq!(get(web, "/other", &[]).await.2, "app");
    assert_eq!(app.requests.load(Ordering::SeqCst), 1, "only the last request reached a server");
    let stats = &lb.snapshot().frontends[0].stats;
    assert_eq!(stats.responses[1].load(Ordering::SeqCst), 2, "the 200s, counted");
    assert_eq!(stats.responses[2].load(Ordering::SeqCst), 1, "the 308");
    assert_eq!(stats.responses[3].load(Ordering::SeqCst), 1, "the 410");
}

#[tokio::test]
async fn http_to_https_in_one_line_defaults_to_301() {
    let app = named_http("app").await;
    let lb = start(&config("      - redirect: {to: \"https://example.com\"}\n", app.addr)).await;
    let (status, headers, _) = get(lb.local_addr("web"), "/login?next=/", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://example.com/login?next=/");
}

#[test]
fn check_wants_exactly_one_well_formed_action() {
    let check = |routes: &str| {
        fulcrum::config::Config::parse(&config(routes, "127.0.0.1:9".parse().unwrap())).err().map(|e| e.to_string())
    };
    assert_eq!(check("      - match: {path: /p}\n        respond: {body: ok}\n"), None);
    let err = check("      - match: {path: /p}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0]") && err.contains("one action"), "{err}");
    let err = check("      - backend: app\n        respond: {body: ok}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0]") && err.contains("backend, respond"), "{err}");
    let err = check("      - redirect: {to: /relative}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0].redirect.to"), "{err}");
    let err = check("      - redirect: {to: \"https://x.test\", status: 200}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0].redirect.status"), "{err}");
    let err = check("      - respond: {status: 99}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0].respond.status"), "{err}");
    let err = check("      - static: {root: /nonexistent/dir}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0].static.root") && err.contains("not a directory"), "{err}");
    let err = check("      - static: {root: /tmp, strip_prefix: true}\n").unwrap();
    assert!(err.contains("frontends[0].routes[0].static.strip_prefix"), "{err}");
    // Whatever compiling would refuse, check refuses first (found by config_props).
    for index in ["'..'", "'.'", "'a\\b'", "'a/b'", "''"] {
        let err = check(&format!("      - static: {{root: /tmp, index: {index}}}\n")).unwrap();
        assert!(err.contains("frontends[0].routes[0].static.index"), "{index}: {err}");
    }
}

#[tokio::test]
async fn static_files_are_served_from_disk_through_the_frontend() {
    let app = named_http("app").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app.css"), "body{}\n").unwrap();
    let routes = format!(
        "      - match: {{path_prefix: /static/}}\n        static: {{root: \"{}\", strip_prefix: true}}\n",
        dir.path().join("assets").display()
    );
    let lb = start(&config(&routes, app.addr)).await;
    let web = lb.local_addr("web");
    let (status, headers, body) = get(web, "/static/app.css", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"body{}\n"[..]));
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/css"), "{headers:?}");
    assert_eq!(get(web, "/static/../../etc/passwd", &[]).await.0, 404);
    assert_eq!(get(web, "/static/missing.css", &[]).await.0, 404);
    assert_eq!(app.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn compression_applies_to_every_answer_by_accept_encoding() {
    use std::io::Read;
    let text = "all work and no play makes jack a dull boy\n".repeat(100);
    let app = http_server(
        "app",
        std::sync::Arc::new(move |_name, _req| {
            let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
                "server says hello, again and again\n".repeat(100),
            )));
            resp.headers_mut().insert("content-type", "text/plain".parse().unwrap());
            resp
        }),
    )
    .await;
    let routes = format!(
        "      - match: {{path: /fixed}}\n        respond: {{body: \"{}\", content_type: text/html}}\n",
        text.replace('\n', "\\n")
    );
    let yaml =
        config(&routes, app.addr).replace("    mode: http\n", "    mode: http\n    compression: {min_size: 1024}\n");
    let lb = start(&yaml).await;
    let web = lb.local_addr("web");
    let gunzip = |body: &[u8]| {
        let mut out = String::new();
        flate2::read::GzDecoder::new(body).read_to_string(&mut out).unwrap();
        out
    };
    // A fixed response and a server's answer alike.
    for (path, plain) in [("/fixed", text.clone()), ("/app", "server says hello, again and again\n".repeat(100))] {
        let (status, headers, body) = get(web, path, &[("accept-encoding", "br;q=0.5, gzip")]).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], "gzip", "{path}");
        assert!(headers["vary"].to_str().unwrap().eq_ignore_ascii_case("accept-encoding"), "{path}");
        assert!(body.len() < plain.len() / 4, "{path}: {} bytes", body.len());
        assert_eq!(gunzip(&body), plain, "{path}");
        // A client that takes no coding gets the bytes as they are, with Vary.
        let (_, headers, body) = get(web, path, &[]).await;
        assert!(headers.get("content-encoding").is_none(), "{path}");
        assert!(headers["vary"].to_str().unwrap().eq_ignore_ascii_case("accept-encoding"));
        assert_eq!(body, plain, "{path}");
    }
}

#[tokio::test]
async fn a_forward_proxy_frontend_goes_out_only_where_allowed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = named_http("app").await;
    let target = named_http("target").await;
    let echo_addr = echo().await;
    let yaml = config("", app.addr).replace("    routes:\n", "").replace(
        "    mode: http\n",
        &format!(
            "    mode: http\n    forward_proxy: {{allow: [\"127.0.0.0/8\"], connect_ports: [{}]}}\n",
            echo_addr.port()
        ),
    );
    let lb = start(&yaml).await;
    let web = lb.local_addr("web");
    // Absolute form: to the named host, Proxy-Authorization stripped.
    let request = format!(
        "GET http://{}/x?y=1 HTTP/1.1\r\nhost: {}\r\nproxy-authorization: Basic c2VjcmV0\r\nconnection: close\r\n\r\n",
        target.addr, target.addr
    );
    let reply = raw(web, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("target"), "{reply}");
    assert!(reply.contains("x-seen-uri: /x?y=1"), "{reply}");
    assert!(!reply.contains("x-seen-proxy-authorization"), "{reply}");
    // Outside `allow`: refused, nothing connected.
    let reply = raw(web, b"GET http://10.1.2.3/ HTTP/1.1\r\nhost: 10.1.2.3\r\nconnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    // CONNECT to an allowed port: a tunnel.
    let mut tunnel = tokio::net::TcpStream::connect(web).await.unwrap();
    let connect = format!("CONNECT {echo_addr} HTTP/1.1\r\nhost: {echo_addr}\r\n\r\n");
    tunnel.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(tunnel.read(&mut byte).await.unwrap(), 1, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    echo_round(&mut tunnel, "through the tunnel").await;
    // CONNECT to another port: refused.
    let reply =
        raw(web, format!("CONNECT {} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", target.addr).as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    assert_eq!(app.requests.load(Ordering::SeqCst), 0, "none of it went to the frontend's backend");
}

#[test]
fn a_forward_proxy_is_a_frontend_of_its_own() {
    let yaml = "frontends:\n  - name: out\n    bind: 127.0.0.1:0\n    mode: http\n    forward_proxy: {allow: [\"10.0.0.0/8\"]}\n";
    fulcrum::config::Config::parse(yaml).expect("no backend or route needed");
    let err = fulcrum::config::Config::parse(&yaml.replace("    forward_proxy: {allow: [\"10.0.0.0/8\"]}\n", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("frontends[0]") && err.contains("forward_proxy"), "{err}");
}

#[tokio::test]
async fn a_forward_proxy_alone_answers_400_to_a_request_that_names_no_destination() {
    let target = named_http("target").await;
    let yaml = "frontends:\n  - name: out\n    bind: 127.0.0.1:0\n    mode: http\n    forward_proxy: {allow: [\"127.0.0.0/8\"]}\n";
    let lb = start(yaml).await;
    let out = lb.local_addr("out");
    // Origin form, as to a web server: the client is not speaking to a proxy.
    let reply = raw(out, b"GET /x HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert!(reply.contains("absolute URI"), "says what a proxy wants: {reply}");
    // The same proxy still forwards what names its destination.
    let request = format!("GET http://{0}/ HTTP/1.1\r\nhost: {0}\r\nconnection: close\r\n\r\n", target.addr);
    let reply = raw(out, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

/// A file of `len` bytes in which every 8-byte word holds its own offset: any
/// byte from the wrong place (or a zero placeholder) shows.
fn numbered_file(path: &std::path::Path, len: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..len).map(|i| ((i / 8) as u64).to_le_bytes()[i % 8] ^ 0x5a).collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn sendfile_bytes(lb: &fulcrum::instance::Instance) -> u64 {
    lb.snapshot().frontends[0].stats.sendfile_bytes.load(Ordering::SeqCst)
}

#[tokio::test]
async fn static_files_go_out_with_sendfile_over_plain_http11_and_read_where_it_cannot_be_used() {
    use http_body_util::BodyExt;
    let app = named_http("app").await;
    let dir = tempfile::tempdir().unwrap();
    // Far above the 64 KiB a small file may be kept in memory (and the 16 MiB
    // a route keeps): every request reads the disk.
    let len = (16 << 20) + 12_345;
    let want = numbered_file(&dir.path().join("big.bin"), len);
    let text = "compressible text line\n".repeat(200);
    std::fs::write(dir.path().join("page.txt"), &text).unwrap();
    let routes = format!(
        "      - match: {{path_prefix: /files/}}\n        static: {{root: \"{}\", strip_prefix: true}}\n",
        dir.path().display()
    );
    let yaml =
        config(&routes, app.addr).replace("    mode: http\n", "    mode: http\n    compression: {min_size: 1024}\n");
    let lb = start(&yaml).await;
    let web = lb.local_addr("web");

    // Plain HTTP/1.1: the whole file, every byte by sendfile.
    let (status, _, body) = get(web, "/files/big.bin", &[]).await;
    assert_eq!(status, 200);
    assert!(body[..] == want[..], "the file's bytes, in order ({} of {len})", body.len());
    assert_eq!(sendfile_bytes(&lb), len as u64);

    // A range, and a second request on the same connection after it.
    let mut sender = client(web).await;
    let range = hyper::Request::get("/files/big.bin")
        .header("host", "t")
        .header("range", "bytes=300000-1000000")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(range).await.unwrap();
    assert_eq!(resp.status(), 206);
    let part = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(part[..] == want[300_000..=1_000_000]);
    let again = hyper::Request::get("/files/big.bin")
        .header("host", "t")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(again).await.unwrap();
    let whole = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(whole[..] == want[..]);
    assert_eq!(sendfile_bytes(&lb), 2 * len as u64 + 700_001);

    // Compressed on the way: read, not sent with sendfile.
    let before = sendfile_bytes(&lb);
    let (status, headers, body) = get(web, "/files/page.txt", &[("accept-encoding", "gzip")]).await;
    assert_eq!((status, headers["content-encoding"].to_str().unwrap()), (200, "gzip"));
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain).unwrap();
    assert_eq!(plain, text);
    assert_eq!(sendfile_bytes(&lb), before, "compressed bytes are not the file's");

    // h2c: hyper copies the bytes into frames, so they are read.
    let (mut h2, _conn) = h2c::<http_body_util::Full<bytes::Bytes>>(web).await;
    let req =
        hyper::Request::get("http://t/files/big.bin").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body[..] == want[..]);
    assert_eq!(sendfile_bytes(&lb), before, "h2 bytes are not sent with sendfile");
}

#[tokio::test]
async fn a_client_reading_slowly_gets_the_whole_file_by_sendfile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = named_http("app").await;
    let dir = tempfile::tempdir().unwrap();
    let len = (16 << 20) + 1;
    let want = numbered_file(&dir.path().join("big.bin"), len);
    let routes = format!("      - static: {{root: \"{}\"}}\n", dir.path().display());
    let lb = start(&config(&routes, app.addr)).await;
    // A small receive window: the proxy's socket fills and sendfile waits for
    // room again and again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(lb.local_addr("web")).await.unwrap();
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&got[..head_end]));
    assert!(got[head_end..] == want[..], "{} body bytes of {len}", got.len() - head_end);
    assert_eq!(sendfile_bytes(&lb), len as u64);
}
