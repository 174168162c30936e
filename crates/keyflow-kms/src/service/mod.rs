//! `EncryptionService`: the library facade. It is three things, each its own type:
//!
//! - the data operations, on the service itself ([`data`]): encrypt (one request type,
//!   [`Encrypt`]), decrypt, batches, blind indexes, rewrap, mask, summaries;
//! - key administration, [`EncryptionService::keys`] ([`crate::KeyAdmin`]): generate,
//!   rotate, list, lifecycle, policies, the scheduler, backup, legacy imports;
//! - the key ring, [`EncryptionService::ring`] ([`crate::KeyRing`]): keystore, KEK,
//!   cache and usage, which both of the others use.

mod data;

use std::sync::Arc;
use std::time::Duration;

use keyflow_core::kek::Kek;
use keyflow_core::{KeyVersion, OsRng, Purpose, SecureRandom};

use crate::admin::KeyAdmin;
use crate::cache::KeyCache;
use crate::clock::{Clock, SystemClock};
use crate::keystore::Keystore;
use crate::ring::KeyRing;

pub use data::{BlindIndex, Decrypted, Encrypt, EncryptMode, Encrypted, Input, Rewrapped, Summary};

/// Settings of an [`EncryptionService`].
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `ENCRYPTION_STRICT_MODE`: a purpose must be generated before it can encrypt.
    pub strict_mode: bool,
    /// How long an unwrapped key stays cached (default one hour).
    pub cache_ttl: Duration,
    /// Encryptions reserved in the keystore at a time, per version (one write per
    /// block; the count the keystore shows is ahead of the real one by at most the
    /// unused part of each process's block, given back by
    /// [`KeyRing::flush_usage`]).
    pub usage_flush_every: u64,
    /// Reserve the next block from a spawned task when a quarter of the current one is
    /// left, so the request path rarely waits for the keystore (servers; needs a tokio
    /// runtime that keeps running, so one-shot tools leave it off and reserve inline).
    pub background_usage_flush: bool,
    /// Servers: cached keys count as fresh only while the last successful
    /// [`KeyRing::revalidate`] is younger than this (`None`: no bound; for
    /// one-shot tools that never revalidate).
    pub max_staleness: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            strict_mode: false,
            cache_ttl: Duration::from_secs(3600),
            usage_flush_every: 4096,
            background_usage_flush: false,
            max_staleness: None,
        }
    }
}

/// The result of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The purpose rotated.
    pub purpose: Purpose,
    /// The version that is now `rotating`.
    pub old_version: KeyVersion,
    /// The version that is now `active`.
    pub new_version: KeyVersion,
}

/// The encryption service. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct EncryptionService {
    ring: KeyRing,
}

impl std::fmt::Debug for EncryptionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionService")
            .field("kek", &self.ring.kek)
            .field("config", &self.ring.config)
            .finish_non_exhaustive()
    }
}

impl EncryptionService {
    /// A service over `store`, with the unlocked `kek`, the OS RNG and the system clock.
    ///
    /// Installs the KEK's row sealer in `store` unless one of the same KEK is there
    /// (rows then verify without an unlock through [`crate::kek_provider`]; rows from
    /// before row MACs are sealed only by an unlock).
    pub fn new(store: Arc<dyn Keystore>, kek: Kek, config: ServiceConfig) -> Self {
        if store.row_sealer().is_none_or(|s| s.kek_id() != kek.id()) {
            match crate::row_mac::RowSealer::new(&kek) {
                Ok(s) => store.install_row_sealer(Arc::new(s)),
                // Without a sealer the keystore refuses to read rows: fail closed.
                Err(_) => tracing::error!("cannot derive the row MAC key"),
            }
        }
        Self {
            ring: KeyRing::new(store, kek, Arc::new(OsRng), Arc::new(SystemClock), config),
        }
    }

    /// Replaces the clock: timestamps, policies and the key cache's TTL and staleness
    /// bound all read it (tests pass a [`crate::clock::ManualClock`]). Call it before
    /// the first use: it starts an empty key cache on the new clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let config = &self.ring.config;
        self.ring.cache = KeyCache::new(config.cache_ttl, config.max_staleness, clock.clone());
        self.ring.clock = clock;
        self
    }

    /// Replaces the random source (tests).
    pub fn with_rng(mut self, rng: Arc<dyn SecureRandom>) -> Self {
        self.ring.rng = rng;
        self
    }

    /// `ENCRYPTION_STRICT_MODE`: purposes must be generated before use, and the field
    /// layer's callers refuse plaintext where a ciphertext is required.
    pub fn strict_mode(&self) -> bool {
        self.ring.config.strict_mode
    }

    /// The key ring: cache, usage counts, revalidation, the clock, and key access for
    /// formats built on the data keys.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Key administration: generate, rotate, list, lifecycle, policies, the scheduler,
    /// backup and legacy imports.
    pub fn keys(&self) -> KeyAdmin<'_> {
        KeyAdmin::new(&self.ring)
    }
}
