//! API tokens: every user names, creates (shown once) and revokes their own.

use super::{Nav, fmt_time, render};
use crate::error::AppError;
use crate::session::{CsrfForm, CurrentUser};
use crate::state::AppState;
use crate::store::ApiToken;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

/// One token as the page lists it.
pub struct TokenRow {
    id: i64,
    name: String,
    created: String,
    last_used: String,
    revoked: Option<String>,
}

impl From<ApiToken> for TokenRow {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created: fmt_time(t.created_at),
            last_used: t.last_used_at.map_or_else(|| "never".into(), fmt_time),
            revoked: t.revoked_at.map(fmt_time),
        }
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    nav: Nav,
    tokens: Vec<TokenRow>,
    /// A token just created: shown this once.
    created: Option<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
    name: String,
}

async fn page(
    state: &AppState,
    current: &CurrentUser,
    created: Option<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
    name: String,
) -> Result<TokensPage, AppError> {
    Ok(TokensPage {
        nav: Nav::from(current),
        tokens: state
            .store
            .api_tokens_of(current.user.id)
            .await?
            .into_iter()
            .map(TokenRow::from)
            .collect(),
        created,
        notice,
        error,
        name,
    })
}

/// `GET /tokens`.
pub async fn list(
    current: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    render(
        StatusCode::OK,
        &page(&state, &current, None, None, None, String::new()).await?,
    )
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    token_id: Option<i64>,
}

/// `POST /tokens`: `action=create` with a name (the token is on the answer, once) or
/// `action=revoke` with a token id.
pub async fn change(
    current: CurrentUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> Result<HttpResponse, AppError> {
    match form.action.as_str() {
        "create" => {
            match crate::invalidations::create_api_token(&state.store, &current.user, &form.name)
                .await?
            {
                Ok(token) => {
                    tracing::info!(user = %current.user.username, "API token created");
                    let name = form.name.trim().to_string();
                    render(
                        StatusCode::OK,
                        &page(
                            &state,
                            &current,
                            Some((name, token)),
                            None,
                            None,
                            String::new(),
                        )
                        .await?,
                    )
                }
                Err(message) => render(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &page(&state, &current, None, None, Some(message), form.name).await?,
                ),
            }
        }
        "revoke" => {
            let id = form.token_id.ok_or_else(|| {
                AppError::BadRequest("Which token? The form has no token id.".into())
            })?;
            if !state.store.revoke_api_token(current.user.id, id).await? {
                return Err(AppError::NotFound(
                    "You have no such token, or it is already revoked.".into(),
                ));
            }
            tracing::info!(user = %current.user.username, token_id = id, "API token revoked");
            render(
                StatusCode::OK,
                &page(
                    &state,
                    &current,
                    None,
                    Some("Token revoked: it is refused from now on.".into()),
                    None,
                    String::new(),
                )
                .await?,
            )
        }
        other => Err(AppError::BadRequest(format!(
            "\"{other}\" is not something this page does."
        ))),
    }
}
