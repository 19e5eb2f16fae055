//! History, one invalidation's estimate/progress/result (HTML or JSON), and retry.

use super::{Nav, Pager, fmt_time, q, render, see_other};
use crate::cdn::ProviderSnapshot;
use crate::domain::estimate::{describe, describe_duration};

use crate::error::AppError;
use crate::invalidations;
use crate::session::{CsrfForm, CurrentUser, NoFields, wants_json};
use crate::state::AppState;
use crate::store::{
    HistoryFilter, Invalidation, InvalidationStatus, InvalidationUrl, PurgeBatch, UrlStatus,
};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::{Deserialize, Serialize};

/// An invalidation as pages show it.
pub struct Summary {
    pub id: i64,
    pub status: &'static str,
    pub status_label: &'static str,
    pub finished: bool,
    pub who: String,
    pub created: String,
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub done_percent: i64,
    pub estimate: String,
    pub duration: String,
    pub provider: String,
    pub duplicates_dropped: i64,
    pub retry_of: Option<i64>,
    pub retried_as: Option<i64>,
}

fn status_label(status: InvalidationStatus) -> &'static str {
    match status {
        InvalidationStatus::Queued => "Queued",
        InvalidationStatus::Running => "Running",
        InvalidationStatus::Succeeded => "Succeeded",
        InvalidationStatus::PartiallyFailed => "Partially failed",
        InvalidationStatus::Failed => "Failed",
    }
}

impl From<&Invalidation> for Summary {
    fn from(i: &Invalidation) -> Self {
        let duration = match (i.started_at, i.finished_at) {
            (Some(start), Some(end)) => describe_duration(end - start),
            (Some(_), None) => "running".into(),
            _ => "not started".into(),
        };
        Self {
            id: i.id,
            status: i.status.as_str(),
            status_label: status_label(i.status),
            finished: i.status.is_finished(),
            who: i.created_by_name.clone(),
            created: fmt_time(i.created_at),
            total: i.total,
            succeeded: i.succeeded,
            failed: i.failed,
            done_percent: if i.total > 0 {
                (i.succeeded + i.failed) * 100 / i.total
            } else {
                100
            },
            estimate: describe(i.estimated_seconds),
            duration,
            provider: serde_json::from_str::<ProviderSnapshot>(&i.provider_settings)
                .map(|p| p.describe())
                .unwrap_or_else(|_| i.provider.clone()),
            duplicates_dropped: i.duplicates_dropped,
            retry_of: i.retry_of,
            retried_as: i.retried_as,
        }
    }
}

pub struct UrlRow {
    url: String,
    status: &'static str,
    attempts: i64,
    http_status: String,
    error: String,
}

impl From<InvalidationUrl> for UrlRow {
    fn from(u: InvalidationUrl) -> Self {
        Self {
            url: u.url,
            status: u.status.as_str(),
            attempts: u.attempts,
            http_status: u.http_status.map(|s| s.to_string()).unwrap_or_default(),
            error: u.error.unwrap_or_default(),
        }
    }
}

/// One request the provider accepted, as the page and the JSON show it.
#[derive(Serialize)]
pub struct BatchRow {
    provider_id: Option<String>,
    support_id: Option<String>,
    estimated_seconds: Option<i64>,
    url_count: i64,
    status: &'static str,
    #[serde(skip)]
    created: String,
}

