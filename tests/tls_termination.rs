//! TLS termination on http frontends over real loopback sockets, with
//! certificates made by the test (rcgen): the certificate chosen by SNI (exact,
//! wildcard, default, strict), by the client's signature schemes (ECDSA or RSA),
//! ALPN h2 and http/1.1, TLS versions, client certificates (mTLS), reloads with a
//! good and a bad certificate, validation of the files, and session resumption
//! across workers.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::pki::{Leaf, Pki};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// An http frontend `web` terminating TLS with `tls` (YAML flow map) in front of `server`.
fn tls_config(server: std::net::SocketAddr, tls: &str) -> String {
    format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app, tls: {tls} }}
backends:
  - {{ name: app, servers: [{{ name: s, address: '{server}' }}] }}
"
    )
}

fn certificates(leaves: &[&Leaf]) -> String {
    let list: Vec<String> =
        leaves.iter().map(|l| format!("{{cert: '{}', key: '{}'}}", l.cert.display(), l.key.display())).collect();
    format!("[{}]", list.join(", "))
}

/// Accepts any server certificate, offering `schemes` (the ClientHello's
/// signature algorithms): for tests about which certificate is served.
fn accept_any(schemes: Vec<SignatureScheme>) -> Arc<fulcrum::tls::NoVerification> {
    Arc::new(fulcrum::tls::NoVerification(schemes))
}

fn all_schemes() -> Vec<SignatureScheme> {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client trusting nothing in particular (see [`accept_any`]).
fn any_client(alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(accept_any(all_schemes()))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A client trusting the test CA, with `versions`.
fn verifying_client(pki: &Pki, versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn connect(addr: std::net::SocketAddr, config: ClientConfig, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
    connect_shared(addr, Arc::new(config), sni).await
}

async fn connect_shared(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake within 5 s")
}

/// The leaf certificate the server presented.
fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// GET `path` over HTTP/1.1 on `stream`; status and headers.
async fn get_h1(stream: TlsStream<TcpStream>, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get("/").header("host", "a.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    resp.into_body().collect().await.unwrap();
    (status, headers)
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_exact_then_wildcard_else_the_first() {
    let pki = Pki::new();
    let (a, wild, c) =
        (pki.leaf("a", &["a.test"], false), pki.leaf("wild", &["*.b.test"], false), pki.leaf("c", &["c.test"], false));
    let app = named_http("app").await;
    let lb = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a, &wild, &c])))).await;
    let addr = lb.local_addr("web");
    for (sni, expected) in [("a.test", &a), ("x.b.test", &wild), ("c.test", &c), ("unknown.test", &a), ("b.test", &a)] {
        let stream = connect(addr, any_client(&[]), sni).await.unwrap();
        assert_eq!(served(&stream), expected.der, "SNI {sni}");
    }
    // No SNI at all: the first certificate.
    let mut config = any_client(&[]);
    config.enable_sni = false;
    let stream = connect(addr, config, "c.test").await.unwrap();
    assert_eq!(served(&stream), a.der);
    // A client verifying the chain against the test CA gets a request through.
    let stream = connect(addr, verifying_client(&pki, &[&rustls::version::TLS13], &[]), "x.b.test").await.unwrap();
    let (status, headers) = get_h1(stream, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-seen-x-forwarded-proto"], "https");
    let counts = &lb.snapshot().frontends[0].stats.tls_handshakes;
    assert_eq!(counts.tls13.load(Ordering::SeqCst), 7);
    assert_eq!(counts.failed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn strict_sni_refuses_a_handshake_no_certificate_covers() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let lb =
        start(&tls_config(app.addr, &format!("{{certificates: {}, strict_sni: true}}", certificates(&[&a])))).await;
    let addr = lb.local_addr("web");
    assert!(connect(addr, any_client(&[]), "unknown.test").await.is_err(), "unknown SNI refused");
    let mut config = any_client(&[]);
    config.enable_sni = false;
    assert!(connect(addr, config, "a.test").await.is_err(), "no SNI refused");
    let stream = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(served(&stream), a.der);
    let counts = &lb.snapshot().frontends[0].stats.tls_handshakes;
    wait_for("two failed handshakes counted", Duration::from_secs(5), || counts.failed.load(Ordering::SeqCst) == 2)
        .await;
}

#[tokio::test]
async fn ecdsa_goes_to_clients_that_verify_it_and_rsa_to_the_others() {
    let pki = Pki::new();
    let rsa = pki.leaf("a-rsa", &["a.test"], true);
    let ecdsa = pki.leaf("a-ecdsa", &["a.test"], false);
    let app = named_http("app").await;
    // RSA listed first: the choice is by the client, not by the order.
    let lb = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&rsa, &ecdsa])))).await;
    let addr = lb.local_addr("web");
    let stream = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(served(&stream), ecdsa.der, "a client verifying ECDSA gets the ECDSA certificate");
    let rsa_only: Vec<SignatureScheme> =
        all_schemes().into_iter().filter(|s| format!("{s:?}").starts_with("RSA")).collect();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(accept_any(rsa_only))
        .with_no_client_auth();
    let stream = connect(addr, config, "a.test").await.unwrap();
    assert_eq!(served(&stream), rsa.der, "a client verifying only RSA gets the RSA certificate");
}

