//! tcp frontends routing TLS by the ClientHello's server name (SNI) without
//! terminating it: real TLS servers behind, real TLS clients in front, the
//! ClientHello whole, in pieces and in several records, and the first flights
//! that must be closed instead.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fulcrum::cluster::sni_route::SniRefused;
use fulcrum::instance::Instance;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Longest a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);
/// A ClientHello's first bytes that cannot hold its server name: the record and
/// handshake headers, version and random (5 + 4 + 2 + 32). Half a hello would not
/// do: rustls shuffles its extensions, so server_name is sometimes in the first
/// half, and the proxy then rightly routes the connection.
const UNROUTABLE_PREFIX: usize = 43;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server named `name` with a self-signed certificate for `names`. It reports
/// each TCP connection it accepts on `seen` (before any TLS), then completes the
/// handshake and answers `name\n`.
async fn tls_backend(
    name: &'static str,
    names: &[&str],
    seen: UnboundedSender<&'static str>,
) -> (SocketAddr, CertificateDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let issued = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = issued.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            if seen.send(name).is_err() {
                return;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Clients that only send a ClientHello end here with an error: fine.
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (addr, cert)
}

/// Fulcrum with tcp frontend `edge` routing `a.site.test` to backend `a`,
/// `*.b.test` to `b`, and the rest to `fallback`; three TLS servers behind it.
struct Setup {
    fulcrum: Instance,
    edge: SocketAddr,
    /// Which backend each connection reached, in order.
    seen: UnboundedReceiver<&'static str>,
    /// A client trusting the three servers' certificates.
    client: Arc<rustls::ClientConfig>,
    /// The config, for reloading it changed.
    yaml: String,
}

async fn setup(timeouts: &str) -> Setup {
    let (tx, seen) = unbounded_channel();
    let (a, a_cert) = tls_backend("a", &["a.site.test"], tx.clone()).await;
    let (b, b_cert) = tls_backend("b", &["*.b.test"], tx.clone()).await;
    let (fallback, fallback_cert) = tls_backend("fallback", &["fallback.test", "127.0.0.1"], tx).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in [a_cert, b_cert, fallback_cert] {
        roots.add(cert).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let yaml = format!(
        "timeouts: {{{timeouts}}}
frontends:
  - name: edge
    bind: 127.0.0.1:0
    mode: tcp
    default_backend: fallback
    routes:
      - {{match: {{sni: a.site.test}}, backend: a}}
      - {{match: {{sni: \"*.b.test\"}}, backend: b}}
backends:
  - {{name: a, servers: [{{name: a, address: '{a}'}}]}}
  - {{name: b, servers: [{{name: b, address: '{b}'}}]}}
  - {{name: fallback, servers: [{{name: fallback, address: '{fallback}'}}]}}
"
    );
    let fulcrum = start(&yaml).await;
    let edge = fulcrum.local_addr("edge");
    Setup { fulcrum, edge, seen, client: Arc::new(client), yaml }
}

impl Setup {
    /// The backend the next connection reached.
    async fn reached(&mut self) -> &'static str {
        tokio::time::timeout(PATIENCE, self.seen.recv()).await.expect("no backend reached").expect("backends run")
    }

    /// Asserts no connection reached a backend (call once the proxy is done with them).
    fn reached_none(&mut self) {
        assert_eq!(self.seen.try_recv().ok(), None, "a backend was reached");
    }

    /// The edge frontend's counters of connections closed before routing.
    fn refused(&self) -> Arc<SniRefused> {
        let snapshot = self.fulcrum.snapshot();
        Arc::clone(&snapshot.frontends[0].sni_routes.as_ref().expect("edge has routes").refused)
    }

    /// The bytes a rustls client sends first (its ClientHello) for `name`.
    fn client_hello(&self, name: ServerName<'static>) -> (rustls::ClientConnection, Vec<u8>) {
        let mut conn = rustls::ClientConnection::new(Arc::clone(&self.client), name).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        assert!(!conn.wants_write());
        (conn, hello)
    }
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

/// A full TLS session through `edge` as `name`: the handshake (verified against
/// the servers' own certificates, so it only succeeds if the ClientHello reached
/// the server untouched) and the server's one-line answer.
async fn tls_answer(setup: &Setup, name: ServerName<'static>) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&setup.client));
    let stream = TcpStream::connect(setup.edge).await.unwrap();
    let mut tls = tokio::time::timeout(PATIENCE, connector.connect(name, stream)).await.unwrap().expect("handshake");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Waits until the proxy closes `stream` (end of stream, or a reset: the unread
/// first flight makes the close a reset) and returns how long that took.
async fn closed_by_proxy(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.expect("the proxy never closed") {
        Ok(0) | Err(_) => started.elapsed(),
        Ok(n) => panic!("got {n} bytes from a connection that should be closed"),
    }
}

#[tokio::test]
async fn tls_clients_complete_their_handshake_with_the_server_their_name_routes_to() {
    let mut setup = setup("").await;
    assert_eq!(tls_answer(&setup, dns("a.site.test")).await, "a\n");
    assert_eq!(setup.reached().await, "a");
    assert_eq!(tls_answer(&setup, dns("shop.b.test")).await, "b\n");
    assert_eq!(setup.reached().await, "b");
    // No SNI (rustls sends none for an IP address) and an unknown name: the default.
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    assert_eq!(tls_answer(&setup, ip).await, "fallback\n");
    assert_eq!(setup.reached().await, "fallback");
    assert_eq!(tls_answer(&setup, dns("fallback.test")).await, "fallback\n");
    assert_eq!(setup.reached().await, "fallback");
    setup.reached_none();
}

#[tokio::test]
async fn names_match_exactly_or_by_one_label_ignoring_case() {
    let mut setup = setup("").await;
    let cases = [
        ("A.Site.TEST", "a"),
        ("x.a.site.test", "fallback"),
        ("site.test", "fallback"),
        ("Deep.B.Test", "b"),
        ("b.test", "fallback"),
        ("c.d.b.test", "fallback"),
        ("a.site.test.example", "fallback"),
    ];
    for (name, backend) in cases {
        let (_conn, hello) = setup.client_hello(dns(name));
        let mut stream = TcpStream::connect(setup.edge).await.unwrap();
        stream.write_all(&hello).await.unwrap();
        assert_eq!(setup.reached().await, backend, "{name}");
    }
}

/// Sends `pieces` of a first flight over a blocking socket with pauses between
/// them, then completes the handshake with rustls and returns the server's answer.
fn in_pieces(edge: SocketAddr, mut conn: rustls::ClientConnection, pieces: Vec<Vec<u8>>) -> String {
    let mut sock = std::net::TcpStream::connect(edge).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        sock.write_all(piece).unwrap();
    }
    let mut answer = String::new();
    rustls::Stream::new(&mut conn, &mut sock).read_to_string(&mut answer).expect("handshake and answer");
    answer
}

/// `bytes` cut at `cuts`.
fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([bytes.len()].iter()) {
        pieces.push(bytes[from..to].to_vec());
        from = to;
    }
    pieces
}

/// One handshake record re-framed as `count` records carrying a piece each.
fn reframe(record: &[u8], count: usize) -> Vec<u8> {
    let (header, fragment) = record.split_at(5);
    assert_eq!(usize::from(u16::from_be_bytes([header[3], header[4]])), fragment.len(), "one record");
    let mut out = Vec::new();
    for piece in fragment.chunks(fragment.len().div_ceil(count)) {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&u16::try_from(piece.len()).unwrap().to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

#[tokio::test]
async fn a_client_hello_in_pieces_still_routes_and_reaches_the_server_intact() {
    let mut setup = setup("").await;
    let edge = setup.edge;

    // TCP segments: a partial record header, a partial handshake header, the
    // name split in two, the rest.
    let (conn, hello) = setup.client_hello(dns("pieces.b.test"));
    let name_at = hello.windows(13).position(|w| w == b"pieces.b.test").unwrap();
    let pieces = cut(&hello, &[3, 7, 60, name_at + 5]);
    let answer = tokio::task::spawn_blocking(move || in_pieces(edge, conn, pieces)).await.unwrap();
    assert_eq!(answer, "b\n");
    assert_eq!(setup.reached().await, "b");

    // The same ClientHello spread over three TLS records, each in its own segments.
    let (conn, hello) = setup.client_hello(dns("a.site.test"));
    let records = reframe(&hello, 3);
    let third = records.len() / 3;
    let pieces = cut(&records, &[2, third, third + 4, 2 * third]);
    let answer = tokio::task::spawn_blocking(move || in_pieces(edge, conn, pieces)).await.unwrap();
    assert_eq!(answer, "a\n");
    assert_eq!(setup.reached().await, "a");
    setup.reached_none();
}

#[tokio::test]
async fn first_flights_that_are_not_a_client_hello_are_closed_at_once() {
    // request_header stays at its 10 s default: each close below comes from the
    // bytes themselves, not from a timer.
    let mut setup = setup("").await;
    let mut plain = TcpStream::connect(setup.edge).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nhost: a.site.test\r\n\r\n").await.unwrap();
    assert!(closed_by_proxy(&mut plain).await < Duration::from_secs(5));
    assert_eq!(setup.refused().invalid.load(Relaxed), 1);

    // A handshake record announcing a ClientHello beyond the bound (16 KiB).
    let mut huge = TcpStream::connect(setup.edge).await.unwrap();
    huge.write_all(&[22, 3, 1, 0x40, 0, 1, 0, 0x40, 0, 3, 3]).await.unwrap();
    assert!(closed_by_proxy(&mut huge).await < Duration::from_secs(5));
    assert_eq!(setup.refused().too_large.load(Relaxed), 1);

    setup.reached_none();
    assert_eq!(setup.refused().timeout.load(Relaxed), 0);
}

/// CPU time used by the calling thread: in these tests, the proxy's too (the
/// instance runs on the test's single-threaded runtime).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is handed.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) }, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[tokio::test]
async fn silent_and_slow_clients_are_closed_after_request_header() {
    let mut setup = setup("request_header: 400ms").await;
    let (_conn, hello) = setup.client_hello(dns("a.site.test"));
    let started = Instant::now();
    let cpu_before = thread_cpu();
    let mut silent = TcpStream::connect(setup.edge).await.unwrap();
    let mut half = TcpStream::connect(setup.edge).await.unwrap();
    half.write_all(&hello[..UNROUTABLE_PREFIX]).await.unwrap();
    for stream in [&mut silent, &mut half] {
        closed_by_proxy(stream).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(400), "closed after {waited:?}, before request_header");
    }
    // Waiting on bytes it has already peeked at, the proxy sleeps: it does not
    // spin on a socket that stays readable.
    let cpu = thread_cpu() - cpu_before;
    assert!(cpu < Duration::from_millis(150), "{cpu:?} of CPU while waiting {:?}", started.elapsed());
    let refused = setup.refused();
    assert_eq!(refused.timeout.load(Relaxed), 2);

    // One that gives up half-way is closed for that, without waiting for the timer.
    let mut quitter = TcpStream::connect(setup.edge).await.unwrap();
    quitter.write_all(&hello[..UNROUTABLE_PREFIX]).await.unwrap();
    quitter.shutdown().await.unwrap();
    closed_by_proxy(&mut quitter).await;
    wait_for("the half-closed client counted", PATIENCE, || refused.closed.load(Relaxed) == 1).await;
    assert_eq!(refused.timeout.load(Relaxed), 2);
    setup.reached_none();
}

#[tokio::test]
async fn a_connection_routes_by_the_table_of_the_config_it_was_accepted_under() {
    let mut setup = setup("").await;
    let mut garbage = TcpStream::connect(setup.edge).await.unwrap();
    garbage.write_all(b"\0").await.unwrap();
    closed_by_proxy(&mut garbage).await;

    // Accepted (counted open by the proxy) before the reload, ClientHello after.
    let early = TcpStream::connect(setup.edge).await.unwrap();
    let stats = Arc::clone(&setup.fulcrum.snapshot().frontends[0].stats);
    wait_for("the early connection accepted", PATIENCE, || stats.active_connections.load(Relaxed) == 1).await;
    let reloaded = setup.yaml.replace("{sni: a.site.test}, backend: a", "{sni: a.site.test}, backend: b");
    setup.fulcrum.apply(fulcrum::config::Config::parse(&reloaded).unwrap()).await.unwrap();
    assert_eq!(setup.fulcrum.local_addr("edge"), setup.edge, "the bind kept its socket");

    let (_conn, hello) = setup.client_hello(dns("a.site.test"));
    let mut late = TcpStream::connect(setup.edge).await.unwrap();
    late.write_all(&hello).await.unwrap();
    assert_eq!(setup.reached().await, "b", "a new connection routes by the new table");
    let mut early = early;
    early.write_all(&hello).await.unwrap();
    assert_eq!(setup.reached().await, "a", "an older connection routes by the table it was accepted with");
    assert_eq!(setup.refused().invalid.load(Relaxed), 1, "counters survive the reload");
}
