//! TLS: termination (the rustls server config of a TLS frontend, built once per
//! snapshot from the certificates validation loaded; the certificate chosen by
//! the client's SNI and signature schemes; what a handshake tells the request
//! path) and TLS to a backend's servers (the client config and server names).

mod client;
mod resolver;
mod server;
mod session;
mod tickets;

pub use client::{client_config, server_name, NoVerification, UpstreamTls};
pub use resolver::CertificateResolver;
pub use server::{server_config, ServedCertificate, TlsError, TlsFrontend};
pub use session::{handshake_info, HandshakeInfo, X_CLIENT_CERT_SUBJECT};
