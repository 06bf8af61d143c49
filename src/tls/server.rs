//! A TLS frontend's rustls server config, built once per snapshot: TLS 1.2 and
//! 1.3 (or 1.3 only) with aws-lc-rs's suites (AEAD with forward secrecy only: no
//! TLS 1.0/1.1, no CBC, no RSA key exchange), ALPN, the SNI certificate resolver,
//! client certificates when `client_ca` is set, and the process's session
//! tickets and cache (so a session resumes on any worker and across reloads).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::resolver::CertificateResolver;
use super::session;
use super::tickets::FileTicketer;
use crate::config::{Alpn, FrontendTls, TlsMaterial, TlsVersion};

/// ALPN offered when the config does not say.
const DEFAULT_ALPN: [Alpn; 2] = [Alpn::H2, Alpn::Http11];

/// A TLS frontend as compiled into a snapshot.
#[derive(Debug)]
pub struct TlsFrontend {
    /// The server config every handshake on the frontend starts from. A handshake
    /// keeps the config it started with, so a reload never changes one in progress.
    pub config: Arc<ServerConfig>,
    /// The certificates served, for metrics and the status page.
    pub certificates: Vec<ServedCertificate>,
}

/// A certificate as metrics and the status page show it.
#[derive(Debug, Clone)]
pub struct ServedCertificate {
    /// The first name it serves (its label in metrics).
    pub name: String,
    /// Every name it serves.
    pub names: Vec<String>,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

/// A TLS setting rustls refused (not reachable for a validated config).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the versions, a CA or the client verifier.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle is unusable.
    #[error("client_ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    /// `sni` is not a DNS name or IP address.
    #[error("sni: {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

/// Builds the server config of a frontend whose files validation loaded as `material`.
pub fn server_config(tls: &FrontendTls, material: &TlsMaterial) -> Result<TlsFrontend, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static SupportedProtocolVersion] = match tls.min_version.unwrap_or(TlsVersion::V1_2) {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_protocol_versions(versions)?;
    let builder = match &material.client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for root in roots {
                store.add(root.clone())?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = CertificateResolver::new(&material.certificates, tls.strict_sni);
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols =
        tls.alpn.as_deref().unwrap_or(&DEFAULT_ALPN).iter().map(|protocol| protocol.id().to_vec()).collect();
    config.ticketer = match material.ticket_keys.as_deref().and_then(FileTicketer::new) {
        Some(shared) => Arc::new(shared),
        None => session::ticketer()?,
    };
    config.session_storage = session::cache();
    let certificates = material
        .certificates
        .iter()
        .map(|c| ServedCertificate { name: c.label().to_string(), names: c.names.clone(), not_after: c.not_after })
        .collect();
    Ok(TlsFrontend { config: Arc::new(config), certificates })
}