#[tokio::test]
async fn alpn_h2_and_http11_both_serve_requests() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let lb = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a])))).await;
    let addr = lb.local_addr("web");

    let stream = connect(addr, any_client(&[b"h2", b"http/1.1"]), "a.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get("https://a.test/").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-seen-x-forwarded-proto"], "https");
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "app");
    }

    let stream = connect(addr, any_client(&[b"http/1.1"]), "a.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Without client_ca, a client-sent subject header never reaches the server.
    let (status, headers) = get_h1(stream, &[("x-client-cert-subject", "CN=forged")]).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-seen-x-client-cert-subject"), "{headers:?}");
    assert_eq!(headers["x-seen-x-forwarded-proto"], "https");
    // A client offering no ALPN speaks HTTP/1.1.
    let stream = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(get_h1(stream, &[]).await.0, 200);

    // alpn: [http/1.1] only: an h2-only client is refused (no shared protocol).
    let lb =
        start(&tls_config(app.addr, &format!("{{certificates: {}, alpn: [http/1.1]}}", certificates(&[&a])))).await;
    assert!(connect(lb.local_addr("web"), any_client(&[b"h2"]), "a.test").await.is_err());
}

#[tokio::test]
async fn min_version_13_refuses_tls12_clients_and_the_default_takes_both() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let default = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a])))).await;
    let only13 =
        start(&tls_config(app.addr, &format!("{{certificates: {}, min_version: \"1.3\"}}", certificates(&[&a])))).await;
    let tls12 = || verifying_client(&pki, &[&rustls::version::TLS12], &[]);
    let stream = connect(default.local_addr("web"), tls12(), "a.test").await.unwrap();
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(get_h1(stream, &[]).await.0, 200);
    assert!(connect(only13.local_addr("web"), tls12(), "a.test").await.is_err());
    let stream = connect(only13.local_addr("web"), verifying_client(&pki, &[&rustls::version::TLS13], &[]), "a.test")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(default.snapshot().frontends[0].stats.tls_handshakes.tls12.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn client_certificates_are_required_with_client_ca_and_their_subject_passed_on() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client-1");
    let client_leaf = pki.leaf_with("client", params, false);
    let app = named_http("app").await;
    let yaml = format!("{{certificates: {}, client_ca: '{}'}}", certificates(&[&a]), pki.ca_file().display());
    let lb = start(&tls_config(app.addr, &yaml)).await;
    let addr = lb.local_addr("web");

    // Without a certificate: no response (TLS 1.3 reports the refusal after the
    // client's side of the handshake, so at the first exchange).
    let refused = match connect(addr, verifying_client(&pki, &[&rustls::version::TLS13], &[]), "a.test").await {
        Err(_) => true,
        Ok(stream) => {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            let mut sender = sender;
            let req = hyper::Request::get("/").header("host", "a.test").body(Empty::<Bytes>::new()).unwrap();
            sender.send_request(req).await.is_err()
        }
    };
    assert!(refused, "a client without a certificate gets no response");

    let key = PrivateKeyDer::from_pem_file(&client_leaf.key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_leaf.der.clone()], key)
        .unwrap();
    let stream = connect(addr, config, "a.test").await.unwrap();
    let (status, headers) = get_h1(stream, &[("x-client-cert-subject", "CN=forged")]).await;
    assert_eq!(status, 200);
    let seen: Vec<_> = headers.get_all("x-seen-x-client-cert-subject").iter().collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].to_str().unwrap().contains("CN=client-1"), "{seen:?}");
}

