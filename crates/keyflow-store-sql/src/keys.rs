//! [`KeyVersions`]: the key rings — lookups, creation, rotation, state changes,
//! restore and usage counters.

use async_trait::async_trait;
use keyflow_core::{KeyVersion, Purpose};
use keyflow_kms::keystore::{CreateOutcome, KeyVersions, RotateOutcome, StoreError, WriteOutcome};
use keyflow_kms::model::{KeyStatus, KeyVersionRecord, StatusChange, StatusOutcome, VersionFilter};
use keyflow_kms::row_mac::RowSealer;

use crate::error::{is_insert_conflict, is_unique_violation};
use crate::rows::{self, Columns};
use crate::{conflict, db_error, Backend, SqlKeystore, Stmt, Txn};

/// The `key_versions` columns, in the order statements select and insert them.
pub(crate) const COLUMNS: &str = "purpose, version, status, algorithm, wrapped_key, kek_id, \
     created_at, status_changed_at, encryptions, revoked_reason, row_mac";

/// The `api_tokens` columns.
pub(crate) const TOKEN_COLUMNS: &str =
    "id, secret_hash, role, purposes, name, created_at, expires_at, revoked_at, row_mac";

/// Inserts `r` (sealed under `sealer`) inside `tx`; with `only_if_new_purpose`, only
/// if its purpose has no version yet. Returns the number of rows inserted.
pub(crate) async fn insert_version<B: Backend>(
    tx: &mut Txn<'_, B>,
    r: &KeyVersionRecord,
    only_if_new_purpose: bool,
    sealer: &RowSealer,
) -> Result<u64, sqlx::Error> {
    let guard = if only_if_new_purpose {
        " WHERE NOT EXISTS (SELECT 1 FROM key_versions WHERE purpose = $1)"
    } else {
        ""
    };
    tx.try_exec(
        Stmt::new(format!(
            "INSERT INTO key_versions ({COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11{guard}"
        ))
        .bind(r.purpose.as_str())
        .bind(i64::from(r.version.get()))
        .bind(r.status.as_str())
        .bind(&r.algorithm)
        .bind(r.wrapped_key.as_deref())
        .bind(&r.kek_id)
        .bind(r.created_at)
        .bind(r.status_changed_at)
        .bind(rows::count_column(r.encryptions))
        .bind(r.revoked_reason.as_deref())
        .bind(sealer.version_mac(r)),
    )
    .await
}

/// Refuses (inside `tx`) versions wrapped under another KEK than the one the keystore
/// records: a process still running with a KEK that was rotated away must not add
/// versions nobody can unwrap any more.
pub(crate) async fn check_kek<B: Backend>(
    tx: &mut Txn<'_, B>,
    records: &[KeyVersionRecord],
) -> Result<(), StoreError> {
    let recorded = tx
        .one(Stmt::new(
            "SELECT value FROM keyflow_meta WHERE key = 'kek_id'",
        ))
        .await?
        .map(|row| row.text("value"))
        .transpose()?;
    match recorded {
        Some(kek)
            if records
                .iter()
                .any(|r| r.wrapped_key.is_some() && r.kek_id != kek) =>
        {
            Err(StoreError::Conflict(format!(
                "refused: the keystore's KEK is now {kek}; this process holds an older KEK \
                 (restart it with the current KEK file)"
            )))
        }
        _ => Ok(()),
    }
}

