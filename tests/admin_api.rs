//! The admin API's writes: a server's state (ready, drain, maint) and weight,
//! optionally for a while, surviving reloads; reload and config check; all behind
//! the bearer token of `admin.token_file`, logged and counted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

const TOKEN: &str = "s3cret-token-0123456789";

/// A config with two servers `a` and `b` behind `web`, the admin on 127.0.0.3,
/// and (`with_token`) a token file beside it.
fn config(a: SocketAddr, b: SocketAddr, dir: &std::path::Path, with_token: bool) -> String {
    let token = if with_token {
        std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
        ", token_file: admin.token"
    } else {
        ""
    };
    format!(
        "admin: {{ bind: 127.0.0.3:0{token} }}\n\
         frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n    servers:\n      - {{ name: a, address: \"{a}\" }}\n      - {{ name: b, address: \"{b}\" }}\n"
    )
}

/// POSTs `body` to `path` on the admin listener with `token`; status and JSON.
async fn post(admin: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let mut sender = client(admin).await;
    let mut req = hyper::Request::post(path).header("host", "admin");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&get(admin, "/api/status", &[]).await.2).unwrap()
}

fn admin_state(report: &serde_json::Value, server: usize) -> String {
    report["backends"][0]["servers"][server]["admin_state"].as_str().unwrap().to_string()
}

