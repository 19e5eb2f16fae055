//! History, one invalidation's estimate/progress/result (HTML or JSON), and retry.

use super::{Nav, Pager, fmt_time, q, render, see_other};
use crate::cache_check;
use crate::cdn::{self, ProviderSnapshot};
use crate::domain::estimate::{describe, describe_duration, describe_millis};
use crate::domain::freshness::Freshness;
use crate::domain::variants::Scope;
use crate::error::AppError;
use crate::invalidations;
use crate::session::{CsrfForm, CurrentUser, NoFields, wants_json};
use crate::state::AppState;
use crate::store::{
    BatchPage, HistoryFilter, Invalidation, InvalidationStatus, PositionedUrl, PurgeBatch,
    StaleUrl, UrlCounts, UrlPage, UrlStatus,
};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
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
    /// What the rows are: "URLs", "cache tags", "path prefixes", "sites".
    pub noun: &'static str,
    /// Column header of a row: "URL", "Tag", "Prefix", "Site".
    pub row_label: &'static str,
    /// For tags, prefixes and everything: a sentence saying what was cleared.
    pub scope_text: Option<String>,
}

/// The estimate shown at Continue, in words ("under a second", "about 3 minutes"); whole
/// seconds for invalidations from before estimates were kept in milliseconds.
pub(super) fn estimate_text(i: &Invalidation) -> String {
    i.estimated_ms
        .map_or_else(|| describe(i.estimated_seconds), describe_millis)
}

/// Whether the purged URLs are cleared or only accepted, in the page's words: "Accepted by
/// Akamai Fast Purge; it estimates clearing by …", "Cleared: …". `None` before anything was
/// accepted.
fn clearing(
    provider: &str,
    submitted: i64,
    succeeded: i64,
    finished: bool,
    promise: Option<i64>,
) -> Option<String> {
    if submitted > 0 {
        return Some(match promise {
            Some(due) => format!(
                "Accepted by {provider}; it estimates clearing by {}.",
                fmt_time(due)
            ),
            None => format!("Accepted by {provider}; waiting for it to report the purge complete."),
        });
    }
    if !finished || succeeded == 0 {
        return None;
    }
    Some(match promise {
        Some(due) => format!(
            "Cleared: accepted by {provider}, and its own estimate of clearing ({}) has passed.",
            fmt_time(due)
        ),
        None => format!("Cleared: {provider} confirmed each purge."),
    })
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
        // What the user waited: from Continue (the estimate's start) to cleared.
        let duration = match (i.started_at, i.finished_at) {
            (_, Some(end)) => describe_duration(end - i.created_at),
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
            estimate: estimate_text(i),
            duration,
            provider: serde_json::from_str::<ProviderSnapshot>(&i.provider_settings)
                .map(|p| p.describe())
                .unwrap_or_else(|_| i.provider.clone()),
            duplicates_dropped: i.duplicates_dropped,
            retry_of: i.retry_of,
            retried_as: i.retried_as,
            noun: match i.scope {
                Scope::Urls => "URLs",
                scope => scope.noun(i.total as usize),
            },
            row_label: match i.scope {
                Scope::Urls => "URL",
                Scope::Tags => "Cache tag",
                Scope::Prefixes => "Path prefix",
                Scope::Everything => "Site",
            },
            scope_text: match i.scope {
                Scope::Urls => None,
                Scope::Tags => Some(
                    "Every cached variant, by cache tag: clears every response labelled with one of these asset IDs.".into(),
                ),
                Scope::Prefixes => Some(
                    "Every cached variant, by path prefix: clears every cached URL that starts with one of these.".into(),
                ),
                Scope::Everything => Some(
                    "Purge everything: an admin's confirmed action that clears everything cached for these sites.".into(),
                ),
            },
        }
    }
}

/// One URL's row in the invalidation page's table.
pub struct UrlRow {
    /// 1-based line in the list the user gave.
    line: i64,
    url: String,
    status: &'static str,
    attempts: i64,
    http_status: String,
    error: String,
}

impl UrlRow {
    /// The URL as HTML that wraps at its slashes (see [`super::breakable_url`]).
    fn url_html(&self) -> String {
        super::breakable_url(&self.url)
    }
}

