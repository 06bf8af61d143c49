//! `fulcrum ctl status` as a terminal table: the status page's numbers, read from
//! `/api/status` as loose JSON so a field added, renamed or missing on either side
//! shows as `-` instead of breaking the command.

use serde_json::Value;

/// Renders a status report (`/api/status`); `now_ms` (unix ms) dates timed overrides.
pub fn render(status: &Value, now_ms: u64) -> String {
    let mut out = summary(status);
    out.push('\n');
    let frontends = list(status, "frontends");
    if !frontends.is_empty() {
        let mut rows = vec![cells(&["FRONTEND", "MODE", "BIND", "ACTIVE", "CONNECTIONS", "REQUESTS", "REQ/S"])];
        rows.extend(frontends.iter().map(frontend_row));
        out.push('\n');
        for line in layout(&rows, &[false, false, false, true, true, true, true]) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    let backends = list(status, "backends");
    // One layout for every server row so the columns line up across backends.
    let mut rows =
        vec![cells(&["SERVER", "ADDRESS", "STATE", "ADMIN", "WEIGHT", "ACTIVE", "REQUESTS", "CONN ERR", "LAST CHECK"])];
    for backend in backends {
        rows.extend(list(backend, "servers").iter().map(|server| server_row(server, now_ms)));
    }
    let mut lines = layout(&rows, &[false, false, false, false, false, true, true, true, false]).into_iter();
    let header = lines.next().unwrap_or_default();
    for backend in backends {
        out.push('\n');
        out.push_str(&backend_line(backend));
        out.push('\n');
        out.push_str(&format!("  {header}\n"));
        for line in lines.by_ref().take(list(backend, "servers").len()) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if backends.is_empty() {
        out.push_str("\nno backends\n");
    }
    out
}

fn summary(status: &Value) -> String {
    let mut out = format!("fulcrum {}, generation {}", text(status, "version"), number(status, "generation"));
    if status.get("draining").and_then(Value::as_bool) == Some(true) {
        out.push_str(", DRAINING");
    }
    if status.pointer("/reloads/last_ok").and_then(Value::as_bool) == Some(false) {
        out.push_str(", last reload FAILED");
    }
    out
}

fn frontend_row(frontend: &Value) -> Vec<String> {
    let binds = list(frontend, "binds").iter().filter_map(|b| b.as_str()).map(clean).collect::<Vec<_>>().join(",");
    let rate = frontend.get("request_rate").and_then(Value::as_f64).map_or("-".into(), |r| format!("{r:.1}"));
    vec![
        text(frontend, "name"),
        text(frontend, "mode"),
        if binds.is_empty() { "-".into() } else { binds },
        number(frontend, "active_connections"),
        number(frontend, "connections_total"),
        number(frontend, "http_requests"),
        rate,
    ]
}

fn backend_line(backend: &Value) -> String {
    let total = list(backend, "servers").len();
    let mut line = format!(
        "backend {}  {}  {}/{total} up",
        text(backend, "name"),
        text(backend, "balance"),
        number(backend, "up_servers")
    );
    if let Some(queue) = backend.get("queue").filter(|q| q.is_object()) {
        let wait = queue.get("mean_wait_ms").and_then(Value::as_f64).map_or("-".into(), |w| format!("{w:.1}"));
        line.push_str(&format!(
            "  queue {}/{} waiting, {} refused, mean wait {wait} ms",
            number(queue, "length"),
            number(queue, "max"),
            number(queue, "refused"),
        ));
    }
    line
}

fn server_row(server: &Value, now_ms: u64) -> Vec<String> {
    let flag = |key: &str| server.get(key).and_then(Value::as_bool);
    let mut name = text(server, "name");
    if flag("backup") == Some(true) {
        name.push_str(" (backup)");
    }
    let state = match (flag("ejected"), flag("up")) {
        (Some(true), _) => "EJECTED",
        (_, Some(true)) => "UP",
        (_, Some(false)) => "DOWN",
        _ => "-",
    };
    let mut admin = text(server, "admin_state");
    if let Some(until) = server.get("admin_until_ms").and_then(Value::as_u64) {
        admin.push_str(&format!(" ({} left)", remaining(until.saturating_sub(now_ms) / 1000)));
    }
    let mut weight = number(server, "weight");
    if let Some(ramp) = server.get("ramp").and_then(Value::as_f64).filter(|r| *r < 1.0) {
        weight.push_str(&format!(" (ramp {:.0}%)", (ramp * 100.0).clamp(0.0, 100.0)));
    }
    vec![
        name,
        text(server, "address"),
        state.to_string(),
        admin,
        weight,
        number(server, "active_connections"),
        number(server, "http_requests"),
        number(server, "connect_errors"),
        last_check(server.get("last_check")),
    ]
}

fn last_check(check: Option<&Value>) -> String {
    let Some(check) = check.filter(|c| c.is_object()) else { return "-".into() };
    let verdict = match check.get("ok").and_then(Value::as_bool) {
        Some(true) => "ok",
        Some(false) => "FAIL",
        None => "?",
    };
    let mut out = format!("{verdict} {}", text(check, "detail"));
    if let Some(ago) = check.get("seconds_ago").and_then(Value::as_f64) {
        out.push_str(&format!(", {ago:.1}s ago"));
    }
    out
}

/// `9m58s`, `1h02m`, `45s`: short enough for a table cell.
fn remaining(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => "-".into(),
        Some(other) => clean(&other.to_string()),
    }
}

fn number(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// Names and check details come from config files and servers: control
/// characters would let them move the cursor or recolour the terminal.
fn clean(text: &str) -> String {
    const LONGEST: usize = 60;
    let mut out: String = text.chars().take(LONGEST).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().count() > LONGEST {
        out.push('…');
    }
    out
}

fn cells(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Pads every column to its widest cell; `right[i]` right-aligns column i (numbers).
fn layout(rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, &width))| {
                    if right.get(i).copied().unwrap_or(false) {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "version": "0.1.0", "generation": 3, "draining": false,
            "reloads": {"last_ok": true},
            "frontends": [{"name": "web", "mode": "http", "binds": ["127.0.0.1:8080"],
                "active_connections": 2, "connections_total": 9, "http_requests": 40, "request_rate": 1.5}],
            "backends": [{
                "name": "app", "balance": "round_robin", "up_servers": 1, "responses": [0, 1, 0, 0, 0],
                "queue": {"length": 1, "max": 100, "timeout_ms": 5000, "refused": 2, "waits": 3, "mean_wait_ms": 1.26},
                "servers": [
                    {"name": "app-1", "address": "10.0.0.1:80", "up": true, "weight": 5, "backup": false,
                     "active_connections": 4, "http_requests": 45000, "connect_errors": 1, "ejected": false,
                     "ramp": 0.4, "admin_state": "drain", "admin_until_ms": 1_000_000 + 598_000,
                     "last_check": {"ok": true, "detail": "HTTP 200", "seconds_ago": 0.42, "duration_ms": 0.9}},
                    {"name": "app-2", "address": "10.0.0.2:80", "up": false, "weight": 1, "backup": true,
                     "ejected": false, "ramp": null, "admin_state": "ready", "admin_until_ms": null,
                     "last_check": {"ok": false, "detail": "connection refused", "seconds_ago": 1.0}}
                ]}]
        })
    }

    #[test]
    fn renders_backends_servers_and_their_states() {
        let out = render(&sample(), 1_000_000);
        assert!(out.starts_with("fulcrum 0.1.0, generation 3\n"), "{out}");
        assert!(
            out.contains("backend app  round_robin  1/2 up  queue 1/100 waiting, 2 refused, mean wait 1.3 ms"),
            "{out}"
        );
        let row = out.lines().find(|l| l.contains("app-1")).unwrap();
        for part in ["10.0.0.1:80", "UP", "drain (9m58s left)", "5 (ramp 40%)", "45000", "ok HTTP 200, 0.4s ago"] {
            assert!(row.contains(part), "{part:?} missing in {row:?}");
        }
        let row = out.lines().find(|l| l.contains("app-2")).unwrap();
        for part in ["app-2 (backup)", "DOWN", "ready", "FAIL connection refused, 1.0s ago"] {
            assert!(row.contains(part), "{part:?} missing in {row:?}");
        }
        assert!(out.contains("web") && out.contains("127.0.0.1:8080"), "{out}");
    }

    #[test]
    fn columns_line_up() {
        let out = render(&sample(), 1_000_000);
        let header = out.lines().find(|l| l.contains("SERVER")).unwrap();
        let at = header.find("STATE").unwrap();
        for name in ["app-1", "app-2"] {
            let row = out.lines().find(|l| l.contains(name)).unwrap();
            assert!(matches!(&row[at..at + 2], "UP" | "DO"), "{row:?} vs {header:?}");
        }
    }

    #[test]
    fn missing_and_odd_fields_show_dashes_without_panicking() {
        for value in [
            json!(null),
            json!([]),
            json!({}),
            json!({"backends": "x"}),
            json!({"backends": [1, {"servers": [null, {"up": "yes"}]}]}),
        ] {
            let out = render(&value, 0);
            assert!(out.starts_with("fulcrum -, generation -"), "{out}");
        }
        let out = render(&json!({"backends": [{"name": "b", "servers": [{"name": "s"}]}]}), 0);
        let row = out.lines().find(|l| l.trim_start().starts_with("s ")).unwrap();
        assert!(row.contains('-'), "{row}");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let value = json!({"backends": [{"name": "a\u{1b}[2J", "servers": [{"name": "x\u{7}", "last_check": {"ok": false, "detail": "bad\r\nline"}}]}]});
        let out = render(&value, 0);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\r'), "{out:?}");
        assert!(out.contains("a?[2J") && out.contains("bad??line"), "{out}");
    }

    #[test]
    fn remaining_times_stay_short() {
        assert_eq!(remaining(0), "0s");
        assert_eq!(remaining(59), "59s");
        assert_eq!(remaining(60), "1m00s");
        assert_eq!(remaining(3725), "1h02m");
    }
}
