//! The auth domain: accounts, API clients and the login throttling rule.
//! Pure: no I/O, no async runtime, no framework types.

mod client;
mod throttle;
mod user;
mod values;

pub use client::{ApiClient, ClientChange, ClientEvent};
pub use throttle::{retry_after_seconds, LoginBackoff};
pub use user::{User, UserChange, UserEvent, UserId};
pub use values::{
    ClientId, ClientName, DisplayName, Email, NewPassword, Roles, SecretHash, Username, ValueError,
};