impl From<PurgeBatch> for BatchRow {
    fn from(b: PurgeBatch) -> Self {
        Self {
            provider_id: b.provider_id,
            support_id: b.support_id,
            estimated_seconds: b.estimated_seconds,
            url_count: b.url_count,
            status: if b.pending { "in progress" } else { "done" },
            created: fmt_time(b.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "invalidation.html")]
pub struct InvalidationPage {
    nav: Nav,
    inv: Summary,
    urls: Vec<UrlRow>,
    batches: Vec<BatchRow>,
}

#[derive(Serialize)]
struct UrlJson {
    url: String,
    status: UrlStatus,
    attempts: i64,
    http_status: Option<i64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct InvalidationJson {
    id: i64,
    status: InvalidationStatus,
    total: i64,
    succeeded: i64,
    failed: i64,
    estimated_seconds: i64,
    created_at: String,
    finished_at: Option<String>,
    urls: Vec<UrlJson>,
    /// The provider's answers per request (purge and support ids).
    batches: Vec<BatchRow>,
}

fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The invalidation with `id`, or a 404 page naming it.
async fn find(state: &AppState, id: i64) -> Result<Invalidation, AppError> {
    state
        .store
        .get_invalidation(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no invalidation #{id}.")))
}

/// `GET /invalidations/{id}`: the estimate, live progress and result; JSON when asked for.
pub async fn show(
    current: CurrentUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let inv = find(&state, id).await?;
    let urls = state.store.invalidation_urls(id).await?;
    let batches: Vec<BatchRow> = state
        .store
        .invalidation_batches(id)
        .await?
        .into_iter()
        .map(BatchRow::from)
        .collect();
    if wants_json(&req) {
        // One address serves HTML and JSON: caches must key on Accept.
        return Ok(HttpResponse::Ok()
            .insert_header(("Vary", "Accept"))
            .json(InvalidationJson {
                id: inv.id,
                status: inv.status,
                total: inv.total,
                succeeded: inv.succeeded,
                failed: inv.failed,
                estimated_seconds: inv.estimated_seconds,
                created_at: rfc3339(inv.created_at),
                finished_at: inv.finished_at.map(rfc3339),
                urls: urls
                    .into_iter()
                    .map(|u| UrlJson {
                        url: u.url,
                        status: u.status,
                        attempts: u.attempts,
                        http_status: u.http_status,
                        error: u.error,
                    })
                    .collect(),
                batches,
            }));
    }
    let page = InvalidationPage {
        nav: Nav::from(&current),
        inv: Summary::from(&inv),
        urls: urls.into_iter().map(UrlRow::from).collect(),
        batches,
    };
    let mut response = render(StatusCode::OK, &page)?;
    response.headers_mut().insert(
        actix_web::http::header::VARY,
        actix_web::http::header::HeaderValue::from_static("Accept"),
    );
    Ok(response)
}

/// `POST /invalidations/{id}/retry`: a new invalidation of the failed URLs, linked to the first.
pub async fn retry(
    current: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let new_id = invalidations::retry(&state, &current.user, id.into_inner()).await?;
    Ok(see_other(&format!("/invalidations/{new_id}")))
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryPage {
    nav: Nav,
    items: Vec<Summary>,
    pager: Pager,
    status: String,
    user: String,
    url: String,
    statuses: Vec<(&'static str, &'static str)>,
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    page: Option<i64>,
}

/// `GET /invalidations`: newest first, filtered by status, user and URL substring.
pub async fn history(
    current: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let filter = HistoryFilter {
        status: InvalidationStatus::parse(&query.status),
        username: query.user.trim().to_string(),
        url: query.url.trim().to_string(),
    };
    let requested = query.page.unwrap_or(1).max(1);
    let mut found = state
        .store
        .list_invalidations(&filter, (requested - 1) * Pager::PER_PAGE, Pager::PER_PAGE)
        .await?;
    let status = filter.status.map(InvalidationStatus::as_str).unwrap_or("");
    let pager = Pager::new(requested, found.total, |p| {
        format!(
            "/invalidations?status={status}&user={}&url={}&page={p}",
            q(&filter.username),
            q(&filter.url)
        )
    });
    if pager.page != requested {
        found = state
            .store
            .list_invalidations(&filter, pager.offset(), Pager::PER_PAGE)
            .await?;
    }
    let statuses = [
        InvalidationStatus::Queued,
        InvalidationStatus::Running,
        InvalidationStatus::Succeeded,
        InvalidationStatus::PartiallyFailed,
        InvalidationStatus::Failed,
    ]
    .into_iter()
    .map(|s| (s.as_str(), status_label(s)))
    .collect();
    let page = HistoryPage {
        nav: Nav::from(&current),
        items: found.items.iter().map(Summary::from).collect(),
        pager,
        status: status.to_string(),
        user: filter.username,
        url: filter.url,
        statuses,
    };
    render(StatusCode::OK, &page)
}
