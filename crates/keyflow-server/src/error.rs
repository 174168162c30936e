//! API errors: one enum, one `IntoResponse`. The status is chosen by matching variants,
//! never by reading messages. 5xx bodies are generic; the cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyflow_kms::{KmsError, StoreError};
use serde_json::json;

/// An error answered to the client as `{"error": code, "message": text}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("the request body is not valid JSON")]
    InvalidJson,
    /// 400: a field is missing or has the wrong type or value.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401: no token, or an invalid, expired or revoked one.
    #[error("a valid API token is required (Authorization: Bearer …)")]
    Unauthorized,
    /// 403: the token's role or purposes do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such purpose.
    #[error("{0}")]
    UnknownPurpose(String),
    /// 404: no such route.
    #[error("no such route")]
    NotFound,
    /// 405: the route exists, the method does not.
    #[error("this route does not accept this method")]
    MethodNotAllowed,
    /// 409: the purpose already exists.
    #[error("{0}")]
    Conflict(String),
    /// 404: no such key version.
    #[error("{0}")]
    UnknownKey(String),
    /// 409: the key version is in the wrong state for this change.
    #[error("{0}")]
    InvalidKeyState(String),
    /// 422: the backup is not readable: wrong password, damaged or not a backup.
    #[error("{0}")]
    InvalidBackup(String),
    /// 409: the restore conflicts with the keystore; nothing was written.
    #[error("{0}")]
    RestoreConflict(String),
    /// 413: the body is larger than the limit.
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: a JSON route got a body whose `Content-Type` is not `application/json`.
    #[error("the request body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: the ciphertext does not parse or authenticate.
    #[error("decryption failed")]
    DecryptionFailed,
    /// 422: the input is not a KeyFlow ciphertext.
    #[error("not a KeyFlow ciphertext")]
    InvalidCiphertext,
    /// 422: a field of a document does not decrypt (the path, never the value).
    #[error("decryption failed at {0}")]
    FieldDecryptionFailed(String),
    /// 422: sensitive authentication data (CVV, PIN, track data) with policy `reject`.
    #[error(
        "sensitive authentication data may not be stored, not even encrypted (PCI DSS 3.3.1): {0}"
    )]
    SensitiveAuthenticationData(String),
    /// 422: `ENCRYPTION_STRICT_MODE` and values that must be ciphertexts are in clear
    /// (their paths, never the values).
    #[error("ENCRYPTION_STRICT_MODE: plaintext where a ciphertext is required: {0}")]
    PlaintextRefused(String),
    /// 422: the key version exists but may not be used (revoked, destroyed).
    #[error("{0}")]
    KeyUnavailable(String),
    /// 409: the keystore refused a write whose precondition another writer (or a newer
    /// KEK) had changed; nothing was written. The store's detail is logged, never sent.
    #[error("the change conflicts with the keystore's current state (changed by another writer); nothing was written")]
    StoreConflict,
    /// 503: overloaded or timed out.
    #[error("the server is overloaded; retry later")]
    Overloaded,
    /// 503: a dependency (the keystore) is unavailable.
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// 503: the audit trail cannot be written, so the operation is refused (or its
    /// result withheld) rather than left unrecorded.
    #[error("the audit trail cannot be written; retry later")]
    AuditUnavailable,
    /// 500: a real fault. The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::UnknownPurpose(_) => (StatusCode::NOT_FOUND, "unknown_purpose"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::UnknownKey(_) => (StatusCode::NOT_FOUND, "unknown_key"),
            ApiError::InvalidKeyState(_) => (StatusCode::CONFLICT, "invalid_key_state"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "purpose_exists"),
            ApiError::InvalidBackup(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_backup"),
            ApiError::RestoreConflict(_) => (StatusCode::CONFLICT, "restore_conflict"),
            ApiError::StoreConflict => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::DecryptionFailed => (StatusCode::UNPROCESSABLE_ENTITY, "decryption_failed"),
            ApiError::InvalidCiphertext => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_ciphertext"),
            ApiError::FieldDecryptionFailed(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "decryption_failed")
            }
            ApiError::SensitiveAuthenticationData(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "sensitive_authentication_data",
            ),
            ApiError::PlaintextRefused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "plaintext_refused")
            }
            ApiError::KeyUnavailable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "key_unavailable"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// The JSON body for this error (used in batch results too).
    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        json!({ "error": code, "message": self.to_string() })
    }
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::DecryptionFailed => ApiError::DecryptionFailed,
            KmsError::InvalidCiphertext => ApiError::InvalidCiphertext,
            KmsError::Invalid(what) => ApiError::InvalidRequest(format!("invalid {what}")),
            KmsError::UnknownPurpose(_) | KmsError::StrictModeNoKey(_) => {
                ApiError::UnknownPurpose(e.to_string())
            }
            KmsError::PurposeExists(_) => ApiError::Conflict(e.to_string()),
            KmsError::KeyNotUsable { .. } => ApiError::KeyUnavailable(e.to_string()),
            KmsError::UnknownVersion { .. } => ApiError::UnknownKey(e.to_string()),
            KmsError::WrongKeyState { .. } => ApiError::InvalidKeyState(e.to_string()),
            KmsError::RotationConflict(_) => ApiError::Overloaded,
            KmsError::BackupPasswordTooShort(_) => ApiError::InvalidRequest(e.to_string()),
            KmsError::BackupInvalid(_) | KmsError::BackupDecryptionFailed => {
                ApiError::InvalidBackup(e.to_string())
            }
            KmsError::RestoreRefused(_) => ApiError::RestoreConflict(e.to_string()),
            KmsError::Store(store) => store.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    /// By what the caller can do: retry later (503), reload and retry (409), nothing
    /// (500: a damaged row or a backend fault). The store's message goes to the log.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                // A keystore outage is a dependency's unavailability, not a fault of
                // this request: 503, so clients and load balancers retry elsewhere.
                tracing::error!(error = %e, "keystore unavailable");
                ApiError::Unavailable
            }
            StoreError::Conflict(_) => {
                tracing::warn!(error = %e, "keystore refused a conflicting write");
                ApiError::StoreConflict
            }
            other => ApiError::Internal(format!("keystore: {other}")),
        }
    }
}

