//! `EncryptionService`: the library facade — encrypt/decrypt values and bytes,
//! deterministic encryption, batches, blind indexes, masking, summaries, and key
//! management (generate, rotate, list).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keyflow_core::data_key::NonceMode;
use keyflow_core::envelope::{read, write};
use keyflow_core::kek::Kek;
use keyflow_core::mask::{self, MaskType};
use keyflow_core::{
    key_id, Context, DataKey, KeyVersion, OsRng, PayloadKind, Plaintext, Purpose, SecretKey,
    SecureRandom,
};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cache::{Allowance, CacheStats, CachedKey, KeyCache};
use crate::clock::{Clock, SystemClock};
use crate::keystore::{CreateOutcome, Keystore, RotateOutcome};
use crate::model::{
    KeyStatus, KeyVersionRecord, VersionFilter, DEK_ALGORITHM, MAX_ENCRYPTIONS_PER_KEY,
};
use crate::{KmsError, Result};

/// How many times a rotation is retried when concurrent rotations win the race.
const ROTATE_ATTEMPTS: usize = 16;

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
    /// [`EncryptionService::flush_usage`]).
    pub usage_flush_every: u64,
    /// Reserve the next block from a spawned task when a quarter of the current one is
    /// left, so the request path rarely waits for the keystore (servers; needs a tokio
    /// runtime that keeps running, so one-shot tools leave it off and reserve inline).
    pub background_usage_flush: bool,
    /// Servers: cached keys count as fresh only while the last successful
    /// [`EncryptionService::revalidate`] is younger than this (`None`: no bound; for
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

/// The encryption service. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct EncryptionService {
    pub(crate) store: Arc<dyn Keystore>,
    pub(crate) kek: Kek,
    pub(crate) rng: Arc<dyn SecureRandom>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cache: KeyCache,
    pub(crate) config: ServiceConfig,
    /// The keystore generation seen by the last `revalidate` (`i64::MIN`: none yet).
    seen_generation: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for EncryptionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionService")
            .field("kek", &self.kek)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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

/// Encodes one JSON value given as its JSON text (e.g. a `serde_json::value::RawValue`
/// from a request) exactly as [`EncryptionService::encrypt_value`] encodes the parsed
/// value: a string is encrypted as its UTF-8 text — borrowed from `json` when it holds
/// no escapes — and anything else as compact JSON (object keys sorted). Errors when
/// `json` is not one JSON value.
pub fn encode_json_text(json: &str) -> Result<(PayloadKind, Cow<'_, [u8]>)> {
    let json = json.trim();
    if json.starts_with('"') {
        let s = json_string(json).ok_or(KmsError::Invalid("JSON value"))?;
        return Ok((PayloadKind::Text, cow_bytes(s)));
    }
    let value: Value = serde_json::from_str(json).map_err(|_| KmsError::Invalid("JSON value"))?;
    let (kind, bytes) = encode_value(&value)?;
    Ok((kind, Cow::Owned(bytes.into_owned())))
}

/// The text of a JSON string token (`"…"`), borrowed when it holds no escape — then the
/// token's inside *is* the text, found with one vectorizable scan instead of a second
/// parse. `None` when `json` is not a valid string token.
pub fn json_string(json: &str) -> Option<Cow<'_, str>> {
    let inner = json.strip_prefix('"')?.strip_suffix('"')?;
    // A control character or a lone quote would make the token invalid JSON; a caller
    // holding an already-parsed token (a `RawValue`) never has one, but a raw `&str`
    // might, so only a plain token takes the shortcut.
    // Branch-free per 64-byte chunk so the check vectorizes (large values are base64
    // payloads of a MiB and more).
    let special = |c: &[u8]| {
        c.iter().fold(false, |acc, &b| {
            acc | (b == b'\\') | (b == b'"') | (b < 0x20)
        })
    };
    if !inner.as_bytes().chunks(64).any(special) {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(json).ok().map(Cow::Owned)
}

