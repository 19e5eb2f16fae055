//! Invalidate CDN: the prefilled URL list, its validation, and Continue.

use super::{Nav, render, see_other};
use crate::domain::settings::Settings;
use crate::domain::url_list::{self, UrlError};
use crate::domain::variants::Scope;
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
    /// The ticked assets, sent again with Continue (for tags and prefixes).
    asset_ids: Vec<String>,
    /// Every cached variant, as the admin mapped assets (tags or prefixes), when offered.
    variants: Option<VariantsChoice>,
}

/// The choice between the listed URLs and every cached variant of the ticked assets.
pub struct VariantsChoice {
    pub scope: Scope,
    /// True when the user chose every variant (listed URLs are the default).
    pub chosen: bool,
    /// What will be sent: "3 assets: cache tags `a`, `b`, `c`".
    pub summary: String,
    /// The rows that will be sent (the first [`SHOWN_TARGETS`]).
    pub shown: Vec<String>,
    pub more: usize,
    /// Why it cannot be sent (provider, tag rules, template): nothing is queued.
    pub errors: Vec<String>,
    /// The header the origin labels responses with (tags).
    pub tag_header: String,
}

/// Tags or prefixes listed on the page; the rest are counted.
const SHOWN_TARGETS: usize = 20;

/// The offer of every cached variant for `ids`, as the admin mapped assets; `None` when the
/// mapping is listed URLs only or no asset is ticked.
async fn variants_choice(
    state: &AppState,
    settings: &Settings,
    ids: &[&str],
    chosen: bool,
) -> Result<Option<VariantsChoice>, AppError> {
    let (variants, tag_header) = super::variants::load(state).await?;
    let Some(scope) = variants.scope() else {
        return Ok(None);
    };
    if ids.is_empty() {
        return Ok(None);
    }
    let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
    let policy = invalidations::host_policy(&state.store, settings).await?;
    let (rows, errors) =
        match invalidations::plan_variants(settings, &policy, &snapshot, scope, ids) {
            Ok(targets) => (targets.rows, Vec::new()),
            Err(errors) => (
                Vec::new(),
                errors
                    .into_iter()
                    .map(|e| {
                        if e.asset_id.is_empty() {
                            e.reason
                        } else {
                            e.to_string()
                        }
                    })
                    .collect(),
            ),
        };
    let assets = if ids.len() == 1 { "asset" } else { "assets" };
    let summary = match scope {
        Scope::Tags => format!(
            "{} {assets}: {} {}",
            ids.len(),
            rows.len(),
            scope.noun(rows.len())
        ),
        _ => format!(
            "{} {assets}: {} {} (every cached URL starting with one)",
            ids.len(),
            rows.len(),
            scope.noun(rows.len())
        ),
    };
    let more = rows.len().saturating_sub(SHOWN_TARGETS);
    let shown = rows.into_iter().take(SHOWN_TARGETS).collect();
    Ok(Some(VariantsChoice {
        scope,
        chosen,
        summary,
        shown,
        more,
        errors,
        tag_header,
    }))
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
            asset_ids: Vec::new(),
            variants: None,
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
    let ids = unique_ids(&form.asset_id);
    let urls = settings.template.expand_all(ids.iter().copied());
    let mut page = InvalidatePage::new(&current, &settings, urls, ids.len(), state.config.max_urls);
    page.variants = variants_choice(&state, &settings, &ids, false).await?;
    page.asset_ids = ids.iter().map(|id| id.to_string()).collect();
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ContinueForm {
    #[serde(default)]
    urls: String,
    #[serde(default)]
    idempotency_key: String,
    /// `urls` (the default), or the admin's mapping of every variant: `tags`, `prefixes`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    asset_id: Vec<String>,
}

/// The idempotency key a form was given, checked: `Ok(key)` to go on, or `Err` with the
/// redirect to the invalidation this key already made (a refresh, a double click, a
/// back-and-resubmit leads to the first result). A key of another shape is a 400.
pub(super) async fn form_key<'a>(
    state: &AppState,
    user_id: i64,
    raw: &'a str,
) -> Result<Result<&'a str, HttpResponse>, AppError> {
    let key = raw.trim();
    // Keys are what the form was given (hex); other shapes are reserved (e.g. `retry-of-N`).
    if !(16..=128).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BadRequest(
            "The form has no valid idempotency key; reload the page.".into(),
        ));
    }
    Ok(
        match state.store.find_invalidation_by_key(user_id, key).await? {
            Some(id) => Err(see_other(&format!("/invalidations/{id}"))),
            None => Ok(key),
        },
    )
}

/// `POST /invalidations` (Continue): validate, store with all URLs, wake the worker, redirect.
pub async fn submit(
    current: CurrentUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<ContinueForm>,
) -> Result<HttpResponse, AppError> {
    let key = match form_key(&state, current.user.id, &form.idempotency_key).await? {
        Ok(key) => key,
        Err(first) => return Ok(first),
    };
    let settings = load_settings(&state).await?;
    let scope = match form.scope.as_str() {
        "" => Scope::Urls,
        other => Scope::parse(other).ok_or_else(|| {
            AppError::BadRequest(format!("\"{other}\" is not a kind of invalidation."))
        })?,
    };
    if scope != Scope::Urls {
        return submit_variants(current, state, settings, form, scope).await;
    }
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

/// Continue with every cached variant of the ticked assets (tags or prefixes, as the admin
/// mapped assets): checked in full first, nothing queued when any asset is refused.
async fn submit_variants(
    current: CurrentUser,
    state: web::Data<AppState>,
    settings: Settings,
    form: ContinueForm,
    scope: Scope,
) -> Result<HttpResponse, AppError> {
    let ids = unique_ids(&form.asset_id);
    let (variants, _) = super::variants::load(&state).await?;
    let refusal = if variants.scope() != Some(scope) {
        format!(
            "Clearing by {} is not offered here: an admin chooses how assets map to the cache (Settings, Every variant of an asset).",
            scope.label()
        )
    } else if ids.len() > state.config.max_urls {
        format!(
            "{} assets are selected; at most {} can be cleared at once.",
            ids.len(),
            state.config.max_urls
        )
    } else {
        let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
        let policy = invalidations::host_policy(&state.store, &settings).await?;
        match invalidations::plan_variants(&settings, &policy, &snapshot, scope, &ids) {
            // The page lists each refused asset (variants_choice runs the same checks).
            Err(_) => "Nothing was invalidated: some assets cannot be cleared this way.".into(),
            Ok(targets) => match invalidations::queue_targets(
                &state,
                &current.user,
                form.idempotency_key.trim().to_string(),
                targets,
                None,
            )
            .await
            {
                Ok(id) => return Ok(see_other(&format!("/invalidations/{id}"))),
                Err(invalidations::InvalidationError::NotAllowed(reason)) => reason,
                Err(e) => return Err(AppError::Internal(e.into())),
            },
        }
    };
    // Refused: the page again, as it was, with the reason.
    let mut page = InvalidatePage::new(
        &current,
        &settings,
        settings.template.expand_all(ids.iter().copied()),
        ids.len(),
        state.config.max_urls,
    );
    page.idempotency_key = form.idempotency_key.trim().to_string();
    page.asset_ids = ids.iter().map(|id| id.to_string()).collect();
    page.variants = variants_choice(&state, &settings, &ids, true).await?;
    page.list_error = Some(refusal);
    render(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

/// The asset IDs a form ticked, in order, each once.
fn unique_ids(ids: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}
