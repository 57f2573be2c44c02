//! HTTP adapters: the proxy, the merged API docs, health and the web app.

pub mod health;
pub mod openapi;
pub mod proxy;
pub mod site;
