//! Test servers that expect a PROXY header first on each connection (what a
//! `send_proxy` server entry points at), and PROXY headers as a load balancer in
//! front would send them. Headers are parsed and built here by hand, apart from
//! Fulcrum's own code, so each side checks the other.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header naming `source` and `destination` (both of one family).
pub fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()).into_bytes()
}

/// A v2 PROXY header naming `source` and `destination` (both of one family).
pub fn v2(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let mut header = V2_SIGNATURE.to_vec();
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            header.extend_from_slice(&[0x21, 0x11, 0, 12]);
            header.extend_from_slice(&si.octets());
            header.extend_from_slice(&di.octets());
        }
        (IpAddr::V6(si), IpAddr::V6(di)) => {
            header.extend_from_slice(&[0x21, 0x21, 0, 36]);
            header.extend_from_slice(&si.octets());
            header.extend_from_slice(&di.octets());
        }
        _ => panic!("one family"),
    }
    header.extend_from_slice(&s.port().to_be_bytes());
    header.extend_from_slice(&d.port().to_be_bytes());
    header
}

/// A v2 LOCAL header (a health check's), with a TLV a sender might add.
pub fn v2_local() -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[0x20, 0x00, 0, 4, 0x04, 0, 1, b'x']);
    header
}

/// What a server read first on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's bytes.
    pub raw: Vec<u8>,
    /// The source and destination it names; `None`: v2 LOCAL or v1 UNKNOWN.
    pub endpoints: Option<(SocketAddr, SocketAddr)>,
}

/// Reads exactly one PROXY header off `stream`, or panics naming what came instead.
pub async fn read_header(stream: &mut TcpStream) -> Header {
    let mut raw = vec![0u8; 16];
    stream.read_exact(&mut raw[..1]).await.expect("a first byte");
    if raw[0] == b'P' {
        raw.truncate(1);
        while !raw.ends_with(b"\r\n") {
            assert!(raw.len() < 108, "v1 header too long: {:?}", String::from_utf8_lossy(&raw));
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.expect("the rest of a v1 header");
            raw.push(byte[0]);
        }
        let text = std::str::from_utf8(&raw).unwrap().trim_end().to_string();
        let parts: Vec<&str> = text.split(' ').collect();
        assert_eq!(parts[0], "PROXY", "{text}");
        let endpoints = match parts[1] {
            "UNKNOWN" => None,
            "TCP4" | "TCP6" => {
                assert_eq!(parts.len(), 6, "{text}");
                let ip = |p: &str| p.parse::<IpAddr>().unwrap();
                let port = |p: &str| p.parse::<u16>().unwrap();
                Some((SocketAddr::new(ip(parts[2]), port(parts[4])), SocketAddr::new(ip(parts[3]), port(parts[5]))))
            }
            other => panic!("unknown v1 family {other}"),
        };
        return Header { raw, endpoints };
    }
    stream.read_exact(&mut raw[1..]).await.expect("a v2 header's fixed part");
    assert_eq!(&raw[..12], V2_SIGNATURE, "neither v1 nor v2: {raw:?}");
    let len = u16::from_be_bytes([raw[14], raw[15]]) as usize;
    raw.resize(16 + len, 0);
    stream.read_exact(&mut raw[16..]).await.expect("a v2 header's addresses");
    let endpoints = match (raw[12], raw[13]) {
        (0x20, _) => None,
        (0x21, 0x11) => {
            let a = &raw[16..28];
            let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            Some((SocketAddr::new(ip(&a[0..4]), port(&a[8..10])), SocketAddr::new(ip(&a[4..8]), port(&a[10..12]))))
        }
        (0x21, 0x21) => {
            let a = &raw[16..52];
            let ip = |b: &[u8]| IpAddr::from(<[u8; 16]>::try_from(b).unwrap());
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            Some((SocketAddr::new(ip(&a[0..16]), port(&a[32..34])), SocketAddr::new(ip(&a[16..32]), port(&a[34..36]))))
        }
        other => panic!("unexpected v2 command/family {other:?}"),
    };
    Header { raw, endpoints }
}

/// How a [`Header`] is told back to the client: `SOURCE DESTINATION`, or `local`.
pub fn describe(header: &Header) -> String {
    match header.endpoints {
        Some((source, destination)) => format!("{source} {destination}"),
        None => "local".to_string(),
    }
}

/// An HTTP server that reads a PROXY header first on each connection.
pub struct ProxyHttp {
    pub addr: SocketAddr,
    /// Every connection's header, in order of arrival.
    pub headers: mpsc::UnboundedReceiver<Header>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Connections the other side has closed.
    pub closed: Arc<AtomicUsize>,
}

/// Starts a [`ProxyHttp`] speaking HTTP/1.1: every response says what its
/// connection's header named (`x-proxy: SOURCE DESTINATION` or `local`) and
/// which connection it came on (`x-connection: N`, from 1); `/healthz` answers
/// 200 too.
pub async fn proxy_http() -> ProxyHttp {
    proxy_http_with(false).await
}

/// [`proxy_http`], speaking h2c (prior knowledge) when `h2`.
pub async fn proxy_http_with(h2: bool) -> ProxyHttp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, headers) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (accepted, ended) = (Arc::clone(&connections), Arc::clone(&closed));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let number = accepted.fetch_add(1, Ordering::SeqCst) + 1;
            let (tx, ended) = (tx.clone(), Arc::clone(&ended));
            tokio::spawn(async move {
                let header = read_header(&mut stream).await;
                let told = describe(&header);
                let _ = tx.send(header);
                let service = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let told = told.clone();
                    async move {
                        let response = Response::builder()
                            .header("x-proxy", told)
                            .header("x-connection", number.to_string())
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    let executor = hyper_util::rt::TokioExecutor::new();
                    hyper::server::conn::http2::Builder::new(executor).serve_connection(io, service).await
                } else {
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
                };
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    ProxyHttp { addr, headers, connections, closed }
}

/// A TCP server that reads a PROXY header, answers with what it named
/// (`SOURCE DESTINATION\n` or `local\n`), then echoes what follows.
pub async fn proxy_echo() -> (SocketAddr, mpsc::UnboundedReceiver<Header>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, headers) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let header = read_header(&mut stream).await;
                let told = format!("{}\n", describe(&header));
                let _ = tx.send(header);
                if stream.write_all(told.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, headers)
}
