//! The config file: schema, loading, and validation with precise errors.

mod duration;
mod error;
mod schema;
mod validate;

use std::path::Path;

pub use duration::HumanDuration;
pub use error::{ConfigError, Issue};
pub use schema::*;
pub use validate::{
    parse_bind, parse_expect_status, parse_hash_key, resolve_address, HashKey, StatusSet, MAX_RETRIES, MAX_WEIGHT,
};

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_unvalidated(text)?;
        let issues = validate::validate(&config);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// Parses YAML text into the schema without the semantic checks.
    pub fn parse_unvalidated(text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let location = inner.location();
            let message = strip_location(&inner.to_string());
            // serde_yaml may already name the path; say it once.
            let message = message.strip_prefix(&format!("{path}: ")).map_or(message.clone(), str::to_string);
            ConfigError::Syntax {
                path,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message,
            }
        })
    }

    /// The global timeouts with defaults applied.
    pub fn global_timeouts(&self) -> ResolvedTimeouts {
        self.timeouts.resolve(ResolvedTimeouts::default())
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}
