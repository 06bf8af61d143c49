//! Fulcrum: a Layer-4/7 load balancer.
//!
//! `config` parses and validates the YAML file, `cluster` compiles it into an
//! immutable snapshot, `balance` picks servers, `proxy` moves the bytes.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod epoll;
pub mod fd_limit;
pub mod health;
pub mod instance;
pub mod listener;
pub mod log_limit;
pub mod proxy;
pub mod signals;
pub mod tls;
pub mod trim;
pub mod upstream;
pub mod watch;
pub mod workers;
