//! Unit tests of the audit layer's classification and records.

use axum::http::{Method, StatusCode};

use crate::extract::RequestId;
use crate::metrics::RouteKey;

use super::layer::is_code;
use super::routes::{classify, code_of_status, UNAUDITED};
use super::*;

#[test]
fn classifies_routes_methods_and_unknown_paths() {
    let t = |m: Method, p: &str| classify(&m, p);
    let enc = t(Method::POST, "/api/encryption/encrypt").unwrap();
    assert_eq!(enc.operation, "encrypt");
    assert_eq!(enc.route.as_deref(), Some("POST /api/encryption/encrypt"));
    assert_eq!(enc.key, RouteKey::Route(0));
    assert!(enc.guarded);
    assert_eq!(
        t(Method::POST, "/api/encryption/keys/destroy")
            .unwrap()
            .operation,
        "keys.destroy"
    );
    let head = t(Method::HEAD, "/api/encryption/keys").unwrap();
    assert_eq!(
        (head.operation, head.route.as_deref()),
        ("keys.list", Some("HEAD /api/encryption/keys"))
    );
    let status = t(Method::GET, "/api/encryption/status").unwrap();
    assert_eq!(status.operation, "status");
    assert!(!status.guarded);
    // A known path with another method: the route, but no operation.
    let wrong = t(Method::GET, "/api/encryption/encrypt").unwrap();
    assert_eq!(
        (wrong.operation, wrong.route.as_deref()),
        (UNKNOWN, Some("GET /api/encryption/encrypt"))
    );
    assert_eq!(wrong.key, RouteKey::OtherMethod(0));
    // Both methods of one path: each its own route.
    let policy = |m| t(m, "/api/encryption/keys/policy").unwrap();
    let (read, write) = (policy(Method::GET), policy(Method::POST));
    assert_eq!(
        (read.operation, write.operation),
        ("keys.policy.read", "keys.policy")
    );
    assert_ne!(read.key, write.key);
    // An unknown path: never the raw path.
    let unknown = t(Method::GET, "/api/encryption/keys/4532015112830366").unwrap();
    assert_eq!((unknown.operation, unknown.route), (UNKNOWN, None));
    assert_eq!(unknown.key, RouteKey::Unmatched);
    assert_eq!(t(Method::GET, "/favicon.ico").unwrap().operation, UNKNOWN);
    for p in UNAUDITED {
        assert_eq!(t(Method::GET, p), None, "{p}");
    }
}

#[test]
fn codes_from_bodies_are_checked() {
    assert!(is_code("audit_unavailable"));
    assert!(!is_code("4532 0151 1283 0366"));
    assert!(!is_code(""));
    assert_eq!(
        code_of_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "unsupported_media_type"
    );
    assert_eq!(code_of_status(StatusCode::BAD_GATEWAY), "internal_error");
}

#[test]
fn a_detached_slot_notes_nothing() {
    let s = AuditSlot::detached();
    s.set_actor("id", "name");
    s.add_purpose("p");
    assert_eq!(s.details(), OpDetails::default());
    let s = AuditSlot::attached();
    s.set_actor("id", "");
    s.note_key("p", Some(2), 3);
    s.add_purpose("p");
    s.add_version(2);
    let d = s.details();
    assert_eq!(d.actor.as_deref(), Some("id"));
    assert_eq!(d.actor_name, None);
    assert_eq!(
        (d.purposes, d.versions, d.items),
        (vec!["p".into()], vec![2], Some(3))
    );
}

#[test]
fn the_layer_counts_what_is_noted_before_it_closes_the_slot() {
    let slot = AuditSlot::attached();
    let rid = RequestId("r".into(), slot.clone());
    let record = |result| OpRecord {
        op: Op::FileEncrypt,
        actor: "a",
        purpose: Some("p"),
        key_version: Some(1),
        items: 1,
        result,
        request: &rid,
    };
    assert!(slot.note(&record("ok")), "the layer counts it");
    let (d, op) = slot.close();
    assert_eq!(
        (op, d.items, d.result),
        (Some(Op::FileEncrypt), Some(1), None)
    );
    // A streamed body's outcome, after the answer's head: for the caller to count.
    assert!(!slot.note(&record("decryption_failed")));
    assert!(!AuditSlot::detached().note(&record("ok")));
}
