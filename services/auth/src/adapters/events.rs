//! The wire contract of `auth.events`: every user event carries a snapshot
//! of the user after it (`UserSnapshotV1`), never a password hash; every
//! API client event a snapshot of the client (`ClientSnapshotV1`), never its
//! secret or the secret's hash.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_messaging::Envelope;
use uuid::Uuid;

use crate::domain::{ApiClient, ClientEvent, User, UserEvent};

/// Logical name of the topic carrying user and API client events.
pub const AUTH_EVENTS: &str = "auth.events";

/// Payload of `auth.UserRegistered.v1`, `auth.UserUpdated.v1` and
/// `auth.UserDisabled.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSnapshotV1 {
    /// User id (the `sub` of its tokens).
    pub user_id: Uuid,
    /// Login name, lowercase.
    pub username: String,
    /// `Surname, Name`.
    pub display_name: String,
    /// E-mail.
    pub email: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Whether the user may log in.
    pub enabled: bool,
    /// Grows with every change; readers keep the highest.
    pub version: i64,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserSnapshotV1 {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.id.0,
            username: user.username.as_str().to_owned(),
            display_name: user.display_name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            roles: user.roles.names(),
            enabled: user.enabled,
            version: user.version,
            updated_at: user.updated_at,
        }
    }
}

/// The envelope announcing `event`, caused by `actor` (the admin's subject).
pub fn envelope(event: &UserEvent, actor: Option<&str>) -> Envelope {
    let user = event.user();
    let payload =
        serde_json::to_value(UserSnapshotV1::from(user)).expect("a snapshot always serializes");
    Envelope::new(event.message_type(), user.id.0.to_string(), payload)
        .with_actor(actor.map(str::to_owned))
}

/// Payload of `auth.ClientRegistered.v1`, `auth.ClientUpdated.v1`,
/// `auth.ClientDisabled.v1` and `auth.ClientSecretRotated.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientSnapshotV1 {
    /// Client id (the `sub` of its tokens).
    pub client_id: String,
    /// What it is for.
    pub name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Whether it may get tokens.
    pub enabled: bool,
    /// Grows with every change (a secret rotation included); readers keep
    /// the highest.
    pub version: i64,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

impl From<&ApiClient> for ClientSnapshotV1 {
    fn from(client: &ApiClient) -> Self {
        Self {
            client_id: client.id.as_str().to_owned(),
            name: client.name.as_str().to_owned(),
            roles: client.roles.names(),
            enabled: client.enabled,
            version: client.version,
            created_at: client.created_at,
            updated_at: client.updated_at,
        }
    }
}

/// The envelope announcing `event` of an API client, keyed by its id and
/// caused by `actor` (the admin's subject).
pub fn client_envelope(event: &ClientEvent, actor: Option<&str>) -> Envelope {
    let client = event.client();
    let payload =
        serde_json::to_value(ClientSnapshotV1::from(client)).expect("a snapshot always serializes");
    Envelope::new(event.message_type(), client.id.as_str().to_owned(), payload)
        .with_actor(actor.map(str::to_owned))
}
