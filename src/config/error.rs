//! Config errors: each one says where it is (key path, or line and column).

use std::fmt;
use std::path::PathBuf;

/// One problem found in a config, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Key path like `backends[1].servers[0].address` (empty for the whole file).
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Issue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax, or a key/value of the wrong shape.
    #[error("{}", syntax_message(.path, .line, .column, .message))]
    Syntax {
        /// Key path where parsing stopped, when known.
        path: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// Aliases expand the YAML past what any config needs (an alias bomb).
    #[error("the YAML expands to more than {limit} values once its aliases are resolved; use fewer aliases")]
    TooManyValues {
        /// The most values the document may expand to.
        limit: usize,
    },
    /// Parsed, but failed validation; every problem is listed.
    #[error("{}", list(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    /// Every problem as its own line, for `fulcrum check` and reload logs.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(issues) => issues.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn syntax_message(path: &str, line: &Option<usize>, column: &Option<usize>, message: &str) -> String {
    let mut out = String::new();
    if let (Some(line), Some(column)) = (line, column) {
        out.push_str(&format!("line {line} column {column}: "));
    }
    if !path.is_empty() && path != "." {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

fn list(issues: &[Issue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
