//! The access log: one line per request with client, frontend, backend, server,
//! method, path, status, bytes and durations — written when the body has been sent.

mod common;

use std::time::Duration;

use common::*;

fn config(server: std::net::SocketAddr, access_log: bool) -> String {
    format!(
        r#"
frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app, access_log: {access_log} }}
backends:
  - {{ name: app, servers: [{{ name: s1, address: "{server}" }}] }}
  - {{ name: empty, servers: [] }}
"#
    )
}

// Current-thread runtime: the subscriber set for this thread sees every task.
#[tokio::test]
async fn one_line_per_request_with_bytes_and_durations() {
    let (captured, _guard) = Captured::install("fulcrum::access=info");

    let app = named_http("hello-from-s1").await;
    let lb = start(&config(app.addr, true)).await;
    let web = lb.local_addr("web");
    let (status, _, body) = get(web, "/some/path?q=1", &[]).await;
    assert_eq!(status, 200);
    wait_for("the access-log line", Duration::from_secs(5), || !captured.lines().is_empty()).await;
    let lines = captured.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    for field in [
        "client=127.0.0.1:",
        "frontend=web",
        "backend=app",
        "server=s1",
        "method=GET",
        "path=/some/path?q=1",
        "status=200",
        &format!("bytes={}", body.len()),
        "head_ms=",
        "total_ms=",
        "complete=true",
    ] {
        assert!(line.contains(field), "{field:?} missing in {line}");
    }
    drop(lb);

    // Off: not a line.
    let lb = start(&config(app.addr, false)).await;
    let before = captured.lines().len();
    assert_eq!(get(lb.local_addr("web"), "/", &[]).await.0, 200);
    tokio::task::yield_now().await;
    assert_eq!(captured.lines().len(), before);
}

// Answers made here log what they sent too: a route's `respond`, a static file,
// and a balancer-made error page.
#[tokio::test]
async fn answers_made_here_log_their_bytes_once_sent() {
    let (captured, _guard) = Captured::install("fulcrum::access=info");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.txt"), "twelve bytes").unwrap();
    let yaml = format!(
        r#"
frontends:
  - name: web
    bind: 127.0.0.1:0
    mode: http
    access_log: true
    default_backend: empty
    routes:
      - {{match: {{path: /ping}}, respond: {{status: 200, body: "pong\n"}}}}
      - {{match: {{path_prefix: /files/}}, static: {{root: "{}", strip_prefix: true}}}}
backends:
  - {{ name: empty, servers: [] }}
"#,
        dir.path().display()
    );
    let lb = start(&yaml).await;
    let web = lb.local_addr("web");
    for (path, status, bytes) in [("/ping", 200, 5), ("/files/file.txt", 200, 12)] {
        let (got, _, body) = get(web, path, &[]).await;
        assert_eq!((got, body.len()), (status, bytes), "{path}");
    }
    let (status, _, error_page) = get(web, "/nowhere", &[]).await;
    assert_eq!(status, 503);
    wait_for("three access-log lines", Duration::from_secs(5), || captured.lines().len() >= 3).await;
    let lines = captured.lines();
    let line = |path: &str| {
        lines.iter().find(|l| l.contains(&format!("path={path} "))).unwrap_or_else(|| panic!("{path}: {lines:?}"))
    };
    for (path, fields) in [
        ("/ping", vec!["status=200", "bytes=5", "complete=true"]),
        ("/files/file.txt", vec!["status=200", "bytes=12", "complete=true"]),
        ("/nowhere", vec!["status=503", &*format!("bytes={}", error_page.len()), "complete=true"]),
    ] {
        for field in fields {
            assert!(line(path).contains(field), "{field:?} missing in {}", line(path));
        }
    }
}
