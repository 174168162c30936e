//! The imported legacy keys, ready to decrypt packages and field documents.
//!
//! Built once from the keystore ([`LegacyKeyring::load`]) so that converting many
//! packages costs one hash lookup and one AES-GCM open each, no keystore round trip.

use std::collections::HashMap;

use keyflow_kms::keyflow_core::secret::hazmat::expose_secret_key;
use keyflow_kms::keyflow_core::SecretKey;
use keyflow_kms::{EncryptionService, KeyVersion, Purpose};
use zeroize::Zeroizing;

use crate::error::{LegacyError, Result};
use crate::fields::LegacyField;
use crate::gcm16::Gcm16Key;
use crate::package::Package;

enum Slot {
    Usable {
        purpose: Purpose,
        version: KeyVersion,
        // Boxed: the key schedule is ~1 KiB, the other variant a string.
        key: Box<Gcm16Key>,
    },
    /// Imported, but revoked or destroyed in KeyFlow (or not unwrappable).
    Unusable(String),
}

/// Legacy key id → the KeyFlow purpose and version it was imported as, and its key.
#[derive(Default)]
pub struct LegacyKeyring {
    keys: HashMap<String, Slot>,
}

impl std::fmt::Debug for LegacyKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyKeyring")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl LegacyKeyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every imported legacy key whose KeyFlow version may still decrypt; the others
    /// are remembered as unusable (so a package under them says why).
    pub async fn load(service: &EncryptionService) -> Result<Self> {
        let mut ring = Self::new();
        for (record, dek) in service.keys().legacy_deks().await? {
            match dek {
                Ok(dek) => {
                    ring.insert(&record.legacy_key_id, record.purpose, record.version, &dek)?
                }
                Err(state) => ring.insert_unusable(&record.legacy_key_id, state),
            }
        }
        Ok(ring)
    }

    /// Adds a key.
    pub fn insert(
        &mut self,
        key_id: &str,
        purpose: Purpose,
        version: KeyVersion,
        dek: &SecretKey,
    ) -> Result<()> {
        let key = Gcm16Key::new(expose_secret_key(dek))?;
        self.keys.insert(
            key_id.to_owned(),
            Slot::Usable {
                purpose,
                version,
                key: Box::new(key),
            },
        );
        Ok(())
    }

    /// Records a key that may not decrypt, with its KeyFlow state.
    pub fn insert_unusable(&mut self, key_id: &str, state: String) {
        self.keys.insert(key_id.to_owned(), Slot::Unusable(state));
    }

    /// Number of legacy key ids known.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key was imported.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn key(&self, key_id: &str, version: u64) -> Result<(&Purpose, &Gcm16Key)> {
        match self.keys.get(key_id) {
            None => Err(LegacyError::UnknownKey(key_id.to_owned())),
            Some(Slot::Unusable(status)) => Err(LegacyError::KeyNotUsable {
                key_id: key_id.to_owned(),
                status: status.clone(),
            }),
            Some(Slot::Usable {
                purpose,
                version: v,
                key,
            }) => {
                if u64::from(v.get()) != version {
                    return Err(LegacyError::VersionMismatch {
                        key_id: key_id.to_owned(),
                        found: version,
                        expected: v.get(),
                    });
                }
                Ok((purpose, key))
            }
        }
    }

    /// The KeyFlow purpose a legacy key id was imported under (for authorizing a
    /// decrypt before doing it).
    pub fn purpose_of(&self, key_id: &str) -> Option<&Purpose> {
        match self.keys.get(key_id) {
            Some(Slot::Usable { purpose, .. }) => Some(purpose),
            _ => None,
        }
    }

    /// Decrypts a package: its purpose and plaintext (zeroized on drop).
    pub fn open_package(&self, p: &Package) -> Result<(Purpose, Zeroizing<Vec<u8>>)> {
        let (purpose, key) = self.key(&p.key_id, p.key_version)?;
        let aad = p.aad.as_deref().unwrap_or("").as_bytes();
        let pt = key.open(&p.iv, aad, &p.ciphertext, &p.tag)?;
        Ok((purpose.clone(), pt))
    }

    /// Decrypts one legacy field: its purpose and plaintext.
    pub fn open_field(&self, f: &LegacyField) -> Result<(Purpose, Zeroizing<Vec<u8>>)> {
        let (purpose, key) = self.key(&f.key_id, f.key_version)?;
        let pt = key.open(&f.iv, &[], &f.ciphertext, &f.tag)?;
        Ok((purpose.clone(), pt))
    }
}
