//! Which operation a request is: the served routes, the unaudited paths, and the
//! stable code of a status.

use axum::http::{Method, StatusCode};

use crate::metrics::{Op, RouteKey};

/// The API's base path.
pub(crate) const API: &str = "/api/encryption";

/// Paths never audited (see the module documentation).
pub(super) const UNAUDITED: [&str; 3] = [
    "/api/encryption/health",
    "/api/encryption/openapi.json",
    "/metrics",
];

/// Every audited route `crate::app` serves: method, path under [`API`], and the
/// operation name in audit records. The names are those of `/metrics`
/// ([`Op::name`]), except that revoke, reinstate and destroy are told apart.
// Key administration uses the same dotted names as the CLI (`keys.rotate`, …) so one
// filter finds an action whichever door it came through; data operations keep the
// metrics names.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/encrypt", Op::Encrypt.name()),
    ("POST", "/decrypt", Op::Decrypt.name()),
    ("POST", "/batch/encrypt", Op::BatchEncrypt.name()),
    ("POST", "/batch/decrypt", Op::BatchDecrypt.name()),
    ("POST", "/blind-index", Op::BlindIndex.name()),
    ("POST", "/encrypt-fields", Op::EncryptFields.name()),
    ("POST", "/decrypt-fields", Op::DecryptFields.name()),
    ("POST", "/mask", Op::Mask.name()),
    ("POST", "/files/encrypt", Op::FileEncrypt.name()),
    ("POST", "/files/decrypt", Op::FileDecrypt.name()),
    ("POST", "/encrypt-file", Op::FileEncrypt.name()),
    ("POST", "/decrypt-file", Op::FileDecrypt.name()),
    ("POST", "/keys/generate", "keys.generate"),
    ("POST", "/keys/rotate", "keys.rotate"),
    ("GET", "/keys", "keys.list"),
    ("POST", "/keys/backup", "keys.backup"),
    ("POST", "/keys/restore", "keys.restore"),
    ("POST", "/keys/revoke", "keys.revoke"),
    ("POST", "/keys/reinstate", "keys.reinstate"),
    ("POST", "/keys/destroy", "keys.destroy"),
    ("GET", "/keys/policy", "keys.policy.read"),
    ("POST", "/keys/policy", "keys.policy"),
    ("POST", "/keys/rotate-due", "keys.rotate_due"),
    ("POST", "/rewrap", Op::Rewrap.name()),
    ("GET", "/status", Op::Status.name()),
    ("GET", "/audit", Op::Audit.name()),
    ("GET", "/compliance", "compliance"),
];

/// The operation of a request matching no route (or a route with another method).
pub const UNKNOWN: &str = "unknown";

/// Reads that stay available while the trail cannot be written (operators need them to
/// see the outage); they are still recorded when possible.
pub(super) const MONITORING: [&str; 3] = [Op::Status.name(), Op::Audit.name(), "compliance"];

/// What the layer knows of a request before it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) operation: &'static str,
    /// Its `route` and `operation` labels in `/metrics`.
    pub(super) key: RouteKey,
    /// `METHOD /path` of a known path (never a raw unknown path).
    pub(super) route: Option<String>,
    /// Refused (fail-closed) when the trail cannot be written.
    pub(super) guarded: bool,
}

/// `None`: not audited.
pub(super) fn classify(method: &Method, path: &str) -> Option<Target> {
    if UNAUDITED.contains(&path) {
        return None;
    }
    let sub = path.strip_prefix(API);
    // axum answers HEAD with the GET handler.
    let served_as = if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    };
    let mut path_at = None;
    let mut route_at = None;
    for (i, (m, p, op)) in ROUTES.iter().enumerate() {
        if sub == Some(*p) {
            path_at = path_at.or(Some(i));
            if *m == served_as {
                route_at = Some((i, *op));
            }
        }
    }
    let (key, operation) = match (route_at, path_at) {
        (Some((i, op)), _) => (RouteKey::Route(i), op),
        (None, Some(i)) => (RouteKey::OtherMethod(i), UNKNOWN),
        (None, None) => (RouteKey::Unmatched, UNKNOWN),
    };
    let route = path_at.map(|_| format!("{method} {path}"));
    Some(Target {
        operation,
        key,
        route,
        guarded: !MONITORING.contains(&operation),
    })
}

/// The stable code of a status when the body names none.
pub(super) fn code_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        503 => "unavailable",
        300..=399 => "redirect",
        500..=599 => "internal_error",
        _ => "error",
    }
}
