//! The asset catalogue: search, sort, pages, selection, CSV import.

use super::{Nav, Pager, q, render, see_other};
use crate::domain::catalogue;
use crate::error::AppError;
use crate::session::{AdminUser, CurrentUser};
use crate::state::AppState;
use crate::store::{Asset, AssetSort};
use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "assets.html")]
pub struct AssetsPage {
    nav: Nav,
    q: String,
    sort: &'static str,
    assets: Vec<AssetRow>,
    pager: Pager,
    imported: Option<i64>,
    import_errors: Vec<String>,
}

pub struct AssetRow {
    id: String,
    name: String,
    kind: String,
    modified: String,
}

impl From<Asset> for AssetRow {
    fn from(a: Asset) -> Self {
        Self {
            modified: super::fmt_time(a.modified_at),
            id: a.id,
            name: a.name,
            kind: a.kind,
        }
    }
}

#[derive(Deserialize, Default)]
pub struct AssetsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    imported: Option<i64>,
}

async fn page(
    state: &AppState,
    current: &CurrentUser,
    query: AssetsQuery,
    import_errors: Vec<String>,
) -> Result<AssetsPage, AppError> {
    let sort = AssetSort::parse(&query.sort);
    let search = query.q.trim().to_string();
    let requested = query.page.unwrap_or(1).max(1);
    let mut assets = state
        .store
        .list_assets(
            &search,
            sort,
            (requested - 1) * Pager::PER_PAGE,
            Pager::PER_PAGE,
        )
        .await?;
    let pager = Pager::new(requested, assets.total, |p| {
        format!("/assets?q={}&sort={}&page={p}", q(&search), sort.as_str())
    });
    if pager.page != requested {
        assets = state
            .store
            .list_assets(&search, sort, pager.offset(), Pager::PER_PAGE)
            .await?;
    }
    Ok(AssetsPage {
        nav: Nav::from(current),
        q: search,
        sort: sort.as_str(),
        assets: assets.assets.into_iter().map(AssetRow::from).collect(),
        pager,
        imported: query.imported,
        import_errors,
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
    match catalogue::parse(&file) {
        Ok(rows) => {
            state.store.upsert_assets(&rows).await?;
            tracing::info!(admin = %admin.user.username, count = rows.len(), "catalogue imported");
            Ok(see_other(&format!("/assets?imported={}", rows.len())))
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
