//! What outlives one snapshot: the process's session ticket keys (rotated by
//! rustls every 6 hours, the previous key still accepted) and its session cache,
//! shared by every TLS frontend on every worker, so a client resumes wherever its
//! next connection lands and across reloads. And what a finished handshake tells
//! the request path.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue};
use rustls::server::{ProducesTickets, ServerConnection, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ProtocolVersion;

/// Sessions kept for TLS 1.2 clients that resume by session ID (about 100 bytes each).
const SESSION_CACHE_SIZE: usize = 20_000;

/// The header carrying a verified client certificate's subject to the servers
/// (stripped from what clients send on TLS frontends).
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");

/// The process's ticket keys.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(ticketer) = TICKETER.get() {
        return Ok(Arc::clone(ticketer));
    }
    let made = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::clone(TICKETER.get_or_init(|| made)))
}

/// The process's session cache.
pub fn cache() -> Arc<dyn StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn StoresServerSessions>> = OnceLock::new();
    Arc::clone(CACHE.get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE_SIZE)))
}

/// What the request path needs of a finished handshake.
#[derive(Debug, Clone)]
pub struct HandshakeInfo {
    /// ALPN chose HTTP/2.
    pub h2: bool,
    /// The version negotiated.
    pub version: Option<ProtocolVersion>,
    /// The verified client certificate's subject (mTLS), as a header value.
    pub client_subject: Option<HeaderValue>,
}

/// Reads what the request path needs off a finished handshake.
pub fn handshake_info(conn: &ServerConnection) -> HandshakeInfo {
    let client_subject = conn.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        // RFC 4514 text; a subject with bytes a header cannot carry is left out.
        HeaderValue::from_str(&cert.subject().to_string()).ok()
    });
    HandshakeInfo { h2: conn.alpn_protocol() == Some(b"h2"), version: conn.protocol_version(), client_subject }
}
