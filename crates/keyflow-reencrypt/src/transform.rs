//! Per-row value transforms: what to do with one column value. The engine is the same
//! for every transform; a JSON column with selected fields (field-level encryption) will
//! be one more implementation of [`ValueTransform`].

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use keyflow_kms::keyflow_core::key_id;
use keyflow_kms::{
    Context, Encrypt, EncryptMode, Encrypted, EncryptionService, Input, KeyStatus, KeyVersion,
    KmsError, Purpose, VersionFilter,
};

use crate::backend::RowId;
use crate::error::{Error, Result};

/// What a transform decided for one text value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Leave the value; it is (already) under `key_id` (`purpose:vN`).
    Keep {
        /// `purpose:vN`.
        key_id: String,
    },
    /// Write `value`, which is under `key_id`. In a dry run `value` may be empty: it is
    /// never written.
    Write {
        /// The new column value.
        value: String,
        /// `purpose:vN` of the new value.
        key_id: String,
    },
    /// The row cannot be processed and is left untouched; `reason` is a fixed text that
    /// never contains the value.
    Fail {
        /// Why.
        reason: String,
    },
}

/// A per-row transform of a column value. Called once per non-NULL text value, in id
/// order. An `Err` stops the whole run (keystore unreachable, strict mode…); per-row
/// problems are [`Outcome::Fail`].
#[async_trait]
pub trait ValueTransform: Send {
    /// Decides what to do with `value` of row `id`. With `dry_run`, decide without side
    /// effects (no encryption counted, no key ring created).
    async fn transform(&mut self, id: &RowId, value: &str, dry_run: bool) -> Result<Outcome>;
}

/// The AAD context of each row: fixed pairs, plus optionally the row id under a key
/// (for applications that bind ciphertexts to their record, e.g. `recordId=<id>`).
#[derive(Debug, Clone, Default)]
pub struct ContextSpec {
    /// Pairs bound into every value.
    pub fixed: Context,
    /// When set, `<key>=<row id>` is added per row.
    pub id_key: Option<String>,
}

impl ContextSpec {
    /// The context of row `id`.
    pub fn for_row(&self, id: &RowId) -> Result<Cow<'_, Context>> {
        match &self.id_key {
            None => Ok(Cow::Borrowed(&self.fixed)),
            Some(k) => {
                let mut c = self.fixed.clone();
                c.insert(k.clone(), id.to_string())
                    .map_err(|e| Error::Kms(KmsError::from(e)))?;
                Ok(Cow::Owned(c))
            }
        }
    }
}

/// Per-row failure text of a key-management error, or `Err` when the error concerns the
/// whole run rather than this row.
fn row_failure(e: KmsError) -> Result<Outcome> {
    match e {
        KmsError::DecryptionFailed | KmsError::InvalidCiphertext => Ok(Outcome::Fail {
            reason: "decryption failed (wrong context, damaged value or unknown key)".into(),
        }),
        e @ KmsError::KeyNotUsable { .. } => Ok(Outcome::Fail {
            reason: e.to_string(),
        }),
        other => Err(Error::Kms(other)),
    }
}

/// Caches each purpose's active version for the run (one keystore read per purpose).
#[derive(Debug, Default)]
struct ActiveVersions(HashMap<String, Option<KeyVersion>>);

impl ActiveVersions {
    async fn get(
        &mut self,
        service: &EncryptionService,
        purpose: &Purpose,
    ) -> Result<Option<KeyVersion>> {
        if let Some(v) = self.0.get(purpose.as_str()) {
            return Ok(*v);
        }
        let filter = VersionFilter {
            purpose: Some(purpose.clone()),
            status: Some(KeyStatus::Active),
        };
        let v = service
            .keys()
            .list(&filter)
            .await?
            .first()
            .map(|r| r.version);
        self.0.insert(purpose.as_str().to_owned(), v);
        Ok(v)
    }
}

