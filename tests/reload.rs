//! Live reconfiguration: reload applies valid configs atomically, rejects invalid
//! ones without touching anything, diffs listeners, keeps server state, and never
//! fails a request or cuts a session while it happens.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

#[tokio::test]
async fn valid_reload_changes_the_pool() {
    let (a, b) = (named_http("a").await, named_http("b").await);
    let (lb, file) = start_file(&web_config(&[("a", a.addr)], "")).await;
    let web = lb.local_addr("web");
    assert_eq!(who(web).await, "200 a");
    assert_eq!(reload_with(&lb, &file, &web_config(&[("b", b.addr)], "")).await, 2);
    for _ in 0..5 {
        assert_eq!(who(web).await, "200 b");
    }
    assert_eq!(lb.local_addr("web"), web, "unchanged bind keeps its socket");
    assert_eq!(lb.live().reloads.succeeded.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn invalid_reload_keeps_the_old_config_and_is_counted() {
    let a = named_http("a").await;
    let (lb, file) = start_file(&web_config(&[("a", a.addr)], "")).await;
    let web = lb.local_addr("web");
    for broken in [
        "frontends: [".to_string(),
        // Both passed `fulcrum check` once, then panicked the process at reload
        // (tokio's Semaphore::new) or a connection task (Instant overflow).
        web_config(&[("a", a.addr)], "")
            .replace("default_backend: app", "default_backend: app, max_connections: 18446744073709551615"),
        web_config(&[("a", a.addr)], "timeouts: { client: 400000000000y }"),
        web_config(&[("a", a.addr)], "").replace("default_backend: app", "default_backend: nowhere"),
    ] {
        std::fs::write(file.path(), broken).unwrap();
        let err = lb.reload().await.expect_err("broken config rejected");
        assert!(!err.to_string().is_empty());
        assert_eq!(who(web).await, "200 a");
    }
    let reloads = &lb.live().reloads;
    assert_eq!(reloads.failed.load(Ordering::SeqCst), 4);
    assert!(!reloads.last_ok.load(Ordering::SeqCst));
    assert!(reloads.last_errors().iter().any(|e| e.contains("frontends[0].default_backend")));
    assert_eq!(lb.snapshot().generation, 1);
}

#[tokio::test]
async fn added_frontend_starts_accepting_and_removed_one_stops() {
    let a = named_http("a").await;
    let (lb, file) = start_file(&web_config(&[("a", a.addr)], "")).await;
    let web = lb.local_addr("web");
    let extra = "  - { name: api, bind: 127.0.0.2:0, mode: http, default_backend: app }";
    reload_with(&lb, &file, &web_config(&[("a", a.addr)], extra)).await;
    let api = lb.local_addr("api");
    assert_eq!(who(api).await, "200 a");
    assert_eq!(who(web).await, "200 a");

    // Remove `web`: its socket closes (connects refused), `api` keeps serving.
    let only_api = web_config(&[("a", a.addr)], extra)
        .replace("  - { name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }\n", "");
    reload_with(&lb, &file, &only_api).await;
    assert!(lb.local_addrs("web").is_empty());
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(web).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "removed frontend still accepts");
    assert_eq!(who(api).await, "200 a");
}

#[tokio::test]
async fn unchanged_servers_keep_health_state_and_counters() {
    let (a, b, c) = (checked_app("a").await, checked_app("b").await, named_http("c").await);
    let checked = |servers: &[(&str, SocketAddr)]| {
        web_config(servers, "")
            + "    health_check: { kind: http, path: /healthz, interval: 50ms, timeout: 500ms, rise: 2, fall: 1 }\n"
    };
    let (lb, file) = start_file(&checked(&[("a", a.server.addr), ("b", b.server.addr)])).await;
    let web = lb.local_addr("web");
    let old = lb.snapshot();
    let (state_a, state_b) = (old.backends[0].members[0].state.clone(), old.backends[0].members[1].state.clone());
    wait_for("a and b up", Duration::from_secs(5), || state_a.is_up() && state_b.is_up()).await;
    b.healthy.store(false, Ordering::SeqCst);
    wait_for("b down", Duration::from_secs(5), || !state_b.is_up()).await;
    for _ in 0..4 {
        assert_eq!(who(web).await, "200 a");
    }
    let requests_a = state_a.requests_total.load(Ordering::SeqCst);
    assert_eq!(requests_a, 4);

    // Add c: a stays up (no re-check needed), b stays down, counters carry on.
    reload_with(&lb, &file, &checked(&[("a", a.server.addr), ("b", b.server.addr), ("c", c.addr)])).await;
    let new = lb.snapshot();
    assert!(Arc::ptr_eq(&new.backends[0].members[0].state, &state_a));
    assert!(Arc::ptr_eq(&new.backends[0].members[1].state, &state_b));
    assert!(state_a.is_up() && !state_b.is_up());
    assert_eq!(state_a.requests_total.load(Ordering::SeqCst), requests_a);
    // c is new and unchecked until its first probe: nothing goes to it blind.
    let state_c = new.backends[0].members[2].state.clone();
    assert!(!state_c.is_up() || state_c.checks_total.load(Ordering::SeqCst) > 0);
    // The health task of a removed server stops.
    assert_eq!(lb.shared().health.len(), 3);
    reload_with(&lb, &file, &checked(&[("a", a.server.addr)])).await;
    assert_eq!(lb.shared().health.len(), 1);
    let probes = b.probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await; // four intervals: b would have been probed
    assert_eq!(b.probes.load(Ordering::SeqCst), probes, "removed server still probed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_nothing_and_cut_no_session() {
    const CLIENTS: usize = 32;
    const PER_CLIENT: usize = 160; // 5,120 requests
    let (a, b) = (named_http("a").await, named_http("b").await);
    let (tunnel_server, tcp_server) = (upgrade_echo_server().await, echo().await);
    let config = |second: bool| {
        let b_line = if second { format!("      - {{ name: b, address: \"{}\" }}\n", b.addr) } else { String::new() };
        format!(
            r#"
frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: app
    routes: [{{ match: {{ path_prefix: /ws }}, backend: ws }}]
  - {{ name: db, bind: 127.0.0.2:0, mode: tcp, default_backend: echo }}
backends:
  - {{ name: ws, servers: [{{ name: t, address: "{tunnel_server}" }}] }}
  - {{ name: echo, servers: [{{ name: e, address: "{tcp_server}" }}] }}
  - name: app
    servers:
      - {{ name: a, address: "{}" }}
{b_line}"#,
            a.addr
        )
    };
    let (lb, file) = start_file(&config(false)).await;
    let (web, db) = (lb.local_addr("web"), lb.local_addr("db"));
    let mut tunnel = open_tunnel(web).await;
    let mut session = TcpStream::connect(db).await.unwrap();
    echo_round(&mut tunnel, "before").await;
    echo_round(&mut session, "before").await;

    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut sender = client(web).await;
                let mut failures = Vec::new();
                for i in 0..PER_CLIENT {
                    sender.ready().await.unwrap();
                    let req = hyper::Request::get(format!("/r{i}")).header("host", "x").body(Full::new(Bytes::new()));
                    match sender.send_request(req.unwrap()).await {
                        Ok(resp) if resp.status() == 200 => {
                            resp.into_body().collect().await.unwrap();
                        }
                        Ok(resp) => failures.push(format!("status {}", resp.status())),
                        Err(err) => failures.push(err.to_string()),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    for round in 1..=20 {
        // Spread the reloads over the run: each one waits for its share of requests.
        let due = round * CLIENTS * PER_CLIENT / 22;
        wait_for("load progress", Duration::from_secs(30), || done.load(Ordering::SeqCst) >= due).await;
        reload_with(&lb, &file, &config(round % 2 == 1)).await;
        echo_round(&mut tunnel, &format!("tunnel after reload {round}")).await;
        echo_round(&mut session, &format!("session after reload {round}")).await;
        tokio::task::yield_now().await;
    }
    assert!(done.load(Ordering::SeqCst) < CLIENTS * PER_CLIENT, "load finished before the last reload");
    let mut failures = Vec::new();
    for client in load {
        failures.extend(client.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert_eq!(lb.snapshot().generation, 21);
    assert_eq!(a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst), CLIENTS * PER_CLIENT);
    echo_round(&mut tunnel, "after").await;
    echo_round(&mut session, "after").await;
}

#[tokio::test]
async fn watch_reloads_when_the_file_changes() {
    let (a, b) = (named_http("a").await, named_http("b").await);
    let (lb, file) = start_file(&web_config(&[("a", a.addr)], "")).await;
    let web = lb.local_addr("web");
    tokio::spawn(fulcrum::watch::watch(lb.clone(), file.path().to_path_buf(), Duration::from_millis(20)));
    // Swap the file the way editors and ConfigMaps do: write elsewhere, rename over it.
    let staged = file.path().with_extension("new");
    std::fs::write(&staged, web_config(&[("b", b.addr)], "")).unwrap();
    std::fs::rename(&staged, file.path()).unwrap();
    wait_for("the watcher to apply generation 2", Duration::from_secs(5), || lb.snapshot().generation == 2).await;
    assert_eq!(who(web).await, "200 b");
    // An invalid edit is rejected and counted; the running config stays.
    std::fs::write(file.path(), "frontends: [").unwrap();
    wait_for("the failed reload", Duration::from_secs(5), || lb.live().reloads.failed.load(Ordering::SeqCst) == 1)
        .await;
    assert_eq!(who(web).await, "200 b");
}
