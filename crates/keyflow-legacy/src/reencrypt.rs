//! `keyflow reencrypt --from-legacy`: the re-encryption engine's transform for columns
//! that hold legacy data — packages (a text column) or field documents (a JSON text
//! column) — resumable with its checkpoint and census like any run of the engine.
//!
//! Values that are already KeyFlow's (a `kf1:` ciphertext, or a document without
//! `_encrypted`) are kept, so a second run writes nothing. A value that cannot be
//! converted fails alone, with a reason that never contains the value.

use std::collections::HashMap;

use async_trait::async_trait;
use keyflow_fields::Binding;
use keyflow_kms::keyflow_core::key_id;
use keyflow_kms::{EncryptionService, KeyStatus, Purpose, VersionFilter};
use keyflow_reencrypt::{ContextSpec, Outcome, RowId, ValueTransform};
use serde_json::Value;

use crate::convert::{convert_document, convert_package};
use crate::fields::{is_legacy_document, legacy_fields};
use crate::keyring::LegacyKeyring;
use crate::package::Package;

/// What the column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Legacy packages (base64 text), one per value.
    Packages,
    /// Field documents (JSON text) with `_encrypted` metadata.
    Fields,
}

/// The transform. Build the keyring once ([`LegacyKeyring::load`]) and pass it in.
#[derive(Debug)]
pub struct FromLegacy<'a> {
    service: &'a EncryptionService,
    ring: &'a LegacyKeyring,
    column: Column,
    context: ContextSpec,
    active: HashMap<Purpose, Option<String>>,
}

impl<'a> FromLegacy<'a> {
    /// A transform of `column` values; `context` is bound into every new ciphertext
    /// (for field documents: as the document's context, beside the field path).
    pub fn new(
        service: &'a EncryptionService,
        ring: &'a LegacyKeyring,
        column: Column,
        context: ContextSpec,
    ) -> Self {
        Self {
            service,
            ring,
            column,
            context,
            active: HashMap::new(),
        }
    }

    /// `purpose:vN` of the purpose's active version, read once per run.
    async fn active_key_id(
        &mut self,
        purpose: &Purpose,
    ) -> keyflow_reencrypt::Result<Option<String>> {
        if let Some(k) = self.active.get(purpose) {
            return Ok(k.clone());
        }
        let filter = VersionFilter {
            purpose: Some(purpose.clone()),
            status: Some(KeyStatus::Active),
        };
        let id = self
            .service
            .keys()
            .list(&filter)
            .await?
            .first()
            .map(|r| key_id(purpose, r.version));
        self.active.insert(purpose.clone(), id.clone());
        Ok(id)
    }

    async fn package(
        &mut self,
        id: &RowId,
        value: &str,
        dry_run: bool,
    ) -> keyflow_reencrypt::Result<Outcome> {
        if let Ok(s) = EncryptionService::summary(value) {
            return Ok(Outcome::Keep { key_id: s.key_id });
        }
        if !Package::looks_like(value) {
            return Ok(fail("neither a legacy package nor a KeyFlow ciphertext"));
        }
        let context = self.context.for_row(id)?;
        if dry_run {
            // Prove the value opens, without encrypting anything.
            let opened = Package::parse(value).and_then(|p| self.ring.open_package(&p));
            return match opened {
                Ok((purpose, _)) => self.would_write(&purpose).await,
                Err(e) => Ok(fail(&e.to_string())),
            };
        }
        Ok(
            match convert_package(self.service, self.ring, value, &context).await {
                Ok(ct) => written(ct),
                Err(e) => fail(&e.to_string()),
            },
        )
    }

    async fn document(
        &mut self,
        id: &RowId,
        value: &str,
        dry_run: bool,
    ) -> keyflow_reencrypt::Result<Outcome> {
        let Ok(doc) = serde_json::from_str::<Value>(value) else {
            return Ok(fail("not a JSON document"));
        };
        if !is_legacy_document(&doc) {
            return Ok(Outcome::Keep {
                key_id: first_key_id(&doc).unwrap_or_else(|| "no legacy fields".into()),
            });
        }
        let binding = Binding {
            doc_id: None,
            context: self.context.for_row(id)?.into_owned(),
        };
        if dry_run {
            let opened = legacy_fields(&doc).and_then(|fs| {
                fs.iter()
                    .map(|f| self.ring.open_field(f).map(|(p, _)| p))
                    .collect::<crate::Result<Vec<_>>>()
            });
            return match opened {
                Ok(purposes) => match purposes.first() {
                    Some(p) => self.would_write(&p.clone()).await,
                    None => Ok(Outcome::Keep {
                        key_id: "no legacy fields".into(),
                    }),
                },
                Err(e) => Ok(fail(&e.to_string())),
            };
        }
        Ok(
            match convert_document(self.service, self.ring, doc, &binding).await {
                Ok((converted, _)) => {
                    let key = first_key_id(&converted).unwrap_or_else(|| "no legacy fields".into());
                    Outcome::Write {
                        value: converted.to_string(),
                        key_id: key,
                    }
                }
                Err(e) => fail(&e.to_string()),
            },
        )
    }

    async fn would_write(&mut self, purpose: &Purpose) -> keyflow_reencrypt::Result<Outcome> {
        Ok(match self.active_key_id(purpose).await? {
            Some(key_id) => Outcome::Write {
                value: String::new(),
                key_id,
            },
            None => fail("no active key for this purpose"),
        })
    }
}

fn fail(reason: &str) -> Outcome {
    Outcome::Fail {
        reason: reason.to_owned(),
    }
}

fn written(ct: String) -> Outcome {
    let key_id = EncryptionService::summary(&ct)
        .map(|s| s.key_id)
        .unwrap_or_default();
    Outcome::Write { value: ct, key_id }
}

/// The key id of the first KeyFlow ciphertext in `doc` (for the census).
fn first_key_id(doc: &Value) -> Option<String> {
    match doc {
        Value::String(s) => EncryptionService::summary(s).ok().map(|s| s.key_id),
        Value::Object(m) => m.values().find_map(first_key_id),
        Value::Array(a) => a.iter().find_map(first_key_id),
        _ => None,
    }
}

#[async_trait]
impl ValueTransform for FromLegacy<'_> {
    async fn transform(
        &mut self,
        id: &RowId,
        value: &str,
        dry_run: bool,
    ) -> keyflow_reencrypt::Result<Outcome> {
        match self.column {
            Column::Packages => self.package(id, value, dry_run).await,
            Column::Fields => self.document(id, value, dry_run).await,
        }
    }
}
