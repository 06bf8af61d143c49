//! Host rules over real loopback sockets (RFC 9112 section 3.2, RFC 9113 section
//! 8.3.1): HTTP/1.1 needs exactly one valid Host; the request target's authority
//! (absolute-form, h2 `:authority`) wins over Host for routing and for the Host the
//! server is sent.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

/// Servers `main` (default), `a` (host a.test) and `b` (host b.test) behind one
/// frontend; each answers with its name and echoes what it saw as `x-seen-*`.
struct Setup {
    fulcrum: fulcrum::instance::Instance,
    servers: Vec<HttpServer>,
}

impl Setup {
    async fn new() -> Setup {
        let mut servers = Vec::new();
        let mut backends = String::new();
        for name in ["main", "a", "b"] {
            let server = named_http(name).await;
            backends
                .push_str(&format!("  - {{name: {name}, servers: [{{name: {name}, address: '{}'}}]}}\n", server.addr));
            servers.push(server);
        }
        let yaml = format!(
            "frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: main
    routes:
      - {{match: {{host: a.test}}, backend: a}}
      - {{match: {{host: b.test}}, backend: b}}
backends:
{backends}"
        );
        Setup { fulcrum: start(&yaml).await, servers }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.fulcrum.local_addr("web")
    }

    /// Requests that reached any server.
    fn served(&self) -> usize {
        self.servers.iter().map(|s| s.requests.load(Ordering::SeqCst)).sum()
    }

