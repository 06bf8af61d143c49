//! One health probe: a TCP connect, or an HTTP `GET` whose status is checked;
//! after a PROXY header (LOCAL / UNKNOWN) to a server that expects one.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::CheckSpec;
use crate::config::{CheckKind, ProxyVersion, StatusSet};
use crate::proxy::proxy_protocol::Outgoing;
use crate::tls::UpstreamTls;

/// Why a probe failed (shown on the status page and in the transition log).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the check's `timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connect failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (certificate not verified, not TLS, ...).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The connection broke while sending or reading.
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
    /// The server answered something that is not an HTTP status line.
    #[error("not an HTTP response")]
    Malformed,
    /// The status is not in `expect_status`.
    #[error("HTTP {0} not expected")]
    Status(u16),
}

/// A probe for one server, with its request prepared once.
#[derive(Debug, Clone)]
pub struct Probe {
    address: SocketAddr,
    timeout: Duration,
    http: Option<HttpProbe>,
    /// The backend's TLS and the server's name in it: the probe speaks TLS too
    /// (a tcp check then passes once the handshake does).
    tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
    /// The PROXY header a `send_proxy` server expects first (a probe has no
    /// client: a v2 LOCAL or a v1 `PROXY UNKNOWN`), when not sent as the start
    /// of the HTTP request's bytes.
    header: Option<Outgoing>,
}

#[derive(Debug, Clone)]
struct HttpProbe {
    request: Vec<u8>,
    expect: StatusSet,
    /// HTTP/2 (the backend's protocol): the target as a URI instead of `request`.
    h2: Option<http::Uri>,
}

impl Probe {
    /// Prepares the probe of `spec` against `address`, known as `tls_name` when
    /// the backend speaks TLS.
    pub fn new(spec: &CheckSpec, address: SocketAddr, tls_name: Option<ServerName<'static>>) -> Self {
        let http = (spec.kind == CheckKind::Http).then(|| {
            let host = spec.host.clone().unwrap_or_else(|| address.to_string());
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fulcrum-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                spec.path
            );
            let scheme = if spec.tls.is_some() { "https" } else { "http" };
            let h2 = spec.h2.then(|| format!("{scheme}://{host}{}", spec.path).parse().ok()).flatten();
            HttpProbe { request: request.into_bytes(), expect: spec.expect.clone(), h2 }
        });
        let tls = spec.tls.as_ref().map(|tls| {
            let name = tls_name.unwrap_or_else(|| address.ip().into());
            (Arc::clone(&tls.0), name)
        });
        Probe { address, timeout: spec.timeout, http, tls, header: None }
    }

    /// The probe of a server that expects a PROXY header of `version` first.
    pub fn with_send_proxy(mut self, version: Option<ProxyVersion>) -> Self {
        let Some(version) = version else { return self };
        let header = Outgoing::new(version, None);
        match &mut self.http {
            // HTTP/1.1 in the clear: header and request in one write, as one segment.
            Some(HttpProbe { request, h2: None, .. }) if self.tls.is_none() => {
                request.splice(0..0, header.as_bytes().iter().copied());
            }
            _ => self.header = Some(header),
        }
        self
    }

    /// Runs the probe once; `Ok` carries a short description of the success.
    pub async fn run(&self) -> Result<String, ProbeError> {
        match tokio::time::timeout(self.timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(self.timeout)),
        }
    }

    async fn attempt(&self) -> Result<String, ProbeError> {
        let mut stream = TcpStream::connect(self.address).await.map_err(ProbeError::Connect)?;
        if let Some(header) = &self.header {
            // Before any TLS, as on every connection to the server.
            stream.write_all(header.as_bytes()).await.map_err(ProbeError::Io)?;
        }
        match &self.tls {
            None => self.exchange(stream, "connected").await,
            Some((tls, name)) => {
                let stream = tls.connect(name, stream).await.map_err(ProbeError::Tls)?;
                self.exchange(stream, "TLS handshake done").await
            }
        }
    }

    /// The HTTP part of the probe, if any, on a connected `stream`.
    async fn exchange(
        &self,
        mut stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
        connected: &str,
    ) -> Result<String, ProbeError> {
        let Some(http) = &self.http else {
            return Ok(connected.to_string());
        };
        let status = match &http.h2 {
            Some(uri) => h2_status(stream, uri).await?,
            None => {
                stream.write_all(&http.request).await.map_err(ProbeError::Io)?;
                read_status(&mut stream).await?
            }
        };
        if http.expect.contains(status) {
            Ok(format!("HTTP {status}"))
        } else {
            Err(ProbeError::Status(status))
        }
    }
}

