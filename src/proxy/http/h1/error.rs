//! What can go wrong speaking HTTP/1.1 to a server.

/// A server broke the HTTP/1.1 exchange.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The connection ended before any byte of a response.
    #[error("server closed the connection before responding")]
    ClosedBeforeResponse,
    /// The connection ended in the middle of the response head.
    #[error("server closed the connection in the middle of the response head")]
    ClosedInHead,
    /// The connection ended before the body's announced end.
    #[error("server closed the connection before the end of the response body")]
    ClosedInBody,
    /// The response head did not end within the limit.
    #[error("response head longer than {0} bytes")]
    HeadTooLarge(usize),
    /// The response head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    /// The head parsed but says something impossible.
    #[error("malformed response head: {0}")]
    BadHead(&'static str),
    /// The chunked body is malformed.
    #[error("malformed chunked response body: {0}")]
    BadChunk(&'static str),
    /// A 101 to a request that asked for no upgrade.
    #[error("server switched protocols without being asked")]
    UnaskedUpgrade,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
