//! Use cases of the auth service and the ports they need.

mod accounts;
mod key_encryption;
mod keys;
mod ports;
mod retention;
mod secrets;
mod tokens;

pub use accounts::{
    AccountError, AccountService, AdminSeed, ChangeUserCommand, RegisterClientCommand,
    RegisterError, RegisterUserCommand, RegisteredClient,
};
pub use key_encryption::{
    KekParseError, KekRing, KeyEncryptionKey, OpenError, SealedKey, DEV_KEY_ENCRYPTION_KEY, KEK_LEN,
};
pub use keys::{KeyRing, StoredKey};
pub use ports::{
    Actor, ClientRepository, KeyStoreError, LoginThrottle, RetentionStore, RotateError, SaveError,
    SealedAtRest, SessionStore, SigningKeyStore, ThrottleKey, UserRepository, UserUpdate,
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
