//! Account administration (admin role) and `GET /auth/me`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_identity::{Authenticated, Principal, Role};
use tramita_web::{Fields, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{Accounts, Tokens};
use crate::app::{
    AccountError, ChangeUserCommand, RegisterClientCommand, RegisterError, RegisterUserCommand,
};
use crate::domain::{
    ApiClient, ClientChange, ClientId, ClientName, DisplayName, Email, NewPassword, Roles, User,
    UserId, Username,
};

fn admin(principal: &Principal) -> Result<(), Problem> {
    principal.require(&[Role::Admin])
}

impl From<RegisterError> for Problem {
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::Duplicate(what) => Problem::conflict(format!("{what} is already taken")),
            RegisterError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<AccountError> for Problem {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::NotFound => Problem::not_found("no account with this id"),
            AccountError::LastAdmin => Problem::conflict(
                "this would leave no enabled admin: enable or create another admin first",
            ),
            AccountError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

/// Paging of lists: `limit` 1 to 100 (default 50) and the `cursor` of the
/// previous page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page: the last username or client id
    /// it showed.
    #[param(pattern = r"^[a-z0-9._-]{1,64}$")]
    pub cursor: Option<String>,
}

impl PageQuery {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 100;

    fn parse(&self) -> Result<(u32, Option<String>), Problem> {
        let mut fields = Fields::default();
        let limit = self.limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            fields.push("limit", "must be between 1 and 100");
        }
        // The cursor is the last key shown: any text of the documented
        // pattern is a place in the list.
        let after = fields
            .optional("cursor", self.cursor.as_deref(), |raw: &str| {
                let key = (1..=64).contains(&raw.len())
                    && raw.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    });
                key.then(|| raw.to_owned())
                    .ok_or("is not a cursor of this list")
            })
            .flatten();
        fields.finish()?;
        Ok((limit, after))
    }
}

fn next_cursor(page_len: usize, limit: u32, last: Option<&str>) -> Option<String> {
    (page_len == limit as usize)
        .then(|| last.map(str::to_owned))
        .flatten()
}

/// A role.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// Administrator.
    Admin,
    /// Clerk.
    Clerk,
    /// Validator.
    Validator,
    /// Reader.
    Reader,
}

/// Body of `POST /auth/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 3 to 64 letters, digits and `. _ -`, starting with a letter or a
    /// digit; unique regardless of case.
    #[schema(value_type = String, required = true, example = "ana.garcia", pattern = r"^\s*[A-Za-z0-9][A-Za-z0-9._-]{2,63}\s*$")]
    pub username: Option<String>,
    /// `Surname, Name`: one comma, text on both sides, one line.
    #[schema(value_type = String, required = true, example = "García López, Ana", max_length = 199, pattern = r"^[^,\u0000-\u001F\u007F-\u009F]*[^\s,\u0000-\u001F\u007F-\u009F][^,\u0000-\u001F\u007F-\u009F]*,[^,\u0000-\u001F\u007F-\u009F]*[^\s,\u0000-\u001F\u007F-\u009F][^,\u0000-\u001F\u007F-\u009F]*$")]
    pub display_name: Option<String>,
    /// E-mail.
    #[schema(value_type = String, required = true, example = "ana.garcia@example.org", max_length = 254, pattern = r"^\s*[^@\s\u0000-\u001F\u007F-\u009F]+@[^@\s.\u0000-\u001F\u007F-\u009F][^@\s\u0000-\u001F\u007F-\u009F]*\.[^@\s\u0000-\u001F\u007F-\u009F]*[^@\s.\u0000-\u001F\u007F-\u009F]\s*$")]
    pub email: Option<String>,
    /// At least one of admin, clerk, validator, reader.
    #[schema(value_type = Vec<RoleName>, required = true, min_items = 1, example = json!(["clerk"]))]
    pub roles: Option<Vec<String>>,
    /// 10 to 256 characters, not all blank.
    #[schema(value_type = String, required = true, min_length = 10, max_length = 256, pattern = r"^[\s\S]*\S[\s\S]*$")]
    pub password: Option<String>,
}

