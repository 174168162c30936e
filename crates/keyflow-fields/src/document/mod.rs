//! JSON documents: [`encrypt_fields`] and [`decrypt_fields`].
//!
//! Each value is encrypted on its own, under the purpose's active key, with an AAD made
//! of the caller's context plus two reserved pairs: [`FIELD_KEY`] = the value's path
//! label (`cards[].cardnumber`) and, when a document id is given, [`DOC_KEY`] = that
//! id. A ciphertext copied into another field or another document therefore fails to
//! decrypt.
//!
//! Blind indexes are stored beside their value, in the same object, under the member
//! name + [`BLIND_INDEX_SUFFIX`] (`email` → `email_bidx`): a lowercase hex string,
//! keyed by the path label, so the same e-mail in two documents has the same index and
//! a `WHERE email_bidx IN (…)` finds it. [`decrypt_fields`] removes them again.

use std::collections::BTreeSet;

use keyflow_kms::keyflow_core::envelope;
use keyflow_kms::{Decrypted, Encrypt, EncryptMode, EncryptionService, Input, KmsError, Purpose};
use serde_json::{Map, Value};

use crate::blind::index_bytes;
use crate::error::{FieldsError, Result};
use crate::names;
use crate::path::{member, walk, ConcretePath, Selector, Step};

/// Reserved context key: the path label of the value.
pub const FIELD_KEY: &str = "kf.field";
/// Reserved context key: the document id, when one is given.
pub const DOC_KEY: &str = "kf.doc";
/// Reserved context key: the array indexes on the value's path (`2` for
/// `cards[2].number`, `2,0` for `cards[2].tags[0]`), bound only when asked
/// ([`EncryptOptions::bind_array_index`]).
pub const INDEX_KEY: &str = "kf.index";
/// Caller context keys may not start with this prefix.
pub const RESERVED_PREFIX: &str = "kf.";
/// Suffix of the member that holds a value's blind index.
pub const BLIND_INDEX_SUFFIX: &str = "_bidx";
/// Blind-index length when none is given (see [`crate::blind::bits_for_distinct_values`]).
pub const DEFAULT_BLIND_INDEX_BITS: u16 = 32;

mod options;

use options::value_context;
pub use options::{
    Binding, DecryptOptions, DecryptReport, EncryptOptions, EncryptReport, FieldSpec, Mode,
    SadPolicy, Selection,
};

/// True when `s` is a KeyFlow text ciphertext (prefix and a well-formed header). Does
/// not authenticate: that needs the key.
pub fn is_ciphertext(s: &str) -> bool {
    envelope::read::looks_like_text_envelope(s) && EncryptionService::summary(s).is_ok()
}

struct Target {
    path: ConcretePath,
    mode: Mode,
}

/// Removes (or, with [`SadPolicy::Reject`], reports) every member whose name is
/// sensitive authentication data, at any depth. Returns the paths.
pub fn enforce_sad_policy(doc: &mut Value, policy: SadPolicy) -> Result<Vec<String>> {
    let found = find_sad(doc);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    if policy == SadPolicy::Reject {
        return Err(FieldsError::SensitiveAuthenticationData { paths: shown });
    }
    // Only object members are removed, so no other found path shifts.
    for path in &found {
        if let Some((obj, name)) = path.parent_object_mut(doc) {
            let name = name.to_owned();
            obj.remove(&name);
        }
    }
    Ok(shown)
}

/// Every member named as sensitive authentication data (not searched further).
fn find_sad(doc: &Value) -> Vec<ConcretePath> {
    let mut found = Vec::new();
    walk(doc, |_, at| match member(at) {
        Some(name) if names::is_sensitive_authentication_data(name) => {
            found.push(ConcretePath::from_refs(at));
            false
        }
        _ => true,
    });
    found
}

/// Every member of `doc` (any depth) whose name is on the lists of `mask`; matched
/// members are not searched further (their whole value is encrypted).
fn auto_targets(doc: &Value, mask: u8) -> Vec<ConcretePath> {
    let mut out = Vec::new();
    walk(doc, |_, at| match member(at) {
        Some(name) if names::in_mask(name, mask) => {
            out.push(ConcretePath::from_refs(at));
            false
        }
        _ => true,
    });
    out
}

/// Whether `steps` ends in a member `<name>_bidx` whose object also holds `<name>`.
fn is_blind_index_member(doc: &Value, steps: &[Step]) -> bool {
    let Some((Step::Key(last), parent)) = steps.split_last() else {
        return false;
    };
    let Some(base) = last.strip_suffix(BLIND_INDEX_SUFFIX) else {
        return false;
    };
    let object = parent.iter().try_fold(doc, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(m)) => m.get(k),
        (Step::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    });
    matches!(object, Some(Value::Object(m)) if m.contains_key(base))
}

