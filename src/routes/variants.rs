//! Every variant of an asset (admin): how an asset maps to what the cache knows — listed URLs,
//! a cache tag, a path prefix — and *Purge everything*, a separately confirmed action.

use super::{Nav, render, see_other};
use crate::domain::variants::{Scope, TAG_HEADERS, Variants};
use crate::error::AppError;
use crate::invalidations::{self, InvalidationError};
use crate::session::{AdminUser, CsrfForm, CurrentUser, random_token};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

/// Flash set by a successful save.
const SAVED: &str = "variants_saved";

/// One choice of mapping, and whether the active provider can send it.
pub struct Choice {
    pub value: &'static str,
    pub label: &'static str,
    pub checked: bool,
    /// Why the active provider cannot use it (`None`: it can).
    pub refused: Option<String>,
}

#[derive(Template)]
#[template(path = "variants.html")]
pub struct VariantsPage {
    nav: Nav,
    provider: String,
    choices: Vec<Choice>,
    headers: Vec<(&'static str, &'static str, bool)>,
    tag_header: String,
    saved: bool,
    error: Option<String>,
    /// `None` when the provider cannot purge everything; then `everything_refused` says why.
    everything_sites: Option<Vec<String>>,
    everything_refused: String,
    everything_error: Option<String>,
    /// What the admin must type to confirm: the publish server's host.
    confirm_word: String,
    idempotency_key: String,
}

/// The stored mapping (listed URLs when never set) and header.
pub async fn load(state: &AppState) -> Result<(Variants, String), AppError> {
    let (variants, header) = state.store.load_variants().await?;
    let header = if header.is_empty() {
        TAG_HEADERS[0].0.to_string()
    } else {
        header
    };
    Ok((Variants::parse(&variants).unwrap_or_default(), header))
}

async fn page(
    state: &AppState,
    admin: &CurrentUser,
    variants: Variants,
    tag_header: String,
) -> Result<VariantsPage, AppError> {
    let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
    let settings = invalidations::load_settings(state).await?;
    let choices = Variants::CHOICES
        .iter()
        .map(|(value, label)| {
            let choice = Variants::parse(value).unwrap_or_default();
            Choice {
                value,
                label,
                checked: choice == variants,
                refused: choice
                    .scope()
                    .and_then(|s| invalidations::scope_refusal(&snapshot, s)),
            }
        })
        .collect();
    let everything_refused =
        invalidations::scope_refusal(&snapshot, Scope::Everything).unwrap_or_default();
    let sites = invalidations::everything(&settings, &snapshot).rows;
    Ok(VariantsPage {
        nav: Nav::from(admin),
        provider: snapshot.describe(),
        choices,
        headers: TAG_HEADERS
            .iter()
            .map(|(v, l)| (*v, *l, *v == tag_header))
            .collect(),
        tag_header,
        saved: false,
        error: None,
        // The publish server names the site, and the admin types it to confirm.
        everything_sites: (everything_refused.is_empty()
            && settings.publish_server.is_some()
            && !sites.is_empty())
        .then_some(sites),
        everything_refused: if everything_refused.is_empty() && settings.publish_server.is_none() {
            "Set a Publish Server Name first: it names the site to purge.".into()
        } else {
            everything_refused
        },
        everything_error: None,
        confirm_word: settings
            .publish_server
            .as_ref()
            .map(|s| s.host().to_string())
            .unwrap_or_default(),
        idempotency_key: random_token(16),
    })
}

/// `GET /settings/variants`.
pub async fn show(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (variants, header) = load(&state).await?;
    let mut page = page(&state, &admin, variants, header).await?;
    page.saved = admin.session.take_flash(SAVED);
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct VariantsForm {
    #[serde(default)]
    variants: String,
    #[serde(default)]
    tag_header: String,
}

/// `POST /settings/variants`: saves the mapping when the active provider can send it.
pub async fn save(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<VariantsForm>,
) -> Result<HttpResponse, AppError> {
    let header = form.tag_header.trim().to_string();
    let refuse = |page: &mut VariantsPage, message: String| {
        page.error = Some(message);
    };
    let Some(variants) = Variants::parse(&form.variants) else {
        let (current, stored_header) = load(&state).await?;
        let mut page = page(&state, &admin, current, stored_header).await?;
        refuse(
            &mut page,
            format!("\"{}\" is not one of the choices.", form.variants),
        );
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let header_known = TAG_HEADERS.iter().any(|(h, _)| *h == header);
    let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
    let problem = if !header_known {
        Some(format!(
            "\"{header}\" is not a tag header this app knows: choose one of {}.",
            TAG_HEADERS.map(|(h, _)| h).join(", ")
        ))
    } else {
        variants
            .scope()
            .and_then(|s| invalidations::scope_refusal(&snapshot, s))
            .map(|reason| {
                format!("Not saved: {reason} Choose another mapping or another provider.")
            })
    };
    if let Some(message) = problem {
        let mut page = page(&state, &admin, variants, header).await?;
        refuse(&mut page, message);
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    state
        .store
        .save_variants(variants.as_str(), &header)
        .await?;
    tracing::info!(admin = %admin.user.username, variants = variants.as_str(), "variant mapping saved");
    admin.session.flash(SAVED)?;
    Ok(see_other("/settings/variants"))
}

#[derive(Deserialize)]
pub struct EverythingForm {
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    understood: String,
    #[serde(default)]
    idempotency_key: String,
}

/// `POST /settings/purge-everything`: only with the publish server's host typed and the
/// consequence acknowledged; recorded in history like any invalidation.
pub async fn purge_everything(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<EverythingForm>,
) -> Result<HttpResponse, AppError> {
    let key =
        match super::invalidate::form_key(&state, admin.user.id, &form.idempotency_key).await? {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
    let (variants, header) = load(&state).await?;
    let mut page = page(&state, &admin, variants, header).await?;
    let problem = if page.everything_sites.is_none() {
        Some(format!("Nothing was purged: {}", page.everything_refused))
    } else if page.confirm_word.is_empty() || form.confirm.trim() != page.confirm_word {
        Some(format!(
            "Nothing was purged: type the publish server's name, {}, to confirm.",
            page.confirm_word
        ))
    } else if form.understood != "yes" {
        Some("Nothing was purged: tick the box to say you understand every cached object will be fetched from the origin again.".into())
    } else {
        None
    };
    if let Some(message) = problem {
        page.everything_error = Some(message);
        page.idempotency_key = key.to_string();
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let settings = invalidations::load_settings(&state).await?;
    let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
    let targets = invalidations::everything(&settings, &snapshot);
    match invalidations::queue_targets(&state, &admin.user, key.to_string(), targets, None).await {
        Ok(id) => {
            tracing::warn!(admin = %admin.user.username, id, "purge everything queued");
            Ok(see_other(&format!("/invalidations/{id}")))
        }
        Err(InvalidationError::NotAllowed(reason)) => {
            page.everything_error = Some(format!("Nothing was purged: {reason}"));
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(e) => Err(AppError::Internal(e.into())),
    }
}
