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

/// Something that happened to an API client, carrying the client after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A client was registered.
    Registered(ApiClient),
    /// Name, roles or enabled flag changed (not disabling).
    Updated(ApiClient),
    /// The client was disabled.
    Disabled(ApiClient),
    /// The client got a new secret; the previous one no longer works.
    SecretRotated(ApiClient),
}

impl ClientEvent {
    /// The versioned message type.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Registered(_) => "auth.ClientRegistered.v1",
            Self::Updated(_) => "auth.ClientUpdated.v1",
            Self::Disabled(_) => "auth.ClientDisabled.v1",
            Self::SecretRotated(_) => "auth.ClientSecretRotated.v1",
        }
    }

    /// The client after the fact.
    pub fn client(&self) -> &ApiClient {
        match self {
            Self::Registered(client)
            | Self::Updated(client)
            | Self::Disabled(client)
            | Self::SecretRotated(client) => client,
        }
    }
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
    /// A new, enabled client at version 1, and its event.
    pub fn register(
        id: ClientId,
        name: ClientName,
        roles: Roles,
        secret_hash: SecretHash,
        now: DateTime<Utc>,
    ) -> (Self, ClientEvent) {
        let client = Self {
            id,
            name,
            secret_hash,
            roles,
            enabled: true,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let event = ClientEvent::Registered(client.clone());
        (client, event)
    }

    /// Applies `change`. Returns the event, or `None` when nothing changed
    /// (no new version, nothing to announce). Turning `enabled` off is a
    /// [`ClientEvent::Disabled`].
    pub fn apply(&mut self, change: ClientChange, now: DateTime<Utc>) -> Option<ClientEvent> {
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
            return None;
        }
        self.version += 1;
        self.updated_at = now;
        Some(if before.enabled && !self.enabled {
            ClientEvent::Disabled(self.clone())
        } else {
            ClientEvent::Updated(self.clone())
        })
    }

    /// Replaces the secret by the one whose hash is `secret_hash`: always a
    /// new version, even for a disabled client (it may be given its new
    /// secret before it is enabled again).
    pub fn rotate_secret(&mut self, secret_hash: SecretHash, now: DateTime<Utc>) -> ClientEvent {
        self.secret_hash = secret_hash;
        self.version += 1;
        self.updated_at = now;
        ClientEvent::SecretRotated(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ApiClient {
        ApiClient::register(
            ClientId::parse("index-service").unwrap(),
            ClientName::parse("Read model rebuilds").unwrap(),
            Roles::parse(&["reader"]).unwrap(),
            SecretHash::new("$sha256$old".into()),
            Utc::now(),
        )
        .0
    }

    #[test]
    fn given_a_new_client_then_it_is_enabled_at_version_one_and_announced() {
        let (registered, event) = ApiClient::register(
            ClientId::parse("svc").unwrap(),
            ClientName::parse("A service").unwrap(),
            Roles::parse(&["reader"]).unwrap(),
            SecretHash::new("$sha256$x".into()),
            Utc::now(),
        );
        assert!(registered.enabled);
        assert_eq!(registered.version, 1);
        assert_eq!(event.message_type(), "auth.ClientRegistered.v1");
        assert_eq!(event.client(), &registered);
    }

    #[test]
    fn given_a_client_when_nothing_really_changes_then_there_is_no_event_and_no_new_version() {
        let mut svc = client();
        let same = ClientChange {
            roles: Some(Roles::parse(&["reader"]).unwrap()),
            enabled: Some(true),
            ..ClientChange::default()
        };
        assert_eq!(svc.apply(same, Utc::now()), None);
        assert_eq!(svc.version, 1);
    }

    #[test]
    fn given_an_enabled_client_when_enabled_is_turned_off_then_it_is_a_disable_and_back_an_update()
    {
        let mut svc = client();
        let disabled = svc
            .apply(
                ClientChange {
                    enabled: Some(false),
                    ..ClientChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(disabled.message_type(), "auth.ClientDisabled.v1");
        assert_eq!(disabled.client().version, 2);
        let enabled = svc
            .apply(
                ClientChange {
                    enabled: Some(true),
                    ..ClientChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(enabled.message_type(), "auth.ClientUpdated.v1");
        let renamed = svc
            .apply(
                ClientChange {
                    roles: Some(Roles::parse(&["reader", "clerk"]).unwrap()),
                    ..ClientChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(renamed.message_type(), "auth.ClientUpdated.v1");
        assert_eq!(svc.version, 4);
    }

    #[test]
    fn given_a_client_when_its_secret_is_rotated_then_the_hash_is_replaced_in_a_new_version() {
        let mut svc = client();
        let event = svc.rotate_secret(SecretHash::new("$sha256$new".into()), Utc::now());
        assert_eq!(event.message_type(), "auth.ClientSecretRotated.v1");
        assert_eq!(svc.secret_hash.as_str(), "$sha256$new");
        assert_eq!(svc.version, 2);
        assert_eq!(event.client(), &svc);
    }
}
