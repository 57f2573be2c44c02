//! HTTP adapter: DTOs, handlers and their OpenAPI description.

mod admin;
mod browser;
mod client_address;
mod oauth;

pub use admin::*;
pub use browser::{BrowserClient, CSRF_HEADER, REFRESH_COOKIE};
pub use client_address::ClientAddress;
pub use oauth::*;

use actix_web::web;
use tramita_idempotency::{Idempotency, IdempotencyDocsUnder, PgIdempotencyStore};
use tramita_web::{BearerAuth, CommonAnswers};
use tramita_web::{FieldError, Problem};
use utoipa::OpenApi;

use crate::adapters::postgres::PgAuthStore;
use crate::app::{AccountService, TokenService};

/// The grants as the handlers see them.
pub type Tokens = TokenService<PgAuthStore, PgAuthStore>;
/// The account administration as the handlers see it.
pub type Accounts = AccountService<PgAuthStore>;

/// The routes whose POST and PATCH accept `Idempotency-Key`: the user and
/// client administration (not the token endpoint, logout or key rotation).
pub const IDEMPOTENT_PATHS: &[&str] = &["/auth/users", "/auth/clients"];

/// `Idempotency-Key` in the OpenAPI description of [`IDEMPOTENT_PATHS`].
const IDEMPOTENCY_DOCS: IdempotencyDocsUnder = IdempotencyDocsUnder(IDEMPOTENT_PATHS);

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita auth", description = "Users, roles, API clients and signing keys; the OAuth2 token endpoint and the JWKS."),
    paths(
        token, logout, jwks, rotate_keys, me,
        create_user, list_users, get_user, update_user, disable_user,
        create_client, list_clients, update_client, disable_client, rotate_client_secret,
    ),
    components(schemas(
        TokenRequest, GrantType, RoleName, TokenResponse, OAuthErrorBody, LogoutRequest, JwksDoc, RotatedKeyResponse,
        MeResponse, CreateUserRequest, UpdateUserRequest, UserResponse, UserPage,
        CreateClientRequest, UpdateClientRequest, ClientResponse, CreatedClientResponse, ClientPage,
        Problem, FieldError,
    )),
    modifiers(&BearerAuth, &OAuthFlows, &IDEMPOTENCY_DOCS, &CommonAnswers),
    tags(
        (name = "tokens", description = "OAuth2 tokens and signing keys"),
        (name = "users", description = "User accounts (admin)"),
        (name = "clients", description = "API clients (admin)"),
    )
)]
pub struct ApiDoc;

/// Documents how tokens are had: the OAuth2 password and client-credentials
/// flows at `POST /auth/token` (the `bearer` scheme is how they are sent).
#[derive(Debug)]
pub struct OAuthFlows;

impl utoipa::Modify for OAuthFlows {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ClientCredentials, Flow, OAuth2, Password, Scopes, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::new([
                Flow::Password(Password::new("/auth/token", Scopes::new())),
                Flow::ClientCredentials(ClientCredentials::new("/auth/token", Scopes::new())),
            ])),
        );
    }
}

/// Registers the routes of this service; those of [`IDEMPOTENT_PATHS`]
/// behind `idempotency`.
pub fn routes(cfg: &mut web::ServiceConfig, idempotency: Idempotency<PgIdempotencyStore>) {
    cfg.service(
        web::resource("/auth/token")
            .app_data(token_form_config())
            .route(web::post().to(token)),
    )
    .service(
        web::resource("/auth/logout")
            .app_data(logout_form_config())
            .route(web::post().to(logout)),
    )
    .route("/.well-known/jwks.json", web::get().to(jwks))
    .route("/auth/keys/rotate", web::post().to(rotate_keys))
    .route("/auth/me", web::get().to(me))
    .service(
        web::scope("")
            .wrap(idempotency)
            .route("/auth/users", web::post().to(create_user))
            .route("/auth/users", web::get().to(list_users))
            .route("/auth/users/{id}", web::get().to(get_user))
            .route("/auth/users/{id}", web::patch().to(update_user))
            .route("/auth/users/{id}/disable", web::post().to(disable_user))
            .route("/auth/clients", web::post().to(create_client))
            .route("/auth/clients", web::get().to(list_clients))
            .route("/auth/clients/{id}", web::patch().to(update_client))
            .route("/auth/clients/{id}/disable", web::post().to(disable_client))
            .route(
                "/auth/clients/{id}/secret",
                web::post().to(rotate_client_secret),
            ),
    );
}
