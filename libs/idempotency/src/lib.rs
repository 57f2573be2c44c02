//! `Idempotency-Key` (IETF httpapi draft "The Idempotency-Key HTTP Header
//! Field") for every service: an actix-web middleware over a store port,
//! with PostgreSQL and MongoDB stores, a retention sweep and the OpenAPI
//! description.
//!
//! A service enables it in three steps:
//!
//! ```ignore
//! // startup: the store (once), the middleware, the sweep
//! let store = PgIdempotencyStore::new(pool.clone());       // or MongoIdempotencyStore::new(db)
//! store.ensure_schema().await?;
//! let idempotency = Idempotency::new(store.clone(), validator.clone(), settings.idempotency.clone());
//! runtime.spawn("idempotency-retention",
//!     retention::run(store, settings.idempotency.sweep_interval, shutdown.clone()));
//! // routes: wrap those whose POST/PATCH take a key, all of them...
//! cfg.service(web::scope("").wrap(idempotency.clone()).configure(http::routes));
//! // ...or resource by resource, when other routes must stay outside
//! // (a scope matching "" takes every path registered after it)
//! cfg.service(web::resource("/docs/uploads").wrap(idempotency.clone()).route(web::post().to(upload)));
//! // ApiDoc
//! #[openapi(modifiers(&BearerAuth, &IdempotencyDocs))]
//! ```
//!
//! `settings.idempotency` is [`IdempotencySettings::from_env`]
//! (`IDEMPOTENCY_KEY_TTL`). See [`middleware`] for the behaviour,
//! [`key::is_kept`] for which outcomes are stored, and the `body` module
//! for how bodies are fingerprinted without holding large ones.
#![forbid(unsafe_code)]

mod body;
pub mod key;
pub mod middleware;
pub mod mongo;
pub mod openapi;
pub mod port;
pub mod postgres;
pub mod retention;
pub mod settings;

pub use key::{Fingerprint, IdempotencyKey, Scope};
pub use middleware::{Idempotency, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
pub use mongo::MongoIdempotencyStore;
pub use openapi::{IdempotencyDocs, IdempotencyDocsUnder};
pub use port::{Begun, Claim, IdempotencyStore, StoredResponse};
pub use postgres::PgIdempotencyStore;
pub use settings::IdempotencySettings;
