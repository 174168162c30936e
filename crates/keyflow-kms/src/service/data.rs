//! The data operations of [`EncryptionService`]: encrypt (one request, [`Encrypt`]),
//! decrypt, batches, blind indexes, rewrap, mask and summaries.

use std::borrow::Cow;
use std::sync::Arc;

use keyflow_core::data_key::NonceMode;
use keyflow_core::envelope::{read, write};
use keyflow_core::mask::{self, MaskType};
use keyflow_core::{key_id, Context, KeyVersion, PayloadKind, Plaintext, Purpose};
use serde_json::Value;
use zeroize::Zeroizing;

use super::EncryptionService;
use crate::cache::CachedKey;
use crate::model::VersionFilter;
use crate::{KmsError, Result};

/// Randomized or deterministic encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncryptMode {
    /// A random nonce: equal values give different ciphertexts (the default).
    #[default]
    Randomized,
    /// Equal values under the same key version and context give equal ciphertexts
    /// (searchable equality; AES-GCM-SIV).
    Deterministic,
}

impl EncryptMode {
    /// `Deterministic` when `deterministic`, else `Randomized`.
    pub fn deterministic_if(deterministic: bool) -> Self {
        if deterministic {
            EncryptMode::Deterministic
        } else {
            EncryptMode::Randomized
        }
    }
}

/// What to encrypt.
pub enum Input<'a> {
    /// A JSON value: a string is encrypted as its UTF-8 text (no copy), anything else as
    /// its compact JSON; decryption gives back the same type.
    Json(&'a Value),
    /// Bytes of the given kind, as they are (e.g. already encoded by the caller).
    Payload(PayloadKind, &'a [u8]),
    /// `len` bytes of `kind` that `fill` appends straight into the envelope (e.g.
    /// decoding base64 in place, which saves a copy of a large payload). A `fill` error
    /// is returned as it is, with nothing written and no use of the key counted.
    Filled {
        /// The payload's kind.
        kind: PayloadKind,
        /// Exactly how many bytes `fill` appends.
        len: usize,
        /// Appends the plaintext.
        fill: &'a mut (dyn FnMut(&mut Vec<u8>) -> keyflow_core::Result<()> + Send),
    },
}

impl std::fmt::Debug for Input<'_> {
    // Never the plaintext.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Json(_) => f.write_str("Input::Json(<redacted>)"),
            Input::Payload(kind, b) => write!(f, "Input::Payload({kind:?}, <{} bytes>)", b.len()),
            Input::Filled { kind, len, .. } => write!(f, "Input::Filled({kind:?}, <{len} bytes>)"),
        }
    }
}

/// One encryption: under `purpose`'s active version, bound to `context`.
#[derive(Debug)]
pub struct Encrypt<'a> {
    /// Key ring to use.
    pub purpose: &'a Purpose,
    /// Pairs bound into the ciphertext.
    pub context: &'a Context,
    /// Randomized (default) or deterministic.
    pub mode: EncryptMode,
    /// The plaintext.
    pub input: Input<'a>,
}

impl<'a> Encrypt<'a> {
    /// A randomized encryption of `input`.
    pub fn new(purpose: &'a Purpose, context: &'a Context, input: Input<'a>) -> Self {
        Self {
            purpose,
            context,
            mode: EncryptMode::Randomized,
            input,
        }
    }

    /// The same request with `mode`.
    pub fn mode(mut self, mode: EncryptMode) -> Self {
        self.mode = mode;
        self
    }
}

/// A text ciphertext and the key version it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The text form (`kf1:…`).
    pub ciphertext: String,
    /// The version used (for operation records, without re-reading the ciphertext).
    pub key_version: KeyVersion,
}

/// A decrypted value. Its `Debug` shows the kind only, never the plaintext.
pub enum Decrypted {
    /// A value encrypted as JSON (a string comes back a string, a number a number…).
    Json(Value),
    /// Bytes encrypted as bytes.
    Bytes(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decrypted::Json(_) => f.write_str("Decrypted::Json(<redacted>)"),
            Decrypted::Bytes(b) => write!(f, "Decrypted::Bytes(<{} bytes redacted>)", b.len()),
        }
    }
}

/// What a ciphertext says about itself, read without decrypting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `purpose:vN`.
    pub key_id: String,
    /// Key ring.
    pub purpose: String,
    /// Key version.
    pub key_version: u32,
    /// Algorithm name.
    pub algorithm: &'static str,
    /// True for deterministic ciphertexts.
    pub deterministic: bool,
    /// Envelope format version.
    pub format_version: u8,
}