#[tokio::test]
async fn a_reload_serves_new_certificates_keeps_open_connections_and_refuses_bad_ones() {
    let pki = Pki::new();
    let v1 = pki.leaf("site", &["a.test"], false);
    let app = named_http("app").await;
    let yaml = tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&v1])));
    let (lb, file) = start_file(&yaml).await;
    let addr = lb.local_addr("web");
    let old = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(served(&old), v1.der);
    let (mut old_sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old)).await.unwrap();
    tokio::spawn(conn);
    let get = || hyper::Request::get("/").header("host", "a.test").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(old_sender.send_request(get()).await.unwrap().status(), 200);

    // Same files, new content: a reload reads them again.
    let v2 = pki.leaf("site", &["a.test"], false);
    reload_with(&lb, &file, &yaml).await;
    let stream = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(served(&stream), v2.der, "new connections get the new certificate");
    assert_eq!(old_sender.send_request(get()).await.unwrap().status(), 200, "the open connection goes on");

    // A key that is not the certificate's: the reload fails, v2 is still served.
    let other = pki.leaf("other", &["a.test"], false);
    std::fs::copy(&other.key, &v2.key).unwrap();
    let err = lb.reload().await.expect_err("a mismatched key fails the reload").to_string();
    assert!(err.contains("frontends[0].tls.certificates[0].key"), "{err}");
    assert!(err.contains("not the private key"), "{err}");
    let stream = connect(addr, any_client(&[]), "a.test").await.unwrap();
    assert_eq!(served(&stream), v2.der);
}

#[tokio::test]
async fn check_names_the_key_of_each_bad_file() {
    let pki = Pki::new();
    let _good = pki.leaf("good", &["a.test"], false);
    let mut params = CertificateParams::new(vec!["old.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let _expired = pki.leaf_with("expired", params, false);
    let _other = pki.leaf("other", &["b.test"], false);
    std::fs::write(pki.path("junk.pem"), "not a certificate\n").unwrap();
    let yaml = "frontends:
  - name: web
    bind: 127.0.0.1:0
    default_backend: app
    tls:
      certificates:
        - {cert: good.pem, key: good.key}
        - {cert: expired.pem, key: expired.key}
        - {cert: good.pem, key: other.key}
        - {cert: junk.pem, key: good.key}
        - {cert: missing.pem, key: good.key}
      client_ca: junk.pem
      ticket_keys: junk.pem
  - {name: plain, bind: 127.0.0.1:0, mode: tcp, default_backend: app, tls: {certificates: [{cert: good.pem, key: good.key}]}}
backends:
  - { name: app, servers: [{ name: s, address: '127.0.0.1:9' }] }
";
    let path = pki.path("fulcrum.yaml");
    std::fs::write(&path, yaml).unwrap();
    // Relative paths resolve against the config file's directory, from anywhere.
    let err = fulcrum::config::Config::load(&path).expect_err("bad files are refused").to_string();
    for expected in [
        "frontends[0].tls.certificates[1].cert",
        "expired",
        "frontends[0].tls.certificates[2].key",
        "not the private key",
        "frontends[0].tls.certificates[3].cert",
        "frontends[0].tls.certificates[4].cert",
        "frontends[0].tls.client_ca",
        "frontends[0].tls.ticket_keys",
        "frontends[1].tls",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
    assert!(!err.contains("certificates[0]"), "the good pair is fine:\n{err}");
}

#[tokio::test]
async fn a_session_resumes_on_another_worker_and_after_a_reload() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a])))).unwrap();
    let workers = fulcrum::workers::Workers::start(2).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&path, workers).await.unwrap();
    let addr = lb.local_addr("web");
    let config = Arc::new(any_client(&[]));

    let first = connect_shared(addr, Arc::clone(&config), "a.test").await.unwrap();
    assert_eq!(first.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    // A request, so the client reads the session tickets sent after the handshake.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(first)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/").header("host", "a.test").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    wait_for("the first connection placed", Duration::from_secs(5), || lb.worker_loads().iter().sum::<usize>() == 1)
        .await;
    let busy = lb.worker_loads().iter().position(|&n| n == 1).unwrap();

    // A reload in between: the session keys are the process's, not the snapshot's.
    lb.reload().await.unwrap();
    // The first stays open: the second lands on the other worker.
    let second = connect_shared(addr, config, "a.test").await.unwrap();
    wait_for("both connections placed", Duration::from_secs(5), || lb.worker_loads() == [1, 1]).await;
    assert_eq!(lb.worker_loads()[1 - busy], 1, "the second connection is on the other worker");
    assert_eq!(second.get_ref().1.handshake_kind(), Some(HandshakeKind::Resumed));
    drop(sender);
    drop(second);
    lb.shutdown().await;
}

