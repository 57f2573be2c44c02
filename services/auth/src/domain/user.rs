//! The user account aggregate and the events it emits.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use tramita_identity::Role;

use super::values::{DisplayName, Email, Roles, SecretHash, Username};

/// Internal id of a user; the `sub` of its access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

/// A person who logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique login name.
    pub username: Username,
    /// `Surname, Name`.
    pub display_name: DisplayName,
    /// Contact address.
    pub email: Email,
    /// What the user may do.
    pub roles: Roles,
    /// A disabled user cannot log in or refresh.
    pub enabled: bool,
    /// Argon2id PHC string of the password.
    pub password_hash: SecretHash,
    /// Grows with every change (optimistic concurrency, event order).
    pub version: i64,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

/// A fact about a user, carrying the user as it is after the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    /// A user was created.
    Registered(User),
    /// Name, e-mail, roles, password or enabled flag changed (not disabling).
    Updated(User),
    /// The user was disabled.
    Disabled(User),
}

impl UserEvent {
    /// The versioned message type.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Registered(_) => "auth.UserRegistered.v1",
            Self::Updated(_) => "auth.UserUpdated.v1",
            Self::Disabled(_) => "auth.UserDisabled.v1",
        }
    }

    /// The user after the fact.
    pub fn user(&self) -> &User {
        match self {
            Self::Registered(user) | Self::Updated(user) | Self::Disabled(user) => user,
        }
    }
}

/// The parts of a user an admin may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New e-mail.
    pub email: Option<Email>,
    /// New roles.
    pub roles: Option<Roles>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New password, already hashed.
    pub password_hash: Option<SecretHash>,
}

impl User {
    /// A new, enabled user at version 1, and the event announcing it.
    pub fn register(
        username: Username,
        display_name: DisplayName,
        email: Email,
        roles: Roles,
        password_hash: SecretHash,
        now: DateTime<Utc>,
    ) -> (Self, UserEvent) {
        let user = Self {
            id: UserId(Uuid::now_v7()),
            username,
            display_name,
            email,
            roles,
            enabled: true,
            password_hash,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let event = UserEvent::Registered(user.clone());
        (user, event)
    }

    /// Applies `change`. Returns the event, or `None` when nothing changed
    /// (no new version, nothing to announce). Turning `enabled` off is a
    /// [`UserEvent::Disabled`].
    pub fn apply(&mut self, change: UserChange, now: DateTime<Utc>) -> Option<UserEvent> {
        let before = self.clone();
        if let Some(display_name) = change.display_name {
            self.display_name = display_name;
        }
        if let Some(email) = change.email {
            self.email = email;
        }
        if let Some(roles) = change.roles {
            self.roles = roles;
        }
        if let Some(enabled) = change.enabled {
            self.enabled = enabled;
        }
        if let Some(password_hash) = change.password_hash {
            self.password_hash = password_hash;
        }
        if *self == before {
            return None;
        }
        self.version += 1;
        self.updated_at = now;
        Some(if before.enabled && !self.enabled {
            UserEvent::Disabled(self.clone())
        } else {
            UserEvent::Updated(self.clone())
        })
    }

    /// Whether the user can act as an admin: enabled, with the admin role.
    pub fn is_enabled_admin(&self) -> bool {
        self.enabled && self.roles.contains(Role::Admin)
    }

    /// Whether going from `before` to `after` takes an enabled admin away
    /// (disabling an admin, or removing its admin role): such a change must
    /// not leave the service without any enabled admin.
    pub fn removes_an_admin(before: &User, after: &User) -> bool {
        before.is_enabled_admin() && !after.is_enabled_admin()
    }

    /// Disables the user; `None` when already disabled.
    pub fn disable(&mut self, now: DateTime<Utc>) -> Option<UserEvent> {
        self.apply(
            UserChange {
                enabled: Some(false),
                ..UserChange::default()
            },
            now,
        )
    }

    /// Whether the change that produced `event` must end the user's
    /// sessions (refresh-token families): disabling or a new password.
    pub fn ends_sessions(event: &UserEvent, previous_hash: &SecretHash) -> bool {
        match event {
            UserEvent::Disabled(_) => true,
            UserEvent::Updated(user) => user.password_hash != *previous_hash,
            UserEvent::Registered(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User::register(
            Username::parse("ana").unwrap(),
            DisplayName::parse("García, Ana").unwrap(),
            Email::parse("ana@example.org").unwrap(),
            Roles::parse(&["clerk"]).unwrap(),
            SecretHash::new("$argon2id$old".into()),
            Utc::now(),
        )
        .0
    }

    #[test]
    fn given_a_user_when_nothing_really_changes_then_there_is_no_event_and_no_new_version() {
        let mut ana = user();
        let same = UserChange {
            email: Some(Email::parse("ana@example.org").unwrap()),
            enabled: Some(true),
            ..UserChange::default()
        };
        assert_eq!(ana.apply(same, Utc::now()), None);
        assert_eq!(ana.version, 1);
    }

    #[test]
    fn given_an_enabled_user_when_enabled_is_turned_off_then_it_is_a_disable() {
        let mut ana = user();
        let event = ana
            .apply(
                UserChange {
                    enabled: Some(false),
                    roles: Some(Roles::parse(&["reader"]).unwrap()),
                    ..UserChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(event.message_type(), "auth.UserDisabled.v1");
        assert_eq!(event.user().version, 2);
        assert!(User::ends_sessions(
            &event,
            &SecretHash::new("$argon2id$old".into())
        ));
        assert_eq!(ana.disable(Utc::now()), None, "disabling twice is a no-op");
    }

    #[test]
    fn given_an_enabled_admin_when_disabled_or_demoted_then_it_removes_an_admin() {
        let mut admin = user();
        admin.roles = Roles::parse(&["admin", "clerk"]).unwrap();
        let change = |change: UserChange| {
            let mut after = admin.clone();
            after.apply(change, Utc::now());
            User::removes_an_admin(&admin, &after)
        };
        assert!(change(UserChange {
            enabled: Some(false),
            ..UserChange::default()
        }));
        assert!(change(UserChange {
            roles: Some(Roles::parse(&["clerk"]).unwrap()),
            ..UserChange::default()
        }));
        assert!(!change(UserChange {
            display_name: Some(DisplayName::parse("Otra, Admin").unwrap()),
            ..UserChange::default()
        }));
        let clerk = user();
        let mut disabled_clerk = clerk.clone();
        disabled_clerk.disable(Utc::now());
        assert!(!User::removes_an_admin(&clerk, &disabled_clerk));
    }

    #[test]
    fn given_a_user_when_the_password_changes_then_sessions_end_but_a_rename_keeps_them() {
        let old = SecretHash::new("$argon2id$old".into());
        let mut ana = user();
        let renamed = ana
            .apply(
                UserChange {
                    display_name: Some(DisplayName::parse("García, Ana María").unwrap()),
                    ..UserChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(renamed.message_type(), "auth.UserUpdated.v1");
        assert!(!User::ends_sessions(&renamed, &old));
        let new_password = ana
            .apply(
                UserChange {
                    password_hash: Some(SecretHash::new("$argon2id$new".into())),
                    ..UserChange::default()
                },
                Utc::now(),
            )
            .unwrap();
        assert!(User::ends_sessions(&new_password, &old));
        assert_eq!(ana.version, 3);
    }
}
