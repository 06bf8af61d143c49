//! The config file: schema, loading, and validation with precise errors.

mod allow_list;
mod duration;
mod error;
mod expansion;
mod schema;
mod tls;
mod validate;
mod value;

use std::path::Path;

pub use allow_list::{parse_ip, AllowList};
pub use duration::HumanDuration;
pub use error::{ConfigError, Issue};
pub use schema::*;
pub use tls::{backend_roots, Certificate, TlsMaterial};
pub use validate::{
    discovered_name, is_file_name, resolve_address, MAX_CONNECTIONS, MAX_HEADER_BYTES, MAX_RETRIES, MAX_RING_WEIGHT,
    MAX_RISE_FALL, MAX_WEIGHT, MIN_HEADER_BYTES,
};
pub use value::ByteSize;
pub use value::{BindAddr, Binds, HashKey, NameServer, StatusSet, TlsVersion};

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::parse_in(&text, base)
    }

    /// Parses and validates YAML text, with relative file paths (certificates,
    /// keys) taken from the current directory.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, Path::new("."))
    }

    /// Parses and validates YAML text whose relative file paths are relative to
    /// `base`. Validation resolves server host names (blocking DNS) and reads the
    /// files the config names, once, and keeps what it found in the returned config.
    pub fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse_unvalidated(text)?;
        let issues = validate::validate(&mut config, base);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// Parses YAML text into the schema without the semantic checks (nor DNS).
    pub fn parse_unvalidated(text: &str) -> Result<Config, ConfigError> {
        expansion::check(text).map_err(|limit| ConfigError::TooManyValues { limit })?;
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let location = inner.location();
            let message = strip_location(&inner.to_string());
            let message = strip_path(&message, &path).to_string();
            ConfigError::Syntax {
                path,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message,
            }
        })
    }

    /// Every file the config names (certificates, keys, CAs), as written: relative
    /// ones are relative to the config file's directory.
    pub fn named_files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        for tls in self.frontends.iter().filter_map(|f| f.tls.as_ref()) {
            for pair in &tls.certificates {
                files.push(pair.cert.as_path());
                files.push(pair.key.as_path());
            }
            files.extend(tls.client_ca.as_deref());
            files.extend(tls.ticket_keys.as_deref());
        }
        files.extend(self.backends.iter().filter_map(|b| b.tls.as_ref()?.ca.as_deref()));
        files.extend(self.admin.as_ref().and_then(|admin| admin.token_file.as_deref()));
        files
    }

    /// The global timeouts with defaults applied.
    pub fn global_timeouts(&self) -> ResolvedTimeouts {
        self.timeouts.resolve(ResolvedTimeouts::default())
    }
}

/// serde_yaml may start its message with the path, or for an unknown key with the
/// path of the map holding it (a prefix of `path`); say the path once.
fn strip_path<'a>(message: &'a str, path: &str) -> &'a str {
    match message.split_once(": ") {
        Some((head, rest)) if !head.is_empty() && path.starts_with(head) => rest,
        _ => message,
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}
