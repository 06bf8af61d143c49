//! dashboards/fulcrum.json only queries metrics Fulcrum really exports, checked
//! against a real scrape; and configs/prometheus.yml passes promtool when present.

mod common;

use std::collections::BTreeSet;

use common::*;

/// Every `fulcrum_*` metric name used in a panel query.
fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/fulcrum.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", panel["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let mut rest = expr;
            while let Some(at) = rest.find("fulcrum_") {
                let tail = &rest[at..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_uses_exported_metrics() {
    let names = dashboard_metric_names();
    assert!(names.len() >= 10, "suspiciously few metrics in the dashboard: {names:?}");
    let app = named_http("a").await;
    // A TLS frontend too, for the TLS metrics.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["site.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("site.key"), key.serialize_pem()).unwrap();
    let lb = start(&format!(
        r#"
admin: {{ bind: 127.0.0.3:0 }}
frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
  - name: secure
    bind: 127.0.0.2:0
    default_backend: app
    tls: {{ certificates: [{{ cert: "{dir}/site.pem", key: "{dir}/site.key" }}] }}
backends:
  - name: app
    servers: [{{ name: a, address: "{}" }}]
    health_check: {{ kind: tcp, interval: 1s }}
"#,
        app.addr,
        dir = dir.path().display(),
    ))
    .await;
    get(lb.local_addr("web"), "/", &[]).await;
    let (_, _, body) = get(lb.admin_addr().unwrap(), "/metrics", &[]).await;
    let scrape = String::from_utf8(body.to_vec()).unwrap();
    let exported: BTreeSet<&str> =
        scrape.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "dashboard queries metrics Fulcrum does not export: {missing:?}");
}

#[test]
fn dashboard_uses_a_datasource_variable() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/fulcrum.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource"));
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {} pins a datasource", panel["title"]);
    }
}

#[test]
fn prometheus_scrape_example_is_valid() {
    let Some(promtool) = require_tool("promtool", "promtool check config configs/prometheus.yml") else {
        return;
    };
    let out = std::process::Command::new(promtool)
        .args(["check", "config", concat!(env!("CARGO_MANIFEST_DIR"), "/configs/prometheus.yml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
