//! The authorization matrix: every route × every caller (no token, admin, a service
//! token granted `userData`, auditor) × own/other purpose where a purpose applies,
//! driven through `keyflow_server::app` with `oneshot` (no network). Each cell checks
//! the exact status and the body; all failing cells are reported together.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use common::{oneshot, request, Harness, Resp, OTHER, OWN, UNAUTHORIZED_MESSAGE};
use keyflow_transport::TransportConfig;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Admin,
    Service,
    Auditor,
}

/// Which purpose the request names (or whose ciphertext it carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The purpose the service token is granted.
    Own,
    /// A purpose it is not granted.
    Other,
    /// The route takes no purpose.
    None,
}

impl Target {
    fn purpose(self) -> &'static str {
        match self {
            Target::Own | Target::None => OWN,
            Target::Other => OTHER,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The route's success status, and its success body.
    Ok,
    /// 401 `unauthorized`.
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden,
    /// `batch/decrypt` authorizes each item by the ciphertext's own purpose: 200, and
    /// the item refused with `forbidden` (no plaintext).
    ItemForbidden,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Fixed inputs: one ciphertext per purpose, of a known plaintext.
struct Fixtures {
    ct: [(Target, String, Value); 2],
    generated: AtomicUsize,
}

impl Fixtures {
    fn ciphertext(&self, t: Target) -> &str {
        &self.ct.iter().find(|(x, _, _)| *x == t).unwrap().1
    }
    fn plaintext(&self, t: Target) -> &Value {
        &self.ct.iter().find(|(x, _, _)| *x == t).unwrap().2
    }
}

type Rule = fn(Who, Target) -> Expect;

struct Route {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    targets: &'static [Target],
    body: fn(&Fixtures, Target) -> Option<Value>,
    rule: Rule,
    ok_status: u16,
    /// Checks a success body; `Err` says what is wrong.
    check: fn(&Fixtures, Target, &Resp) -> Result<(), String>,
}

const PURPOSES: &[Target] = &[Target::Own, Target::Other];
const NO_PURPOSE: &[Target] = &[Target::None];

/// Admin: any purpose; service: granted purposes only; auditor: never.
fn data_rule(who: Who, t: Target) -> Expect {
    match (who, t) {
        (Who::Nobody, _) => Expect::Unauthorized,
        (Who::Admin, _) | (Who::Service, Target::Own) => Expect::Ok,
        (Who::Service, _) | (Who::Auditor, _) => Expect::Forbidden,
    }
}

fn batch_decrypt_rule(who: Who, t: Target) -> Expect {
    match (who, t) {
        (Who::Service, Target::Other) => Expect::ItemForbidden,
        _ => data_rule(who, t),
    }
}

fn admin_and_service(who: Who, _: Target) -> Expect {
    match who {
        Who::Nobody => Expect::Unauthorized,
        Who::Admin | Who::Service => Expect::Ok,
        Who::Auditor => Expect::Forbidden,
    }
}

fn admin_only(who: Who, _: Target) -> Expect {
    match who {
        Who::Nobody => Expect::Unauthorized,
        Who::Admin => Expect::Ok,
        Who::Service | Who::Auditor => Expect::Forbidden,
    }
}

fn admin_and_auditor(who: Who, _: Target) -> Expect {
    match who {
        Who::Nobody => Expect::Unauthorized,
        Who::Admin | Who::Auditor => Expect::Ok,
        Who::Service => Expect::Forbidden,
    }
}

fn public(_: Who, _: Target) -> Expect {
    Expect::Ok
}

fn ensure(cond: bool, what: impl fmt::Display) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn is_ciphertext(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("kf1:"))
}

fn routes() -> Vec<Route> {
    vec![
        Route {
            name: "encrypt",
            method: "POST",
            path: "/api/encryption/encrypt",
            targets: PURPOSES,
            body: |_, t| Some(json!({ "data": "4532123456789012", "purpose": t.purpose() })),
            rule: data_rule,
            ok_status: 200,
            check: |_, _, r| {
                ensure(
                    is_ciphertext(&r.json()["encryptedData"]),
                    "no encryptedData",
                )
            },
        },
        Route {
            name: "decrypt",
            method: "POST",
            path: "/api/encryption/decrypt",
            targets: PURPOSES,
            body: |fx, t| Some(json!({ "encryptedData": fx.ciphertext(t) })),
            rule: data_rule,
            ok_status: 200,
            check: |fx, t, r| {
                ensure(
                    r.json() == json!({ "data": fx.plaintext(t) }),
                    "wrong plaintext",
                )
            },
        },
        Route {
            name: "batch/encrypt",
            method: "POST",
            path: "/api/encryption/batch/encrypt",
            targets: PURPOSES,
            body: |_, t| Some(json!({ "items": ["a", 2], "purpose": t.purpose() })),
            rule: data_rule,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["total"] == 2
                        && b["successful"] == 2
                        && b["failed"] == 0
                        && is_ciphertext(&b["results"][0]["encryptedData"])
                        && is_ciphertext(&b["results"][1]["encryptedData"]),
                    "not two encrypted results",
                )
            },
        },
        Route {
            name: "batch/decrypt",
            method: "POST",
            path: "/api/encryption/batch/decrypt",
            targets: PURPOSES,
            body: |fx, t| Some(json!({ "items": [fx.ciphertext(t)] })),
            rule: batch_decrypt_rule,
            ok_status: 200,
            check: |fx, t, r| {
                ensure(
                    r.json()
                        == json!({ "total": 1, "successful": 1, "failed": 0,
                                   "results": [{ "success": true, "data": fx.plaintext(t) }] }),
                    "wrong batch result",
                )
            },
        },
        Route {
            name: "blind-index",
            method: "POST",
            path: "/api/encryption/blind-index",
            targets: PURPOSES,
            body: |_, t| {
                Some(
                    json!({ "data": "alice@example.com", "purpose": t.purpose(), "field": "email" }),
                )
            },
            rule: data_rule,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["index"].as_str().is_some_and(|i| i.len() == 8) && b["bits"] == 32,
                    "no 32-bit index",
                )
            },
        },
        Route {
            name: "mask",
            method: "POST",
            path: "/api/encryption/mask",
            targets: NO_PURPOSE,
            body: |_, _| Some(json!({ "data": "4532123456789012", "type": "card" })),
            rule: admin_and_service,
            ok_status: 200,
            check: |_, _, r| {
                ensure(
                    r.json() == json!({ "masked": "************9012", "type": "card" }),
                    "wrong mask",
                )
            },
        },
        Route {
            name: "keys/generate",
            method: "POST",
            path: "/api/encryption/keys/generate",
            targets: NO_PURPOSE,
            body: |fx, _| {
                let n = fx.generated.fetch_add(1, Ordering::Relaxed);
                Some(json!({ "purpose": format!("generated{n}") }))
            },
            rule: admin_only,
            ok_status: 201,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["version"] == 1 && b["status"] == "active",
                    "not a new active version 1",
                )
            },
        },
        Route {
            name: "keys/rotate",
            method: "POST",
            path: "/api/encryption/keys/rotate",
            targets: NO_PURPOSE,
            body: |_, _| Some(json!({ "purpose": OWN })),
            rule: admin_only,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["purpose"] == OWN
                        && b["newVersion"].as_u64() == b["oldVersion"].as_u64().map(|v| v + 1),
                    "not a rotation",
                )
            },
        },
        Route {
            name: "GET keys",
            method: "GET",
            path: "/api/encryption/keys",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: admin_and_auditor,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["total"].as_u64().is_some_and(|n| n >= 2) && b["keys"].is_array(),
                    "no key list",
                )
            },
        },
        Route {
            name: "status",
            method: "GET",
            path: "/api/encryption/status",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: admin_and_auditor,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["healthStatus"].is_string() && b["byPurpose"][OWN].is_object(),
                    "no key health metrics",
                )
            },
        },
        Route {
            name: "compliance",
            method: "GET",
            path: "/api/encryption/compliance",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: admin_and_auditor,
            ok_status: 200,
            check: |_, _, r| {
                let b = r.json();
                ensure(
                    b["standards"]["pciDss"].is_array() && b["overall"].is_string(),
                    "no compliance report",
                )
            },
        },
        Route {
            name: "metrics",
            method: "GET",
            path: "/metrics",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: admin_and_auditor,
            ok_status: 200,
            check: |_, _, r| {
                ensure(
                    r.text().contains("# TYPE keyflow_operations_total counter"),
                    "no Prometheus text",
                )
            },
        },
        Route {
            name: "health",
            method: "GET",
            path: "/api/encryption/health",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: public,
            ok_status: 200,
            check: |_, _, r| ensure(r.json()["status"] == "ok", "not healthy"),
        },
        Route {
            name: "openapi.json",
            method: "GET",
            path: "/api/encryption/openapi.json",
            targets: NO_PURPOSE,
            body: |_, _| None,
            rule: public,
            ok_status: 200,
            check: |_, _, r| {
                ensure(
                    r.json()["openapi"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("3.1")),
                    "not OpenAPI 3.1",
                )
            },
        },
    ]
}

