//! Request extractors: a JSON body with KeyFlow's error shape and limits, and the
//! request id (which carries the request's audit slot).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::audit::AuditSlot;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body. Like `axum::Json` it insists on `Content-Type: application/json`
/// (415 otherwise, checked before the body is read); unlike it, it maps every failure to
/// the API's error shape, and never echoes a value from the body in an error message
/// (serde's messages can quote the offending value, which could be plaintext).
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

/// A query string, with failures in the API's error shape (axum's `Query` answers them
/// in plain text): `400 invalid_request` naming a missing parameter, never quoting a
/// value.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|e| {
                let msg = e.to_string();
                match msg
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next())
                {
                    Some(field) => {
                        ApiError::InvalidRequest(format!("missing query parameter '{field}'"))
                    }
                    None => ApiError::InvalidRequest("invalid query string".into()),
                }
            })
    }
}

/// Serde helpers for request fields, so that the server accepts exactly what the
/// OpenAPI document's schemas accept (decision 79).
pub mod field {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    /// A JSON number: an integer, or any other number (checked by the caller).
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Whole(u64),
        Other(f64),
    }

    /// The largest integer an `f64` holds exactly (2^53).
    const EXACT: f64 = 9_007_199_254_740_992.0;

    fn whole<T: TryFrom<u64>, E: Error>(n: Number) -> Result<T, E> {
        let n = match n {
            Number::Whole(n) => n,
            // JSON does not tell `2` from `2.0`, and neither does JSON Schema's
            // `integer`: a whole number written with a fraction is that integer.
            Number::Other(f) if f.fract() == 0.0 && (0.0..=EXACT).contains(&f) => f as u64,
            Number::Other(_) => return Err(E::custom("expected a whole number")),
        };
        T::try_from(n).map_err(|_| E::custom("number out of range"))
    }

    /// A non-negative integer field (`2` or `2.0`).
    pub fn integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        whole(Number::deserialize(d)?)
    }

    /// An optional non-negative integer field (`null` or absent: `None`); use with
    /// `#[serde(default)]`.
    pub fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<Number>::deserialize(d)?.map(whole).transpose()
    }

    /// A document id: at most 1024 bytes (it is bound into every value's context,
    /// whose values have that limit), refused up front rather than only once a value
    /// is found to encrypt or decrypt.
    pub fn document_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(id) if id.len() > keyflow_kms::keyflow_core::context::MAX_CONTEXT_ITEM_LEN => {
                Err(D::Error::custom("documentId: at most 1024 bytes"))
            }
            id => Ok(id),
        }
    }
}

/// A JSON request body kept as bytes, for requests parsed into types that borrow from
/// it (`&str`, `&RawValue`): the hot routes read large strings without copying them.
/// Same limits and error shape as [`ApiJson`].
pub struct JsonBody(pub Bytes);

impl JsonBody {
    /// Parses the body; errors never quote a value from it.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        // Every body is an object. serde reads a struct from an array too (`[null]`
        // would be a request with every field absent), so anything else is refused.
        let first = self.0.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&self.0) {
                    Ok(_) => ApiError::InvalidRequest("the body must be a JSON object".into()),
                    Err(_) => ApiError::InvalidJson,
                },
            );
        }
        serde_json::from_slice(&self.0).map_err(|e| describe(&e))
    }
}

/// True for `application/json`, with or without parameters, in any letter case (RFC
/// 9110 §8.3.1). A `charset` parameter, when present, must name UTF-8: JSON exchanged
/// between systems is UTF-8 (RFC 8259 §8.1), and a body declared in another charset
/// would otherwise be read as if it were UTF-8.
pub fn is_json_content_type(value: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, v)) if name.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        Some(_) => true,
        // `application/json;` (a trailing semicolon) is harmless; a bare word is not a
        // parameter.
        None => param.trim().is_empty(),
    })
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Before a byte of the body is read: the answer does not depend on it.
        if !req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(is_json_content_type)
        {
            return Err(ApiError::UnsupportedMediaType);
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBody)
            .map_err(|e| match e {
                BytesRejection::FailedToBufferBody(
                    axum::extract::rejection::FailedToBufferBody::LengthLimitError(_),
                ) => ApiError::PayloadTooLarge(state.limits.json_body_bytes),
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

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        #[derive(serde::Deserialize, Debug)]
        struct Req {
            #[serde(deserialize_with = "field::integer")]
            version: u32,
            #[serde(default, deserialize_with = "field::optional_integer")]
            bits: Option<u16>,
        }
        let parse = |s: &str| serde_json::from_str::<Req>(s).map(|r| (r.version, r.bits));
        assert_eq!(parse(r#"{"version":2}"#).unwrap(), (2, None));
        assert_eq!(
            parse(r#"{"version":2.0,"bits":16.0}"#).unwrap(),
            (2, Some(16))
        );
        assert_eq!(parse(r#"{"version":2,"bits":null}"#).unwrap(), (2, None));
        for bad in [
            r#"{"version":2.5}"#,
            r#"{"version":-1}"#,
            r#"{"version":-1.0}"#,
            r#"{"version":4294967296}"#,
            r#"{"version":"2"}"#,
            r#"{"version":1e300}"#,
            r#"{"version":1,"bits":65536}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_objects() {
        let parse = |b: &'static [u8]| JsonBody(Bytes::from_static(b)).parse::<Body>();
        assert!(parse(br#" {"purpose":"p","n":1}"#).is_ok());
        // serde would read the struct from an array; the body must be an object.
        assert!(matches!(
            parse(b"[\"p\", 1]"),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(parse(b"5"), Err(ApiError::InvalidRequest(_))));
        assert!(matches!(parse(b""), Err(ApiError::InvalidJson)));
        assert!(matches!(parse(b"[1,"), Err(ApiError::InvalidJson)));
    }

    #[test]
    fn json_content_types() {
        let ok = [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json;",
            "application/json; charset=utf8; q=1",
        ];
        for v in ok {
            assert!(is_json_content_type(&HeaderValue::from_static(v)), "{v}");
        }
        let refused = [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json-patch+json",
            "multipart/form-data; boundary=x",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "application/json; utf-8",
            "json",
        ];
        for v in refused {
            assert!(!is_json_content_type(&HeaderValue::from_static(v)), "{v}");
        }
        let opaque = HeaderValue::from_bytes(b"application/json\xff").unwrap();
        assert!(!is_json_content_type(&opaque));
    }
}
