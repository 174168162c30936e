//! Lifecycle writes: policies, state changes (revoke, reinstate, destroy, deprecate),
//! restore, KEK rewrap, leases and the change generation. The `Keystore` impl in
//! `lib.rs` delegates here.

use keyflow_kms::keystore::{StoreError, WriteOutcome};
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome,
};
use keyflow_kms::Purpose;
use sqlx::{Sqlite, Transaction};

use crate::{is_unique_violation, SqliteKeystore, BUMP_GENERATION};

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

fn policy_from(row: &sqlx::sqlite::SqliteRow) -> Result<(Purpose, Policy), StoreError> {
    keyflow_kms::rows::policy_record(&crate::Cols(row))
}

const POLICY_COLUMNS: &str = "purpose, rotation_days, grace_days, warn_days, max_encryptions";

impl SqliteKeystore {
    pub(crate) async fn policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies WHERE purpose = ?1"
        ))
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(row.as_ref().map(policy_from).transpose()?.map(|(_, p)| p))
    }

    pub(crate) async fn put_policy(&self, purpose: &Purpose, p: &Policy) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO key_policies ({POLICY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (purpose) DO UPDATE SET rotation_days = excluded.rotation_days, \
             grace_days = excluded.grace_days, warn_days = excluded.warn_days, \
             max_encryptions = excluded.max_encryptions"
        ))
        .bind(purpose.as_str())
        .bind(i64::from(p.rotation_days))
        .bind(i64::from(p.grace_days))
        .bind(i64::from(p.warn_days))
        .bind(keyflow_kms::rows::count_column(p.max_encryptions))
        .execute(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        Ok(())
    }

    pub(crate) async fn policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies ORDER BY purpose"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        rows.iter().map(policy_from).collect()
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
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        bump(&mut tx).await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT status FROM key_versions WHERE purpose = ?1 AND version = ?2",
        )
        .bind(c.purpose.as_str())
        .bind(i64::from(c.version.get()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(current) = current else {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(StatusOutcome::NotFound);
        };
        let current: KeyStatus = current
            .parse()
            .map_err(|_| StoreError("corrupt key_versions row: status".into()))?;
        if !c.from.contains(&current) {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(StatusOutcome::WrongState(current));
        }
        let destroy = c.to == KeyStatus::Destroyed;
        // The reason is kept through destruction (it explains the shredding).
        let reason = match c.to {
            KeyStatus::Revoked => c.reason.as_deref(),
            _ => None,
        };
        sqlx::query(
            "UPDATE key_versions SET status = ?1, status_changed_at = ?2, \
             wrapped_key = CASE WHEN ?3 THEN NULL ELSE wrapped_key END, \
             revoked_reason = CASE WHEN ?3 THEN revoked_reason ELSE ?4 END \
             WHERE purpose = ?5 AND version = ?6",
        )
        .bind(c.to.as_str())
        .bind(c.now)
        .bind(destroy)
        .bind(reason)
        .bind(c.purpose.as_str())
        .bind(i64::from(c.version.get()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        if destroy {
            // Copies of the page holding the old material may sit in the WAL until a
            // checkpoint; write them back (secure_delete zeroes the freed bytes) and
            // truncate the log so the material is gone from every file.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(StatusOutcome::Changed)
    }

    pub(crate) async fn insert_all(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        bump(&mut tx).await?;
        check_kek(&mut tx, records).await?;
        for r in records {
            match self.insert(&mut tx, r, false).await {
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
    ) -> Result<WriteOutcome, StoreError> {
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

fn is_check_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_check_violation())
}
