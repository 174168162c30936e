//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::{audit, backup, compliance, data, fields, files, keys, lifecycle, system};

pub mod admin;
mod links;
pub mod responses;
pub mod status;
mod strict;

/// Every error response: `{"error": "<stable_code>", "message": "<human text>"}`.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)] // documentation only
pub struct ErrorBody {
    /// Stable code: invalid_json, invalid_request, unauthorized, forbidden,
    /// unknown_purpose, unknown_key, not_found, purpose_exists, invalid_key_state,
    /// payload_too_large, unsupported_media_type,
    /// decryption_failed, invalid_ciphertext, key_unavailable, invalid_backup,
    /// restore_conflict,
    /// sensitive_authentication_data, overloaded,
    /// unavailable, audit_unavailable, internal_error, or one of the transport layer's
    /// codes.
    pub error: String,
    /// Human-readable text; never contains plaintext, tokens or key material.
    pub message: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every operation of `doc`, whatever its method (the API uses these five).
fn operations_mut(
    doc: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Every operation whose request body is JSON also answers 415 (`unsupported_media_type`)
/// when the request's `Content-Type` is not `application/json` (the check is in
/// [`crate::extract::JsonBody`], shared by every such route, so it is documented here
/// once rather than on each handler).
struct JsonOnly;

impl Modify for JsonOnly {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, ResponseBuilder};
        let refused = ResponseBuilder::new()
            .description("Content-Type is not application/json (charset, if any, UTF-8)")
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        for op in operations_mut(doc) {
            let json = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            if json {
                op.responses
                    .responses
                    .insert("415".into(), refused.clone().into());
            }
        }
    }
}

