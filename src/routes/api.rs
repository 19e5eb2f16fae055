//! The JSON API under `/api/v1/`: `Authorization: Bearer <token>`, no cookies, no CSRF, errors
//! as `application/problem+json` (RFC 9457). Handlers call the same application verbs as the
//! pages (`crate::invalidations`), so the API cannot do what the pages forbid.

use super::invalidations::{UrlJson, rfc3339};
use crate::domain::api_token;
use crate::domain::status::UrlStatus;
use crate::domain::url_list;
use crate::domain::variants::Scope;
use crate::invalidations::{self, InvalidationError, load_settings};
use crate::state::AppState;
use crate::store::{StoreError, User};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Requests a token may make in a burst, and per second after it (documented in README).
pub const TOKEN_BURST: f64 = 20.0;
pub const TOKEN_PER_SECOND: f64 = 10.0;
/// Most URLs one `GET` returns.
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 100;

/// One bad line of a submitted list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based place in the list given (`urls`, `assets`) or expanded from asset IDs.
    line: usize,
    /// The URL refused (invalidations).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// The asset refused (catalogue writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    message: String,
}

/// An error as `application/problem+json`.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Conflict(String),
    TooLarge(String),
    Unprocessable {
        detail: String,
        errors: Vec<LineError>,
    },
    TooManyRequests(u64),
    Internal(anyhow::Error),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.title(), self.status_code().as_u16())
    }
}

impl ApiError {
    fn title(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "Not authenticated",
            Self::Forbidden(_) => "Not allowed",
            Self::NotFound(_) => "Not found",
            Self::BadRequest(_) => "Bad request",
            Self::Conflict(_) => "Nothing to do",
            Self::TooLarge(_) => "Request too large",
            Self::Unprocessable { .. } => "Invalid input",
            Self::TooManyRequests(_) => "Too many requests",
            Self::Internal(_) => "Internal error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Unauthorized(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::BadRequest(d)
            | Self::Conflict(d)
            | Self::TooLarge(d) => d.clone(),
            Self::Unprocessable { detail, .. } => detail.clone(),
            Self::TooManyRequests(wait) => format!(
                "This token made more than {TOKEN_BURST} requests at once or {TOKEN_PER_SECOND} a \
                 second; try again in {wait} s."
            ),
            Self::Internal(_) => "The server failed; the error is in its log.".into(),
        }
    }
}

/// An error (RFC 9457), as every failed call answers it: `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    /// One per bad line, on 422 for a list of URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<LineError>>)]
    errors: Option<&'a [LineError]>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = ?e, "API request failed");
        }
        let errors = match self {
            Self::Unprocessable { errors, .. } if !errors.is_empty() => Some(errors.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: "about:blank",
            title: self.title(),
            status: self.status_code().as_u16(),
            detail: self.detail(),
            errors,
        };
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/problem+json");
        if let Self::Unauthorized(_) = self {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Self::TooManyRequests(wait) = self {
            response.insert_header(("Retry-After", wait.to_string()));
        }
        response.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<InvalidationError> for ApiError {
    fn from(e: InvalidationError) -> Self {
        use InvalidationError as E;
        match e {
            E::NotFound(_) => Self::NotFound(e.to_string()),
            E::NothingToRetry(m) => Self::Conflict(m),
            E::NotAllowed(m) => Self::Unprocessable {
                detail: m,
                errors: Vec::new(),
            },
            E::Settings(_) => Self::Internal(e.into()),
            E::Store(e) => e.into(),
        }
    }
}

/// The token's owner, put in the request by [`guard`].
#[derive(Clone)]
struct Caller(User);

/// The user whose token authenticated the request.
pub struct ApiUser(pub User);

impl actix_web::FromRequest for ApiUser {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Caller>()
                .map(|c| Self(c.0.clone()))
                .ok_or_else(|| ApiError::Unauthorized("No API token was checked.".into())),
        )
    }
}