/// Listed targets first, then auto-detected ones; a value inside another selected
/// value is dropped (the outer one is encrypted whole), duplicates keep the first.
fn plan(doc: &Value, selection: &Selection, purpose: &Purpose) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    for spec in &selection.fields {
        for path in spec.selector.matches(doc) {
            targets.push(Target {
                path,
                mode: spec.mode,
            });
        }
    }
    if selection.auto_detect {
        let mask = names::purpose_mask(purpose.as_str())
            .ok_or_else(|| FieldsError::NoDetectionList(purpose.clone()))?;
        targets.extend(auto_targets(doc, mask).into_iter().map(|path| Target {
            path,
            mode: Mode::Randomized,
        }));
    }
    // A blind index this module wrote (`email_bidx` beside `email`) is never a target:
    // a wildcard selector run a second time would otherwise encrypt the index (the
    // document stops being searchable) and index it again (`email_bidx_bidx`).
    targets.retain(|t| !is_blind_index_member(doc, t.path.steps()));
    if targets.len() > 1 {
        // O(n · depth · log n): a document may select thousands of array elements.
        let all: BTreeSet<&[Step]> = targets.iter().map(|t| t.path.steps()).collect();
        let inside: Vec<bool> = targets
            .iter()
            .map(|t| {
                let steps = t.path.steps();
                (0..steps.len()).any(|k| all.contains(&steps[..k]))
            })
            .collect();
        // The first target of each path wins (listed before auto-detected).
        let mut first: std::collections::BTreeMap<&[Step], usize> = Default::default();
        for (i, t) in targets.iter().enumerate() {
            first.entry(t.path.steps()).or_insert(i);
        }
        let keep: Vec<bool> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| !inside[i] && first.get(t.path.steps()) == Some(&i))
            .collect();
        drop(first);
        let mut keep = keep.into_iter();
        targets.retain(|_| keep.next().unwrap_or(false));
    }
    Ok(targets)
}

/// Encrypts the selected fields of `doc` under `purpose` (see the module docs for the
/// AAD binding and blind-index placement).
///
/// First, sensitive authentication data is stripped or refused by policy, wherever it
/// is and whatever was selected. Null values and values that already are KeyFlow
/// ciphertexts are left alone (so running twice is a no-op). Any failure returns an
/// error naming the path; the input document is consumed and nothing partial is
/// returned.
pub async fn encrypt_fields(
    service: &EncryptionService,
    mut doc: Value,
    selection: &Selection,
    purpose: &Purpose,
    options: &EncryptOptions,
) -> Result<(Value, EncryptReport)> {
    options.binding.validate()?;
    let mut report = EncryptReport {
        stripped: enforce_sad_policy(&mut doc, options.sad_policy)?,
        ..EncryptReport::default()
    };
    let targets = plan(&doc, selection, purpose)?;
    for t in targets {
        let Some(value) = t.path.get(&doc) else {
            continue;
        };
        let shown = t.path.to_string();
        if value.is_null() {
            continue;
        }
        if value.as_str().is_some_and(is_ciphertext) {
            report.already_encrypted.push(shown);
            continue;
        }
        let label = t.path.label();
        let ctx = value_context(&options.binding, &t.path, options.bind_array_index)?;
        let fail = |source: KmsError| FieldsError::Encrypt {
            path: shown.clone(),
            source,
        };
        let (ct, index) = match t.mode {
            Mode::Randomized | Mode::Deterministic => {
                let det = t.mode == Mode::Deterministic;
                let ct = service
                    .encrypt(
                        Encrypt::new(purpose, &ctx, Input::Json(value))
                            .mode(EncryptMode::deterministic_if(det)),
                    )
                    .await
                    .map_err(fail)?
                    .ciphertext;
                (ct, None)
            }
            Mode::BlindIndex { bits } => {
                if t.path.last_key().is_none() {
                    return Err(FieldsError::BlindIndexPlacement(shown));
                }
                let bi = service
                    .blind_index(purpose, &label, &index_bytes(value), bits)
                    .await
                    .map_err(fail)?;
                let ct = service
                    .encrypt(Encrypt::new(purpose, &ctx, Input::Json(value)))
                    .await
                    .map_err(fail)?
                    .ciphertext;
                (ct, Some(bi.hex))
            }
        };
        if let Some(slot) = t.path.get_mut(&mut doc) {
            *slot = Value::String(ct);
        }
        if let Some(hex) = index {
            if let Some((obj, name)) = t.path.parent_object_mut(&mut doc) {
                let member = format!("{name}{BLIND_INDEX_SUFFIX}");
                let mut at = t.path.clone();
                at.pop();
                at.push(Step::Key(member.clone()));
                obj.insert(member, Value::String(hex));
                report.blind_indexes.push(at.to_string());
            }
        }
        report.encrypted.push(shown);
    }
    Ok((doc, report))
}

/// The paths [`decrypt_fields`] would decrypt: every string with the KeyFlow prefix
/// (or, with `selectors`, only those they match).
fn ciphertext_paths(doc: &Value, selectors: Option<&[Selector]>) -> Vec<ConcretePath> {
    let mut paths = Vec::new();
    match selectors {
        Some(sel) => {
            for s in sel {
                paths.extend(s.matches(doc));
            }
            paths.sort();
            paths.dedup();
            paths.retain(|p| {
                p.get(doc)
                    .and_then(Value::as_str)
                    .is_some_and(envelope::read::looks_like_text_envelope)
            });
        }
        None => paths = prefixed_strings(doc),
    }
    paths
}

