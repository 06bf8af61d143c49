//! Descriptor exhaustion: with far more client connections than the open-file
//! limit allows, every client gets an answer (a response, a 503 or a close) instead
//! of waiting unseen in the accept queue, no request fails with a 502 because a
//! server connect ran out of descriptors, the log stays short, and the balancer
//! serves normally once the crowd is gone. The clients keep their connections
//! open after a response, as keep-alive clients and connection pools do.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The open-file limit (soft and hard) the binary runs under, as in issue 11.
const NOFILE: libc::rlim_t = 256;
/// Client connections opened at once: more than twice the limit.
const CLIENTS: usize = 600;
/// How long every connection may take to be answered, refused or reach the server.
const SETTLE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 app server that holds every request until `gate` opens, then
/// answers `200 ok` (keep-alive). `arrived` counts requests that reached it.
async fn gated_server(gate: watch::Receiver<bool>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&arrived);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut gate = gate.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    counter.fetch_add(1, SeqCst);
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, arrived)
}

/// How one client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// Closed or reset without a response.
    Closed,
    /// The connect itself was refused.
    Refused,
    /// Still waiting for a response or a close when the test gave up.
    Hung,
}

/// One keep-alive request on a fresh connection: how it ended, and the connection
/// (still open when it got a response), which the caller keeps open as real
/// keep-alive clients and connection pools do.
async fn one_request(front: SocketAddr) -> (Outcome, Option<TcpStream>) {
    let Ok(mut stream) = TcpStream::connect(front).await else { return (Outcome::Refused, None) };
    if stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.is_err() {
        return (Outcome::Closed, None);
    }
    match read_response(&mut stream).await {
        Some(status) => (Outcome::Status(status), Some(stream)),
        None => (Outcome::Closed, None),
    }
}

/// Reads one response (head and `content-length` body); `None` when the connection
/// closed or reset before a status line.
async fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let mut wanted = None;
    loop {
        if wanted.is_none() {
            if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse::<usize>().expect("content-length"));
                wanted = Some(end + 4 + length);
            }
        }
        if wanted.is_some_and(|total| reply.len() >= total) {
            break;
        }
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(err) => {
                assert!(
                    matches!(err.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
                    "unexpected read error: {err}"
                );
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply);
    match text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok()) {
        Some(status) => Some(status),
        None if reply.is_empty() => None,
        None => panic!("not an HTTP response: {text:?}"),
    }
}

