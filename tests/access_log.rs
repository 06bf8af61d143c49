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
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("fulcrum::access=info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