/// Re-encryption: values under a non-active key version are rewrapped under the active
/// one (same purpose, mode, payload kind and context). Values already under the active
/// version are kept without being decrypted, so a second run costs reads only.
#[derive(Debug)]
pub struct Rewrap<'a> {
    service: &'a EncryptionService,
    context: ContextSpec,
    active: ActiveVersions,
}

impl<'a> Rewrap<'a> {
    /// A re-encryption transform over `service`.
    pub fn new(service: &'a EncryptionService, context: ContextSpec) -> Self {
        Self {
            service,
            context,
            active: ActiveVersions::default(),
        }
    }
}

#[async_trait]
impl ValueTransform for Rewrap<'_> {
    async fn transform(&mut self, id: &RowId, value: &str, dry_run: bool) -> Result<Outcome> {
        let Ok(summary) = EncryptionService::summary(value) else {
            return Ok(Outcome::Fail {
                reason: "not a KeyFlow ciphertext".into(),
            });
        };
        let purpose = Purpose::new(&summary.purpose).map_err(KmsError::from)?;
        let Some(active) = self.active.get(self.service, &purpose).await? else {
            // Never let a stray header create a key ring.
            return Ok(Outcome::Fail {
                reason: "no active key for this purpose".into(),
            });
        };
        if summary.key_version == active.get() {
            return Ok(Outcome::Keep {
                key_id: summary.key_id,
            });
        }
        let context = self.context.for_row(id)?;
        if dry_run {
            // Prove the value would rewrap (decrypts), without encrypting anything.
            return Ok(match self.service.decrypt_raw(value, &context).await {
                Ok(_) => Outcome::Write {
                    value: String::new(),
                    key_id: key_id(&purpose, active),
                },
                Err(e) => row_failure(e)?,
            });
        }
        match self.service.rewrap(value, &context).await {
            Ok(r) => Ok(if r.changed {
                Outcome::Write {
                    value: r.ciphertext,
                    key_id: key_id(&purpose, r.to_version),
                }
            } else {
                // A rotation elsewhere made this version active since we looked.
                Outcome::Keep {
                    key_id: key_id(&purpose, r.to_version),
                }
            }),
            Err(e) => row_failure(e),
        }
    }
}

/// Migration: plaintext text values are encrypted (as text) under `purpose`; values that
/// already parse as KeyFlow ciphertexts (`kf1:` and a valid header) are kept.
#[derive(Debug)]
pub struct EncryptPlaintext<'a> {
    service: &'a EncryptionService,
    purpose: Purpose,
    context: ContextSpec,
    deterministic: bool,
    active: ActiveVersions,
}

impl<'a> EncryptPlaintext<'a> {
    /// A migration transform; `deterministic` selects searchable (equality) encryption.
    pub fn new(
        service: &'a EncryptionService,
        purpose: Purpose,
        context: ContextSpec,
        deterministic: bool,
    ) -> Self {
        Self {
            service,
            purpose,
            context,
            deterministic,
            active: ActiveVersions::default(),
        }
    }
}

#[async_trait]
impl ValueTransform for EncryptPlaintext<'_> {
    async fn transform(&mut self, id: &RowId, value: &str, dry_run: bool) -> Result<Outcome> {
        if let Ok(summary) = EncryptionService::summary(value) {
            return Ok(Outcome::Keep {
                key_id: summary.key_id,
            });
        }
        if dry_run {
            // The key ring is created by the first real encryption, not by a dry run.
            let v = self
                .active
                .get(self.service, &self.purpose)
                .await?
                .unwrap_or(KeyVersion::FIRST);
            return Ok(Outcome::Write {
                value: String::new(),
                key_id: key_id(&self.purpose, v),
            });
        }
        let context = self.context.for_row(id)?;
        let plaintext = serde_json::Value::String(value.to_owned());
        let Encrypted {
            ciphertext,
            key_version: version,
        } = self
            .service
            .encrypt(
                Encrypt::new(&self.purpose, &context, Input::Json(&plaintext))
                    .mode(EncryptMode::deterministic_if(self.deterministic)),
            )
            .await?;
        Ok(Outcome::Write {
            value: ciphertext,
            key_id: key_id(&self.purpose, version),
        })
    }
}
