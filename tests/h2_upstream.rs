//! HTTP/2 to servers (`backends[].protocol: h2c | h2`) over real loopback sockets:
//! requests multiplexed on one connection, gRPC-style full-duplex streaming with
//! trailers passed through, HTTP/2 over TLS by ALPN, and health checks in HTTP/2.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::pki::Pki;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// The request body streamed back as it arrives, then `grpc-status: 0` as trailers.
struct EchoThenTrailers {
    inner: Incoming,
    done: bool,
}

impl Body for EchoThenTrailers {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
            },
            other => other,
        }
    }
}

/// What an HTTP/2 test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections the server has finished with (closed after a GOAWAY, or lost).
    closed: AtomicUsize,
    requests: Mutex<Vec<(http::Version, Option<HeaderValue>)>>,
}

/// An HTTP/2 server (prior knowledge, or over `tls` with ALPN h2): `/echo` streams
/// the body back with trailers, anything else answers `h2-app`.
async fn h2_server(tls: Option<tokio_rustls::TlsAcceptor>) -> (std::net::SocketAddr, Arc<Seen>) {
    h2_server_with(tls, false).await
}

/// [`h2_server`]; with `goaway_after_one`, each connection is shut down (GOAWAY)
/// once it has answered one request.
async fn h2_server_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
    goaway_after_one: bool,
) -> (std::net::SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let (state, tls) = (Arc::clone(&state), tls.clone());
            tokio::spawn(async move {
                let answered = Arc::new(tokio::sync::Notify::new());
                let notify = Arc::clone(&answered);
                let finished = Arc::clone(&state);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    state.requests.lock().unwrap().push((req.version(), req.headers().get("te").cloned()));
                    notify.notify_one();
                    async move {
                        let body = if req.uri().path() == "/echo" {
                            EchoThenTrailers { inner: req.into_body(), done: false }.boxed()
                        } else {
                            http_body_util::Full::new(Bytes::from("h2-app")).map_err(|never| match never {}).boxed()
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(tcp), service));
                        if goaway_after_one {
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = answered.notified() => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        } else {
                            let _ = conn.await;
                        }
                        finished.closed.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else { return };
                        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2 offered");
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A request body fed chunk by chunk from the test.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

fn config(server: std::net::SocketAddr, backend_extra: &str) -> String {
    format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
{backend_extra}
    servers: [{{ name: s, address: '{server}' }}]
"
    )
}

#[tokio::test]
async fn a_grpc_style_stream_goes_both_ways_at_once_and_its_trailers_come_through() {
    let (server, seen) = h2_server(None).await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let tcp = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let (chunks, body) = tokio::sync::mpsc::channel(4);
    let req = Request::post("http://grpc.test/echo")
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Chunks(body))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Each message comes back before the next is sent: a full-duplex stream.
    for i in 0..3 {
        let message = Bytes::from(format!("message-{i}"));
        chunks.send(message.clone()).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("echo in time");
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), message);
    }
    drop(chunks);
    let trailers = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
        if let Ok(trailers) = frame.into_trailers() {
            break trailers;
        }
    };
    assert_eq!(trailers["grpc-status"], "0");
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests, vec![(http::Version::HTTP_2, Some(HeaderValue::from_static("trailers")))]);
}

#[tokio::test]
async fn http11_clients_share_one_http2_connection_to_the_server() {
    let (server, seen) = h2_server(None).await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let addr = lb.local_addr("web");
    // A cold burst: the first request opens the connection, the others wait for it
    // rather than each opening one of their own.
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(tokio::spawn(async move { get(addr, "/", &[]).await }));
    }
    for client in clients {
        let (status, _, body) = client.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"h2-app"[..]));
    }
    assert_eq!(get(addr, "/", &[]).await.0, 200);
    assert_eq!(seen.requests.lock().unwrap().len(), 17);
    assert!(seen.requests.lock().unwrap().iter().all(|(version, _)| *version == http::Version::HTTP_2));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "every request on one connection");
}

#[tokio::test]
async fn a_burst_to_a_dead_http2_server_fails_together_not_one_connect_timeout_after_another() {
    // A server whose accept queue is full: the kernel drops further SYNs, so a
    // connect hangs until timeouts.connect, like one to a host that vanished.
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    silent.listen(0).unwrap();
    let server = silent.local_addr().unwrap().as_socket().unwrap();
    let _filler = TcpStream::connect(server).await.unwrap();
    let lb = start(&config(server, "    protocol: h2c\n    timeouts: {connect: 300ms}")).await;
    let addr = lb.local_addr("web");
    let started = tokio::time::Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move { get(addr, "/", &[]).await.0 }));
    }
    for client in clients {
        assert_eq!(client.await.unwrap() / 100, 5, "a 5xx for each");
    }
    // Serialized connects would take 8 x 300 ms; the waiters share the first's failure.
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    drop(silent);
}

#[tokio::test]
async fn http2_over_tls_is_chosen_by_alpn_and_health_checks_speak_it() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["app.internal"], false);
    let mut server_config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_file(&leaf.cert).unwrap()],
                PrivateKeyDer::from_pem_file(&leaf.key).unwrap(),
            )
            .unwrap();
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    let (server, seen) = h2_server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config)))).await;
    let extra = format!(
        "    protocol: h2
    tls: {{ ca: '{}', sni: app.internal }}
    health_check: {{ kind: http, path: /healthz, interval: 100ms, rise: 1 }}",
        pki.ca_file().display()
    );
    let lb = start(&config(server, &extra)).await;
    let snapshot = lb.snapshot();
    let state = &snapshot.backends[0].members[0].state;
    wait_for("the server up through an HTTP/2 check over TLS", Duration::from_secs(5), || state.is_up()).await;
    let (status, _, body) = get(lb.local_addr("web"), "/", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"h2-app"[..]));
    let requests = seen.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "the check and the request: {requests:?}");
    assert!(requests.iter().all(|(version, _)| *version == http::Version::HTTP_2));
}

