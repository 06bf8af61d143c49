//! TLS to servers (`backends[].tls`) over real loopback sockets: verification
//! against the backend's CA and name (a failure is a 502), `verify: false`,
//! pooled reuse, session resumption on new connections, and health checks over TLS.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::pki::{Leaf, Pki};
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::HandshakeKind;
use tokio::net::TcpListener;

/// A TLS server answering every request with 200 `tls-app` (and `Connection:
/// close` when `close`), recording each handshake's kind.
struct TlsServer {
    addr: std::net::SocketAddr,
    handshakes: Arc<Mutex<Vec<HandshakeKind>>>,
    requests: Arc<AtomicUsize>,
}

async fn tls_server(leaf: &Leaf, close: bool) -> TlsServer {
    let chain = vec![CertificateDer::from_pem_file(&leaf.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let (seen, counted) = (Arc::clone(&handshakes), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen, counted) = (acceptor.clone(), Arc::clone(&seen), Arc::clone(&counted));
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                seen.lock().unwrap().push(stream.get_ref().1.handshake_kind().unwrap());
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let proto = req.headers().get("x-forwarded-proto").cloned();
                    async move {
                        let mut resp = hyper::Response::new(Full::new(Bytes::from("tls-app")));
                        if let Some(proto) = proto {
                            resp.headers_mut().insert("x-seen-proto", proto);
                        }
                        if close {
                            resp.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    TlsServer { addr, handshakes, requests }
}

/// An http frontend in front of one server at `address` over TLS with `tls` (a YAML flow map).
fn config(address: &str, tls: &str, check: &str) -> String {
    format!(
        "frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
    tls: {tls}
    servers: [{{ name: s, address: '{address}' }}]
{check}"
    )
}

#[tokio::test]
async fn requests_reach_a_tls_server_verified_by_ca_and_name_and_reuse_the_connection() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["app.internal"], false);
    let server = tls_server(&leaf, false).await;
    let ca = pki.ca_file();
    let lb =
        start(&config(&server.addr.to_string(), &format!("{{ ca: '{}', sni: app.internal }}", ca.display()), "")).await;
    let addr = lb.local_addr("web");
    for _ in 0..3 {
        let (status, headers, body) = get(addr, "/", &[]).await;
        assert_eq!((status, &body[..]), (200, &b"tls-app"[..]));
        assert_eq!(headers["x-seen-proto"], "http");
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    assert_eq!(server.handshakes.lock().unwrap().len(), 1, "one pooled TLS connection for the three requests");
}

#[tokio::test]
async fn the_servers_host_is_the_name_verified_when_sni_is_not_set() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["localhost"], false);
    let server = tls_server(&leaf, false).await;
    let ca = pki.ca_file();
    let address = format!("localhost:{}", server.addr.port());
    let lb = start(&config(&address, &format!("{{ ca: '{}' }}", ca.display()), "")).await;
    let (status, _, body) = get(lb.local_addr("web"), "/", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"tls-app"[..]));
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_is_a_502_unless_verify_is_off() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["app.internal"], false);
    let server = tls_server(&leaf, false).await;
    let ca = pki.ca_file();
    let address = server.addr.to_string();
    // Another name than the certificate's.
    let wrong_name = start(&config(&address, &format!("{{ ca: '{}', sni: other.internal }}", ca.display()), "")).await;
    assert_eq!(get(wrong_name.local_addr("web"), "/", &[]).await.0, 502);
    // Another CA than the one that signed it.
    let other = Pki::new();
    let other_ca = other.ca_file();
    let wrong_ca =
        start(&config(&address, &format!("{{ ca: '{}', sni: app.internal }}", other_ca.display()), "")).await;
    assert_eq!(get(wrong_ca.local_addr("web"), "/", &[]).await.0, 502);
    let member = &wrong_ca.snapshot().backends[0].members[0];
    assert_eq!(member.state.connect_errors.load(Ordering::SeqCst), 1, "counted as a failed connect");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
    // verify: false takes any certificate.
    let unverified = start(&config(&address, "{ verify: false }", "")).await;
    let (status, _, body) = get(unverified.local_addr("web"), "/", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"tls-app"[..]));
}

#[tokio::test]
async fn new_connections_to_a_server_resume_its_session() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["app.internal"], false);
    // The server closes after each response: every request needs a new connection.
    let server = tls_server(&leaf, true).await;
    let ca = pki.ca_file();
    let lb =
        start(&config(&server.addr.to_string(), &format!("{{ ca: '{}', sni: app.internal }}", ca.display()), "")).await;
    for _ in 0..3 {
        assert_eq!(get(lb.local_addr("web"), "/", &[]).await.0, 200);
    }
    let kinds = server.handshakes.lock().unwrap().clone();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(kinds[0], HandshakeKind::Full);
    assert!(kinds[1..].iter().all(|k| *k == HandshakeKind::Resumed), "{kinds:?}");
}

#[tokio::test]
async fn health_checks_speak_tls_too() {
    let pki = Pki::new();
    let leaf = pki.leaf("app", &["app.internal"], false);
    let server = tls_server(&leaf, false).await;
    let ca = pki.ca_file();
    let check = "    health_check: { kind: http, path: /healthz, interval: 100ms, rise: 1 }\n";
    let good =
        start(&config(&server.addr.to_string(), &format!("{{ ca: '{}', sni: app.internal }}", ca.display()), check))
            .await;
    let snapshot = good.snapshot();
    let state = &snapshot.backends[0].members[0].state;
    wait_for("the server up through a TLS check", Duration::from_secs(5), || state.is_up()).await;
    assert_eq!(get(good.local_addr("web"), "/", &[]).await.0, 200);
    // The same check against a name the certificate does not have never passes.
    let bad =
        start(&config(&server.addr.to_string(), &format!("{{ ca: '{}', sni: other.internal }}", ca.display()), check))
            .await;
    let snapshot = bad.snapshot();
    let state = &snapshot.backends[0].members[0].state;
    wait_for("three failed checks", Duration::from_secs(5), || state.checks_total.load(Ordering::SeqCst) >= 3).await;
    assert!(!state.is_up());
    assert_eq!(get(bad.local_addr("web"), "/", &[]).await.0, 503);
}

#[tokio::test]
async fn check_refuses_an_unreadable_ca_and_a_bad_sni() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "no certificate here\n").unwrap();
    let yaml = "frontends:
  - { name: web, bind: 127.0.0.1:0, default_backend: app }
backends:
  - { name: app, tls: { ca: junk.pem }, servers: [{ name: s, address: '127.0.0.1:9' }] }
  - { name: other, tls: { ca: missing.pem, sni: 'not a name' }, servers: [{ name: s, address: '127.0.0.1:9' }] }
";
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err = fulcrum::config::Config::load(&path).expect_err("refused").to_string();
    for expected in ["backends[0].tls.ca", "junk.pem", "backends[1].tls.ca", "missing.pem", "backends[1].tls.sni"] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
}