impl From<PositionedUrl> for UrlRow {
    fn from(p: PositionedUrl) -> Self {
        let u = p.url;
        Self {
            line: p.position + 1,
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

/// URLs per page of an invalidation's table (and of its JSON) unless asked otherwise.
const URLS_PER_PAGE: i64 = 100;
/// Most URLs one page may ask for.
const MAX_URLS_PER_PAGE: i64 = 1000;
/// Provider requests per page: some providers take one URL per request.
const BATCHES_PER_PAGE: i64 = 100;

/// The part of an invalidation one request asks for, from its query string:
/// `?urls=none` (counts only: the progress poll), `?status=failed` (only URLs in that state),
/// `?urls_after=POS&urls_limit=N` (the page of URLs after position POS), `?batches_after=ID`.
#[derive(Debug, Clone)]
struct View {
    progress_only: bool,
    status: Option<UrlStatus>,
    urls_after: Option<i64>,
    urls_limit: i64,
    batches_after: Option<i64>,
}

#[derive(Deserialize)]
pub struct ViewQuery {
    #[serde(default)]
    urls: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    urls_after: String,
    #[serde(default)]
    urls_limit: String,
    #[serde(default)]
    batches_after: String,
}

impl View {
    fn parse(q: &ViewQuery) -> Result<Self, AppError> {
        let bad = |what: &str| AppError::BadRequest(format!("The address has an invalid {what}."));
        let number = |raw: &str, what: &str| -> Result<Option<i64>, AppError> {
            match raw.trim() {
                "" => Ok(None),
                n => n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Some)
                    .ok_or_else(|| bad(what)),
            }
        };
        let progress_only = match q.urls.as_str() {
            "" | "page" => false,
            "none" => true,
            _ => return Err(bad("urls value (none or page)")),
        };
        let status = match q.status.trim() {
            "" | "all" => None,
            s => Some(UrlStatus::parse(s).ok_or_else(|| bad("URL status"))?),
        };
        let urls_limit = number(&q.urls_limit, "urls_limit")?.unwrap_or(URLS_PER_PAGE);
        if !(1..=MAX_URLS_PER_PAGE).contains(&urls_limit) {
            return Err(AppError::BadRequest(format!(
                "urls_limit must be between 1 and {MAX_URLS_PER_PAGE}."
            )));
        }
        Ok(Self {
            progress_only,
            status,
            urls_after: number(&q.urls_after, "urls_after")?,
            urls_limit,
            batches_after: number(&q.batches_after, "batches_after")?,
        })
    }

    /// The address of invalidation `id` showing this view; defaults are left out.
    fn href(&self, id: i64) -> String {
        let mut params = Vec::new();
        if let Some(s) = self.status {
            params.push(format!("status={s}"));
        }
        if let Some(a) = self.urls_after {
            params.push(format!("urls_after={a}"));
        }
        if self.urls_limit != URLS_PER_PAGE {
            params.push(format!("urls_limit={}", self.urls_limit));
        }
        if let Some(b) = self.batches_after {
            params.push(format!("batches_after={b}"));
        }
        if params.is_empty() {
            format!("/invalidations/{id}")
        } else {
            format!("/invalidations/{id}?{}", params.join("&"))
        }
    }

    fn with_urls_after(&self, after: Option<i64>) -> Self {
        Self {
            urls_after: after,
            ..self.clone()
        }
    }

    fn with_batches_after(&self, after: Option<i64>) -> Self {
        Self {
            batches_after: after,
            ..self.clone()
        }
    }
}

/// A URL state with its count, linking to the table filtered to it.
pub struct CountLink {
    /// `all` or the state's name (element ids and CSS classes).
    key: &'static str,
    label: &'static str,
    count: i64,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "invalidation.html")]
pub struct InvalidationPage {
    nav: Nav,
    inv: Summary,
    counts: Vec<CountLink>,
    /// The state the URL table is filtered to (empty: every URL).
    filter: &'static str,
    /// URLs matching the filter, over every page.
    matching: i64,
    urls: Vec<UrlRow>,
    urls_first: Option<String>,
    urls_next: Option<String>,
    batches: Vec<BatchRow>,
    batches_total: i64,
    batches_first: Option<String>,
    batches_next: Option<String>,
    progress_only: bool,
    /// Cleared, or only accepted (see [`clearing`]).
    clearing: Option<String>,
    /// *Check the cache*: offered once finished with purged URLs; its last result.
    can_check: bool,
    check: Option<CheckView>,
    /// Tags and prefixes: the template URLs they clear (the first [`COVERED_ROWS`]), each with
    /// the row that clears it, and how many there are.
    covered: Vec<(String, String)>,
    covered_total: i64,
}

/// Template URLs listed under a tag or prefix invalidation.
const COVERED_ROWS: i64 = 100;

impl InvalidationPage {
    /// A URL as HTML that wraps at its slashes (see [`super::breakable_url`]).
    fn breakable(&self, url: &str) -> String {
        super::breakable_url(url)
    }