/// What is wrong with `r` for the expectation, if anything.
fn verdict(
    route: &Route,
    fx: &Fixtures,
    who: Who,
    t: Target,
    expect: Expect,
    r: &Resp,
) -> Result<(), String> {
    let error = |status: u16, code: &str| -> Result<(), String> {
        ensure(r.status.as_u16() == status, format!("status {}", r.status))?;
        let b: Value =
            serde_json::from_slice(&r.body).map_err(|_| "body is not JSON".to_owned())?;
        ensure(b["error"] == code, format!("error code {}", b["error"]))?;
        ensure(b["message"].is_string(), "no message")?;
        ensure(
            b.as_object().is_some_and(|o| o.len() == 2),
            "extra fields in the error body",
        )
    };
    match expect {
        Expect::Ok => {
            ensure(
                r.status.as_u16() == route.ok_status,
                format!("status {}", r.status),
            )?;
            (route.check)(fx, t, r)
        }
        Expect::Unauthorized => {
            error(401, "unauthorized")?;
            ensure(r.json()["message"] == UNAUTHORIZED_MESSAGE, "message")
        }
        Expect::Forbidden => {
            error(403, "forbidden")?;
            let message = if who == Who::Service && t == Target::Other && route.targets == PURPOSES
            {
                format!("this token is not granted purpose '{OTHER}'")
            } else {
                format!(
                    "the {} role may not perform this operation",
                    match who {
                        Who::Service => "service",
                        Who::Auditor => "auditor",
                        Who::Admin | Who::Nobody => "admin",
                    }
                )
            };
            ensure(
                r.json()["message"] == message.as_str(),
                format!("message {}", r.json()["message"]),
            )
        }
        Expect::ItemForbidden => {
            ensure(r.status == 200, format!("status {}", r.status))?;
            ensure(
                r.json()
                    == json!({ "total": 1, "successful": 0, "failed": 1, "results": [{
                        "success": false, "error": "forbidden",
                        "message": format!("this token is not granted purpose '{OTHER}'") }] }),
                "item not refused as forbidden",
            )
        }
    }
}