/// The ciphertexts [`decrypt_fields`] would decrypt, with their concrete paths and the
/// purpose each header names (`None` when the header does not parse; decrypting it
/// fails) — for authorizing a decrypt before doing it.
pub fn ciphertexts(
    doc: &Value,
    selectors: Option<&[Selector]>,
) -> Vec<(ConcretePath, Option<Purpose>)> {
    ciphertext_paths(doc, selectors)
        .into_iter()
        .map(|p| {
            let purpose = p
                .get(doc)
                .and_then(Value::as_str)
                .and_then(|s| EncryptionService::summary(s).ok())
                .and_then(|sum| Purpose::new(&sum.purpose).ok());
            (p, purpose)
        })
        .collect()
}

/// Every string with the KeyFlow prefix, at any depth.
fn prefixed_strings(doc: &Value) -> Vec<ConcretePath> {
    let mut out = Vec::new();
    walk(doc, |v, at| match v {
        Value::String(s) if envelope::read::looks_like_text_envelope(s) => {
            out.push(ConcretePath::from_refs(at));
            false
        }
        _ => true,
    });
    out
}

/// The values of `doc` that must be ciphertexts but are in clear, for strict reads
/// ([`DecryptOptions::require_ciphertext`]): with `selectors`, every value they select;
/// without, every member whose name is on one of the sensitive-field lists (any
/// purpose's: a decrypt names no purpose). Null is allowed (nothing to protect), as
/// [`encrypt_fields`] leaves it; anything else that is not a KeyFlow text ciphertext —
/// a string, a number, an object — is plaintext.
pub fn plaintext_where_required(doc: &Value, selectors: Option<&[Selector]>) -> Vec<ConcretePath> {
    let clear = |v: &Value| match v {
        Value::Null => false,
        Value::String(s) => !envelope::read::looks_like_text_envelope(s),
        _ => true,
    };
    let mut out = Vec::new();
    match selectors {
        Some(selectors) => {
            for s in selectors {
                out.extend(
                    s.matches(doc)
                        .into_iter()
                        .filter(|p| p.get(doc).is_some_and(clear)),
                );
            }
            out.sort();
            out.dedup();
        }
        None => {
            out.extend(
                auto_targets(doc, u8::MAX)
                    .into_iter()
                    .filter(|p| p.get(doc).is_some_and(clear)),
            );
        }
    }
    out
}

/// Decrypts the KeyFlow ciphertexts of `doc` (all of them, or those `selectors` match;
/// selected values that are not ciphertexts are left alone) and removes the blind
/// indexes stored beside them.
///
/// `binding` must be the one given at encryption (same document id and context). The
/// first value that fails to decrypt ends the call with an error naming its path: the
/// document is consumed, so no half-decrypted document or placeholder can be written
/// back.
pub async fn decrypt_fields(
    service: &EncryptionService,
    doc: Value,
    selectors: Option<&[Selector]>,
    binding: &Binding,
) -> Result<(Value, DecryptReport)> {
    decrypt_fields_with(service, doc, selectors, binding, &DecryptOptions::default()).await
}

/// [`decrypt_fields`] with options (array-index binding).
pub async fn decrypt_fields_with(
    service: &EncryptionService,
    mut doc: Value,
    selectors: Option<&[Selector]>,
    binding: &Binding,
    options: &DecryptOptions,
) -> Result<(Value, DecryptReport)> {
    binding.validate()?;
    if options.require_ciphertext {
        let clear = plaintext_where_required(&doc, selectors);
        if !clear.is_empty() {
            return Err(FieldsError::PlaintextRefused {
                paths: clear.iter().map(ToString::to_string).collect(),
            });
        }
    }
    let found = ciphertext_paths(&doc, selectors);
    let mut decrypted = Vec::with_capacity(found.len());
    for path in &found {
        let shown = path.to_string();
        let ctx = value_context(binding, path, options.bind_array_index)?;
        let Some(ct) = path.get(&doc).and_then(Value::as_str) else {
            continue;
        };
        let fail = |source: KmsError| FieldsError::Decrypt {
            path: shown.clone(),
            source,
        };
        let value = match service.decrypt(ct, &ctx).await.map_err(fail)? {
            Decrypted::Json(v) => v,
            Decrypted::Bytes(_) => return Err(fail(KmsError::DecryptionFailed)),
        };
        decrypted.push((path, value, shown));
    }
    // Only now, with every value decrypted, is the document changed.
    let mut report = DecryptReport::default();
    for (path, value, shown) in decrypted {
        if let Some(slot) = path.get_mut(&mut doc) {
            *slot = value;
        }
        if let Some((obj, name)) = path.parent_object_mut(&mut doc) {
            let member = format!("{name}{BLIND_INDEX_SUFFIX}");
            remove_blind_index(obj, &member);
        }
        report.decrypted.push(shown);
    }
    Ok((doc, report))
}

fn remove_blind_index(obj: &mut Map<String, Value>, member: &str) {
    if obj.get(member).is_some_and(Value::is_string) {
        obj.remove(member);
    }
}