    /// Sends `head` (the `\r\n\r\n` is added) on a fresh connection; the whole reply.
    async fn raw(&self, head: &str) -> String {
        let request = format!("{head}\r\n\r\n");
        tokio::time::timeout(Duration::from_secs(5), raw(self.addr(), request.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("no complete reply to {head:?}"))
    }
}

fn status(reply: &str) -> &str {
    reply.split(' ').nth(1).unwrap_or("")
}

/// The value of header `name` (lower-case) in a raw reply.
fn header<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let head = reply.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn http11_without_host_is_refused_and_not_forwarded() {
    let setup = Setup::new().await;
    for head in [
        "GET / HTTP/1.1\r\nconnection: close",
        "POST /upload HTTP/1.1\r\ncontent-length: 0\r\nconnection: close",
        // The target's authority does not stand in for the Host line in HTTP/1.1.
        "GET http://b.test/ HTTP/1.1\r\nconnection: close",
    ] {
        let reply = setup.raw(head).await;
        assert_eq!(status(&reply), "400", "{head:?}: {reply}");
    }
    assert_eq!(setup.served(), 0, "a refused request reached a server");
    let stats = &setup.fulcrum.snapshot().frontends[0].stats;
    assert_eq!(stats.responses[3].load(Ordering::Relaxed), 3, "each 400 counted");
}

#[tokio::test]
async fn two_host_lines_are_refused_even_when_equal() {
    let setup = Setup::new().await;
    for head in [
        "GET / HTTP/1.1\r\nhost: a.test\r\nhost: b.test\r\nconnection: close",
        "GET / HTTP/1.1\r\nhost: a.test\r\nhost: a.test\r\nconnection: close",
        "GET / HTTP/1.0\r\nhost: a.test\r\nhost: a.test",
        "GET http://b.test/ HTTP/1.1\r\nhost: b.test\r\nhost: b.test\r\nconnection: close",
    ] {
        let reply = setup.raw(head).await;
        assert_eq!(status(&reply), "400", "{head:?}: {reply}");
    }
    assert_eq!(setup.served(), 0, "a refused request reached a server");
}

#[tokio::test]
async fn invalid_host_values_are_refused() {
    let setup = Setup::new().await;
    for host in ["a b", "a.test:port", "a.test:99999", "u@a.test", "[::1", "a.test/x", ":80"] {
        let head = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close");
        let reply = setup.raw(&head).await;
        assert_eq!(status(&reply), "400", "host {host:?}: {reply}");
    }
    assert_eq!(setup.served(), 0, "a refused request reached a server");
    // Valid, if unusual: still routed (port ignored, case ignored).
    for (host, server) in [("a.test:", "a"), ("A.TEST:8080", "a"), ("[::1]:80", "main"), ("127.0.0.1", "main")] {
        let reply = setup.raw(&format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close")).await;
        assert_eq!(status(&reply), "200", "host {host:?}: {reply}");
        assert_eq!(body(&reply), server, "host {host:?}: {reply}");
        assert_eq!(header(&reply, "x-seen-host"), Some(host), "Host kept as sent: {reply}");
    }
}

#[tokio::test]
async fn http10_without_host_is_answered() {
    let setup = Setup::new().await;
    let reply = setup.raw("GET / HTTP/1.0").await;
    assert_eq!(status(&reply), "200", "{reply}");
    assert_eq!(body(&reply), "main", "no host: the default backend");
    // Sent on as HTTP/1.1, which needs a Host: the server's address, as nginx does.
    let sent = format!("x-seen-host: {}", setup.servers[0].addr);
    assert!(reply.to_ascii_lowercase().contains(&sent), "{reply}");
    let reply = setup.raw("GET / HTTP/1.0\r\nhost: b.test").await;
    assert_eq!((status(&reply), body(&reply)), ("200", "b"), "{reply}");
}

#[tokio::test]
async fn absolute_form_target_wins_over_host() {
    let setup = Setup::new().await;
    let reply = setup.raw("GET http://b.test/p?q=1 HTTP/1.1\r\nhost: a.test\r\nconnection: close").await;
    assert_eq!(status(&reply), "200", "{reply}");
    assert_eq!(body(&reply), "b", "routed by the target's authority: {reply}");
    assert_eq!(header(&reply, "x-seen-host"), Some("b.test"), "{reply}");
    assert_eq!(header(&reply, "x-seen-x-forwarded-host"), Some("b.test"), "{reply}");
    assert_eq!(header(&reply, "x-seen-uri"), Some("/p?q=1"), "origin-form to the server: {reply}");
    // With a port; and without a Host line in HTTP/1.0.
    let reply = setup.raw("GET http://b.test:8080/ HTTP/1.1\r\nhost: main.test\r\nconnection: close").await;
    assert_eq!((body(&reply), header(&reply, "x-seen-host")), ("b", Some("b.test:8080")), "{reply}");
    let reply = setup.raw("GET http://a.test/ HTTP/1.0").await;
    assert_eq!((body(&reply), header(&reply, "x-seen-host")), ("a", Some("a.test")), "{reply}");
    // Userinfo in the target: refused.
    let reply = setup.raw("GET http://u@b.test/ HTTP/1.1\r\nhost: b.test\r\nconnection: close").await;
    assert_eq!(status(&reply), "400", "{reply}");
    assert_eq!(setup.servers[1].requests.load(Ordering::SeqCst), 1, "a.test served only the HTTP/1.0 request");
}

#[tokio::test]
async fn h2c_authority_routes_and_wins_over_host() {
    let setup = Setup::new().await;
    let (mut sender, _conn) = h2c(setup.addr()).await;
    let mut send = |req: Request<Full<Bytes>>| {
        let sent = sender.send_request(req);
        async move {
            let resp = sent.await.unwrap();
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            let seen = parts.headers.get("x-seen-host").map(|v| v.to_str().unwrap().to_string());
            (status, seen, String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap())
        }
    };
    let req = Request::get("http://b.test/x").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send(req).await, (200, Some("b.test".to_string()), "b".to_string()));
    // A Host header alongside :authority: :authority wins and replaces it.
    let req = Request::get("http://b.test/x").header("host", "a.test").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send(req).await, (200, Some("b.test".to_string()), "b".to_string()));
    let req = Request::get("http://a.test:8443/x").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send(req).await, (200, Some("a.test:8443".to_string()), "a".to_string()));
}
