use super::{Result, Store, now_millis};
use crate::domain::{AssetId, AssetKind};

/// A catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            Self::Name => "name COLLATE NOCASE, id",
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
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await?;
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
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM assets WHERE {filter}"))
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?;
        let assets = sqlx::query_as::<_, (String, String, String, i64)>(&format!(
            "SELECT id, name, kind, modified_at FROM assets WHERE {filter} ORDER BY {} LIMIT $2 OFFSET $3",
            sort.order_by()
        ))
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(id, name, kind, modified_at)| Asset { id, name, kind, modified_at })
        .collect();
        Ok(AssetPage { assets, total })
    }

    /// The first asset in name order, used for the template preview.
    pub async fn sample_asset_id(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM assets ORDER BY name COLLATE NOCASE, id LIMIT 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
