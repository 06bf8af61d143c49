//! Every way a `fulcrum ctl` command can fail, each with the one message the
//! operator reads: the wording lives here and nowhere else.

use std::path::PathBuf;

/// Why a `fulcrum ctl` command did not do what was asked (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing answers at the admin address (not running, or no `admin.bind`).
    #[error("cannot reach the admin API at {addr}: {reason} (is fulcrum running with admin.bind?)")]
    Unreachable {
        /// The `--admin` address.
        addr: String,
        /// What the connect said, in words.
        reason: String,
    },
    /// Connected, but no whole answer came within the per-request limit.
    #[error("the admin API at {addr} did not answer within {secs} s")]
    Timeout {
        /// The `--admin` address.
        addr: String,
        /// The limit.
        secs: u64,
    },
    /// The connection broke before a whole answer arrived.
    #[error("the admin API at {addr} broke off the exchange: {reason}")]
    Broken {
        /// The `--admin` address.
        addr: String,
        /// What hyper said.
        reason: String,
    },
    /// 401 after sending a token.
    #[error("the admin API refused the token (check --token-file or FULCRUM_ADMIN_TOKEN)")]
    BadToken,
    /// 401 with no token sent: the instance wants one.
    #[error("the admin API needs a token: pass --token-file PATH or set FULCRUM_ADMIN_TOKEN")]
    NoToken,
    /// 403: the instance was started without `admin.token_file`.
    #[error("writes are disabled: the config has no admin.token_file")]
    WritesDisabled,
    /// 404 on a server write.
    #[error("no server {backend}/{server}")]
    NoServer {
        /// Backend asked for.
        backend: String,
        /// Server asked for.
        server: String,
    },
    /// 404 on a fixed endpoint: the instance predates it.
    #[error("the admin API at {addr} has no {path} (is that fulcrum older than this ctl?)")]
    NoEndpoint {
        /// The `--admin` address.
        addr: String,
        /// The endpoint.
        path: String,
    },
    /// 400: the server's own explanation.
    #[error("{0}")]
    Rejected(String),
    /// Any other answer, or one that is not the JSON expected.
    #[error("unexpected answer from the admin API: {0}")]
    Unexpected(String),
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        /// The `--token-file` path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds only whitespace: sending it would be refused anyway.
    #[error("the token file {} is empty", path.display())]
    EmptyToken {
        /// The `--token-file` path.
        path: PathBuf,
    },
    /// A token that cannot travel in an HTTP header (control characters).
    #[error("the admin token holds characters an HTTP header cannot carry")]
    TokenNotHeader,
    /// The file given to `ctl check` cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The local async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}