/// A blind index value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindIndex {
    /// The key version it was computed with.
    pub key_version: KeyVersion,
    /// Lowercase hex of the truncated HMAC.
    pub hex: String,
}

/// The result of [`EncryptionService::rewrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    /// The ciphertext under the active version (the input itself when unchanged).
    pub ciphertext: String,
    /// The version the input was under.
    pub from_version: KeyVersion,
    /// The version the output is under.
    pub to_version: KeyVersion,
    /// False when the input was already under the active version.
    pub changed: bool,
}

/// The payload kind and bytes of a JSON value: a string is encrypted as its UTF-8 text
/// (borrowed, no copy), anything else as its JSON serialization.
fn encode_value(value: &Value) -> Result<(PayloadKind, Cow<'_, [u8]>)> {
    Ok(match value {
        Value::String(s) => (PayloadKind::Text, Cow::Borrowed(s.as_bytes())),
        other => (
            PayloadKind::Json,
            Cow::Owned(serde_json::to_vec(other).map_err(|_| KmsError::Invalid("JSON value"))?),
        ),
    })
}

fn decode(pt: Plaintext) -> Result<Decrypted> {
    Ok(match pt.kind() {
        PayloadKind::Text => Decrypted::Json(Value::String(pt.into_string()?)),
        PayloadKind::Json => Decrypted::Json(
            serde_json::from_slice(pt.as_bytes()).map_err(|_| KmsError::DecryptionFailed)?,
        ),
        _ => Decrypted::Bytes(pt.into_bytes()),
    })
}

