//! `fulcrum ctl` as an operator runs it: the real binary against an in-process
//! instance's admin API. Each test checks what the command printed and its exit
//! code, and where it changed something, the change itself through `/api/status`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use fulcrum::instance::Instance;
use serde_json::Value;
use tokio::io::AsyncReadExt;

const TOKEN: &str = "s3cret-admin-token-42";

/// The most any one `fulcrum ctl` run may take here (its own requests give up after 5 s).
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// What one run printed and how it exited.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The stdout line about server `name`: its first word is the name.
    fn row(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{}", self.stdout))
    }
}

/// Runs `fulcrum ctl ARGS` with `env` set (and FULCRUM_ADMIN_TOKEN only if given there).
async fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command.arg("ctl").args(args).env_remove("FULCRUM_ADMIN_TOKEN").kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("fulcrum ctl {args:?} still running after {RUN_LIMIT:?}"))
        .expect("fulcrum ctl runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn ctl(args: &[&str]) -> Run {
    ctl_env(args, &[]).await
}

/// An instance with backends `app` (app-1, app-2) and `api` (api-1, down), its
/// config file, and the token file when `token` is set.
struct Lb {
    lb: Instance,
    file: tempfile::NamedTempFile,
    dir: tempfile::TempDir,
    admin: String,
    token_file: PathBuf,
    yaml: String,
}

impl Lb {
    async fn start(token: bool) -> Lb {
        let (one, two, api) = (named_http("app-1").await, named_http("app-2").await, named_http("api-1").await);
        let dead = closed_port().await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("admin.token");
        // Trailing newline and spaces: the file's content counts trimmed.
        std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
        let token_line = if token { format!(", token_file: \"{}\"", token_file.display()) } else { String::new() };
        let yaml = format!(
            r#"
admin: {{ bind: 127.0.0.3:0{token_line} }}
frontends:
  - {{ name: web, bind: 127.0.0.1:0, mode: http, default_backend: app }}
backends:
  - name: app
    servers:
      - {{ name: app-1, address: "{}" }}
      - {{ name: app-2, address: "{}" }}
  - name: api
    balance: least_conn
    health_check: {{ kind: tcp, interval: 50ms, timeout: 200ms }}
    servers:
      - {{ name: api-1, address: "{}" }}
      - {{ name: down, address: "{dead}" }}
"#,
            one.addr, two.addr, api.addr
        );
        let (lb, file) = start_file(&yaml).await;
        let admin = lb.admin_addr().expect("admin listener").to_string();
        Lb { lb, file, dir, admin, token_file, yaml }
    }

    fn admin_addr(&self) -> SocketAddr {
        self.lb.admin_addr().expect("admin listener")
    }

    /// `fulcrum ctl --admin ADMIN --token-file TOKEN ARGS`.
    async fn ctl(&self, args: &[&str]) -> Run {
        let token = self.token_file.to_str().unwrap();
        let mut all = vec!["--admin", &self.admin, "--token-file", token];
        all.extend_from_slice(args);
        ctl(&all).await
    }

