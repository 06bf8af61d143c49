//! A test CA and the certificates it signs, written as PEM files (rcgen).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

/// A test CA and the files it signs, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Issuer<'static, KeyPair>,
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
}

/// A leaf written as `NAME.pem` / `NAME.key`.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "fulcrum test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (ca_der, ca_pem) = (cert.der().clone(), cert.pem());
        Pki { dir: tempfile::tempdir().unwrap(), ca: Issuer::new(params, key), ca_der, ca_pem }
    }

    /// A leaf for `names` (ECDSA P-256 unless `rsa`), valid now.
    pub fn leaf(&self, file: &str, names: &[&str], rsa: bool) -> Leaf {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        self.leaf_with(file, params, rsa)
    }

    pub fn leaf_with(&self, file: &str, mut params: CertificateParams, rsa: bool) -> Leaf {
        let key =
            if rsa { KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap() } else { KeyPair::generate().unwrap() };
        if params.distinguished_name.iter().next().is_none() {
            params.distinguished_name.push(DnType::CommonName, file);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (self.path(&format!("{file}.pem")), self.path(&format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf { cert: cert_path, key: key_path, der: cert.der().clone() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The CA as a PEM file (for `client_ca`).
    pub fn ca_file(&self) -> PathBuf {
        let path = self.path("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}
