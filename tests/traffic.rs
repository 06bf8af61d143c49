//! Traffic management across a backend's servers: outlier ejection and return,
//! slow start of a server a reload adds, power of two choices, and the config
//! checks of these keys.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn backend_yaml(servers: &[(&str, std::net::SocketAddr)], extra: &str) -> String {
    let servers: String =
        servers.iter().map(|(name, addr)| format!("      - {{ name: {name}, address: \"{addr}\" }}\n")).collect();
    format!(
        "admin: {{ bind: 127.0.0.3:0 }}\n\
         frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n{extra}    servers:\n{servers}"
    )
}

/// Which server answered each of `count` requests, by body.
async fn answers(addr: std::net::SocketAddr, count: usize) -> Vec<(u16, String)> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (status, _, body) = get(addr, "/", &[]).await;
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    out
}

#[tokio::test]
async fn a_failing_server_is_ejected_comes_back_and_is_ejected_longer_the_second_time() {
    let good = answering("good", 200).await;
    let bad = answering("bad", 500).await;
    let extra = "    outlier_detection: {consecutive_failures: 3, ejection_time: 1s, max_ejected_percent: 50}\n";
    let lb = start(&backend_yaml(&[("good", good.addr), ("bad", bad.addr)], extra)).await;
    let addr = lb.local_addr("web");
    let bad_state = Arc::clone(&lb.snapshot().backends[0].members[1].state);
    // Round robin: the bad server gets every other request until its third 500.
    let first = answers(addr, 6).await;
    assert_eq!(first.iter().filter(|(status, _)| *status == 500).count(), 3, "{first:?}");
    assert!(bad_state.is_ejected(), "ejected after 3 failures in a row");
    let during = answers(addr, 10).await;
    assert!(during.iter().all(|(status, body)| *status == 200 && body == "good"), "{during:?}");
    assert_eq!(bad.requests.load(Ordering::SeqCst), 3);
    // Once its time is up it takes traffic again (through slow start, when set).
    wait_for("the ejection over", Duration::from_secs(5), || !bad_state.is_ejected()).await;
    let again = answers(addr, 12).await;
    assert!(again.iter().any(|(_, body)| body == "bad"), "back in rotation: {again:?}");
    assert!(bad_state.is_ejected(), "ejected again");
    assert_eq!(bad_state.ejections.load(Ordering::SeqCst), 2);
    let left = bad_state.ejected_until_ms().saturating_sub(fulcrum::upstream::unix_ms());
    assert!(left > 1_000, "the second ejection lasts twice the first: {left} ms left");
    let metrics = String::from_utf8_lossy(&get(lb.admin_addr().unwrap(), "/metrics", &[]).await.2).into_owned();
    assert!(metrics.contains("fulcrum_server_ejections_total{backend=\"app\",server=\"bad\"} 2"), "{metrics}");
    assert!(metrics.contains("fulcrum_server_ejected{backend=\"app\",server=\"bad\"} 1"), "{metrics}");
}

#[tokio::test]
async fn no_more_than_max_ejected_percent_are_ejected() {
    let (a, b) = (answering("a", 503).await, answering("b", 503).await);
    let extra = "    outlier_detection: {consecutive_failures: 2, ejection_time: 30s, max_ejected_percent: 50}\n";
    let lb = start(&backend_yaml(&[("a", a.addr), ("b", b.addr)], extra)).await;
    let addr = lb.local_addr("web");
    let got = answers(addr, 20).await;
    assert!(got.iter().all(|(status, _)| *status == 503));
    let ejected = lb.snapshot().backends[0].members.iter().filter(|m| m.state.is_ejected()).count();
    assert_eq!(ejected, 1, "50% of two servers, rounded up: one");
}

#[tokio::test]
async fn client_errors_and_good_answers_do_not_eject() {
    let (a, b) = (answering("a", 404).await, answering("b", 200).await);
    let extra = "    outlier_detection: {consecutive_failures: 2, ejection_time: 30s}\n";
    let lb = start(&backend_yaml(&[("a", a.addr), ("b", b.addr)], extra)).await;
    let got = answers(lb.local_addr("web"), 10).await;
    assert_eq!(got.iter().filter(|(status, _)| *status == 404).count(), 5, "{got:?}");
    assert!(lb.snapshot().backends[0].members.iter().all(|m| !m.state.is_ejected()));
}