/// Starts fulcrum from a file in a fresh directory.
async fn started(with_token: bool) -> (fulcrum::instance::Instance, tempfile::TempDir, HttpServer, HttpServer) {
    let (a, b) = (named_http("a").await, named_http("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, config(a.addr, b.addr, dir.path(), with_token)).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&path, fulcrum::workers::Workers::none()).await.unwrap();
    (lb, dir, a, b)
}

#[tokio::test]
async fn drain_sends_new_requests_elsewhere_and_ready_brings_the_server_back() {
    let (lb, _dir, a, b) = started(true).await;
    let (admin, web) = (lb.admin_addr().unwrap(), lb.local_addr("web"));
    let (code, answer) = post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "drain"}"#).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["before"]["admin_state"], "ready");
    assert_eq!(answer["after"]["admin_state"], "drain");
    assert_eq!(admin_state(&status(admin).await, 0), "drain");
    for _ in 0..6 {
        assert_eq!(get(web, "/", &[]).await.2, "b");
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
    let (code, _) = post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "ready"}"#).await;
    assert_eq!(code, 200);
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(get(web, "/", &[]).await.2);
    }
    assert!(bodies.contains(&Bytes::from("a")), "back in rotation: {bodies:?}");
    assert!(b.requests.load(Ordering::SeqCst) >= 6);
    let metrics = String::from_utf8_lossy(&get(admin, "/metrics", &[]).await.2).into_owned();
    assert!(metrics.contains(r#"fulcrum_admin_writes_total{action="server",result="ok"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"fulcrum_server_admin_state{backend="app",server="a",state="ready"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_weight_and_a_timed_override_lapse_by_themselves() {
    let (lb, _dir, _a, _b) = started(true).await;
    let admin = lb.admin_addr().unwrap();
    let (code, answer) = post(admin, "/api/backends/app/servers/b", Some(TOKEN), r#"{"weight": 5, "for": "1s"}"#).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["after"]["weight"], 5);
    assert_eq!(lb.snapshot().backends[0].members[1].weight, 5);
    wait_for("the override lapsed", Duration::from_secs(5), || lb.snapshot().backends[0].members[1].weight == 1).await;
    assert_eq!(admin_state(&status(admin).await, 1), "ready");
}

#[tokio::test]
async fn an_override_survives_a_reload_and_vanishes_with_its_server() {
    let (lb, dir, a, b) = started(true).await;
    let admin = lb.admin_addr().unwrap();
    assert_eq!(post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "maint"}"#).await.0, 200);
    lb.reload().await.unwrap();
    assert_eq!(admin_state(&status(admin).await, 0), "maint", "kept across SIGHUP");
    assert_eq!(lb.snapshot().backends[0].members[0].weight, 0);
    // The server leaves the file, then comes back: a new server, ready.
    let path = dir.path().join("fulcrum.yaml");
    let full = std::fs::read_to_string(&path).unwrap();
    let without_a: String = full.lines().filter(|line| !line.contains("name: a,")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, without_a).unwrap();
    lb.reload().await.unwrap();
    std::fs::write(&path, config(a.addr, b.addr, dir.path(), true)).unwrap();
    lb.reload().await.unwrap();
    assert_eq!(admin_state(&status(admin).await, 0), "ready");
}

#[tokio::test]
async fn maint_closes_the_servers_idle_pooled_connections() {
    let (lb, _dir, _a, _b) = started(true).await;
    let (admin, web) = (lb.admin_addr().unwrap(), lb.local_addr("web"));
    for _ in 0..4 {
        assert_eq!(get(web, "/", &[]).await.0, 200);
    }
    let pool_of_a = || lb.snapshot().backends[0].members[0].state.pool.idle_count();
    wait_for("a pooled connection to a", Duration::from_secs(5), || pool_of_a() > 0).await;
    assert_eq!(post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "maint"}"#).await.0, 200);
    assert_eq!(pool_of_a(), 0);
}

#[tokio::test]
async fn writes_need_the_token_and_bad_ones_are_refused_with_reasons() {
    let (lb, _dir, _a, _b) = started(true).await;
    let admin = lb.admin_addr().unwrap();
    let path = "/api/backends/app/servers/a";
    assert_eq!(post(admin, path, None, r#"{"state": "drain"}"#).await.0, 401);
    assert_eq!(post(admin, path, Some("s3cret-token-012345678X"), r#"{"state": "drain"}"#).await.0, 401);
    for (body, why) in [
        ("{\"state\": \"off\"}", "unknown state"),
        ("{\"weight\": 257}", "weight out of range"),
        ("{\"colour\": \"red\"}", "unknown field"),
        ("{}", "nothing to set"),
        ("not json", "bad JSON"),
        ("{\"state\": \"drain\", \"for\": \"soon\"}", "bad duration"),
    ] {
        let (code, answer) = post(admin, path, Some(TOKEN), body).await;
        assert_eq!(code, 400, "{why}: {answer}");
        assert!(answer["error"].is_string(), "{why}: {answer}");
    }
    assert_eq!(post(admin, "/api/backends/app/servers/zz", Some(TOKEN), r#"{"state": "drain"}"#).await.0, 404);
    assert_eq!(post(admin, "/api/backends/zz/servers/a", Some(TOKEN), r#"{"state": "drain"}"#).await.0, 404);
    // A GET changes nothing.
    assert_eq!(get(admin, "/api/backends/app/servers/a?state=drain", &[]).await.0, 404);
    assert_eq!(admin_state(&status(admin).await, 0), "ready");
    let metrics = String::from_utf8_lossy(&get(admin, "/metrics", &[]).await.2).into_owned();
    assert!(metrics.contains(r#"fulcrum_admin_writes_total{action="server",result="denied"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"fulcrum_admin_writes_total{action="server",result="invalid"} 8"#), "{metrics}");
}

#[tokio::test]
async fn without_a_token_file_every_write_is_refused() {
    let (lb, _dir, _a, _b) = started(false).await;
    let admin = lb.admin_addr().unwrap();
    let (code, answer) = post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "drain"}"#).await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(post(admin, "/api/reload", Some(TOKEN), "").await.0, 403);
}

#[tokio::test]
async fn reload_and_config_check_through_the_api() {
    let (lb, dir, _a, _b) = started(true).await;
    let admin = lb.admin_addr().unwrap();
    let generation = lb.snapshot().generation;
    let (code, answer) = post(admin, "/api/reload", Some(TOKEN), "").await;
    assert_eq!((code, answer["ok"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(answer["generation"], generation + 1);
    // A broken file: the reload says why, the running config stays.
    let path = dir.path().join("fulcrum.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("mode: http", "mode: udp")).unwrap();
    let (code, answer) = post(admin, "/api/reload", Some(TOKEN), "").await;
    assert_eq!((code, answer["ok"].as_bool()), (200, Some(false)), "{answer}");
    assert!(answer["errors"][0].as_str().unwrap().contains("frontends[0].mode"), "{answer}");
    assert_eq!(lb.snapshot().generation, generation + 1);
    // A config checked, nothing applied.
    let bad = good.replace("weight: 1", "").replace("name: b,", "name: b, weight: 300,");
    let (code, answer) = post(admin, "/api/config/check", Some(TOKEN), &bad).await;
    assert_eq!((code, answer["ok"].as_bool()), (200, Some(false)), "{answer}");
    assert!(answer["errors"][0].as_str().unwrap().contains("backends[0].servers[1].weight"), "{answer}");
    let (_, answer) = post(admin, "/api/config/check", Some(TOKEN), &good).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(lb.snapshot().generation, generation + 1);
}

#[tokio::test]
async fn a_request_in_flight_to_a_drained_server_completes() {
    let slow = slow_http(Duration::from_millis(400)).await;
    let quick = named_http("quick").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.yaml");
    std::fs::write(&path, config(slow, quick.addr, dir.path(), true)).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&path, fulcrum::workers::Workers::none()).await.unwrap();
    let (admin, web) = (lb.admin_addr().unwrap(), lb.local_addr("web"));
    // Round robin starts with the slow server `a`.
    let in_flight = tokio::spawn(async move { get(web, "/", &[]).await });
    let slow_state = std::sync::Arc::clone(&lb.snapshot().backends[0].members[0].state);
    wait_for("the request at the slow server", Duration::from_secs(5), || slow_state.active() == 1).await;
    assert_eq!(post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"state": "drain"}"#).await.0, 200);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"late"[..]), "the drained server's request finished");
    assert_eq!(get(web, "/", &[]).await.2, "quick", "new requests go elsewhere");
}

#[tokio::test]
async fn a_weight_set_through_the_api_sets_the_shares() {
    let (lb, _dir, a, b) = started(true).await;
    let (admin, web) = (lb.admin_addr().unwrap(), lb.local_addr("web"));
    assert_eq!(post(admin, "/api/backends/app/servers/a", Some(TOKEN), r#"{"weight": 3}"#).await.0, 200);
    for _ in 0..40 {
        assert_eq!(get(web, "/", &[]).await.0, 200);
    }
    // Smooth weighted round robin: exactly 3 to 1 over whole cycles.
    assert_eq!((a.requests.load(Ordering::SeqCst), b.requests.load(Ordering::SeqCst)), (30, 10));
}
