//! HTTP/1.1 to servers, spoken by us rather than through hyper's client.
//!
//! hyper's client runs each server connection in a task of its own and hands it
//! requests over a channel; with 1,000 busy clients that second task, its channel
//! and its buffers per connection were most of what made a request cost 3.5x the
//! CPU it costs with 64 (the working set outgrew the caches). Here the request's
//! own task writes the request and reads the response: no channel, no second task,
//! and no buffer held by a connection waiting in the pool.
//!
//! - [`request`]: the request head and how its body is framed.
//! - [`response`]: the response head (parsed with `httparse`) and its body's framing.
//! - [`chunked`]: the chunked transfer coding of response bodies.
//! - [`exchange`]: one request and its response head on one connection.
//! - [`body`]: the response body, read as the client takes it; the connection goes
//!   back to the pool at its end.
//! - [`conn`]: the connection, what it keeps between requests, and the tunnel
//!   after a 101.

mod body;
mod chunked;
mod conn;
mod error;
mod exchange;
#[cfg(test)]
mod proptests;
mod request;
mod response;

pub use body::{Home, ServerBody};
pub use conn::{ServerConn, ServerIo, Upgraded};
pub use exchange::{send, Sending};
