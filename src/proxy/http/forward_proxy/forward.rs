//! Absolute-form requests: sent on a fresh connection to the host they name, in
//! origin form, and the response streamed back.

use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::super::body::{ResponseBody, ServerResponseBody, UpstreamBody};
use super::super::headers::strip_hop_by_hop;
use super::{dial::dial, dial_failed, reply, target, ForwardProxy};

/// Forwards `req` (absolute form) to the host it names, if the rules admit it.
pub async fn forward(
    proxy: &ForwardProxy,
    req: Request<Incoming>,
    connect_timeout: Duration,
    idle: Duration,
) -> Response<ResponseBody> {
    let (mut parts, body) = req.into_parts();
    let Some(authority) = parts.uri.authority().cloned() else {
        return reply(StatusCode::BAD_REQUEST, "the request target names no host\n");
    };
    let Some((host, port)) = target(&authority, Some(80)) else {
        return reply(StatusCode::BAD_REQUEST, "malformed request target\n");
    };
    let Ok(host_header) = HeaderValue::from_str(authority.as_str()) else {
        return reply(StatusCode::BAD_REQUEST, "malformed request target\n");
    };
    let stream = match dial(&proxy.rules, &host, port, connect_timeout).await {
        Ok(stream) => stream,
        Err(err) => return dial_failed(err, &host, port),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(host, port, error = %err, "forward proxy: handshake failed");
            return reply(StatusCode::BAD_GATEWAY, "cannot connect to the destination\n");
        }
    };
    // The connection serves this one request; it ends when its response body does
    // (the sender is gone by then, so hyper closes it).
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "forward proxy: destination connection failed");
        }
    });

    // What described the hop to us (Proxy-Authorization, Proxy-Connection,
    // Connection and what it lists...) is not the destination's business.
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.insert(header::HOST, host_header);
    let origin_form = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = origin_form.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = Version::HTTP_11;

    let response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(host, port, error = %err, "forward proxy: destination did not answer");
            return reply(StatusCode::BAD_GATEWAY, "the destination did not answer\n");
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let active = proxy.destinations.track_request();
    // The connection is never pooled. `idle` bounds a stalled body.
    let body = UpstreamBody::new(ServerResponseBody::Hyper(body), active, None, idle);
    Response::from_parts(parts, ResponseBody::Upstream(body))
}
