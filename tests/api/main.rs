//! Black-box tests: the real app on a random port, driven over HTTP as a browser would.
//! One binary, so the crate links once.

mod helpers;
mod purge_node;
mod sim_akamai;
mod sim_cloudflare;
mod sim_cloudfront;
mod sim_fastly;
mod varnish;

mod accounts;
mod akamai;
mod api_v1;
mod assets;
mod browser;
mod cache_check;
mod cloudflare;
mod cloudfront;
mod fastly;
mod history;
mod instances;
mod invalidate;
mod keys;
mod purging;
mod races;
mod secrets;
mod security;
mod settings;
mod variants;
mod variants_varnish;
