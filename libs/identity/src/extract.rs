//! The actix-web extractor for bearer tokens.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use tramita_web::Problem;

use crate::validator::{TokenError, TokenValidator};
use crate::Principal;

/// A request's principal, extracted from `Authorization: Bearer <token>`
/// and validated with the app's `web::Data<TokenValidator>`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// A refused token, answered as a problem with `WWW-Authenticate`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub TokenError);

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self.0 {
            TokenError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let problem = if status == StatusCode::UNAUTHORIZED {
            Problem::new(status, "unauthorized", "Unauthorized").with_detail(self.0.to_string())
        } else {
            Problem::new(status, "unavailable", "Service unavailable")
                .with_detail("the token cannot be checked right now; retry shortly")
        };
        let mut response = problem.error_response();
        let challenge = match self.0 {
            TokenError::Missing => "Bearer".to_owned(),
            _ => format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.0
            ),
        };
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut actix_web::dev::Payload) -> Self::Future {
        let validator = req.app_data::<web::Data<TokenValidator>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        Box::pin(async move {
            let validator = validator.expect("a TokenValidator is registered as app data");
            let token = token.ok_or(AuthError(TokenError::Missing))?;
            validator
                .validate(&token)
                .await
                .map(Authenticated)
                .map_err(AuthError)
        })
    }
}
