//! `servers[].max_connections` with `backends[].queue`: a server never gets more
//! than its limit at once, whatever the load; the rest wait in the backend's
//! queue, in order, and are refused with a 503 when the queue is full, when the
//! wait would be too long, or when it was.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// An app server like a gunicorn with sync workers: it counts the requests it is
/// serving at once (and the most it ever served at once), notes the order they
/// came in, and answers each after `delay`, or once the test opens its gate.
struct App {
    addr: SocketAddr,
    name: &'static str,
    current: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<String>>>,
    gate: Arc<Semaphore>,
}

enum Pace {
    Delay(Duration),
    Gate,
}

async fn app(name: &'static str, pace: Pace) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let pace = Arc::new(pace);
    let shared = (current.clone(), peak.clone(), order.clone(), gate.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (current, peak, order, gate) = shared.clone();
            let pace = Arc::clone(&pace);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (current, peak, order, gate, pace) =
                        (current.clone(), peak.clone(), order.clone(), gate.clone(), pace.clone());
                    async move {
                        let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        order.lock().unwrap().push(req.uri().path().to_string());
                        match &*pace {
                            Pace::Delay(delay) => tokio::time::sleep(*delay).await,
                            Pace::Gate => gate.acquire().await.unwrap().forget(),
                        }
                        current.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    App { addr, name, current, peak, order, gate }
}

fn config(apps: &[&App], max_connections: usize, queue: &str) -> String {
    let servers: String = apps
        .iter()
        .map(|app| {
            format!("      - {{ name: {}, address: \"{}\", max_connections: {max_connections} }}\n", app.name, app.addr)
        })
        .collect();
    format!(
        "frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n    queue: {queue}\n    servers:\n{servers}"
    )
}

fn waiting(lb: &fulcrum::instance::Instance) -> usize {
    lb.snapshot().backends[0].stats.queue.len()
}

fn refused(lb: &fulcrum::instance::Instance) -> u64 {
    lb.snapshot().backends[0].stats.queue.refused.load(Ordering::SeqCst)
}

/// Sends `GET path` on a connection of its own, in the background.
fn spawn_get(addr: SocketAddr, path: &'static str) -> tokio::task::JoinHandle<(u16, Bytes)> {
    tokio::spawn(async move {
        let (status, _, body) = get(addr, path, &[]).await;
        (status, body)
    })
}

#[tokio::test]
async fn forty_concurrent_requests_on_two_servers_with_two_slots_each_are_all_answered() {
    let (a, b) = (
        app("a", Pace::Delay(Duration::from_millis(20))).await,
        app("b", Pace::Delay(Duration::from_millis(20))).await,
    );
    let lb = start(&config(&[&a, &b], 2, "{max: 100, timeout: 10s}")).await;
    let addr = lb.local_addr("web");
    let requests: Vec<_> = (0..40).map(|_| spawn_get(addr, "/")).collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body:?}");
    }
    for app in [&a, &b] {
        let peak = app.peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "server {} served {peak} at once", app.name);
    }
    let backend = &lb.snapshot().backends[0];
    assert!(backend.stats.queue.wait.get_sample_count() > 0, "some requests waited");
    assert_eq!((waiting(&lb), refused(&lb)), (0, 0));
    assert!(backend.members.iter().all(|m| m.state.active() == 0), "every slot given back");
}

