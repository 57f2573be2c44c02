//! Account administration: users and API clients, and the first admin.

use chrono::{DateTime, SubsecRound, Utc};
use tramita_identity::Role;

use super::ports::{Actor, ClientRepository, SaveError, UserRepository, UserUpdate};
use super::secrets::{client_secret_digest, random_token, SecretHasher};
use crate::domain::{
    ApiClient, ClientChange, ClientId, ClientName, DisplayName, Email, NewPassword, Roles, User,
    UserChange, UserId, Username,
};

/// A request to register a user, already parsed.
#[derive(Debug, Clone)]
pub struct RegisterUserCommand {
    /// Login name.
    pub username: Username,
    /// `Surname, Name`.
    pub display_name: DisplayName,
    /// E-mail.
    pub email: Email,
    /// Roles.
    pub roles: Roles,
    /// Initial password.
    pub password: NewPassword,
}

/// A request to change a user, already parsed; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct ChangeUserCommand {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New e-mail.
    pub email: Option<Email>,
    /// New roles.
    pub roles: Option<Roles>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New password.
    pub password: Option<NewPassword>,
}

/// A request to register an API client, already parsed.
#[derive(Debug, Clone)]
pub struct RegisterClientCommand {
    /// Client id.
    pub id: ClientId,
    /// What it is for.
    pub name: ClientName,
    /// Roles.
    pub roles: Roles,
}

/// Why a user or client could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The username or client id is taken.
    #[error("{0} is already taken")]
    Duplicate(String),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a user or client could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No account has this id.
    #[error("no account with this id")]
    NotFound,
    /// The change would leave no enabled admin (disabling or demoting the
    /// last one).
    #[error("the change would leave no enabled admin")]
    LastAdmin,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A client and its freshly made secret (registered, or after a secret
/// rotation), shown this once.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// The client.
    pub client: ApiClient,
    /// The plain secret; only its hash is stored.
    pub secret: String,
}

/// The first admin, from configuration.
#[derive(Debug, Clone)]
pub struct AdminSeed {
    /// Username.
    pub username: Username,
    /// Password.
    pub password: NewPassword,
    /// Display name.
    pub display_name: DisplayName,
}

/// Optimistic-concurrency retries of a change.
const UPDATE_ATTEMPTS: usize = 5;

/// The current time at the precision PostgreSQL stores (microseconds).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The account use cases over a repository.
#[derive(Debug, Clone)]
pub struct AccountService<R> {
    repository: R,
    hasher: SecretHasher,
}

impl<R: UserRepository + ClientRepository> AccountService<R> {
    /// Use cases over `repository`.
    pub fn new(repository: R, hasher: SecretHasher) -> Self {
        Self { repository, hasher }
    }

    /// Registers a user and announces it.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(username = command.username.as_str())))]
    pub async fn register_user(
        &self,
        command: RegisterUserCommand,
        actor: Actor<'_>,
    ) -> Result<User, RegisterError> {
        let hash = self
            .hasher
            .hash(command.password.expose().to_owned())
            .await?;
        let (user, event) = User::register(
            command.username,
            command.display_name,
            command.email,
            command.roles,
            hash,
            now(),
        );
        match self.repository.insert_user(&user, &event, actor).await {
            Ok(()) => {
                tracing::info!(user_id = %user.id.0, "user registered");
                Ok(user)
            }
            Err(SaveError::Duplicate(name)) => Err(RegisterError::Duplicate(name)),
            Err(SaveError::VersionConflict | SaveError::LastAdmin) => {
                Err(anyhow::anyhow!("unexpected conflict on insert").into())
            }
            Err(SaveError::Unexpected(error)) => Err(error.into()),
        }
    }

    /// Reads a user.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(user_id = %id.0)))]
    pub async fn user(&self, id: UserId) -> Result<User, AccountError> {
        self.repository
            .user(id)
            .await?
            .ok_or(AccountError::NotFound)
    }

    /// Up to `limit` users after the username `after`, by username.
    pub async fn users(&self, after: Option<&str>, limit: u32) -> anyhow::Result<Vec<User>> {
        self.repository.users(after, limit).await
    }

