//! Legacy key ids imported from the Node.js system (issue 17): reads, and the one
//! transaction of an import ([`LegacyKeys`]).

use async_trait::async_trait;
use keyflow_core::{KeyVersion, Purpose};
use keyflow_kms::keystore::{LegacyKeys, StoreError, WriteOutcome};
use keyflow_kms::legacy::LegacyKeyRecord;
use keyflow_kms::model::KeyVersionRecord;

use crate::error::is_constraint_violation;
use crate::rows::Columns;
use crate::{conflict, db_error, Backend, SqlKeystore, Stmt};

#[async_trait]
impl<B: Backend> LegacyKeys for SqlKeystore<B> {
    async fn legacy_keys(&self) -> Result<Vec<LegacyKeyRecord>, StoreError> {
        let rows = self
            .all(Stmt::new(
                "SELECT legacy_key_id, purpose, version, legacy_status, imported_at \
                 FROM legacy_keys ORDER BY purpose, version, legacy_key_id",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LegacyKeyRecord {
                    legacy_key_id: r.text("legacy_key_id")?,
                    purpose: Purpose::new(&r.text("purpose")?).map_err(StoreError::backend)?,
                    version: u32::try_from(r.int("version")?)
                        .map_err(StoreError::backend)
                        .and_then(|v| KeyVersion::new(v).map_err(StoreError::backend))?,
                    legacy_status: r.text("legacy_status")?,
                    imported_at: r.int("imported_at")?,
                })
            })
            .collect()
    }

    async fn import_legacy(
        &self,
        versions: &[KeyVersionRecord],
        keys: &[LegacyKeyRecord],
    ) -> Result<WriteOutcome, StoreError> {
        let Some(mut tx) = self
            .begin_inserting(versions, is_constraint_violation)
            .await?
        else {
            return Ok(WriteOutcome::Conflict);
        };
        for k in keys {
            let done = tx
                .try_exec(
                    Stmt::new(
                        "INSERT INTO legacy_keys \
                         (legacy_key_id, purpose, version, legacy_status, imported_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&k.legacy_key_id)
                    .bind(k.purpose.as_str())
                    .bind(i64::from(k.version.get()))
                    .bind(&k.legacy_status)
                    .bind(k.imported_at),
                )
                .await;
            match done {
                Ok(_) => {}
                Err(e) if is_constraint_violation(&e) => return conflict(tx).await,
                Err(e) => return Err(db_error(e)),
            }
        }
        tx.commit().await?;
        Ok(WriteOutcome::Applied)
    }
}