impl<B: Backend> SqlKeystore<B> {
    /// Begins the transaction of a restore or an import: bumps the generation, checks
    /// the KEK, and inserts every one of `records` as new. `None` when one could not be
    /// (`is_conflict` says which driver errors mean that): everything is rolled back.
    pub(crate) async fn begin_inserting(
        &self,
        records: &[KeyVersionRecord],
        is_conflict: fn(&sqlx::Error) -> bool,
    ) -> Result<Option<Txn<'_, B>>, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        tx.bump().await?;
        check_kek(&mut tx, records).await?;
        for r in records {
            match insert_version(&mut tx, r, false, &sealer).await {
                Ok(1) => {}
                // A failed statement may have aborted the transaction: roll it all back.
                Ok(_) => return conflict(tx).await.map(|_| None),
                Err(e) if is_conflict(&e) => return conflict(tx).await.map(|_| None),
                Err(e) => return Err(db_error(e)),
            }
        }
        Ok(Some(tx))
    }

    async fn version_where(
        &self,
        condition: &str,
        purpose: &Purpose,
        version: Option<KeyVersion>,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        let sealer = self.sealer()?;
        let mut stmt = Stmt::new(format!(
            "SELECT {COLUMNS} FROM key_versions WHERE {condition}"
        ))
        .bind(purpose.as_str());
        if let Some(v) = version {
            stmt = stmt.bind(i64::from(v.get()));
        }
        let row = self.one(stmt).await?;
        row.as_ref()
            .map(|r| rows::verified_version(r, &sealer))
            .transpose()
    }
}