    /// Changes a user and announces it; disabling or a new password ends the
    /// user's sessions.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(user_id = %id.0)))]
    pub async fn change_user(
        &self,
        id: UserId,
        command: ChangeUserCommand,
        actor: Actor<'_>,
    ) -> Result<User, AccountError> {
        let password_hash = match &command.password {
            Some(password) => Some(self.hasher.hash(password.expose().to_owned()).await?),
            None => None,
        };
        for _ in 0..UPDATE_ATTEMPTS {
            let mut user = self.user(id).await?;
            let before = user.clone();
            let expected = user.version;
            let previous_hash = user.password_hash.clone();
            let change = UserChange {
                display_name: command.display_name.clone(),
                email: command.email.clone(),
                roles: command.roles.clone(),
                enabled: command.enabled,
                password_hash: password_hash.clone(),
            };
            let Some(event) = user.apply(change, now()) else {
                return Ok(user);
            };
            let update = UserUpdate {
                end_sessions: User::ends_sessions(&event, &previous_hash),
                keep_an_admin: User::removes_an_admin(&before, &user),
            };
            match self
                .repository
                .update_user(&user, expected, &event, update, actor)
                .await
            {
                Ok(()) => {
                    tracing::info!(
                        event = event.message_type(),
                        end_sessions = update.end_sessions,
                        "user changed"
                    );
                    return Ok(user);
                }
                Err(SaveError::VersionConflict) => continue,
                Err(SaveError::LastAdmin) => {
                    tracing::warn!("refused a change that would leave no enabled admin");
                    return Err(AccountError::LastAdmin);
                }
                Err(SaveError::Duplicate(name)) => {
                    return Err(anyhow::anyhow!("duplicate {name} on update").into())
                }
                Err(SaveError::Unexpected(error)) => return Err(error.into()),
            }
        }
        Err(anyhow::anyhow!("gave up after {UPDATE_ATTEMPTS} concurrent changes").into())
    }

    /// Disables a user and ends its sessions (no-op when already disabled).
    pub async fn disable_user(&self, id: UserId, actor: Actor<'_>) -> Result<User, AccountError> {
        self.change_user(
            id,
            ChangeUserCommand {
                enabled: Some(false),
                ..ChangeUserCommand::default()
            },
            actor,
        )
        .await
    }

    /// Registers an API client with a generated secret, returned this once,
    /// and announces it.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = command.id.as_str())))]
    pub async fn register_client(
        &self,
        command: RegisterClientCommand,
        actor: Actor<'_>,
    ) -> Result<RegisteredClient, RegisterError> {
        let secret = random_token()?;
        let hash = client_secret_digest(&secret);
        let (client, event) =
            ApiClient::register(command.id, command.name, command.roles, hash, now());
        match self.repository.insert_client(&client, &event, actor).await {
            Ok(()) => {
                tracing::info!("API client registered");
                Ok(RegisteredClient { client, secret })
            }
            Err(SaveError::Duplicate(id)) => Err(RegisterError::Duplicate(id)),
            Err(SaveError::VersionConflict | SaveError::LastAdmin) => {
                Err(anyhow::anyhow!("unexpected conflict on insert").into())
            }
            Err(SaveError::Unexpected(error)) => Err(error.into()),
        }
    }

    /// Reads a client.
    pub async fn client(&self, id: &ClientId) -> Result<ApiClient, AccountError> {
        self.repository
            .client(id)
            .await?
            .ok_or(AccountError::NotFound)
    }

    /// Up to `limit` clients after the id `after`, by id.
    pub async fn clients(&self, after: Option<&str>, limit: u32) -> anyhow::Result<Vec<ApiClient>> {
        self.repository.clients(after, limit).await
    }