    /// `/api/status`, read directly (not through ctl).
    async fn status(&self) -> Value {
        let (code, _, body) = get(self.admin_addr(), "/api/status", &[]).await;
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    /// One server's entry in `/api/status`.
    async fn server(&self, backend: &str, server: &str) -> Value {
        let status = self.status().await;
        let backends = status["backends"].as_array().unwrap();
        let b = backends.iter().find(|b| b["name"] == backend).unwrap_or_else(|| panic!("no backend {backend}"));
        let servers = b["servers"].as_array().unwrap();
        servers.iter().find(|s| s["name"] == server).unwrap_or_else(|| panic!("no server {server}")).clone()
    }

    /// Waits until the health checks have judged both `api` servers (api-1 up, down down).
    async fn wait_checked(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (api, down) = (self.server("api", "api-1").await, self.server("api", "down").await);
            if api["up"] == true && api["last_check"]["ok"] == true && down["last_check"]["ok"] == false {
                return;
            }
            assert!(Instant::now() < deadline, "health checks never judged api: {api} {down}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn assert_ok(run: &Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
}

fn assert_refused(run: &Run, message: &str) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(message), "expected {message:?} in stderr: {run:#?}");
}

#[tokio::test]
async fn status_table_shows_backends_and_servers() {
    let lb = Lb::start(true).await;
    lb.wait_checked().await;
    // Reads need no token: none is given here.
    let run = ctl(&["--admin", &lb.admin, "status"]).await;
    assert_ok(&run);
    assert!(run.stdout.contains("backend app  round_robin  2/2 up"), "{}", run.stdout);
    assert!(run.stdout.contains("backend api  least_conn  1/2 up"), "{}", run.stdout);
    for name in ["SERVER", "ADDRESS", "STATE", "ADMIN", "WEIGHT", "ACTIVE", "REQUESTS", "CONN ERR", "LAST CHECK"] {
        assert!(run.stdout.contains(name), "column {name} missing:\n{}", run.stdout);
    }
    let address = lb.server("app", "app-1").await["address"].as_str().unwrap().to_string();
    let row = run.row("app-1");
    assert!(row.contains(&address) && row.contains(" UP ") && row.contains(" ready "), "{row}");
    let row = run.row("down");
    assert!(row.contains(" DOWN ") && row.contains("FAIL"), "{row}");
    assert!(run.row("api-1").contains("ok "), "{}", run.stdout);
    assert!(run.row("web").contains("http"), "{}", run.stdout);
}

#[tokio::test]
async fn drain_then_ready() {
    let lb = Lb::start(true).await;
    let run = lb.ctl(&["drain", "app/app-1"]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "app/app-1: ready -> drain (weight 1)");
    assert_eq!(lb.server("app", "app-1").await["admin_state"], "drain");
    // A drained server takes no new requests.
    let web = lb.lb.local_addr("web");
    for _ in 0..4 {
        assert_eq!(who(web).await, "200 app-2");
    }
    let status = lb.ctl(&["status"]).await;
    assert_ok(&status);
    assert!(status.row("app-1").contains(" drain "), "{}", status.stdout);
    assert!(status.row("app-2").contains(" ready "), "{}", status.stdout);

    let run = lb.ctl(&["ready", "app/app-1"]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "app/app-1: drain -> ready (weight 1)");
    assert_eq!(lb.server("app", "app-1").await["admin_state"], "ready");
    assert!(lb.ctl(&["status"]).await.row("app-1").contains(" ready "));
}

#[tokio::test]
async fn weight_sets_the_weight() {
    let lb = Lb::start(true).await;
    let run = lb.ctl(&["weight", "app/app-2", "5"]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "app/app-2: weight 1 -> 5 (ready)");
    assert_eq!(lb.server("app", "app-2").await["weight"], 5);
    let row = lb.ctl(&["status"]).await.row("app-2").to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.windows(2).any(|w| w == ["ready", "5"]), "{row}");
}

#[tokio::test]
async fn maint_for_a_while_shows_the_time_left() {
    let lb = Lb::start(true).await;
    let run = lb.ctl(&["maint", "app/app-2", "--for", "10m"]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "app/app-2: ready -> maint (weight 1) for 10m");
    let server = lb.server("app", "app-2").await;
    assert_eq!(server["admin_state"], "maint");
    let until = server["admin_until_ms"].as_u64().expect("a timed override has admin_until_ms");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!((now + 590_000..=now + 600_000).contains(&until), "until {until}, now {now}");
    let status = lb.ctl(&["status"]).await;
    let row = status.row("app-2");
    assert!(row.contains(" maint (9m5") && row.contains("s left)"), "{row}");
}

#[tokio::test]
async fn reload_reports_the_generation_or_the_errors() {
    let lb = Lb::start(true).await;
    let run = lb.ctl(&["reload"]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "reload ok: generation 2");
    assert_eq!(lb.status().await["generation"], 2);

    let broken = lb.yaml.replace("name: app-1,", "name: app-1, weight: 100000,");
    std::fs::write(lb.file.path(), broken).unwrap();
    let run = lb.ctl(&["reload"]).await;
    assert_refused(&run, "reload failed (1 error(s)); the running config is unchanged:");
    assert!(run.stderr.contains("  backends[0].servers[0].weight: "), "{run:#?}");
    assert_eq!(lb.status().await["generation"], 2);
}

#[tokio::test]
async fn check_prints_key_path_errors() {
    let lb = Lb::start(true).await;
    let good = lb.dir.path().join("good.yaml");
    std::fs::write(&good, &lb.yaml).unwrap();
    let run = lb.ctl(&["check", good.to_str().unwrap()]).await;
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), format!("{}: ok", good.display()));

    let bad = lb.dir.path().join("bad.yaml");
    let yaml = lb
        .yaml
        .replace("name: app-1,", "name: app-1, weight: 100000,")
        .replace("name: app-2,", "name: app-2, weight: 300,");
    std::fs::write(&bad, yaml).unwrap();
    let run = lb.ctl(&["check", bad.to_str().unwrap()]).await;
    // Every error on its own line, with its key path.
    let bad = bad.display();
    assert_refused(&run, &format!("{bad}: backends[0].servers[0].weight: "));
    assert!(run.stderr.contains(&format!("\n{bad}: backends[0].servers[1].weight: ")), "{run:#?}");
    assert!(run.stderr.ends_with(&format!("{bad}: 2 error(s)\n")), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    // Nothing was applied.
    assert_eq!(lb.status().await["generation"], 1);

    let run = lb.ctl(&["check", "/nonexistent/fulcrum.yaml"]).await;
    assert_refused(&run, "fulcrum ctl: cannot read /nonexistent/fulcrum.yaml: ");
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let lb = Lb::start(true).await;
    let wrong = lb.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-but-long-enough\n").unwrap();
    let run = ctl(&["--admin", &lb.admin, "--token-file", wrong.to_str().unwrap(), "drain", "app/app-1"]).await;
    assert_refused(&run, "fulcrum ctl: the admin API refused the token (check --token-file or FULCRUM_ADMIN_TOKEN)");
    let run = ctl_env(&["--admin", &lb.admin, "reload"], &[("FULCRUM_ADMIN_TOKEN", "nope")]).await;
    assert_refused(&run, "the admin API refused the token");
    let run = ctl(&["--admin", &lb.admin, "drain", "app/app-1"]).await;
    assert_refused(&run, "fulcrum ctl: the admin API needs a token: pass --token-file PATH or set FULCRUM_ADMIN_TOKEN");
    assert_eq!(lb.server("app", "app-1").await["admin_state"], "ready");
    assert_eq!(lb.status().await["generation"], 1);
}

