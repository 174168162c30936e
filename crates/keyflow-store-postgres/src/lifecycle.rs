//! Lifecycle writes: policies, state changes (revoke, reinstate, destroy, deprecate),
//! restore, KEK rewrap, leases and the change generation. The `Keystore` impl in
//! `lib.rs` delegates here. Same statements and outcomes as the SQLite keystore.

use keyflow_kms::keystore::{StoreError, WriteOutcome};
use keyflow_kms::model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome,
};
use keyflow_kms::row_mac::{RowSealer, META_ROW_MACS};
use keyflow_kms::rows;
use keyflow_kms::Purpose;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Transaction};

use crate::{
    bump, is_check_violation, is_unique_violation, record, Cols, PostgresKeystore, COLUMNS,
    TOKEN_COLUMNS,
};

/// Refuses (inside `tx`) versions wrapped under another KEK than the one the keystore
/// records: a process still running with a KEK that was rotated away must not add
/// versions nobody can unwrap any more. Runs after the generation bump, so it sees a
/// concurrent KEK rotation's commit (both hold the generation row lock in turn).
pub(crate) async fn check_kek(
    tx: &mut Transaction<'_, Postgres>,
    records: &[KeyVersionRecord],
) -> Result<(), StoreError> {
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT value FROM keyflow_meta WHERE key = 'kek_id'")
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
    match recorded {
        Some(kek)
            if records
                .iter()
                .any(|r| r.wrapped_key.is_some() && r.kek_id != kek) =>
        {
            Err(StoreError(format!(
                "refused: the keystore's KEK is now {kek}; this process holds an older KEK \
                 (restart it with the current KEK file)"
            )))
        }
        _ => Ok(()),
    }
}

fn policy_from(row: &PgRow, sealer: &RowSealer) -> Result<(Purpose, Policy), StoreError> {
    rows::verified_policy(&Cols(row), sealer)
}

const POLICY_COLUMNS: &str =
    "purpose, rotation_days, grace_days, warn_days, max_encryptions, row_mac";

