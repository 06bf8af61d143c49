//! DNS and SRV discovery against a real dnsmasq on loopback: members follow the
//! records, keep their state while their address stays, and are held through a
//! failing name server for `hold`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fulcrum::instance::Instance;

/// A dnsmasq answering for `*.test` from a hosts file only (NXDOMAIN for the
/// rest of `.test`), on a loopback port of its own; killed on drop.
struct Dnsmasq {
    child: std::process::Child,
    port: u16,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (lines of /etc/hosts syntax) and `extra` flags;
    /// `None` when dnsmasq is not installed and this is not CI.
    async fn start(hosts: &str, extra: &[String]) -> Option<Dnsmasq> {
        let binary = which("dnsmasq")
            .or_else(|| Some(PathBuf::from("/usr/sbin/dnsmasq")).filter(|p| p.is_file()))
            .or_else(|| require_tool("dnsmasq", "DNS discovery").and(None))?;
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq drops root for "nobody", who must still read the hosts file on SIGHUP.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let hosts_path = dir.path().join("hosts");
        write_world_readable(&hosts_path, hosts);
        // A port another test takes between our probe and dnsmasq's bind makes
        // dnsmasq exit: then again on another port.
        for _ in 0..5 {
            let port = free_dns_port();
            let mut child = std::process::Command::new(&binary)
                .arg("--keep-in-foreground")
                .arg("--conf-file=/dev/null")
                .arg(format!("--port={port}"))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--pid-file=")
                .arg("--local=/test/")
                .arg("--local-ttl=1")
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                .args(extra)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dnsmasq starts");
            if answers(&mut child, port).await {
                return Some(Dnsmasq { child, port, hosts: hosts_path, _dir: dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start answering on any of 5 ports");
    }

    /// Replaces the hosts file and makes dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        write_world_readable(&self.hosts, hosts);
        signal(&self.child, libc::SIGHUP);
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_world_readable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
}

/// A loopback port free for both UDP and TCP a moment ago (dnsmasq binds both).
fn free_dns_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits until dnsmasq on `port` answers a query (any answer), for at most 5 s;
/// false if it exited or never answered.
async fn answers(child: &mut std::process::Child, port: u16) -> bool {
    // A query for probe.test, type A, class IN, recursion desired.
    const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01";
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let _ = socket.send_to(QUERY, ("127.0.0.1", port)).await;
        let mut reply = [0u8; 512];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut reply)).await {
            return true;
        }
    }
    false
}

/// The member names of the first backend, sorted.
fn members(lb: &Instance) -> Vec<String> {
    let mut names: Vec<String> = lb.snapshot().backends[0].members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    names
}

fn config(dns_port: u16, servers: &str, resolver_extra: &str) -> String {
    format!(
        "resolver:\n  nameservers: [\"127.0.0.1:{dns_port}\"]\n  min_ttl: 100ms\n{resolver_extra}\
frontends:\n  - {{name: web, bind: 127.0.0.1:0, mode: http, default_backend: app}}\n\
backends:\n  - name: app\n    servers:\n{servers}"
    )
}

const WAIT: Duration = Duration::from_secs(20);
/// dnsmasq's record TTL (`--local-ttl=1`) plus a second: a change to the records
/// shows in the members within this.
const FOLLOW: Duration = Duration::from_secs(2);

/// Two app servers on the same port of 127.0.0.2 and 127.0.0.3 (a dns entry has one port).
async fn two_servers() -> (HttpServer, HttpServer) {
    let a = named_http_on("127.0.0.2:0".parse().unwrap(), "a").await;
    let b = named_http_on(SocketAddr::new("127.0.0.3".parse().unwrap(), a.addr.port()), "b").await;
    (a, b)
}

async fn named_http_on(bind: SocketAddr, name: &'static str) -> HttpServer {
    http_server_on(
        bind,
        name,
        Arc::new(|name, _req| {
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::copy_from_slice(name.as_bytes())))
        }),
    )
    .await
}