/// Checks the bearer token before anything else (body parsing included): refused when missing,
/// unknown, revoked, its owner disabled, or over its rate; a login cookie is never enough.
pub async fn guard(
    admin_only: bool,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState registered")
        .clone();
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        let detail = if req.headers().contains_key(actix_web::http::header::COOKIE) {
            "The API takes an API token (Authorization: Bearer …), not a login cookie; create one on the API tokens page."
        } else {
            "Send an API token: Authorization: Bearer <token> (create one on the API tokens page)."
        };
        return Err(ApiError::Unauthorized(detail.into()).into());
    };
    let refused = || {
        ApiError::Unauthorized(
            "The API token is unknown or revoked, or its owner is disabled.".into(),
        )
    };
    let hash = api_token::hash(token.trim()).ok_or_else(refused)?;
    let (user, _token_id) = state
        .store
        .user_of_api_token(&hash)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(refused)?;
    if let Some(wait) = throttle(&hash, Instant::now()) {
        return Err(ApiError::TooManyRequests(wait).into());
    }
    if admin_only && user.role != crate::domain::status::Role::Admin {
        return Err(ApiError::Forbidden("This call is for admins' tokens only.".into()).into());
    }
    req.extensions_mut().insert(Caller(user));
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Per-token rate limit: a bucket of [`TOKEN_BURST`] requests refilled at [`TOKEN_PER_SECOND`].
/// Returns the seconds to wait when the token is over it. Per process, keyed by the token's
/// hash (ids repeat across databases).
fn throttle(token_hash: &str, now: Instant) -> Option<u64> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, (f64, Instant)>>> = OnceLock::new();
    let mut buckets = BUCKETS
        .get_or_init(Mutex::default)
        .lock()
        .expect("throttle lock");
    let (tokens, at) = buckets
        .entry(token_hash.to_string())
        .or_insert((TOKEN_BURST, now));
    let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * TOKEN_PER_SECOND)
        .min(TOKEN_BURST);
    *at = now;
    if refilled >= 1.0 {
        *tokens = refilled - 1.0;
        None
    } else {
        *tokens = refilled;
        Some(((1.0 - refilled) / TOKEN_PER_SECOND).ceil().max(1.0) as u64)
    }
}

/// `POST /api/v1/invalidations` body: URLs, or asset IDs to expand by the saved template.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvalidationBody {
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    assets: Option<Vec<String>>,
    /// With `assets`: `urls` (the template's URLs, the default), or every cached variant of
    /// the assets as an admin mapped them — `tags` or `prefixes`.
    #[serde(default)]
    scope: Option<String>,
}

/// An invalidation as the API returns it.
#[derive(Serialize, utoipa::ToSchema)]
struct InvalidationJson {
    id: i64,
    /// What `urls` are: urls, tags, prefixes or everything (site roots).
    #[schema(value_type = String)]
    scope: Scope,
    /// queued, running, succeeded, partially_failed or failed.
    #[schema(value_type = String)]
    status: crate::store::InvalidationStatus,
    created_by: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    provider: String,
    total: i64,
    counts: CountsJson,
    estimated_ms: Option<i64>,
    estimate: String,
    retry_of: Option<i64>,
    urls: Vec<UrlJson>,
    /// The next page of URLs (same filter and size); null on the last.
    urls_next: Option<String>,
}

/// URLs of an invalidation in each state.
#[derive(Serialize, utoipa::ToSchema)]
struct CountsJson {
    queued: i64,
    retrying: i64,
    submitted: i64,
    succeeded: i64,
    failed: i64,
}

impl From<crate::store::UrlCounts> for CountsJson {
    fn from(c: crate::store::UrlCounts) -> Self {
        Self {
            queued: c.queued,
            retrying: c.retrying,
            submitted: c.submitted,
            succeeded: c.succeeded,
            failed: c.failed,
        }
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    status: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn invalidation_json(
    state: &AppState,
    id: i64,
    query: &PageQuery,
) -> Result<InvalidationJson, ApiError> {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(UrlStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "\"{s}\" is not a URL status (queued, retrying, submitted, succeeded, failed)."
            ))
        })?),
    };
    let limit = page_limit(query.limit)?;
    let progress = state
        .store
        .invalidation_progress(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("There is no invalidation #{id}.")))?;
    let (inv, counts) = (progress.invalidation, progress.counts);
    let page = state
        .store
        .invalidation_url_page(id, status, query.after, limit)
        .await?;
    let urls_next = page.next_after.map(|after| {
        let filter = status.map_or(String::new(), |s| format!("&status={s}"));
        format!("/api/v1/invalidations/{id}?after={after}&limit={limit}{filter}")
    });
    Ok(InvalidationJson {
        id: inv.id,
        scope: inv.scope,
        status: inv.status,
        created_by: inv.created_by_name.clone(),
        created_at: rfc3339(inv.created_at),
        started_at: inv.started_at.map(rfc3339),
        finished_at: inv.finished_at.map(rfc3339),
        provider: inv.provider.clone(),
        total: inv.total,
        counts: counts.into(),
        estimated_ms: inv.estimated_ms,
        estimate: super::invalidations::estimate_text(&inv),
        retry_of: inv.retry_of,
        urls: page.urls.into_iter().map(UrlJson::from).collect(),
        urls_next,
    })
}

