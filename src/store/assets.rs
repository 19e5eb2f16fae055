use super::{Result, Store, now_millis};
use crate::domain::{AssetId, AssetKind};

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Asset {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub modified_at: i64,
}

/// How the asset list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssetSort {
    #[default]
    Name,
    /// Most recently modified first.
    Modified,
}

impl AssetSort {
    pub fn parse(raw: &str) -> Self {
        if raw == "modified" {
            Self::Modified
        } else {
            Self::Name
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Modified => "modified",
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            Self::Name => "lower(name), id",
            Self::Modified => "modified_at DESC, id",
        }
    }
}

/// One page of assets and the total that matched.
#[derive(Debug, Clone)]
pub struct AssetPage {
    pub assets: Vec<Asset>,
    pub total: i64,
}

/// LIKE pattern for a case-insensitive substring, with the wildcards escaped.
pub(crate) fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{}%", escaped.to_lowercase())
}

impl Store {
    /// Inserts or updates every asset in one transaction: all or nothing.
    #[tracing::instrument(skip(self, assets), fields(count = assets.len()))]
    pub async fn upsert_assets(&self, assets: &[(AssetId, String, AssetKind)]) -> Result<()> {
        let now = now_millis();
        with_pool!(self, p => {
        let mut tx = p.begin().await?;
        for (id, name, kind) in assets {
            sqlx::query(
                "INSERT INTO assets (id, name, kind, modified_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                   modified_at = excluded.modified_at
                 WHERE assets.name <> excluded.name OR assets.kind <> excluded.kind",
            )
            .bind(id.as_str())
            .bind(name)
            .bind(kind.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
        })?;
        Ok(())
    }

    /// Assets whose ID or name contains `q` (case-insensitive), one page of them.
    #[tracing::instrument(skip(self))]
    pub async fn list_assets(
        &self,
        q: &str,
        sort: AssetSort,
        offset: i64,
        limit: i64,
    ) -> Result<AssetPage> {
        let pattern = like_pattern(q);
        let filter = "lower(id) LIKE $1 ESCAPE '\\' OR lower(name) LIKE $1 ESCAPE '\\'";
        let count_sql = format!("SELECT COUNT(*) FROM assets WHERE {filter}");
        let page_sql = format!(
            "SELECT id, name, kind, modified_at FROM assets WHERE {filter} ORDER BY {} LIMIT $2 OFFSET $3",
            sort.order_by()
        );
        let (total, assets) = with_pool!(self, p => {
            let total: i64 = sqlx::query_scalar(&count_sql).bind(&pattern).fetch_one(p).await?;
            let assets: Vec<Asset> = sqlx::query_as(&page_sql)
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(p)
                .await?;
            Ok::<_, sqlx::Error>((total, assets))
        })?;
        Ok(AssetPage { assets, total })
    }

    /// The first asset in name order, used for the template preview.
    pub async fn sample_asset_id(&self) -> Result<Option<String>> {
        Ok(with_pool!(self, p => {
            sqlx::query_scalar("SELECT id FROM assets ORDER BY lower(name), id LIMIT 1")
                .fetch_optional(p)
                .await
        })?)
    }
}
