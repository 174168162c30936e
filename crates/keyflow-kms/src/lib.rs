//! # keyflow-kms
//!
//! Key management for KeyFlow: the KEK (password-file provider), DEK key rings per
//! purpose with versioned lifecycles, the [`Keystore`] trait that backends implement,
//! a lock-free cache of unwrapped keys ([`KeyRing`]), and the [`EncryptionService`]
//! facade that applications call: data operations on it, key administration behind
//! [`EncryptionService::keys`] ([`KeyAdmin`]).
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn keyflow_kms::Keystore>) -> keyflow_kms::Result<()> {
//! use keyflow_kms::{kek_provider, EncryptionService, ServiceConfig};
//! use keyflow_core::{Context, Purpose};
//!
//! let password = kek_provider::KekPassword::new("a long KEK password".into(), false)?;
//! let kek = kek_provider::unlock("keyflow-data/kek.json".as_ref(), &password, &*store).await?;
//! let service = EncryptionService::new(store, kek, ServiceConfig::default());
//! let purpose = Purpose::new("userData")?;
//! let ct = service.encrypt_value(&serde_json::json!(42), &purpose, &Context::new()).await?;
//! let back = service.decrypt(&ct, &Context::new()).await?; // Decrypted::Json(42)
//! # Ok(()) }
//! ```

mod absent;
pub mod access;
mod admin;
pub mod atomic_file;
pub mod audit;
pub mod backup;
mod cache;
pub mod clock;
mod error;
pub mod kek_provider;
pub mod kek_retire;
pub mod kek_rotation;
pub mod keystore;
pub mod legacy;
mod lifecycle;
pub mod model;
mod ring;
pub mod row_mac;
pub mod scheduler;
mod service;

pub use admin::KeyAdmin;
pub use cache::CacheStats;
pub use error::{KmsError, Result};
pub use keyflow_core::{self, Context, KeyVersion, Purpose};
pub use keystore::{
    Coordination, CreateOutcome, KekBinding, KeyVersions, Keystore, LegacyKeys, Policies,
    RotateOutcome, StoreError, Tokens, WriteOutcome,
};
pub use lifecycle::VersionChange;
pub use model::{
    KeyStatus, KeyVersionRecord, Policy, RewrappedKey, StatusChange, StatusOutcome, VersionFilter,
};
pub use ring::KeyRing;
pub use service::{
    BlindIndex, Decrypted, Encrypt, EncryptMode, Encrypted, EncryptionService, Input, Rewrapped,
    Rotation, ServiceConfig, Summary,
};
