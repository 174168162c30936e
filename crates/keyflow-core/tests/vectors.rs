//! The committed envelope test vectors (`tests/vectors/envelope-v1.json`, specified in
//! `docs/envelope-format.md`): every valid vector decrypts to its plaintext and
//! re-encrypts to the identical bytes; every invalid vector is refused.
//!
//! `KEYFLOW_REGENERATE_VECTORS=1 cargo test -p keyflow-core --test vectors -- --ignored`
//! rewrites the file (only needed when a new vector is added; the format is frozen).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::collections::BTreeMap;

use keyflow_core::envelope::{read, write, Algorithm, PayloadKind, NONCE_LEN};
use keyflow_core::{Context, DataKey, Error, KeyVersion, Purpose, SecretKey};
use serde_json::{json, Value};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/envelope-v1.json"
);

fn keys(doc: &Value) -> Vec<DataKey> {
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            DataKey::derive(
                Purpose::new(k["purpose"].as_str().unwrap()).unwrap(),
                KeyVersion::new(k["version"].as_u64().unwrap() as u32).unwrap(),
                &SecretKey::from_slice(&hex::decode(k["dek"].as_str().unwrap()).unwrap()).unwrap(),
            )
            .unwrap()
        })
        .collect()
}

fn context(v: &Value) -> Context {
    Context::from_pairs(
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
    )
    .unwrap()
}

fn kind(name: &str) -> PayloadKind {
    match name {
        "bytes" => PayloadKind::Bytes,
        "text" => PayloadKind::Text,
        "json" => PayloadKind::Json,
        other => panic!("unknown payload kind {other}"),
    }
}

/// Decrypts like the service does: pick the key named by the header, then open.
fn open(keys: &[DataKey], text: &str, ctx: &Context) -> Result<(PayloadKind, Vec<u8>), Error> {
    let bytes = read::from_text(text)?;
    let env = read::parse(&bytes)?;
    let key = keys
        .iter()
        .find(|k| *k.purpose() == env.header.purpose && k.version() == env.header.key_version)
        .ok_or(Error::DecryptionFailed)?;
    let pt = key.decrypt(&env, ctx)?;
    Ok((pt.kind(), pt.as_bytes().to_vec()))
}

#[test]
fn committed_vectors() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let keys = keys(&doc);
    let valid = doc["valid"].as_array().unwrap();
    let invalid = doc["invalid"].as_array().unwrap();
    assert!(valid.len() >= 6 && invalid.len() >= 12);
    for v in valid {
        let name = v["name"].as_str().unwrap();
        let ctx = context(&v["context"]);
        let (k, pt) = open(&keys, v["envelope"].as_str().unwrap(), &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            pt,
            hex::decode(v["plaintext"].as_str().unwrap()).unwrap(),
            "{name}"
        );
        assert_eq!(k, kind(v["payloadKind"].as_str().unwrap()), "{name}");
        // The writer reproduces the exact bytes from the same inputs.
        let key = keys
            .iter()
            .find(|x| {
                x.purpose().as_str() == v["purpose"] && u64::from(x.version().get()) == v["version"]
            })
            .unwrap();
        let alg = Algorithm::from_id(v["algorithm"].as_u64().unwrap() as u8).unwrap();
        let nonce: [u8; NONCE_LEN] = hex::decode(v["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let again = if alg.is_deterministic() {
            key.encrypt_deterministic(k, &pt, &ctx).unwrap()
        } else {
            key.hazmat_encrypt_with_nonce(alg, nonce, k, &pt, &ctx)
                .unwrap()
        };
        assert_eq!(
            write::to_text(&again),
            v["envelope"].as_str().unwrap(),
            "{name}: writer drifted"
        );
    }
    for v in invalid {
        let name = v["name"].as_str().unwrap();
        let ctx = context(&v["context"]);
        assert!(
            open(&keys, v["envelope"].as_str().unwrap(), &ctx).is_err(),
            "invalid vector accepted: {name}"
        );
    }
}

