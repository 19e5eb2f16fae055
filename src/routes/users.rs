//! User management (admins): add, change role, disable/enable, reset password.

use super::{Nav, render, see_other};
use crate::domain::username::check_username;
use crate::error::AppError;
use crate::password;
use crate::session::{AdminUser, CsrfForm};
use crate::state::AppState;
use crate::store::{Role, StoreError, User};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "users.html")]
pub struct UsersPage {
    nav: Nav,
    users: Vec<User>,
    me: i64,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn page(
    state: &AppState,
    admin: &crate::session::CurrentUser,
    error: Option<String>,
    notice: Option<String>,
) -> Result<UsersPage, AppError> {
    Ok(UsersPage {
        nav: Nav::from(admin),
        users: state.store.list_users().await?,
        me: admin.user.id,
        error,
        notice,
    })
}

pub async fn list(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, AppError> {
    let notice = query.done.as_deref().map(|d| match d {
        "add" => "User added.",
        "role" => "Role changed.",
        "disable" => "User disabled; their open sessions have ended.",
        "enable" => "User enabled.",
        "password" => "Password reset; the user's open sessions have ended.",
        _ => "Done.",
    });
    render(
        StatusCode::OK,
        &page(&state, &admin, None, notice.map(String::from)).await?,
    )
}

#[derive(Deserialize)]
pub struct UserForm {
    action: String,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

/// Why a change is refused, shown to the admin with 422.
async fn apply(
    state: &AppState,
    me: i64,
    form: UserForm,
) -> Result<Result<&'static str, String>, AppError> {
    let store = &state.store;
    if form.action == "add" {
        let username = form.username.trim().to_string();
        let role = Role::parse(&form.role).ok_or("Choose the role admin or user.")?;
        if let Err(e) = check_username(&username).and_then(|()| password::check_new(&form.password))
        {
            return Ok(Err(e));
        }
        let pw = form.password;
        let hash = password::spawn_blocking(move || password::hash(&pw)).await?;
        return match store.create_user(&username, &hash, role).await {
            Ok(_) => Ok(Ok("add")),
            Err(StoreError::Conflict(message)) => Ok(Err(message)),
            Err(e) => Err(e.into()),
        };
    }
    let Some(target) = (match form.user_id {
        Some(id) => store.get_user(id).await?,
        None => None,
    }) else {
        return Ok(Err("No such user.".into()));
    };
    match form.action.as_str() {
        "role" => {
            let role = Role::parse(&form.role).ok_or("Choose the role admin or user.")?;
            if !store.set_role(target.id, role).await? {
                return Ok(Err("The last enabled admin cannot be made a user.".into()));
            }
            Ok(Ok("role"))
        }
        "disable" => {
            if target.id == me {
                return Ok(Err("You cannot disable your own account.".into()));
            }
            if !store.set_disabled(target.id, true).await? {
                return Ok(Err("The last enabled admin cannot be disabled.".into()));
            }
            Ok(Ok("disable"))
        }
        "enable" => {
            store.set_disabled(target.id, false).await?;
            Ok(Ok("enable"))
        }
        "password" => {
            if let Err(e) = password::check_new(&form.password) {
                return Ok(Err(e));
            }
            let pw = form.password;
            let hash = password::spawn_blocking(move || password::hash(&pw)).await?;
            store.set_password(target.id, &hash).await?;
            Ok(Ok("password"))
        }
        other => Ok(Err(format!("Unknown action \"{other}\"."))),
    }
}

impl From<&str> for AppError {
    fn from(message: &str) -> Self {
        AppError::BadRequest(message.to_string())
    }
}

pub async fn change(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<UserForm>,
) -> Result<HttpResponse, AppError> {
    match apply(&state, admin.user.id, form).await {
        Ok(Ok(done)) => {
            tracing::info!(admin = %admin.user.username, action = done, "user changed");
            // Resetting one's own password ends one's own session too.
            Ok(see_other(&format!("/users?done={done}")))
        }
        Ok(Err(error)) | Err(AppError::BadRequest(error)) => render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &page(&state, &admin, Some(error), None).await?,
        ),
        Err(e) => Err(e),
    }
}