#[tokio::test]
async fn waiters_are_served_in_order_and_a_full_queue_is_refused_at_once() {
    let a = app("a", Pace::Gate).await;
    let lb = start(&config(&[&a], 1, "{max: 3, timeout: 30s}")).await;
    let addr = lb.local_addr("web");
    let first = spawn_get(addr, "/first");
    wait_for("the first request at the server", Duration::from_secs(5), || a.current.load(Ordering::SeqCst) == 1).await;
    let mut queued = Vec::new();
    for (n, path) in ["/q1", "/q2", "/q3"].into_iter().enumerate() {
        queued.push(spawn_get(addr, path));
        wait_for("the request queued", Duration::from_secs(5), || waiting(&lb) == n + 1).await;
    }
    // The queue holds 3: the next one is refused without waiting for the 30 s.
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), get(addr, "/refused", &[])).await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(refused(&lb), 1);
    // One slot: each release lets the oldest waiter in, and only it.
    for next in 1..=3 {
        a.gate.add_permits(1);
        wait_for("the next request at the server", Duration::from_secs(5), || {
            a.order.lock().unwrap().len() == next + 1
        })
        .await;
    }
    a.gate.add_permits(1);
    assert_eq!(first.await.unwrap().0, 200);
    for request in queued {
        assert_eq!(request.await.unwrap().0, 200);
    }
    assert_eq!(*a.order.lock().unwrap(), ["/first", "/q1", "/q2", "/q3"]);
    assert_eq!(a.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wait_longer_than_the_queue_timeout_gets_a_503() {
    let a = app("a", Pace::Gate).await;
    let lb = start(&config(&[&a], 1, "{max: 10, timeout: 300ms}")).await;
    let addr = lb.local_addr("web");
    let holder = spawn_get(addr, "/hold");
    wait_for("the first request at the server", Duration::from_secs(5), || a.current.load(Ordering::SeqCst) == 1).await;
    let started = std::time::Instant::now();
    let (status, _, _) = get(addr, "/late", &[]).await;
    assert_eq!(status, 503);
    assert!(started.elapsed() >= Duration::from_millis(300), "refused only once the timeout ran out");
    assert_eq!((waiting(&lb), refused(&lb)), (0, 1));
    assert_eq!(lb.snapshot().frontends[0].stats.responses[4].load(Ordering::SeqCst), 1, "the 503 is counted");
    a.gate.add_permits(1);
    assert_eq!(holder.await.unwrap().0, 200);
    // The slot came back: the next request goes straight through.
    a.gate.add_permits(1);
    assert_eq!(get(addr, "/after", &[]).await.0, 200);
}

/// An HTTP/2 client that cancels its request (RST_STREAM) while it waits: its place
/// is given up, so it neither holds up the waiters behind it nor counts toward
/// `max`. (An HTTP/1.1 request stays queued until its turn or its timeout: hyper
/// does not watch the client's socket while a request is being answered.)
#[tokio::test]
async fn a_request_cancelled_while_queued_gives_up_its_place() {
    let a = app("a", Pace::Gate).await;
    let lb = start(&config(&[&a], 1, "{max: 10, timeout: 30s}")).await;
    let addr = lb.local_addr("web");
    let holder = spawn_get(addr, "/hold");
    wait_for("the first request at the server", Duration::from_secs(5), || a.current.load(Ordering::SeqCst) == 1).await;
    let (mut sender, conn) = h2c::<Full<Bytes>>(addr).await;
    let request = Request::get("http://x/gone").body(Full::new(Bytes::new())).unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    wait_for("queued", Duration::from_secs(5), || waiting(&lb) == 1).await;
    // Dropping the response future resets the stream.
    pending.abort();
    wait_for("the place given up", Duration::from_secs(5), || waiting(&lb) == 0).await;
    conn.abort();
    a.gate.add_permits(1);
    assert_eq!(holder.await.unwrap().0, 200);
    a.gate.add_permits(1);
    assert_eq!(get(addr, "/next", &[]).await.0, 200);
    assert_eq!(*a.order.lock().unwrap(), ["/hold", "/next"], "the cancelled request never reached the server");
}

#[tokio::test]
async fn a_request_whose_expected_wait_exceeds_the_timeout_is_refused_at_once() {
    let a = app("a", Pace::Delay(Duration::from_millis(400))).await;
    // Between two and three holds: the third waiter is refused, the second is not.
    let lb = start(&config(&[&a], 1, "{max: 10, timeout: 1150ms}")).await;
    let addr = lb.local_addr("web");
    // The queue learns how long the server holds a slot.
    assert_eq!(get(addr, "/learn", &[]).await.0, 200);
    let busy = spawn_get(addr, "/busy");
    wait_for("the server busy", Duration::from_secs(5), || a.current.load(Ordering::SeqCst) == 1).await;
    // Expected waits: 1 x 400 ms, 2 x 400 ms: they may wait.
    let second = spawn_get(addr, "/second");
    wait_for("queued", Duration::from_secs(5), || waiting(&lb) == 1).await;
    let third = spawn_get(addr, "/third");
    wait_for("queued", Duration::from_secs(5), || waiting(&lb) == 2).await;
    // 3 x 400 ms > 1.15 s: refused before the others are even served.
    let (status, _, _) = get(addr, "/hopeless", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(waiting(&lb), 2, "refused while the others still wait");
    for request in [busy, second, third] {
        assert_eq!(request.await.unwrap().0, 200);
    }
    assert_eq!(refused(&lb), 1);
}

#[tokio::test]
async fn consistent_hashing_sends_a_full_servers_keys_to_the_next_server() {
    let (a, b) = (app("a", Pace::Gate).await, app("b", Pace::Gate).await);
    let yaml = config(&[&a, &b], 1, "{max: 10, timeout: 10s}")
        .replace("  - name: app\n", "  - name: app\n    balance: consistent_hash\n    hash_key: header:x-user\n");
    let lb = start(&yaml).await;
    let addr = lb.local_addr("web");
    let one = tokio::spawn(async move { get(addr, "/", &[("x-user", "alice")]).await });
    wait_for("alice at her server", Duration::from_secs(5), || {
        a.current.load(Ordering::SeqCst) + b.current.load(Ordering::SeqCst) == 1
    })
    .await;
    // Her server is full: the same key goes to the other server, not to the queue.
    let two = tokio::spawn(async move { get(addr, "/", &[("x-user", "alice")]).await });
    wait_for("alice's second request at the other server", Duration::from_secs(5), || {
        a.current.load(Ordering::SeqCst) == 1 && b.current.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(waiting(&lb), 0);
    a.gate.add_permits(1);
    b.gate.add_permits(1);
    let bodies = [one.await.unwrap().2, two.await.unwrap().2];
    assert!(bodies.contains(&Bytes::from("a")) && bodies.contains(&Bytes::from("b")), "{bodies:?}");
}

#[tokio::test]
async fn tcp_connections_wait_for_a_server_slot() {
    let server = echo().await;
    let yaml = format!(
        "frontends:\n  - {{ name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: db }}\n\
         backends:\n  - name: db\n    queue: {{max: 5, timeout: 10s}}\n    servers:\n      - {{ name: s, address: \"{server}\", max_connections: 1 }}\n"
    );
    let lb = start(&yaml).await;
    let addr = lb.local_addr("db");
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    echo_round(&mut first, "first").await;
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_for("the second connection queued", Duration::from_secs(5), || waiting(&lb) == 1).await;
    drop(first);
    // The slot the first one held is handed over.
    echo_round(&mut second, "second").await;
    assert_eq!(waiting(&lb), 0);
    assert_eq!(lb.snapshot().backends[0].members[0].state.active(), 1);
}

#[test]
fn check_wants_a_limit_for_a_queue_and_sane_bounds() {
    let base = "frontends:\n  - { name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }\n\
                backends:\n  - name: app\n    queue: QUEUE\n    servers:\n      - { name: s, address: 127.0.0.1:9, max_connections: MAX }\n";
    let check = |queue: &str, max: &str| {
        fulcrum::config::Config::parse(&base.replace("QUEUE", queue).replace("MAX", max)).err().map(|e| e.to_string())
    };
    assert_eq!(check("{max: 10, timeout: 2s}", "4"), None);
    assert_eq!(check("{}", "4"), None, "defaults");
    let err = check("{max: 10}", "0").unwrap();
    assert!(err.contains("backends[0].queue") && err.contains("max_connections"), "{err}");
    let err = check("{max: 0}", "4").unwrap();
    assert!(err.contains("backends[0].queue.max"), "{err}");
    let err = check("{timeout: 0s}", "4").unwrap();
    assert!(err.contains("backends[0].queue.timeout"), "{err}");
    let err = check("{wait: 1s}", "4").unwrap();
    assert!(err.contains("wait"), "{err}");
}
