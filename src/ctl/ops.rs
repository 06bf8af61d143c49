//! The admin API calls behind each `fulcrum ctl` command, and the one-line
//! results they print.

use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Value};

use super::client::{segment, Answer, Client};
use super::error::CtlError;
use super::{Change, Target};

/// What a command has to say: `ok` lines go to stdout, the others to stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the operation did what was asked (exit 0).
    pub ok: bool,
    /// What to print, one line each.
    pub lines: Vec<String>,
}

impl Outcome {
    fn ok(line: String) -> Self {
        Self { ok: true, lines: vec![line] }
    }
}

/// `GET /api/status`, parsed.
pub async fn status(client: &Client) -> Result<Value, CtlError> {
    let answer = client.get("/api/status").await?;
    json_of(answer, client, || CtlError::NoEndpoint { addr: client.addr().into(), path: "/api/status".into() })
}

/// `POST /api/backends/{b}/servers/{s}`: sets a server's admin state and/or weight.
pub async fn set_server(client: &Client, target: &Target, change: &Change) -> Result<Outcome, CtlError> {
    let mut body = serde_json::Map::new();
    if let Some(state) = change.state {
        body.insert("state".into(), json!(state.as_str()));
    }
    if let Some(weight) = change.weight {
        body.insert("weight".into(), json!(weight));
    }
    if let Some(duration) = &change.duration {
        body.insert("for".into(), json!(duration));
    }
    let path = format!("/api/backends/{}/servers/{}", segment(&target.backend), segment(&target.server));
    let answer = client.post(&path, "application/json", Bytes::from(Value::Object(body).to_string())).await?;
    let value = json_of(answer, client, || CtlError::NoServer {
        backend: target.backend.clone(),
        server: target.server.clone(),
    })?;
    Ok(Outcome::ok(describe_change(target, &value, change)))
}

/// `POST /api/reload`: the instance re-reads its config file.
pub async fn reload(client: &Client) -> Result<Outcome, CtlError> {
    let answer = client.post("/api/reload", "application/json", Bytes::new()).await?;
    let value =
        json_of(answer, client, || CtlError::NoEndpoint { addr: client.addr().into(), path: "/api/reload".into() })?;
    if verdict(&value)? {
        return Ok(Outcome::ok(match value.get("generation").and_then(Value::as_u64) {
            Some(generation) => format!("reload ok: generation {generation}"),
            None => "reload ok".into(),
        }));
    }
    let errors = errors_of(&value);
    let mut lines = vec![format!("reload failed ({} error(s)); the running config is unchanged:", errors.len())];
    lines.extend(errors.into_iter().map(|e| format!("  {e}")));
    Ok(Outcome { ok: false, lines })
}

/// `POST /api/config/check` with `file`'s content: the instance validates it and
/// applies nothing.
pub async fn check(client: &Client, file: &Path) -> Result<Outcome, CtlError> {
    let yaml = std::fs::read(file).map_err(|source| CtlError::ReadFile { path: file.to_path_buf(), source })?;
    let answer = client.post("/api/config/check", "application/yaml", Bytes::from(yaml)).await?;
    let value = json_of(answer, client, || CtlError::NoEndpoint {
        addr: client.addr().into(),
        path: "/api/config/check".into(),
    })?;
    let name = file.display();
    if verdict(&value)? {
        return Ok(Outcome::ok(format!("{name}: ok")));
    }
    let errors = errors_of(&value);
    let mut lines: Vec<String> = errors.iter().map(|e| format!("{name}: {e}")).collect();
    lines.push(format!("{name}: {} error(s)", errors.len()));
    Ok(Outcome { ok: false, lines })
}

/// Turns an answer into its JSON, or into the error its status stands for.
/// `not_found` names what a 404 means for this call.
fn json_of(answer: Answer, client: &Client, not_found: impl FnOnce() -> CtlError) -> Result<Value, CtlError> {
    match answer.status {
        200 => serde_json::from_slice(&answer.body)
            .map_err(|_| CtlError::Unexpected(format!("HTTP 200 that is not JSON: {}", snippet(&answer.body)))),
        400 => Err(CtlError::Rejected(explanation(&answer.body))),
        401 if client.has_token() => Err(CtlError::BadToken),
        401 => Err(CtlError::NoToken),
        403 => Err(CtlError::WritesDisabled),
        404 => Err(not_found()),
        status => Err(CtlError::Unexpected(format!("HTTP {status}: {}", explanation(&answer.body)))),
    }
}

fn verdict(value: &Value) -> Result<bool, CtlError> {
    value
        .get("ok")
        .and_then(Value::as_bool)
        .ok_or_else(|| CtlError::Unexpected(format!("no \"ok\" in {}", snippet(value.to_string().as_bytes()))))
}

fn errors_of(value: &Value) -> Vec<String> {
    let errors: Vec<String> =
        value.get("errors").and_then(Value::as_array).map_or(&[][..], Vec::as_slice).iter().map(one_line).collect();
    if errors.is_empty() {
        vec!["(the admin API gave no reason)".into()]
    } else {
        errors
    }
}

/// The server's `{"error": "..."}`, else its body as text.
fn explanation(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.get("error").is_some() => value.get("error").map(one_line).unwrap_or_default(),
        _ if body.iter().all(u8::is_ascii_whitespace) => "(no explanation given)".into(),
        _ => snippet(body),
    }
}

