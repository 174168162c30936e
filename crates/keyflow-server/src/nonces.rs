//! Request-integrity nonces kept in the keystore database, so every instance behind a
//! load balancer refuses a replay of a request any of them accepted.

use std::sync::Arc;

use keyflow_kms::Keystore;
use keyflow_transport::{NonceFuture, NonceOutcome, NonceStore};

/// A [`NonceStore`] over the keystore's `keyflow_nonces` table (one statement each way
/// per signed request; signed requests are the key-management routes in production).
pub struct KeystoreNonces(Arc<dyn Keystore>);

impl KeystoreNonces {
    /// Nonces in `store`.
    pub fn new(store: Arc<dyn Keystore>) -> Self {
        Self(store)
    }
}

impl std::fmt::Debug for KeystoreNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeystoreNonces")
    }
}

impl NonceStore for KeystoreNonces {
    fn check_and_insert<'a>(
        &'a self,
        nonce: &'a str,
        expires_at: u64,
        now: u64,
    ) -> NonceFuture<'a> {
        Box::pin(async move {
            let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
            let now = i64::try_from(now).unwrap_or(i64::MAX);
            match self.0.remember_nonce(nonce, expires_at, now).await {
                Ok(true) => Ok(NonceOutcome::Fresh),
                Ok(false) => Ok(NonceOutcome::Replayed),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