#[tokio::test]
async fn connect_failures_eject_too() {
    let good = answering("good", 200).await;
    let closed = closed_port().await;
    let extra = "    retries: 1\n    outlier_detection: {consecutive_failures: 2, ejection_time: 30s}\n";
    let lb = start(&backend_yaml(&[("good", good.addr), ("gone", closed)], extra)).await;
    let got = answers(lb.local_addr("web"), 8).await;
    assert!(got.iter().all(|(status, _)| *status == 200), "retried on the good one: {got:?}");
    let gone = &lb.snapshot().backends[0].members[1].state;
    assert!(gone.is_ejected());
    assert_eq!(gone.connect_errors.load(Ordering::SeqCst), 2, "no connect tried once ejected");
}

#[tokio::test]
async fn a_server_added_by_a_reload_ramps_up() {
    let (a, b) = (named_http("a").await, named_http("b").await);
    let extra = "    slow_start: 1500ms\n";
    let (lb, file) = start_file(&backend_yaml(&[("a", a.addr)], extra)).await;
    let addr = lb.local_addr("web");
    assert!(answers(addr, 4).await.iter().all(|(_, body)| body == "a"));
    reload_with(&lb, &file, &backend_yaml(&[("a", a.addr), ("b", b.addr)], extra)).await;
    let snapshot = lb.snapshot();
    let old = &snapshot.backends[0].members[0];
    let new = &snapshot.backends[0].members[1];
    assert_eq!(old.state.ramp(old.slow_start_ms), None, "the server that stayed does not ramp");
    assert!(new.state.ramp(new.slow_start_ms).is_some(), "the new one does");
    let early = answers(addr, 40).await.iter().filter(|(_, body)| body == "b").count();
    assert!(early <= 14, "the newcomer takes a small share at first: {early} of 40");
    wait_for("the ramp over", Duration::from_secs(5), || new.state.ramp(new.slow_start_ms).is_none()).await;
    let late = answers(addr, 40).await.iter().filter(|(_, body)| body == "b").count();
    assert_eq!(late, 20, "then its full share");
}

#[tokio::test]
async fn power_of_two_choices_spreads_over_every_server() {
    let servers = [named_http("a").await, named_http("b").await, named_http("c").await];
    let list: Vec<(&str, std::net::SocketAddr)> =
        ["a", "b", "c"].iter().zip(&servers).map(|(name, server)| (*name, server.addr)).collect();
    let lb = start(&backend_yaml(&list, "    balance: random\n")).await;
    let got = answers(lb.local_addr("web"), 60).await;
    for name in ["a", "b", "c"] {
        let count = got.iter().filter(|(_, body)| body == name).count();
        assert!(count >= 5, "{name} got {count} of 60");
    }
}

#[test]
fn check_bounds_the_traffic_keys() {
    let check = |extra: &str| {
        fulcrum::config::Config::parse(&backend_yaml(&[("s", "127.0.0.1:9".parse().unwrap())], extra))
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(check("    balance: random\n    slow_start: 30s\n"), None);
    assert_eq!(check("    balance: consistent_hash\n    hash_balance_factor: 1.25\n"), None);
    let err = check("    hash_balance_factor: 1.25\n").unwrap();
    assert!(err.contains("backends[0].hash_balance_factor") && err.contains("consistent_hash"), "{err}");
    let err = check("    balance: consistent_hash\n    hash_balance_factor: 1.0\n").unwrap();
    assert!(err.contains("backends[0].hash_balance_factor"), "{err}");
    let err = check("    slow_start: 0s\n").unwrap();
    assert!(err.contains("backends[0].slow_start"), "{err}");
    let err = check("    outlier_detection: {consecutive_failures: 0}\n").unwrap();
    assert!(err.contains("backends[0].outlier_detection.consecutive_failures"), "{err}");
    let err = check("    outlier_detection: {max_ejected_percent: 101}\n").unwrap();
    assert!(err.contains("backends[0].outlier_detection.max_ejected_percent"), "{err}");
    let err = check("    sticky: {cookie: \"a b\"}\n").unwrap();
    assert!(err.contains("backends[0].sticky.cookie"), "{err}");
}