fn b64_mutate(text: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut bytes = read::from_text(text).unwrap();
    f(&mut bytes);
    write::to_text(&bytes)
}

#[test]
#[ignore = "writes the vector file; run only when adding vectors"]
fn regenerate_vectors() {
    if std::env::var("KEYFLOW_REGENERATE_VECTORS").is_err() {
        return;
    }
    let dek1 = [0x11u8; 32];
    let dek2 = [0x22u8; 32];
    let key_list = json!([
        {"purpose": "userData", "version": 1, "dek": hex::encode(dek1)},
        {"purpose": "userData", "version": 2, "dek": hex::encode(dek2)},
        // Same DEK as userData v1 under another name: the "wrong purpose" vector must be
        // caught by the header binding (AAD), not by a different key.
        {"purpose": "userDatb", "version": 1, "dek": hex::encode(dek1)},
        {"purpose": "financialData", "version": 7, "dek": hex::encode([0x77u8; 32])},
    ]);
    let doc0 = json!({"keys": key_list});
    let keys = keys(&doc0);
    let k = |p: &str, v: u32| {
        keys.iter()
            .find(|x| x.purpose().as_str() == p && x.version().get() == v)
            .unwrap()
    };
    let mut valid = Vec::new();
    let mut add = |name: &str,
                   key: &DataKey,
                   alg: Algorithm,
                   nonce: [u8; 12],
                   kind_name: &str,
                   pt: &[u8],
                   ctx: BTreeMap<&str, &str>| {
        let c = Context::from_pairs(ctx.clone()).unwrap();
        let env = if alg.is_deterministic() {
            key.encrypt_deterministic(kind(kind_name), pt, &c).unwrap()
        } else {
            key.hazmat_encrypt_with_nonce(alg, nonce, kind(kind_name), pt, &c)
                .unwrap()
        };
        let parsed = read::parse(&env).unwrap();
        valid.push(json!({
            "name": name, "purpose": key.purpose().as_str(), "version": key.version().get(),
            "algorithm": alg.id(), "nonce": hex::encode(parsed.header.nonce), "payloadKind": kind_name,
            "plaintext": hex::encode(pt), "context": ctx, "envelope": write::to_text(&env),
        }));
    };
    let gcm = Algorithm::Aes256Gcm;
    let det = Algorithm::Aes256GcmSivDeterministic;
    add(
        "text, no context",
        k("userData", 1),
        gcm,
        [0; 12],
        "text",
        b"123-45-6789",
        BTreeMap::new(),
    );
    add(
        "text with context",
        k("userData", 1),
        gcm,
        [1; 12],
        "text",
        b"4532123456789012",
        BTreeMap::from([("recordId", "r-1"), ("field", "cardNumber")]),
    );
    add(
        "json number",
        k("userData", 2),
        gcm,
        [2; 12],
        "json",
        b"42.5",
        BTreeMap::new(),
    );
    add(
        "bytes, empty",
        k("userData", 2),
        gcm,
        [3; 12],
        "bytes",
        b"",
        BTreeMap::new(),
    );
    add(
        "bytes, 300",
        k("financialData", 7),
        gcm,
        [4; 12],
        "bytes",
        &(0..=255u8).chain(0..44).collect::<Vec<_>>(),
        BTreeMap::from([("tenant", "acme")]),
    );
    add(
        "deterministic text",
        k("userData", 1),
        det,
        [0; 12],
        "text",
        b"user@example.com",
        BTreeMap::from([("field", "email")]),
    );
    add(
        "deterministic, other context",
        k("userData", 1),
        det,
        [0; 12],
        "text",
        b"user@example.com",
        BTreeMap::from([("field", "backupEmail")]),
    );

    let base = valid[1]["envelope"].as_str().unwrap().to_owned();
    let base_ctx = valid[1]["context"].clone();
    let det_env = valid[5]["envelope"].as_str().unwrap().to_owned();
    let det_ctx = valid[5]["context"].clone();
    let n = read::from_text(&base).unwrap().len();
    let hlen = 3 + "userData".len() + 4 + 12;
    let mut invalid = Vec::new();
    let mut bad = |name: &str, env: String, ctx: &Value| {
        invalid.push(json!({"name": name, "envelope": env, "context": ctx}))
    };
    bad(
        "wrong tag (last byte flipped)",
        b64_mutate(&base, |b| *b.last_mut().unwrap() ^= 0x01),
        &base_ctx,
    );
    bad(
        "ciphertext bit flipped",
        b64_mutate(&base, |b| b[hlen] ^= 0x80),
        &base_ctx,
    );
    bad(
        "nonce bit flipped",
        b64_mutate(&base, |b| b[hlen - 1] ^= 0x01),
        &base_ctx,
    );
    bad(
        "truncated by one byte",
        b64_mutate(&base, |b| {
            b.pop();
        }),
        &base_ctx,
    );
    bad(
        "truncated to the header",
        b64_mutate(&base, |b| b.truncate(hlen)),
        &base_ctx,
    );
    bad(
        "truncated inside the header",
        b64_mutate(&base, |b| b.truncate(10)),
        &base_ctx,
    );
    bad(
        "extended by one byte",
        b64_mutate(&base, |b| b.push(0)),
        &base_ctx,
    );
    bad(
        "unknown format version",
        b64_mutate(&base, |b| b[0] = 0x02),
        &base_ctx,
    );
    bad(
        "unknown algorithm",
        b64_mutate(&base, |b| b[1] = 0x09),
        &base_ctx,
    );
    bad(
        "algorithm swapped to deterministic",
        b64_mutate(&base, |b| b[1] = 0x02),
        &base_ctx,
    );
    bad(
        "purpose length too long",
        b64_mutate(&base, |b| b[2] = 0xFF),
        &base_ctx,
    );
    bad(
        "wrong purpose (same key bytes)",
        b64_mutate(&base, |b| b[3 + 7] = b'b'),
        &base_ctx,
    );
    bad(
        "wrong key version",
        b64_mutate(&base, |b| b[3 + 8 + 3] = 2),
        &base_ctx,
    );
    bad(
        "key version zero",
        b64_mutate(&base, |b| b[3 + 8 + 3] = 0),
        &base_ctx,
    );
    bad(
        "unknown key",
        b64_mutate(&base, |b| b[3 + 8 + 3] = 9),
        &base_ctx,
    );
    bad(
        "wrong context value",
        base.clone(),
        &json!({"recordId": "r-2", "field": "cardNumber"}),
    );
    bad("missing context", base.clone(), &json!({}));
    bad(
        "extra context pair",
        base.clone(),
        &json!({"recordId": "r-1", "field": "cardNumber", "x": "y"}),
    );
    bad(
        "deterministic, wrong context",
        det_env.clone(),
        &json!({"field": "phone"}),
    );
    bad(
        "deterministic, tag flipped",
        b64_mutate(&det_env, |b| *b.last_mut().unwrap() ^= 0x40),
        &det_ctx,
    );
    bad(
        "missing prefix",
        base.trim_start_matches("kf1:").to_owned(),
        &base_ctx,
    );
    bad("other prefix", base.replacen("kf1:", "kf2:", 1), &base_ctx);
    bad(
        "standard base64 with padding",
        format!("{base}="),
        &base_ctx,
    );
    bad("not base64", "kf1:!!!!".into(), &json!({}));
    bad("empty", String::new(), &json!({}));
    assert!(n > hlen);
    let doc = json!({
        "description": "KeyFlow envelope format v1 test vectors; see docs/envelope-format.md. DEKs are hex; subkeys are derived with HKDF-SHA256 as specified.",
        "keys": key_list, "valid": valid, "invalid": invalid,
    });
    std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}
