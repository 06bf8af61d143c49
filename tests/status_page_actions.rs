//! The status page acts: in a real headless Chromium, driven through the Chrome
//! DevTools protocol, a click on a server's "drain" button drains it through the
//! admin API (the token from sessionStorage as the Bearer header), and an error
//! the API answers is shown on the page. The page draws the last minutes as
//! inline SVG from `/api/history`'s samples, with no external asset.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "page-token-0123456789abcdef";

/// A headless Chromium with its DevTools endpoint, killed on drop.
struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    session: Option<String>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Browser {
    async fn launch(chromium: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Chromium says where its DevTools listen on stderr.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await
        .expect("chromium started within 30 s");
        // Keep draining stderr so Chromium never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Browser { child, _profile: profile, socket, next_id: 0, session: None }
    }

    /// Sends a DevTools command (to the page once attached) and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.send(method, params).await;
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends a DevTools command and waits for its answer, an error or a result.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(message.to_string())).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let Some(Ok(Message::Text(text))) = self.socket.next().await else { continue };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        answer
    }

    /// Opens `url` in a new page and attaches to it.
    async fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", json!({"url": url})).await;
        let attached =
            self.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        self.wait_for("the page loaded", "document.readyState === 'complete' && !!document.querySelector('tr')").await;
    }

    /// Evaluates `expression` in the page; its value. The page replaces itself
    /// (after an action, and every few seconds): an evaluation that met a page
    /// being replaced never ran, and is tried again in the new one.
    async fn eval(&mut self, expression: &str) -> Value {
        for _ in 0..200 {
            let answer = self.send("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
            let Some(error) = answer.get("error") else { return answer["result"]["result"]["value"].clone() };
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("navigated or closed") || message.contains("context"),
                "Runtime.evaluate: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page never settled to evaluate {expression}");
    }

    /// Polls `expression` until it is true (at most 10 s).
    async fn wait_for(&mut self, what: &str, expression: &str) {
        for _ in 0..200 {
            if self.eval(expression).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// Fulcrum with an admin token, one frontend `web` and backend `app` of `servers`
/// (YAML list items); the directory holding its files lives as long as the result.
async fn start_with_token(servers: &str) -> (fulcrum::instance::Instance, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let path = dir.path().join("fulcrum.yaml");
    let yaml = format!(
        "admin: {{ bind: 127.0.0.3:0, token_file: admin.token }}\n\
         frontends:\n  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}\n\
         backends:\n  - name: app\n    servers:\n{servers}"
    );
    std::fs::write(&path, yaml).unwrap();
    let lb = fulcrum::instance::Instance::start_from_file(&path, fulcrum::workers::Workers::none()).await.unwrap();
    (lb, dir)
}

async fn admin_state(admin: SocketAddr, server: usize) -> String {
    let report: Value = serde_json::from_slice(&get(admin, "/api/status", &[]).await.2).unwrap();
    report["backends"][0]["servers"][server]["admin_state"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_click_on_drain_drains_the_server_and_an_api_error_is_shown() {
    let Some(chromium) = require_tool("chromium", "the status page's buttons") else { return };
    let (a, b) = (named_http("a").await, named_http("b").await);
    let servers =
        format!("      - {{ name: a, address: \"{}\" }}\n      - {{ name: b, address: \"{}\" }}\n", a.addr, b.addr);
    let (lb, _dir) = start_with_token(&servers).await;
    let admin = lb.admin_addr().unwrap();
    // Some traffic, and two history samples, for the charts.
    for _ in 0..5 {
        get(lb.local_addr("web"), "/", &[]).await;
    }
    let history = || async {
        let body: Value = serde_json::from_slice(&get(admin, "/api/history", &[]).await.2).unwrap();
        body["backends"]["app"].as_array().map_or(0, Vec::len)
    };
    for _ in 0..100 {
        if history().await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(history().await >= 2, "/api/history samples every second");

    let mut browser = Browser::launch(&chromium).await;
    browser.open(&format!("http://{admin}/status")).await;
    assert_eq!(browser.eval("document.querySelectorAll('.charts svg polyline').length").await, json!(4));
    assert_eq!(browser.eval("document.querySelectorAll('script[src], link[href], img[src]').length").await, json!(0));
    // A wrong token: the API's 401 is shown, the server stays ready.
    browser.eval("sessionStorage.setItem('fulcrum-token', 'wrong-token-0123456789')").await;
    browser.eval("document.querySelector('tr[data-server=\"a\"] button[data-action=\"drain\"]').click()").await;
    browser.wait_for("the error shown", "document.getElementById('admin-error').textContent.includes('401')").await;
    assert_eq!(admin_state(admin, 0).await, "ready");
    // The right token: the click drains `a`, and the page shows it after its reload.
    browser.eval(&format!("sessionStorage.setItem('fulcrum-token', '{TOKEN}')")).await;
    browser.eval("document.querySelector('tr[data-server=\"a\"] button[data-action=\"drain\"]').click()").await;
    wait_for_async(admin).await;
    assert_eq!(admin_state(admin, 0).await, "drain");
    assert_eq!(admin_state(admin, 1).await, "ready");
    browser
        .wait_for(
            "the row showing drain",
            "!!document.querySelector('tr[data-server=\"a\"]') && document.querySelector('tr[data-server=\"a\"]').className === 'drain'",
        )
        .await;
}

/// Waits (at most 10 s) until server `a` is drained.
async fn wait_for_async(admin: SocketAddr) {
    for _ in 0..200 {
        if admin_state(admin, 0).await == "drain" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the click did not drain the server");
}

/// The page with a few seconds of charts, as the README shows it: written to
/// `$FULCRUM_SCREENSHOT_DIR/status-page.png` when that is set
/// (`FULCRUM_SCREENSHOT_DIR=dashboards cargo test --test status_page_actions`).
#[tokio::test]
async fn the_page_with_its_charts_renders() {
    let Some(chromium) = require_tool("chromium", "the status page's screenshot") else { return };
    let ok = named_http("app-1").await;
    let failing = answering("app-2", 503).await;
    let slow = slow_http(Duration::from_millis(30)).await;
    let servers = format!(
        "      - {{ name: app-1, address: \"{}\", weight: 6 }}\n      - {{ name: app-2, address: \"{}\" }}\n      \
         - {{ name: app-3, address: \"{}\", weight: 3 }}\n",
        ok.addr, failing.addr, slow
    );
    let (lb, _dir) = start_with_token(&servers).await;
    let (admin, web) = (lb.admin_addr().unwrap(), lb.local_addr("web"));
    // About five seconds of traffic (bounded: 1,500 requests at most).
    let traffic = tokio::spawn(async move {
        let started = std::time::Instant::now();
        for n in 0..1_500u32 {
            if started.elapsed() > Duration::from_secs(5) {
                break;
            }
            get(web, "/", &[]).await;
            if n % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    traffic.await.unwrap();
    let mut browser = Browser::launch(&chromium).await;
    browser.open(&format!("http://{admin}/status")).await;
    let desktop = json!({"width": 1400, "height": 700, "deviceScaleFactor": 1, "mobile": false});
    browser.call("Emulation.setDeviceMetricsOverride", desktop).await;
    let shot = browser.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
    let png = decode_base64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a real screenshot ({} bytes)", png.len());
    let points = browser
        .eval("document.querySelector('.charts polyline').getAttribute('points').trim().split(' ').length")
        .await;
    assert!(points.as_u64().unwrap() >= 4, "several seconds charted: {points}");
    if let Ok(dir) = std::env::var("FULCRUM_SCREENSHOT_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("status-page.png"), &png).unwrap();
    }
}

/// Decodes standard base64 (what DevTools sends images in).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
