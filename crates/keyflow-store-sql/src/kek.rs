//! [`KekBinding`]: the keystore's metadata (the recorded KEK id), its row sealer, the
//! first sealing of rows written before row MACs, and the KEK rotation's rewrap.

use std::sync::Arc;

use async_trait::async_trait;
use keyflow_kms::keystore::{KekBinding, StoreError, WriteOutcome};
use keyflow_kms::model::{KeyVersionRecord, RewrappedKey};
use keyflow_kms::row_mac::{RowSealer, META_ROW_MACS};

use crate::access::POLICY_COLUMNS;
use crate::keys::{COLUMNS, TOKEN_COLUMNS};
use crate::rows::{self, Columns};
use crate::{conflict, Backend, SqlKeystore, Stmt, Txn};

#[async_trait]
impl<B: Backend> KekBinding for SqlKeystore<B> {
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .one(Stmt::new("SELECT value FROM keyflow_meta WHERE key = $1").bind(key))
            .await?;
        row.map(|r| r.text("value")).transpose()
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.exec(
            Stmt::new(
                "INSERT INTO keyflow_meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value),
        )
        .await?;
        self.get_meta(key)
            .await?
            .ok_or_else(|| StoreError::Backend("metadata vanished after insert".into()))
    }

    fn install_row_sealer(&self, sealer: Arc<RowSealer>) {
        self.rows.install(sealer);
    }

    fn row_sealer(&self) -> Option<Arc<RowSealer>> {
        self.rows.current()
    }

    /// See [`keyflow_kms::KekBinding::seal_legacy_rows`].
    async fn seal_legacy_rows(&self) -> Result<u64, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        // A write first: the lock is taken before anything is read.
        let pending = tx
            .exec(
                Stmt::new(
                    "UPDATE keyflow_meta SET value = 'sealed' WHERE key = $1 AND value = 'pending'",
                )
                .bind(META_ROW_MACS),
            )
            .await?;
        if pending == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        tx.bump().await?;
        let already = tx
            .one(Stmt::new(
                "SELECT (SELECT COUNT(*) FROM key_versions WHERE row_mac IS NOT NULL) \
                 + (SELECT COUNT(*) FROM api_tokens WHERE row_mac IS NOT NULL) \
                 + (SELECT COUNT(*) FROM key_policies WHERE row_mac IS NOT NULL) AS n",
            ))
            .await?
            .map(|r| r.int("n"))
            .transpose()?;
        if already != Some(0) {
            tx.rollback().await?;
            tracing::error!("row_macs marker reset to pending while rows are sealed: refused");
            return Err(StoreError::Corrupt(
                "refused: the keystore says its rows await their first sealing, but rows are \
                 already sealed (the marker was reset by someone without the KEK)"
                    .into(),
            ));
        }
        let versions = tx
            .all(Stmt::new(format!(
                "SELECT {COLUMNS} FROM key_versions{}",
                B::FOR_UPDATE
            )))
            .await?;
        let mut sealed = 0u64;
        for row in &versions {
            let v = rows::version_record(row)?;
            tx.exec(reseal_version(&v, sealer.version_mac(&v))).await?;
            sealed += 1;
        }
        sealed += reseal_tokens_and_policies(&mut tx, None, &sealer).await?;
        tx.commit().await?;
        Ok(sealed)
    }

    async fn rewrap_all(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError> {
        let old_rows = self.sealer()?;
        let mut tx = self.begin().await?;
        tx.bump().await?;
        let meta = tx
            .exec(
                Stmt::new("UPDATE keyflow_meta SET value = $1 WHERE key = $2 AND value = $3")
                    .bind(new_kek)
                    .bind(meta_key)
                    .bind(old_kek),
            )
            .await?;
        if meta != 1 {
            return conflict(tx).await;
        }
        // Every row is checked under the old KEK's key and sealed under the new one.
        let versions = tx
            .all(Stmt::new(format!(
                "SELECT {COLUMNS} FROM key_versions{}",
                B::FOR_UPDATE
            )))
            .await?;
        let mut versions = versions
            .iter()
            .map(|r| rows::verified_version(r, &old_rows))
            .collect::<Result<Vec<_>, _>>()?;
        for v in &mut versions {
            if let Some(k) = keys
                .iter()
                .find(|k| k.purpose == v.purpose && k.version == v.version)
            {
                v.wrapped_key = Some(k.wrapped_key.clone());
                v.kek_id = new_kek.to_owned();
            }
        }
        for v in &versions {
            tx.exec(reseal_version(v, new_rows.version_mac(v))).await?;
        }
        reseal_tokens_and_policies(&mut tx, Some(&old_rows), new_rows).await?;
        for k in keys {
            let done = tx
                .exec(
                    Stmt::new(
                        "UPDATE key_versions SET wrapped_key = $1, kek_id = $2 \
                         WHERE purpose = $3 AND version = $4 AND kek_id = $5 \
                         AND wrapped_key IS NOT NULL",
                    )
                    .bind(&k.wrapped_key[..])
                    .bind(new_kek)
                    .bind(k.purpose.as_str())
                    .bind(i64::from(k.version.get()))
                    .bind(old_kek),
                )
                .await?;
            if done != 1 {
                return conflict(tx).await;
            }
        }
        let left = tx
            .one(
                Stmt::new(
                    "SELECT COUNT(*) AS n FROM key_versions \
                     WHERE wrapped_key IS NOT NULL AND kek_id <> $1",
                )
                .bind(new_kek),
            )
            .await?
            .map(|r| r.int("n"))
            .transpose()?;
        if left != Some(0) {
            return conflict(tx).await;
        }
        tx.commit().await?;
        Ok(WriteOutcome::Applied)
    }
}

/// Sets one version's row MAC.
fn reseal_version(v: &KeyVersionRecord, mac: [u8; 32]) -> Stmt<'_> {
    Stmt::new("UPDATE key_versions SET row_mac = $1 WHERE purpose = $2 AND version = $3")
        .bind(mac)
        .bind(v.purpose.as_str())
        .bind(i64::from(v.version.get()))
}

/// Seals every token and policy row under `new_rows`, inside `tx`: each row checked
/// under `old_rows` first (KEK rotation), or taken as it is (`None`: the first sealing
/// of rows written before row MACs existed). Returns the number of rows sealed.
async fn reseal_tokens_and_policies<B: Backend>(
    tx: &mut Txn<'_, B>,
    old_rows: Option<&RowSealer>,
    new_rows: &RowSealer,
) -> Result<u64, StoreError> {
    let mut sealed = 0u64;
    let tokens = tx
        .all(Stmt::new(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens{}",
            B::FOR_UPDATE
        )))
        .await?;
    for row in &tokens {
        let t = match old_rows {
            Some(old) => rows::verified_token(row, old)?,
            None => rows::token_record(row)?,
        };
        tx.exec(
            Stmt::new("UPDATE api_tokens SET row_mac = $1 WHERE id = $2")
                .bind(new_rows.token_mac(&t))
                .bind(&t.id),
        )
        .await?;
        sealed += 1;
    }
    let policies = tx
        .all(Stmt::new(format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies{}",
            B::FOR_UPDATE
        )))
        .await?;
    for row in &policies {
        let (purpose, p) = match old_rows {
            Some(old) => rows::verified_policy(row, old)?,
            None => rows::policy_record(row)?,
        };
        tx.exec(
            Stmt::new("UPDATE key_policies SET row_mac = $1 WHERE purpose = $2")
                .bind(new_rows.policy_mac(&purpose, &p))
                .bind(purpose.as_str()),
        )
        .await?;
        sealed += 1;
    }
    Ok(sealed)
}
