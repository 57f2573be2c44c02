//! API clients: machines that get access tokens with `client_credentials`.

use chrono::{DateTime, Utc};

use super::values::{ClientId, ClientName, Roles, SecretHash};

/// A machine-to-machine caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    /// Unique id; the `sub` and `name` of its tokens.
    pub id: ClientId,
    /// What it is for.
    pub name: ClientName,
    /// `$sha256$` digest of its secret (Argon2id PHC string for clients
    /// registered before digests, upgraded at their next token request).
    pub secret_hash: SecretHash,
    /// What it may do.
    pub roles: Roles,
    /// A disabled client gets no tokens.
    pub enabled: bool,
    /// Grows with every change.
    pub version: i64,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

/// The parts of a client an admin may change; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct ClientChange {
    /// New name.
    pub name: Option<ClientName>,
    /// New roles.
    pub roles: Option<Roles>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

impl ApiClient {
    /// A new, enabled client at version 1.
    pub fn register(
        id: ClientId,
        name: ClientName,
        roles: Roles,
        secret_hash: SecretHash,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            name,
            secret_hash,
            roles,
            enabled: true,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// Applies `change`; `false` when nothing changed.
    pub fn apply(&mut self, change: ClientChange, now: DateTime<Utc>) -> bool {
        let before = self.clone();
        if let Some(name) = change.name {
            self.name = name;
        }
        if let Some(roles) = change.roles {
            self.roles = roles;
        }
        if let Some(enabled) = change.enabled {
            self.enabled = enabled;
        }
        if *self == before {
            return false;
        }
        self.version += 1;
        self.updated_at = now;
        true
    }
}