#[tokio::test]
async fn clients_that_send_no_client_hello_do_not_hold_back_the_others() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let lb = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a])))).await;
    let addr = lb.local_addr("web");
    // More silent connections than a worker runs handshakes at once.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for("the silent connections accepted", Duration::from_secs(5), || lb.open_connections() >= 200).await;
    let stream = connect(addr, any_client(&[]), "a.test").await.expect("handshake while 200 clients stay silent");
    assert_eq!(get_h1(stream, &[]).await.0, 200);
    drop(silent);
}

/// Starts `fulcrum run` (the binary) on a TLS frontend at `port` in front of
/// `server`, with `tls_extra` added to its `tls:` map.
async fn tls_process(
    pki: &Pki,
    leaf: &Leaf,
    server: std::net::SocketAddr,
    port: u16,
    tls_extra: &str,
) -> std::process::Child {
    let path = pki.path(&format!("fulcrum-{port}.yaml"));
    let yaml = format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, default_backend: app, tls: {{ certificates: {}{tls_extra} }} }}
backends:
  - {{ name: app, servers: [{{ name: s, address: '{server}' }}] }}
",
        certificates(&[leaf])
    );
    std::fs::write(&path, yaml).unwrap();
    spawn_fulcrum(&["run".as_ref(), "--config".as_ref(), path.as_os_str()], port).await
}

/// Whether a client that got a session from the first instance resumes it on the second.
async fn resumes_across(first: u16, second: u16) -> bool {
    let config = Arc::new(any_client(&[]));
    let stream = connect_shared(([127, 0, 0, 1], first).into(), Arc::clone(&config), "a.test").await.unwrap();
    // A request, so the client reads the tickets sent after the handshake.
    assert_eq!(get_h1(stream, &[]).await.0, 200);
    let stream = connect_shared(([127, 0, 0, 1], second).into(), config, "a.test").await.unwrap();
    stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed)
}

#[tokio::test]
async fn instances_sharing_a_ticket_keys_file_resume_each_others_sessions() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    std::fs::write(
        pki.path("tickets.keys"),
        "# newest first\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    let shared = format!(", ticket_keys: '{}'", pki.path("tickets.keys").display());
    let (p1, p2, p3, p4) = (free_port(), free_port(), free_port(), free_port());
    let mut children = vec![
        tls_process(&pki, &a, app.addr, p1, &shared).await,
        tls_process(&pki, &a, app.addr, p2, &shared).await,
        tls_process(&pki, &a, app.addr, p3, "").await,
        tls_process(&pki, &a, app.addr, p4, "").await,
    ];
    let with_file = resumes_across(p1, p2).await;
    let without = resumes_across(p3, p4).await;
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(with_file, "the same ticket_keys: a session from one instance resumes on the other");
    assert!(!without, "each process's own keys: no resumption on another instance");
}

#[tokio::test]
async fn an_idle_tls_connection_goes_dormant_and_serves_its_next_request() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let app = named_http("app").await;
    let lb = start(&tls_config(app.addr, &format!("{{certificates: {}}}", certificates(&[&a])))).await;
    let stream = connect(lb.local_addr("web"), any_client(&[]), "a.test").await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let idle = || lb.snapshot().frontends[0].stats.idle_connections.load(Ordering::SeqCst);
    for round in 0..3 {
        let req = hyper::Request::get("/").header("host", "a.test").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        resp.into_body().collect().await.unwrap();
        // Idle for a second: hyper's connection state is freed, the TLS session kept.
        wait_for("the TLS connection dormant", Duration::from_secs(5), || idle() == 1).await;
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 1, "one server connection, reused");
    let counts = &lb.snapshot().frontends[0].stats.tls_handshakes;
    assert_eq!(counts.tls13.load(Ordering::SeqCst), 1, "one handshake for the three requests");
}
