//! The vocabulary of a field request: modes, field specs, selections, the SAD policy,
//! the document binding, options and reports.

use std::str::FromStr;

use keyflow_kms::Context;

use crate::error::{FieldsError, Result};
use crate::names;
use crate::path::{ConcretePath, Selector};

use super::{DEFAULT_BLIND_INDEX_BITS, DOC_KEY, FIELD_KEY, INDEX_KEY, RESERVED_PREFIX};

/// How one field is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// AES-256-GCM with a random nonce: equal values give different ciphertexts.
    #[default]
    Randomized,
    /// AES-256-GCM-SIV, deterministic: equal values (same field, same document id, same
    /// context, same key version) give equal ciphertexts — equality is visible.
    Deterministic,
    /// Randomized encryption of the value plus a blind index of `bits` bits stored
    /// beside it, for equality search.
    BlindIndex {
        /// Bits kept (8..=256).
        bits: u16,
    },
}

impl FromStr for Mode {
    type Err = FieldsError;

    /// `randomized`, `deterministic`, `blind_index` (or `blindIndex`, `blind`), and
    /// `blind_index/24` for a bit length.
    fn from_str(s: &str) -> Result<Self> {
        let (name, bits) = match s.split_once('/') {
            Some((n, b)) => (
                n,
                Some(b.trim().parse::<u16>().map_err(|_| {
                    FieldsError::InvalidOption(format!("blind index bits '{b}' is not a number"))
                })?),
            ),
            None => (s, None),
        };
        let mode = if names::same_name(name, "randomized") {
            Mode::Randomized
        } else if names::same_name(name, "deterministic") {
            Mode::Deterministic
        } else if names::same_name(name, "blindIndex") || names::same_name(name, "blind") {
            Mode::BlindIndex {
                bits: bits.unwrap_or(DEFAULT_BLIND_INDEX_BITS),
            }
        } else {
            return Err(FieldsError::InvalidOption(format!(
                "unknown field mode '{name}' (randomized, deterministic, blind_index[/BITS])"
            )));
        };
        if let Mode::BlindIndex { bits } = mode {
            if !(8..=256).contains(&bits) {
                return Err(FieldsError::InvalidOption(
                    "blind index bits must be 8..=256".into(),
                ));
            }
        } else if bits.is_some() {
            return Err(FieldsError::InvalidOption(format!(
                "only blind_index takes a bit length ('{s}')"
            )));
        }
        Ok(mode)
    }
}

/// A selector and the mode of the values it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Which values.
    pub selector: Selector,
    /// How they are protected.
    pub mode: Mode,
}

impl FromStr for FieldSpec {
    type Err = FieldsError;

    /// `path` or `path:mode` (`email:blind_index`, `taxId:deterministic`,
    /// `email:blind_index/24`).
    fn from_str(s: &str) -> Result<Self> {
        // A mode suffix is recognised only when it parses as a mode, so a ':' inside a
        // quoted member name stays part of the selector.
        if let Some((path, mode)) = s.rsplit_once(':') {
            if let Ok(mode) = mode.trim().parse::<Mode>() {
                return Ok(FieldSpec {
                    selector: path.parse()?,
                    mode,
                });
            }
        }
        Ok(FieldSpec {
            selector: s.parse()?,
            mode: Mode::Randomized,
        })
    }
}

/// Which fields to encrypt: listed selectors and/or auto-detection by purpose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Listed fields (take precedence over auto-detection for the same value).
    pub fields: Vec<FieldSpec>,
    /// Also encrypt (randomized) every member whose name is in the purpose's lists.
    pub auto_detect: bool,
}

impl Selection {
    /// Auto-detection only.
    pub fn auto_detect() -> Self {
        Self {
            fields: Vec::new(),
            auto_detect: true,
        }
    }

    /// Parses a comma-separated list of [`FieldSpec`]s (`ssn,profile.email:blind_index`).
    /// Commas inside `["…"]` are part of the name.
    pub fn parse_list(list: &str) -> Result<Self> {
        Ok(Self {
            fields: split_list(list)
                .into_iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse())
                .collect::<Result<_>>()?,
            auto_detect: false,
        })
    }

    /// The selectors alone (for [`decrypt_fields`]).
    pub fn selectors(&self) -> Vec<Selector> {
        self.fields.iter().map(|f| f.selector.clone()).collect()
    }
}

/// Splits on commas outside `["…"]`.
pub(super) fn split_list(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&list[start..]);
    out
}

