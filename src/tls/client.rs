//! TLS to a backend's servers: the rustls client config built once per snapshot
//! (verification against the backend's CAs, or none with `verify: false`), and
//! the name each server is asked for (SNI) and verified against.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::TlsError;
use crate::config::{BackendTls, Protocol};

/// A backend's TLS as compiled into a snapshot.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Shared by every connection to the backend's servers (and their health
    /// checks); it keeps their sessions, so reconnects resume.
    pub config: Arc<ClientConfig>,
    /// `sni` from the config, if set: every server is asked for this name.
    pub sni: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// The name server `host` (its address's host as configured) is asked for.
    pub fn name_for(&self, host: &ServerName<'static>) -> ServerName<'static> {
        self.sni.clone().unwrap_or_else(|| host.clone())
    }

    /// Runs the TLS handshake on a connection to a server known as `host`.
    pub async fn connect(
        &self,
        host: &ServerName<'static>,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config)).connect(self.name_for(host), stream).await
    }
}

/// The name a server whose address is `host:port` (as configured) is known by in TLS.
pub fn server_name(address: &str) -> Option<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Builds the client side of a backend's `tls` (validated: its CAs are loaded).
pub fn client_config(tls: &BackendTls, protocol: Protocol) -> Result<UpstreamTls, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let mut config = if tls.verify {
        let mut roots = RootCertStore::empty();
        if let Some(certs) = tls.roots() {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let schemes = provider.signature_verification_algorithms.supported_schemes();
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(schemes))).with_no_client_auth()
    };
    // ALPN tells the server which HTTP to expect (a server offering both would
    // otherwise assume HTTP/1.1).
    config.alpn_protocols = vec![if protocol.is_h2() { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let sni = match &tls.sni {
        None => None,
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?),
    };
    Ok(UpstreamTls { config: Arc::new(config), sni })
}

/// `verify: false`: any certificate is accepted (the handshake's signatures are
/// still checked by rustls's suites; only the chain and name are not). Offers
/// the signature schemes listed (the ClientHello's `signature_algorithms`).
#[derive(Debug)]
pub struct NoVerification(pub Vec<SignatureScheme>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}
