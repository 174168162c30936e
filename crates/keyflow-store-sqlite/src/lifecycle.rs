//! Lifecycle writes: policies, state changes (revoke, reinstate, destroy, deprecate),
//! restore, KEK rewrap, leases and the change generation. The `Keystore` impl in
//! `lib.rs` delegates here.

use keyflow_kms::keystore::{StoreError, WriteOutcome};
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome,
};
use keyflow_kms::row_mac::{RowSealer, META_ROW_MACS};
use keyflow_kms::rows;
use keyflow_kms::Purpose;
use sqlx::{Row, Sqlite, Transaction};

use crate::{
    is_unique_violation, record, Cols, SqliteKeystore, BUMP_GENERATION, COLUMNS, TOKEN_COLUMNS,
};

/// How often a destroy retries the WAL checkpoint that erases the old page, and how
/// long each try waits for readers (SQLite's busy handler) before giving up.
const CHECKPOINT_TRIES: u32 = 3;
const CHECKPOINT_BUSY_MS: u32 = 1_000;

/// Bumps the change generation inside `tx`.
pub(crate) async fn bump(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query(BUMP_GENERATION)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

/// Refuses (inside `tx`) versions wrapped under another KEK than the one the keystore
/// records: a process still running with a KEK that was rotated away must not add
/// versions nobody can unwrap any more.
pub(crate) async fn check_kek(
    tx: &mut Transaction<'_, Sqlite>,
    records: &[KeyVersionRecord],
) -> Result<(), StoreError> {
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT value FROM keyflow_meta WHERE key = 'kek_id'")
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
    match recorded {
        Some(kek) if records.iter().any(|r| r.wrapped_key.is_some() && r.kek_id != kek) => {
            Err(StoreError(format!(
                "refused: the keystore's KEK is now {kek}; this process holds an older KEK (restart it with the current KEK file)"
            )))
        }
        _ => Ok(()),
    }
}

fn policy_from(
    row: &sqlx::sqlite::SqliteRow,
    sealer: &RowSealer,
) -> Result<(Purpose, Policy), StoreError> {
    rows::verified_policy(&Cols(row), sealer)
}

const POLICY_COLUMNS: &str =
    "purpose, rotation_days, grace_days, warn_days, max_encryptions, row_mac";

impl SqliteKeystore {
    pub(crate) async fn policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        let sealer = self.sealer()?;
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies WHERE purpose = ?1"
        ))
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(row
            .as_ref()
            .map(|r| policy_from(r, &sealer))
            .transpose()?
            .map(|(_, p)| p))
    }

    pub(crate) async fn put_policy(&self, purpose: &Purpose, p: &Policy) -> Result<(), StoreError> {
        let sealer = self.sealer()?;
        sqlx::query(&format!(
            "INSERT INTO key_policies ({POLICY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (purpose) DO UPDATE SET rotation_days = excluded.rotation_days, \
             grace_days = excluded.grace_days, warn_days = excluded.warn_days, \
             max_encryptions = excluded.max_encryptions, row_mac = excluded.row_mac"
        ))
        .bind(purpose.as_str())
        .bind(i64::from(p.rotation_days))
        .bind(i64::from(p.grace_days))
        .bind(i64::from(p.warn_days))
        .bind(keyflow_kms::rows::count_column(p.max_encryptions))
        .bind(&sealer.policy_mac(purpose, p)[..])
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(())
    }

    pub(crate) async fn policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        let sealer = self.sealer()?;
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies ORDER BY purpose"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        rows.iter().map(|r| policy_from(r, &sealer)).collect()
    }

    pub(crate) async fn change_status(
        &self,
        c: &StatusChange,
    ) -> Result<StatusOutcome, StoreError> {
        if c.to == KeyStatus::Active {
            return Err(StoreError(
                "a version becomes active only by rotation".into(),
            ));
        }
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        bump(&mut tx).await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM key_versions WHERE purpose = ?1 AND version = ?2"
        ))
        .bind(c.purpose.as_str())
        .bind(i64::from(c.version.get()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(StatusOutcome::NotFound);
        };
        // A row that fails its MAC is never moved on (that would seal a forgery).
        let mut next = record(&row, &sealer)?;
        let current = next.status;
        let destroy = c.to == KeyStatus::Destroyed;
        if !c.from.contains(&current) {
            tx.rollback().await.map_err(StoreError::backend)?;
            if destroy && current == KeyStatus::Destroyed {
                // Destroying again retries an erasure a busy reader held up.
                self.erase_wal().await?;
            }
            return Ok(StatusOutcome::WrongState(current));
        }
        next.status = c.to;
        next.status_changed_at = c.now;
        if destroy {
            // The reason is kept through destruction (it explains the shredding).
            next.wrapped_key = None;
        } else {
            next.revoked_reason = match c.to {
                KeyStatus::Revoked => c.reason.clone(),
                _ => None,
            };
        }
        sqlx::query(
            "UPDATE key_versions SET status = ?1, status_changed_at = ?2, \
             wrapped_key = ?3, revoked_reason = ?4, row_mac = ?5 \
             WHERE purpose = ?6 AND version = ?7",
        )
        .bind(next.status.as_str())
        .bind(next.status_changed_at)
        .bind(next.wrapped_key.as_deref())
        .bind(next.revoked_reason.as_deref())
        .bind(&sealer.version_mac(&next)[..])
        .bind(c.purpose.as_str())
        .bind(i64::from(c.version.get()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        if destroy {
            self.erase_wal().await?;
        }
        Ok(StatusOutcome::Changed)
    }

    /// After a destroy: copies of the page holding the old material may sit in the WAL
    /// until a checkpoint; write them back (secure_delete zeroes the freed bytes) and
    /// truncate the log so the material is gone from every file. A reader that still
    /// needs the old frames makes SQLite report the checkpoint busy (the command itself
    /// succeeds): that is checked, retried a few times, and reported as an error rather
    /// than a success that did not erase.
    pub async fn erase_wal(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::backend)?;
        sqlx::query(&format!("PRAGMA busy_timeout = {CHECKPOINT_BUSY_MS}"))
            .execute(&mut *conn)
            .await
            .map_err(StoreError::backend)?;
        let mut erased = false;
        for _ in 0..CHECKPOINT_TRIES {
            // Columns: busy (1 when the checkpoint could not finish), WAL frames,
            // frames checkpointed.
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::backend)?;
            let busy: i64 = row.try_get(0).map_err(StoreError::backend)?;
            if busy == 0 {
                erased = true;
                break;
            }
        }
        sqlx::query("PRAGMA busy_timeout = 10000")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::backend)?;
        if erased {
            Ok(())
        } else {
            tracing::error!(
                "destroy committed, but a reader kept the old page in the WAL: material not yet erased from disk"
            );
            Err(StoreError(format!(
                "the version is destroyed, but its old material is still in the database's WAL file: another connection kept reading it through {CHECKPOINT_TRIES} checkpoint attempts; run the destroy again once readers are done (it retries the erasure)"
            )))
        }
    }

    pub(crate) async fn insert_all(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        bump(&mut tx).await?;
        check_kek(&mut tx, records).await?;
        for r in records {
            match self.insert(&mut tx, r, false, &sealer).await {
                Ok(1) => {}
                Ok(_) => {
                    tx.rollback().await.map_err(StoreError::backend)?;
                    return Ok(WriteOutcome::Conflict);
                }
                Err(e) if is_unique_violation(&e) || is_check_violation(&e) => {
                    tx.rollback().await.map_err(StoreError::backend)?;
                    return Ok(WriteOutcome::Conflict);
                }
                Err(e) => return Err(StoreError::backend(e)),
            }
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(WriteOutcome::Applied)
    }

    pub(crate) async fn rewrap(
        &self,
        meta_key: &str,
        old_kek: &str,
        new_kek: &str,
        keys: &[RewrappedKey],
        new_rows: &RowSealer,
    ) -> Result<WriteOutcome, StoreError> {
        let old_rows = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let meta = sqlx::query("UPDATE keyflow_meta SET value = ?1 WHERE key = ?2 AND value = ?3")
            .bind(new_kek)
            .bind(meta_key)
            .bind(old_kek)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        if meta.rows_affected() != 1 {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(WriteOutcome::Conflict);
        }
        bump(&mut tx).await?;
        // Every row is checked under the old KEK's key and sealed under the new one.
        let versions = sqlx::query(&format!("SELECT {COLUMNS} FROM key_versions"))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let mut versions = versions
            .iter()
            .map(|r| record(r, &old_rows))
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
            sqlx::query("UPDATE key_versions SET row_mac = ?1 WHERE purpose = ?2 AND version = ?3")
                .bind(&new_rows.version_mac(v)[..])
                .bind(v.purpose.as_str())
                .bind(i64::from(v.version.get()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
        }
        self.reseal_tokens_and_policies(&mut tx, &old_rows, new_rows)
            .await?;
        for k in keys {
            let done = sqlx::query(
                "UPDATE key_versions SET wrapped_key = ?1, kek_id = ?2 \
                 WHERE purpose = ?3 AND version = ?4 AND kek_id = ?5 AND wrapped_key IS NOT NULL",
            )
            .bind(&k.wrapped_key[..])
            .bind(new_kek)
            .bind(k.purpose.as_str())
            .bind(i64::from(k.version.get()))
            .bind(old_kek)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
            if done.rows_affected() != 1 {
                tx.rollback().await.map_err(StoreError::backend)?;
                return Ok(WriteOutcome::Conflict);
            }
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM key_versions WHERE wrapped_key IS NOT NULL AND kek_id <> ?1",
        )
        .bind(new_kek)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if left != 0 {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(WriteOutcome::Conflict);
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(WriteOutcome::Applied)
    }

    async fn reseal_tokens_and_policies(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        old_rows: &RowSealer,
        new_rows: &RowSealer,
    ) -> Result<(), StoreError> {
        let tokens = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens"))
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &tokens {
            let t = rows::verified_token(&Cols(row), old_rows)?;
            sqlx::query("UPDATE api_tokens SET row_mac = ?1 WHERE id = ?2")
                .bind(&new_rows.token_mac(&t)[..])
                .bind(&t.id)
                .execute(&mut **tx)
                .await
                .map_err(StoreError::backend)?;
        }
        let policies = sqlx::query(&format!("SELECT {POLICY_COLUMNS} FROM key_policies"))
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &policies {
            let (purpose, p) = policy_from(row, old_rows)?;
            sqlx::query("UPDATE key_policies SET row_mac = ?1 WHERE purpose = ?2")
                .bind(&new_rows.policy_mac(&purpose, &p)[..])
                .bind(purpose.as_str())
                .execute(&mut **tx)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    /// See [`keyflow_kms::Keystore::seal_legacy_rows`].
    pub(crate) async fn seal_legacy(&self) -> Result<u64, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        // Write first: the lock is taken before anything is read.
        let pending = sqlx::query(
            "UPDATE keyflow_meta SET value = 'sealed' WHERE key = ?1 AND value = 'pending'",
        )
        .bind(META_ROW_MACS)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if pending.rows_affected() == 0 {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(0);
        }
        let already: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM key_versions WHERE row_mac IS NOT NULL) \
             + (SELECT COUNT(*) FROM api_tokens WHERE row_mac IS NOT NULL) \
             + (SELECT COUNT(*) FROM key_policies WHERE row_mac IS NOT NULL)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if already != 0 {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Err(legacy_marker_forged());
        }
        bump(&mut tx).await?;
        let mut sealed = 0u64;
        let versions = sqlx::query(&format!("SELECT {COLUMNS} FROM key_versions"))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &versions {
            let v = rows::version_record(&Cols(row))?;
            sqlx::query("UPDATE key_versions SET row_mac = ?1 WHERE purpose = ?2 AND version = ?3")
                .bind(&sealer.version_mac(&v)[..])
                .bind(v.purpose.as_str())
                .bind(i64::from(v.version.get()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            sealed += 1;
        }
        let tokens = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens"))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &tokens {
            let t = rows::token_record(&Cols(row))?;
            sqlx::query("UPDATE api_tokens SET row_mac = ?1 WHERE id = ?2")
                .bind(&sealer.token_mac(&t)[..])
                .bind(&t.id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            sealed += 1;
        }
        let policies = sqlx::query(&format!("SELECT {POLICY_COLUMNS} FROM key_policies"))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &policies {
            let (purpose, p) = rows::policy_record(&Cols(row))?;
            sqlx::query("UPDATE key_policies SET row_mac = ?1 WHERE purpose = ?2")
                .bind(&sealer.policy_mac(&purpose, &p)[..])
                .bind(purpose.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            sealed += 1;
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(sealed)
    }

    pub(crate) async fn lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keyflow_leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE keyflow_leases.holder = excluded.holder OR keyflow_leases.expires_at <= ?4",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn unlease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM keyflow_leases WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    pub(crate) async fn current_generation(&self) -> Result<i64, StoreError> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM keyflow_meta WHERE key = 'generation'")
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::backend)?;
        v.unwrap_or_else(|| "0".into())
            .parse()
            .map_err(|_| StoreError("corrupt generation counter".into()))
    }
}

/// The legacy marker says `pending` although rows already carry MACs: someone without
/// the KEK put it back to have forged rows sealed.
pub(crate) fn legacy_marker_forged() -> StoreError {
    tracing::error!("row_macs marker reset to pending while rows are sealed: refused");
    StoreError(
        "refused: the keystore says its rows await their first sealing, but rows are already sealed (the marker was reset by someone without the KEK)".into(),
    )
}

fn is_check_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_check_violation())
}
