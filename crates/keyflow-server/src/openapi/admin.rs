//! The success answers of the key, lifecycle, backup, health, status and audit routes,
//! as schemas. Documentation only, like [`super::responses`], and checked against real
//! answers the same way (`tests/response_schemas.rs`).
#![allow(dead_code)] // documentation only: the types are never built

use utoipa::ToSchema;

/// A key version's metadata (never its material).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct KeyMetadata {
    /// `purpose:vN`.
    pub key_id: String,
    /// Key ring.
    pub purpose: String,
    /// Version number.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Lifecycle state.
    pub status: KeyState,
    /// Algorithm (`AES-256`).
    pub algorithm: String,
    /// Created.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last state change.
    #[schema(format = DateTime)]
    pub status_changed_at: String,
    /// Encryptions made.
    pub encryptions: u64,
    /// Why it was revoked (revoked and destroyed versions only).
    pub revoked_reason: Option<String>,
}

/// A version's lifecycle state (PRODUCT.md §1).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum KeyState {
    /// Encrypts and decrypts; one per purpose.
    Active,
    /// Decrypt-only, inside the grace period.
    Rotating,
    /// Decrypt-only, flagged.
    Deprecated,
    /// No decrypt; reversible.
    Revoked,
    /// Material erased.
    Destroyed,
}

/// `GET /keys`.
#[derive(ToSchema)]
pub struct KeyList {
    /// Versions matching the filter.
    pub keys: Vec<KeyMetadata>,
    /// Their number.
    pub total: u64,
}

/// `POST /keys/rotate`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RotateResponse {
    /// Key ring.
    pub purpose: String,
    /// The version now `rotating`.
    #[schema(minimum = 1)]
    pub old_version: u32,
    /// The version now `active`.
    #[schema(minimum = 1)]
    pub new_version: u32,
}

/// A rotation policy.
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct RotationPolicy {
    /// Days an active version lives before rotation is due.
    #[schema(minimum = 1, maximum = 3650)]
    pub rotation_days: u32,
    /// Days a rotating version stays decryptable before it is deprecated.
    #[schema(maximum = 3650)]
    pub grace_days: u32,
    /// Rotation starts this many days before the rotation date.
    pub warn_days: u32,
    /// Encryptions per version before rotation is due.
    #[schema(minimum = 1, maximum = 4_294_967_296_u64)]
    pub max_encryptions: u64,
}

/// `GET /keys/policy`, `POST /keys/policy`.
#[derive(ToSchema)]
pub struct PolicyResponse {
    /// Key ring.
    pub purpose: String,
    /// Its policy (the default when none was set).
    pub policy: RotationPolicy,
}

/// `POST /keys/rotate-due`: one scheduler pass.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct PassReport {
    /// The instant the policies were evaluated at.
    #[schema(format = DateTime)]
    pub evaluated_at: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// False when another process held the scheduler lease.
    pub ran: bool,
    /// Actions, in order.
    pub actions: Vec<PassAction>,
}

/// One planned (and, unless a dry run, applied) action.
#[derive(ToSchema)]
pub struct PassAction {
    /// Key ring.
    pub purpose: String,
    /// The version acted on.
    #[schema(minimum = 1)]
    pub version: u32,
    /// What and why.
    pub kind: PassActionKind,
    /// Dates, counts.
    pub reason: String,
    /// `applied`, `skipped`, `already done` or `failed: …`.
    pub outcome: String,
}

/// Why a version is acted on.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub enum PassActionKind {
    /// Inside the warn window or past the rotation date.
    RotateDue,
    /// The encryption budget is used up.
    RotateBudget,
    /// A rotating version passed its grace period.
    Deprecate,
}

/// `POST /rewrap` with `encryptedData`.
#[derive(ToSchema, serde::Serialize)]
#[schema(rename_all = "camelCase")]
pub struct Rewrapped {
    /// The ciphertext under the active version.
    #[schema(pattern = "^kf1:[A-Za-z0-9_-]+$")]
    pub encrypted_data: String,
    /// The version it was under.
    pub from_version: u32,
    /// The active version.
    #[schema(minimum = 1)]
    pub to_version: u32,
    /// False when it was already under the active version (returned unchanged).
    pub changed: bool,
    /// Present (true) when the input was a legacy package.
    pub legacy: Option<bool>,
}

/// `POST /rewrap` with `items`: one result per item, in order.
#[derive(ToSchema, serde::Serialize)]
pub struct RewrapBatch {
    /// Each item's result: rewrapped, or its error (`{error, message}`).
    pub results: Vec<RewrapResult>,
}

/// One item of a rewrap batch.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum RewrapResult {
    /// Rewrapped.
    Ok(Rewrapped),
    /// Its error.
    Failed(super::ErrorBody),
}

/// `POST /rewrap`: one value or a batch, as asked.
#[derive(ToSchema, serde::Serialize)]
#[serde(untagged)]
pub enum RewrapResponse {
    /// For `encryptedData`.
    One(Rewrapped),
    /// For `items`.
    Many(RewrapBatch),
}

/// `POST /keys/restore`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RestoreResponse {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Versions in the backup.
    pub total: u64,
    /// Versions inserted (would be, in a dry run).
    pub inserted: u64,
    /// Versions already present.
    pub skipped: u64,
    /// Versions in conflict.
    pub refused: u64,
    /// One entry per backed-up version.
    pub versions: Vec<RestoreItem>,
}

/// One backed-up version.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RestoreItem {
    /// `purpose:vN`.
    pub key_id: String,
    /// State in the backup.
    pub status: KeyState,
    /// What happens to it.
    pub action: RestoreAction,
    /// Why (skips and refusals).
    pub reason: Option<String>,
}

/// What a restore does with one version.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RestoreAction {
    /// Inserted.
    Insert,
    /// Already there: kept.
    Skip,
    /// Conflicts: the restore as a whole is refused.
    Refuse,
}

/// `POST /keys/revoke` (the handler reads it as `routes::lifecycle::VersionRequest`).
#[derive(ToSchema)]
pub struct RevokeRequest {
    /// Key ring.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Version number.
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    pub version: u32,
    /// Why: 1 to 500 characters once trimmed (`trim` takes Unicode white space, U+0085
    /// included, which ECMA's `\S` does not); kept in the version and the audit trail.
    #[schema(
        max_length = 500,
        pattern = r"[^\t\n\u000B\u000C\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    pub reason: String,
}

/// `POST /keys/reinstate`.
#[derive(ToSchema)]
pub struct ReinstateRequest {
    /// Key ring.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Version number.
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    pub version: u32,
}

/// `POST /keys/destroy`.
#[derive(ToSchema)]
pub struct DestroyRequest {
    /// Key ring.
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
    pub purpose: String,
    /// Version number.
    #[schema(minimum = 1, maximum = 4_294_967_295_u64)]
    pub version: u32,
    /// Must be `true`: destroying key material is irreversible.
    pub confirm: bool,
}
