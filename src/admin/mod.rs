//! The admin listener: `/metrics`, `/healthz`, `/status`, `/api/status`, and the
//! admin API's writes (see [`write`]), which need the admin token.
//!
//! It keeps answering during a graceful drain (so `/healthz` can say 503 and outer
//! balancers stop sending) and stops only when the instance has finished.

mod control;
mod history;
mod metrics;
mod report;
mod status_page;
mod write;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use control::{Control, Op, Requests};
pub use report::{build as status_report, StatusReport};
pub use status_page::esc as html_escape;

use crate::cluster::LiveView;
use crate::config::Mode;

/// How often frontend rates are sampled for the status page.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// Serves the admin endpoints on `listener` until the instance has finished;
/// writes go to the instance through `control`.
pub async fn serve(listener: TcpListener, live: LiveView, control: Control) {
    let rates = Arc::new(Rates::default());
    tokio::spawn(sample_rates(live.clone(), Arc::clone(&rates)));
    loop {
        let accepted = tokio::select! {
            _ = live.finished() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (live, rates, control) = (live.clone(), Arc::clone(&rates), control.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (live, rates, control) = (live.clone(), Arc::clone(&rates), control.clone());
                async move {
                    let response = if req.method() == Method::POST {
                        post(req, client, &live, &control).await
                    } else {
                        answer(&req, &live, &rates)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(err) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

/// A POST: one of the admin API's writes.
async fn post(
    req: Request<hyper::body::Incoming>,
    client: std::net::SocketAddr,
    live: &LiveView,
    control: &Control,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, write::MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return json(StatusCode::PAYLOAD_TOO_LARGE, serde_json::json!({"error": "body too large or broken"})),
    };
    match write::handle(parts.uri.path(), &parts.headers, body, client, live, control).await {
        Some((status, body)) => json(status, body),
        None => json(StatusCode::NOT_FOUND, serde_json::json!({"error": "no write here"})),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = with_type(body.to_string(), "application/json");
    *response.status_mut() = status;
    response
}

fn answer<B>(req: &Request<B>, live: &LiveView, rates: &Rates) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET, HEAD and the admin API's POSTs\n");
    }
    match req.uri().path() {
        "/metrics" => with_type(metrics::render(live), "text/plain; version=0.0.4; charset=utf-8"),
        "/healthz" if live.draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/api/history" => {
            let history = rates.history.lock().expect("history poisoned");
            let body = serde_json::json!({"interval_s": RATE_INTERVAL.as_secs(), "backends": history.all()});
            drop(history);
            with_type(body.to_string(), "application/json")
        }
        "/api/status" => {
            let report = report::build(live, |name| rates.get(name));
            let json = serde_json::to_string_pretty(&report).expect("the report serializes");
            with_type(json, "application/json")
        }
        "/status" | "/" => {
            let report = report::build(live, |name| rates.get(name));
            let history = rates.history.lock().expect("history poisoned");
            let page = status_page::render(&report, &|backend| history.of(backend));
            drop(history);
            with_type(page, "text/html; charset=utf-8")
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /status, /metrics, /healthz, /api/status or /api/history\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(body.to_string(), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Recent per-frontend rates: requests/s for http, connections/s for tcp.
#[derive(Debug, Default)]
struct Rates {
    by_frontend: Mutex<HashMap<String, (u64, f64)>>,
    /// The last 15 minutes per backend.
    history: Mutex<history::History>,
}

impl Rates {
    fn get(&self, frontend: &str) -> f64 {
        self.by_frontend.lock().expect("rates poisoned").get(frontend).map_or(0.0, |&(_, rate)| rate)
    }
}

async fn sample_rates(live: LiveView, rates: Arc<Rates>) {
    let mut ticker = tokio::time::interval(RATE_INTERVAL);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = live.finished() => return,
            _ = ticker.tick() => {}
        }
        let elapsed = last.elapsed().as_secs_f64().max(0.001);
        last = Instant::now();
        let snapshot = live.snapshot();
        let mut by_frontend = rates.by_frontend.lock().expect("rates poisoned");
        let mut next = HashMap::with_capacity(snapshot.frontends.len());
        for f in &snapshot.frontends {
            let count = match f.mode {
                Mode::Http => f.stats.http_requests.load(Relaxed),
                Mode::Tcp => f.stats.connections_total.load(Relaxed),
            };
            let rate = by_frontend.get(&f.name).map_or(0.0, |&(prev, _)| count.saturating_sub(prev) as f64 / elapsed);
            next.insert(f.name.clone(), (count, rate));
        }
        *by_frontend = next;
        drop(by_frontend);
        let at = crate::upstream::unix_ms() / 1000;
        rates.history.lock().expect("history poisoned").sample(&snapshot.backends, at, elapsed);
    }
}
