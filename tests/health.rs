//! Active health checks over real sockets: servers leave the pool when their check
//! fails and come back after `rise` successes; backups and tcp checks.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

const INTERVAL_MS: u64 = 100;
const FALL: usize = 3;
const RISE: usize = 2;

fn config(a: std::net::SocketAddr, b: std::net::SocketAddr, backup: std::net::SocketAddr) -> String {
    format!(
        r#"
frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    default_backend: app
backends:
  - name: app
    servers:
      - {{ name: a, address: "{a}" }}
      - {{ name: b, address: "{b}" }}
      - {{ name: spare, address: "{backup}", backup: true }}
    health_check:
      kind: http
      path: /healthz
      expect_status: 200-299
      interval: {INTERVAL_MS}ms
      timeout: 1s
      rise: {RISE}
      fall: {FALL}
"#
    )
}

#[tokio::test]
async fn failing_server_leaves_the_pool_within_fall_probes_and_returns_after_rise() {
    let (a, b, spare) = (checked_app("a").await, checked_app("b").await, checked_app("spare").await);
    let lb = start(&config(a.server.addr, b.server.addr, spare.server.addr)).await;
    let web = lb.local_addr("web");
    let snapshot = lb.snapshot();
    let states: Vec<_> = snapshot.backends[0].members.iter().map(|m| m.state.clone()).collect();
    wait_for("both primaries up", Duration::from_secs(5), || states[0].is_up() && states[1].is_up()).await;

    // Both primaries share the traffic; the backup gets none.
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(who(web).await);
    }
    assert!(seen.contains(&"200 a".to_string()) && seen.contains(&"200 b".to_string()), "{seen:?}");
    assert!(!seen.contains(&"200 spare".to_string()), "{seen:?}");

    // b starts failing: down after `fall` failed probes (one more may be in flight).
    let probes_before = b.probes.load(Ordering::SeqCst);
    let flipped = Instant::now();
    b.healthy.store(false, Ordering::SeqCst);
    wait_for("b marked down", Duration::from_secs(5), || !states[1].is_up()).await;
    let took = flipped.elapsed();
    let failed_probes = b.probes.load(Ordering::SeqCst) - probes_before;
    println!("b down after {failed_probes} probes, {took:?} (interval {INTERVAL_MS}ms, fall {FALL})");
    assert!((FALL..=FALL + 1).contains(&failed_probes), "down after {failed_probes} probes");
    // interval x fall, plus one interval for the phase, plus scheduling slack.
    assert!(took < Duration::from_millis(INTERVAL_MS * (FALL as u64 + 1) + 400), "took {took:?}");
    for _ in 0..10 {
        assert_eq!(who(web).await, "200 a");
    }
    assert_eq!(states[1].state_changes.load(Ordering::SeqCst), 2, "new -> up -> down");
    assert!(states[1].check_failures.load(Ordering::SeqCst) >= FALL as u64);

    // Both primaries failing: the backup takes over.
    a.healthy.store(false, Ordering::SeqCst);
    wait_for("a marked down", Duration::from_secs(5), || !states[0].is_up()).await;
    for _ in 0..5 {
        assert_eq!(who(web).await, "200 spare");
    }

    // b recovers: up again after `rise` good probes, and gets requests again.
    let probes_before = b.probes.load(Ordering::SeqCst);
    b.healthy.store(true, Ordering::SeqCst);
    wait_for("b marked up", Duration::from_secs(5), || states[1].is_up()).await;
    let good_probes = b.probes.load(Ordering::SeqCst) - probes_before;
    assert!((RISE..=RISE + 1).contains(&good_probes), "up after {good_probes} probes");
    for _ in 0..5 {
        assert_eq!(who(web).await, "200 b");
    }
}

#[tokio::test]
async fn nothing_up_answers_503_and_a_dead_new_server_never_gets_traffic() {
    let dead = closed_port().await;
    let lb = start(&format!(
        r#"
frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
    servers: [{{ name: dead, address: "{dead}" }}]
    health_check: {{ kind: tcp, interval: 50ms, timeout: 200ms }}
"#
    ))
    .await;
    let state = lb.snapshot().backends[0].members[0].state.clone();
    // A server never checked starts down: not one request is sent to it blind.
    assert!(!state.is_up());
    assert!(who(lb.local_addr("web")).await.starts_with("503 "));
    wait_for("three failed probes", Duration::from_secs(5), || state.check_failures.load(Ordering::SeqCst) >= 3).await;
    assert!(!state.is_up());
    assert_eq!(state.connections_total.load(Ordering::SeqCst), 0);
    let last = state.last_check.lock().unwrap().clone().expect("a probe result");
    assert!(!last.ok && last.detail.starts_with("connect"), "{last:?}");
}

#[tokio::test]
async fn tcp_frontend_closes_when_its_only_server_is_checked_down() {
    let app = checked_app("a").await;
    let lb = start(&format!(
        r#"
frontends:
  - {{ name: db, bind: 127.0.0.1:0, mode: tcp, default_backend: pool }}
backends:
  - name: pool
    servers: [{{ name: a, address: "{}" }}]
    health_check: {{ kind: http, path: /healthz, interval: 50ms, timeout: 500ms, fall: 1 }}
"#,
        app.server.addr
    ))
    .await;
    let state = lb.snapshot().backends[0].members[0].state.clone();
    wait_for("server up", Duration::from_secs(5), || state.is_up()).await;
    app.healthy.store(false, Ordering::SeqCst);
    wait_for("server down", Duration::from_secs(5), || !state.is_up()).await;
    let reply = raw(lb.local_addr("db"), b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert_eq!(reply, "", "a down server's TCP frontend closes without a byte");
    // Only health probes reached the app: the proxied `GET /` did not.
    let proxied = app.server.requests.load(Ordering::SeqCst) - app.probes.load(Ordering::SeqCst);
    assert_eq!(proxied, 0, "a request reached a down server");
}
