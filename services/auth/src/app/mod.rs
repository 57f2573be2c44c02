//! Use cases of the auth service and the ports they need.

mod accounts;
mod keys;
mod ports;
mod retention;
mod secrets;
mod tokens;

pub use accounts::{
    AccountError, AccountService, AdminSeed, ChangeUserCommand, RegisterClientCommand,
    RegisterError, RegisterUserCommand, RegisteredClient,
};
pub use keys::{KeyRing, StoredKey};
pub use ports::{
    Actor, ClientRepository, LoginThrottle, RetentionStore, RotateError, SaveError, SessionStore,
    SigningKeyStore, ThrottleKey, UserRepository, UserUpdate,
};
pub use retention::{run as run_retention, RetentionPolicy, Swept};
pub use secrets::{
    check_client_secret, client_secret_digest, random_token, ClientSecretCheck, HashCost,
    HashLimits, SecretHasher, TokenHash, VerifyError,
};
pub use tokens::{
    ClientGrantError, IssuedTokens, PasswordGrantError, PasswordLogin, RefreshGrantError,
    TokenPolicy, TokenService,
};
