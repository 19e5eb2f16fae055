//! cdn-invalidator: invalidate CDN-cached URLs built from an asset catalogue and URL templates.

pub mod cache_check;
pub mod cdn;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod invalidations;
pub mod password;
pub mod routes;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod worker;