/// `app/app-1: ready -> drain (weight 1)`: what changed, then in parentheses what did not.
///
/// The API answers effective weights, and a drained or maintained server weighs 0
/// by definition; so a weight is shown from the side where the server is ready
/// (the weight it has, or gets back), and a weight set while it is not ready is
/// reported as the one it will get.
fn describe_change(target: &Target, value: &Value, change: &Change) -> String {
    let name = |key: &str, fallback: &str| value.get(key).and_then(Value::as_str).map_or(fallback.to_string(), clean);
    let (backend, server) = (name("backend", &target.backend), name("server", &target.server));
    let field = |side: &str, key: &str| value.get(side).and_then(|s| s.get(key)).map_or("?".into(), one_line);
    let (state_before, state_after) = (field("before", "admin_state"), field("after", "admin_state"));
    let ready_weight = |side: &str, state: &str| (state == "ready").then(|| field(side, "weight"));
    let (mut changed, mut same) = (Vec::new(), Vec::new());
    if state_before == state_after {
        same.push(state_after.clone());
    } else {
        changed.push(format!("{state_before} -> {state_after}"));
    }
    match (ready_weight("before", &state_before), ready_weight("after", &state_after)) {
        (Some(before), Some(after)) if before != after => changed.push(format!("weight {before} -> {after}")),
        (Some(weight), _) | (None, Some(weight)) => same.push(format!("weight {weight}")),
        (None, None) => {
            if let Some(weight) = change.weight {
                changed.push(format!("weight {weight} once ready"));
            }
        }
    }
    let mut line = match (changed.is_empty(), same.is_empty()) {
        (true, _) => format!("{backend}/{server}: {} (unchanged)", same.join(", ")),
        (false, true) => format!("{backend}/{server}: {}", changed.join(", ")),
        (false, false) => format!("{backend}/{server}: {} ({})", changed.join(", "), same.join(", ")),
    };
    if let Some(duration) = &change.duration {
        line.push_str(&format!(" for {}", clean(duration)));
    }
    line
}

/// A JSON value as one clean line: strings bare, anything else as JSON.
fn one_line(value: &Value) -> String {
    match value {
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// At most 300 characters of a body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = clean(text.trim());
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}

/// Server text reaches a terminal: no control characters (escape sequences, CR).
fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        "app/app-1".parse().unwrap()
    }

    fn answer(before: (&str, u64), after: (&str, u64)) -> Value {
        json!({"backend": "app", "server": "app-1",
            "before": {"admin_state": before.0, "weight": before.1},
            "after": {"admin_state": after.0, "weight": after.1}})
    }

    #[test]
    fn changes_read_as_one_line() {
        let t = target();
        let plain = Change::default();
        let timed = Change { duration: Some("10m".into()), ..Change::default() };
        let describe = |before, after, change: &Change| describe_change(&t, &answer(before, after), change);
        // Drained and maintained servers weigh 0: the ready side's weight is shown.
        assert_eq!(describe(("ready", 1), ("drain", 0), &plain), "app/app-1: ready -> drain (weight 1)");
        assert_eq!(describe(("drain", 0), ("ready", 1), &plain), "app/app-1: drain -> ready (weight 1)");
        assert_eq!(describe(("ready", 2), ("maint", 0), &timed), "app/app-1: ready -> maint (weight 2) for 10m");
        assert_eq!(describe(("drain", 0), ("maint", 0), &plain), "app/app-1: drain -> maint");
        assert_eq!(describe(("ready", 1), ("ready", 5), &plain), "app/app-1: weight 1 -> 5 (ready)");
        assert_eq!(describe(("ready", 1), ("drain", 3), &plain), "app/app-1: ready -> drain (weight 1)");
        assert_eq!(describe(("ready", 2), ("ready", 2), &plain), "app/app-1: ready, weight 2 (unchanged)");
        let weight = Change { weight: Some(5), ..Change::default() };
        assert_eq!(describe(("drain", 0), ("drain", 0), &weight), "app/app-1: weight 5 once ready (drain)");
        assert_eq!(describe_change(&t, &json!({}), &plain), "app/app-1: ? (unchanged)");
    }

    #[test]
    fn explanations_prefer_the_error_field() {
        assert_eq!(explanation(br#"{"error": "weight 999 is out of range"}"#), "weight 999 is out of range");
        assert_eq!(explanation(b"plain\ntext"), "plain text");
        assert_eq!(explanation(b""), "(no explanation given)");
    }

    #[test]
    fn statuses_map_to_their_errors() {
        let with = Client::new("127.0.0.1:1", Some("t".into()));
        let without = Client::new("127.0.0.1:1", None);
        let reply = |status: u16, body: &'static str| Answer { status, body: Bytes::from_static(body.as_bytes()) };
        let nf = || CtlError::NoServer { backend: "app".into(), server: "x".into() };
        let msg = |r: Result<Value, CtlError>| r.unwrap_err().to_string();
        assert_eq!(msg(json_of(reply(401, ""), &with, nf)), CtlError::BadToken.to_string());
        assert_eq!(msg(json_of(reply(401, ""), &without, nf)), CtlError::NoToken.to_string());
        assert_eq!(msg(json_of(reply(403, ""), &with, nf)), "writes are disabled: the config has no admin.token_file");
        assert_eq!(msg(json_of(reply(404, ""), &with, nf)), "no server app/x");
        assert_eq!(msg(json_of(reply(400, r#"{"error":"bad state"}"#), &with, nf)), "bad state");
        assert!(msg(json_of(reply(405, "only GET\n"), &with, nf)).contains("HTTP 405: only GET"));
        assert!(msg(json_of(reply(200, "<html>"), &with, nf)).contains("not JSON"));
        assert_eq!(json_of(reply(200, r#"{"ok":true}"#), &with, nf).unwrap(), json!({"ok": true}));
    }
}
