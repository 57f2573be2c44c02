//! The OAuth2 side: token endpoint (RFC 6749), logout, JWKS.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tramita_web::Problem;
use utoipa::ToSchema;

use super::browser::{BrowserClient, CSRF_HEADER};
use super::{ClientAddress, Tokens};
use crate::app::{
    ClientGrantError, IssuedTokens, PasswordGrantError, PasswordLogin, RefreshGrantError,
};
use crate::domain::retry_after_seconds;

/// Form of `POST /auth/token` (`application/x-www-form-urlencoded`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `password`, `refresh_token` or `client_credentials`.
    #[schema(value_type = GrantType, required = true, example = "password")]
    pub grant_type: Option<String>,
    /// For `password`.
    #[schema(nullable = false)]
    pub username: Option<String>,
    /// For `password`.
    #[schema(nullable = false)]
    pub password: Option<String>,
    /// For `refresh_token`.
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// For `client_credentials` when not sent with HTTP Basic. With the
    /// `password` and `refresh_token` grants, the web app's public client id
    /// (`tramita-web`, `AUTH_WEB_CLIENT_ID`) makes this a browser request:
    /// it must carry the header `X-Tramita-Web: 1`; the refresh token is set
    /// as the `HttpOnly`, `Secure`, `SameSite=Strict` cookie `tramita_refresh`
    /// (path `AUTH_REFRESH_COOKIE_PATH`) and left out of the body, and a
    /// `refresh_token` grant without the parameter takes it from that cookie.
    /// Any other value is ignored by these grants.
    #[schema(nullable = false, example = "tramita-web")]
    pub client_id: Option<String>,
    /// For `client_credentials` when not sent with HTTP Basic.
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
    /// Not supported: roles come from the account. Absent or empty only.
    #[schema(nullable = false, max_length = 0)]
    pub scope: Option<String>,
}

/// The grants of `POST /auth/token`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// A user's name and password.
    Password,
    /// A refresh token (a user's session goes on).
    RefreshToken,
    /// An API client's id and secret.
    ClientCredentials,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Signed JWT (EdDSA).
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// A new refresh token (user grants only, and not for the web client,
    /// which gets it as a cookie); the presented one is used up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An error of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type`, `invalid_scope` or `slow_down`.
    pub error: String,
    /// Human-readable explanation.
    pub error_description: String,
}

/// A refused token request.
#[derive(Debug, Clone)]
pub struct OAuthError {
    status: StatusCode,
    body: OAuthErrorBody,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            body: OAuthErrorBody {
                error: error.to_owned(),
                error_description: description.into(),
            },
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn throttled(retry_after: std::time::Duration, description: &str) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", description);
        error.retry_after = Some(retry_after_seconds(retry_after));
        error
    }

    fn busy() -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many logins are being verified; try again in a moment",
        );
        error.retry_after = Some(1);
        error
    }

    fn server_error(error: &anyhow::Error) -> Self {
        tracing::error!(error = format!("{error:#}"), "unexpected error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the error was logged; quote the x-request-id header when reporting it",
        )
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.error, self.body.error_description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tramita\""),
            ));
        }
        response.json(&self.body)
    }
}

/// The form config of the token endpoint: malformed forms are
/// `invalid_request`, in RFC 6749 shape.
pub fn token_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(8 * 1024)
        .error_handler(|error, _req| {
            OAuthError::invalid_request(format!(
                "send an application/x-www-form-urlencoded body without repeated parameters: {error}"
            ))
            .into()
        })
}

/// The form config of logout: malformed bodies are problems.
pub fn logout_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(8 * 1024)
        .error_handler(|error, _req| {
            Problem::bad_request(format!(
                "send refresh_token as a form or a JSON body: {error}"
            ))
            .into()
        })
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Client id and secret from `Authorization: Basic` (RFC 6749 §2.3.1:
/// each form-urlencoded, then base64).
fn basic_credentials(req: &HttpRequest) -> Option<Result<(String, String), OAuthError>> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let parsed = decoded.as_deref().and_then(|text| {
        let (id, secret) = text.split_once(':')?;
        Some((percent_decode(id)?, percent_decode(secret)?))
    });
    Some(parsed.ok_or_else(OAuthError::invalid_client))
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("the {name} parameter is required")))
}

/// The answer with the tokens: for the web client (`browser`) the refresh
/// token goes into its cookie instead of the body.
fn token_response(tokens: IssuedTokens, browser: Option<&BrowserClient>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    let refresh_token = match (browser, tokens.refresh_token) {
        (Some(browser), Some(token)) => {
            response.cookie(browser.cookie(token));
            None
        }
        (_, token) => token,
    };
    response.json(TokenResponse {
        access_token: tokens.access_token,
        token_type: "Bearer".into(),
        expires_in: tokens.expires_in,
        refresh_token,
    })
}