/// Where an encryption's plaintext comes from once the key is chosen.
enum Source<'a> {
    Copy(&'a [u8]),
    Fill(&'a mut (dyn FnMut(&mut Vec<u8>) -> keyflow_core::Result<()> + Send)),
}

impl EncryptionService {
    /// Encrypts, returning the text ciphertext and the key version used.
    pub async fn encrypt(&self, request: Encrypt<'_>) -> Result<Encrypted> {
        let mut text = Vec::new();
        let key_version = self.encrypt_into(request, &mut text).await?;
        // The text form is ASCII by construction.
        let ciphertext = String::from_utf8(text).map_err(|_| KmsError::Crypto)?;
        Ok(Encrypted {
            ciphertext,
            key_version,
        })
    }

    /// Encrypts, appending the ciphertext's text form to `out` (e.g. straight into a
    /// JSON response body: it needs no escaping). Returns the key version used. On an
    /// error nothing is appended.
    pub async fn encrypt_into(
        &self,
        request: Encrypt<'_>,
        out: &mut Vec<u8>,
    ) -> Result<KeyVersion> {
        let Encrypt {
            purpose,
            context,
            mode,
            input,
        } = request;
        // The input first: a value that cannot be encoded takes no key use.
        let encoded;
        let (kind, len, source) = match input {
            Input::Json(value) => {
                encoded = encode_value(value)?;
                (encoded.0, encoded.1.len(), Source::Copy(&encoded.1))
            }
            Input::Payload(kind, data) => (kind, data.len(), Source::Copy(data)),
            Input::Filled { kind, len, fill } => (kind, len, Source::Fill(fill)),
        };
        let ring = self.ring();
        let key = ring.take_active(purpose, 1).await?;
        let nonce = match mode {
            EncryptMode::Deterministic => NonceMode::Deterministic,
            EncryptMode::Randomized => NonceMode::Random(&*ring.rng),
        };
        let fill = |buf: &mut Vec<u8>| match source {
            Source::Copy(data) => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Source::Fill(fill) => fill(buf),
        };
        let mut env = Vec::new();
        if let Err(e) = key
            .key
            .encrypt_filled_into(nonce, kind, len, fill, context, &mut env)
        {
            key.allowance.give_back(1);
            return Err(e.into());
        }
        write::push_text(&env, out);
        Ok(key.key.version())
    }

    /// Encrypts a JSON value (randomized) under the purpose's active version: the
    /// shorthand for [`Self::encrypt`] with [`Input::Json`].
    pub async fn encrypt_value(
        &self,
        value: &Value,
        purpose: &Purpose,
        context: &Context,
    ) -> Result<String> {
        let request = Encrypt::new(purpose, context, Input::Json(value));
        Ok(self.encrypt(request).await?.ciphertext)
    }

    /// Encrypts each value of a batch under one key resolution; one result per item, in
    /// order. Fails as a whole only when the purpose itself cannot be used.
    pub async fn encrypt_batch(
        &self,
        items: &[Value],
        purpose: &Purpose,
        context: &Context,
    ) -> Result<Vec<Result<String>>> {
        let encoded: Vec<Result<(PayloadKind, Cow<'_, [u8]>)>> =
            items.iter().map(encode_value).collect();
        let ok = encoded
            .iter()
            .filter_map(|e| e.as_ref().ok().map(|(k, b)| (*k, &b[..])));
        let mut sealed = Vec::with_capacity(items.len());
        self.encrypt_batch_each(ok, purpose, context, |r| {
            sealed.push(r.map(write::to_text));
        })
        .await?;
        let mut sealed = sealed.into_iter();
        Ok(encoded
            .into_iter()
            .map(|e| {
                e?;
                sealed.next().ok_or(KmsError::Crypto)?
            })
            .collect())
    }

    /// Encrypts already encoded payloads under one key resolution, handing each item's
    /// binary envelope — or its own error, such as an oversize item — to `emit`, in
    /// order, from one reused buffer. For callers that write the results straight into
    /// a response. Fails as a whole only when the purpose itself cannot be used;
    /// returns the key version used.
    pub async fn encrypt_batch_each<'a>(
        &self,
        items: impl IntoIterator<Item = (PayloadKind, &'a [u8])>,
        purpose: &Purpose,
        context: &Context,
        mut emit: impl FnMut(Result<&[u8]>),
    ) -> Result<KeyVersion> {
        // Every item is a GCM seal: the whole batch is reserved before any is made.
        let items: Vec<(PayloadKind, &'a [u8])> = items.into_iter().collect();
        let n = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let ring = self.ring();
        let key = ring.take_active(purpose, n).await?;
        let sealed = key.key.encrypt_each(items, context, &*ring.rng, |r| {
            emit(r.map_err(KmsError::from));
        });
        key.allowance.give_back(n.saturating_sub(sealed));
        Ok(key.key.version())
    }

    /// Decrypts a text ciphertext to its original type.
    pub async fn decrypt(&self, ciphertext: &str, context: &Context) -> Result<Decrypted> {
        decode(self.decrypt_raw(ciphertext, context).await?)
    }

    /// Decrypts a text ciphertext to its raw plaintext bytes (whatever its kind).
    pub async fn decrypt_raw(&self, ciphertext: &str, context: &Context) -> Result<Plaintext> {
        self.decrypt_reusing(ciphertext, context, &mut None, &mut Vec::new())
            .await
    }

    /// Decrypts each ciphertext of a batch; one result per item, in order. Consecutive
    /// items under the same key version share one key lookup.
    pub async fn decrypt_batch<S: AsRef<str>>(
        &self,
        items: &[S],
        context: &Context,
    ) -> Vec<Result<Decrypted>> {
        self.decrypt_batch_raw(items, context)
            .await
            .into_iter()
            .map(|r| r.and_then(decode))
            .collect()
    }

    /// [`EncryptionService::decrypt_batch`] to raw plaintexts (with their kind), for
    /// callers that write the values out themselves.
    pub async fn decrypt_batch_raw<S: AsRef<str>>(
        &self,
        items: &[S],
        context: &Context,
    ) -> Vec<Result<Plaintext>> {
        let mut last: Option<Arc<CachedKey>> = None;
        let mut buf = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(
                self.decrypt_reusing(item.as_ref(), context, &mut last, &mut buf)
                    .await,
            );
        }
        out
    }

    async fn decrypt_reusing(
        &self,
        ciphertext: &str,
        context: &Context,
        last: &mut Option<Arc<CachedKey>>,
        buf: &mut Vec<u8>,
    ) -> Result<Plaintext> {
        read::from_text_into(ciphertext, buf).map_err(|_| KmsError::DecryptionFailed)?;
        let env = read::parse(buf).map_err(|_| KmsError::DecryptionFailed)?;
        let h = &env.header;
        let key = match last {
            Some(k) if *k.key.purpose() == h.purpose && k.key.version() == h.key_version => {
                k.clone()
            }
            _ => {
                let k = self.ring().decrypt_key(&h.purpose, h.key_version).await?;
                *last = Some(k.clone());
                k
            }
        };
        Ok(key.key.decrypt(&env, context)?)
    }

    /// Blind index of `value` for `field`, under the purpose's active version.
    pub async fn blind_index(
        &self,
        purpose: &Purpose,
        field: &str,
        value: &[u8],
        bits: u16,
    ) -> Result<BlindIndex> {
        // Input first: a refused request must not create the purpose's first version.
        keyflow_core::data_key::check_blind_bits(bits)?;
        let key = self.ring().active_key(purpose).await?;
        Ok(BlindIndex {
            key_version: key.key.version(),
            hex: keyflow_core::to_hex(&key.key.blind_index(field, value, bits)?),
        })
    }

    /// Blind indexes of `value` for `field` under every version of the purpose that may
    /// still decrypt, newest first: a search matches rows indexed before a rotation too.
    pub async fn blind_indexes(
        &self,
        purpose: &Purpose,
        field: &str,
        value: &[u8],
        bits: u16,
    ) -> Result<Vec<BlindIndex>> {
        let filter = VersionFilter {
            purpose: Some(purpose.clone()),
            status: None,
        };
        let ring = self.ring();
        let mut versions: Vec<KeyVersion> = ring
            .store
            .list_versions(&filter)
            .await?
            .into_iter()
            .filter(|r| r.status.can_decrypt())
            .map(|r| r.version)
            .collect();
        if versions.is_empty() {
            return Err(KmsError::UnknownPurpose(purpose.clone()));
        }
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let key = ring.decrypt_key(purpose, v).await?;
            out.push(BlindIndex {
                key_version: v,
                hex: keyflow_core::to_hex(&key.key.blind_index(field, value, bits)?),
            });
        }
        Ok(out)
    }

    /// Re-encrypts a ciphertext under its purpose's active version, keeping its mode
    /// (randomized or deterministic), payload kind and context; the plaintext stays in
    /// this process and is wiped. A ciphertext already under the active version is
    /// returned unchanged (`changed == false`), so rewrapping twice is a no-op.
    pub async fn rewrap(&self, ciphertext: &str, context: &Context) -> Result<Rewrapped> {
        let ring = self.ring();
        let mut buf = Vec::new();
        read::from_text_into(ciphertext, &mut buf).map_err(|_| KmsError::DecryptionFailed)?;
        let env = read::parse(&buf).map_err(|_| KmsError::DecryptionFailed)?;
        let h = &env.header;
        let from = h.key_version;
        // The input is authenticated before the active version is looked up, so a
        // forged ciphertext naming a new purpose never creates that purpose's first
        // version (and a forged input is never echoed back).
        let old = ring.decrypt_key(&h.purpose, from).await?;
        let pt = old.key.decrypt(&env, context)?;
        let active = ring.active_key(&h.purpose).await?;
        if from == active.key.version() {
            return Ok(Rewrapped {
                ciphertext: ciphertext.to_owned(),
                from_version: from,
                to_version: from,
                changed: false,
            });
        }
        // The use is reserved now; if the budget ran out meanwhile this is a newer
        // version than `active`, which is just as good.
        let active = ring.take_active(&h.purpose, 1).await?;
        let sealed = if h.algorithm.is_deterministic() {
            active
                .key
                .encrypt_deterministic(pt.kind(), pt.as_bytes(), context)
        } else {
            active
                .key
                .encrypt(pt.kind(), pt.as_bytes(), context, &*ring.rng)
        };
        let sealed = sealed.inspect_err(|_| active.allowance.give_back(1))?;
        Ok(Rewrapped {
            ciphertext: write::to_text(&sealed),
            from_version: from,
            to_version: active.key.version(),
            changed: true,
        })
    }

    /// Masks a value for display (never stored).
    pub fn mask(&self, value: &str, kind: MaskType) -> String {
        mask::mask(value, kind)
    }

    /// Reads a ciphertext's header without decrypting: key id, purpose, version, algorithm.
    pub fn summary(ciphertext: &str) -> Result<Summary> {
        let bytes = read::from_text(ciphertext.trim())?;
        let env = read::parse(&bytes)?;
        let h = env.header;
        Ok(Summary {
            key_id: key_id(&h.purpose, h.key_version),
            purpose: h.purpose.as_str().to_owned(),
            key_version: h.key_version.get(),
            algorithm: h.algorithm.name(),
            deterministic: h.algorithm.is_deterministic(),
            format_version: keyflow_core::envelope::FORMAT_V1,
        })
    }
}
