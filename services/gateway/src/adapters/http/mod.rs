//! HTTP adapters: the proxy, the merged API docs and the web app.

pub mod openapi;
pub mod proxy;
pub mod site;
