//! The auth service: users, roles, API clients and signing keys; the OAuth2
//! token endpoint, the JWKS, and user events on `auth.events`.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{Application, Environment, KeyEncryptionSettings, Settings};
pub use tramita_web::client_address::TrustedProxies;
