//! The data path: L4 (tcp) and L7 (http) proxying.

pub mod connect;
pub mod copy;
pub mod error;
pub mod http;
pub mod outlier;
pub mod proxy_protocol;
pub mod quick_ack;
pub mod retry;
pub mod slot;
pub mod sni;
pub mod tcp;

pub use error::ProxyError;
