//! What the data routes read and write, byte for byte: binary data sent as base64
//! (`encoding: "base64"`), strings that need JSON escaping, every JSON type, and the
//! errors of bad payloads — single and batch, over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use common::{request, Client, Harness, OWN};
use serde_json::{json, Value};

fn api(path: &str) -> String {
    format!("/api/encryption{path}")
}

async fn encrypt(c: &mut Client, token: &str, body: &Value) -> String {
    let r = c.post(&api("/encrypt"), Some(token), body).await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(b.as_object().unwrap().len(), 1, "{b}");
    b["encryptedData"].as_str().unwrap().to_owned()
}

/// Strings that exercise every escape JSON has, and characters outside ASCII.
fn awkward_strings() -> Vec<&'static str> {
    vec![
        "",
        "quote \" backslash \\ slash /",
        "newline \n tab \t return \r",
        "control \u{0001}\u{001f} and del \u{007f}",
        "é ü ß 漢字 😀",
        "\u{2028}\u{2029}",
    ]
}

#[tokio::test]
async fn binary_data_round_trips_as_base64() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let t = h.admin.as_str();
    // Every byte value, and lengths around base64's 3-byte groups.
    let all: Vec<u8> = (0..=255u8).collect();
    for len in [0usize, 1, 2, 3, 4, 255, 256] {
        let bytes = &all[..len.min(all.len())];
        let ct = encrypt(
            &mut c,
            t,
            &json!({ "data": STANDARD.encode(bytes), "purpose": OWN, "encoding": "base64" }),
        )
        .await;
        c.post(&api("/decrypt"), Some(t), &json!({ "encryptedData": ct }))
            .await
            .assert_json(
                200,
                &json!({ "data": STANDARD.encode(bytes), "encoding": "base64" }),
            );
    }
    // Padding is optional; the bytes are what was encoded, not the base64 text.
    let ct = encrypt(
        &mut c,
        t,
        &json!({ "data": STANDARD_NO_PAD.encode(b"ab"), "purpose": OWN, "encoding": "base64" }),
    )
    .await;
    c.post(&api("/decrypt"), Some(t), &json!({ "encryptedData": ct }))
        .await
        .assert_json(200, &json!({ "data": "YWI=", "encoding": "base64" }));
    // Deterministic mode works on bytes too: equal bytes, equal ciphertext.
    let det =
        json!({ "data": "AAEC", "purpose": OWN, "encoding": "base64", "deterministic": true });
    assert_eq!(
        encrypt(&mut c, t, &det).await,
        encrypt(&mut c, t, &det).await
    );

    // Batches: every item decoded; a bad item fails alone, in its place.
    let r = c
        .post(
            &api("/batch/encrypt"),
            Some(t),
            &json!({ "items": ["AAEC", "not base64!", 5, "/w=="], "purpose": OWN, "encoding": "base64" }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(
        (&b["total"], &b["successful"], &b["failed"]),
        (&json!(4), &json!(2), &json!(2)),
        "{b}"
    );
    let results = b["results"].as_array().unwrap();
    assert_eq!(
        results[1],
        json!({ "success": false, "error": "invalid_request",
                "message": "data is not valid base64 (encoding 'base64')" })
    );
    assert_eq!(
        results[2],
        json!({ "success": false, "error": "invalid_request",
                "message": "with encoding 'base64', data must be a string" })
    );
    let cts = [&results[0], &results[3]].map(|r| r["encryptedData"].as_str().unwrap());
    c.post(&api("/batch/decrypt"), Some(t), &json!({ "items": cts }))
        .await
        .assert_json(
            200,
            &json!({ "total": 2, "successful": 2, "failed": 0, "results": [
                { "success": true, "data": "AAEC", "encoding": "base64" },
                { "success": true, "data": "/w==", "encoding": "base64" },
            ]}),
        );
}

/// Base64 text is decoded in place from the raw body when it holds no JSON escape; a
/// text with escapes (legal JSON, e.g. `\/`) takes the unescaping path and gives the
/// same bytes. A large payload with one bad character fails whole, quoting nothing.
#[tokio::test]
async fn base64_with_json_escapes_and_large_payloads() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let t = h.admin.as_str();
    let bytes = [0xFFu8, 0xFE, 0x3F, 0x00, 0xFB];
    let text = STANDARD.encode(bytes);
    assert!(text.contains('/'), "{text}");
    for deterministic in [false, true] {
        let escaped = text.replace('/', "\\/").replacen('A', "\\u0041", 1);
        let body = format!(
            r#"{{"data":"{escaped}","purpose":"{OWN}","encoding":"base64","deterministic":{deterministic}}}"#
        );
        let r = c
            .send_raw(
                request("POST", &api("/encrypt"), Some(t))
                    .header("content-type", "application/json"),
                body.into_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let ct = r.json()["encryptedData"].as_str().unwrap().to_owned();
        c.post(&api("/decrypt"), Some(t), &json!({ "encryptedData": ct }))
            .await
            .assert_json(200, &json!({ "data": text, "encoding": "base64" }));
        if deterministic {
            let plain = json!({ "data": text, "purpose": OWN, "encoding": "base64", "deterministic": true });
            assert_eq!(encrypt(&mut c, t, &plain).await, ct);
        }
    }

    // 256 KiB of bytes round trip; the same text with one bad character, or a length
    // base64 cannot have, is a 400 that quotes nothing.
    let big: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let text = STANDARD.encode(&big);
    let ct = encrypt(
        &mut c,
        t,
        &json!({ "data": text, "purpose": OWN, "encoding": "base64" }),
    )
    .await;
    c.post(&api("/decrypt"), Some(t), &json!({ "encryptedData": ct }))
        .await
        .assert_json(200, &json!({ "data": text, "encoding": "base64" }));
    let mut bad = text.clone().into_bytes();
    bad[text.len() / 2] = b'!';
    let bad = String::from_utf8(bad).unwrap();
    for data in [bad, format!("{text}A")] {
        let r = c
            .post(
                &api("/encrypt"),
                Some(t),
                &json!({ "data": data, "purpose": OWN, "encoding": "base64" }),
            )
            .await;
        r.assert_json(
            400,
            &json!({ "error": "invalid_request", "message": "data is not valid base64 (encoding 'base64')" }),
        );
    }
}

#[tokio::test]
async fn bad_payloads_are_clear_400s_that_quote_nothing() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let t = Some(h.admin.as_str());
    let secret = "4532123456789012";
    for (body, message) in [
        (
            json!({ "data": format!("{secret}!"), "purpose": OWN, "encoding": "base64" }),
            "data is not valid base64 (encoding 'base64')",
        ),
        (
            json!({ "data": { "card": secret }, "purpose": OWN, "encoding": "base64" }),
            "with encoding 'base64', data must be a string",
        ),
        (
            json!({ "data": secret, "purpose": OWN, "encoding": "hex" }),
            "encoding: the only encoding is 'base64' (or leave it out for a JSON value)",
        ),
        (json!({ "purpose": OWN }), "missing field 'data'"),
        (
            json!({ "data": null, "purpose": OWN }),
            "missing field 'data'",
        ),
    ] {
        let r = c.post(&api("/encrypt"), t, &body).await;
        r.assert_error(400, "invalid_request", message);
        assert!(!r.text().contains(secret), "{}", r.text());
    }
    let r = c
        .post(
            &api("/batch/encrypt"),
            t,
            &json!({ "items": ["AA=="], "purpose": OWN, "encoding": "hex" }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["results"][0]["error"], "invalid_request");
    // Not JSON at all, and a body that is JSON but not an object, on every route
    // that reads its body borrowed.
    for path in ["/encrypt", "/batch/encrypt", "/batch/decrypt"] {
        for raw in [&b"{\"items\": [\"x\", "[..], b"[1,2]"] {
            let r = c
                .send_raw(
                    request("POST", &api(path), t).header("content-type", "application/json"),
                    raw.to_vec(),
                )
                .await;
            assert_eq!(r.status, 400, "{path}: {r:?}");
        }
    }
    batches_without_a_list_of_items(&mut c, t).await;
}

/// Batches without `items`, or with `items` that is not a list: 400, never a 500.
async fn batches_without_a_list_of_items(c: &mut Client, t: Option<&str>) {
    for path in ["/batch/encrypt", "/batch/decrypt"] {
        c.post(&api(path), t, &json!({ "purpose": OWN }))
            .await
            .assert_error(400, "invalid_request", "missing field 'items'");
        let r = c
            .post(
                &api(path),
                t,
                &json!({ "items": "kf1:AAAA", "purpose": OWN }),
            )
            .await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{path}");
    }
}

#[tokio::test]
async fn every_string_and_json_type_comes_back_exactly() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let t = h.admin.as_str();
    let mut values: Vec<Value> = awkward_strings().into_iter().map(Value::from).collect();
    values.extend([
        json!(0),
        json!(-12.5e-3),
        json!(u64::MAX),
        json!(false),
        json!([]),
        json!({}),
        json!({ "nested": { "list": [1, "two", null, { "k": "quote \" here" }] } }),
    ]);
    // One by one…
    for v in &values {
        let ct = encrypt(&mut c, t, &json!({ "data": v, "purpose": OWN })).await;
        c.post(&api("/decrypt"), Some(t), &json!({ "encryptedData": ct }))
            .await
            .assert_json(200, &json!({ "data": v }));
    }
    // …and in one batch, with `null` as a value of its own.
    let mut items = values.clone();
    items.push(Value::Null);
    let r = c
        .post(
            &api("/batch/encrypt"),
            Some(t),
            &json!({ "items": items, "purpose": OWN, "context": { "k": "v" } }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let b = r.json();
    assert_eq!(b["successful"], json!(items.len()), "{b}");
    let cts: Vec<Value> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["encryptedData"].clone())
        .collect();
    let r = c
        .post(
            &api("/batch/decrypt"),
            Some(t),
            &json!({ "items": cts, "context": { "k": "v" } }),
        )
        .await;
    let expected: Vec<Value> = items
        .iter()
        .map(|v| json!({ "success": true, "data": v }))
        .collect();
    r.assert_json(
        200,
        &json!({ "total": items.len(), "successful": items.len(), "failed": 0, "results": expected }),
    );
    // A ciphertext sent with a JSON escape in it is the same ciphertext.
    let ct = encrypt(&mut c, t, &json!({ "data": "x", "purpose": OWN })).await;
    let escaped = format!(
        "{{\"items\":[\"\\u006b{}\"]}}",
        ct.strip_prefix('k').unwrap()
    );
    let r = c
        .send_raw(
            request("POST", &api("/batch/decrypt"), Some(t))
                .header("content-type", "application/json"),
            escaped.into_bytes(),
        )
        .await;
    r.assert_json(
        200,
        &json!({ "total": 1, "successful": 1, "failed": 0, "results": [{ "success": true, "data": "x" }] }),
    );
}

/// Query strings fail in the API's error shape too (axum's own rejection is plain text),
/// naming the parameter and quoting no value.
#[tokio::test]
async fn bad_query_strings_are_json_400s() {
    let h = Harness::new().await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let get = |path: &str| {
        request("GET", &api(path), Some(&h.admin))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let missing = common::oneshot(&app, get("/keys/policy")).await;
    missing.assert_error(400, "invalid_request", "missing query parameter 'purpose'");
    for path in [
        "/keys?status=%FF%FE",
        "/status?shape=secret-value-123&shape=x",
    ] {
        let r = common::oneshot(&app, get(path)).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "invalid_request", "{path}");
        assert!(!r.text().contains("secret-value"), "{path}: {}", r.text());
    }
}
