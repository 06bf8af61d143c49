//! `fulcrum demo`: the real balancer on configs/demo.yaml in front of three demo app
//! servers it starts itself, so a new user sees balancing and health checks in one command.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;

/// The demo config, built in: used when `configs/demo.yaml` is not at hand.
pub const DEMO_CONFIG: &str = include_str!("../configs/demo.yaml");

/// Name of the backend whose servers the demo serves itself.
const DEMO_BACKEND: &str = "demo";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The config has no `demo` backend to serve.
    #[error("the config has no backend named {DEMO_BACKEND:?} for the demo servers")]
    NoDemoBackend,
    /// A demo server could not listen.
    #[error("demo server {name} cannot listen on {address}: {source}")]
    Listen {
        /// Server name.
        name: String,
        /// Address from the config.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The built-in config could not be written out.
    #[error("cannot write the demo config to {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The config file the demo runs: `configs/demo.yaml` when present (so edits and
/// SIGHUP reloads work on it), else the built-in copy written to a temp file.
pub fn config_path(requested: Option<&Path>) -> Result<PathBuf, DemoError> {
    if let Some(path) = requested {
        return Ok(path.to_path_buf());
    }
    let local = PathBuf::from("configs/demo.yaml");
    if local.is_file() {
        return Ok(local);
    }
    let path = std::env::temp_dir().join(format!("fulcrum-demo-{}.yaml", std::process::id()));
    std::fs::write(&path, DEMO_CONFIG).map_err(|source| DemoError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// Starts one demo app server per server of the `demo` backend; returns their addresses.
pub async fn start_servers(config: &Config) -> Result<Vec<(String, SocketAddr)>, DemoError> {
    let backend = config.backends.iter().find(|b| b.name == DEMO_BACKEND).ok_or(DemoError::NoDemoBackend)?;
    let mut started = Vec::new();
    for server in &backend.servers {
        let listen_error =
            |source| DemoError::Listen { name: server.name.clone(), address: server.address.clone(), source };
        // `Config::load` resolved every server address while validating.
        let address = server.resolved_address().ok_or_else(|| {
            listen_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "address not resolved"))
        })?;
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let app =
            Arc::new(DemoApp { name: server.name.clone(), healthy: AtomicBool::new(true), served: AtomicU64::new(0) });
        tokio::spawn(serve(listener, app));
        started.push((server.name.clone(), address));
    }
    Ok(started)
}

/// The text printed when the demo is up.
pub fn banner(config: &Config, servers: &[(String, SocketAddr)]) -> String {
    let mut text = String::from("\nFulcrum demo is running.\n\n");
    for frontend in &config.frontends {
        for bind in frontend.bind.as_slice() {
            text += &format!("  balanced:     curl http://{bind}/      (repeat: the answering server rotates)\n");
        }
    }
    if let Some(admin) = &config.admin {
        text += &format!("  status page:  http://{}/status\n", admin.bind);
        text += &format!("  metrics:      curl http://{}/metrics\n", admin.bind);
    }
    text += "\nDemo servers (each answers with its own name):\n";
    for (name, address) in servers {
        text += &format!("  {name:<8} http://{address}/   fail its health check: curl http://{address}/fail   recover: curl http://{address}/recover\n");
    }
    text += "\nFail one and watch it leave the rotation (and turn red on the status page) after\n";
    text += "`fall` failed checks; recover it and it returns after `rise` good ones.\n";
    text += "The config file is watched: save a change to it to reload live. Ctrl-C drains and exits.\n";
    text
}

struct DemoApp {
    name: String,
    healthy: AtomicBool,
    served: AtomicU64,
}

async fn serve(listener: TcpListener, app: Arc<DemoApp>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(app.answer(&req)) }
            });
            if let Err(err) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(error = %err, "demo server connection ended");
            }
        });
    }
}

impl DemoApp {
    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let (status, body) = match req.uri().path() {
            "/healthz" if self.healthy.load(Relaxed) => (StatusCode::OK, "ok\n".to_string()),
            "/healthz" => (StatusCode::SERVICE_UNAVAILABLE, "failing (demo)\n".to_string()),
            "/fail" => {
                self.healthy.store(false, Relaxed);
                tracing::warn!(server = %self.name, "demo: health check will now fail");
                (StatusCode::OK, format!("{} now fails its health check\n", self.name))
            }
            "/recover" => {
                self.healthy.store(true, Relaxed);
                tracing::info!(server = %self.name, "demo: health check will pass again");
                (StatusCode::OK, format!("{} passes its health check again\n", self.name))
            }
            _ => {
                let n = self.served.fetch_add(1, Relaxed) + 1;
                let client = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("direct");
                (StatusCode::OK, format!("Hello from {} (request #{n}, client {client})\n", self.name))
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
        response
    }
}