#[tokio::test]
async fn every_route_every_role() {
    let h = Harness::new().await;
    let app = h.app(TransportConfig::default());
    let own_pt = json!({ "card": "4111111111111111" });
    let other_pt = json!("salary 100k");
    let fx = Fixtures {
        ct: [
            (Target::Own, h.ciphertext(&own_pt, OWN, &[]).await, own_pt),
            (
                Target::Other,
                h.ciphertext(&other_pt, OTHER, &[]).await,
                other_pt,
            ),
        ],
        generated: AtomicUsize::new(0),
    };

    let mut failures = Vec::new();
    let mut cells = 0;
    for route in routes() {
        for &t in route.targets {
            for who in [Who::Nobody, Who::Admin, Who::Service, Who::Auditor] {
                let token = match who {
                    Who::Nobody => None,
                    Who::Admin => Some(h.admin.as_str()),
                    Who::Service => Some(h.service_token.as_str()),
                    Who::Auditor => Some(h.auditor.as_str()),
                };
                let body = (route.body)(&fx, t);
                let mut b = request(route.method, route.path, token);
                if body.is_some() {
                    b = b.header("content-type", "application/json");
                }
                let req = b
                    .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
                    .unwrap();
                let r = oneshot(&app, req).await;
                let expect = (route.rule)(who, t);
                cells += 1;
                if let Err(why) = verdict(&route, &fx, who, t, expect, &r) {
                    failures.push(format!(
                        "{} {} ({}) as {who:?} on {t:?} purpose: expected {expect}, got {r:?} — {why}",
                        route.method, route.path, route.name
                    ));
                }
                // Whatever the answer, a refused or foreign request never shows the
                // other purpose's plaintext.
                if expect != Expect::Ok && r.text().contains("salary") {
                    failures.push(format!(
                        "{} as {who:?}: plaintext leaked: {r:?}",
                        route.name
                    ));
                }
            }
        }
    }
    assert_eq!(cells, 5 * 2 * 4 + 9 * 4, "matrix size");
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
