//! `POST /encrypt-fields`, `POST /decrypt-fields` and `POST /blind-index` with
//! `allVersions`: behaviour, authorization, error codes; one run over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::body::Body;
use axum::Router;
use common::{oneshot, request, Harness, Resp, OTHER, OWN, UNAUTHORIZED_MESSAGE};
use keyflow_kms::Purpose;
use serde_json::{json, Value};

async fn post(app: &Router, path: &str, token: Option<&str>, body: &Value) -> Resp {
    oneshot(
        app,
        request("POST", &format!("/api/encryption{path}"), token)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    )
    .await
}

fn app(h: &Harness) -> Router {
    h.app(keyflow_transport::TransportConfig::default())
}

fn is_ct(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("kf1:"))
}

fn doc() -> Value {
    json!({
        "id": "u-1",
        "ssn": "123-45-6789",
        "email": "ada@example.com",
        "profile": {"phone_number": "+14155552671", "age": 36},
        "cards": [{"cardNumber": "4111111111111111", "cvv": "123"}]
    })
}

#[tokio::test]
async fn encrypt_and_decrypt_fields_round_trip() {
    let h = Harness::new().await;
    let app = app(&h);
    let r = post(
        &app,
        "/encrypt-fields",
        Some(&h.admin),
        &json!({
            "data": doc(),
            "purpose": OWN,
            "fields": ["cards[*].cardNumber", {"path": "email", "mode": "blindIndex", "bits": 16},
                       {"path": "profile.age", "mode": "deterministic"}],
            "autoDetect": true,
            "documentId": "u-1",
            "context": {"tenant": "t1"}
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    let data = &body["data"];
    assert!(
        is_ct(&data["ssn"]) && is_ct(&data["email"]) && is_ct(&data["profile"]["phone_number"])
    );
    assert!(is_ct(&data["profile"]["age"]) && is_ct(&data["cards"][0]["cardNumber"]));
    assert_eq!(data["email_bidx"].as_str().unwrap().len(), 4);
    assert!(data["cards"][0].get("cvv").is_none(), "never stored");
    assert_eq!(body["strippedFields"], json!(["cards[0].cvv"]));
    assert_eq!(body["blindIndexes"], json!(["email_bidx"]));
    let mut fields: Vec<String> = serde_json::from_value(body["encryptedFields"].clone()).unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            "cards[0].cardNumber",
            "email",
            "profile.age",
            "profile.phone_number",
            "ssn"
        ]
    );
    assert!(!r.text().contains("123-45-6789") && !r.text().contains("\"123\""));

    // Encrypting the result again is a no-op.
    let again = post(
        &app,
        "/encrypt-fields",
        Some(&h.admin),
        &json!({"data": data, "purpose": OWN, "autoDetect": true, "documentId": "u-1", "context": {"tenant": "t1"}}),
    )
    .await
    .json();
    assert_eq!(&again["data"], data);
    assert_eq!(again["encryptedFields"], json!([]));

    let r = post(
        &app,
        "/decrypt-fields",
        Some(&h.service_token),
        &json!({"data": data, "documentId": "u-1", "context": {"tenant": "t1"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut expected = doc();
    expected["cards"][0].as_object_mut().unwrap().remove("cvv");
    assert_eq!(r.json()["data"], expected);
    assert_eq!(r.json()["decryptedFields"].as_array().unwrap().len(), 5);

    // Only some fields.
    let r = post(
        &app,
        "/decrypt-fields",
        Some(&h.admin),
        &json!({"data": data, "fields": ["ssn"], "documentId": "u-1", "context": {"tenant": "t1"}}),
    )
    .await
    .json();
    assert_eq!(r["data"]["ssn"], "123-45-6789");
    assert!(is_ct(&r["data"]["email"]));
}

#[tokio::test]
async fn moved_or_tampered_values_are_422_naming_the_path() {
    let h = Harness::new().await;
    let app = app(&h);
    let enc = |id: &'static str| {
        let app = app.clone();
        let token = h.admin.clone();
        async move {
            post(
                &app,
                "/encrypt-fields",
                Some(&token),
                &json!({"data": {"ssn": "123-45-6789", "taxId": "1"}, "purpose": OWN,
                        "fields": ["ssn", "taxId"], "documentId": id}),
            )
            .await
            .json()["data"]
                .clone()
        }
    };
    let a = enc("a").await;
    let mut b = enc("b").await;
    b["ssn"] = a["ssn"].clone();
    post(
        &app,
        "/decrypt-fields",
        Some(&h.admin),
        &json!({"data": b, "documentId": "b"}),
    )
    .await
    .assert_error(422, "decryption_failed", "decryption failed at ssn");
    let mut swapped = a.clone();
    swapped["taxId"] = a["ssn"].clone();
    post(
        &app,
        "/decrypt-fields",
        Some(&h.admin),
        &json!({"data": swapped, "documentId": "a"}),
    )
    .await
    .assert_error(422, "decryption_failed", "decryption failed at taxId");
    let mut broken = a.clone();
    broken["ssn"] = json!("kf1:AAAA");
    post(
        &app,
        "/decrypt-fields",
        Some(&h.admin),
        &json!({"data": broken, "documentId": "a"}),
    )
    .await
    .assert_error(422, "decryption_failed", "decryption failed at ssn");
}

#[tokio::test]
async fn authorization_follows_the_data_routes() {
    let h = Harness::new().await;
    let app = app(&h);
    let body = |p: &str| json!({"data": {"ssn": "123-45-6789"}, "purpose": p, "fields": ["ssn"]});
    assert_eq!(
        post(&app, "/encrypt-fields", Some(&h.service_token), &body(OWN))
            .await
            .status,
        200
    );
    let r = post(
        &app,
        "/encrypt-fields",
        Some(&h.service_token),
        &body(OTHER),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str().unwrap()),
        (403, "forbidden")
    );
    let r = post(&app, "/encrypt-fields", Some(&h.auditor), &body(OWN)).await;
    assert_eq!(r.status, 403);
    post(&app, "/encrypt-fields", None, &body(OWN))
        .await
        .assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);

    // A document mixing purposes: the service token may decrypt none of it, because
    // one ciphertext belongs to a purpose it was not granted.
    let own = h.ciphertext(&json!("x"), OWN, &[]).await;
    let other = h.ciphertext(&json!("y"), OTHER, &[]).await;
    let mixed = json!({"data": {"a": own, "b": other}});
    let r = post(&app, "/decrypt-fields", Some(&h.service_token), &mixed).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(!r.text().contains("\"x\""));
    let r = post(&app, "/decrypt-fields", Some(&h.auditor), &mixed).await;
    assert_eq!(r.status, 403);
    // Not the labelled field: these were encrypted by /encrypt with no field binding.
    let r = post(&app, "/decrypt-fields", Some(&h.admin), &mixed).await;
    r.assert_error(422, "decryption_failed", "decryption failed at a");
}

#[tokio::test]
async fn request_errors() {
    let h = Harness::new().await;
    let app = app(&h);
    let cases = [
        (
            json!({"purpose": OWN, "fields": ["ssn"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": "text", "purpose": OWN, "fields": ["ssn"]}),
            400,
            "invalid_request",
        ),
        (json!({"data": {}, "purpose": OWN}), 400, "invalid_request"),
        (
            json!({"data": {}, "purpose": OWN, "fields": ["a..b"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {}, "purpose": OWN, "fields": [{"path": "a", "mode": "fast"}]}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {}, "purpose": OWN, "fields": [{"path": "a", "bits": 16}]}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {}, "purpose": "custom", "autoDetect": true}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {}, "purpose": OWN, "fields": ["a"], "sadPolicy": "keep"}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {}, "purpose": OWN, "fields": ["a"], "context": {"kf.doc": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"data": {"t": ["a"]}, "purpose": OWN, "fields": ["t[*]:blind_index"]}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(&app, "/encrypt-fields", Some(&h.admin), &body).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {r:?}");
        assert_eq!(r.json()["error"], code, "{body}");
    }
    let r = post(
        &app,
        "/encrypt-fields",
        Some(&h.admin),
        &json!({"data": doc(), "purpose": OTHER, "autoDetect": true, "sadPolicy": "reject"}),
    )
    .await;
    r.assert_error(
        422,
        "sensitive_authentication_data",
        "sensitive authentication data may not be stored, not even encrypted (PCI DSS 3.3.1): cards[0].cvv",
    );
}

#[tokio::test]
async fn blind_index_across_every_live_version() {
    let h = Harness::new().await;
    let app = app(&h);
    // The existing shape is unchanged.
    let r = post(
        &app,
        "/blind-index",
        Some(&h.service_token),
        &json!({"data": "ada@example.com", "purpose": OWN, "field": "email"}),
    )
    .await;
    let v1 = r.json();
    assert_eq!(v1.as_object().unwrap().len(), 3, "{v1}");
    assert_eq!(
        (v1["keyVersion"].as_u64(), v1["bits"].as_u64()),
        (Some(1), Some(32))
    );

    // A document field indexed by /encrypt-fields …
    let stored = post(
        &app,
        "/encrypt-fields",
        Some(&h.admin),
        &json!({"data": {"phone_number": "+14155552671"}, "purpose": OWN,
                "fields": [{"path": "phoneNumber", "mode": "blindIndex"}]}),
    )
    .await
    .json()["data"]["phone_number_bidx"]
        .clone();
    h.service
        .keys()
        .rotate(&Purpose::new(OWN).unwrap())
        .await
        .unwrap();
    // … is found with `path` across the rotation.
    let r = post(
        &app,
        "/blind-index",
        Some(&h.service_token),
        &json!({"data": "+14155552671", "purpose": OWN, "path": "PhoneNumber", "allVersions": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let all = r.json();
    assert_eq!(all["keyVersion"], 2);
    let indexes = all["indexes"].as_array().unwrap();
    assert_eq!(indexes.len(), 2);
    assert_eq!(indexes[0]["keyVersion"], 2);
    assert_eq!(indexes[0]["index"], all["index"]);
    assert_eq!(indexes[1], json!({"index": stored, "keyVersion": 1}));

    // expectedDistinct picks the bits; both or neither of field/path is refused.
    let r = post(
        &app,
        "/blind-index",
        Some(&h.admin),
        &json!({"data": "x", "purpose": OWN, "field": "f", "expectedDistinct": 1000000}),
    )
    .await
    .json();
    assert_eq!(r["bits"], 18);
    for bad in [
        json!({"data": "x", "purpose": OWN}),
        json!({"data": "x", "purpose": OWN, "field": "f", "path": "f"}),
        json!({"data": "x", "purpose": OWN, "field": "f", "bits": 8, "expectedDistinct": 10}),
    ] {
        let r = post(&app, "/blind-index", Some(&h.admin), &bad).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    // Service token, other purpose: refused.
    let r = post(
        &app,
        "/blind-index",
        Some(&h.service_token),
        &json!({"data": "x", "purpose": OTHER, "field": "f", "allVersions": true}),
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn over_tls() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let r = c
        .post(
            "/api/encryption/encrypt-fields",
            Some(&h.service_token),
            &json!({"data": {"email": "a@example.com"}, "purpose": OWN, "autoDetect": true, "documentId": "d"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let data = r.json()["data"].clone();
    let r = c
        .post(
            "/api/encryption/decrypt-fields",
            Some(&h.service_token),
            &json!({"data": data, "documentId": "d"}),
        )
        .await;
    r.assert_json(
        200,
        &json!({"data": {"email": "a@example.com"}, "decryptedFields": ["email"]}),
    );
    assert!(
        r.headers.contains_key("strict-transport-security")
            || r.headers.contains_key("x-content-type-options")
    );
}
