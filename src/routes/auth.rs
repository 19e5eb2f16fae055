//! First-run setup, login and logout.

use super::{render, see_other};
use crate::domain::throttle;
use crate::domain::username::check_username;
use crate::error::AppError;
use crate::password;
use crate::session::{CsrfForm, CurrentUser, NoFields, TypedSession};
use crate::state::AppState;
use crate::store::now_millis;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use askama_web::WebTemplate;
use serde::Deserialize;

pub async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    state.store.ping().await?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ok"))
}

/// `/` goes to the asset list (or to setup on a fresh install).
pub async fn home(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    Ok(if state.store.count_users().await? == 0 {
        see_other("/setup")
    } else {
        see_other("/assets")
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "setup.html")]
pub struct SetupPage {
    csrf: String,
    username: String,
    error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    csrf: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn setup_is_open(state: &AppState) -> Result<(), AppError> {
    if state.store.count_users().await? == 0 {
        Ok(())
    } else {
        Err(AppError::NotFound(
            "Setup is done: an admin account exists. Log in instead.".into(),
        ))
    }
}

pub async fn setup_form(
    state: web::Data<AppState>,
    session: TypedSession,
) -> Result<SetupPage, AppError> {
    setup_is_open(&state).await?;
    Ok(SetupPage {
        csrf: session.csrf_token()?,
        username: String::new(),
        error: None,
    })
}

pub async fn setup(
    state: web::Data<AppState>,
    session: TypedSession,
    CsrfForm(form): CsrfForm<Credentials>,
) -> Result<HttpResponse, AppError> {
    setup_is_open(&state).await?;
    let username = form.username.trim().to_string();
    if let Err(error) = check_username(&username).and_then(|()| password::check_new(&form.password))
    {
        let page = SetupPage {
            csrf: session.csrf_token()?,
            username,
            error: Some(error),
        };
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let pw = form.password;
    let hash = password::spawn_blocking(move || password::hash(&pw)).await?;
    let Some(id) = state.store.create_first_admin(&username, &hash).await? else {
        return Err(AppError::NotFound(
            "Setup is done: an admin account exists.".into(),
        ));
    };
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("new user vanished"))?;
    session.log_in(&user)?;
    tracing::info!(username = %user.username, "first admin created");
    Ok(see_other("/settings"))
}

pub async fn login_form(
    state: web::Data<AppState>,
    session: TypedSession,
) -> Result<HttpResponse, AppError> {
    if state.store.count_users().await? == 0 {
        return Ok(see_other("/setup"));
    }
    let page = LoginPage {
        csrf: session.csrf_token()?,
        username: String::new(),
        error: None,
    };
    render(StatusCode::OK, &page)
}

pub async fn login(
    state: web::Data<AppState>,
    session: TypedSession,
    req: HttpRequest,
    CsrfForm(form): CsrfForm<Credentials>,
) -> Result<HttpResponse, AppError> {
    let username = form.username.trim().to_string();
    // The peer address, not a forwarded header a client could forge.
    let client_ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let now = now_millis();
    // The attempt counts as a failure until the password proves otherwise.
    let attempts = state
        .store
        .begin_login_attempt(&username, &client_ip, now - throttle::WINDOW_MILLIS)
        .await?;
    if let Some(wait) = throttle::wait_seconds(
        state.config.login_max_failures,
        now,
        attempts.by_user - 1,
        attempts.oldest_user,
        attempts.by_client - 1,
        attempts.oldest_client,
    ) {
        // A refused attempt checks no password, so it does not count (nor extend the wait).
        state.store.forget_login_attempt(attempts.id).await?;
        tracing::warn!(%username, %client_ip, "login throttled");
        let error = format!(
            "Too many failed logins for this user name or from this address. Try again in {}.",
            throttle::describe_wait(wait)
        );
        let page = LoginPage {
            csrf: session.csrf_token()?,
            username,
            error: Some(error),
        };
        let mut response = render(StatusCode::TOO_MANY_REQUESTS, &page)?;
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(wait),
        );
        return Ok(response);
    }
    let user = state.store.find_user_by_name(&username).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let pw = form.password;
    // Unknown users are checked against a dummy hash so both take the same time.
    let valid = password::spawn_blocking(move || password::verify(&pw, stored.as_deref())).await;
    match user {
        Some(user) if valid && !user.disabled => {
            state.store.forget_login_attempt(attempts.id).await?;
            state
                .store
                .clear_login_failures(&username, &client_ip)
                .await?;
            session.log_in(&user)?;
            tracing::info!(username = %user.username, "logged in");
            Ok(see_other("/assets"))
        }
        found => {
            let error = if valid && found.is_some_and(|u| u.disabled) {
                "This account is disabled. Ask an admin to enable it."
            } else {
                "Wrong user name or password."
            };
            tracing::info!(%username, "login refused");
            let page = LoginPage {
                csrf: session.csrf_token()?,
                username,
                error: Some(error.into()),
            };
            render(StatusCode::UNAUTHORIZED, &page)
        }
    }
}

pub async fn logout(current: CurrentUser, CsrfForm(_): CsrfForm<NoFields>) -> HttpResponse {
    current.session.log_out();
    see_other("/login")
}
