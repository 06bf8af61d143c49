//! The admin API's writes: a server's state and weight, a reload, a config check,
//! a cache purge.
//! Each needs `Authorization: Bearer <admin.token_file's content>` (compared in
//! constant time); without a token file every write is refused (403). Only POST
//! changes anything, so no GET (an `<img>` on some page) can. Every write is
//! logged once (who, what, before and after) and counted by action and result.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::control::Control;
use crate::cluster::{LiveView, WriteAction, WriteResult};
use crate::upstream::AdminState;

/// Largest request body a write accepts (a config to check included).
pub const MAX_BODY: usize = 1 << 20;

/// A write's answer: its status and JSON body.
pub type Answer = (StatusCode, serde_json::Value);

/// The body of `POST /api/backends/{b}/servers/{s}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerWrite {
    state: Option<String>,
    weight: Option<u32>,
    #[serde(rename = "for")]
    lasting: Option<String>,
}

/// Serves a write to `path`, or `None` when no write lives there.
pub async fn handle(
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    client: SocketAddr,
    live: &LiveView,
    control: &Control,
) -> Option<Answer> {
    let action = if path == "/api/reload" {
        WriteAction::Reload
    } else if path == "/api/config/check" {
        WriteAction::ConfigCheck
    } else if path == "/api/cache/purge" {
        WriteAction::CachePurge
    } else if path.starts_with("/api/backends/") {
        WriteAction::Server
    } else {
        return None;
    };
    if let Err(refused) = authorize(headers, live) {
        live.count_write(action, WriteResult::Denied);
        tracing::warn!(%client, action = action.as_str(), "admin write refused: {}", refused.1["error"]);
        return Some(refused);
    }
    let answer = match action {
        WriteAction::Reload => reload(control).await,
        WriteAction::ConfigCheck => check(body, control).await,
        WriteAction::Server => server(path, &body, live, control, client).await,
        WriteAction::CachePurge => purge(&body, live),
    };
    let result = if answer.0.is_success() { WriteResult::Ok } else { WriteResult::Invalid };
    live.count_write(action, result);
    if action != WriteAction::Server {
        tracing::info!(%client, action = action.as_str(), status = answer.0.as_u16(), outcome = %answer.1, "admin write");
    }
    Some(answer)
}

/// The bearer token against the configured one.
fn authorize(headers: &HeaderMap, live: &LiveView) -> Result<(), Answer> {
    let snapshot = live.snapshot();
    let Some(token) = snapshot.config.admin.as_ref().and_then(|admin| admin.token()) else {
        return Err(error(StatusCode::FORBIDDEN, "writes are disabled: the config has no admin.token_file"));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")),
    }
}

/// Equal, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn reload(control: &Control) -> Answer {
    match control.reload().await {
        Ok(generation) => (StatusCode::OK, json!({"ok": true, "generation": generation})),
        Err(errors) => (StatusCode::OK, json!({"ok": false, "errors": errors})),
    }
}

async fn check(body: Bytes, control: &Control) -> Answer {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the config is not UTF-8");
    };
    match control.check(text).await {
        Ok(errors) => (StatusCode::OK, json!({"ok": errors.is_empty(), "errors": errors})),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, &err),
    }
}

