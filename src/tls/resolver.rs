//! Which certificate a handshake gets: the one whose names cover the client's SNI
//! (an exact name before a wildcard), ECDSA when the client can verify it and the
//! name has one (about 3x cheaper to sign with than RSA), and otherwise the first
//! listed, unless `strict_sni` refuses the handshake instead.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::config::Certificate;

/// The certificates of one name, by algorithm.
#[derive(Debug, Default)]
struct ForName {
    ecdsa: Option<Arc<CertifiedKey>>,
    other: Option<Arc<CertifiedKey>>,
}

impl ForName {
    fn add(&mut self, cert: &Certificate) {
        let slot = if cert.algorithm == SignatureAlgorithm::ECDSA { &mut self.ecdsa } else { &mut self.other };
        // The first listed wins a tie, as for the default.
        slot.get_or_insert_with(|| Arc::clone(&cert.key));
    }

    fn pick(&self, client_ecdsa: bool) -> Option<Arc<CertifiedKey>> {
        let preferred = if client_ecdsa { self.ecdsa.as_ref().or(self.other.as_ref()) } else { self.other.as_ref() };
        // A client offering no RSA scheme still gets the ECDSA one: its handshake
        // fails either way, with the clearer error.
        preferred.or(self.ecdsa.as_ref()).cloned()
    }
}

/// Picks the certificate for each handshake, by SNI. Built once per snapshot.
#[derive(Debug)]
pub struct CertificateResolver {
    /// Exact names (lowercase).
    exact: HashMap<String, ForName>,
    /// `*.suffix` names, keyed by `suffix`.
    wildcard: HashMap<String, ForName>,
    /// For no or an unknown SNI: the first certificate (and its other-algorithm twin).
    default: Option<ForName>,
}

impl CertificateResolver {
    /// A resolver over `certificates` (in config order); `strict` refuses a
    /// handshake whose SNI no certificate covers.
    pub fn new(certificates: &[Certificate], strict: bool) -> Self {
        let mut exact: HashMap<String, ForName> = HashMap::new();
        let mut wildcard: HashMap<String, ForName> = HashMap::new();
        for cert in certificates {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_default().add(cert),
                    None => exact.entry(name.clone()).or_default().add(cert),
                }
            }
        }
        let default = (!strict).then(|| {
            let mut default = ForName::default();
            if let Some(first) = certificates.first() {
                default.add(first);
                // The first certificate's twin in the other algorithm, if listed for the same name.
                let twin = certificates.iter().find(|c| c.algorithm != first.algorithm && c.names == first.names);
                if let Some(twin) = twin {
                    default.add(twin);
                }
            }
            default
        });
        CertificateResolver { exact, wildcard, default }
    }

    /// The certificate for a client asking for `sni` that can verify ECDSA
    /// signatures (`client_ecdsa`) or not; `None` refuses the handshake.
    pub fn pick(&self, sni: Option<&str>, client_ecdsa: bool) -> Option<Arc<CertifiedKey>> {
        let named = sni.and_then(|sni| {
            // rustls hands over the SNI lowercased and without a trailing dot.
            self.exact.get(sni).or_else(|| {
                let (_, parent) = sni.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        named.or(self.default.as_ref())?.pick(client_ecdsa)
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let client_ecdsa = hello.signature_schemes().iter().any(|scheme| {
            matches!(
                scheme,
                SignatureScheme::ECDSA_NISTP256_SHA256
                    | SignatureScheme::ECDSA_NISTP384_SHA384
                    | SignatureScheme::ECDSA_NISTP521_SHA512
            )
        });
        self.pick(hello.server_name(), client_ecdsa)
    }
}
