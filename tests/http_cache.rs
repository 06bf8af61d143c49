//! `backends[].cache`: the shared HTTP cache (RFC 9111) in front of a backend's
//! servers, over real loopback sockets. The origin servers here count every
//! request they get, so "served from the cache" means "the server never saw it".
//! Time is moved with the cache's own clock (`advance_clock`) or a Date the
//! origin sends in the past: no test sleeps.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;
type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// An origin server: answers with `handler`, counts requests, keeps their heads.
struct Origin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

impl Origin {
    fn count(&self) -> usize {
        self.requests.load(SeqCst)
    }

    /// The headers of the last request the origin got.
    fn last(&self) -> HeaderMap {
        self.seen.lock().unwrap().last().expect("a request").headers.clone()
    }
}

async fn origin(handler: impl Fn(http::request::Parts) -> Reply + Send + Sync + 'static) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let (count, log) = (Arc::clone(&requests), Arc::clone(&seen));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (handler, count, log) = (Arc::clone(&handler), Arc::clone(&count), Arc::clone(&log));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (parts, _) = req.into_parts();
                    count.fetch_add(1, SeqCst);
                    log.lock().unwrap().push(parts.clone());
                    let reply = handler(parts);
                    async move { Ok::<_, Infallible>(reply.await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Origin { addr, requests, seen }
}

/// A response with `body` and `headers`.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response
            .headers_mut()
            .append(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

fn ready(response: Response<Body>) -> Reply {
    Box::pin(async move { response })
}

/// A body the origin sends chunk by chunk, as its test releases them.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

fn config(origin: SocketAddr, cache: &str) -> String {
    format!(
        "frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n    cache: {cache}\n    servers:\n      - {{ name: a, address: \"{origin}\" }}\n"
    )
}

const CACHE: &str = "{ size: 1MiB, max_object: 64KiB }";

/// One request on a fresh connection: status, headers, body.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Bytes) {
    let mut sender = client(addr).await;
    let mut req = Request::builder().method(method).uri(path).header("host", "site.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    (status, parts.headers, body.collect().await.unwrap().to_bytes())
}

async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Bytes) {
    send(addr, "GET", path, headers).await
}

fn age(headers: &HeaderMap) -> u64 {
    headers.get("age").expect("an Age header").to_str().unwrap().parse().unwrap()
}

fn cache(lb: &fulcrum::instance::Instance) -> Arc<fulcrum::proxy::http::cache::HttpCache> {
    Arc::clone(lb.snapshot().backends[0].cache.as_ref().expect("the backend has a cache"))
}

/// hit, miss, stale, bypass.
fn counts(lb: &fulcrum::instance::Instance) -> [u64; 4] {
    let cache = cache(lb);
    cache.counters().labelled().map(|(_, count)| count.load(SeqCst))
}

/// An origin answering every request with its path as the body, fresh for a minute.
async fn fresh_origin() -> Origin {
    origin(|req| {
        let body = req.uri.path().to_string();
        ready(reply(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")], body))
    })
    .await
}

#[tokio::test]
async fn a_fresh_response_is_served_without_the_server_and_a_head_from_it() {
    let server = fresh_origin().await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    let (status, headers, body) = fetch(web, "/page", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"/page"[..]));
    assert_eq!(age(&headers), 0, "a stored response carries Age from the first");
    for _ in 0..3 {
        let (status, headers, body) = fetch(web, "/page", &[]).await;
        assert_eq!((status, &body[..]), (200, &b"/page"[..]));
        assert_eq!(headers["etag"], "\"v1\"");
        assert!(headers.contains_key("age"));
    }
    assert_eq!(server.count(), 1, "three hits, one server request");
    // A HEAD is answered from the GET's entry, with its length and no body.
    let (status, headers, body) = send(web, "HEAD", "/page", &[]).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "5");
    // The client's own validators get a 304 from the entry.
    let (status, headers, _) = fetch(web, "/page", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, 304);
    assert!(headers.contains_key("age"));
    assert_eq!(server.count(), 1);
    // Another path, or another query, is another entry.
    assert_eq!(fetch(web, "/page?x=1", &[]).await.2, "/page");
    assert_eq!(server.count(), 2);
    assert_eq!(counts(&lb), [5, 2, 0, 0]);
}

#[tokio::test]
async fn an_empty_204_is_stored_and_served_without_a_length() {
    let server = origin(|_| ready(reply(204, &[("cache-control", "max-age=60")], ""))).await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    for _ in 0..2 {
        let (status, headers, body) = fetch(web, "/ping", &[]).await;
        assert_eq!((status, body.len()), (204, 0));
        assert!(!headers.contains_key("content-length"));
        assert!(headers.contains_key("age"));
    }
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let server = origin(|req| {
        if req.headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
            ready(reply(304, &[("cache-control", "max-age=600"), ("etag", "\"v1\"")], ""))
        } else {
            ready(reply(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\""), ("x-kind", "full")], "body-v1"))
        }
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    assert_eq!(fetch(web, "/doc", &[]).await.2, "body-v1");
    cache(&lb).advance_clock(Duration::from_secs(61));
    let (status, headers, body) = fetch(web, "/doc", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"body-v1"[..]), "the client gets the stored body");
    assert_eq!(server.count(), 2);
    assert_eq!(server.last()["if-none-match"], "\"v1\"", "revalidated with the entry's ETag");
    assert_eq!(headers["cache-control"], "max-age=600", "the 304's fields replace the stored ones");
    assert_eq!(headers["x-kind"], "full", "the others stay");
    assert_eq!(headers["content-length"], "7");
    // Fresh again for 600s: a hit, whose Age grows with the clock.
    let first = age(&fetch(web, "/doc", &[]).await.1);
    cache(&lb).advance_clock(Duration::from_secs(100));
    let later = age(&fetch(web, "/doc", &[]).await.1);
    // Whole seconds: a second boundary may pass between the two requests.
    assert!((first + 100..=first + 101).contains(&later), "{first} then {later}");
    assert_eq!(server.count(), 2);
    assert_eq!(counts(&lb), [2, 1, 1, 0]);
}

