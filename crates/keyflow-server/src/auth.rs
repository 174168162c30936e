//! Bearer-token authentication and role/purpose checks.
//!
//! Tokens are checked on every request against an in-memory snapshot of the token
//! table (lock-free reads), refreshed from the keystore every second. A revocation made
//! by another process therefore takes effect within a second.
//!
//! An unknown token id waits for a re-read that *starts after the request arrived*, so
//! a token created with `keyflow tokens create` works at once. Re-reads are single
//! flight (concurrent unknown ids share one) and start at most every 250 ms, so a flood
//! of forged ids costs at most four token-table reads a second, whatever its size; the
//! forger's requests wait up to 250 ms for their 401.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use keyflow_kms::access::{self, Role, TokenRecord};
use keyflow_kms::clock::Clock;
use keyflow_kms::{Keystore, Purpose, StoreError};

use crate::audit::AuditSlot;
use crate::error::ApiError;
use crate::state::AppState;

/// The least time between two re-reads of the token table for unknown ids. Real time
/// (not the injected clock): it bounds load, it does not decide validity.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);

/// The token table, as last read from the keystore.
pub struct TokenCache {
    snap: ArcSwap<HashMap<String, Arc<TokenRecord>>>,
    store: Arc<dyn Keystore>,
    clock: Arc<dyn Clock>,
    /// Held while a re-read runs: re-reads are serialized, and waiters share them.
    gate: tokio::sync::Mutex<Option<Instant>>,
    /// Re-reads started so far (under `gate`).
    started: AtomicU64,
    /// The `started` number of the last re-read that completed successfully.
    completed: AtomicU64,
}

impl TokenCache {
    /// An empty cache over `store`; call [`TokenCache::refresh`] before serving.
    pub fn new(store: Arc<dyn Keystore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            snap: ArcSwap::from_pointee(HashMap::new()),
            store,
            clock,
            gate: tokio::sync::Mutex::new(None),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        }
    }

    /// Re-reads every token from the keystore (the periodic refresh and start-up).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut last = self.gate.lock().await;
        self.read_locked(&mut last).await
    }

    /// One re-read; the caller holds `gate` (whose value is when the last one started).
    async fn read_locked(&self, last: &mut Option<Instant>) -> Result<(), StoreError> {
        let number = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        *last = Some(Instant::now());
        let tokens = self.store.list_tokens().await?;
        let map = tokens
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        self.snap.store(Arc::new(map));
        self.completed.store(number, Ordering::Release);
        Ok(())
    }

    /// Makes the snapshot at least as new as the table was when the caller arrived
    /// (`arrived`: the `started` count read then): waits for, or runs, a re-read that
    /// started later — no sooner than [`MIN_REFRESH_GAP`] after the previous one.
    async fn catch_up(&self, arrived: u64) -> Result<(), StoreError> {
        let mut last = self.gate.lock().await;
        if self.completed.load(Ordering::Acquire) > arrived {
            return Ok(()); // a re-read that started after we arrived has finished
        }
        if let Some(at) = *last {
            let wait = MIN_REFRESH_GAP.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.read_locked(&mut last).await
    }

    /// How many tokens exist (revoked included).
    pub fn len(&self) -> usize {
        self.snap.load().len()
    }

    /// True when no token exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(ApiError::Unauthorized)?;
        let (id, secret) = access::parse(token).ok_or(ApiError::Unauthorized)?;
        let arrived = self.started.load(Ordering::Acquire);
        let mut record = self.snap.load().get(id).cloned();
        if record.is_none() {
            self.catch_up(arrived).await.map_err(|e| {
                tracing::warn!(error = %e, "token table re-read failed");
                ApiError::Unavailable
            })?;
            record = self.snap.load().get(id).cloned();
        }
        let record = record.ok_or(ApiError::Unauthorized)?;
        // Verify before looking at any other property, in constant time.
        if !access::verify(&record, secret) || !record.is_live(self.clock.now_millis()) {
            return Err(ApiError::Unauthorized);
        }
        Ok(Principal {
            token: record,
            audit: AuditSlot::detached(),
        })
    }
}

/// The authenticated caller of a request. Extracted, it notes itself as the actor in the
/// request's audit slot, and every purpose it is checked against as a purpose involved
/// (so a refusal's audit record says who tried what).
#[derive(Clone, Debug)]
pub struct Principal {
    token: Arc<TokenRecord>,
    audit: AuditSlot,
}

impl Principal {
    /// The token id (the actor in operation records).
    pub fn id(&self) -> &str {
        &self.token.id
    }

    /// The token's role.
    pub fn role(&self) -> Role {
        self.token.role
    }

    /// Requires one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.token.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not perform this operation",
                self.token.role
            )))
        }
    }

    /// The token's display name.
    pub fn name(&self) -> &str {
        &self.token.name
    }

    /// Requires a data-operation role (admin or service) granted `purpose`.
    pub fn require_purpose(&self, purpose: &Purpose) -> Result<(), ApiError> {
        self.audit.add_purpose(purpose.as_str());
        self.require(&[Role::Admin, Role::Service])?;
        if self.token.allows_purpose(purpose) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token is not granted purpose '{purpose}'"
            )))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let slot = AuditSlot::of(&parts.extensions);
        slot.set_token_checked();
        let mut principal = state.tokens.authenticate(header).await?;
        slot.set_actor(principal.id(), principal.name());
        principal.audit = slot;
        Ok(principal)
    }
}