#[async_trait]
impl<B: Backend> KeyVersions for SqlKeystore<B> {
    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError> {
        let sealer = self.sealer()?;
        let rows = self
            .all(
                Stmt::new(format!(
                    "SELECT {COLUMNS} FROM key_versions \
                     WHERE (CAST($1 AS TEXT) IS NULL OR purpose = $1) \
                     AND (CAST($2 AS TEXT) IS NULL OR status = $2) ORDER BY purpose, version"
                ))
                .bind(filter.purpose.as_ref().map(|p| p.as_str()))
                .bind(filter.status.map(|s| s.as_str())),
            )
            .await?;
        rows::trusted_versions(rows, &sealer)
    }

    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.version_where("purpose = $1 AND version = $2", purpose, Some(version))
            .await
    }

    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError> {
        self.version_where("purpose = $1 AND status = 'active'", purpose, None)
            .await
    }

    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError> {
        if first.version != KeyVersion::FIRST || first.status != KeyStatus::Active {
            return Err(StoreError::Backend(
                "create_first takes version 1, active".into(),
            ));
        }
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        // Generation first: it writes, so SQLite takes its write lock at once (no lock
        // upgrade deadlock), and PostgreSQL's concurrent creators queue on its row
        // lock, the later ones then seeing the committed version 1 and inserting nothing.
        tx.bump().await?;
        check_kek(&mut tx, std::slice::from_ref(first)).await?;
        let outcome = match insert_version(&mut tx, first, true, &sealer).await {
            Ok(1) => CreateOutcome::Created,
            Ok(_) => CreateOutcome::AlreadyExists,
            Err(e) if is_unique_violation(&e) => CreateOutcome::AlreadyExists,
            Err(e) => return Err(db_error(e)),
        };
        if outcome == CreateOutcome::Created {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcome)
    }

    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError> {
        let Some(prev) = next.version.get().checked_sub(1).filter(|v| *v >= 1) else {
            return Ok(RotateOutcome::Conflict);
        };
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        // Compare-and-set under the generation's lock (taken first, by writing): the
        // row read here is the one the update below changes; a rotation that waited
        // for another finds it no longer active and changes nothing.
        tx.bump().await?;
        let current = tx
            .one(
                Stmt::new(format!(
                    "SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND version = $2 \
                     AND status = 'active'{}",
                    B::FOR_UPDATE
                ))
                .bind(next.purpose.as_str())
                .bind(i64::from(prev)),
            )
            .await?;
        let Some(current) = current else {
            tx.rollback().await?;
            return Ok(RotateOutcome::Conflict);
        };
        // A forged "active" row is never demoted into a sealed "rotating" one.
        let mut demoted = rows::verified_version(&current, &sealer)?;
        demoted.status = KeyStatus::Rotating;
        demoted.status_changed_at = now;
        tx.exec(
            Stmt::new(
                "UPDATE key_versions SET status = 'rotating', status_changed_at = $1, \
                 row_mac = $2 WHERE purpose = $3 AND version = $4 AND status = 'active'",
            )
            .bind(now)
            .bind(sealer.version_mac(&demoted))
            .bind(next.purpose.as_str())
            .bind(i64::from(prev)),
        )
        .await?;
        check_kek(&mut tx, std::slice::from_ref(next)).await?;
        match insert_version(&mut tx, next, false, &sealer).await {
            Ok(1) => {}
            Ok(_) => {
                tx.rollback().await?;
                return Ok(RotateOutcome::Conflict);
            }
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Ok(RotateOutcome::Conflict);
            }
            Err(e) => return Err(db_error(e)),
        }
        tx.commit().await?;
        Ok(RotateOutcome::Rotated)
    }

    async fn set_status(&self, c: &StatusChange) -> Result<StatusOutcome, StoreError> {
        if c.to == KeyStatus::Active {
            return Err(StoreError::Backend(
                "a version becomes active only by rotation".into(),
            ));
        }
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        tx.bump().await?;
        let row = tx
            .one(
                Stmt::new(format!(
                    "SELECT {COLUMNS} FROM key_versions WHERE purpose = $1 AND version = $2{}",
                    B::FOR_UPDATE
                ))
                .bind(c.purpose.as_str())
                .bind(i64::from(c.version.get())),
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(StatusOutcome::NotFound);
        };
        // A row that fails its MAC is never moved on (that would seal a forgery).
        let mut next = rows::verified_version(&row, &sealer)?;
        let current = next.status;
        let destroy = c.to == KeyStatus::Destroyed;
        if !c.from.contains(&current) {
            tx.rollback().await?;
            if destroy && current == KeyStatus::Destroyed {
                self.backend.after_destroy(true).await?;
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
        tx.exec(
            Stmt::new(
                "UPDATE key_versions SET status = $1, status_changed_at = $2, \
                 wrapped_key = $3, revoked_reason = $4, row_mac = $5 \
                 WHERE purpose = $6 AND version = $7",
            )
            .bind(next.status.as_str())
            .bind(next.status_changed_at)
            .bind(next.wrapped_key.as_deref())
            .bind(next.revoked_reason.as_deref())
            .bind(sealer.version_mac(&next))
            .bind(c.purpose.as_str())
            .bind(i64::from(c.version.get())),
        )
        .await?;
        tx.commit().await?;
        if destroy {
            self.backend.after_destroy(false).await?;
        }
        Ok(StatusOutcome::Changed)
    }

    async fn insert_versions(
        &self,
        records: &[KeyVersionRecord],
    ) -> Result<WriteOutcome, StoreError> {
        let Some(tx) = self.begin_inserting(records, is_insert_conflict).await? else {
            return Ok(WriteOutcome::Conflict);
        };
        tx.commit().await?;
        Ok(WriteOutcome::Applied)
    }

    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError> {
        // A single-row atomic increment; usage is not a key change, so no generation.
        self.exec(
            Stmt::new(
                "UPDATE key_versions SET encryptions = encryptions + $1 \
                 WHERE purpose = $2 AND version = $3",
            )
            .bind(rows::count_column(count))
            .bind(purpose.as_str())
            .bind(i64::from(version.get())),
        )
        .await
        .map(drop)
    }

    async fn adjust_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        delta: i64,
    ) -> Result<Option<u64>, StoreError> {
        // A single-row atomic change; usage is not a key change, so no generation.
        // `CASE`, not `MAX`/`GREATEST`: the one spelling both databases read.
        let row = self
            .one(
                Stmt::new(
                    "UPDATE key_versions SET encryptions = \
                     CASE WHEN encryptions + $1 > 0 THEN encryptions + $1 ELSE 0 END \
                     WHERE purpose = $2 AND version = $3 RETURNING encryptions",
                )
                .bind(delta)
                .bind(purpose.as_str())
                .bind(i64::from(version.get())),
            )
            .await?;
        let total = row.map(|r| r.int("encryptions")).transpose()?;
        Ok(total.map(|n| u64::try_from(n).unwrap_or(0)))
    }
}
