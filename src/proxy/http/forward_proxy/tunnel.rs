//! CONNECT: the destination is connected to first (so a refusal still gets its
//! status), then the client is answered 200 and bytes flow both ways.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::super::body::ResponseBody;
use super::{dial::dial, dial_failed, reply, target, ForwardProxy};
use crate::proxy::copy::{pipe_io, Counted, Idle};

/// Answers a CONNECT: 200 and a tunnel to an admitted `host:port`, else an error.
pub async fn connect(
    proxy: &ForwardProxy,
    mut req: Request<Incoming>,
    connect_timeout: Duration,
    idle: Duration,
    tasks: &tokio_util::task::TaskTracker,
) -> Response<ResponseBody> {
    // CONNECT's target is `host:port`, nothing else (RFC 9110 §9.3.6).
    let Some((host, port)) = req.uri().authority().and_then(|authority| target(authority, None)) else {
        return reply(StatusCode::BAD_REQUEST, "CONNECT needs a host:port target\n");
    };
    if !proxy.connect_ports.contains(&port) {
        tracing::debug!(host, port, "forward proxy: CONNECT port not allowed");
        return reply(StatusCode::FORBIDDEN, "CONNECT to this port is not allowed\n");
    }
    let server = match dial(&proxy.rules, &host, port, connect_timeout).await {
        Ok(stream) => stream,
        Err(err) => return dial_failed(err, &host, port),
    };
    let client = hyper::upgrade::on(&mut req);
    // Its own task (tracked: a drain waits for it): the upgrade completes only once
    // the 200 has been sent.
    tasks.spawn(async move {
        let client = match client.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(host, port, error = %err, "forward proxy: CONNECT upgrade failed");
                return;
            }
        };
        // Each direction half-closes on its own EOF; the tunnel ends when both
        // have, or when neither moved a byte for `idle`.
        let idle = Idle::new(idle, idle);
        let (up, down) = (Counted::new(None), Counted::new(None));
        if let Err(err) = pipe_io(TokioIo::new(client), server, &idle, &up, &down).await {
            tracing::debug!(host, port, error = %err, "forward proxy: tunnel ended");
        }
    });
    Response::new(ResponseBody::empty())
}
