//! Pure logic: no I/O, no HTTP, no SQL. Everything here is unit and property tested.

pub mod api_token;
pub mod asset;
pub mod catalogue;
pub mod estimate;
pub mod freshness;
pub mod publish_server;
pub mod settings;
pub mod status;
pub mod template;
pub mod throttle;
pub mod url_list;
pub mod username;
pub mod variants;

pub use asset::{AssetId, AssetKind};
pub use publish_server::PublishServer;
pub use template::InvalidationTemplate;
