//! A tiny HTTP/1.1 client for the admin API: one connection per request (the
//! admin listener is local and requests are rare), every exchange under a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::CtlError;

/// The longest one request may take, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read; a status report of thousands of servers fits easily.
const MAX_BODY: usize = 32 << 20;

/// An answer: status code and whole body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body, read to the end.
    pub body: Bytes,
}

/// Talks to one admin listener.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client for the admin API at `addr` (`host:port`), sending `token` on writes.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        // Operators paste URLs; the scheme and a trailing slash mean nothing here.
        let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/').to_string();
        Self { addr, token, timeout: TIMEOUT }
    }

    /// The address as used (for messages).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether writes carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET path`, without the token (reads need none).
    pub async fn get(&self, path: &str) -> Result<Answer, CtlError> {
        let request = self.request(Method::GET, path).body(Full::new(Bytes::new()));
        self.exchange(request).await
    }

    /// `POST path` with `body` of `content_type`, with the token when there is one.
    pub async fn post(&self, path: &str, content_type: &'static str, body: Bytes) -> Result<Answer, CtlError> {
        let mut builder = self.request(Method::POST, path).header(header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| CtlError::TokenNotHeader)?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        self.exchange(builder.body(Full::new(body))).await
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.as_str())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("fulcrum-ctl/", env!("CARGO_PKG_VERSION")))
    }

    async fn exchange(&self, request: http::Result<Request<Full<Bytes>>>) -> Result<Answer, CtlError> {
        // Paths and headers are built here from checked parts; a failure is a bug
        // worth reporting, not a panic.
        let request = request.map_err(|err| CtlError::Unexpected(format!("cannot build the request: {err}")))?;
        match tokio::time::timeout(self.timeout, self.exchange_now(request)).await {
            Ok(result) => result,
            Err(_) => Err(CtlError::Timeout { addr: self.addr.clone(), secs: self.timeout.as_secs() }),
        }
    }

    async fn exchange_now(&self, request: Request<Full<Bytes>>) -> Result<Answer, CtlError> {
        let stream = TcpStream::connect(self.addr.as_str()).await.map_err(|err| CtlError::Unreachable {
            addr: self.addr.clone(),
            reason: match err.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => err.to_string(),
            },
        })?;
        let broken = |reason: String| CtlError::Broken { addr: self.addr.clone(), reason };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| broken(e.to_string()))?;
        // The connection task must not outlive this exchange (a timeout in `status
        // --watch` would otherwise leave one socket behind per frame).
        let _driver = AbortOnDrop(tokio::spawn(connection));
        let response = sender.send_request(request).await.map_err(|e| broken(e.to_string()))?;
        let status = response.status().as_u16();
        let body =
            Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| broken(e.to_string()))?.to_bytes();
        Ok(Answer { status, body })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Percent-encodes one path segment: server names may hold `/` (discovered
/// servers are named `pods/10.0.0.7`) and must stay one segment.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_plain_names_and_encode_the_rest() {
        assert_eq!(segment("app-1.a_b~"), "app-1.a_b~");
        assert_eq!(segment("pods/10.0.0.7"), "pods%2F10.0.0.7");
        assert_eq!(segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn addresses_lose_scheme_and_slash() {
        assert_eq!(Client::new("http://127.0.0.1:9100/", None).addr(), "127.0.0.1:9100");
        assert_eq!(Client::new(" 127.0.0.1:9100 ", None).addr(), "127.0.0.1:9100");
    }
}
