//! [`Coordination`]: what several processes on one keystore share — leases, the
//! change generation (and the backend's push signal), request-integrity nonces.

use std::sync::Arc;

use async_trait::async_trait;
use keyflow_kms::keystore::{Coordination, KekBinding, StoreError};
use tokio::sync::Notify;

use crate::{Backend, SqlKeystore, Stmt};

#[async_trait]
impl<B: Backend> Coordination for SqlKeystore<B> {
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        // One atomic statement: concurrent takers of a free name conflict on the
        // primary key, and exactly one of them inserts; a taken lease is updated only
        // by its holder or once expired.
        let done = self
            .exec(
                Stmt::new(
                    "INSERT INTO keyflow_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE \
                     SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                     WHERE keyflow_leases.holder = EXCLUDED.holder \
                     OR keyflow_leases.expires_at <= $4",
                )
                .bind(name)
                .bind(holder)
                .bind(now.saturating_add(ttl_ms))
                .bind(now),
            )
            .await?;
        Ok(done == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.exec(
            Stmt::new("DELETE FROM keyflow_leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder),
        )
        .await
        .map(drop)
    }

    async fn generation(&self) -> Result<i64, StoreError> {
        let v = self.get_meta("generation").await?;
        v.unwrap_or_else(|| "0".into())
            .parse()
            .map_err(|_| StoreError::Corrupt("corrupt generation counter".into()))
    }

    async fn remember_nonce(
        &self,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.exec(Stmt::new("DELETE FROM keyflow_nonces WHERE expires_at < $1").bind(now))
            .await?;
        // The primary key decides between instances racing with one nonce.
        let inserted = self
            .exec(
                Stmt::new(
                    "INSERT INTO keyflow_nonces (nonce, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (nonce) DO NOTHING",
                )
                .bind(nonce)
                .bind(expires_at),
            )
            .await?;
        Ok(inserted == 1)
    }

    fn change_notifier(&self) -> Option<Arc<Notify>> {
        self.backend.change_notifier()
    }
}