impl PostgresKeystore {
    pub(crate) async fn policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        let sealer = self.sealer()?;
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies WHERE purpose = $1"
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
            "INSERT INTO key_policies ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (purpose) DO UPDATE SET rotation_days = EXCLUDED.rotation_days, \
             grace_days = EXCLUDED.grace_days, warn_days = EXCLUDED.warn_days, \
             max_encryptions = EXCLUDED.max_encryptions, row_mac = EXCLUDED.row_mac"
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
            "SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND version = $2 FOR UPDATE"
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
        if !c.from.contains(&current) {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(StatusOutcome::WrongState(current));
        }
        let destroy = c.to == KeyStatus::Destroyed;
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
            "UPDATE key_versions SET status = $1, status_changed_at = $2, \
             wrapped_key = $3, revoked_reason = $4, row_mac = $5 \
             WHERE purpose = $6 AND version = $7",
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
            // The old row version (with the wrapped key) stays in the heap as a dead
            // tuple until vacuumed; vacuum now rather than whenever autovacuum gets to
            // a small table. Best effort: PostgreSQL does not zero freed space, and
            // WAL, replicas and base backups keep older copies until recycled — all of
            // them still wrapped under the KEK (see docs/ARCHITECTURE.md).
            if let Err(e) = sqlx::raw_sql("VACUUM key_versions")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(error = %e, "VACUUM after destroying a key version failed");
            }
        }
        Ok(StatusOutcome::Changed)
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
            match Self::insert(&mut tx, r, false, &sealer).await {
                Ok(1) => {}
                Ok(_) => {
                    tx.rollback().await.map_err(StoreError::backend)?;
                    return Ok(WriteOutcome::Conflict);
                }
                Err(e) if is_unique_violation(&e) || is_check_violation(&e) => {
                    // The failed statement aborted the transaction: roll it all back.
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
        bump(&mut tx).await?;
        let meta = sqlx::query("UPDATE keyflow_meta SET value = $1 WHERE key = $2 AND value = $3")
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
        // Every row is checked under the old KEK's key and sealed under the new one.
        let versions = sqlx::query(&format!("SELECT {COLUMNS} FROM key_versions FOR UPDATE"))
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
            sqlx::query("UPDATE key_versions SET row_mac = $1 WHERE purpose = $2 AND version = $3")
                .bind(&new_rows.version_mac(v)[..])
                .bind(v.purpose.as_str())
                .bind(i64::from(v.version.get()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
        }
        reseal_tokens_and_policies(&mut tx, &old_rows, new_rows).await?;
        for k in keys {
            let done = sqlx::query(
                "UPDATE key_versions SET wrapped_key = $1, kek_id = $2 \
                 WHERE purpose = $3 AND version = $4 AND kek_id = $5 AND wrapped_key IS NOT NULL",
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
            "SELECT COUNT(*) FROM key_versions WHERE wrapped_key IS NOT NULL AND kek_id <> $1",
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

    /// `VACUUM FULL key_versions`: rewrites the table, leaving out dead row versions —
    /// among them those that still held the wrapped key of a destroyed version (a
    /// destroy's own plain `VACUUM` only marks their space reusable). Takes an
    /// exclusive lock on the table for its (short) duration and needs its owner.
    /// PostgreSQL's WAL, replicas and base backups are out of its reach.
    pub async fn vacuum_key_versions(&self) -> Result<(), StoreError> {
        sqlx::raw_sql("VACUUM FULL key_versions")
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError(format!("VACUUM FULL key_versions failed: {e}")))?;
        Ok(())
    }

    /// See [`keyflow_kms::Keystore::seal_legacy_rows`].
    pub(crate) async fn seal_legacy(&self) -> Result<u64, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.pool.begin().await.map_err(StoreError::backend)?;
        let pending = sqlx::query(
            "UPDATE keyflow_meta SET value = 'sealed' WHERE key = $1 AND value = 'pending'",
        )
        .bind(META_ROW_MACS)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        if pending.rows_affected() == 0 {
            tx.rollback().await.map_err(StoreError::backend)?;
            return Ok(0);
        }
        bump(&mut tx).await?;
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
            tracing::error!("row_macs marker reset to pending while rows are sealed: refused");
            return Err(StoreError(
                "refused: the keystore says its rows await their first sealing, but rows are already sealed (the marker was reset by someone without the KEK)".into(),
            ));
        }
        let mut sealed = 0u64;
        let versions = sqlx::query(&format!("SELECT {COLUMNS} FROM key_versions FOR UPDATE"))
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        for row in &versions {
            let v = rows::version_record(&Cols(row))?;
            sqlx::query("UPDATE key_versions SET row_mac = $1 WHERE purpose = $2 AND version = $3")
                .bind(&sealer.version_mac(&v)[..])
                .bind(v.purpose.as_str())
                .bind(i64::from(v.version.get()))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            sealed += 1;
        }
        let tokens = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens FOR UPDATE"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        for row in &tokens {
            let t = rows::token_record(&Cols(row))?;
            sqlx::query("UPDATE api_tokens SET row_mac = $1 WHERE id = $2")
                .bind(&sealer.token_mac(&t)[..])
                .bind(&t.id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            sealed += 1;
        }
        let policies = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM key_policies FOR UPDATE"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        for row in &policies {
            let (purpose, p) = rows::policy_record(&Cols(row))?;
            sqlx::query("UPDATE key_policies SET row_mac = $1 WHERE purpose = $2")
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
        // One atomic statement: concurrent takers of a free name conflict on the
        // primary key, and exactly one of them inserts; a taken lease is updated only
        // by its holder or once expired.
        let done = sqlx::query(
            "INSERT INTO keyflow_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE \
             SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE keyflow_leases.holder = EXCLUDED.holder OR keyflow_leases.expires_at <= $4",
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
        sqlx::query("DELETE FROM keyflow_leases WHERE name = $1 AND holder = $2")
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

/// Checks every token and policy row under `old_rows` and seals it under `new_rows`
/// (KEK rotation), inside `tx`.
async fn reseal_tokens_and_policies(
    tx: &mut Transaction<'_, Postgres>,
    old_rows: &RowSealer,
    new_rows: &RowSealer,
) -> Result<(), StoreError> {
    let tokens = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens FOR UPDATE"
    ))
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::backend)?;
    for row in &tokens {
        let t = rows::verified_token(&Cols(row), old_rows)?;
        sqlx::query("UPDATE api_tokens SET row_mac = $1 WHERE id = $2")
            .bind(&new_rows.token_mac(&t)[..])
            .bind(&t.id)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
    }
    let policies = sqlx::query(&format!(
        "SELECT {POLICY_COLUMNS} FROM key_policies FOR UPDATE"
    ))
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::backend)?;
    for row in &policies {
        let (purpose, p) = policy_from(row, old_rows)?;
        sqlx::query("UPDATE key_policies SET row_mac = $1 WHERE purpose = $2")
            .bind(&new_rows.policy_mac(&purpose, &p)[..])
            .bind(purpose.as_str())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::backend)?;
    }
    Ok(())
}
