//! The `Keystore` trait: where wrapped key versions and their metadata persist.
//!
//! Small on purpose. Every method that changes more than one row is one transaction
//! in the backend; concurrent writers (other threads, processes or server instances)
//! are expected, and conflicts are reported as outcomes, never half-applied.

use async_trait::async_trait;
use keyflow_core::{KeyVersion, Purpose};

use crate::access::TokenRecord;
use crate::model::{KeyVersionRecord, VersionFilter};

/// A keystore backend failure (connection, I/O, constraint the backend could not map).
/// The message never contains key material: wrapped keys are bound as parameters and
/// never formatted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// Result of creating a purpose's first version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Version 1 was inserted as active.
    Created,
    /// The purpose already had versions; nothing was written.
    AlreadyExists,
}

/// Result of a rotation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The previous version is now `rotating` and the new one `active`.
    Rotated,
    /// The expected previous active version was no longer active, or the new version
    /// number was taken: another writer rotated first. Nothing was written.
    Conflict,
}

/// Persistence of key versions. See the module docs for the transactional contract;
/// `keyflow-keystore-contract` is the test suite every implementation must pass.
#[async_trait]
pub trait Keystore: Send + Sync + 'static {
    /// Reads a metadata value (e.g. the KEK id the keystore belongs to).
    async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a metadata value if it is absent, atomically; returns the value now stored
    /// (the existing one if another writer set it first).
    async fn init_meta(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Versions matching `filter`, ordered by purpose then version.
    async fn list_versions(
        &self,
        filter: &VersionFilter,
    ) -> Result<Vec<KeyVersionRecord>, StoreError>;

    /// One version.
    async fn get_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;

    /// The purpose's active version, if the purpose exists.
    async fn active_version(
        &self,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;

    /// Inserts `first` (version 1, `active`) unless the purpose already has versions.
    async fn create_first(&self, first: &KeyVersionRecord) -> Result<CreateOutcome, StoreError>;

    /// In one transaction: version `next.version - 1` goes from `active` to `rotating`
    /// and `next` is inserted as `active`. Cost independent of the number of versions.
    async fn rotate(&self, next: &KeyVersionRecord, now: i64) -> Result<RotateOutcome, StoreError>;

    /// Adds `count` to a version's encryption counter.
    async fn add_usage(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        count: u64,
    ) -> Result<(), StoreError>;

    /// Stores a new API token (its id is unique).
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;

    /// Every API token, revoked ones included, ordered by creation time.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks a token revoked at `now`; `false` if no unrevoked token has that id.
    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool, StoreError>;
}