#[tokio::test]
async fn the_token_can_come_from_the_environment() {
    let lb = Lb::start(true).await;
    let run = ctl_env(&["--admin", &lb.admin, "drain", "app/app-1"], &[("FULCRUM_ADMIN_TOKEN", TOKEN)]).await;
    assert_ok(&run);
    assert_eq!(lb.server("app", "app-1").await["admin_state"], "drain");
}

#[tokio::test]
async fn without_a_token_file_writes_are_disabled() {
    let lb = Lb::start(false).await;
    let message = "fulcrum ctl: writes are disabled: the config has no admin.token_file";
    assert_refused(&lb.ctl(&["drain", "app/app-1"]).await, message);
    assert_refused(&lb.ctl(&["reload"]).await, message);
    assert_eq!(lb.server("app", "app-1").await["admin_state"], "ready");
    // Reads still work.
    assert_ok(&lb.ctl(&["status"]).await);
}

#[tokio::test]
async fn unknown_servers_and_bad_values_are_named() {
    let lb = Lb::start(true).await;
    assert_refused(&lb.ctl(&["drain", "app/x"]).await, "fulcrum ctl: no server app/x\n");
    assert_refused(&lb.ctl(&["ready", "nope/app-1"]).await, "fulcrum ctl: no server nope/app-1\n");
    // Out of range: the instance's own 400 explanation, not a generic one.
    let run = lb.ctl(&["weight", "app/app-1", "100000"]).await;
    assert_refused(&run, "fulcrum ctl: ");
    assert!(!run.stderr.contains("unexpected answer") && run.stderr.contains("weight"), "{run:#?}");
    assert_eq!(lb.server("app", "app-1").await["weight"], 1);
}

#[tokio::test]
async fn usage_errors_exit_2_before_sending_anything() {
    // Nothing listens here: a run that sent a request would exit 1, not 2.
    let admin = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["drain", "app"],
        vec!["ready", "/app-1"],
        vec!["weight", "app/app-1", "heavy"],
        vec!["maint", "app/app-1", "--for", "soon"],
        vec!["status", "--watch", "--interval", "0s"],
        vec!["frobnicate"],
    ] {
        let mut all = vec!["--admin", admin.as_str()];
        all.extend(args.iter().copied());
        let run = ctl(&all).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:#?}");
    }
    let run = ctl(&["--admin", &admin, "drain", "app"]).await;
    assert!(run.stderr.contains("expected BACKEND/SERVER, like app/app-1; got \"app\""), "{run:#?}");
}

#[tokio::test]
async fn an_admin_api_that_is_down_is_named() {
    let admin = format!("127.0.0.1:{}", free_port());
    let message = format!(
        "fulcrum ctl: cannot reach the admin API at {admin}: connection refused (is fulcrum running with admin.bind?)"
    );
    assert_refused(&ctl(&["--admin", &admin, "status"]).await, &message);
    assert_refused(
        &ctl_env(&["--admin", &admin, "drain", "app/app-1"], &[("FULCRUM_ADMIN_TOKEN", TOKEN)]).await,
        &message,
    );
}

#[tokio::test]
async fn a_silent_admin_api_times_out() {
    // Accepts and then never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let run = ctl(&["--admin", &admin, "status"]).await;
    assert_refused(&run, &format!("fulcrum ctl: the admin API at {admin} did not answer within 5 s"));
    assert!(started.elapsed() >= Duration::from_millis(4900), "{:?}", started.elapsed());
    hold.abort();
}

#[tokio::test]
async fn status_watch_redraws_until_ctrl_c() {
    let lb = Lb::start(true).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["ctl", "--admin", &lb.admin, "status", "--watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let frames = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        while seen.matches("\x1b[H\x1b[2J").count() < 3 {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "stdout closed early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(frames.is_ok(), "fewer than 3 frames within 10 s: {seen:?}");
    assert!(seen.starts_with("\x1b[H\x1b[2J"), "{seen:?}");
    let frame = seen.split("\x1b[H\x1b[2J").nth(1).unwrap();
    assert!(frame.contains("backend app") && frame.contains("app-1"), "{frame}");

    let pid = child.id().expect("still running") as i32;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the watch stops within 5 s of Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