/// A refused refresh of the web client also removes its (spent) cookie.
fn without_cookie(error: OAuthError, browser: &BrowserClient) -> HttpResponse {
    let mut response = error.error_response();
    if let Err(error) = response.add_cookie(&browser.removal()) {
        tracing::warn!(error = %error, "the refresh cookie could not be removed");
    }
    response
}

/// Refuses a web-client request without the anti-CSRF header.
fn csrf_refusal() -> OAuthError {
    OAuthError::invalid_request(format!(
        "requests of the web client must carry the header {CSRF_HEADER}: 1"
    ))
}

/// Issues tokens (RFC 6749): `password`, `refresh_token` and
/// `client_credentials` grants. Failed logins and client authentications are
/// throttled per account and address, per address, and (more leniently) per
/// account.
#[utoipa::path(
    post, path = "/auth/token", tag = "tokens",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    params(
        ("x-tramita-web" = Option<String>, Header, description = "`1`: required with `client_id=tramita-web` (the web client), which cross-site requests cannot send"),
        ("tramita_refresh" = Option<String>, Cookie, description = "The web client's refresh token, set by an earlier answer; used by a `refresh_token` grant of the web client without the `refresh_token` parameter"),
    ),
    responses(
        (status = 200, description = "Tokens issued", body = TokenResponse, headers(("cache-control" = String, description = "no-store"), ("set-cookie" = String, description = "For the web client only: `tramita_refresh=<refresh token>; HttpOnly; SameSite=Strict; Secure; Path=/api/v1/auth`"))),
        (status = 400, description = "invalid_request (also: a web-client request without `X-Tramita-Web: 1`), invalid_grant (for the web client the cookie is removed), unsupported_grant_type or invalid_scope", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 429, description = "slow_down: too many failed logins or client authentications", body = OAuthErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "temporarily_unavailable: every password-hashing slot is busy", body = OAuthErrorBody, headers(("retry-after" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn token(
    req: HttpRequest,
    tokens: web::Data<Tokens>,
    address: web::Data<ClientAddress>,
    browser_client: web::Data<BrowserClient>,
    form: web::Form<TokenRequest>,
) -> Result<HttpResponse, OAuthError> {
    let form = form.into_inner();
    let grant = form.grant_type.as_deref();
    let browser = (matches!(grant, Some("password" | "refresh_token"))
        && browser_client.is(form.client_id.as_deref()))
    .then_some(browser_client.get_ref());
    if browser.is_some() && !BrowserClient::has_csrf_header(&req) {
        return Err(csrf_refusal());
    }
    if form.scope.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scopes are not supported; the roles of the account apply",
        ));
    }
    let grant = required(form.grant_type.clone(), "grant_type")?;
    match grant.as_str() {
        "password" => {
            let login = PasswordLogin {
                username: required(form.username, "username")?,
                password: required(form.password, "password")?,
                source: address.of(&req),
            };
            match tokens.password(login).await {
                Ok(issued) => Ok(token_response(issued, browser)),
                Err(PasswordGrantError::InvalidCredentials) => {
                    Err(OAuthError::invalid_grant("invalid username or password"))
                }
                Err(PasswordGrantError::Throttled { retry_after }) => Err(OAuthError::throttled(
                    retry_after,
                    "too many failed logins; wait before trying again",
                )),
                Err(PasswordGrantError::Busy) => Err(OAuthError::busy()),
                Err(PasswordGrantError::Unexpected(error)) => Err(OAuthError::server_error(&error)),
            }
        }
        "refresh_token" => {
            let presented = match browser {
                Some(browser) => match form
                    .refresh_token
                    .filter(|t| !t.is_empty())
                    .or_else(|| BrowserClient::refresh_token(&req))
                {
                    Some(token) => token,
                    None => {
                        return Ok(without_cookie(
                            OAuthError::invalid_grant("there is no session: sign in"),
                            browser,
                        ))
                    }
                },
                None => required(form.refresh_token, "refresh_token")?,
            };
            let refused = match tokens.refresh(&presented).await {
                Ok(issued) => return Ok(token_response(issued, browser)),
                Err(RefreshGrantError::InvalidGrant) => {
                    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
                }
                Err(RefreshGrantError::Unexpected(error)) => OAuthError::server_error(&error),
            };
            match browser {
                Some(browser) => Ok(without_cookie(refused, browser)),
                None => Err(refused),
            }
        }
        "client_credentials" => {
            let (client_id, secret) = match basic_credentials(&req) {
                Some(_) if form.client_id.is_some() || form.client_secret.is_some() => {
                    return Err(OAuthError::invalid_request(
                        "authenticate the client with HTTP Basic or the form, not both",
                    ))
                }
                Some(credentials) => credentials?,
                None => match (form.client_id, form.client_secret) {
                    (Some(id), Some(secret)) => (id, secret),
                    _ => return Err(OAuthError::invalid_client()),
                },
            };
            match tokens
                .client_credentials(&client_id, secret, &address.of(&req))
                .await
            {
                Ok(issued) => Ok(token_response(issued, None)),
                Err(ClientGrantError::InvalidClient) => Err(OAuthError::invalid_client()),
                Err(ClientGrantError::Throttled { retry_after }) => Err(OAuthError::throttled(
                    retry_after,
                    "too many failed client authentications; wait before trying again",
                )),
                Err(ClientGrantError::Busy) => Err(OAuthError::busy()),
                Err(ClientGrantError::Unexpected(error)) => Err(OAuthError::server_error(&error)),
            }
        }
        other => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!(
                "grant type {other:?} is not supported; use password, refresh_token or client_credentials"
            ),
        )),
    }
}