fn cow_bytes(s: Cow<'_, str>) -> Cow<'_, [u8]> {
    match s {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
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
            store,
            kek,
            rng: Arc::new(OsRng),
            clock: Arc::new(SystemClock),
            cache: KeyCache::new(
                config.cache_ttl,
                config.max_staleness,
                Arc::new(SystemClock),
            ),
            config,
            seen_generation: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Replaces the clock: timestamps, policies and the key cache's TTL and staleness
    /// bound all read it (tests pass a [`crate::clock::ManualClock`]). Call it before
    /// the first use: it starts an empty key cache on the new clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.cache = KeyCache::new(
            self.config.cache_ttl,
            self.config.max_staleness,
            clock.clone(),
        );
        self.clock = clock;
        self
    }

    /// The clock this service reads (for callers that schedule work around it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the random source (tests).
    pub fn with_rng(mut self, rng: Arc<dyn SecureRandom>) -> Self {
        self.rng = rng;
        self
    }

    /// `ENCRYPTION_STRICT_MODE`: purposes must be generated before use, and the field
    /// layer's callers refuse plaintext where a ciphertext is required.
    pub fn strict_mode(&self) -> bool {
        self.config.strict_mode
    }

    /// The keystore.
    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.store
    }

    // ---- data operations -------------------------------------------------------

    /// Encrypts a JSON value (randomized) under the purpose's active version.
    pub async fn encrypt_value(
        &self,
        value: &Value,
        purpose: &Purpose,
        context: &Context,
    ) -> Result<String> {
        Ok(self.encrypt_json(value, purpose, context, false).await?.0)
    }

    /// Encrypts bytes (randomized).
    pub async fn encrypt_bytes(
        &self,
        data: &[u8],
        purpose: &Purpose,
        context: &Context,
    ) -> Result<String> {
        self.encrypt_payload(PayloadKind::Bytes, data, purpose, context, false)
            .await
    }

    /// Deterministic encryption of a JSON value: equal values under the same key version
    /// and context give equal ciphertexts (searchable equality).
    pub async fn encrypt_value_deterministic(
        &self,
        value: &Value,
        purpose: &Purpose,
        context: &Context,
    ) -> Result<String> {
        Ok(self.encrypt_json(value, purpose, context, true).await?.0)
    }

    /// Encrypts a JSON value, randomized or deterministic, and says which key version
    /// was used (for operation records) without re-reading the ciphertext.
    pub async fn encrypt_json(
        &self,
        value: &Value,
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
    ) -> Result<(String, KeyVersion)> {
        let (kind, bytes) = encode_value(value)?;
        self.seal_text(kind, &bytes, purpose, context, deterministic)
            .await
    }

    /// Encrypts bytes, randomized or deterministic.
    pub async fn encrypt_payload(
        &self,
        kind: PayloadKind,
        data: &[u8],
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
    ) -> Result<String> {
        Ok(self
            .seal_text(kind, data, purpose, context, deterministic)
            .await?
            .0)
    }

    async fn seal_text(
        &self,
        kind: PayloadKind,
        data: &[u8],
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
    ) -> Result<(String, KeyVersion)> {
        let mut text = Vec::new();
        let version = self
            .encrypt_payload_into(kind, data, purpose, context, deterministic, &mut text)
            .await?;
        // The text form is ASCII by construction.
        let text = String::from_utf8(text).map_err(|_| KmsError::Crypto)?;
        Ok((text, version))
    }

    /// Encrypts bytes, randomized or deterministic, appending the ciphertext's text form
    /// to `out` (e.g. straight into a JSON response body: it needs no escaping). Returns
    /// the key version used.
    pub async fn encrypt_payload_into(
        &self,
        kind: PayloadKind,
        data: &[u8],
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
        out: &mut Vec<u8>,
    ) -> Result<KeyVersion> {
        let fill = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(data);
            Ok(())
        };
        self.encrypt_filled_into(kind, data.len(), fill, purpose, context, deterministic, out)
            .await
    }

    /// As [`Self::encrypt_payload_into`], for a plaintext of `len` bytes that `fill`
    /// appends straight into the envelope (e.g. decoding base64 in place, which saves a
    /// copy of a large payload). A `fill` error is returned as it is, with nothing
    /// appended to `out` and no use of the key counted.
    #[allow(clippy::too_many_arguments)]
    pub async fn encrypt_filled_into(
        &self,
        kind: PayloadKind,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> keyflow_core::Result<()>,
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
        out: &mut Vec<u8>,
    ) -> Result<KeyVersion> {
        let key = self.take_active(purpose, 1).await?;
        let mut env = Vec::new();
        let mode = if deterministic {
            NonceMode::Deterministic
        } else {
            NonceMode::Random(&*self.rng)
        };
        if let Err(e) = key
            .key
            .encrypt_filled_into(mode, kind, len, fill, context, &mut env)
        {
            key.allowance.give_back(1);
            return Err(e.into());
        }
        write::push_text(&env, out);
        Ok(key.key.version())
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

    /// Encrypts already encoded payloads (see [`encode_json_text`]) under one key
    /// resolution, handing each item's binary envelope — or its own error, such as an
    /// oversize item — to `emit`, in order, from one reused buffer. For callers that
    /// write the results straight into a response. Fails as a whole only when the
    /// purpose itself cannot be used; returns the key version used.
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
        let key = self.take_active(purpose, n).await?;
        let sealed = key.key.encrypt_each(items, context, &*self.rng, |r| {
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
                let k = self.decrypt_key(&h.purpose, h.key_version).await?;
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
        let key = self.active_key(purpose).await?;
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
        let mut versions: Vec<KeyVersion> = self
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
            let key = self.decrypt_key(purpose, v).await?;
            out.push(BlindIndex {
                key_version: v,
                hex: keyflow_core::to_hex(&key.key.blind_index(field, value, bits)?),
            });
        }
        Ok(out)
    }

    /// Runs `f` with the purpose's active key and counts one use of it. For formats
    /// built on the DEK subkeys (streaming files, field encryption) that need the key
    /// for longer than one call: `f` derives what it needs and returns it.
    pub async fn with_active_key<R>(
        &self,
        purpose: &Purpose,
        f: impl FnOnce(&DataKey) -> R,
    ) -> Result<R> {
        let key = self.take_active(purpose, 1).await?;
        Ok(f(&key.key))
    }

    /// Runs `f` with version `version` of `purpose`, if that version may still decrypt
    /// (an unknown version is reported as [`KmsError::DecryptionFailed`]).
    pub async fn with_decrypt_key<R>(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
        f: impl FnOnce(&DataKey) -> R,
    ) -> Result<R> {
        let key = self.decrypt_key(purpose, version).await?;
        Ok(f(&key.key))
    }

    /// Re-encrypts a ciphertext under its purpose's active version, keeping its mode
    /// (randomized or deterministic), payload kind and context; the plaintext stays in
    /// this process and is wiped. A ciphertext already under the active version is
    /// returned unchanged (`changed == false`), so rewrapping twice is a no-op.
    pub async fn rewrap(&self, ciphertext: &str, context: &Context) -> Result<Rewrapped> {
        let mut buf = Vec::new();
        read::from_text_into(ciphertext, &mut buf).map_err(|_| KmsError::DecryptionFailed)?;
        let env = read::parse(&buf).map_err(|_| KmsError::DecryptionFailed)?;
        let h = &env.header;
        let from = h.key_version;
        // The input is authenticated before the active version is looked up, so a
        // forged ciphertext naming a new purpose never creates that purpose's first
        // version (and a forged input is never echoed back).
        let old = self.decrypt_key(&h.purpose, from).await?;
        let pt = old.key.decrypt(&env, context)?;
        let active = self.active_key(&h.purpose).await?;
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
        let active = self.take_active(&h.purpose, 1).await?;
        let sealed = if h.algorithm.is_deterministic() {
            active
                .key
                .encrypt_deterministic(pt.kind(), pt.as_bytes(), context)
        } else {
            active
                .key
                .encrypt(pt.kind(), pt.as_bytes(), context, &*self.rng)
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

    // ---- key management ---------------------------------------------------------

    /// Creates version 1 of a new purpose. Refused if the purpose already exists.
    pub async fn generate(&self, purpose: &Purpose) -> Result<KeyVersionRecord> {
        let (record, key) = self.new_version(purpose, KeyVersion::FIRST)?;
        match self.store.create_first(&record).await? {
            CreateOutcome::Created => {
                self.cache.insert(key, KeyStatus::Active);
                Ok(record)
            }
            CreateOutcome::AlreadyExists => Err(KmsError::PurposeExists(purpose.clone())),
        }
    }

    /// Rotates a purpose: a new version becomes active and the old one `rotating`, in
    /// one transaction. Old ciphertexts keep decrypting.
    pub async fn rotate(&self, purpose: &Purpose) -> Result<Rotation> {
        for _ in 0..ROTATE_ATTEMPTS {
            let active = self
                .store
                .active_version(purpose)
                .await?
                .ok_or_else(|| KmsError::UnknownPurpose(purpose.clone()))?;
            let next = active.version.next()?;
            let (record, key) = self.new_version(purpose, next)?;
            match self.store.rotate(&record, self.clock.now_millis()).await? {
                RotateOutcome::Rotated => {
                    self.cache.invalidate(purpose);
                    self.cache.insert(key, KeyStatus::Active);
                    return Ok(Rotation {
                        purpose: purpose.clone(),
                        old_version: active.version,
                        new_version: next,
                    });
                }
                RotateOutcome::Conflict => continue,
            }
        }
        Err(KmsError::RotationConflict(purpose.clone()))
    }

    /// Key versions (metadata only).
    pub async fn list(&self, filter: &VersionFilter) -> Result<Vec<KeyVersionRecord>> {
        Ok(self.store.list_versions(filter).await?)
    }

    /// Gives this process's unused reservations back to the keystore, so its counts
    /// are exact (encryptions are counted when reserved, before they are made). Call
    /// before exit and before reading counts; servers call it periodically.
    pub async fn flush_usage(&self) -> Result<()> {
        let mut first_err = None;
        for (purpose, version, n) in self.cache.drain_allowances() {
            let back = i64::try_from(n).unwrap_or(i64::MAX);
            if let Err(e) = self.store.adjust_usage(&purpose, version, -back).await {
                self.cache.restore_allowance(&purpose, version, n);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Checks the keystore's change generation and drops the whole key cache if
    /// another process changed a key since the last check; returns whether it did.
    /// Servers call this a few times per second (and on change notifications); a
    /// success also renews the cache's staleness bound.
    pub async fn revalidate(&self) -> Result<bool> {
        let generation = self.store.generation().await?;
        let before = self.seen_generation.swap(generation, Ordering::AcqRel);
        // The first check knows no earlier generation: anything cached before it may
        // predate a change, so it counts as a change too.
        let changed = before != generation;
        if changed {
            self.cache.invalidate_all();
        }
        self.cache.mark_validated();
        Ok(changed)
    }

    /// Time since the last successful [`Self::revalidate`] (or since start).
    pub fn cache_staleness(&self) -> Duration {
        self.cache.staleness()
    }

    /// The configured staleness bound.
    pub fn max_staleness(&self) -> Option<Duration> {
        self.config.max_staleness
    }

    // ---- internals ------------------------------------------------------------------

    pub(crate) fn new_version(
        &self,
        purpose: &Purpose,
        version: KeyVersion,
    ) -> Result<(KeyVersionRecord, DataKey)> {
        let dek = SecretKey::generate(&*self.rng)?;
        let wrapped = self.kek.wrap_dek(purpose, version, &dek, &*self.rng)?;
        let key = DataKey::derive(purpose.clone(), version, &dek)?;
        let now = self.clock.now_millis();
        let record = KeyVersionRecord {
            purpose: purpose.clone(),
            version,
            status: KeyStatus::Active,
            algorithm: DEK_ALGORITHM.into(),
            wrapped_key: Some(wrapped),
            kek_id: self.kek.id().to_owned(),
            created_at: now,
            status_changed_at: now,
            encryptions: 0,
            revoked_reason: None,
        };
        Ok((record, key))
    }

    pub(crate) fn unwrap_record(&self, record: &KeyVersionRecord) -> Result<DataKey> {
        let wrapped = record
            .wrapped_key
            .as_deref()
            .ok_or_else(|| KmsError::KeyNotUsable {
                purpose: record.purpose.clone(),
                version: record.version,
                status: record.status,
            })?;
        if record.kek_id != self.kek.id() {
            return Err(KmsError::KekMismatch {
                expected: record.kek_id.clone(),
                found: self.kek.id().to_owned(),
            });
        }
        // A wrapped key that fails to unwrap under the right KEK is a damaged keystore.
        let dek = self
            .kek
            .unwrap_dek(&record.purpose, record.version, wrapped)
            .map_err(|_| KmsError::Crypto)?;
        Ok(DataKey::derive(
            record.purpose.clone(),
            record.version,
            &dek,
        )?)
    }

    async fn active_key(&self, purpose: &Purpose) -> Result<Arc<CachedKey>> {
        if let Some(k) = self.cache.active(purpose.as_str()) {
            return Ok(k);
        }
        // Concurrent first uses share one keystore read and one unwrap.
        let _loading = self.cache.load_gate(purpose, None).await;
        if let Some(k) = self.cache.peek_active(purpose.as_str()) {
            return Ok(k);
        }
        let epoch = self.cache.epoch();
        let record = match self.store.active_version(purpose).await? {
            Some(r) => r,
            None if self.config.strict_mode => {
                return Err(KmsError::StrictModeNoKey(purpose.clone()))
            }
            None => {
                // First use of the purpose creates version 1; a concurrent creator may
                // win, in which case its version is read back.
                let (record, key) = self.new_version(purpose, KeyVersion::FIRST)?;
                if self.store.create_first(&record).await? == CreateOutcome::Created {
                    return Ok(self.cache.insert(key, KeyStatus::Active));
                }
                self.store
                    .active_version(purpose)
                    .await?
                    .ok_or_else(|| KmsError::UnknownPurpose(purpose.clone()))?
            }
        };
        let key = self.unwrap_record(&record)?;
        Ok(self
            .cache
            .insert_loaded(key, KeyStatus::Active, Some(epoch)))
    }

    async fn decrypt_key(&self, purpose: &Purpose, version: KeyVersion) -> Result<Arc<CachedKey>> {
        if let Some(k) = self.cache.version(purpose.as_str(), version) {
            return Ok(k);
        }
        // An unknown purpose or version is indistinguishable from a forged ciphertext.
        if self.cache.known_absent(purpose, version) {
            return Err(KmsError::DecryptionFailed);
        }
        let _loading = self.cache.load_gate(purpose, Some(version)).await;
        if let Some(k) = self.cache.peek_version(purpose.as_str(), version) {
            return Ok(k);
        }
        if self.cache.known_absent(purpose, version) {
            return Err(KmsError::DecryptionFailed);
        }
        let epoch = self.cache.epoch();
        let Some(record) = self.store.get_version(purpose, version).await? else {
            self.note_absent(purpose, version, epoch).await;
            return Err(KmsError::DecryptionFailed);
        };
        if !record.status.can_decrypt() {
            return Err(KmsError::KeyNotUsable {
                purpose: record.purpose,
                version: record.version,
                status: record.status,
            });
        }
        let key = self.unwrap_record(&record)?;
        Ok(self.cache.insert_loaded(key, record.status, Some(epoch)))
    }

    /// Remembers briefly that `version` of `purpose` does not exist, with the
    /// purpose's highest version, so that forged headers naming any version above it
    /// cost no further keystore reads ([`crate::absent`]).
    async fn note_absent(&self, purpose: &Purpose, version: KeyVersion, epoch: u64) {
        let filter = crate::model::VersionFilter {
            purpose: Some(purpose.clone()),
            status: None,
        };
        // A failed read only loses the ceiling; the exact version is still remembered.
        let ceiling = self
            .store
            .list_versions(&filter)
            .await
            .ok()
            .map(|rows| rows.iter().map(|r| r.version.get()).max().unwrap_or(0));
        self.cache.note_absent(purpose, version, ceiling, epoch);
    }

    /// `n` uses of `purpose`'s active key, enforced where the key is chosen: taken from
    /// this process's reservation, else reserved in the keystore first (which counts
    /// them at once for every instance). A version whose budget — min(its policy's
    /// `max_encryptions`, 2^32, the AES-GCM random-nonce bound) — would be exceeded is
    /// rotated by compare-and-set (another writer's rotation serves as well) and the
    /// new version used: no key is ever used past its budget, whether a scheduler runs
    /// or not, in the server, the CLI or a library.
    pub(crate) async fn take_active(&self, purpose: &Purpose, n: u64) -> Result<Arc<CachedKey>> {
        for _ in 0..ROTATE_ATTEMPTS {
            let key = self.active_key(purpose).await?;
            if key.allowance.try_take(n) {
                self.refill_ahead(&key);
                return Ok(key);
            }
            let block = self.config.usage_flush_every.max(n).max(1);
            let (p, v) = (key.key.purpose(), key.key.version());
            let granted = reserve(&*self.store, p, v, &key.allowance, block).await?;
            if key.allowance.try_take(n) {
                return Ok(key);
            }
            if granted >= n {
                // Concurrent callers took this block first: reserve again.
                continue;
            }
            tracing::warn!(purpose = %p, version = %v, "key version reached its encryption budget; rotating");
            if self.rotate_if_active(purpose, v).await?.is_none() {
                // Another writer rotated first: read its version.
                self.cache.invalidate(purpose);
            }
        }
        Err(KmsError::RotationConflict(purpose.clone()))
    }

    /// Servers: reserve the next block in the background once a quarter is left.
    fn refill_ahead(&self, key: &CachedKey) {
        let block = self.config.usage_flush_every.max(1);
        if !self.config.background_usage_flush
            || key.allowance.remaining.load(Ordering::Acquire) > block / 4
            || key.allowance.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            key.allowance.refilling.store(false, Ordering::Release);
            return;
        };
        let store = self.store.clone();
        let allowance = key.allowance.clone();
        let (p, v) = (key.key.purpose().clone(), key.key.version());
        runtime.spawn(async move {
            if let Err(e) = reserve(&*store, &p, v, &allowance, block).await {
                tracing::warn!(purpose = %p, version = %v, error = %e, "could not reserve encryptions ahead; the next request will");
            }
            allowance.refilling.store(false, Ordering::Release);
        });
    }
}

/// Reserves `block` encryptions of `purpose`/`version` in the keystore and adds to
/// `allowance` what its budget — min(policy, 2^32) — allows of them; the part over the
/// budget is given straight back. Returns the number granted (less than `block` only
/// when the budget is reached).
async fn reserve(
    store: &dyn Keystore,
    purpose: &Purpose,
    version: KeyVersion,
    allowance: &Allowance,
    block: u64,
) -> Result<u64> {
    let budget = store
        .get_policy(purpose)
        .await?
        .unwrap_or_default()
        .max_encryptions
        .min(MAX_ENCRYPTIONS_PER_KEY);
    let delta = i64::try_from(block).map_err(|_| KmsError::Invalid("batch size"))?;
    let total =
        store
            .adjust_usage(purpose, version, delta)
            .await?
            .ok_or(KmsError::UnknownVersion {
                purpose: purpose.clone(),
                version,
            })?;
    let before = total.saturating_sub(block);
    let granted = budget.saturating_sub(before).min(block);
    if granted < block {
        let over = i64::try_from(block - granted).unwrap_or(i64::MAX);
        // Best effort: a count left too high only makes the key retire earlier.
        if let Err(e) = store.adjust_usage(purpose, version, -over).await {
            tracing::warn!(purpose = %purpose, version = %version, error = %e, "could not give back a reservation over the budget");
        }
    }
    allowance.give_back(granted);
    Ok(granted)
}