async fn server(path: &str, body: &[u8], live: &LiveView, control: &Control, client: SocketAddr) -> Answer {
    let mut parts = path.trim_start_matches("/api/backends/").split('/');
    let (Some(backend_name), Some("servers"), Some(server_name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return error(StatusCode::NOT_FOUND, "not found: POST /api/backends/{backend}/servers/{server}");
    };
    // A name may hold a '/' (a discovered server's `name/ip`), sent as %2F.
    let (Some(backend_name), Some(server_name)) = (percent_decoded(backend_name), percent_decoded(server_name)) else {
        return error(StatusCode::BAD_REQUEST, "bad percent-encoding in the path");
    };
    let (backend_name, server_name) = (backend_name.as_str(), server_name.as_str());
    let write: ServerWrite = match serde_json::from_slice(body) {
        Ok(write) => write,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("bad JSON: {err}")),
    };
    let state = match write.state.as_deref().map(AdminState::parse) {
        None => None,
        Some(Some(state)) => Some(state),
        Some(None) => return error(StatusCode::BAD_REQUEST, "state must be \"ready\", \"drain\" or \"maint\""),
    };
    if write.weight.is_some_and(|weight| weight > 256) {
        return error(StatusCode::BAD_REQUEST, "weight must be within 0..=256");
    }
    if state.is_none() && write.weight.is_none() {
        return error(StatusCode::BAD_REQUEST, "nothing to set: give \"state\" and/or \"weight\"");
    }
    let until_ms = match write.lasting.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(lasting)) if !lasting.is_zero() => Some(crate::upstream::unix_ms() + lasting.as_millis() as u64),
        Some(_) => return error(StatusCode::BAD_REQUEST, "\"for\" must be a duration above 0, like \"10m\""),
    };
    let snapshot = live.snapshot();
    let Some(backend) = snapshot.backends.iter().find(|b| b.name == backend_name) else {
        return error(StatusCode::NOT_FOUND, &format!("no backend {backend_name:?}"));
    };
    let Some(member) = backend.members.iter().find(|m| m.name == server_name) else {
        return error(StatusCode::NOT_FOUND, &format!("no server {server_name:?} in backend {backend_name:?}"));
    };
    let before = json!({"admin_state": member.state.admin.get().state.as_str(), "weight": member.weight});
    member.state.admin.set(state, write.weight, until_ms);
    let closed = member.state.pool.suspend(member.state.admin.get().state == AdminState::Maint);
    if let Err(err) = control.reapply().await {
        return error(StatusCode::SERVICE_UNAVAILABLE, &err);
    }
    let now = live.snapshot();
    let weight = (now.backends.iter().find(|b| b.name == backend_name))
        .and_then(|b| b.members.iter().find(|m| m.name == server_name))
        .map_or(0, |m| m.weight);
    let view = member.state.admin.get();
    let after = json!({"admin_state": view.state.as_str(), "weight": weight, "until_ms": view.until_ms});
    tracing::info!(
        %client,
        server = %format!("{backend_name}/{server_name}"),
        before = %before,
        after = %after,
        closed_idle = closed,
        "admin write: server"
    );
    (StatusCode::OK, json!({"backend": backend_name, "server": server_name, "before": before, "after": after}))
}

/// The body of `POST /api/cache/purge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeWrite {
    backend: String,
    path_prefix: String,
}

/// Drops what a backend's cache holds under a path prefix (on every host).
fn purge(body: &[u8], live: &LiveView) -> Answer {
    let write: PurgeWrite = match serde_json::from_slice(body) {
        Ok(write) => write,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("bad JSON: {err}")),
    };
    if !write.path_prefix.starts_with('/') {
        return error(StatusCode::BAD_REQUEST, "path_prefix must start with '/' (\"/\" purges everything)");
    }
    let snapshot = live.snapshot();
    let Some(backend) = snapshot.backends.iter().find(|b| b.name == write.backend) else {
        return error(StatusCode::NOT_FOUND, &format!("no backend {:?}", write.backend));
    };
    let Some(cache) = &backend.cache else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("backend {:?} has no cache (see backends[].cache)", write.backend),
        );
    };
    let before = json!({"entries": cache.entries(), "bytes": cache.bytes()});
    let purged = cache.purge(&write.path_prefix);
    let after = json!({"entries": cache.entries(), "bytes": cache.bytes()});
    (
        StatusCode::OK,
        json!({"backend": write.backend, "path_prefix": write.path_prefix, "purged": purged, "before": before, "after": after}),
    )
}

/// `segment` with its `%XX` escapes decoded; `None` if one is malformed or the
/// result is not UTF-8.
fn percent_decoded(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn error(status: StatusCode, message: &str) -> Answer {
    (status, json!({"error": message}))
}

/// Writes counted so far, by action and result (for /metrics).
pub fn counts(live: &LiveView) -> Vec<(&'static str, &'static str, u64)> {
    let mut out = Vec::new();
    for action in [WriteAction::Server, WriteAction::Reload, WriteAction::ConfigCheck, WriteAction::CachePurge] {
        for result in [WriteResult::Ok, WriteResult::Denied, WriteResult::Invalid] {
            out.push((action.as_str(), result.as_str(), live.writes(action, result).load(Relaxed)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn path_segments_are_percent_decoded() {
        use super::percent_decoded;
        assert_eq!(percent_decoded("pods%2F10.0.0.7").as_deref(), Some("pods/10.0.0.7"));
        assert_eq!(percent_decoded("app-1").as_deref(), Some("app-1"));
        assert_eq!(percent_decoded("bad%2"), None);
        assert_eq!(percent_decoded("bad%zz"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same(b"", b"x"));
    }
}