/// Body of `POST /auth/logout`, as a form or JSON.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LogoutRequest {
    /// The refresh token of the session to end (for the web client: absent,
    /// it is taken from the cookie).
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    /// `tramita-web` (`AUTH_WEB_CLIENT_ID`): the web client, whose session is
    /// the one of its refresh-token cookie; needs the header `X-Tramita-Web: 1`.
    #[schema(nullable = false, example = "tramita-web")]
    pub client_id: Option<String>,
}

/// Ends the session of a refresh token (its whole family). Answers 204 even
/// for an unknown token. For the web client the token comes from its cookie,
/// which the answer removes.
#[utoipa::path(
    post, path = "/auth/logout", tag = "tokens",
    request_body(content = LogoutRequest, content_type = "application/x-www-form-urlencoded"),
    params(
        ("x-tramita-web" = Option<String>, Header, description = "`1`: required with `client_id=tramita-web` (the web client)"),
        ("tramita_refresh" = Option<String>, Cookie, description = "The web client's refresh token"),
    ),
    responses(
        (status = 204, description = "The session is over (or never existed)", headers(("set-cookie" = String, description = "For the web client: removes `tramita_refresh` (`Max-Age=0`)"))),
        (status = 400, description = "No refresh token, an unreadable body, or a web-client request without `X-Tramita-Web: 1`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    req: HttpRequest,
    tokens: web::Data<Tokens>,
    browser_client: web::Data<BrowserClient>,
    body: web::Either<web::Form<LogoutRequest>, web::Json<LogoutRequest>>,
) -> Result<HttpResponse, Problem> {
    let body = match body {
        web::Either::Left(form) => form.into_inner(),
        web::Either::Right(json) => json.into_inner(),
    };
    let presented = body.refresh_token.filter(|t| !t.is_empty());
    if !browser_client.is(body.client_id.as_deref()) {
        let token =
            presented.ok_or_else(|| Problem::bad_request("the refresh_token field is required"))?;
        tokens
            .logout(&token)
            .await
            .map_err(|e| Problem::internal_from(&e))?;
        return Ok(HttpResponse::NoContent().finish());
    }
    if !BrowserClient::has_csrf_header(&req) {
        return Err(Problem::bad_request(format!(
            "requests of the web client must carry the header {CSRF_HEADER}: 1"
        )));
    }
    if let Some(token) = presented.or_else(|| BrowserClient::refresh_token(&req)) {
        tokens
            .logout(&token)
            .await
            .map_err(|e| Problem::internal_from(&e))?;
    }
    Ok(HttpResponse::NoContent()
        .cookie(browser_client.removal())
        .finish())
}

/// A JSON Web Key Set (RFC 7517) of Ed25519 public keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JwksDoc {
    /// Keys: `{kty: OKP, crv: Ed25519, alg: EdDSA, use: sig, kid, x}`.
    pub keys: Vec<serde_json::Value>,
}

/// The public signing keys: the current one and those retired less than
/// the access-token lifetime plus a minute ago.
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "The key set", body = JwksDoc))
)]
pub async fn jwks(tokens: web::Data<Tokens>) -> HttpResponse {
    // Other replicas may have rotated: look at most once a second.
    tokens
        .keys()
        .reload_if_older_than(std::time::Duration::from_secs(1))
        .await;
    let set = tokens.keys().public_keys().read().await.clone();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(set)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(percent_decode("a%3Ab+c").as_deref(), Some("a:b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
