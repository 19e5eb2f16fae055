//! Invalidate CDN: the prefilled URL list, its validation, and Continue.

use super::{Nav, render, see_other};
use crate::domain::settings::Settings;
use crate::domain::url_list::{self, UrlError};
use crate::error::AppError;
use crate::invalidations;
use crate::session::{CsrfForm, CurrentUser, random_token};
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

/// Line errors listed on the refused form; the rest are counted.
const SHOWN_LINE_ERRORS: usize = 50;

#[derive(Template)]
#[template(path = "invalidate.html")]
pub struct InvalidatePage {
    nav: Nav,
    urls: String,
    idempotency_key: String,
    url_count: usize,
    asset_count: usize,
    from_assets: bool,
    template_empty: bool,
    /// The first [`SHOWN_LINE_ERRORS`] problems, in line order.
    line_errors: Vec<UrlError>,
    /// Lines with problems beyond those shown.
    more_line_errors: usize,
    list_error: Option<String>,
    duplicates_dropped: usize,
    max_urls: usize,
    allowed_hosts: Vec<String>,
}

pub async fn load_settings(state: &AppState) -> Result<Settings, AppError> {
    Ok(invalidations::load_settings(state).await?)
}

fn allowed_hosts(settings: &Settings) -> Vec<String> {
    settings
        .publish_server
        .iter()
        .map(|s| s.host().to_string())
        .chain(settings.allowed_hosts.iter().cloned())
        .collect()
}

impl InvalidatePage {
    fn new(
        current: &CurrentUser,
        settings: &Settings,
        urls: Vec<String>,
        asset_count: usize,
        max_urls: usize,
    ) -> Self {
        Self {
            nav: Nav::from(current),
            url_count: urls.len(),
            urls: urls.join("\n"),
            idempotency_key: random_token(16),
            asset_count,
            from_assets: asset_count > 0,
            template_empty: settings.template.is_empty(),
            line_errors: Vec::new(),
            more_line_errors: 0,
            list_error: None,
            duplicates_dropped: 0,
            max_urls,
            allowed_hosts: allowed_hosts(settings),
        }
    }
}

/// `GET /invalidate`: an empty list to paste URLs into.
pub async fn blank(
    current: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let settings = load_settings(&state).await?;
    render(
        StatusCode::OK,
        &InvalidatePage::new(&current, &settings, Vec::new(), 0, state.config.max_urls),
    )
}

#[derive(Deserialize)]
pub struct SelectionForm {
    #[serde(default)]
    asset_id: Vec<String>,
}

/// `POST /invalidate`: the template expanded for every ticked asset.
pub async fn from_assets(
    current: CurrentUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<SelectionForm>,
) -> Result<HttpResponse, AppError> {
    let settings = load_settings(&state).await?;
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<&str> = form
        .asset_id
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect();
    let urls = settings.template.expand_all(ids.iter().copied());
    render(
        StatusCode::OK,
        &InvalidatePage::new(&current, &settings, urls, ids.len(), state.config.max_urls),
    )
}

#[derive(Deserialize)]
pub struct ContinueForm {
    #[serde(default)]
    urls: String,
    #[serde(default)]
    idempotency_key: String,
}

/// `POST /invalidations` (Continue): validate, store with all URLs, wake the worker, redirect.
pub async fn submit(
    current: CurrentUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<ContinueForm>,
) -> Result<HttpResponse, AppError> {
    let key = form.idempotency_key.trim();
    // Keys are what the form was given (hex); other shapes are reserved (e.g. `retry-of-N`).
    if !(16..=128).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BadRequest(
            "The form has no valid idempotency key; reload the page.".into(),
        ));
    }
    // A repeated submit (refresh, double click, back-and-resubmit) leads to the first result.
    if let Some(id) = state
        .store
        .find_invalidation_by_key(current.user.id, key)
        .await?
    {
        return Ok(see_other(&format!("/invalidations/{id}")));
    }
    let settings = load_settings(&state).await?;
    let policy = invalidations::host_policy(&state.store, &settings).await?;
    let list = match url_list::parse(&form.urls, &policy, state.config.max_urls) {
        Ok(list) => list,
        Err(errors) => {
            let mut page =
                InvalidatePage::new(&current, &settings, Vec::new(), 0, state.config.max_urls);
            page.urls = form.urls;
            page.url_count = page.urls.lines().filter(|l| !l.trim().is_empty()).count();
            page.idempotency_key = key.to_string();
            page.template_empty = false;
            // A pasted file of bad lines must not come back as a page listing each of them.
            let mut lines = errors.lines;
            page.more_line_errors = lines.len().saturating_sub(SHOWN_LINE_ERRORS);
            lines.truncate(SHOWN_LINE_ERRORS);
            page.line_errors = lines;
            page.list_error = errors.list;
            page.duplicates_dropped = errors.duplicates_dropped;
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let urls = list.urls.iter().map(|u| u.as_str().to_string()).collect();
    let id = invalidations::queue(
        &state,
        &current.user,
        key.to_string(),
        urls,
        list.duplicates_dropped,
        None,
    )
    .await?;
    Ok(see_other(&format!("/invalidations/{id}")))
}
