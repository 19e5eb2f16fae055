//! The web boundary's error type: each variant maps to a status and an error page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

/// Errors a handler can end with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not logged in: HTML requests go to `/login`, JSON ones get 401.
    #[error("login required")]
    LoginRequired { json: bool },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed but refused (422).
    #[error("{0}")]
    Unprocessable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<crate::invalidations::InvalidationError> for AppError {
    fn from(e: crate::invalidations::InvalidationError) -> Self {
        use crate::invalidations::InvalidationError as E;
        match e {
            E::NotFound(_) => Self::NotFound(e.to_string()),
            E::NothingToRetry(m) => Self::BadRequest(m),
            E::NotAllowed(m) => Self::Unprocessable(m),
            E::Settings(_) => Self::Internal(e.into()),
            E::Store(e) => e.into(),
        }
    }
}

impl From<actix_session::SessionInsertError> for AppError {
    fn from(e: actix_session::SessionInsertError) -> Self {
        Self::Internal(anyhow::anyhow!("session: {e}"))
    }
}

impl From<actix_session::SessionGetError> for AppError {
    fn from(e: actix_session::SessionGetError) -> Self {
        Self::Internal(anyhow::anyhow!("session: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::LoginRequired { json: true } => StatusCode::UNAUTHORIZED,
            Self::LoginRequired { json: false } => StatusCode::SEE_OTHER,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::LoginRequired { json: false } => {
                return HttpResponse::SeeOther()
                    .insert_header(("Location", "/login"))
                    .finish();
            }
            Self::LoginRequired { json: true } => {
                return HttpResponse::Unauthorized()
                    .json(serde_json::json!({"error": "login required"}));
            }
            Self::Internal(e) => tracing::error!(error = ?e, "request failed"),
            _ => {}
        }
        let message = match self {
            Self::Internal(_) => {
                "Something went wrong on our side. The details are in the server log.".to_string()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message: &message,
        };
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(page.render().unwrap_or(message))
    }
}
