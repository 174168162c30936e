//! [`Tokens`] and [`Policies`]: API token and rotation policy rows, each sealed with
//! its row MAC.

use async_trait::async_trait;
use keyflow_core::Purpose;
use keyflow_kms::access::TokenRecord;
use keyflow_kms::keystore::{Policies, StoreError, Tokens};
use keyflow_kms::model::Policy;

use crate::keys::TOKEN_COLUMNS;
use crate::rows;
use crate::{Backend, SqlKeystore, Stmt};

/// The `key_policies` columns.
pub(crate) const POLICY_COLUMNS: &str =
    "purpose, rotation_days, grace_days, warn_days, max_encryptions, row_mac";

#[async_trait]
impl<B: Backend> Tokens for SqlKeystore<B> {
    async fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let sealer = self.sealer()?;
        self.exec(
            Stmt::new(format!(
                "INSERT INTO api_tokens ({TOKEN_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&t.id)
            .bind(&t.secret_hash[..])
            .bind(t.role.as_str())
            .bind(rows::purposes_column(&t.purposes))
            .bind(&t.name)
            .bind(t.created_at)
            .bind(t.expires_at)
            .bind(t.revoked_at)
            .bind(sealer.token_mac(t)),
        )
        .await
        .map(drop)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sealer = self.sealer()?;
        let rows = self
            .all(Stmt::new(format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
            )))
            .await?;
        rows::trusted_tokens(rows, &sealer)
    }

    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let sealer = self.sealer()?;
        let mut tx = self.begin().await?;
        if B::LOCKS_BY_WRITING {
            // Writing first takes the write lock before the read (no upgrade deadlock).
            tx.exec(
                Stmt::new("UPDATE api_tokens SET revoked_at = revoked_at WHERE id = $1").bind(id),
            )
            .await?;
        }
        let row = tx
            .one(
                Stmt::new(format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1 \
                     AND revoked_at IS NULL{}",
                    B::FOR_UPDATE
                ))
                .bind(id),
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        // Revoking re-seals the row, so a forged row is refused rather than laundered
        // (a forged token is already unusable: listing leaves it out).
        let mut revoked = rows::verified_token(&row, &sealer)?;
        revoked.revoked_at = Some(now);
        tx.exec(
            Stmt::new("UPDATE api_tokens SET revoked_at = $1, row_mac = $2 WHERE id = $3")
                .bind(now)
                .bind(sealer.token_mac(&revoked))
                .bind(id),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl<B: Backend> Policies for SqlKeystore<B> {
    async fn get_policy(&self, purpose: &Purpose) -> Result<Option<Policy>, StoreError> {
        let sealer = self.sealer()?;
        let row = self
            .one(
                Stmt::new(format!(
                    "SELECT {POLICY_COLUMNS} FROM key_policies WHERE purpose = $1"
                ))
                .bind(purpose.as_str()),
            )
            .await?;
        Ok(row
            .as_ref()
            .map(|r| rows::verified_policy(r, &sealer))
            .transpose()?
            .map(|(_, p)| p))
    }

    async fn set_policy(&self, purpose: &Purpose, p: &Policy) -> Result<(), StoreError> {
        let sealer = self.sealer()?;
        self.exec(
            Stmt::new(format!(
                "INSERT INTO key_policies ({POLICY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (purpose) DO UPDATE SET rotation_days = EXCLUDED.rotation_days, \
                 grace_days = EXCLUDED.grace_days, warn_days = EXCLUDED.warn_days, \
                 max_encryptions = EXCLUDED.max_encryptions, row_mac = EXCLUDED.row_mac"
            ))
            .bind(purpose.as_str())
            .bind(i64::from(p.rotation_days))
            .bind(i64::from(p.grace_days))
            .bind(i64::from(p.warn_days))
            .bind(rows::count_column(p.max_encryptions))
            .bind(sealer.policy_mac(purpose, p)),
        )
        .await
        .map(drop)
    }

    async fn list_policies(&self) -> Result<Vec<(Purpose, Policy)>, StoreError> {
        let sealer = self.sealer()?;
        let rows = self
            .all(Stmt::new(format!(
                "SELECT {POLICY_COLUMNS} FROM key_policies ORDER BY purpose"
            )))
            .await?;
        rows.iter()
            .map(|r| rows::verified_policy(r, &sealer))
            .collect()
    }
}
