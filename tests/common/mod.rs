//! Shared helpers for integration tests: real servers on 127.0.0.1:0 and a
//! Fulcrum instance started in-process.
#![allow(dead_code)]

pub mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use fulcrum::config::Config;
use fulcrum::instance::Instance;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts Fulcrum on `yaml` (validated like a file would be).
pub async fn start(yaml: &str) -> Instance {
    let config = Config::parse(yaml).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{yaml}"));
    Instance::start(config, None).await.expect("fulcrum starts")
}

/// A port that was free a moment ago and is now closed (connects are refused).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A TCP server that greets each connection with `name\n` and closes.
pub async fn greeter(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP server that greets with `name\n` and then keeps the connection open until the client closes.
pub async fn holding_greeter(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = stream.write_all(format!("{name}\n").as_bytes()).await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// A TCP echo server.
pub async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads a whole greeting line from a fresh connection to `addr`.
pub async fn read_greeting(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out.trim().to_string()
}

/// What an HTTP test server saw of one request.
pub type Handler = Arc<dyn Fn(&str, Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;

/// An HTTP/1.1 server named `name` with a custom handler; counts its TCP connections.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

/// Starts an HTTP server that answers every request with `handler`.
pub async fn http_server(name: &'static str, handler: Handler) -> HttpServer {
    http_server_on("127.0.0.1:0".parse().unwrap(), name, handler).await
}

/// [`http_server`] listening on `bind` (another loopback address, a given port).
pub async fn http_server_on(bind: SocketAddr, name: &'static str, handler: Handler) -> HttpServer {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let r = r.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handler(name, Request::from_parts(parts, body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    HttpServer { addr, connections, requests }
}

/// An HTTP server answering every request with `status` and body `name`.
pub async fn answering(name: &'static str, status: u16) -> HttpServer {
    http_server(
        name,
        Arc::new(move |name, _req| {
            let mut resp = Response::new(Full::new(Bytes::copy_from_slice(name.as_bytes())));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            resp
        }),
    )
    .await
}

/// An HTTP server answering `200` with body `name`, and headers echoed back as `x-seen-NAME`.
pub async fn named_http(name: &'static str) -> HttpServer {
    http_server(
        name,
        Arc::new(|name, req| {
            let mut resp = Response::new(Full::new(Bytes::copy_from_slice(name.as_bytes())));
            for (k, v) in req.headers() {
                if let Ok(n) = hyper::header::HeaderName::from_bytes(format!("x-seen-{k}").as_bytes()) {
                    resp.headers_mut().append(n, v.clone());
                }
            }
            resp.headers_mut().insert("x-seen-uri", req.uri().to_string().parse().unwrap());
            resp
        }),
    )
    .await
}

/// A plain HTTP/1.1 client connection.
pub async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An h2c (prior knowledge) client connection; its connection task runs in the
/// background and its handle tells how the connection ended.
pub async fn h2c<B>(
    addr: SocketAddr,
) -> (hyper::client::conn::http2::SendRequest<B>, tokio::task::JoinHandle<Result<(), hyper::Error>>)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// One GET on a fresh connection; returns status, headers and body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap, Bytes) {
    let mut sender = client(addr).await;
    let mut req = Request::get(path).header("host", "test.local");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    (status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// Sends raw bytes and reads the whole reply until the server closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP server that waits `delay` before answering `late`.
pub async fn slow_http(delay: std::time::Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late"))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// Starts Fulcrum from a config file holding `yaml`; rewrite the file and call
/// `reload()` to reconfigure it.
pub async fn start_file(yaml: &str) -> (Instance, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let instance =
        Instance::start_from_file(file.path(), fulcrum::workers::Workers::none()).await.expect("fulcrum starts");
    (instance, file)
}

/// Waits until `cond` holds, polling every 5 ms; panics after `limit` naming `what`.
pub async fn wait_for(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An app server whose `/healthz` answers 200 while `healthy` is true and 503 after;
/// other paths answer with its name. `probes` counts `/healthz` requests.
pub struct CheckedApp {
    pub server: HttpServer,
    pub healthy: Arc<std::sync::atomic::AtomicBool>,
    pub probes: Arc<AtomicUsize>,
}

/// Starts a [`CheckedApp`], healthy.
pub async fn checked_app(name: &'static str) -> CheckedApp {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let (h, p) = (healthy.clone(), probes.clone());
    let server = http_server(
        name,
        Arc::new(move |name, req| {
            if req.uri().path() == "/healthz" {
                p.fetch_add(1, Ordering::SeqCst);
                let mut resp = Response::new(Full::new(Bytes::from_static(b"health")));
                if !h.load(Ordering::SeqCst) {
                    *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                }
                return resp;
            }
            Response::new(Full::new(Bytes::copy_from_slice(name.as_bytes())))
        }),
    )
    .await;
    CheckedApp { server, healthy, probes }
}

/// The body of one GET `/` on a fresh connection (the answering server's name).
pub async fn who(addr: SocketAddr) -> String {
    let (status, _, body) = get(addr, "/", &[]).await;
    format!("{status} {}", String::from_utf8_lossy(&body))
}

/// An HTTP server that accepts `Upgrade: echo` and then echoes bytes.
pub async fn upgrade_echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = on.await {
                            let mut io = hyper_util::rt::TokioIo::new(upgraded);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp = Response::builder()
                        .status(101)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Opens an upgraded tunnel through `front` and returns the raw stream after the 101.
pub async fn open_tunnel(front: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(front).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
    stream
}

/// Writes `msg` into an echoing stream and asserts it comes back.
pub async fn echo_round(stream: &mut TcpStream, msg: &str) {
    stream.write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg.as_bytes());
}

/// A loopback port that was free a moment ago (for configs the real binary reads).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the real `fulcrum` binary with `args` (e.g. `["run", "--config", path]`)
/// and waits until `port` accepts connections; kills it and panics if it never does.
pub async fn spawn_fulcrum(args: &[&std::ffi::OsStr], port: u16) -> std::process::Child {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    if !listening(port).await {
        let _ = child.kill();
        let _ = child.wait();
        panic!("fulcrum did not start listening on {port}");
    }
    child
}

/// Polls until 127.0.0.1:`port` accepts connections (at most ~4 s); false if it never does.
pub async fn listening(port: u16) -> bool {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Writes `yaml` as `fulcrum.yaml` in a new temporary directory (removed when the
/// returned guard drops); for tests that run the real binary.
pub fn config_file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// Sends `signal` to `child`.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits for `child` to exit without blocking the runtime.
pub async fn exit_status(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap()
}

/// The path of `tool` on PATH, if installed.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(tool)).find(|p| p.is_file()))
}

/// True when the tests run under CI (`CI` set, as `.ci/run` does, and not "0" or "false").
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The path of `tool`, needed by the check `what`. Missing on a developer's machine:
/// `None` with a note, and the caller skips the check. Missing under CI (which
/// installs it, see `.ci/run`): a panic, so a check never passes without running.
pub fn require_tool(tool: &str, what: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = which(tool) {
        return Some(path);
    }
    assert!(!under_ci(), "{tool} is not installed, and CI is set: {what} must run there (.ci/run installs {tool})");
    println!("{tool} not installed; {what} skipped (CI installs it)");
    None
}

/// An http frontend `web` on 127.0.0.1:0 in front of backend `app` with `servers`;
/// `extra` goes after the frontend list (more frontends, or top-level keys).
pub fn web_config(servers: &[(&str, SocketAddr)], extra: &str) -> String {
    let servers: String =
        servers.iter().map(|(name, addr)| format!("      - {{ name: {name}, address: \"{addr}\" }}\n")).collect();
    format!(
        r#"
frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
{extra}
backends:
  - name: app
    servers:
{servers}"#
    )
}

/// Writes `yaml` to the instance's config file and reloads; panics if rejected.
pub async fn reload_with(lb: &fulcrum::instance::Instance, file: &tempfile::NamedTempFile, yaml: &str) -> u64 {
    std::fs::write(file.path(), yaml).unwrap();
    lb.reload().await.unwrap_or_else(|e| panic!("reload rejected: {e}"))
}

/// Reads one response with a Content-Length body from `stream`.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>())
                })
                .expect("content-length")
                .unwrap();
            if reply.len() >= end + 4 + length {
                return text;
            }
        }
        let n =
            tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(stream, &mut buf))
                .await
                .expect("response")
                .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        reply.extend_from_slice(&buf[..n]);
    }
}

/// Collects everything a tracing subscriber writes (give it `move || captured.clone()`).
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures the events `filter` passes (an env-filter directive), for this
    /// thread while the guard lives: on a current-thread runtime, every task's.
    pub fn install(filter: &str) -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(filter)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Everything written so far, line by line.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}
