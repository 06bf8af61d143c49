//! `fulcrum demo` end to end: the real binary on (a port-shifted copy of)
//! configs/demo.yaml balances over its demo servers and reacts to a failing one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

async fn body(url_addr: std::net::SocketAddr, path: &str) -> String {
    let (_, _, body) = common::get(url_addr, path, &[]).await;
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn demo_balances_and_reacts_to_a_failing_server() {
    // Same file, ports moved out of the way of anything else on the machine.
    let mut yaml = fulcrum::demo::DEMO_CONFIG.to_string();
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    for (fixed, port) in ["8080", "9000", "9101", "9102", "9103"].iter().zip(&ports) {
        yaml = yaml.replace(&format!("127.0.0.1:{fixed}"), &format!("127.0.0.1:{port}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, yaml).unwrap();
    // The demo's log, shown if it does not come up (a port taken meanwhile, say).
    let log_path = dir.path().join("demo.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["demo", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // The banner is printed once the demo servers listen; then the balancer starts.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Config:") {
        assert!(stdout.read_line(&mut banner).unwrap() > 0, "demo exited: {banner}");
    }
    assert!(banner.contains(&format!("http://127.0.0.1:{}/", ports[0])), "{banner}");
    assert!(banner.contains("/fail"), "{banner}");

    let web = std::net::SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let demo2 = std::net::SocketAddr::from(([127, 0, 0, 1], ports[3]));
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all demo servers answered: {seen:?}; demo log:\n{}",
            log()
        );
        if let Ok(stream) = tokio::net::TcpStream::connect(web).await {
            drop(stream);
            let answer = body(web, "/").await;
            if let Some(name) = answer.split_whitespace().nth(2) {
                seen.insert(name.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Fail demo-2: it leaves the rotation once its checks fail.
    assert!(body(demo2, "/fail").await.contains("now fails"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    'gone: loop {
        assert!(tokio::time::Instant::now() < deadline, "demo-2 never left the rotation");
        for _ in 0..8 {
            if body(web, "/").await.contains("demo-2") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'gone;
            }
        }
        break;
    }
    common::signal(&child, libc::SIGTERM);
    let status = common::exit_status(child).await;
    assert!(status.success(), "{status}");
}