    /// A cache check is under way.
    fn check_running(&self) -> bool {
        self.check.as_ref().is_some_and(|c| c.running)
    }
}

/// The last cache check of an invalidation, as the page shows it.
pub struct CheckView {
    running: bool,
    when: String,
    checked: i64,
    urls: i64,
    fresh: i64,
    stale: i64,
    unknown: i64,
    stale_urls: Vec<StaleUrl>,
    unknown_urls: Vec<StaleUrl>,
}

/// Most stale (and unknown) URLs listed on the page; *Invalidate again* takes all of them.
const CHECK_ROWS: i64 = 50;

async fn check_view(state: &AppState, id: i64) -> Result<Option<CheckView>, AppError> {
    let Some(summary) = state.store.cache_check_summary(id).await? else {
        return Ok(None);
    };
    let stale_urls = if summary.stale > 0 {
        state
            .store
            .cache_check_urls(id, Freshness::Stale, CHECK_ROWS)
            .await?
    } else {
        Vec::new()
    };
    let unknown_urls = if summary.unknown > 0 {
        state
            .store
            .cache_check_urls(id, Freshness::Unknown, CHECK_ROWS)
            .await?
    } else {
        Vec::new()
    };
    Ok(Some(CheckView {
        running: summary.finished_at.is_none(),
        when: fmt_time(summary.finished_at.unwrap_or(summary.started_at)),
        checked: summary.fresh + summary.stale + summary.unknown,
        urls: summary.urls,
        fresh: summary.fresh,
        stale: summary.stale,
        unknown: summary.unknown,
        stale_urls,
        unknown_urls,
    }))
}

/// One URL of an invalidation and its outcome, as the page's JSON and the API give it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct UrlJson {
    /// 0-based place in the list given; `urls_after` (the API: `after`) takes it.
    position: i64,
    url: String,
    /// queued, retrying, submitted, succeeded or failed.
    #[schema(value_type = String)]
    status: UrlStatus,
    attempts: i64,
    http_status: Option<i64>,
    error: Option<String>,
}

impl From<PositionedUrl> for UrlJson {
    fn from(p: PositionedUrl) -> Self {
        Self {
            position: p.position,
            url: p.url.url,
            status: p.url.status,
            attempts: p.url.attempts,
            http_status: p.url.http_status,
            error: p.url.error,
        }
    }
}

#[derive(Serialize)]
struct InvalidationJson {
    id: i64,
    status: InvalidationStatus,
    /// What the rows (`urls`) are: urls, tags, prefixes or everything (site roots).
    scope: Scope,
    total: i64,
    succeeded: i64,
    failed: i64,
    /// URLs in each state.
    counts: UrlCounts,
    estimated_seconds: i64,
    /// The estimate at Continue in milliseconds (null for invalidations from before models).
    estimated_ms: Option<i64>,
    /// "Accepted by …; it estimates clearing by …" or "Cleared: …".
    clearing: Option<String>,
    /// When the provider promised clearing (acceptance + its own estimate), if it did.
    clearing_promised_at: Option<String>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Tags and prefixes: how many template URLs they clear, and the first of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    covered: Option<CoveredJson>,
    /// Left out of the progress form (`?urls=none`).
    #[serde(flatten)]
    page: Option<PageJson>,
}

/// The template URLs a tag or prefix invalidation clears.
#[derive(Serialize)]
struct CoveredJson {
    total: i64,
    /// The first 100: `{url, cleared_by}` (the tag or prefix).
    urls: Vec<CoveredUrlJson>,
}

#[derive(Serialize)]
struct CoveredUrlJson {
    url: String,
    cleared_by: String,
}

/// A page of an invalidation's URLs and provider requests, with the addresses of the next.
#[derive(Serialize)]
struct PageJson {
    urls: Vec<UrlJson>,
    /// The next page of URLs (same filter and size); null on the last.
    urls_next: Option<String>,
    /// The provider's answers per request (purge and support ids), oldest first.
    batches: Vec<BatchRow>,
    batches_total: i64,
    /// The next page of requests; null on the last.
    batches_next: Option<String>,
}