/// A page size asked for (`limit`), or the default; refused outside 1 to [`MAX_PAGE`].
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to {MAX_PAGE}."
        )));
    }
    Ok(limit)
}

fn created(json: InvalidationJson) -> HttpResponse {
    HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/invalidations/{}", json.id)))
        .json(json)
}

/// `POST /api/v1/invalidations`: the same checks as Continue; `Idempotency-Key` makes a
/// repeated request return the first result.
#[utoipa::path(
    post,
    path = "/api/v1/invalidations",
    request_body = NewInvalidationBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeated request with the same key returns the first result")),
    responses(
        (status = 201, description = "Queued (or the first result of the same key)", body = InvalidationJson),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad URLs, one error per line; nothing queued", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Token over its rate", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn create(
    ApiUser(user): ApiUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewInvalidationBody>,
) -> Result<HttpResponse, ApiError> {
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().unwrap_or_default().trim();
            if k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1 to 200 printable ASCII characters.".into(),
                ));
            }
            Some(format!("api:{k}"))
        }
    };
    if let Some(key) = &key
        && let Some(id) = state.store.find_invalidation_by_key(user.id, key).await?
    {
        return Ok(created(
            invalidation_json(&state, id, &PageQuery::default()).await?,
        ));
    }
    let settings = load_settings(&state).await?;
    let body = body.into_inner();
    let scope = match body.scope.as_deref().map(str::trim) {
        None | Some("" | "urls") => Scope::Urls,
        Some(other) => match Scope::parse(other) {
            Some(s @ (Scope::Tags | Scope::Prefixes)) => s,
            _ => {
                return Err(ApiError::Unprocessable {
                    detail: format!(
                        "\"{other}\" is not a scope: send urls, tags or prefixes (purging everything is an admin's action on the settings page)."
                    ),
                    errors: Vec::new(),
                });
            }
        },
    };
    if scope != Scope::Urls {
        return create_variants(&state, &user, key, &settings, body, scope).await;
    }
    let urls: Vec<String> = match body {
        NewInvalidationBody {
            urls: Some(urls),
            assets: None,
            ..
        } => urls,
        NewInvalidationBody {
            urls: None,
            assets: Some(assets),
            ..
        } => {
            if settings.template.is_empty() {
                return Err(ApiError::Unprocessable {
                    detail: "The CDN invalidation template is empty, so assets expand to no URLs: \
                             send urls, or ask an admin to set the template."
                        .into(),
                    errors: Vec::new(),
                });
            }
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<&str> = assets
                .iter()
                .map(|a| a.trim())
                .filter(|a| !a.is_empty() && seen.insert(*a))
                .collect();
            settings.template.expand_all(ids.iter().copied())
        }
        _ => {
            return Err(ApiError::Unprocessable {
                detail: "Send either \"urls\" (a list of URLs) or \"assets\" (a list of asset IDs), not both."
                    .into(),
                errors: Vec::new(),
            });
        }
    };
    // One URL a line, as the page's list: a line break inside one would split it.
    let broken: Vec<LineError> = urls
        .iter()
        .enumerate()
        .filter(|(_, u)| u.contains(['\n', '\r']))
        .map(|(i, u)| LineError {
            line: i + 1,
            url: Some(u.clone()),
            id: None,
            message: "contains a line break.".into(),
        })
        .collect();
    if !broken.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: format!("{} URLs are not valid; nothing was queued.", broken.len()),
            errors: broken,
        });
    }
    let policy = invalidations::host_policy(&state.store, &settings).await?;
    let text = urls
        .iter()
        .map(|u| if u.trim().is_empty() { "" } else { u.as_str() })
        .collect::<Vec<_>>()
        .join("\n");
    let list = url_list::parse(&text, &policy, state.config.max_urls).map_err(|errors| {
        let lines: Vec<LineError> = errors
            .lines
            .iter()
            .map(|e| LineError {
                line: e.line,
                url: Some(urls.get(e.line - 1).cloned().unwrap_or_default()),
                id: None,
                message: e.reason.clone(),
            })
            .collect();
        let detail = match (&errors.list, lines.len()) {
            (Some(list), _) => list.clone(),
            (None, 1) => "1 URL is not valid; nothing was queued.".into(),
            (None, n) => format!("{n} URLs are not valid; nothing was queued."),
        };
        ApiError::Unprocessable {
            detail,
            errors: lines,
        }
    })?;
    let key = key_or_random(key);
    let urls = list.urls.iter().map(|u| u.as_str().to_string()).collect();
    let id = invalidations::queue(&state, &user, key, urls, list.duplicates_dropped, None).await?;
    Ok(created(
        invalidation_json(&state, id, &PageQuery::default()).await?,
    ))
}