#[tokio::test]
async fn a_server_that_closes_its_http2_connection_gets_a_new_one() {
    let (server, seen) = h2_server_with(None, true).await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let addr = lb.local_addr("web");
    for i in 0..4 {
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!((status, &body[..]), (200, &b"h2-app"[..]), "request {i}");
        // The server's GOAWAY has closed that connection before the next request
        // (which could otherwise still be taken on it, inside the GOAWAY's grace).
        let closed = || seen.closed.load(Ordering::SeqCst) == i + 1;
        wait_for("the server's connection closed", Duration::from_secs(5), closed).await;
    }
    assert_eq!(seen.requests.lock().unwrap().len(), 4);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4, "a new connection after each GOAWAY");
}

#[tokio::test]
async fn check_wants_tls_for_h2_and_none_for_h2c() {
    let tls_h2c = "    protocol: h2c\n    tls: { verify: false }";
    let err = fulcrum::config::Config::parse(&config("127.0.0.1:9".parse().unwrap(), tls_h2c)).unwrap_err().to_string();
    assert!(err.contains("backends[0].protocol") && err.contains("h2c"), "{err}");
    let err = fulcrum::config::Config::parse(&config("127.0.0.1:9".parse().unwrap(), "    protocol: h2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("backends[0].protocol") && err.contains("needs tls"), "{err}");
}

#[tokio::test]
async fn an_upgrade_request_to_an_http2_backend_gets_the_servers_ordinary_answer() {
    let (server, _seen) = h2_server(None).await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let mut stream = TcpStream::connect(lb.local_addr("web")).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut stream, request).await.unwrap();
    let reply = read_response(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.ends_with("h2-app"), "{reply}");
}

/// A server speaking HTTP/1.1 and h2c (prior knowledge) on one port, answering
/// with the version it was asked in; counts its connections.
async fn bilingual_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(body))))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_reload_that_switches_a_server_to_h2c_pools_http2_connections() {
    let (server, connections) = bilingual_server().await;
    let (lb, file) = start_file(&config(server, "    protocol: http1")).await;
    let addr = lb.local_addr("web");
    for _ in 0..3 {
        assert_eq!(get(addr, "/", &[]).await.2, "HTTP/1.1");
    }
    reload_with(&lb, &file, &config(server, "    protocol: h2c")).await;
    let before = connections.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(get(addr, "/", &[]).await.2, "HTTP/2.0");
    }
    // One shared HTTP/2 connection for all five, not one each (a pool left typed
    // for HTTP/1.1 connections would keep none).
    assert_eq!(connections.load(Ordering::SeqCst) - before, 1);
}

/// An HTTP/2 server whose connections the test can drop at once (FIN, no GOAWAY):
/// (address, connections accepted, the drop switch).
async fn droppable_h2_server() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, drop_all) = (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::Notify::new()));
    let (counter, switch) = (Arc::clone(&accepted), Arc::clone(&drop_all));
    tokio::spawn(async move {
        let mut live = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { return };
                    tcp.set_nodelay(true).unwrap();
                    counter.fetch_add(1, Ordering::SeqCst);
                    live.spawn(async move {
                        let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from("h2-app"))))
                        });
                        let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    });
                }
                () = switch.notified() => live.abort_all(),
            }
        }
    });
    (addr, accepted, drop_all)
}

/// A reused HTTP/2 connection that the server drops just as a request arrives: the
/// request either finds it closed before it was sent (it goes on a new one) or is
/// lost on it (an idempotent request is sent again on a new one). Both happen in
/// a run of 200; without either resend, some of them got a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_dropped_http2_connection_are_sent_again_on_a_new_one() {
    let (server, accepted, drop_all) = droppable_h2_server().await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let addr = lb.local_addr("web");
    for i in 0..200 {
        // A new client connection each time: only the server side races here.
        let mut sender = client(addr).await;
        let req = Request::get("/").header("host", "test.local").body(http_body_util::Full::new(Bytes::new())).unwrap();
        drop_all.notify_one();
        let resp = sender.send_request(req).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!((status, &body[..]), (200, &b"h2-app"[..]), "request {i}");
    }
    assert!(accepted.load(Ordering::SeqCst) > 100, "the server's connections were dropped");
}

/// An h2c server with Nagle on (as by default; hyper-based servers such as
/// tonic leave it on unless told) that sends each response's HEADERS first and
/// its DATA a moment later, in a second write.
async fn nagle_h2_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    // The body is not ready when the head goes: HEADERS are flushed alone.
                    let later = futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"late body")))
                    });
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::StreamBody::new(later)))
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http2_server_with_nagle_on_is_not_held_back_by_delayed_acks() {
    let server = nagle_h2_server().await;
    let lb = start(&config(server, "    protocol: h2c")).await;
    let mut sender = client(lb.local_addr("web")).await;
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        let req = Request::get("/").header("host", "test.local").body(http_body_util::Full::new(Bytes::new())).unwrap();
        let response = sender.send_request(req).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "late body");
        times.push(started.elapsed());
    }
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    // A delayed ACK costs at least 40 ms; the server answers in about 1 ms.
    assert!(
        median < Duration::from_millis(20),
        "median {median:?}: the server's DATA waited for our ACK. All: {times:?}"
    );
}
