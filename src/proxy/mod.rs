//! The data path: L4 (tcp) and L7 (http) proxying.

pub mod route;