    /// Changes a client and announces it (nothing when nothing changes).
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = id.as_str())))]
    pub async fn change_client(
        &self,
        id: &ClientId,
        change: ClientChange,
        actor: Actor<'_>,
    ) -> Result<ApiClient, AccountError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let mut client = self.client(id).await?;
            let expected = client.version;
            let Some(event) = client.apply(change.clone(), now()) else {
                return Ok(client);
            };
            match self
                .repository
                .update_client(&client, expected, &event, actor)
                .await
            {
                Ok(()) => {
                    tracing::info!(
                        event = event.message_type(),
                        enabled = client.enabled,
                        "API client changed"
                    );
                    return Ok(client);
                }
                Err(SaveError::VersionConflict) => continue,
                Err(SaveError::Duplicate(name)) => {
                    return Err(anyhow::anyhow!("duplicate {name} on update").into())
                }
                Err(SaveError::LastAdmin) => {
                    return Err(anyhow::anyhow!("a client change touched the admins").into())
                }
                Err(SaveError::Unexpected(error)) => return Err(error.into()),
            }
        }
        Err(anyhow::anyhow!("gave up after {UPDATE_ATTEMPTS} concurrent changes").into())
    }

    /// Gives a client a new generated secret, returned this once, and
    /// announces it. The previous secret stops working at the commit: the
    /// token endpoint reads the stored digest on every request.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = id.as_str())))]
    pub async fn rotate_client_secret(
        &self,
        id: &ClientId,
        actor: Actor<'_>,
    ) -> Result<RegisteredClient, AccountError> {
        let secret = random_token()?;
        let hash = client_secret_digest(&secret);
        for _ in 0..UPDATE_ATTEMPTS {
            let mut client = self.client(id).await?;
            let expected = client.version;
            let event = client.rotate_secret(hash.clone(), now());
            match self
                .repository
                .update_client(&client, expected, &event, actor)
                .await
            {
                Ok(()) => {
                    tracing::info!(version = client.version, "API client secret rotated");
                    return Ok(RegisteredClient { client, secret });
                }
                Err(SaveError::VersionConflict) => continue,
                Err(SaveError::Duplicate(name)) => {
                    return Err(anyhow::anyhow!("duplicate {name} on update").into())
                }
                Err(SaveError::LastAdmin) => {
                    return Err(anyhow::anyhow!("a client change touched the admins").into())
                }
                Err(SaveError::Unexpected(error)) => return Err(error.into()),
            }
        }
        Err(anyhow::anyhow!("gave up after {UPDATE_ATTEMPTS} concurrent changes").into())
    }

    /// Creates the first admin when no enabled admin exists. When the
    /// configured username belongs to an account that is not an enabled admin
    /// (disabled or demoted, which the service itself no longer allows), that
    /// account is left as it is (never re-enabled or promoted silently) and
    /// the service starts without an admin, logging how to recover: set
    /// `AUTH_ADMIN_USERNAME` to an unused name to create a new first admin.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(username = seed.username.as_str())))]
    pub async fn ensure_admin(&self, seed: AdminSeed) -> anyhow::Result<()> {
        if self.repository.enabled_admin_exists().await? {
            return Ok(());
        }
        if self
            .repository
            .user_by_username(seed.username.as_str())
            .await?
            .is_some()
        {
            tracing::error!(
                username = seed.username.as_str(),
                "no enabled admin exists and AUTH_ADMIN_USERNAME names an account that is not an enabled admin; starting without an admin: set AUTH_ADMIN_USERNAME to an unused name and restart to create one"
            );
            return Ok(());
        }
        let command = RegisterUserCommand {
            email: Email::parse(&format!("{}@tramita.invalid", seed.username.as_str()))
                .map_err(|e| anyhow::anyhow!("admin e-mail: {e}"))?,
            username: seed.username,
            display_name: seed.display_name,
            roles: Roles::new([Role::Admin]).map_err(|e| anyhow::anyhow!("{e}"))?,
            password: seed.password,
        };
        match self.register_user(command, None).await {
            // Another replica seeded it at the same moment.
            Ok(_) | Err(RegisterError::Duplicate(_)) => Ok(()),
            Err(RegisterError::Unexpected(error)) => Err(error),
        }
    }

    /// Creates the demo users `clerk`, `validator` and `reader` (password
    /// `<username>-dev-only`) when absent.
    pub async fn ensure_demo_users(&self) -> anyhow::Result<()> {
        for (name, role, display) in [
            ("clerk", Role::Clerk, "Demo, Tramitador"),
            ("validator", Role::Validator, "Demo, Validador"),
            ("reader", Role::Reader, "Demo, Lector"),
        ] {
            let parse = |e: crate::domain::ValueError| anyhow::anyhow!("demo user {name}: {e}");
            let command = RegisterUserCommand {
                username: Username::parse(name).map_err(parse)?,
                display_name: DisplayName::parse(display).map_err(parse)?,
                email: Email::parse(&format!("{name}@tramita.invalid")).map_err(parse)?,
                roles: Roles::new([role]).map_err(parse)?,
                password: NewPassword::parse(&format!("{name}-dev-only")).map_err(parse)?,
            };
            match self.register_user(command, None).await {
                Ok(_) => tracing::warn!(username = name, "demo user created (development only)"),
                Err(RegisterError::Duplicate(_)) => {}
                Err(RegisterError::Unexpected(error)) => return Err(error),
            }
        }
        Ok(())
    }
}
