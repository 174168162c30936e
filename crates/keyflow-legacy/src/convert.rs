//! `legacy convert`: legacy packages and field documents → KeyFlow ciphertexts under
//! each purpose's active version (the purpose is the one the package's legacy key was
//! imported under). The plaintext never leaves this process and is zeroized.

use keyflow_fields::path::Step;
use keyflow_fields::{Binding, ConcretePath};
use keyflow_kms::keyflow_core::PayloadKind;
use keyflow_kms::{Context, Encrypt, EncryptionService, Input};
use serde_json::Value;

use crate::error::{LegacyError, Result};
use crate::fields::{legacy_fields, value_at_mut, ENCRYPTED, ENCRYPTION_VERSION};
use crate::keyring::LegacyKeyring;
use crate::package::{typed_value, Package};

/// Converts one legacy package (its base64 text) into a KeyFlow ciphertext bound to
/// `context`. Text that the legacy reader would have parsed as JSON (starting with `{`
/// or `[`) becomes that JSON value; other text stays a string; a plaintext that is not
/// UTF-8 (a Buffer) is kept as bytes.
pub async fn convert_package(
    service: &EncryptionService,
    ring: &LegacyKeyring,
    text: &str,
    context: &Context,
) -> Result<String> {
    let package = Package::parse(text)?;
    let (purpose, plaintext) = ring.open_package(&package)?;
    let ct = match typed_value(&plaintext) {
        Some(value) => service.encrypt_value(&value, &purpose, context).await?,
        None => {
            service
                .encrypt(Encrypt::new(
                    &purpose,
                    context,
                    Input::Payload(PayloadKind::Bytes, &plaintext),
                ))
                .await?
                .ciphertext
        }
    };
    Ok(ct)
}

/// What [`convert_document`] did: the fields converted (as `_encrypted` named them).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DocumentReport {
    /// Fields converted.
    pub converted: Vec<String>,
}

/// Converts a legacy field document into one that KeyFlow's field-level decryption
/// reads (`keyflow fields decrypt`, `/decrypt-fields`): each listed field is decrypted
/// and re-encrypted under its purpose's active version with the AAD that
/// `keyflow_fields` gives that path and `binding`; `_encrypted` and
/// `_encryptionVersion` are removed. All or nothing per document: the first field that
/// fails ends the call and the input is consumed.
pub async fn convert_document(
    service: &EncryptionService,
    ring: &LegacyKeyring,
    mut doc: Value,
    binding: &Binding,
) -> Result<(Value, DocumentReport)> {
    binding.validate()?;
    let fields = legacy_fields(&doc)?;
    let mut done = Vec::with_capacity(fields.len());
    for f in &fields {
        let (purpose, plaintext) = ring.open_field(f)?;
        let value = typed_value(&plaintext).ok_or_else(|| {
            LegacyError::malformed(
                "field document",
                format!("field '{}' does not decrypt to text", f.name),
            )
        })?;
        let mut path = ConcretePath::root();
        for p in &f.path {
            path.push(Step::Key(p.clone()));
        }
        let ctx = binding.context_for(&path.label())?;
        let ct = service
            .encrypt(Encrypt::new(&purpose, &ctx, Input::Json(&value)))
            .await?
            .ciphertext;
        done.push((f, ct));
    }
    let mut report = DocumentReport::default();
    for (f, ct) in done {
        if let Some(slot) = value_at_mut(&mut doc, &f.path) {
            *slot = Value::String(ct);
        }
        report.converted.push(f.name.clone());
    }
    if let Some(obj) = doc.as_object_mut() {
        obj.remove(ENCRYPTED);
        obj.remove(ENCRYPTION_VERSION);
    }
    Ok((doc, report))
}