/// The request's idempotency key, or a random one when it sent none (every call queues).
fn key_or_random(key: Option<String>) -> String {
    key.unwrap_or_else(|| {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        format!(
            "api-random:{:016x}{:016x}",
            OsRng.next_u64(),
            OsRng.next_u64()
        )
    })
}

/// `POST /api/v1/invalidations` with `scope` `tags` or `prefixes`: every cached variant of
/// `assets`, as the page's Continue does; 422 naming each refused asset, nothing queued.
async fn create_variants(
    state: &AppState,
    user: &crate::store::User,
    key: Option<String>,
    settings: &crate::domain::settings::Settings,
    body: NewInvalidationBody,
    scope: Scope,
) -> Result<HttpResponse, ApiError> {
    let unprocessable = |detail: String| ApiError::Unprocessable {
        detail,
        errors: Vec::new(),
    };
    let (Some(assets), None) = (body.assets, body.urls) else {
        return Err(unprocessable(format!(
            "Every variant by {} takes \"assets\" (asset IDs), not \"urls\".",
            scope.label()
        )));
    };
    let (variants, _) = super::variants::load(state)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    if variants.scope() != Some(scope) {
        return Err(unprocessable(format!(
            "Clearing by {} is not offered: an admin chooses how assets map to the cache (settings, Every variant of an asset).",
            scope.label()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<&str> = assets
        .iter()
        .map(|a| a.trim())
        .filter(|a| seen.insert(*a))
        .collect();
    if ids.len() > state.config.max_urls {
        return Err(unprocessable(format!(
            "{} assets were sent; at most {} can be cleared at once.",
            ids.len(),
            state.config.max_urls
        )));
    }
    let snapshot = invalidations::active_snapshot(&state.store.load_provider().await?);
    let policy = invalidations::host_policy(&state.store, settings).await?;
    let targets = invalidations::plan_variants(settings, &policy, &snapshot, scope, &ids).map_err(
        |errors| {
            let lines: Vec<LineError> = errors
                .iter()
                .map(|e| LineError {
                    line: ids
                        .iter()
                        .position(|id| *id == e.asset_id)
                        .map_or(0, |p| p + 1),
                    url: None,
                    id: (!e.asset_id.is_empty()).then(|| e.asset_id.clone()),
                    message: e.reason.clone(),
                })
                .collect();
            ApiError::Unprocessable {
                detail: format!(
                    "{} of the assets cannot be cleared by {}; nothing was queued.",
                    lines.len(),
                    scope.label()
                ),
                errors: lines,
            }
        },
    )?;
    let key = key_or_random(key);
    let id = invalidations::queue_targets(state, user, key, targets, None).await?;
    Ok(created(
        invalidation_json(state, id, &PageQuery::default()).await?,
    ))
}

/// `GET /api/v1/invalidations/{id}`: counts, status, estimate and a page of URLs.
#[utoipa::path(
    get,
    path = "/api/v1/invalidations/{id}",
    params(("id" = i64, Path, description = "The invalidation"), PageQuery),
    responses(
        (status = 200, body = InvalidationJson),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn show(
    ApiUser(_): ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(invalidation_json(&state, id.into_inner(), &query).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    url: String,
    limit: Option<i64>,
    before: Option<i64>,
}

/// One invalidation in a list.
#[derive(Serialize, utoipa::ToSchema)]
struct SummaryJson {
    id: i64,
    #[schema(value_type = String)]
    status: crate::store::InvalidationStatus,
    created_by: String,
    created_at: String,
    finished_at: Option<String>,
    provider: String,
    total: i64,
    succeeded: i64,
    failed: i64,
    estimated_ms: Option<i64>,
    retry_of: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ListJson {
    items: Vec<SummaryJson>,
    /// The next (older) page with the same filters; null on the last.
    next: Option<String>,
}

/// `GET /api/v1/invalidations?status=&user=&url=&limit=&before=`: newest first, keyset paged.
#[utoipa::path(
    get,
    path = "/api/v1/invalidations",
    params(ListQuery),
    responses(
        (status = 200, body = ListJson),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn list(
    ApiUser(_): ApiUser,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let status = match query.status.trim() {
        "" => None,
        s => Some(crate::store::InvalidationStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "\"{s}\" is not a status (queued, running, succeeded, partially_failed, failed)."
            ))
        })?),
    };
    let limit = page_limit(query.limit)?;
    let filter = crate::store::HistoryFilter {
        status,
        username: query.user.trim().to_string(),
        url: query.url.trim().to_string(),
    };
    let items = state
        .store
        .invalidations_before(&filter, query.before, limit)
        .await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.id))
        .flatten()
        .map(|last| {
            let mut href = format!("/api/v1/invalidations?limit={limit}&before={last}");
            for (name, value) in [
                ("status", query.status.trim()),
                ("user", filter.username.as_str()),
                ("url", filter.url.as_str()),
            ] {
                if !value.is_empty() {
                    href.push_str(&format!("&{name}={}", super::q(value)));
                }
            }
            href
        });
    let items = items
        .into_iter()
        .map(|i| SummaryJson {
            id: i.id,
            status: i.status,
            created_by: i.created_by_name,
            created_at: rfc3339(i.created_at),
            finished_at: i.finished_at.map(rfc3339),
            provider: i.provider,
            total: i.total,
            succeeded: i.succeeded,
            failed: i.failed,
            estimated_ms: i.estimated_ms,
            retry_of: i.retry_of,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ListJson { items, next }))
}

/// `POST /api/v1/invalidations/{id}/retry`: a new invalidation of the failed URLs.
#[utoipa::path(
    post,
    path = "/api/v1/invalidations/{id}/retry",
    params(("id" = i64, Path, description = "The invalidation whose failed URLs to send again")),
    responses(
        (status = 201, body = InvalidationJson),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn retry(
    ApiUser(user): ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let new_id = invalidations::retry(&state, &user, id.into_inner()).await?;
    Ok(created(
        invalidation_json(&state, new_id, &PageQuery::default()).await?,
    ))
}

/// Bodies that do not parse, or are too large, answer as problems too.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(move |err, _| {
            use actix_web::error::JsonPayloadError as E;
            let problem = match &err {
                E::OverflowKnownLength { .. } | E::Overflow { .. } => {
                    ApiError::TooLarge(format!("The body is larger than {limit} bytes."))
                }
                _ => ApiError::BadRequest(format!("The body is not the JSON expected: {err}")),
            };
            problem.into()
        })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssetsQuery {
    /// Substring of the ID or name (any case).
    #[serde(default)]
    q: String,
    /// `name` (default) or `modified`.
    #[serde(default)]
    sort: String,
    /// The `next` token of the previous page.
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AssetJson {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    modified_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AssetsJson {
    items: Vec<AssetJson>,
    /// "12345" or "more than 10000": counts stop at a bound.
    count: String,
    /// The next page's address with the same search; null on the last.
    next: Option<String>,
}

/// `GET /api/v1/assets?q=&sort=&after=&limit=`: the asset list's search, keyset paged.
#[utoipa::path(
    get,
    path = "/api/v1/assets",
    params(AssetsQuery),
    responses((status = 200, body = AssetsJson)),
    security(("token" = []))
)]
pub async fn assets(
    ApiUser(_): ApiUser,
    state: web::Data<AppState>,
    query: web::Query<AssetsQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::store::{AssetCount, AssetKey, AssetSort, PageStart};
    let query = query.into_inner();
    let sort = AssetSort::parse(&query.sort);
    let limit = page_limit(query.limit)?;
    let start = match query.after.as_deref() {
        None => PageStart::First,
        Some(token) => PageStart::After(AssetKey::parse(token, sort).ok_or_else(|| {
            ApiError::BadRequest("after is not a next token of this sort order.".into())
        })?),
    };
    let search = query.q.trim().to_string();
    let page = state
        .store
        .list_assets(&search, sort, &start, limit)
        .await?;
    let next = page.next.as_ref().map(|k| {
        format!(
            "/api/v1/assets?q={}&sort={}&limit={limit}&after={}",
            super::q(&search),
            sort.as_str(),
            super::q(&k.token())
        )
    });
    Ok(HttpResponse::Ok().json(AssetsJson {
        items: page
            .assets
            .iter()
            .map(|a| AssetJson {
                id: a.id.clone(),
                name: a.name.clone(),
                kind: a.kind.clone(),
                modified_at: rfc3339(a.modified_at),
            })
            .collect(),
        count: match page.count {
            AssetCount::Exactly(n) => n.to_string(),
            AssetCount::MoreThan(n) => format!("more than {n}"),
        },
        next,
    }))
}

/// One asset to write.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetIn {
    id: String,
    #[serde(default)]
    name: String,
    /// image (default), video or other.
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetsBody {
    assets: Vec<AssetIn>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ImportJson {
    read: u64,
    new: u64,
    changed: u64,
    unchanged: u64,
    /// The changed assets (the first 10,000): invalidate these, content was replaced.
    changed_ids: Vec<String>,
}

/// `PUT /api/v1/assets` (admins): inserts or updates the assets given, by the CSV import's
/// rules, all or nothing; answers what changed.
#[utoipa::path(
    put,
    path = "/api/v1/assets",
    request_body = AssetsBody,
    responses(
        (status = 200, body = ImportJson),
        (status = 403, description = "Not an admin's token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad assets, one error each; nothing written", body = Problem, content_type = "application/problem+json"),
    ),
    security(("token" = []))
)]
pub async fn put_assets(
    ApiUser(admin): ApiUser,
    state: web::Data<AppState>,
    body: web::Json<AssetsBody>,
) -> Result<HttpResponse, ApiError> {
    use crate::domain::catalogue;
    let items = body.into_inner().assets;
    let mut rows = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match catalogue::row(&item.id, &item.name, &item.kind) {
            Ok(row) => rows.push(row),
            Err(message) => errors.push(LineError {
                line: i + 1,
                url: None,
                id: Some(item.id.clone()),
                message,
            }),
        }
    }
    if errors.is_empty() {
        errors.extend(
            catalogue::repeated_ids(&rows)
                .into_iter()
                .map(|(line, message)| LineError {
                    line,
                    url: None,
                    id: Some(items[line - 1].id.clone()),
                    message,
                }),
        );
    }
    if rows.is_empty() && errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "No assets given.".into(),
            errors,
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: format!(
                "{} assets are not valid; nothing was written.",
                errors.len()
            ),
            errors,
        });
    }
    let report = state.store.import_catalogue(&rows, |_| {}).await?;
    tracing::info!(admin = %admin.username, read = report.read, new = report.new, changed = report.changed, "catalogue written through the API");
    Ok(HttpResponse::Ok().json(ImportJson {
        read: report.read,
        new: report.new,
        changed: report.changed,
        unchanged: report.unchanged,
        changed_ids: report.changed_ids,
    }))
}

/// The API's OpenAPI 3.1 description, generated from the handlers and types above.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "cdn-invalidator API", version = "1"),
    paths(create, list, show, retry, assets, put_assets),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// Declares the `token` security scheme: `Authorization: Bearer <API token>`.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new)
            .add_security_scheme(
                "token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> HttpResponse {
    use utoipa::OpenApi;
    HttpResponse::Ok().json(ApiDoc::openapi())
}
