//! Black-box tests: the real app on a random port, driven over HTTP as a browser would.
//! One binary, so the crate links once.

mod helpers;
mod purge_node;
mod sim_akamai;
mod varnish;

mod accounts;
mod akamai;
mod assets;
mod history;
mod invalidate;
mod purging;
mod settings;