/// Every error response has the [`ErrorBody`] shape, and every operation may answer
/// some errors whatever its handler does: 400 when its query string or body does not
/// parse, 401/403 on a secured route, 503 when the server sheds load, its audit trail
/// cannot be written (fail closed) or the keystore is unavailable. Documented here once
/// instead of on each handler.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
        let error = || Content::new(Some(Ref::from_schema_name("ErrorBody")));
        let response = |text: &str| -> RefOr<utoipa::openapi::Response> {
            ResponseBuilder::new()
                .description(text)
                .content("application/json", error())
                .build()
                .into()
        };
        for op in operations_mut(doc) {
            let takes_input =
                op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, text: &str| {
                responses
                    .entry(code.into())
                    .or_insert_with(|| response(text));
            };
            if takes_input {
                add(
                    "400",
                    "The query string or body does not parse, or a value is invalid",
                );
            }
            if secured {
                add("401", "Missing, unknown, expired or revoked token");
                add("403", "The token's role or purposes do not allow this");
            }
            add("503", "Overloaded, the audit trail cannot be written (fail closed), or the keystore is unavailable");
            // Documented error codes without a body schema get the error shape.
            for (code, resp) in responses.iter_mut() {
                let is_error = code.starts_with('4') || code.starts_with('5');
                if let (true, RefOr::T(r)) = (is_error, resp) {
                    if r.content.is_empty() {
                        r.content.insert("application/json".into(), error());
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "KeyFlow", description = "Encryption and key management API. Errors: ErrorBody. Roles: admin, service (granted purposes), auditor."),
    paths(
        data::encrypt, data::decrypt, data::batch_encrypt, data::batch_decrypt, data::blind_index, data::mask,
        fields::encrypt, fields::decrypt,
        files::encrypt_stream, files::decrypt_stream, files::encrypt_file_json, files::decrypt_file_json,
        keys::generate, keys::rotate, keys::list,
        backup::backup, backup::restore,
        lifecycle::revoke, lifecycle::reinstate, lifecycle::destroy, lifecycle::get_policy,
        lifecycle::set_policy, lifecycle::rotate_due, lifecycle::rewrap,
        system::health, system::status, system::metrics, audit::query, compliance::report,
    ),
    components(schemas(
        ErrorBody, data::EncryptRequest, data::DecryptRequest, data::BatchEncryptRequest,
        data::BatchDecryptRequest, data::BlindIndexRequest, data::MaskRequest,
        fields::EncryptFieldsRequest, fields::DecryptFieldsRequest, fields::FieldEntry,
        files::EncryptFileRequest, files::DecryptFileRequest,
        keys::GenerateRequest, keys::RotateRequest,
        backup::BackupRequest, backup::RestoreRequest,
        lifecycle::PolicyRequest, lifecycle::RotateDueRequest,
        lifecycle::RewrapRequest,
        compliance::ComplianceReport, compliance::ComplianceSummary,
        compliance::ComplianceStandards, compliance::ComplianceControl,
        keyflow_compliance::report::InventoryItem, compliance::LegacyEntry,
    )),
    modifiers(&BearerAuth, &JsonOnly, &ErrorResponses)
)]
struct ApiDoc;

/// The document as JSON: what the annotations generate, with the request rules
/// utoipa cannot express ([`strict`]) and the links between operations ([`links`]).
pub fn document() -> serde_json::Value {
    built().0
}

/// The document, and the targets of [`strict`] and [`links`] it lacks (none unless a
/// route or a field was renamed without its rule; a unit test keeps it so).
fn built() -> (serde_json::Value, Vec<String>) {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut missing = strict::apply(&mut doc);
    missing.extend(links::apply(&mut doc));
    (doc, missing)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_strict_rule_and_link_finds_its_target() {
        let (_, missing) = super::built();
        assert!(missing.is_empty(), "not in the document: {missing:?}");
    }

    #[test]
    fn covers_every_route() {
        let doc = super::document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/encryption/encrypt",
            "/api/encryption/decrypt",
            "/api/encryption/batch/encrypt",
            "/api/encryption/batch/decrypt",
            "/api/encryption/blind-index",
            "/api/encryption/encrypt-fields",
            "/api/encryption/decrypt-fields",
            "/api/encryption/mask",
            "/api/encryption/files/encrypt",
            "/api/encryption/files/decrypt",
            "/api/encryption/encrypt-file",
            "/api/encryption/decrypt-file",
            "/api/encryption/keys/generate",
            "/api/encryption/keys/rotate",
            "/api/encryption/keys",
            "/api/encryption/keys/backup",
            "/api/encryption/keys/restore",
            "/api/encryption/keys/revoke",
            "/api/encryption/keys/reinstate",
            "/api/encryption/keys/destroy",
            "/api/encryption/keys/policy",
            "/api/encryption/keys/rotate-due",
            "/api/encryption/rewrap",
            "/api/encryption/health",
            "/api/encryption/status",
            "/api/encryption/audit",
            "/api/encryption/compliance",
            "/metrics",
        ] {
            assert!(paths.contains_key(p), "{p} missing from OpenAPI");
        }
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn json_routes_document_415_and_only_they_do() {
        let doc = super::document();
        let mut json_routes = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let json = op["requestBody"]["content"]["application/json"].is_object();
                let documented = op["responses"]["415"].is_object();
                assert_eq!(json, documented, "{method} {path}");
                json_routes += usize::from(json);
            }
        }
        assert!(json_routes >= 20, "{json_routes} JSON routes");
        assert!(
            doc["paths"]["/api/encryption/files/encrypt"]["post"]["responses"]["415"].is_null()
        );
    }

    #[test]
    fn every_error_response_has_the_error_shape_and_the_common_codes_are_documented() {
        let doc = super::document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for (code, r) in responses {
                    if code.starts_with('4') || code.starts_with('5') {
                        // `/health` answers "not ready" in its own shape (or the error
                        // shape when shed): a oneOf of both.
                        if path == "/api/encryption/health" && code == "503" {
                            let schema = &r["content"]["application/json"]["schema"]["$ref"];
                            assert_eq!(schema, "#/components/schemas/HealthUnavailable");
                            continue;
                        }
                        let schema = &r["content"]["application/json"]["schema"]["$ref"];
                        assert_eq!(
                            schema, "#/components/schemas/ErrorBody",
                            "{method} {path} {code}"
                        );
                    }
                }
                assert!(responses.contains_key("503"), "{method} {path}");
                let input = op["requestBody"].is_object()
                    || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
                assert_eq!(input, responses.contains_key("400"), "{method} {path}");
                if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                    assert!(responses.contains_key("401"), "{method} {path}");
                    assert!(responses.contains_key("403"), "{method} {path}");
                }
            }
        }
    }
}
