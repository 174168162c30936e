//! Bearer-token authentication and role/purpose checks.
//!
//! Tokens are checked on every request against an in-memory snapshot of the token
//! table (lock-free reads), refreshed from the keystore every second, and at once —
//! at most every 250 ms — when an unknown token id is presented (so a token created
//! with `keyflow tokens create` works immediately). A revocation made by another
//! process therefore takes effect within a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

const MIN_REFRESH_GAP_MS: u64 = 250;
const NEVER: u64 = u64::MAX;

/// The token table, as last read from the keystore.
pub struct TokenCache {
    snap: ArcSwap<HashMap<String, Arc<TokenRecord>>>,
    store: Arc<dyn Keystore>,
    clock: Arc<dyn Clock>,
    /// The clock's monotonic reading (ms) at the last refresh; [`NEVER`] before the first.
    last_refresh: AtomicU64,
}

impl TokenCache {
    /// An empty cache over `store`; call [`TokenCache::refresh`] before serving.
    pub fn new(store: Arc<dyn Keystore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            snap: ArcSwap::from_pointee(HashMap::new()),
            store,
            clock,
            last_refresh: AtomicU64::new(NEVER),
        }
    }

    /// Re-reads every token from the keystore.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.last_refresh
            .store(self.monotonic_ms(), Ordering::Relaxed);
        let tokens = self.store.list_tokens().await?;
        let map = tokens
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        self.snap.store(Arc::new(map));
        Ok(())
    }

    fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_millis()).unwrap_or(u64::MAX - 1)
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
        let mut record = self.snap.load().get(id).cloned();
        if record.is_none() {
            let last = self.last_refresh.load(Ordering::Relaxed);
            if last == NEVER || self.monotonic_ms().saturating_sub(last) >= MIN_REFRESH_GAP_MS {
                self.refresh()
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                record = self.snap.load().get(id).cloned();
            }
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