/// `GET uri` over HTTP/2 on `stream`; the response's status.
async fn h2_status<S>(stream: S, uri: &http::Uri) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .map_err(|err| ProbeError::Io(std::io::Error::other(err)))?;
    // Ends when `sender` is dropped (and the probe with it).
    tokio::spawn(conn);
    let request = http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|_| ProbeError::Malformed)?;
    let response = sender.send_request(request).await.map_err(|err| ProbeError::Io(std::io::Error::other(err)))?;
    Ok(response.status().as_u16())
}

/// Reads up to the end of the status line and returns the code.
async fn read_status(stream: &mut (impl AsyncRead + Unpin)) -> Result<u16, ProbeError> {
    let mut head = [0u8; 256];
    let mut len = 0;
    while !head[..len].contains(&b'\n') {
        if len == head.len() {
            return Err(ProbeError::Malformed);
        }
        let n = stream.read(&mut head[len..]).await.map_err(ProbeError::Io)?;
        if n == 0 {
            return Err(if len == 0 {
                ProbeError::Io(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                ProbeError::Malformed
            });
        }
        len += n;
    }
    parse_status_line(&head[..len]).ok_or(ProbeError::Malformed)
}

/// `HTTP/1.x NNN ...` -> NNN.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn spec(kind: CheckKind, expect: StatusSet) -> CheckSpec {
        CheckSpec {
            kind,
            path: "/healthz".into(),
            host: Some("app.internal".into()),
            expect,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            tls: None,
            h2: false,
        }
    }

    /// A server answering every connection with `status`, recording the request head.
    async fn http_server(status: u16) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = conn.read(&mut buf).await.unwrap();
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).await;
                let reply = format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (addr, rx)
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2x0 OK\r\n"), None);
    }

    #[tokio::test]
    async fn http_check_accepts_statuses_in_the_expected_range() {
        let range = StatusSet(vec![200..=299]);
        let (ok_addr, mut requests) = http_server(204).await;
        assert!(Probe::new(&spec(CheckKind::Http, range.clone()), ok_addr, None).run().await.is_ok());
        let head = requests.recv().await.unwrap();
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Host: app.internal\r\n"), "{head}");

        let (redirect_addr, _) = http_server(302).await;
        let err = Probe::new(&spec(CheckKind::Http, range.clone()), redirect_addr, None).run().await.unwrap_err();
        assert!(matches!(err, ProbeError::Status(302)), "{err}");

        let (error_addr, _) = http_server(503).await;
        let list = StatusSet(vec![200..=200, 503..=503]);
        assert!(Probe::new(&spec(CheckKind::Http, list), error_addr, None).run().await.is_ok());
    }

    #[tokio::test]
    async fn tcp_check_fails_against_a_closed_port() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let err = Probe::new(&spec(CheckKind::Tcp, StatusSet::default()), closed, None).run().await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect(_)), "{err}");

        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let probe = Probe::new(&spec(CheckKind::Tcp, StatusSet::default()), open.local_addr().unwrap(), None);
        assert_eq!(probe.run().await.unwrap(), "connected");
        let (ok_addr, _) = http_server(200).await;
        let http = Probe::new(&spec(CheckKind::Http, StatusSet::default()), ok_addr, None);
        assert_eq!(http.run().await.unwrap(), "HTTP 200");
    }

    #[tokio::test]
    async fn a_send_proxy_server_gets_a_local_header_before_the_probe() {
        let (addr, mut requests) = http_server(200).await;
        let v1 = Probe::new(&spec(CheckKind::Http, StatusSet::default()), addr, None);
        v1.with_send_proxy(Some(ProxyVersion::V1)).run().await.unwrap();
        let head = requests.recv().await.unwrap();
        assert!(head.starts_with("PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\n"), "{head:?}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = Probe::new(&spec(CheckKind::Tcp, StatusSet::default()), listener.local_addr().unwrap(), None);
        tcp.with_send_proxy(Some(ProxyVersion::V2)).run().await.unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 16];
        conn.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out() {
        // Accepts (the kernel completes the handshake) but never writes a byte.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let probe = Probe::new(&spec(CheckKind::Http, StatusSet::default()), silent.local_addr().unwrap(), None);
        let err = probe.run().await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
    }
}