/// Starts the real binary under an open-file limit of `nofile`, logging to a pipe.
fn spawn_limited(config: &std::path::Path, nofile: libc::rlim_t) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command
        .args(["run", "--threads", "2", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let limit = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.spawn().expect("fulcrum starts")
}

/// The running binary, killed if the test fails before stopping it.
struct Running(Option<Child>);

impl Running {
    /// SIGTERM, then waits for the exit.
    async fn stop(mut self) -> std::process::ExitStatus {
        let child = self.0.take().expect("still running");
        common::signal(&child, libc::SIGTERM);
        common::exit_status(child).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Err(err) = child.kill().and_then(|()| child.wait().map(drop)) {
                eprintln!("cannot stop fulcrum (pid {}): {err}", child.id());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_beyond_the_descriptor_limit_is_answered_or_closed_never_left_hanging() {
    // This process holds the client side of every connection plus the app server's.
    fulcrum::fd_limit::raise_nofile().expect("raise this test's own descriptor limit");
    let (open, gate) = watch::channel(false);
    let (app, arrived) = gated_server(gate).await;
    let port = common::free_port();
    let (_dir, config) = common::config_file(&format!(
        "frontends: [{{name: web, bind: 127.0.0.1:{port}, mode: http, default_backend: app}}]\n\
         backends: [{{name: app, servers: [{{name: a, address: '{app}'}}]}}]\n"
    ));
    let mut child = spawn_limited(&config, NOFILE);
    let stderr = child.stderr.take().unwrap();
    let fulcrum = Running(Some(child));
    let log = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(common::listening(port).await, "fulcrum did not start listening on {front}");

    // The crowd: every connection sends its request while the app holds the ones
    // that reach it, so the balancer is at its limit for the whole burst.
    let settled = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let settled = Arc::clone(&settled);
            tokio::spawn(async move {
                let ended = one_request(front).await;
                settled.fetch_add(1, SeqCst);
                ended
            })
        })
        .collect();
    // Every connection must be answered, closed, or have its request at the app.
    let deadline = tokio::time::Instant::now() + SETTLE;
    while settled.load(SeqCst) + arrived.load(SeqCst) < CLIENTS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = arrived.load(SeqCst);
    let hung = CLIENTS - (settled.load(SeqCst) + held).min(CLIENTS);
    open.send(true).unwrap();

    let mut outcomes = Vec::new();
    let mut open_connections = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    for mut client in clients {
        match tokio::time::timeout_at(deadline, &mut client).await {
            Ok(ended) => {
                let (outcome, stream) = ended.unwrap();
                outcomes.push(outcome);
                open_connections.extend(stream);
            }
            Err(_) => {
                client.abort();
                outcomes.push(Outcome::Hung);
            }
        }
    }
    drop(open_connections);
    let count = |wanted: Outcome| outcomes.iter().filter(|o| **o == wanted).count();
    let (ok, unavailable, bad_gateway, closed, never) = (
        count(Outcome::Status(200)),
        count(Outcome::Status(503)),
        count(Outcome::Status(502)),
        count(Outcome::Closed),
        count(Outcome::Hung),
    );

    // Once the crowd is gone, a fresh request is served (after a few tries at most:
    // the balancer may not have seen every close yet).
    let mut fresh = Outcome::Refused;
    for _ in 0..200 {
        fresh = tokio::time::timeout(SETTLE, one_request(front)).await.expect("fresh request answered").0;
        if fresh == Outcome::Status(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let status = fulcrum.stop().await;
    let log = log.join().unwrap();
    eprintln!(
        "{CLIENTS} clients under nofile={NOFILE}: {ok} x 200, {unavailable} x 503, {bad_gateway} x 502, \
         {closed} closed, {never} never answered; {hung} hung during the burst ({held} held at the app); \
         {} log lines",
        log.len()
    );
    for line in log.iter().take(60) {
        eprintln!("  | {line}");
    }

    assert_eq!(hung, 0, "{hung} connections neither answered, closed nor forwarded within {SETTLE:?}");
    assert_eq!(never, 0, "{never} connections never answered nor closed");
    assert_eq!(bad_gateway, 0, "502s: the balancer ran out of descriptors for server connects");
    assert_eq!(ok + unavailable + closed, CLIENTS, "other outcomes: {outcomes:?}");
    assert!(ok > 0, "no request was served at all");
    assert_eq!(fresh, Outcome::Status(200), "not serving after the crowd left");
    assert!(log.len() < 50, "{} log lines", log.len());
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn the_connection_cap_is_shared_by_every_frontend_and_refuses_at_once() {
    let app = common::named_http("app").await;
    let db = common::holding_greeter("db").await;
    let db_port = common::free_port();
    let config = fulcrum::config::Config::parse(&format!(
        "frontends:
  - {{name: web, bind: 127.0.0.1:0, mode: http, default_backend: app}}
  - {{name: db, bind: 127.0.0.1:{db_port}, mode: tcp, default_backend: db}}
backends:
  - {{name: app, servers: [{{name: a, address: '{}'}}]}}
  - {{name: db, servers: [{{name: d, address: '{db}'}}]}}
",
        app.addr
    ))
    .unwrap();
    let options = fulcrum::instance::StartOptions { connection_cap: Some(2) };
    let fulcrum = fulcrum::instance::Instance::start_with(config, None, options).await.unwrap();
    let (web, db) = (fulcrum.local_addr("web"), fulcrum.local_addr("db"));

    // One connection on each frontend fills the process-wide cap of two.
    let (outcome, kept) = one_request(web).await;
    assert_eq!(outcome, Outcome::Status(200));
    let mut held = TcpStream::connect(db).await.unwrap();
    let mut greeting = [0u8; 3];
    held.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"db\n");

    // A third connection, on either frontend, is refused at once: an http client
    // reads a 503 (it sent nothing, so the close cannot turn into a reset)...
    let mut refused = TcpStream::connect(web).await.unwrap();
    let status = tokio::time::timeout(SETTLE, read_response(&mut refused)).await.expect("refused promptly");
    assert_eq!(status, Some(503));
    // ...and a tcp client sees the connection closed without reaching the server.
    let mut refused = TcpStream::connect(db).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(SETTLE, refused.read(&mut buf)).await.expect("closed promptly");
    assert_eq!(read.unwrap_or(0), 0, "the refused tcp connection got bytes");
    let snapshot = fulcrum.snapshot();
    let rejected = |i: usize| snapshot.frontends[i].stats.rejected_connections.load(SeqCst);
    assert_eq!((rejected(0), rejected(1)), (1, 1));

    // A connection that closes gives its place back.
    drop(held);
    drop(kept);
    let mut admitted = false;
    for _ in 0..200 {
        if one_request(web).await.0 == Outcome::Status(200) {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(admitted, "a freed place admits a new connection");
}
