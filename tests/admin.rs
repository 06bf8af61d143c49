//! The admin listener over real sockets: exact counter values after known traffic,
//! promtool on a real scrape, series following reloads, /healthz during a drain,
//! /api/status and /status (rendered in headless Chromium when it is installed).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One scrape, as `name{labels}` -> value.
async fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, headers, body) = get(admin, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    parse(std::str::from_utf8(&body).unwrap())
}

fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics.get(series).unwrap_or_else(|| panic!("{series} not in the scrape"))
}

/// An app that answers 404 on /missing and 200 with its name elsewhere.
async fn app() -> HttpServer {
    http_server(
        "a",
        Arc::new(|name, req| {
            let mut resp = Response::new(Full::new(Bytes::copy_from_slice(name.as_bytes())));
            if req.uri().path() == "/missing" {
                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
            }
            resp
        }),
    )
    .await
}

fn config(app: SocketAddr, dead: SocketAddr, echo: SocketAddr) -> String {
    format!(
        r#"
admin: {{ bind: 127.0.0.3:0 }}
frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: app
    routes: [{{ match: {{ path_prefix: /empty }}, backend: down }}]
  - {{ name: db, bind: 127.0.0.2:0, mode: tcp, default_backend: echo }}
backends:
  - {{ name: app, servers: [{{ name: a, address: "{app}" }}] }}
  - name: down
    servers: [{{ name: dead, address: "{dead}" }}]
    health_check: {{ kind: tcp, interval: 50ms, timeout: 200ms }}
  - {{ name: echo, servers: [{{ name: e, address: "{echo}" }}] }}
"#
    )
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly() {
    let (app, dead, echo_addr) = (app().await, closed_port().await, echo().await);
    let (lb, _file) = start_file(&config(app.addr, dead, echo_addr)).await;
    let (web, db, admin) = (lb.local_addr("web"), lb.local_addr("db"), lb.admin_addr().expect("admin bound"));

    for _ in 0..5 {
        assert_eq!(get(web, "/", &[]).await.0, 200);
    }
    assert_eq!(get(web, "/missing", &[]).await.0, 404);
    assert_eq!(get(web, "/empty", &[]).await.0, 503);
    assert!(raw(web, b"NOT HTTP AT ALL\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    for _ in 0..3 {
        let mut session = TcpStream::connect(db).await.unwrap();
        session.write_all(&[7u8; 100]).await.unwrap();
        session.shutdown().await.unwrap();
        let mut back = Vec::new();
        session.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 100);
    }
    let snapshot = lb.snapshot();
    wait_for("sessions to close", Duration::from_secs(5), || {
        snapshot.frontends.iter().all(|f| f.stats.active_connections.load(std::sync::atomic::Ordering::SeqCst) == 0)
    })
    .await;
    let dead_state = snapshot.backends[1].members[0].state.clone();
    wait_for("a failed probe of the dead server", Duration::from_secs(5), || {
        dead_state.check_failures.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;

    let m = scrape(admin).await;
    let expect = [
        (r#"fulcrum_frontend_http_requests_total{frontend="web"}"#, 7.0),
        (r#"fulcrum_backend_http_responses_total{backend="app",code="2xx"}"#, 5.0),
        (r#"fulcrum_backend_http_responses_total{backend="app",code="4xx"}"#, 1.0),
        (r#"fulcrum_backend_http_responses_total{backend="down",code="5xx"}"#, 1.0),
        (r#"fulcrum_frontend_http_responses_total{code="4xx",frontend="web"}"#, 2.0),
        (r#"fulcrum_frontend_http_responses_total{code="5xx",frontend="web"}"#, 1.0),
        (r#"fulcrum_frontend_client_timeouts_total{frontend="web",limit="head"}"#, 0.0),
        (r#"fulcrum_frontend_connections_total{frontend="db"}"#, 3.0),
        (r#"fulcrum_frontend_connections_total{frontend="web"}"#, 8.0),
        (r#"fulcrum_frontend_active_connections{frontend="db"}"#, 0.0),
        (r#"fulcrum_frontend_received_bytes_total{frontend="db"}"#, 300.0),
        (r#"fulcrum_frontend_sent_bytes_total{frontend="db"}"#, 300.0),
        (r#"fulcrum_server_connections_total{backend="echo",server="e"}"#, 3.0),
        (r#"fulcrum_server_http_requests_total{backend="app",server="a"}"#, 6.0),
        (r#"fulcrum_server_up{backend="down",server="dead"}"#, 0.0),
        (r#"fulcrum_server_up{backend="app",server="a"}"#, 1.0),
        (r#"fulcrum_backend_up_servers{backend="down"}"#, 0.0),
        (r#"fulcrum_backend_response_duration_seconds_count{backend="app"}"#, 6.0),
        (r#"fulcrum_config_generation"#, 1.0),
        (r#"fulcrum_open_connections"#, f64::NAN),
        (r#"fulcrum_worker_connections{worker="0"}"#, f64::NAN),
        (r#"fulcrum_connection_cap"#, f64::NAN),
        (r#"fulcrum_build_info{version=""#, f64::NAN),
    ];
    for (series, want) in expect {
        if want.is_nan() {
            assert!(m.keys().any(|k| k.starts_with(series)), "{series} missing");
            continue;
        }
        assert_eq!(value(&m, series), want, "{series}");
    }
    assert!(value(&m, r#"fulcrum_frontend_received_bytes_total{frontend="web"}"#) > 0.0);
    assert!(value(&m, r#"fulcrum_server_check_failures_total{backend="down",server="dead"}"#) >= 1.0);
    assert!(m.keys().any(|k| k.starts_with("process_resident_memory_bytes")), "process metrics missing");
}

#[tokio::test]
async fn promtool_accepts_a_real_scrape() {
    let Some(promtool) = require_tool("promtool", "promtool check metrics on a real scrape") else {
        return;
    };
    let (app, dead, echo_addr) = (app().await, closed_port().await, echo().await);
    let (lb, _file) = start_file(&config(app.addr, dead, echo_addr)).await;
    get(lb.local_addr("web"), "/", &[]).await;
    let (_, _, body) = get(lb.admin_addr().unwrap(), "/metrics", &[]).await;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn reload_drops_removed_series_and_keeps_counting_the_rest() {
    let (app, dead, echo_addr) = (app().await, closed_port().await, echo().await);
    let (lb, file) = start_file(&config(app.addr, dead, echo_addr)).await;
    let (web, admin) = (lb.local_addr("web"), lb.admin_addr().unwrap());
    for _ in 0..3 {
        get(web, "/", &[]).await;
    }
    let a = r#"fulcrum_server_http_requests_total{backend="app",server="a"}"#;
    assert_eq!(value(&scrape(admin).await, a), 3.0);
    // Remove the `down` backend and its route.
    let yaml = config(app.addr, dead, echo_addr)
        .replace("    routes: [{ match: { path_prefix: /empty }, backend: down }]\n", "")
        .replace(
            &format!(
                "  - name: down\n    servers: [{{ name: dead, address: \"{dead}\" }}]\n    health_check: {{ kind: tcp, interval: 50ms, timeout: 200ms }}\n"
            ),
            "",
        );
    std::fs::write(file.path(), yaml).unwrap();
    lb.reload().await.expect("reload applies");
    get(web, "/", &[]).await;
    let m = scrape(admin).await;
    assert_eq!(value(&m, a), 4.0, "counter reset or lost across the reload");
    assert!(!m.keys().any(|k| k.contains("server=\"dead\"")), "removed server still exported");
    assert_eq!(value(&m, "fulcrum_config_generation"), 2.0);
    assert_eq!(value(&m, r#"fulcrum_config_reloads_total{result="success"}"#), 1.0);
    assert_eq!(value(&m, "fulcrum_config_last_reload_success"), 1.0);
}

#[tokio::test]
async fn healthz_turns_503_while_draining() {
    let (app, dead, echo_addr) = (app().await, closed_port().await, echo().await);
    let (lb, _file) = start_file(&config(app.addr, dead, echo_addr)).await;
    let admin = lb.admin_addr().unwrap();
    let (status, _, body) = get(admin, "/healthz", &[]).await;
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
    // An open TCP session keeps the drain going while we look.
    let mut session = TcpStream::connect(lb.local_addr("db")).await.unwrap();
    echo_round(&mut session, "hold").await;
    let draining = tokio::spawn({
        let lb = lb.clone();
        async move { lb.shutdown().await }
    });
    wait_for("draining", Duration::from_secs(5), || lb.live().draining.load(std::sync::atomic::Ordering::SeqCst)).await;
    let (status, _, body) = get(admin, "/healthz", &[]).await;
    assert_eq!((status, &body[..]), (503, &b"draining\n"[..]));
    drop(session);
    assert!(draining.await.unwrap(), "drain finished once the session closed");
}

#[tokio::test]
async fn api_status_lists_every_server_and_status_page_renders() {
    let (app, dead, echo_addr) = (app().await, closed_port().await, echo().await);
    let (lb, _file) = start_file(&config(app.addr, dead, echo_addr)).await;
    let admin = lb.admin_addr().unwrap();
    let (status, headers, body) = get(admin, "/api/status", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let servers: Vec<&str> = json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()))
        .collect();
    assert_eq!(servers, ["a", "dead", "e"]);
    assert_eq!(json["generation"], 1);
    assert_eq!(json["frontends"][1]["mode"], "tcp");
    assert_eq!(json["frontends"][0]["idle_connections"], 0);
    assert!(json["connections"]["cap"].as_u64().unwrap() >= 1, "{}", json["connections"]);
    assert_eq!(json["connections"]["per_worker"].as_array().map(Vec::len), Some(1), "one worker in-process");

    let (status, _, body) = get(admin, "/status", &[]).await;
    assert_eq!(status, 200);
    let html = String::from_utf8(body.to_vec()).unwrap();
    for name in ["web", "db", "app", "down", "echo", ">a<", ">dead<", ">e<", "DOWN", "UP", "client connections: "] {
        assert!(html.contains(name), "{name} missing from /status");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "external asset in /status");

    if let Some(chromium) = require_tool("chromium", "the /status screenshot") {
        screenshot(&chromium.display().to_string(), admin).await;
    }
}

/// Renders /status in headless Chromium and checks a real PNG came out.
async fn screenshot(chromium: &str, admin: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("status.png");
    let url = format!("http://{admin}/status");
    let (chromium, png_arg, profile) = (
        chromium.to_string(),
        format!("--screenshot={}", png.display()),
        format!("--user-data-dir={}", dir.path().join("profile").display()),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,800",
                &profile,
                &png_arg,
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let bytes =
        std::fs::read(&png).unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "not a real screenshot ({} bytes)", bytes.len());
    if let Ok(dir) = std::env::var("FULCRUM_SCREENSHOT_DIR") {
        std::fs::copy(&png, std::path::Path::new(&dir).join("status.png")).unwrap();
    }
}

#[tokio::test]
async fn server_up_follows_a_server_that_is_killed() {
    // A TCP server we can kill: its accept task owns the listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let lb = start(&format!(
        r#"
admin: {{ bind: 127.0.0.3:0 }}
frontends:
  - {{ name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool }}
backends:
  - name: pool
    servers: [{{ name: victim, address: "{addr}" }}]
    health_check: {{ kind: tcp, interval: 50ms, timeout: 200ms, rise: 1, fall: 2 }}
"#
    ))
    .await;
    let admin = lb.admin_addr().unwrap();
    let up = r#"fulcrum_server_up{backend="pool",server="victim"}"#;
    let state = lb.snapshot().backends[0].members[0].state.clone();
    wait_for("victim up", Duration::from_secs(5), || state.is_up()).await;
    assert_eq!(value(&scrape(admin).await, up), 1.0);

    server.abort();
    let _ = server.await;
    wait_for("victim down", Duration::from_secs(5), || !state.is_up()).await;
    let m = scrape(admin).await;
    assert_eq!(value(&m, up), 0.0);
    assert_eq!(value(&m, r#"fulcrum_backend_up_servers{backend="pool"}"#), 0.0);
    assert_eq!(value(&m, r#"fulcrum_server_state_changes_total{backend="pool",server="victim"}"#), 2.0);
    assert!(value(&m, r#"fulcrum_server_check_failures_total{backend="pool",server="victim"}"#) >= 2.0);
    assert!(value(&m, r#"fulcrum_server_check_duration_seconds_count{backend="pool",server="victim"}"#) >= 3.0);
}