/// A stored time as RFC 3339, for JSON.
pub(super) fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `GET /invalidations/{id}`: the estimate, live progress and result; JSON when asked for.
/// Whatever the number of URLs, a request reads the counts (one aggregate) and at most one
/// page of URLs and one of provider requests.
pub async fn show(
    current: CurrentUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<i64>,
    query: web::Query<ViewQuery>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let view = View::parse(&query)?;
    let progress = state
        .store
        .invalidation_progress(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no invalidation #{id}.")))?;
    let (inv, counts, promise) = (
        progress.invalidation,
        progress.counts,
        progress.clearing_promise,
    );
    let provider_label = cdn::kind(&inv.provider).map_or(inv.provider.as_str(), |k| k.short_name());
    let clearing = clearing(
        provider_label,
        counts.submitted,
        counts.succeeded,
        inv.status.is_finished(),
        promise,
    );
    let (covered, covered_total) =
        if matches!(inv.scope, Scope::Tags | Scope::Prefixes) && !view.progress_only {
            state.store.covered_urls(id, COVERED_ROWS).await?
        } else {
            (Vec::new(), 0)
        };
    let (urls, batches) = if view.progress_only {
        (UrlPage::default(), BatchPage::default())
    } else {
        let urls = state
            .store
            .invalidation_url_page(id, view.status, view.urls_after, view.urls_limit)
            .await?;
        let batches = state
            .store
            .invalidation_batch_page(id, view.batches_after, BATCHES_PER_PAGE)
            .await?;
        (urls, batches)
    };
    let urls_next = urls
        .next_after
        .map(|after| view.with_urls_after(Some(after)).href(id));
    let batches_next = batches
        .next_after
        .map(|after| view.with_batches_after(Some(after)).href(id));
    let batch_rows: Vec<BatchRow> = batches.batches.into_iter().map(BatchRow::from).collect();
    if wants_json(&req) {
        let page = (!view.progress_only).then(|| PageJson {
            urls: urls.urls.into_iter().map(UrlJson::from).collect(),
            urls_next,
            batches: batch_rows,
            batches_total: batches.total,
            batches_next,
        });
        // One address serves HTML and JSON: caches must key on Accept.
        return Ok(HttpResponse::Ok()
            .insert_header(("Vary", "Accept"))
            .json(InvalidationJson {
                id: inv.id,
                status: inv.status,
                scope: inv.scope,
                total: inv.total,
                succeeded: counts.succeeded,
                failed: counts.failed,
                counts,
                estimated_seconds: inv.estimated_seconds,
                estimated_ms: inv.estimated_ms,
                clearing,
                clearing_promised_at: promise.map(rfc3339),
                created_at: rfc3339(inv.created_at),
                started_at: inv.started_at.map(rfc3339),
                finished_at: inv.finished_at.map(rfc3339),
                covered: (covered_total > 0).then(|| CoveredJson {
                    total: covered_total,
                    urls: covered
                        .into_iter()
                        .map(|(url, cleared_by)| CoveredUrlJson { url, cleared_by })
                        .collect(),
                }),
                page,
            }));
    }
    let all = View {
        progress_only: false,
        status: None,
        urls_after: None,
        urls_limit: view.urls_limit,
        batches_after: None,
    };
    let counts_links = std::iter::once(CountLink {
        key: "all",
        label: "All",
        count: inv.total,
        href: all.href(id),
        current: view.status.is_none(),
    })
    .chain(UrlStatus::ALL.iter().map(|&s| {
        CountLink {
            key: s.as_str(),
            label: url_status_label(s),
            count: counts.of(s),
            href: View {
                status: Some(s),
                ..all.clone()
            }
            .href(id),
            current: view.status == Some(s),
        }
    }))
    .collect();
    let page = InvalidationPage {
        nav: Nav::from(&current),
        inv: Summary::from(&inv),
        counts: counts_links,
        filter: view.status.map(UrlStatus::as_str).unwrap_or(""),
        matching: view.status.map_or(inv.total, |s| counts.of(s)),
        urls: urls.urls.into_iter().map(UrlRow::from).collect(),
        urls_first: view.urls_after.map(|_| view.with_urls_after(None).href(id)),
        urls_next,
        batches: batch_rows,
        batches_total: batches.total,
        batches_first: view
            .batches_after
            .map(|_| view.with_batches_after(None).href(id)),
        batches_next,
        progress_only: view.progress_only,
        clearing,
        can_check: inv.status.is_finished()
            && counts.succeeded > 0
            && (inv.scope != Scope::Everything),
        check: if progress.cache_checked {
            check_view(&state, id).await?
        } else {
            None
        },
        covered,
        covered_total,
    };
    let mut response = render(StatusCode::OK, &page)?;
    response.headers_mut().insert(
        actix_web::http::header::VARY,
        actix_web::http::header::HeaderValue::from_static("Accept"),
    );
    Ok(response)
}

fn url_status_label(status: UrlStatus) -> &'static str {
    match status {
        UrlStatus::Queued => "Queued",
        UrlStatus::Retrying => "Retrying",
        UrlStatus::Submitted => "Submitted",
        UrlStatus::Succeeded => "Succeeded",
        UrlStatus::Failed => "Failed",
    }
}