#[tokio::test]
async fn age_counts_from_the_date_the_server_sent() {
    let server = origin(|req| {
        // /dated: sent 100s ago by its Date; /aged: sent now, but 50s old by its Age.
        let (back, age) = if req.uri.path() == "/aged" { (0, "50") } else { (100, "0") };
        let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(back));
        ready(reply(200, &[("cache-control", "max-age=3600"), ("date", &date), ("age", age)], "x"))
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    let first = age(&fetch(web, "/dated", &[]).await.1);
    assert!((100..=101).contains(&first), "Age from a Date 100s old: {first}");
    cache(&lb).advance_clock(Duration::from_secs(7));
    let hit = age(&fetch(web, "/dated", &[]).await.1);
    assert!((first + 7..=first + 8).contains(&hit), "{first} then {hit}");
    // An Age from upstream counts too (plus the exchange's own delay).
    let aged = age(&fetch(web, "/aged", &[]).await.1);
    assert!((50..=51).contains(&aged), "{aged}");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn no_cache_responses_and_no_cache_requests_are_revalidated() {
    let server = origin(|req| {
        let conditional = req.headers.contains_key("if-none-match");
        let control = if req.uri.path() == "/always" { "no-cache" } else { "max-age=60" };
        match conditional {
            true => ready(reply(304, &[("cache-control", control), ("etag", "\"e\"")], "")),
            false => ready(reply(200, &[("cache-control", control), ("etag", "\"e\"")], "stored")),
        }
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    for n in 1..=3 {
        let (status, _, body) = fetch(web, "/always", &[]).await;
        assert_eq!((status, &body[..]), (200, &b"stored"[..]));
        assert_eq!(server.count(), n, "every use asks the server");
    }
    assert_eq!(server.last()["if-none-match"], "\"e\"");
    // A fresh entry, but the client asks for revalidation.
    fetch(web, "/fresh", &[]).await;
    fetch(web, "/fresh", &[]).await;
    assert_eq!(server.count(), 4);
    let (status, _, body) = fetch(web, "/fresh", &[("cache-control", "no-cache")]).await;
    assert_eq!((status, &body[..]), (200, &b"stored"[..]));
    assert_eq!(server.count(), 5);
    assert_eq!(server.last()["if-none-match"], "\"e\"");
    fetch(web, "/fresh", &[("pragma", "no-cache")]).await;
    assert_eq!(server.count(), 6, "Pragma: no-cache too");
    // only-if-cached: never the server.
    assert_eq!(fetch(web, "/fresh", &[("cache-control", "only-if-cached")]).await.0, 200);
    assert_eq!(fetch(web, "/absent", &[("cache-control", "only-if-cached")]).await.0, 504);
    assert_eq!(server.count(), 6);
}

#[tokio::test]
async fn what_must_not_be_shared_is_not_stored() {
    let server = origin(|req| {
        let headers: &[(&str, &str)] = match req.uri.path() {
            "/no-store" => &[("cache-control", "no-store, max-age=60")],
            "/private" => &[("cache-control", "private, max-age=60")],
            "/cookie" => &[("cache-control", "max-age=60"), ("set-cookie", "session=1")],
            "/vary-any" => &[("cache-control", "max-age=60"), ("vary", "*")],
            "/silent" => &[("last-modified", "Thu, 01 Jan 2015 00:00:00 GMT")],
            "/found" => &[("cache-control", "max-age=60"), ("location", "/elsewhere")],
            "/public" => &[("cache-control", "public, max-age=60")],
            _ => &[("cache-control", "max-age=60")],
        };
        let status = if req.uri.path() == "/found" { 302 } else { 200 };
        ready(reply(status, headers, "x"))
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    let server = &server;
    let twice = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        let before = server.count();
        fetch(web, path, headers).await;
        let (_, response, _) = fetch(web, path, headers).await;
        (server.count() - before, response)
    };
    for path in ["/no-store", "/private", "/cookie", "/vary-any", "/silent", "/found"] {
        let (sent, headers) = twice(path, &[]).await;
        assert_eq!(sent, 2, "{path} is not stored");
        assert!(!headers.contains_key("age"), "{path} passes through untouched");
    }
    // Credentials: stored only when the response says it may be shared.
    assert_eq!(twice("/auth", &[("authorization", "Bearer a")]).await.0, 2);
    assert_eq!(twice("/public", &[("authorization", "Bearer a")]).await.0, 1);
    // The client says no-store: the cache steps aside, both ways.
    assert_eq!(twice("/plain", &[("cache-control", "no-store")]).await.0, 2);
    assert_eq!(twice("/plain", &[]).await.0, 1);
    // Ranges are not served from whole stored responses.
    assert_eq!(twice("/ranged", &[("range", "bytes=0-0")]).await.0, 2);
    let [hit, miss, stale, bypass] = counts(&lb);
    assert_eq!((hit, stale), (2, 0));
    assert_eq!(bypass, 4, "no-store and range requests");
    assert_eq!(miss, 16, "six unstorable paths twice, /auth twice, /public and /plain once");
}

#[tokio::test]
async fn vary_keeps_a_variant_per_request_header_value() {
    let server = origin(|req| {
        let lang = req.headers.get("accept-language").map_or("none", |v| v.to_str().unwrap()).to_string();
        let vary = if req.uri.path() == "/any" { "*" } else { "Accept-Language" };
        ready(reply(200, &[("cache-control", "max-age=60"), ("vary", vary)], lang))
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    for lang in ["de", "en", "de", "en"] {
        let (_, headers, body) = fetch(web, "/greeting", &[("accept-language", lang)]).await;
        assert_eq!(body, lang);
        assert_eq!(headers["vary"], "Accept-Language");
    }
    assert_eq!(server.count(), 2, "one server request per variant");
    assert_eq!(fetch(web, "/greeting", &[]).await.2, "none", "no header is a variant of its own");
    assert_eq!(fetch(web, "/greeting", &[("accept-language", "de")]).await.2, "de");
    assert_eq!(server.count(), 3);
    assert_eq!(cache(&lb).entries(), 3);
    fetch(web, "/any", &[("accept-language", "de")]).await;
    fetch(web, "/any", &[("accept-language", "de")]).await;
    assert_eq!(server.count(), 5, "Vary: * is never stored");
}

#[tokio::test]
async fn concurrent_misses_make_one_server_request() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::clone(&gate);
    let server = origin(move |_| {
        let held = Arc::clone(&held);
        Box::pin(async move {
            let _permit = held.acquire().await.unwrap();
            reply(200, &[("cache-control", "max-age=60")], "cold")
        })
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    let clients: Vec<_> = (0..50).map(|_| tokio::spawn(fetch(web, "/cold", &[]))).collect();
    let frontend = Arc::clone(&lb.snapshot().frontends[0]);
    let arrived = || frontend.stats.http_requests.load(SeqCst) == 50 && server.count() == 1;
    wait_for("50 requests in, one at the server", Duration::from_secs(10), arrived).await;
    gate.add_permits(100);
    for client in clients {
        let (status, _, body) = client.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"cold"[..]));
    }
    assert_eq!(server.count(), 1, "the 49 others waited for the first");
    assert_eq!(counts(&lb), [49, 1, 0, 0]);
}

#[tokio::test]
async fn a_response_above_max_object_streams_through_uncached() {
    let gates: Arc<Mutex<Vec<tokio::sync::mpsc::Sender<Bytes>>>> = Arc::default();
    let senders = Arc::clone(&gates);
    let server = origin(move |req| {
        let big = Bytes::from(vec![b'b'; 100 * 1024]);
        match req.uri.path() {
            "/sized" => ready(reply(200, &[("cache-control", "max-age=60")], big)),
            // No Content-Length: the size shows only while streaming.
            _ => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                senders.lock().unwrap().push(tx);
                let mut response = Response::new(Chunks(rx).boxed());
                response.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                ready(response)
            }
        }
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    for _ in 0..2 {
        let (status, _, body) = fetch(web, "/sized", &[]).await;
        assert_eq!((status, body.len()), (200, 100 * 1024));
    }
    assert_eq!(server.count(), 2, "larger than max_object by its Content-Length: not stored");

    // Streamed: the client has the first 100 KiB before the server sends the rest.
    let mut sender = client(web).await;
    let req = Request::get("/streamed").header("host", "site.test").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert!(response.headers().contains_key("age"), "storable by its head");
    let mut body = response.into_body();
    let tx = gates.lock().unwrap().pop().unwrap();
    tx.send(Bytes::from(vec![b's'; 100 * 1024])).await.unwrap();
    let mut received = 0;
    while received < 100 * 1024 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
        received += frame.data_ref().map_or(0, |d| d.len());
    }
    tx.send(Bytes::from_static(b"end")).await.unwrap();
    drop(tx);
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, 100 * 1024 + 3);
    assert_eq!(cache(&lb).entries(), 0, "outgrew max_object while streaming: not stored");

    // A streamed body within max_object is stored once whole.
    let fetching = tokio::spawn(fetch(web, "/small", &[]));
    let tx = loop {
        if let Some(tx) = gates.lock().unwrap().pop() {
            break tx;
        }
        tokio::task::yield_now().await;
    };
    tx.send(Bytes::from_static(b"chunk-1,")).await.unwrap();
    tx.send(Bytes::from_static(b"chunk-2")).await.unwrap();
    drop(tx);
    assert_eq!(fetching.await.unwrap().2, "chunk-1,chunk-2");
    let count = server.count();
    let (_, headers, body) = fetch(web, "/small", &[]).await;
    assert_eq!(body, "chunk-1,chunk-2");
    assert_eq!(headers["content-length"], "15");
    assert_eq!(server.count(), count, "a hit");
}

#[tokio::test]
async fn the_least_recently_used_go_first_and_bytes_stay_within_size() {
    let server = origin(|_| ready(reply(200, &[("cache-control", "max-age=60")], vec![b'x'; 3000]))).await;
    // 16 KiB holds four of these 3000-byte responses (heads and keys counted too).
    let lb = start(&config(server.addr, "{ size: 16KiB, max_object: 16KiB }")).await;
    let web = lb.local_addr("web");
    for n in 0..4 {
        fetch(web, &format!("/{n}"), &[]).await;
    }
    assert_eq!(cache(&lb).entries(), 4);
    fetch(web, "/0", &[]).await;
    assert_eq!(server.count(), 4, "/0 is a hit, and the most recently used now");
    for n in 4..12 {
        fetch(web, &format!("/{n}"), &[]).await;
        assert!(cache(&lb).bytes() <= 16 * 1024, "bytes {} after /{n}", cache(&lb).bytes());
    }
    assert_eq!(cache(&lb).entries(), 4);
    let before = server.count();
    fetch(web, "/11", &[]).await;
    assert_eq!(server.count(), before, "the newest stays");
    fetch(web, "/1", &[]).await;
    assert_eq!(server.count(), before + 1, "the oldest went");
}

#[tokio::test]
async fn unsafe_requests_that_succeed_invalidate_the_url() {
    let server = origin(|req| {
        let status = if req.uri.path() == "/broken" && req.method == http::Method::POST { 500 } else { 200 };
        let location: &[(&str, &str)] = match req.method {
            http::Method::POST if req.uri.path() == "/items" => &[("location", "/items/7")],
            _ => &[("cache-control", "max-age=60")],
        };
        ready(reply(status, location, req.uri.path().to_string()))
    })
    .await;
    let lb = start(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    for path in ["/item", "/broken", "/items/7"] {
        fetch(web, path, &[]).await;
        fetch(web, path, &[]).await;
    }
    assert_eq!(server.count(), 3);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        send(web, method, "/item", &[]).await;
        let before = server.count();
        fetch(web, "/item", &[]).await;
        assert_eq!(server.count(), before + 1, "{method} dropped the entry");
    }
    // A failed POST changes nothing.
    assert_eq!(send(web, "POST", "/broken", &[]).await.0, 500);
    let before = server.count();
    fetch(web, "/broken", &[]).await;
    assert_eq!(server.count(), before);
    // What Location names on the same origin goes too.
    send(web, "POST", "/items", &[]).await;
    let before = server.count();
    fetch(web, "/items/7", &[]).await;
    assert_eq!(server.count(), before + 1);
}

const TOKEN: &str = "purge-token-0123456789";

async fn admin_post(admin: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut sender = client(admin).await;
    let mut req = Request::post(path).header("host", "admin");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = sender.send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn purge_by_prefix_takes_the_token_and_empties_what_matches() {
    let server = fresh_origin().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let yaml = format!(
        "admin: {{ bind: 127.0.0.3:0, token_file: admin.token }}\n{}  - name: plain\n    servers:\n      - {{ name: p, address: \"{}\" }}\n",
        config(server.addr, CACHE),
        server.addr
    );
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, yaml).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&path, fulcrum::workers::Workers::none()).await.unwrap();
    let (web, admin) = (lb.local_addr("web"), lb.admin_addr().unwrap());
    for path in ["/a/1", "/a/2", "/b/1"] {
        fetch(web, path, &[]).await;
    }
    assert_eq!(cache(&lb).entries(), 3);
    let purge = r#"{"backend": "app", "path_prefix": "/a/"}"#;
    assert_eq!(admin_post(admin, "/api/cache/purge", None, purge).await.0, 401);
    assert_eq!(admin_post(admin, "/api/cache/purge", Some("wrong-token-0123456789"), purge).await.0, 401);
    assert_eq!(cache(&lb).entries(), 3, "refused: nothing purged");
    let (status, answer) = admin_post(admin, "/api/cache/purge", Some(TOKEN), "{not json").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) =
        admin_post(admin, "/api/cache/purge", Some(TOKEN), r#"{"backend": "nope", "path_prefix": "/"}"#).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) =
        admin_post(admin, "/api/cache/purge", Some(TOKEN), r#"{"backend": "plain", "path_prefix": "/"}"#).await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("no cache"), "{answer}");
    let (status, answer) = admin_post(admin, "/api/cache/purge", Some(TOKEN), purge).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["purged"], 2);
    assert_eq!(cache(&lb).entries(), 1);
    let before = server.count();
    fetch(web, "/b/1", &[]).await;
    assert_eq!(server.count(), before, "/b/1 kept");
    fetch(web, "/a/1", &[]).await;
    assert_eq!(server.count(), before + 1, "/a/1 purged");

    let metrics = String::from_utf8(get(admin, "/metrics", &[]).await.2.to_vec()).unwrap();
    for line in [
        "fulcrum_admin_writes_total{action=\"cache_purge\",result=\"ok\"} 1",
        "fulcrum_admin_writes_total{action=\"cache_purge\",result=\"denied\"} 2",
        "fulcrum_admin_writes_total{action=\"cache_purge\",result=\"invalid\"} 3",
        "fulcrum_cache_requests_total{backend=\"app\",result=\"hit\"} 1",
        "fulcrum_cache_requests_total{backend=\"app\",result=\"miss\"} 4",
        "fulcrum_cache_requests_total{backend=\"app\",result=\"stale\"} 0",
        "fulcrum_cache_requests_total{backend=\"app\",result=\"bypass\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let bytes = cache(&lb).bytes();
    assert!(bytes > 0);
    assert!(metrics.lines().any(|l| l == format!("fulcrum_cache_bytes{{backend=\"app\"}} {bytes}")), "{metrics}");
    assert!(!metrics.contains("fulcrum_cache_bytes{backend=\"plain\"}"), "no series for a backend without a cache");

    let status: serde_json::Value = serde_json::from_slice(&get(admin, "/api/status", &[]).await.2).unwrap();
    let report = &status["backends"][0]["cache"];
    assert_eq!((report["hits"].as_u64(), report["bytes"].as_u64()), (Some(1), Some(bytes)), "{report}");
    assert!(status["backends"][1].get("cache").is_none());
    let page = String::from_utf8(get(admin, "/status", &[]).await.2.to_vec()).unwrap();
    assert!(page.contains("Cache: ") && page.contains("1 hits"), "the backend's row tells its cache");
}

#[tokio::test]
async fn without_a_token_file_a_purge_is_refused() {
    let server = fresh_origin().await;
    let yaml = format!("admin: {{ bind: 127.0.0.3:0 }}\n{}", config(server.addr, CACHE));
    let lb = start(&yaml).await;
    let (status, _) =
        admin_post(lb.admin_addr().unwrap(), "/api/cache/purge", None, r#"{"backend": "app", "path_prefix": "/"}"#)
            .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_reload_keeps_the_cache_while_its_settings_stay() {
    let server = fresh_origin().await;
    let (lb, file) = start_file(&config(server.addr, CACHE)).await;
    let web = lb.local_addr("web");
    fetch(web, "/kept", &[]).await;
    reload_with(&lb, &file, &config(server.addr, CACHE)).await;
    fetch(web, "/kept", &[]).await;
    assert_eq!(server.count(), 1, "same settings: same entries");
    reload_with(&lb, &file, &config(server.addr, "{ size: 2MiB, max_object: 64KiB }")).await;
    fetch(web, "/kept", &[]).await;
    assert_eq!(server.count(), 2, "new settings: a new, empty cache");
    assert_eq!(counts(&lb), [1, 2, 0, 0], "its counters go on");
}

#[test]
fn check_names_the_cache_keys_it_refuses() {
    let check = |cache: &str| {
        let yaml = config("127.0.0.1:9".parse().unwrap(), cache);
        fulcrum::config::Config::parse(&yaml).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert_eq!(check("{ size: 256MiB, max_object: 8MiB }"), "");
    assert_eq!(check("{ size: 1GB }"), "");
    assert!(check("{ size: 0 }").contains("backends[0].cache.size: must be greater than 0"));
    let err = check("{ size: 1MiB, max_object: 2MiB }");
    assert!(err.contains("backends[0].cache.max_object: 2MiB is more than the cache's size (1MiB)"), "{err}");
    let err = check("{ size: 8 furlongs }");
    assert!(err.contains("backends[0].cache.size") && err.contains("256MiB"), "{err}");
    assert!(check("{ size: 1MiB, max_objects: 1KiB }").contains("max_objects"));
    assert!(check("{ max_object: 1KiB }").contains("size"));
}
