//! Compiling a frontend's `tls:` into the rustls server config it serves with.

use std::sync::Arc;

use crate::config::{self, Issue};
use crate::tls::{server_config, TlsFrontend};

/// The TLS side of frontend number `index`, if it terminates TLS; a problem is
/// added to `issues` (only for a config that was not validated).
pub fn compile(index: usize, frontend: &config::Frontend, issues: &mut Vec<Issue>) -> Option<Arc<TlsFrontend>> {
    let tls = frontend.tls.as_ref()?;
    let path = format!("frontends[{index}].tls");
    let Some(material) = tls.material() else {
        issues.push(Issue::new(path, "certificates not loaded: the config was not validated"));
        return None;
    };
    match server_config(tls, material) {
        Ok(compiled) => Some(Arc::new(compiled)),
        Err(err) => {
            issues.push(Issue::new(path, err.to_string()));
            None
        }
    }
}
