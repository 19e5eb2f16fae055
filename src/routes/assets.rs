//! The asset catalogue: search, sort, pages, selection, CSV import.

use super::{Nav, Pager, StoredTime, q, render, see_other};
use crate::domain::catalogue;
use crate::error::AppError;
use crate::session::{AdminUser, CurrentUser};
use crate::state::AppState;
use crate::store::{AssetCount, AssetKey, AssetPage, AssetSort, PageStart};
use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Template)]
#[template(path = "assets.html")]
pub struct AssetsPage {
    nav: Nav,
    q: String,
    sort: &'static str,
    /// The page's rows, as kept in memory for the next request of the same page.
    found: Arc<AssetPage>,
    /// Links to the first, previous and next pages, where there are such pages.
    first: Option<String>,
    previous: Option<String>,
    next: Option<String>,
    imported: Option<i64>,
    import_counts: Option<ImportCounts>,
    import_errors: Vec<String>,
    /// Right after an import: the assets whose content changed under the same ID, for
    /// *Invalidate CDN* (the first `MAX_CHANGED_IDS`).
    changed_ids: Vec<String>,
}

impl AssetsPage {
    /// "120 assets", "1,000 assets", "More than 1,000 assets".
    fn count_text(&self) -> String {
        match self.found.count {
            AssetCount::Exactly(n) => format!("{} assets", thousands(n)),
            AssetCount::MoreThan(n) => format!("More than {} assets", thousands(n)),
        }
    }
}

/// 10000 as "10,000" (counts are never negative).
fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// What the last import did to the catalogue, as the redirect after it tells.
pub struct ImportCounts {
    new: u64,
    changed: u64,
    unchanged: u64,
}

#[derive(Deserialize, Default)]
pub struct AssetsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    /// A page starting after this row key (see [`AssetKey::token`]).
    #[serde(default)]
    after: Option<String>,
    /// A page ending before this row key.
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    imported: Option<i64>,
    #[serde(default)]
    new: Option<u64>,
    #[serde(default)]
    changed: Option<u64>,
    #[serde(default)]
    unchanged: Option<u64>,
    /// The import's changed IDs, kept server-side under this token.
    #[serde(default)]
    changes: Option<String>,
}

async fn page(
    state: &AppState,
    current: &CurrentUser,
    query: AssetsQuery,
    import_errors: Vec<String>,
) -> Result<AssetsPage, AppError> {
    let sort = AssetSort::parse(&query.sort);
    let search = query.q.trim().to_string();
    let changed_ids = match query
        .changes
        .as_deref()
        .filter(|_| query.imported.is_some())
    {
        Some(token) => state.store.import_changes(token).await?.unwrap_or_default(),
        None => Vec::new(),
    };
    // A key that does not parse (an edited link, or one of the other order) starts over.
    let key = |token: &Option<String>| token.as_deref().and_then(|t| AssetKey::parse(t, sort));
    let start = match (key(&query.after), key(&query.before)) {
        (Some(after), _) => PageStart::After(after),
        (None, Some(before)) => PageStart::Before(before),
        (None, None) => PageStart::First,
    };
    let found = state
        .store
        .list_assets(&search, sort, &start, Pager::PER_PAGE)
        .await?;
    let href = |cursor: &str| format!("/assets?q={}&sort={}{cursor}", q(&search), sort.as_str());
    let first = found.previous.is_some().then(|| href(""));
    let previous = found
        .previous
        .as_ref()
        .map(|k| href(&format!("&before={}", k.token())));
    let next = found
        .next
        .as_ref()
        .map(|k| href(&format!("&after={}", k.token())));
    Ok(AssetsPage {
        nav: Nav::from(current),
        q: search,
        sort: sort.as_str(),
        first,
        previous,
        next,
        found,
        imported: query.imported,
        import_counts: match (query.new, query.changed, query.unchanged) {
            (Some(new), Some(changed), Some(unchanged)) => Some(ImportCounts {
                new,
                changed,
                unchanged,
            }),
            _ => None,
        },
        import_errors,
        changed_ids,
    })
}

pub async fn list(
    current: CurrentUser,
    state: web::Data<AppState>,
    query: web::Query<AssetsQuery>,
) -> Result<HttpResponse, AppError> {
    render(
        StatusCode::OK,
        &page(&state, &current, query.into_inner(), Vec::new()).await?,
    )
}

/// Reads the multipart body: the CSRF token and the file, refusing more than the upload limit.
async fn read_upload(mut payload: Multipart, limit: usize) -> Result<(String, Vec<u8>), AppError> {
    let mut csrf = String::new();
    let mut file = Vec::new();
    let mut total = 0;
    while let Some(field) = payload.next().await {
        let mut field = field
            .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        let mut data = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk
                .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}")))?;
            total += chunk.len();
            if total > limit {
                return Err(AppError::PayloadTooLarge(format!(
                    "The upload is larger than {} KiB, the most this server accepts. Split the catalogue into several files.",
                    limit / 1024
                )));
            }
            data.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "csrf_token" => csrf = String::from_utf8_lossy(&data).into_owned(),
            "file" => file = data,
            _ => {}
        }
    }
    Ok((csrf, file))
}

pub async fn import(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    payload: Multipart,
) -> Result<HttpResponse, AppError> {
    let (csrf, file) = match read_upload(payload, state.config.max_upload_bytes).await {
        Ok(upload) => upload,
        // A body that is not a multipart form cannot carry this session's token.
        Err(AppError::BadRequest(_)) => (String::new(), Vec::new()),
        Err(e) => return Err(e),
    };
    admin.session.check_csrf(&csrf)?;
    let parsed = catalogue::parse(&file);
    drop(file);
    match parsed {
        Ok(rows) => {
            let report = state.store.import_catalogue(&rows, |_| {}).await?;
            tracing::info!(
                admin = %admin.user.username,
                read = report.read,
                new = report.new,
                changed = report.changed,
                unchanged = report.unchanged,
                "catalogue imported"
            );
            // The changed IDs are kept server-side (they could not travel in an address);
            // the page after the redirect offers Invalidate CDN for them.
            let token = {
                use argon2::password_hash::rand_core::{OsRng, RngCore};
                format!("{:016x}", OsRng.next_u64())
            };
            state
                .store
                .save_import_changes(&token, &report.changed_ids)
                .await?;
            Ok(see_other(&format!(
                "/assets?imported={}&new={}&changed={}&unchanged={}&changes={token}",
                report.read, report.new, report.changed, report.unchanged
            )))
        }
        Err(mut errors) => {
            let shown = 50;
            if errors.len() > shown {
                let more = errors.len() - shown;
                errors.truncate(shown);
                errors.push(format!("… and {more} more errors."));
            }
            render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(&state, &admin, AssetsQuery::default(), errors).await?,
            )
        }
    }
}