/// What to do with sensitive authentication data (CVV/CVC, PIN, track data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SadPolicy {
    /// Remove it from the document before anything is stored (default).
    #[default]
    Strip,
    /// Refuse the whole document with an error naming the fields.
    Reject,
}

impl FromStr for SadPolicy {
    type Err = FieldsError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strip" => Ok(SadPolicy::Strip),
            "reject" => Ok(SadPolicy::Reject),
            other => Err(FieldsError::InvalidOption(format!(
                "unknown sensitive-authentication-data policy '{other}' (strip or reject)"
            ))),
        }
    }
}

/// What binds a document's ciphertexts: its id and the caller's context.
#[derive(Clone, Debug, Default)]
pub struct Binding {
    /// The document id (record id, primary key). When given, a ciphertext moved to
    /// another document fails to decrypt.
    pub doc_id: Option<String>,
    /// Caller pairs bound into every value (keys must not start with `kf.`).
    pub context: Context,
}

impl Binding {
    /// Binding to a document id only.
    pub fn doc(id: impl Into<String>) -> Self {
        Self {
            doc_id: Some(id.into()),
            context: Context::new(),
        }
    }

    /// Refuses caller context keys in the reserved namespace.
    pub fn validate(&self) -> Result<()> {
        if let Some((k, _)) = self
            .context
            .iter()
            .find(|(k, _)| k.starts_with(RESERVED_PREFIX))
        {
            return Err(FieldsError::InvalidOption(format!(
                "context key '{k}' is reserved (keys starting with '{RESERVED_PREFIX}' are set by the field layer)"
            )));
        }
        Ok(())
    }

    /// The AAD context of the value whose path label is `label`.
    pub fn context_for(&self, label: &str) -> Result<Context> {
        let mut ctx = self.context.clone();
        ctx.insert(FIELD_KEY.to_owned(), label.to_owned())
            .map_err(|e| FieldsError::InvalidOption(format!("field path '{label}': {e}")))?;
        if let Some(id) = &self.doc_id {
            ctx.insert(DOC_KEY.to_owned(), id.clone())
                .map_err(|e| FieldsError::InvalidOption(format!("document id: {e}")))?;
        }
        Ok(ctx)
    }
}

/// Options of [`encrypt_fields`].
#[derive(Clone, Debug, Default)]
pub struct EncryptOptions {
    /// Document id and context.
    pub binding: Binding,
    /// Sensitive authentication data: strip (default) or reject.
    pub sad_policy: SadPolicy,
    /// Also bind each value to its array indexes ([`INDEX_KEY`]), so elements of one
    /// array cannot be swapped unnoticed. Off by default: with it, inserting, removing
    /// or reordering elements makes the moved ones fail to decrypt — decrypt, edit,
    /// encrypt again. Decrypt with [`decrypt_fields_with`] and the same setting.
    pub bind_array_index: bool,
}

/// Options of [`decrypt_fields_with`].
#[derive(Clone, Debug, Default)]
pub struct DecryptOptions {
    /// As [`EncryptOptions::bind_array_index`]; must match the encryption's.
    pub bind_array_index: bool,
    /// Fail closed on read (`ENCRYPTION_STRICT_MODE`): a value that must be a
    /// ciphertext but is in clear is refused ([`FieldsError::PlaintextRefused`])
    /// instead of passed through. See [`plaintext_where_required`].
    pub require_ciphertext: bool,
}

/// The AAD context of the value at `path`.
pub(super) fn value_context(
    binding: &Binding,
    path: &ConcretePath,
    bind_index: bool,
) -> Result<Context> {
    let mut ctx = binding.context_for(&path.label())?;
    if bind_index {
        let indexes: Vec<String> = path.indexes().map(|i| i.to_string()).collect();
        if !indexes.is_empty() {
            ctx.insert(INDEX_KEY.to_owned(), indexes.join(","))
                .map_err(|e| FieldsError::InvalidOption(format!("array index: {e}")))?;
        }
    }
    Ok(ctx)
}

/// What [`encrypt_fields`] did, by concrete path (never values).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptReport {
    /// Values encrypted by this call.
    pub encrypted: Vec<String>,
    /// Selected values that were already KeyFlow ciphertexts (left alone).
    pub already_encrypted: Vec<String>,
    /// Blind indexes written (the paths of their members).
    pub blind_indexes: Vec<String>,
    /// Sensitive authentication data removed.
    pub stripped: Vec<String>,
}

/// What [`decrypt_fields`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptReport {
    /// Values decrypted.
    pub decrypted: Vec<String>,
}