/// The stable code of an error response, as a response extension: the audit layer
/// reads it instead of parsing the body again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            // The cause never contains plaintext or key material (KmsError guarantees it).
            tracing::error!(error = %cause, "internal error");
        }
        let mut resp = (status, Json(self.body())).into_response();
        resp.extensions_mut().insert(ErrorCode(code));
        resp
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_never_reach_the_body() {
        let e = ApiError::Internal("database at /secret/path exploded".into());
        assert_eq!(e.body()["message"], "internal error");
        assert_eq!(e.status_and_code().0, StatusCode::INTERNAL_SERVER_ERROR);
        let e: ApiError = KmsError::DecryptionFailed.into();
        assert_eq!(
            e.status_and_code(),
            (StatusCode::UNPROCESSABLE_ENTITY, "decryption_failed")
        );
    }

    #[test]
    fn keystore_errors_pick_their_status_by_variant() {
        for (e, status, code) in [
            (
                StoreError::Unavailable("pool timed out".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                StoreError::Conflict("UNIQUE constraint failed: api_tokens.id".into()),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                StoreError::Corrupt("corrupt key_versions row: status".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
            (
                StoreError::Backend("syntax error".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
            ),
        ] {
            let detail = e.to_string();
            let api: ApiError = KmsError::Store(e).into();
            assert_eq!(api.status_and_code(), (status, code), "{detail}");
            let body = api.body().to_string();
            assert!(
                !body.contains(&detail),
                "the store's detail stays in the log: {body}"
            );
        }
    }
}