/// `POST /invalidations/{id}/check`: *Check the cache*, in the background; the page shows
/// its progress and result.
pub async fn check(
    current: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    cache_check::start(&state.store, current.user.id, id).await?;
    Ok(see_other(&format!("/invalidations/{id}#cache-check")))
}

/// `POST /invalidations/{id}/again`: a new invalidation of the URLs the last check found stale.
pub async fn again(
    current: CurrentUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let new_id = invalidations::invalidate_stale(&state, &current.user, id.into_inner()).await?;
    Ok(see_other(&format!("/invalidations/{new_id}")))
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
    /// The CSV export with the same filters.
    csv_href: String,
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

impl HistoryQuery {
    /// The filters the history page and its CSV export apply.
    fn filter(&self) -> HistoryFilter {
        HistoryFilter {
            status: InvalidationStatus::parse(&self.status),
            username: self.user.trim().to_string(),
            url: self.url.trim().to_string(),
        }
    }
}

/// `GET /invalidations`: newest first, filtered by status, user and URL substring.
pub async fn history(
    current: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let filter = query.filter();
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
    let csv_href = format!(
        "/invalidations.csv?status={status}&user={}&url={}",
        q(&filter.username),
        q(&filter.url)
    );
    let page = HistoryPage {
        nav: Nav::from(&current),
        items: found.items.iter().map(Summary::from).collect(),
        pager,
        status: status.to_string(),
        user: filter.username,
        url: filter.url,
        statuses,
        csv_href,
    };
    render(StatusCode::OK, &page)
}

/// Invalidations per page of the CSV export: the export is written page by page as it is
/// read, never held whole in memory.
const CSV_PAGE: i64 = 500;

/// `GET /invalidations.csv`: the history with the history page's filters, one row per
/// invalidation (who, when, status, counts, duration, provider, what its rows are), streamed.
pub async fn export_csv(
    _current: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let filter = query.filter();
    let header = csv_record(&[
        "id",
        "created_at",
        "created_by",
        "status",
        "provider",
        "total",
        "succeeded",
        "failed",
        "duplicates_dropped",
        "estimated_ms",
        "duration_ms",
        "started_at",
        "finished_at",
        "retry_of",
        "scope",
    ]);
    // State: (next page starts before this id, finished).
    let pages = futures_util::stream::unfold(
        (state, filter, None::<i64>, false),
        |(state, filter, before, done)| async move {
            if done {
                return None;
            }
            let page = match state
                .store
                .invalidations_before(&filter, before, CSV_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = ?e, "CSV export failed part way");
                    return Some((Err(AppError::from(e)), (state, filter, before, true)));
                }
            };
            let last = page.len() < CSV_PAGE as usize;
            let next = page.last().map(|i| i.id);
            let mut chunk = Vec::new();
            for i in &page {
                let provider = serde_json::from_str::<ProviderSnapshot>(&i.provider_settings)
                    .map(|p| p.describe())
                    .unwrap_or_else(|_| i.provider.clone());
                let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                chunk.extend(csv_record(&[
                    &i.id.to_string(),
                    &rfc3339(i.created_at),
                    &i.created_by_name,
                    i.status.as_str(),
                    &provider,
                    &i.total.to_string(),
                    &i.succeeded.to_string(),
                    &i.failed.to_string(),
                    &i.duplicates_dropped.to_string(),
                    &opt(i.estimated_ms),
                    &opt(i.finished_at.map(|f| f - i.created_at)),
                    &i.started_at.map(rfc3339).unwrap_or_default(),
                    &i.finished_at.map(rfc3339).unwrap_or_default(),
                    &opt(i.retry_of),
                    i.scope.as_str(),
                ]));
            }
            Some((
                Ok(web::Bytes::from(chunk)),
                (state, filter, next, last || next.is_none()),
            ))
        },
    );
    let body = futures_util::stream::once(async move { Ok(web::Bytes::from(header)) }).chain(pages);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"invalidations.csv\"",
        ))
        .streaming(body))
}

/// One CSV record (RFC 4180 quoting, CRLF), by the csv crate.
fn csv_record(fields: &[&str]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = writer.write_record(fields);
    writer.into_inner().unwrap_or_default()
}
