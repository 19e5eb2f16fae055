//! cdn-invalidator: invalidate CDN-cached URLs built from an asset catalogue and URL templates.

pub mod cdn;
pub mod config;
pub mod domain;
pub mod error;
pub mod password;
pub mod routes;
pub mod session;
pub mod startup;
pub mod store;
pub mod worker;