/// Body of `PATCH /auth/users/{id}`; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// `Surname, Name`: one comma, text on both sides, one line.
    #[schema(
        max_length = 199,
        pattern = r"^[^,\u0000-\u001F\u007F-\u009F]*[^\s,\u0000-\u001F\u007F-\u009F][^,\u0000-\u001F\u007F-\u009F]*,[^,\u0000-\u001F\u007F-\u009F]*[^\s,\u0000-\u001F\u007F-\u009F][^,\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub display_name: Option<String>,
    /// E-mail.
    #[schema(
        max_length = 254,
        pattern = r"^\s*[^@\s\u0000-\u001F\u007F-\u009F]+@[^@\s.\u0000-\u001F\u007F-\u009F][^@\s\u0000-\u001F\u007F-\u009F]*\.[^@\s\u0000-\u001F\u007F-\u009F]*[^@\s.\u0000-\u001F\u007F-\u009F]\s*$"
    )]
    pub email: Option<String>,
    /// At least one role.
    #[schema(value_type = Option<Vec<RoleName>>, min_items = 1)]
    pub roles: Option<Vec<String>>,
    /// `false` disables the user and ends its sessions.
    pub enabled: Option<bool>,
    /// A new password (10 to 256 characters, not all blank); ends the
    /// user's sessions.
    #[schema(min_length = 10, max_length = 256, pattern = r"^[\s\S]*\S[\s\S]*$")]
    pub password: Option<String>,
}

/// A user (never its password hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// Id: the `sub` of its tokens.
    pub id: Uuid,
    /// Login name, lowercase.
    pub username: String,
    /// `Surname, Name`.
    pub display_name: String,
    /// E-mail.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether the user may log in.
    pub enabled: bool,
    /// Grows with every change.
    pub version: i64,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id.0,
            username: user.username.as_str().to_owned(),
            display_name: user.display_name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            roles: user.roles.names(),
            enabled: user.enabled,
            version: user.version,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// A page of users, by username.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// The users.
    pub items: Vec<UserResponse>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn roles_of(raw: &[String]) -> Result<Roles, crate::domain::ValueError> {
    Roles::parse(raw)
}

/// Registers a user and announces it on `auth.events`.
#[utoipa::path(
    post, path = "/auth/users", tag = "users",
    request_body = CreateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = UserResponse, headers(("location" = String, description = "URL of the new user"))),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_user(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let body = body.into_inner();
    let mut fields = Fields::default();
    let username = fields.required("username", body.username.as_deref(), Username::parse);
    let display_name = fields.required(
        "display_name",
        body.display_name.as_deref(),
        DisplayName::parse,
    );
    let email = fields.required("email", body.email.as_deref(), Email::parse);
    let roles = match &body.roles {
        None => {
            fields.push("roles", "is required");
            None
        }
        Some(raw) => fields
            .optional("roles", Some(raw.as_slice()), roles_of)
            .flatten(),
    };
    let password = fields.required("password", body.password.as_deref(), NewPassword::parse);
    fields.finish()?;
    let (Some(username), Some(display_name), Some(email), Some(roles), Some(password)) =
        (username, display_name, email, roles, password)
    else {
        unreachable!("every field parsed when there are no field errors");
    };
    let user = accounts
        .register_user(
            RegisterUserCommand {
                username,
                display_name,
                email,
                roles,
                password,
            },
            Some(&principal.subject),
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/auth/users/{}", user.id.0)))
        .json(UserResponse::from(user)))
}

/// Lists users by username, a page at a time.
#[utoipa::path(
    get, path = "/auth/users", tag = "users",
    params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_users(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let (limit, after) = query.parse()?;
    let users = accounts
        .users(after.as_deref(), limit)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    let next_cursor = next_cursor(
        users.len(),
        limit,
        users.last().map(|u| u.username.as_str()),
    );
    Ok(HttpResponse::Ok().json(UserPage {
        items: users.into_iter().map(UserResponse::from).collect(),
        next_cursor,
    }))
}

/// Reads a user.
#[utoipa::path(
    get, path = "/auth/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let user = accounts.user(UserId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// Changes a user and announces it; disabling it or a new password ends its
