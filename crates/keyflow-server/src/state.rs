//! Shared server state.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyflow_kms::EncryptionService;

use crate::audit::AuditTrail;
use crate::auth::TokenCache;
use crate::metrics::Metrics;
use crate::upkeep::ChainCheck;

/// Limits applied to requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest JSON body, bytes (default 1 MiB).
    pub json_body_bytes: usize,
    /// Most items in one batch.
    pub batch_items: usize,
    /// Largest streamed body of `/files/encrypt` and `/files/decrypt`, bytes (default
    /// 10 GiB; the JSON limit does not apply to them).
    pub file_body_bytes: u64,
    /// Streamed file responses in progress at once (`/files/*`; default 64); beyond,
    /// 503 `overloaded`. See [`crate::routes::file_slots`].
    pub file_streams: usize,
    /// A streamed file response whose client reads nothing for this long is aborted
    /// (default 60 s).
    pub file_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 1 << 20,
            batch_items: 1000,
            file_body_bytes: 10 << 30,
            file_streams: 64,
            file_idle: Duration::from_secs(60),
        }
    }
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// The encryption service.
    pub service: Arc<EncryptionService>,
    /// API tokens.
    pub tokens: TokenCache,
    /// Request limits.
    pub limits: Limits,
    /// Operation counters.
    pub metrics: Metrics,
    /// When the server started, on the service clock's monotonic reading.
    pub started: Duration,
    /// The audit trail every request is recorded in (`None`: auditing disabled).
    pub audit: Option<AuditTrail>,
    /// What the background verification of the audit chain found.
    chain_check: Mutex<ChainCheck>,
    /// The KEK file, when known (`/status` lists the old KEK files beside it).
    kek_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Transition reads of legacy data (set once by [`AppState::enable_legacy_reads`]).
    legacy: std::sync::OnceLock<crate::legacy::LegacyReads>,
    /// `/health`'s cached keystore check.
    health: crate::health::HealthCache,
    /// What this process serves, for `/compliance` (set once by `keyflow serve`).
    deployment: std::sync::OnceLock<crate::compliance::Deployment>,
    /// The alerts' last evaluation, thresholds and webhook ([`crate::alerts`]).
    pub alerts: crate::alerts::AlertBoard,
    /// Streamed file responses in progress ([`Limits::file_streams`] permits).
    file_slots: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Builds the state, without an audit trail.
    pub fn new(service: Arc<EncryptionService>, tokens: TokenCache, limits: Limits) -> Self {
        Self::with_audit(service, tokens, limits, None)
    }

    /// Builds the state with an audit trail (see [`AuditTrail::start`]; `None`:
    /// auditing disabled).
    pub fn with_audit(
        service: Arc<EncryptionService>,
        tokens: TokenCache,
        limits: Limits,
        audit: Option<AuditTrail>,
    ) -> Self {
        let started = service.ring().clock().monotonic();
        let file_slots = Arc::new(tokio::sync::Semaphore::new(limits.file_streams));
        Self(Arc::new(Inner {
            service,
            tokens,
            limits,
            metrics: Metrics::default(),
            started,
            audit,
            chain_check: Mutex::default(),
            kek_path: std::sync::OnceLock::new(),
            legacy: std::sync::OnceLock::new(),
            health: crate::health::HealthCache::default(),
            deployment: std::sync::OnceLock::new(),
            alerts: crate::alerts::AlertBoard::default(),
            file_slots,
        }))
    }
}

impl AppState {
    /// What the background verification of the audit chain found so far
    /// ([`crate::upkeep::audit_verify_pass`]).
    pub fn chain_check(&self) -> ChainCheck {
        self.chain_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_chain_check(&self, check: ChainCheck) {
        *self
            .chain_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = check;
    }

    /// Tells `/status` where the KEK file is, so it can list the retired and orphaned
    /// KEK files beside it (each still unlocks old dumps; `keyflow kek retire`). Set
    /// once; later calls are ignored.
    pub fn set_kek_path(&self, path: std::path::PathBuf) {
        let _ = self.kek_path.set(path);
    }

    /// The KEK file, if set.
    pub fn kek_path(&self) -> Option<&std::path::Path> {
        self.kek_path.get().map(std::path::PathBuf::as_path)
    }

    /// Turns on transition reads of legacy data (docs/legacy-migration.md); off by
    /// default. Idempotent.
    pub fn enable_legacy_reads(&self) {
        let _ = self.legacy.get_or_init(Default::default);
    }

    /// The transition-read state, when on.
    pub fn legacy_reads(&self) -> Option<&crate::legacy::LegacyReads> {
        self.legacy.get()
    }

    /// A slot for one streamed file response, if one is free.
    pub(crate) fn file_slot(&self) -> Option<crate::routes::file_slots::FileSlot> {
        self.file_slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(crate::routes::file_slots::FileSlot::new)
    }

    /// Tells `/compliance` what this process serves (TLS, production, journal). Set
    /// once; later calls are ignored.
    pub fn set_deployment(&self, deployment: crate::compliance::Deployment) {
        let _ = self.deployment.set(deployment);
    }

    /// What this process serves, if set.
    pub fn deployment(&self) -> Option<&crate::compliance::Deployment> {
        self.deployment.get()
    }

    /// `/health`'s cached keystore check ([`crate::health`]).
    pub fn health(&self) -> &crate::health::HealthCache {
        &self.health
    }

    /// Time since the server started, on the service clock.
    pub fn uptime(&self) -> Duration {
        self.service
            .ring()
            .clock()
            .monotonic()
            .saturating_sub(self.started)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
