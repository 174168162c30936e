//! Legacy key ids imported from the Node.js system (issue 17): reads, and the one
//! transaction of an import. The `Keystore` impl in `lib.rs` delegates here.

use keyflow_kms::keystore::{StoreError, WriteOutcome};
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::model::KeyVersionRecord;
use keyflow_kms::{KeyVersion, Purpose};
use sqlx::error::ErrorKind;
use sqlx::Row;

use crate::lifecycle::{bump, check_kek};
use crate::SqliteKeystore;

/// A constraint failure (duplicate, second active version, unknown version): the
/// import's precondition did not hold.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if !matches!(d.kind(), ErrorKind::Other))
}

impl SqliteKeystore {
    pub(crate) async fn legacy_list(&self) -> Result<Vec<LegacyKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT legacy_key_id, purpose, version, legacy_status, imported_at FROM legacy_keys \
             ORDER BY purpose, version, legacy_key_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        rows.iter()
            .map(|r| {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(StoreError::backend);
                let version: i64 = r.try_get("version").map_err(StoreError::backend)?;
                Ok(LegacyKeyRecord {
                    legacy_key_id: get("legacy_key_id")?,
                    purpose: Purpose::new(&get("purpose")?).map_err(StoreError::backend)?,
                    version: u32::try_from(version)
                        .map_err(StoreError::backend)
                        .and_then(|v| KeyVersion::new(v).map_err(StoreError::backend))?,
                    legacy_status: get("legacy_status")?,
                    imported_at: r.try_get("imported_at").map_err(StoreError::backend)?,
                })
            })
            .collect()
    }

    pub(crate) async fn legacy_import(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        bump(&mut tx).await?;
        check_kek(&mut tx, versions).await?;
        for r in versions {
            match self.insert(&mut tx, r, false, &sealer).await {
                Ok(1) => {}
                Ok(_) => return rollback(tx).await,
                Err(e) if is_conflict(&e) => return rollback(tx).await,
                Err(e) => return Err(StoreError::backend(e)),
            }
        }
        for k in keys {
            let done = sqlx::query(
                "INSERT INTO legacy_keys (legacy_key_id, purpose, version, legacy_status, imported_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&k.legacy_key_id)
            .bind(k.purpose.as_str())
            .bind(i64::from(k.version.get()))
            .bind(&k.legacy_status)
            .bind(k.imported_at)
            .execute(&mut *tx)
            .await;
            match done {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => return rollback(tx).await,
                Err(e) => return Err(StoreError::backend(e)),
            }
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(WriteOutcome::Applied)
    }
}

async fn rollback(tx: sqlx::Transaction<'_, sqlx::Sqlite>) -> Result<WriteOutcome, StoreError> {
    tx.rollback().await.map_err(StoreError::backend)?;
    Ok(WriteOutcome::Conflict)
}