/// sessions.
#[utoipa::path(
    patch, path = "/auth/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed user", body = UserResponse),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no enabled admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<Uuid>,
    body: web::Json<UpdateUserRequest>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let body = body.into_inner();
    let mut fields = Fields::default();
    let display_name = fields.optional(
        "display_name",
        body.display_name.as_deref(),
        DisplayName::parse,
    );
    let email = fields.optional("email", body.email.as_deref(), Email::parse);
    let roles = fields.optional("roles", body.roles.as_deref(), roles_of);
    let password = fields.optional("password", body.password.as_deref(), NewPassword::parse);
    fields.finish()?;
    let (Some(display_name), Some(email), Some(roles), Some(password)) =
        (display_name, email, roles, password)
    else {
        unreachable!("every field parsed when there are no field errors");
    };
    let user = accounts
        .change_user(
            UserId(id.into_inner()),
            ChangeUserCommand {
                display_name,
                email,
                roles,
                enabled: body.enabled,
                password,
            },
            Some(&principal.subject),
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// Disables a user, ends its sessions and announces it.
#[utoipa::path(
    post, path = "/auth/users/{id}/disable", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The disabled user", body = UserResponse),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no enabled admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable_user(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let user = accounts
        .disable_user(UserId(id.into_inner()), Some(&principal.subject))
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(user)))
}

/// Body of `POST /auth/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientRequest {
    /// 3 to 64 lowercase letters, digits and `. _ -`, starting with a
    /// letter or a digit; unique.
    #[schema(value_type = String, required = true, example = "index-service", pattern = r"^\s*[a-z0-9][a-z0-9._-]{2,63}\s*$")]
    pub client_id: Option<String>,
    /// What it is for: 1 to 200 characters, one line.
    #[schema(value_type = String, required = true, example = "Read model rebuilds", max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    /// At least one role.
    #[schema(value_type = Vec<RoleName>, required = true, min_items = 1, example = json!(["reader"]))]
    pub roles: Option<Vec<String>>,
}

/// Body of `PATCH /auth/clients/{id}`; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClientRequest {
    /// What it is for: 1 to 200 characters, one line.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    /// At least one role.
    #[schema(value_type = Option<Vec<RoleName>>, min_items = 1)]
    pub roles: Option<Vec<String>>,
    /// `false` stops it getting tokens.
    pub enabled: Option<bool>,
}

/// An API client (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientResponse {
    /// Client id: the `sub` of its tokens.
    pub client_id: String,
    /// What it is for.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether it may get tokens.
    pub enabled: bool,
    /// Grows with every change.
    pub version: i64,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
}

impl From<ApiClient> for ClientResponse {
    fn from(client: ApiClient) -> Self {
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

/// An API client with its new secret (on registration or a secret
/// rotation), shown only in this response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedClientResponse {
    /// The client.
    #[serde(flatten)]
    pub client: ClientResponse,
    /// The secret (only its digest is kept; it cannot be shown again).
    pub client_secret: String,
}

/// A page of API clients, by id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientPage {
    /// The clients.
    pub items: Vec<ClientResponse>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn client_id(raw: &str) -> Result<ClientId, Problem> {
    ClientId::parse(raw).map_err(|_| Problem::not_found("no account with this id"))
}

/// Registers an API client; its generated secret is in this response only.
#[utoipa::path(
    post, path = "/auth/clients", tag = "clients",
    request_body = CreateClientRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedClientResponse, headers(("location" = String, description = "URL of the new client"))),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The client id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_client(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    body: web::Json<CreateClientRequest>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let body = body.into_inner();
    let mut fields = Fields::default();
    let id = fields.required("client_id", body.client_id.as_deref(), ClientId::parse);
    let name = fields.required("name", body.name.as_deref(), ClientName::parse);
    let roles = match &body.roles {
        None => {
            fields.push("roles", "is required");
            None
        }
        Some(raw) => fields
            .optional("roles", Some(raw.as_slice()), roles_of)
            .flatten(),
    };
    fields.finish()?;
    let (Some(id), Some(name), Some(roles)) = (id, name, roles) else {
        unreachable!("every field parsed when there are no field errors");
    };
    let registered = accounts
        .register_client(
            RegisterClientCommand { id, name, roles },
            Some(&principal.subject),
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/auth/clients/{}", registered.client.id.as_str()),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CreatedClientResponse {
            client: ClientResponse::from(registered.client),
            client_secret: registered.secret,
        }))
}

