//! File routes over real TLS: streaming `/files/encrypt` and `/files/decrypt`, the JSON
//! `/encrypt-file` and `/decrypt-file`, roles and purposes, tampering, size limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use axum::http::Request;
use base64::Engine;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use keyflow_server::Limits;
use serde_json::json;
use tokio::sync::mpsc;

const SEG: usize = 64 * 1024;
const ENCRYPT: &str = "/api/encryption/files/encrypt";
const DECRYPT: &str = "/api/encryption/files/decrypt";

fn data(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn encrypt(c: &mut Client, token: &str, query: &str, body: &[u8]) -> Resp {
    c.send_raw(
        request("POST", &format!("{ENCRYPT}?{query}"), Some(token)),
        body.to_vec(),
    )
    .await
}

async fn decrypt(c: &mut Client, token: &str, body: &[u8]) -> Resp {
    c.send_raw(request("POST", DECRYPT, Some(token)), body.to_vec())
        .await
}

/// An HTTP/1.1 connection to `server` over TLS (for requests driven by hand).
async fn http11<B>(server: &Server) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = client_config(
        server.cert.as_ref().unwrap(),
        rustls::DEFAULT_VERSIONS,
        &[b"http/1.1"],
    );
    http1(tls_connect(server.addr, config).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_round_trips_at_segment_boundaries() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    for size in [0, 1, SEG - 1, SEG, SEG + 1, 40 * SEG + 321] {
        let plain = data(size);
        let r = encrypt(
            &mut c,
            &h.service_token,
            &format!("purpose={OWN}&name=r%C3%A9sum%C3%A9.txt&mime=text%2Fplain"),
            &plain,
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), "application/vnd.keyflow.file");
        assert_eq!(r.header("x-keyflow-key-version"), "1");
        assert_eq!(&r.body[..4], b"\x89KFS");
        let back = decrypt(&mut c, &h.service_token, &r.body).await;
        assert_eq!(back.status, 200, "{back:?}");
        assert!(back.body == plain, "size {size}: plaintext differs");
        assert_eq!(back.header("content-type"), "text/plain");
        assert_eq!(back.header("x-keyflow-file-name"), "r%C3%A9sum%C3%A9.txt");
        // The size is known (and sealed into the metadata) when the upload declared a
        // Content-Length, which hyper's client omits for an empty body.
        if size > 0 {
            assert_eq!(back.header("x-keyflow-file-size"), size.to_string());
        }
        assert_eq!(back.header("cache-control"), "no-store");
    }
}

