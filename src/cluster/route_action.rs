//! Compiling a route's answer when it is not a backend: `static`, `redirect`,
//! `respond` (validated already; what could still fail is reported as an issue).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::route::{FixedResponse, Redirect, RouteAction};
use crate::config::{Issue, Route};

/// The action of `route` (at `path` in the config), or `None` with an issue.
pub fn compile(route: &Route, path: &str, issues: &mut Vec<Issue>) -> Option<RouteAction> {
    if let Some(redirect) = &route.redirect {
        let status = StatusCode::from_u16(redirect.status.unwrap_or(301)).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        // The request's path (which starts with '/') follows.
        let to = redirect.to.trim_end_matches('/').to_string();
        return Some(RouteAction::Redirect(Redirect { to, status }));
    }
    if let Some(respond) = &route.respond {
        let content_type = respond.content_type.as_deref().unwrap_or("text/plain; charset=utf-8");
        let Ok(content_type) = HeaderValue::from_str(content_type) else {
            issues.push(Issue::new(format!("{path}.respond.content_type"), "not a valid header value"));
            return None;
        };
        return Some(RouteAction::Respond(FixedResponse {
            status: StatusCode::from_u16(respond.status.unwrap_or(200)).unwrap_or(StatusCode::OK),
            body: Bytes::from(respond.body.clone().unwrap_or_default()),
            content_type,
        }));
    }
    if let Some(files) = &route.static_files {
        let Some(root) = files.resolved_root() else {
            issues.push(Issue::new(format!("{path}.static.root"), "not resolved: the config was not validated"));
            return None;
        };
        let strip = files.strip_prefix.then_some(route.matches.path_prefix.as_deref()).flatten();
        return match crate::proxy::http::StaticSite::new(root, files.index.as_deref(), strip) {
            Ok(site) => Some(RouteAction::Static(Arc::new(site))),
            Err(err) => {
                issues.push(Issue::new(format!("{path}.static.root"), format!("{}: {err}", root.display())));
                None
            }
        };
    }
    issues.push(Issue::new(path, "no action: the config was not validated"));
    None
}