/// Lists API clients by id, a page at a time.
#[utoipa::path(
    get, path = "/auth/clients", tag = "clients",
    params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of clients", body = ClientPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_clients(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let (limit, after) = query.parse()?;
    let clients = accounts
        .clients(after.as_deref(), limit)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    let next_cursor = next_cursor(clients.len(), limit, clients.last().map(|c| c.id.as_str()));
    Ok(HttpResponse::Ok().json(ClientPage {
        items: clients.into_iter().map(ClientResponse::from).collect(),
        next_cursor,
    }))
}

/// Changes an API client.
#[utoipa::path(
    patch, path = "/auth/clients/{id}", tag = "clients",
    params(("id" = String, Path, description = "Client id", pattern = r"^[a-z0-9][a-z0-9._-]{2,63}$")),
    request_body = UpdateClientRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed client", body = ClientResponse),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_client(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<String>,
    body: web::Json<UpdateClientRequest>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let id = client_id(&id)?;
    let body = body.into_inner();
    let mut fields = Fields::default();
    let name = fields.optional("name", body.name.as_deref(), ClientName::parse);
    let roles = fields.optional("roles", body.roles.as_deref(), roles_of);
    fields.finish()?;
    let (Some(name), Some(roles)) = (name, roles) else {
        unreachable!("every field parsed when there are no field errors");
    };
    let client = accounts
        .change_client(
            &id,
            ClientChange {
                name,
                roles,
                enabled: body.enabled,
            },
            Some(&principal.subject),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ClientResponse::from(client)))
}

/// Disables an API client: it gets no more tokens.
#[utoipa::path(
    post, path = "/auth/clients/{id}/disable", tag = "clients",
    params(("id" = String, Path, description = "Client id", pattern = r"^[a-z0-9][a-z0-9._-]{2,63}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The disabled client", body = ClientResponse),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable_client(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let id = client_id(&id)?;
    let client = accounts
        .change_client(
            &id,
            ClientChange {
                enabled: Some(false),
                ..ClientChange::default()
            },
            Some(&principal.subject),
        )
        .await?;
    Ok(HttpResponse::Ok().json(ClientResponse::from(client)))
}

/// Gives an API client a new generated secret, shown only in this response;
/// the previous secret stops working at once. Announced on `auth.events` as
/// `auth.ClientSecretRotated.v1`. The answer is never stored for an
/// `Idempotency-Key` (it carries a secret): a repeated request rotates
/// again, and the secret of the last answer is the one that works.
#[utoipa::path(
    post, path = "/auth/clients/{id}/secret", tag = "clients",
    params(("id" = String, Path, description = "Client id", pattern = r"^[a-z0-9][a-z0-9._-]{2,63}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The client and its new secret", body = CreatedClientResponse, headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such client", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_client_secret(
    Authenticated(principal): Authenticated,
    accounts: web::Data<Accounts>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let id = client_id(&id)?;
    let rotated = accounts
        .rotate_client_secret(&id, Some(&principal.subject))
        .await?;
    tracing::info!(client_id = id.as_str(), actor = %principal.subject, "client secret rotated by an admin");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CreatedClientResponse {
            client: ClientResponse::from(rotated.client),
            client_secret: rotated.secret,
        }))
}

/// Who the token belongs to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    /// User id, or client id.
    pub subject: String,
    /// Display name, or client id.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
}

/// The caller as its token says.
#[utoipa::path(
    get, path = "/auth/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(Authenticated(principal): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(MeResponse {
        roles: principal
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        subject: principal.subject,
        name: principal.name,
    })
}

/// The key now signing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RotatedKeyResponse {
    /// Its key id (`kid`).
    pub kid: String,
}

/// Retires the current signing key and makes a new one current. Tokens
/// signed with the old key stay valid until they expire.
#[utoipa::path(
    post, path = "/auth/keys/rotate", tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new current key", body = RotatedKeyResponse),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn rotate_keys(
    Authenticated(principal): Authenticated,
    tokens: web::Data<Tokens>,
) -> Result<HttpResponse, Problem> {
    admin(&principal)?;
    let kid = tokens
        .keys()
        .rotate()
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    tracing::info!(kid, actor = %principal.subject, "signing key rotated by an admin");
    Ok(HttpResponse::Ok().json(RotatedKeyResponse { kid }))
}
