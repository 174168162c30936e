//! Request extractors: a JSON body with KeyFlow's error shape and limits, and the
//! request id (which carries the request's audit slot).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::audit::AuditSlot;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body. Unlike `axum::Json` it does not insist on a content type, maps
/// every failure to the API's error shape, and never echoes a value from the body in
/// an error message (serde's messages can quote the offending value, which could be
/// plaintext).
pub struct ApiJson<T>(pub T);

fn describe(e: &serde_json::Error) -> ApiError {
    if !e.is_data() {
        return ApiError::InvalidJson;
    }
    let msg = e.to_string();
    // "missing field `purpose` at line 1 column 17" names a field, not a value.
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some(field) = rest.split('`').next() {
            return ApiError::InvalidRequest(format!("missing field '{field}'"));
        }
    }
    ApiError::InvalidRequest(format!(
        "a field has the wrong type or value (line {}, column {})",
        e.line(),
        e.column()
    ))
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        JsonBody::from_request(req, state)
            .await?
            .parse()
            .map(ApiJson)
    }
}

/// A JSON request body kept as bytes, for requests parsed into types that borrow from
/// it (`&str`, `&RawValue`): the hot routes read large strings without copying them.
/// Same limits and error shape as [`ApiJson`].
pub struct JsonBody(pub Bytes);

impl JsonBody {
    /// Parses the body; errors never quote a value from it.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| describe(&e))
    }
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(JsonBody)
            .map_err(|e| match e {
                BytesRejection::FailedToBufferBody(_) => {
                    ApiError::PayloadTooLarge(state.limits.json_body_bytes)
                }
                _ => ApiError::InvalidRequest("could not read the request body".into()),
            })
    }
}

/// The id of this request (also sent back as `x-request-id`), and the request's audit
/// slot, where [`crate::metrics::Metrics::record`] notes what the handler did.
#[derive(Clone, Debug)]
pub struct RequestId(pub String, pub(crate) AuditSlot);

impl RequestId {
    /// The request's audit slot (a detached one when the request is not audited).
    pub fn audit(&self) -> &AuditSlot {
        &self.1
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .extensions
            .get::<RequestId>()
            .map_or_else(|| "-".to_owned(), |r| r.0.clone());
        Ok(RequestId(id, AuditSlot::of(&parts.extensions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        purpose: String,
        n: u32,
    }

    #[test]
    fn errors_never_quote_values() {
        let e =
            serde_json::from_str::<Body>(r#"{"purpose":"p","n":"4532123456789012"}"#).unwrap_err();
        let msg = describe(&e).to_string();
        assert!(!msg.contains("4532"), "{msg}");
        let e = serde_json::from_str::<Body>(r#"{"n":1}"#).unwrap_err();
        assert_eq!(describe(&e).to_string(), "missing field 'purpose'");
        let e = serde_json::from_str::<Body>("{not json").unwrap_err();
        assert!(matches!(describe(&e), ApiError::InvalidJson));
    }
}