/// The response starts before the upload ends: nothing buffers the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_streams_while_the_upload_is_in_progress() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut sender = http11::<ChannelBody>(&server).await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let req = Request::builder()
        .method("POST")
        .uri(format!("{ENCRYPT}?purpose={OWN}"))
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", h.service_token))
        .body(ChannelBody(rx))
        .unwrap();
    let plain = data(5 * SEG + 9);
    let pending = tokio::spawn(async move { sender.send_request(req).await });
    // Three segments' worth uploaded, the upload still open…
    tx.send(Bytes::copy_from_slice(&plain[..3 * SEG + 1]))
        .await
        .unwrap();
    let res = bounded("response head", pending).await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    // …and encrypted bytes already arrive: the header and the first two sealed segments
    // (the third is held until it is known whether it is the last).
    let mut got = Vec::new();
    while got.len() < 2 * (SEG + 16) {
        let frame = bounded("first segments", body.frame())
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    tx.send(Bytes::copy_from_slice(&plain[3 * SEG + 1..]))
        .await
        .unwrap();
    drop(tx);
    let rest = bounded("rest", body.collect()).await.unwrap().to_bytes();
    got.extend_from_slice(&rest);
    let mut c = server.client().await;
    let back = decrypt(&mut c, &h.service_token, &got).await;
    assert_eq!(back.status, 200);
    assert!(back.body == plain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_purposes_are_enforced() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let own = encrypt(&mut c, &h.admin, &format!("purpose={OWN}"), b"mine").await;
    let other = encrypt(&mut c, &h.admin, &format!("purpose={OTHER}"), b"theirs").await;
    assert_eq!((own.status.as_u16(), other.status.as_u16()), (200, 200));
    // Encrypt: the service token only for its purpose; auditors never; tokens required.
    let r = encrypt(&mut c, &h.service_token, &format!("purpose={OTHER}"), b"x").await;
    r.assert_error(
        403,
        "forbidden",
        "this token is not granted purpose 'financialData'",
    );
    let r = encrypt(&mut c, &h.auditor, &format!("purpose={OWN}"), b"x").await;
    assert_eq!(r.status, 403);
    let r = c
        .send_raw(
            request("POST", &format!("{ENCRYPT}?purpose={OWN}"), None),
            b"x".to_vec(),
        )
        .await;
    r.assert_error(401, "unauthorized", UNAUTHORIZED_MESSAGE);
    let r = encrypt(&mut c, &h.service_token, "name=x", b"x").await;
    r.assert_error(400, "invalid_request", "missing query parameter 'purpose'");
    // Decrypt: the purpose comes from the file's header.
    assert_eq!(
        decrypt(&mut c, &h.service_token, &own.body).await.body,
        &b"mine"[..]
    );
    let r = decrypt(&mut c, &h.service_token, &other.body).await;
    r.assert_error(
        403,
        "forbidden",
        "this token is not granted purpose 'financialData'",
    );
    let r = decrypt(&mut c, &h.auditor, &own.body).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        decrypt(&mut c, &h.admin, &other.body).await.body,
        &b"theirs"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_uploads_are_refused() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let plain = data(4 * SEG + 100);
    let good = encrypt(
        &mut c,
        &h.service_token,
        &format!("purpose={OWN}&name=a"),
        &plain,
    )
    .await
    .body
    .to_vec();
    let header = good.len() - plain.len() - 5 * 16;
    let mut seg_flip = good.clone();
    seg_flip[header + 2 * (SEG + 16) + 7] ^= 1;
    let mut head_flip = good.clone();
    head_flip[header - 3] ^= 1;
    let mut swapped = good[..header].to_vec();
    swapped.extend_from_slice(&good[header + SEG + 16..header + 2 * (SEG + 16)]);
    swapped.extend_from_slice(&good[header..header + SEG + 16]);
    swapped.extend_from_slice(&good[header + 2 * (SEG + 16)..]);
    for (name, bad) in [
        ("bit flipped in a segment", seg_flip),
        ("bit flipped in the header", head_flip),
        ("truncated", good[..good.len() - 1].to_vec()),
        (
            "truncated at a segment boundary",
            good[..header + 2 * (SEG + 16)].to_vec(),
        ),
        ("segments swapped", swapped),
        ("extended", [&good[..], b"x"].concat()),
    ] {
        let r = decrypt(&mut c, &h.service_token, &bad).await;
        assert_eq!(r.status, 422, "{name}: {r:?}");
        r.assert_error(422, "decryption_failed", "decryption failed");
    }
    let r = decrypt(&mut c, &h.service_token, b"definitely not a KeyFlow file").await;
    r.assert_error(422, "invalid_ciphertext", "not a KeyFlow ciphertext");
}

/// Past the first MiB the status is already sent: a failing segment aborts the body,
/// after only verified plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_tampering_aborts_the_body_after_verified_plaintext_only() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let plain = data(40 * SEG);
    let good = encrypt(&mut c, &h.service_token, &format!("purpose={OWN}"), &plain)
        .await
        .body
        .to_vec();
    let header = good.len() - plain.len() - 40 * 16;
    let mut bad = good.clone();
    bad[header + 30 * (SEG + 16) + 1] ^= 1;
    let mut sender = http11::<http_body_util::Full<Bytes>>(&server).await;
    let req = request("POST", DECRYPT, Some(&h.service_token))
        .body(http_body_util::Full::new(Bytes::from(bad)))
        .unwrap();
    let res = bounded("response", sender.send_request(req)).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut got = Vec::new();
    let failed = loop {
        match bounded("frame", body.frame()).await {
            Some(Ok(f)) => got.extend_from_slice(&f.into_data().unwrap_or_default()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(failed, "the body ended cleanly despite a bad segment");
    // The abort may drop bytes still in flight, but never adds unverified ones.
    assert!(
        got.len() <= 30 * SEG,
        "{} bytes: past the bad segment",
        got.len()
    );
    assert!(got == plain[..got.len()], "only verified plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_limit_is_separate_from_the_json_limit() {
    let h = Harness::with_limits(Limits {
        json_body_bytes: 1024,
        file_body_bytes: 200_000,
        ..Limits::default()
    })
    .await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    // Far over the JSON limit, under the file limit.
    let plain = data(150_000);
    let enc = encrypt(&mut c, &h.service_token, &format!("purpose={OWN}"), &plain).await;
    assert_eq!(enc.status, 200, "{enc:?}");
    assert!(decrypt(&mut c, &h.service_token, &enc.body).await.body == plain);
    // Over the file limit. Driven without a network: a server that refuses a body
    // without reading it closes the connection, and a client still writing 200 KB
    // may see that as a write error before it reads the 413.
    let app = h.app(keyflow_transport::TransportConfig::default());
    let over = |path: &str, body: Vec<u8>, declare: bool| {
        let b = request("POST", path, Some(&h.service_token));
        let b = if declare {
            b.header("content-length", body.len())
        } else {
            b
        };
        b.body(axum::body::Body::from(body)).unwrap()
    };
    let too_large = |r: &Resp| {
        r.assert_error(
            413,
            "payload_too_large",
            "the request body is larger than the limit of 200000 bytes",
        )
    };
    let path = format!("{ENCRYPT}?purpose={OWN}");
    too_large(&oneshot(&app, over(&path, data(200_001), true)).await);
    too_large(&oneshot(&app, over(DECRYPT, data(300_000), true)).await);
    // Undeclared (chunked) and growing past the limit inside the first MiB: refused
    // while the decryption route verifies, before any plaintext is sent.
    let big = {
        let service = &h.service;
        let purpose = keyflow_kms::Purpose::new(OWN).unwrap();
        let sealer = service
            .ring()
            .with_active_key(&purpose, |dk| {
                keyflow_stream::Sealer::new(
                    dk,
                    &keyflow_stream::Metadata::default(),
                    &keyflow_kms::keyflow_core::OsRng,
                )
            })
            .await
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        keyflow_stream::encrypt(&mut &data(250_000)[..], &mut out, sealer).unwrap();
        out
    };
    too_large(&oneshot(&app, over(DECRYPT, big.clone(), false)).await);
    assert_eq!(
        oneshot(&app, over(DECRYPT, big[..1000].to_vec(), false))
            .await
            .status,
        422
    );
    // The JSON routes stay bounded by the JSON limit.
    let r = c
        .post(
            "/api/encryption/encrypt-file",
            Some(&h.service_token),
            &json!({"data": b64(&data(2000)), "purpose": OWN}),
        )
        .await;
    assert_eq!(r.status, 413, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_round_trip_and_interoperate() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let plain = data(3 * SEG + 5);
    let r = c
        .post(
            "/api/encryption/encrypt-file",
            Some(&h.service_token),
            &json!({"data": b64(&plain), "purpose": OWN, "fileName": "a.pdf", "mimeType": "application/pdf"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["keyVersion"], 1);
    assert_eq!(body["size"], plain.len());
    let file = base64::engine::general_purpose::STANDARD
        .decode(body["encryptedData"].as_str().unwrap())
        .unwrap();
    let r = c
        .post(
            "/api/encryption/decrypt-file",
            Some(&h.service_token),
            &json!({"encryptedData": b64(&file)}),
        )
        .await;
    r.assert_json(
        200,
        &json!({"data": b64(&plain), "fileName": "a.pdf", "mimeType": "application/pdf", "size": plain.len()}),
    );
    // Same format as the streaming routes.
    let r = decrypt(&mut c, &h.service_token, &file).await;
    assert!(r.body == plain);
    assert_eq!(r.header("content-type"), "application/pdf");
    let mut bad = file.clone();
    bad[file.len() - 20] ^= 1;
    let r = c
        .post(
            "/api/encryption/decrypt-file",
            Some(&h.service_token),
            &json!({"encryptedData": b64(&bad)}),
        )
        .await;
    r.assert_error(422, "decryption_failed", "decryption failed");
    let r = c
        .post(
            "/api/encryption/decrypt-file",
            Some(&h.auditor),
            &json!({"encryptedData": b64(&file)}),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_versions_do_not_decrypt_files() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let v1 = encrypt(&mut c, &h.admin, &format!("purpose={OWN}"), b"old").await;
    let r = c
        .post(
            "/api/encryption/keys/rotate",
            Some(&h.admin),
            &json!({"purpose": OWN}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v2 = encrypt(&mut c, &h.admin, &format!("purpose={OWN}"), b"new").await;
    assert_eq!(v2.header("x-keyflow-key-version"), "2");
    assert_eq!(
        decrypt(&mut c, &h.service_token, &v1.body).await.body,
        &b"old"[..]
    );
    let r = c
        .post(
            "/api/encryption/keys/revoke",
            Some(&h.admin),
            &json!({"purpose": OWN, "version": 1, "reason": "test"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = decrypt(&mut c, &h.service_token, &v1.body).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["error"], "key_unavailable");
    assert_eq!(
        decrypt(&mut c, &h.service_token, &v2.body).await.body,
        &b"new"[..]
    );
}

/// Streamed responses hold a file slot until their body ends: with one slot, a second
/// stream is refused (503 `overloaded`) while the first is unread, and admitted once the
/// first client goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_files_have_their_own_concurrency_limit() {
    use tower::ServiceExt;
    let h = Harness::with_limits(Limits {
        file_streams: 1,
        ..Limits::default()
    })
    .await;
    let app = h.app(keyflow_transport::TransportConfig::default());
    let path = format!("{ENCRYPT}?purpose={OWN}");
    let req = |body: Vec<u8>| {
        request("POST", &path, Some(&h.service_token))
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    // Eight segments: the response cannot be produced in one chunk.
    let first = bounded("first", app.clone().oneshot(req(data(8 * SEG))))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let refused = oneshot(&app, req(data(SEG))).await;
    refused.assert_error(503, "overloaded", "the server is overloaded; retry later");
    // The JSON routes are not affected.
    let plain = oneshot(
        &app,
        request("POST", "/api/encryption/encrypt", Some(&h.service_token))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"data": "x", "purpose": OWN}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(plain.status, 200, "{plain:?}");
    // The first client goes away: its slot comes back.
    drop(first);
    let mut admitted = None;
    for _ in 0..100 {
        let r = oneshot(&app, req(data(SEG))).await;
        if r.status == 200 {
            admitted = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let admitted = admitted.expect("the slot was never released");
    let back = decrypt_in_process(&app, &h.service_token, &admitted.body).await;
    assert!(back == data(SEG));
}

async fn decrypt_in_process(app: &axum::Router, token: &str, body: &[u8]) -> Vec<u8> {
    let r = oneshot(
        app,
        request("POST", DECRYPT, Some(token))
            .body(axum::body::Body::from(body.to_vec()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body.to_vec()
}
