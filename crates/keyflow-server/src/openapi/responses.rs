//! The success answers of the data, field and file routes, as schemas. Documentation
//! only: the hot routes write their JSON by hand (`routes::data::json`), the others
//! with `json!`; `tests/response_schemas.rs` checks real answers of every route against
//! these schemas (every documented member present with its type, no member missing from
//! the schema), so they cannot drift apart silently.
#![allow(dead_code)] // documentation only: the types are never built

use keyflow_core::mask::MaskType;
use utoipa::ToSchema;

/// The text form of a ciphertext: `kf1:` and unpadded URL-safe base64 of the binary
/// envelope (docs/envelope-format.md).
pub const CIPHERTEXT_PATTERN: &str = "^kf1:[A-Za-z0-9_-]+$";

/// `POST /encrypt`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// The ciphertext (text form).
    #[schema(pattern = "^kf1:[A-Za-z0-9_-]+$")]
    pub encrypted_data: String,
    /// With `returnObject`: the ciphertext's header, read back.
    pub envelope: Option<EnvelopeSummary>,
}

/// What a ciphertext says about itself, read without decrypting.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct EnvelopeSummary {
    /// `purpose:vN`.
    pub key_id: String,
    /// Key ring.
    pub purpose: String,
    /// Key version.
    #[schema(minimum = 1)]
    pub key_version: u32,
    /// Algorithm name.
    pub algorithm: String,
    /// True for deterministic ciphertexts.
    pub deterministic: bool,
    /// Envelope format version.
    pub format_version: u8,
}

/// `POST /decrypt`: the value as it was encrypted (its JSON type survives).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DecryptResponse {
    /// The plaintext: any JSON value; raw bytes as standard base64 text.
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    /// `base64` when `data` is raw bytes (absent otherwise).
    #[schema(value_type = Option<Base64Encoding>)]
    pub encoding: Option<String>,
    /// Present (true) when the value was a legacy package (transition reads).
    pub legacy: Option<bool>,
}

/// The only transfer encoding of raw bytes in JSON.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Base64Encoding {
    /// Standard base64.
    Base64,
}

/// `POST /batch/encrypt`: one result per item, in order.
#[derive(ToSchema)]
pub struct BatchEncryptResponse {
    /// One result per item.
    pub results: Vec<BatchEncryptResult>,
    /// Items.
    pub total: u64,
    /// Items that succeeded.
    pub successful: u64,
    /// Items that failed.
    pub failed: u64,
}

/// One item of a batch encryption.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum BatchEncryptResult {
    /// `{success: true, encryptedData}`.
    Encrypted(BatchEncrypted),
    /// `{success: false, error, message}`.
    Failed(BatchItemError),
}

/// A sealed item.
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct BatchEncrypted {
    /// Always true.
    pub success: bool,
    /// The ciphertext.
    #[schema(pattern = "^kf1:[A-Za-z0-9_-]+$")]
    pub encrypted_data: String,
}

/// A failed item: the error body with `success: false`.
#[derive(ToSchema, serde::Serialize)]
pub struct BatchItemError {
    /// Always false.
    pub success: bool,
    /// Stable error code (as in `ErrorBody`).
    pub error: String,
    /// Human-readable text.
    pub message: String,
}

/// `POST /batch/decrypt`: one result per item, in order.
#[derive(ToSchema)]
pub struct BatchDecryptResponse {
    /// One result per item.
    pub results: Vec<BatchDecryptResult>,
    /// Items.
    pub total: u64,
    /// Items that succeeded.
    pub successful: u64,
    /// Items that failed.
    pub failed: u64,
}

/// One item of a batch decryption.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum BatchDecryptResult {
    /// `{success: true, data, encoding?}`.
    Decrypted(BatchDecrypted),
    /// `{success: false, error, message}`.
    Failed(BatchItemError),
}

/// An opened item.
#[derive(ToSchema, serde::Serialize)]
pub struct BatchDecrypted {
    /// Always true.
    pub success: bool,
    /// The plaintext (as for `/decrypt`).
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    /// `base64` when `data` is raw bytes.
    #[schema(value_type = Option<Base64Encoding>)]
    pub encoding: Option<String>,
}

/// `POST /blind-index`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct BlindIndexResponse {
    /// The index, lowercase hex.
    #[schema(pattern = "^[0-9a-f]+$")]
    pub index: String,
    /// The key version that made it (the active one).
    #[schema(minimum = 1)]
    pub key_version: u32,
    /// Bits kept.
    #[schema(minimum = 8, maximum = 256)]
    pub bits: u16,
    /// With `allVersions`: the index under every version that can still decrypt,
    /// newest first.
    pub indexes: Option<Vec<VersionedIndex>>,
}

/// A blind index under one key version.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct VersionedIndex {
    /// The index, lowercase hex.
    #[schema(pattern = "^[0-9a-f]+$")]
    pub index: String,
    /// The key version.
    #[schema(minimum = 1)]
    pub key_version: u32,
}

/// `POST /mask`.
#[derive(ToSchema)]
pub struct MaskResponse {
    /// The masked value.
    pub masked: String,
    /// The mask applied.
    #[schema(value_type = MaskType, rename = "type")]
    pub kind: String,
}

/// `POST /encrypt-fields`. Paths are concrete (`cards[0].cardNumber`).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct EncryptFieldsResponse {
    /// The document with the selected values encrypted.
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    /// Values encrypted by this call.
    pub encrypted_fields: Vec<String>,
    /// Selected values that were already ciphertexts (left alone).
    pub already_encrypted: Vec<String>,
    /// Blind-index members written.
    pub blind_indexes: Vec<String>,
    /// Sensitive authentication data removed.
    pub stripped_fields: Vec<String>,
}

/// `POST /decrypt-fields`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DecryptFieldsResponse {
    /// The document in clear (blind-index members removed).
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    /// Values decrypted.
    pub decrypted_fields: Vec<String>,
    /// Present (true) when legacy values were read (transition reads).
    pub legacy: Option<bool>,
}

/// `POST /encrypt-file`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct EncryptFileResponse {
    /// The KeyFlow file, standard base64.
    #[schema(content_encoding = "base64")]
    pub encrypted_data: String,
    /// The key version used.
    #[schema(minimum = 1)]
    pub key_version: u32,
    /// Plaintext bytes.
    pub size: u64,
}

/// `POST /decrypt-file`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DecryptFileResponse {
    /// The plaintext, standard base64.
    #[schema(content_encoding = "base64")]
    pub data: String,
    /// The name stored at encryption (null when none).
    #[schema(required = true)]
    pub file_name: Option<String>,
    /// The MIME type stored at encryption (null when none).
    #[schema(required = true)]
    pub mime_type: Option<String>,
    /// Plaintext bytes.
    pub size: u64,
}