#[tokio::test]
async fn members_follow_the_a_records_and_keep_their_state() {
    let (a, b) = two_servers().await;
    let Some(dns) = Dnsmasq::start("127.0.0.2 app.test\n", &[]).await else { return };
    let port = a.addr.port();
    let lb =
        start(&config(dns.port, &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"), ""))
            .await;
    let web = lb.local_addr("web");

    wait_for("the first answer", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;
    assert_eq!(who(web).await, "200 a");
    let first = Arc::clone(&lb.snapshot().backends[0].members[0].state);
    let served = first.requests_total.load(std::sync::atomic::Ordering::Relaxed);
    assert!(served >= 1, "the request was counted on the member");

    dns.set_hosts("127.0.0.2 app.test\n127.0.0.3 app.test\n");
    wait_for("the second member", FOLLOW, || members(&lb) == ["pods/127.0.0.2", "pods/127.0.0.3"]).await;
    let snapshot = lb.snapshot();
    let kept = snapshot.backends[0].members.iter().find(|m| m.name == "pods/127.0.0.2").unwrap();
    assert!(Arc::ptr_eq(&kept.state, &first), "a member whose address stays keeps its state (counters, health)");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        seen.insert(who(web).await);
    }
    assert_eq!(seen.len(), 2, "both members serve: {seen:?}");

    dns.set_hosts("127.0.0.3 app.test\n");
    wait_for("the first member to go", FOLLOW, || members(&lb) == ["pods/127.0.0.3"]).await;
    for _ in 0..4 {
        assert_eq!(who(web).await, "200 b");
    }
    drop(b);
}

#[tokio::test]
async fn a_failing_name_keeps_its_last_members_for_hold_then_loses_them() {
    let (a, _b) = two_servers().await;
    let Some(dns) = Dnsmasq::start("127.0.0.2 app.test\n", &[]).await else { return };
    let port = a.addr.port();
    let yaml = config(
        dns.port,
        &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"),
        "  hold: 3s\n",
    );
    let yaml = yaml.replace("frontends:", "admin: {bind: 127.0.0.4:0}\nfrontends:");
    let lb = start(&yaml).await;
    wait_for("the first answer", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;

    // The name goes away (NXDOMAIN): counted, and the member stays while held.
    dns.set_hosts("");
    let errors = |lb: &Instance| lb.snapshot().discovered.report().first().map_or(0, |e| e.errors);
    wait_for("a failed lookup", WAIT, || errors(&lb) >= 1).await;
    assert_eq!(members(&lb), ["pods/127.0.0.2"], "held: still serving");
    for _ in 0..20 {
        assert_eq!(who(lb.local_addr("web")).await, "200 a", "no failed request while held");
    }
    let metrics = scrape(lb.admin_addr().unwrap()).await;
    assert!(metrics.contains("fulcrum_discovery_servers{backend=\"app\",name=\"pods\"} 1"), "{metrics}");
    assert!(!metrics.contains("fulcrum_discovery_errors_total{backend=\"app\",name=\"pods\"} 0"), "{metrics}");
    // The status page shows the entry above its member, and /api/status has it.
    let admin = lb.admin_addr().unwrap();
    let page = String::from_utf8(get(admin, "/status", &[]).await.2.to_vec()).unwrap();
    let entry = page.find(&format!("<b>pods</b> &middot; app.test:{port} (dns): 1 server")).expect("the entry's row");
    assert!(page[entry..].contains("data-server=\"pods/127.0.0.2\""), "its member below it");
    let status: serde_json::Value = serde_json::from_slice(&get(admin, "/api/status", &[]).await.2).unwrap();
    let reported = &status["backends"][0]["discovered"][0];
    assert_eq!((reported["name"].as_str(), reported["servers"].as_u64()), (Some("pods"), Some(1)), "{status}");

    wait_for("hold to run out", WAIT, || members(&lb).is_empty()).await;
    assert_eq!(who_status(lb.local_addr("web")).await, 503, "no servers left");

    // It comes back as soon as the name answers again.
    dns.set_hosts("127.0.0.2 app.test\n");
    wait_for("the name to answer again", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;
}

#[tokio::test]
async fn srv_targets_bring_their_ports_weights_and_priorities() {
    let a = named_http_on("127.0.0.1:0".parse().unwrap(), "a").await;
    let b = named_http_on("127.0.0.1:0".parse().unwrap(), "b").await;
    let c = named_http_on("127.0.0.1:0".parse().unwrap(), "c").await;
    let srv = |target: &str, port: u16, priority: u16, weight: u16| {
        format!("--srv-host=_http._tcp.app.test,{target},{port},{priority},{weight}")
    };
    let extra = [
        srv("a.app.test", a.addr.port(), 0, 10),
        srv("b.app.test", b.addr.port(), 0, 30),
        srv("c.app.test", c.addr.port(), 1, 10),
    ];
    let hosts = "127.0.0.1 a.app.test\n127.0.0.1 b.app.test\n127.0.0.1 c.app.test\n";
    let Some(dns) = Dnsmasq::start(hosts, &extra).await else { return };
    let lb =
        start(&config(dns.port, "      - {name: web, address: \"_http._tcp.app.test\", discover: srv}\n", "")).await;
    wait_for("the SRV answer", WAIT, || members(&lb).len() == 3).await;

    let snapshot = lb.snapshot();
    let member = |addr: SocketAddr| {
        let name = format!("web/{addr}");
        snapshot.backends[0].members.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} is a member"))
    };
    assert_eq!((member(a.addr).weight, member(a.addr).backup), (10, false));
    assert_eq!((member(b.addr).weight, member(b.addr).backup), (30, false));
    assert_eq!((member(c.addr).weight, member(c.addr).backup), (10, true), "a less preferred priority stands by");
    let web = lb.local_addr("web");
    for _ in 0..8 {
        assert_ne!(who(web).await, "200 c", "the backup takes nothing while the others are up");
    }
}

#[test]
fn check_explains_bad_discover_entries_and_resolver_settings() {
    let check = |servers: &str, resolver: &str| {
        fulcrum::config::Config::parse(&config(53, servers, resolver)).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let err = check("      - {name: pods, address: app.test, discover: dns}\n", "");
    assert!(err.contains("backends[0].servers[0].address") && err.contains("host:port"), "{err}");
    let err = check("      - {name: pods, address: \"_http._tcp.app.test:80\", discover: srv}\n", "");
    assert!(err.contains("backends[0].servers[0].address") && err.contains("without a port"), "{err}");
    let err = check("      - {name: pods, address: \"10.0.0.1:80\", discover: dns}\n", "");
    assert!(err.contains("not a DNS name"), "{err}");
    let err = check("      - {name: pods, address: \"app.test:80\", discover: dns}\n", "  max_ttl: 50ms\n");
    assert!(err.contains("resolver.min_ttl"), "{err}");
    // A name nobody can resolve now is fine: discovery looks it up while running.
    assert_eq!(check("      - {name: pods, address: \"nowhere.invalid:80\", discover: dns}\n", ""), "");
}

async fn scrape(admin: SocketAddr) -> String {
    let (_, _, body) = get(admin, "/metrics", &[]).await;
    String::from_utf8(body.to_vec()).unwrap()
}

async fn who_status(addr: SocketAddr) -> u16 {
    get(addr, "/", &[]).await.0
}

#[tokio::test]
async fn a_discovered_server_waits_for_its_first_passing_check() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&healthy);
    let app = http_server_on(
        "127.0.0.2:0".parse().unwrap(),
        "app",
        Arc::new(move |name, req| {
            let status = if req.uri().path() == "/healthz" && !flag.load(Ordering::SeqCst) { 503 } else { 200 };
            let mut response =
                hyper::Response::new(http_body_util::Full::new(bytes::Bytes::copy_from_slice(name.as_bytes())));
            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            response
        }),
    )
    .await;
    let Some(dns) = Dnsmasq::start("127.0.0.2 app.test\n", &[]).await else { return };
    let port = app.addr.port();
    let servers = format!(
        "      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n    health_check: {{kind: http, path: /healthz, interval: 100ms, rise: 1, fall: 1}}\n"
    );
    let lb = start(&config(dns.port, &servers, "")).await;
    wait_for("the member", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;
    let member = Arc::clone(&lb.snapshot().backends[0].members[0].state);
    wait_for("a failed check", WAIT, || member.check_failures.load(Ordering::SeqCst) >= 1).await;
    assert!(!member.is_up(), "not up before a check passed");
    assert_eq!(who_status(lb.local_addr("web")).await, 503, "no traffic to it blind");

    healthy.store(true, Ordering::SeqCst);
    wait_for("the check to pass", WAIT, || member.is_up()).await;
    assert_eq!(who(lb.local_addr("web")).await, "200 app");
    drop(dns);
}

#[tokio::test]
async fn two_instances_discovering_the_same_name_agree_on_hash_keys() {
    let a = named_http_on("127.0.0.2:0".parse().unwrap(), "a").await;
    let port = a.addr.port();
    let _b = named_http_on(SocketAddr::new("127.0.0.3".parse().unwrap(), port), "b").await;
    let _c = named_http_on(SocketAddr::new("127.0.0.5".parse().unwrap(), port), "c").await;
    let hosts = "127.0.0.5 app.test\n127.0.0.2 app.test\n127.0.0.3 app.test\n";
    let Some(dns) = Dnsmasq::start(hosts, &[]).await else { return };
    let yaml = config(dns.port, &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"), "")
        .replace("    servers:\n", "    balance: consistent_hash\n    hash_key: header:X-User\n    servers:\n");
    let first = start(&yaml).await;
    let second = start(&yaml).await;
    for lb in [&first, &second] {
        wait_for("three members", WAIT, || members(lb).len() == 3).await;
    }
    // The same 1,000 keys through each, on a keep-alive connection apiece.
    let (mut one, mut other) = (client(first.local_addr("web")).await, client(second.local_addr("web")).await);
    let mut placed = std::collections::HashMap::new();
    for user in 0..1000 {
        let user = format!("user-{user}");
        let (by_first, by_second) = (pick(&mut one, &user).await, pick(&mut other, &user).await);
        assert_eq!(by_first, by_second, "{user}: the instances disagree");
        *placed.entry(by_first).or_insert(0) += 1;
    }
    assert_eq!(placed.len(), 3, "keys spread over every member: {placed:?}");
    drop(dns);
}

/// The body of a GET / with `X-User: user` on `sender`'s connection.
async fn pick(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    user: &str,
) -> bytes::Bytes {
    use http_body_util::BodyExt;
    sender.ready().await.unwrap();
    let req = hyper::Request::get("/")
        .header("host", "app.test")
        .header("x-user", user)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_name_server_outage_is_held_without_a_failed_request() {
    let (a, _b) = two_servers().await;
    let Some(mut dns) = Dnsmasq::start("127.0.0.2 app.test\n", &[]).await else { return };
    let port = a.addr.port();
    let yaml = config(
        dns.port,
        &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"),
        "  hold: 1h\n",
    );
    let lb = start(&yaml).await;
    wait_for("the first answer", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;
    // The name server goes away: lookups time out.
    let _ = dns.child.kill();
    let _ = dns.child.wait();
    let errors = |lb: &Instance| lb.snapshot().discovered.report().first().map_or(0, |e| e.errors);
    wait_for("a failed lookup", WAIT, || errors(&lb) >= 1).await;
    for _ in 0..20 {
        assert_eq!(who(lb.local_addr("web")).await, "200 a", "no failed request while the name server is down");
    }
    assert_eq!(members(&lb), ["pods/127.0.0.2"]);
}

/// A server on `bind` that answers each request only when `release` fires.
async fn held_server(bind: SocketAddr) -> (SocketAddr, tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let (release, released) = tokio::sync::oneshot::channel();
                let _ = arrived.send(release).await;
                let _ = released.await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow").await;
            });
        }
    });
    (addr, arrivals)
}

#[tokio::test]
async fn a_request_in_flight_to_a_member_that_vanishes_completes() {
    let (slow, mut arrivals) = held_server("127.0.0.2:0".parse().unwrap()).await;
    let port = slow.port();
    let _other = named_http_on(SocketAddr::new("127.0.0.3".parse().unwrap(), port), "b").await;
    let Some(dns) = Dnsmasq::start("127.0.0.2 app.test\n", &[]).await else { return };
    let lb =
        start(&config(dns.port, &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"), ""))
            .await;
    wait_for("the first answer", WAIT, || members(&lb) == ["pods/127.0.0.2"]).await;
    let web = lb.local_addr("web");
    let in_flight = tokio::spawn(async move { get(web, "/", &[]).await });
    let release = arrivals.recv().await.expect("the request reached the member");

    dns.set_hosts("127.0.0.3 app.test\n");
    wait_for("the member to vanish", FOLLOW, || members(&lb) == ["pods/127.0.0.3"]).await;
    assert_eq!(who(web).await, "200 b", "new requests go to the member that stays");
    release.send(()).unwrap();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"slow"[..]), "the request in flight finished");
}

#[tokio::test]
async fn aaaa_records_are_members_too() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        println!("no IPv6 loopback here; AAAA discovery skipped");
        return;
    };
    drop(probe);
    let app = named_http_on("[::1]:0".parse().unwrap(), "v6").await;
    let port = app.addr.port();
    let Some(dns) = Dnsmasq::start("::1 app.test\n", &[]).await else { return };
    let lb =
        start(&config(dns.port, &format!("      - {{name: pods, address: \"app.test:{port}\", discover: dns}}\n"), ""))
            .await;
    wait_for("the AAAA answer", WAIT, || members(&lb) == ["pods/::1"]).await;
    assert_eq!(who(lb.local_addr("web")).await, "200 v6");
    drop(dns);
}
