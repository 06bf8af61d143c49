//! hyper's server settings for an http frontend: part of the compiled frontend,
//! built once per snapshot so a connection borrows them instead of building its own.

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// hyper refuses read buffers smaller than this.
const MIN_HEAD_BUFFER: usize = 8192;

/// Concurrent streams an h2c client may open (HAProxy's default too).
const H2_MAX_STREAMS: u32 = 100;

/// Receive window per h2c stream (the protocol's default size): what a stream may
/// have buffered here unread, so the connection's worst case is 6.4 MiB.
const H2_STREAM_WINDOW: u32 = 64 * 1024;

/// hyper's server settings for an http frontend, built once per snapshot (a
/// connection borrows them instead of carrying its own copy). Fulcrum tells the
/// protocols apart itself (the h2 preface), so that an HTTP/1.1 connection idle
/// between requests can drop hyper's connection state and buffers.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// HTTP/1.1.
    pub http1: http1::Builder,
    /// HTTP/2 with prior knowledge (h2c).
    pub http2: http2::Builder<TokioExecutor>,
}

/// The server settings of an http frontend accepting heads up to `max_header_bytes`.
pub fn server_settings(max_header_bytes: usize) -> ServerSettings {
    let mut http1 = http1::Builder::new();
    http1
        // A client may send its request and shut down its write side (`nc`, some
        // health checkers): still answer, as HAProxy does without `abortonclose`.
        .half_close(true)
        .timer(TokioTimer::new())
        // ClientIo enforces `request_header` itself, and `client` between requests,
        // which hyper's single head timer cannot tell apart.
        .header_read_timeout(None)
        .max_buf_size(max_header_bytes.max(MIN_HEAD_BUFFER));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(max_header_bytes.try_into().unwrap_or(u32::MAX))
        // The connection window covers every stream's: a stream whose server is slow
        // to take its upload cannot use up the window the others need to send theirs.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_STREAM_WINDOW * H2_MAX_STREAMS);
    ServerSettings { http1, http2 }
}
