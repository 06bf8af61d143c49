//! The files a TLS frontend names, read and checked once at validation: each
//! certificate chain with its key (the key must match the leaf, the leaf must be
//! within its validity period), the names each leaf serves, and the client CA
//! bundle. Compiling builds the rustls configs from this and never reads a file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;

use super::schema::FrontendTls;

/// What a TLS frontend's files hold.
#[derive(Debug)]
pub struct TlsMaterial {
    /// In the order listed; the first is the default certificate.
    pub certificates: Vec<Certificate>,
    /// Roots client certificates must chain to (mTLS), if any.
    pub client_roots: Option<Vec<CertificateDer<'static>>>,
    /// Session ticket keys from `ticket_keys`, the encrypting one first.
    pub ticket_keys: Option<Vec<[u8; 32]>>,
}

impl PartialEq for TlsMaterial {
    fn eq(&self, other: &Self) -> bool {
        let chains = |m: &TlsMaterial| m.certificates.iter().map(|c| c.key.cert.clone()).collect::<Vec<_>>();
        chains(self) == chains(other)
            && self.client_roots == other.client_roots
            && self.ticket_keys == other.ticket_keys
    }
}

/// One certificate chain and its key, ready to serve.
#[derive(Debug)]
pub struct Certificate {
    /// The chain and the signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// The DNS names the leaf is for (its SANs; its common name when it has none),
    /// lowercase; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
    /// ECDSA, RSA or Ed25519: which clients can verify it.
    pub algorithm: SignatureAlgorithm,
}

impl Certificate {
    /// The name the certificate is known by in metrics and on the status page.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

/// Reads every file `tls` names (relative paths against `base`); each problem
/// with the key path (below `path`) it is about.
pub fn load(path: &str, tls: &FrontendTls, base: &Path, now: i64) -> Result<TlsMaterial, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut certificates = Vec::new();
    if tls.certificates.is_empty() {
        problems.push((format!("{path}.certificates"), "at least one certificate is required".to_string()));
    }
    for (i, files) in tls.certificates.iter().enumerate() {
        let at = format!("{path}.certificates[{i}]");
        match load_pair(&base.join(&files.cert), &base.join(&files.key), now) {
            Ok(cert) => certificates.push(cert),
            Err((key, message)) => problems.push((format!("{at}.{key}"), message)),
        }
    }
    let client_roots = match &tls.client_ca {
        None => None,
        Some(file) => match read_certs(&base.join(file)).and_then(|roots| usable_roots(&base.join(file), roots)) {
            Ok(roots) => Some(roots),
            Err(message) => {
                problems.push((format!("{path}.client_ca"), message));
                None
            }
        },
    };
    let ticket_keys = match &tls.ticket_keys {
        None => None,
        Some(file) => match read_ticket_keys(&base.join(file)) {
            Ok(keys) => Some(keys),
            Err(message) => {
                problems.push((format!("{path}.ticket_keys"), message));
                None
            }
        },
    };
    if problems.is_empty() {
        Ok(TlsMaterial { certificates, client_roots, ticket_keys })
    } else {
        Err(problems)
    }
}

/// A chain and its key; on failure, which of the two keys (`cert` or `key`) is wrong and why.
fn load_pair(cert: &Path, key: &Path, now: i64) -> Result<Certificate, (&'static str, String)> {
    let chain = read_certs(cert).map_err(|message| ("cert", message))?;
    let der =
        PrivateKeyDer::from_pem_file(key).map_err(|err| ("key", format!("{}: {}", key.display(), pem_error(err))))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|err| ("key", format!("{}: not a usable private key: {err}", key.display())))?;
    let algorithm = signing.algorithm();
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        ("key", format!("{} is not the private key of the certificate in {}", key.display(), cert.display()))
    })?;
    let leaf = x509_parser::parse_x509_certificate(certified.cert[0].as_ref())
        .map_err(|err| ("cert", format!("{}: cannot parse the certificate: {err}", cert.display())))?
        .1;
    let validity = leaf.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    if not_after <= now {
        return Err(("cert", format!("{}: the certificate expired at {}", cert.display(), validity.not_after)));
    }
    if not_before > now {
        return Err((
            "cert",
            format!("{}: the certificate is not valid before {}", cert.display(), validity.not_before),
        ));
    }
    let names = served_names(&leaf);
    if names.is_empty() {
        return Err((
            "cert",
            format!("{}: the certificate names no DNS name (no SAN, no common name)", cert.display()),
        ));
    }
    Ok(Certificate { key: Arc::new(certified), names, not_after, algorithm })
}

/// The DNS names of the leaf's SANs, or its common name when it has no SAN.
fn served_names(leaf: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(leaf.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    names
}

/// Every certificate of a PEM file; at least one.
fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{}: {}", file.display(), pem_error(err)))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file (PEM expected)", file.display()));
    }
    Ok(certs)
}

/// Session ticket keys: one per line, 64 hex digits (32 bytes); blank lines and
/// `#` comments skipped; at least one.
fn read_ticket_keys(file: &Path) -> Result<Vec<[u8; 32]>, String> {
    let text = std::fs::read_to_string(file).map_err(|err| format!("{}: cannot read: {err}", file.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_hex_key(line).ok_or_else(|| {
            format!(
                "{} line {}: a ticket key is 64 hex digits (32 random bytes, e.g. `openssl rand -hex 32`)",
                file.display(),
                i + 1
            )
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(format!("{}: no ticket key in the file", file.display()));
    }
    Ok(keys)
}

fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        key[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(key)
}

/// `roots` if each can anchor client certificate chains.
fn usable_roots(file: &Path, roots: Vec<CertificateDer<'static>>) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut store = rustls::RootCertStore::empty();
    for (i, root) in roots.iter().enumerate() {
        store
            .add(root.clone())
            .map_err(|err| format!("{}: certificate {} is not a usable CA: {err}", file.display(), i + 1))?;
    }
    Ok(roots)
}

fn pem_error(err: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::Io(err) => format!("cannot read: {err}"),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The CA certificates a backend's `tls` trusts: the `ca` file's, or the system's
/// (read once per process: they do not change under a running server often
/// enough to re-read them on every reload).
pub fn backend_roots(
    path: &str,
    ca: Option<&Path>,
    base: &Path,
) -> Result<Arc<Vec<CertificateDer<'static>>>, (String, String)> {
    match ca {
        Some(file) => read_certs(&base.join(file))
            .and_then(|roots| usable_roots(&base.join(file), roots))
            .map(Arc::new)
            .map_err(|message| (format!("{path}.ca"), message)),
        None => system_roots().map_err(|message| (path.to_string(), message)),
    }
}

/// The system's CA certificates.
fn system_roots() -> Result<Arc<Vec<CertificateDer<'static>>>, String> {
    static SYSTEM: std::sync::OnceLock<Result<Arc<Vec<CertificateDer<'static>>>, String>> = std::sync::OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = rustls::RootCertStore::empty();
            let (usable, _) = store.add_parsable_certificates(found.certs.iter().cloned());
            if usable == 0 {
                return Err(format!(
                    "verify is on and no `ca` is given, but the system has no CA certificates ({} problems reading them); set `ca`",
                    found.errors.len()
                ));
            }
            Ok(Arc::new(found.certs))
        })
        .clone()
}
