//! JSON documents end to end over a real service: selectors, auto-detection, modes,
//! AAD binding, idempotence, sensitive authentication data, blind-index search.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{env, purpose};
use keyflow_fields::blind::search_terms;
use keyflow_fields::{
    decrypt_fields, encrypt_fields, Binding, EncryptOptions, FieldsError, SadPolicy, Selection,
    Selector,
};
use keyflow_kms::{Context, EncryptionService, KmsError};
use serde_json::{json, Value};

fn opts(id: Option<&str>) -> EncryptOptions {
    EncryptOptions {
        binding: Binding {
            doc_id: id.map(str::to_owned),
            context: Context::new(),
        },
        sad_policy: SadPolicy::Strip,
        bind_array_index: false,
    }
}

fn is_ct(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("kf1:"))
}

async fn round_trip(s: &EncryptionService, doc: Value, sel: &str, id: Option<&str>) -> Value {
    let o = opts(id);
    let (enc, _) = encrypt_fields(
        s,
        doc,
        &Selection::parse_list(sel).unwrap(),
        &purpose("userData"),
        &o,
    )
    .await
    .unwrap();
    decrypt_fields(s, enc, None, &o.binding).await.unwrap().0
}

#[tokio::test]
async fn nested_objects_and_arrays() {
    let e = env().await;
    let doc = json!({
        "id": "u-1",
        "profile": {"address": {"street": "1 Main St", "zip": "12345"}, "nickname": "ada"},
        "cards": [
            {"cardNumber": "4111111111111111", "brand": "visa"},
            {"cardNumber": "5500005555555559", "brand": "mc"}
        ]
    });
    let sel = Selection::parse_list("profile.address,cards[*].cardNumber").unwrap();
    let o = opts(Some("u-1"));
    let (enc, report) = encrypt_fields(&e.service, doc.clone(), &sel, &purpose("userData"), &o)
        .await
        .unwrap();
    assert_eq!(
        report.encrypted,
        [
            "profile.address",
            "cards[0].cardNumber",
            "cards[1].cardNumber"
        ]
    );
    assert!(
        is_ct(&enc["profile"]["address"]),
        "an object is encrypted whole"
    );
    assert!(is_ct(&enc["cards"][0]["cardNumber"]));
    assert!(is_ct(&enc["cards"][1]["cardNumber"]));
    assert_eq!(enc["profile"]["nickname"], "ada");
    assert_eq!(enc["cards"][1]["brand"], "mc");
    assert_eq!(enc["id"], "u-1");

    let (back, rep) = decrypt_fields(&e.service, enc.clone(), None, &o.binding)
        .await
        .unwrap();
    assert_eq!(back, doc);
    assert_eq!(rep.decrypted.len(), 3);

    // With a selection, only the selected ciphertexts are decrypted.
    let only = vec!["cards[*].cardNumber".parse::<Selector>().unwrap()];
    let (partial, _) = decrypt_fields(&e.service, enc, Some(&only), &o.binding)
        .await
        .unwrap();
    assert!(is_ct(&partial["profile"]["address"]));
    assert_eq!(partial["cards"][0]["cardNumber"], "4111111111111111");
}

#[tokio::test]
async fn auto_detect_matches_the_four_naming_styles_at_any_depth() {
    let e = env().await;
    let doc = json!({
        "phoneNumber": "+14155552671",
        "contact": {"phone_number": "+14155552672"},
        "others": [{"phone-number": "+14155552673"}, {"PhoneNumber": "+14155552674"}],
        "SSN": "123-45-6789",
        "nickname": "ada",
        "api_key": "k",
        "iban": "DE89370400440532013000"
    });
    let (enc, report) = encrypt_fields(
        &e.service,
        doc.clone(),
        &Selection::auto_detect(),
        &purpose("userData"),
        &opts(None),
    )
    .await
    .unwrap();
    let mut got = report.encrypted.clone();
    got.sort();
    assert_eq!(
        got,
        [
            "SSN",
            "api_key",
            "contact.phone_number",
            "others[0].phone-number",
            "others[1].PhoneNumber",
            "phoneNumber"
        ]
    );
    assert_eq!(enc["nickname"], "ada");
    assert_eq!(enc["iban"], doc["iban"], "iban is not on userData's lists");

    // financialData has iban, not phone numbers.
    let (enc2, _) = encrypt_fields(
        &e.service,
        doc.clone(),
        &Selection::auto_detect(),
        &purpose("financialData"),
        &opts(None),
    )
    .await
    .unwrap();
    assert!(is_ct(&enc2["iban"]));
    assert_eq!(enc2["phoneNumber"], doc["phoneNumber"]);

    // A purpose without a list: an error, not a silent no-op.
    let err = encrypt_fields(
        &e.service,
        doc,
        &Selection::auto_detect(),
        &purpose("customPurpose"),
        &opts(None),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FieldsError::NoDetectionList(_)), "{err}");
}

#[tokio::test]
async fn types_survive() {
    let e = env().await;
    let doc = json!({
        "n": 42, "f": -1.5, "b": true, "o": {"k": [1, "x"]}, "a": [1, 2, 3],
        "s": "plain", "j": "{\"looks\": \"like json\"}", "big": 18446744073709551615u64,
        "nul": null
    });
    let back = round_trip(&e.service, doc.clone(), "n,f,b,o,a,s,j,big,nul", Some("d")).await;
    assert_eq!(back, doc);
    assert!(back["j"].is_string());
    assert!(back["nul"].is_null());
}

/// A wildcard with blind indexes, run twice: the second pass must not select the
/// `_bidx` members the first one wrote (found by the `fields` fuzz target).
#[tokio::test]
async fn a_wildcard_never_selects_the_blind_indexes_it_wrote() {
    let e = env().await;
    let doc = json!({"email": "a@example.com", "nested": {"name": "x", "name_bidx": "keep me"},
                     "orphan_bidx": "no sibling"});
    let sel = Selection::parse_list("*:blind_index").unwrap();
    let o = opts(Some("d1"));
    let p = purpose("userData");
    let (once, _) = encrypt_fields(&e.service, doc.clone(), &sel, &p, &o)
        .await
        .unwrap();
    let bidx = once["email_bidx"].clone();
    assert!(bidx.is_string(), "{once}");
    // `orphan_bidx` has no `orphan` beside it: it is ordinary data and was encrypted.
    assert_ne!(once["orphan_bidx"], json!("no sibling"));
    let (twice, r2) = encrypt_fields(&e.service, once.clone(), &sel, &p, &o)
        .await
        .unwrap();
    assert_eq!(once, twice, "the second pass changed the document");
    assert!(twice.get("email_bidx_bidx").is_none());
    assert!(r2.encrypted.is_empty(), "{:?}", r2.encrypted);
}

#[tokio::test]
async fn encrypting_twice_is_a_no_op() {
    let e = env().await;
    let doc = json!({"ssn": "123-45-6789", "email": "a@example.com", "x": 1});
    let sel = Selection::parse_list("ssn,email:blind_index").unwrap();
    let o = opts(Some("d1"));
    let p = purpose("userData");
    let (once, r1) = encrypt_fields(&e.service, doc.clone(), &sel, &p, &o)
        .await
        .unwrap();
    let (twice, r2) = encrypt_fields(&e.service, once.clone(), &sel, &p, &o)
        .await
        .unwrap();
    assert_eq!(once, twice);
    assert_eq!(r1.encrypted, ["ssn", "email"]);
    assert!(r2.encrypted.is_empty());
    assert_eq!(r2.already_encrypted, ["ssn", "email"]);
    // Auto-detection over an encrypted document changes nothing either.
    let (thrice, _) = encrypt_fields(&e.service, twice, &Selection::auto_detect(), &p, &o)
        .await
        .unwrap();
    assert_eq!(once, thrice);
    assert_eq!(
        decrypt_fields(&e.service, thrice, None, &o.binding)
            .await
            .unwrap()
            .0,
        doc
    );
}

fn decrypt_error_path(err: &FieldsError) -> &str {
    match err {
        FieldsError::Decrypt { path, source } => {
            assert!(matches!(source, KmsError::DecryptionFailed), "{source}");
            path
        }
        other => panic!("expected a decrypt error, got {other}"),
    }
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_field_or_document_fails() {
    let e = env().await;
    let p = purpose("userData");
    let sel = Selection::parse_list("ssn,taxId,cards[*].pan").unwrap();
    let doc =
        json!({"ssn": "123-45-6789", "taxId": "98-7654321", "cards": [{"pan": "1"}, {"pan": "2"}]});
    let (a, _) = encrypt_fields(&e.service, doc.clone(), &sel, &p, &opts(Some("doc-a")))
        .await
        .unwrap();
    let (b, _) = encrypt_fields(&e.service, doc, &sel, &p, &opts(Some("doc-b")))
        .await
        .unwrap();

    // Field swap inside one document.
    let mut swapped = a.clone();
    swapped["taxId"] = a["ssn"].clone();
    let err = decrypt_fields(&e.service, swapped, None, &Binding::doc("doc-a"))
        .await
        .unwrap_err();
    assert_eq!(decrypt_error_path(&err), "taxId");
    assert!(err.to_string().contains("taxId"), "{err}");

    // Same field, another document.
    let mut moved = b.clone();
    moved["ssn"] = a["ssn"].clone();
    let err = decrypt_fields(&e.service, moved, None, &Binding::doc("doc-b"))
        .await
        .unwrap_err();
    assert_eq!(decrypt_error_path(&err), "ssn");

    // Without the document id, or with the wrong one.
    let err = decrypt_fields(&e.service, a.clone(), None, &Binding::default())
        .await
        .unwrap_err();
    decrypt_error_path(&err);
    let err = decrypt_fields(&e.service, a.clone(), None, &Binding::doc("doc-b"))
        .await
        .unwrap_err();
    decrypt_error_path(&err);

    // A caller context is bound too.
    let ctx = Binding {
        doc_id: Some("doc-a".into()),
        context: Context::from_pairs([("tenant", "t1")]).unwrap(),
    };
    let err = decrypt_fields(&e.service, a.clone(), None, &ctx)
        .await
        .unwrap_err();
    decrypt_error_path(&err);

    // Elements of one array share a label: reordering an array keeps it decryptable.
    let mut reordered = a.clone();
    reordered["cards"].as_array_mut().unwrap().reverse();
    let back = decrypt_fields(&e.service, reordered, None, &Binding::doc("doc-a"))
        .await
        .unwrap()
        .0;
    assert_eq!(back["cards"], json!([{"pan": "2"}, {"pan": "1"}]));
}

#[tokio::test]
async fn a_failed_decrypt_names_the_path_and_writes_no_placeholder() {
    let e = env().await;
    let o = opts(Some("d"));
    let (enc, _) = encrypt_fields(
        &e.service,
        json!({"a": "x", "deep": {"list": [{"secret": "y"}]}}),
        &Selection::parse_list("a,deep.list[*].secret").unwrap(),
        &purpose("userData"),
        &o,
    )
    .await
    .unwrap();
    let mut tampered = enc.clone();
    let ct = tampered["deep"]["list"][0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Flip one character in the middle of the base64 body.
    let mut chars: Vec<char> = ct.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    tampered["deep"]["list"][0]["secret"] = Value::String(chars.into_iter().collect());
    let err = decrypt_fields(&e.service, tampered, None, &o.binding)
        .await
        .unwrap_err();
    assert_eq!(decrypt_error_path(&err), "deep.list[0].secret");

    // A string that only claims to be a ciphertext is an error too, never skipped.
    let mut fake = enc;
    fake["a"] = json!("kf1:not-an-envelope");
    let err = decrypt_fields(&e.service, fake, None, &o.binding)
        .await
        .unwrap_err();
    assert_eq!(decrypt_error_path(&err), "a");
}

#[tokio::test]
async fn sensitive_authentication_data_is_stripped_or_refused() {
    let e = env().await;
    let doc = json!({
        "cardNumber": "4111111111111111",
        "cvv": "123",
        "payment": {"CVC": "999", "security_code": "1", "track2": ";4111=2512?", "pin": "0000"},
        "history": [{"cvv2": "555", "ok": true}]
    });
    let p = purpose("financialData");
    // Strip (default), even when the caller selected `cvv` explicitly.
    let (enc, report) = encrypt_fields(
        &e.service,
        doc.clone(),
        &Selection {
            auto_detect: true,
            ..Selection::parse_list("cvv").unwrap()
        },
        &p,
        &opts(None),
    )
    .await
    .unwrap();
    let mut stripped = report.stripped.clone();
    stripped.sort();
    assert_eq!(
        stripped,
        [
            "cvv",
            "history[0].cvv2",
            "payment.CVC",
            "payment.pin",
            "payment.security_code",
            "payment.track2"
        ]
    );
    assert!(enc.get("cvv").is_none());
    assert_eq!(enc["payment"], json!({}));
    assert_eq!(enc["history"][0], json!({"ok": true}));
    assert!(is_ct(&enc["cardNumber"]));
    let text = enc.to_string();
    for secret in ["\"123\"", "999", ";4111", "555", "0000"] {
        assert!(!text.contains(secret), "{secret} survived in {text}");
    }

    // Reject: an error naming the fields (and never their values).
    let err = encrypt_fields(
        &e.service,
        doc,
        &Selection::auto_detect(),
        &p,
        &EncryptOptions {
            sad_policy: SadPolicy::Reject,
            ..opts(None)
        },
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        FieldsError::SensitiveAuthenticationData { .. }
    ));
    assert!(msg.contains("payment.CVC") && msg.contains("cvv"), "{msg}");
    assert!(!msg.contains("123") && !msg.contains("999"), "{msg}");
}

#[tokio::test]
async fn modes_deterministic_and_blind_index() {
    let e = env().await;
    let p = purpose("userData");
    let sel = Selection::parse_list("taxId:deterministic,email:blind_index/16").unwrap();
    let o = opts(None);
    let doc1 = json!({"taxId": "98-7654321", "email": "a@example.com"});
    let doc2 =
        json!({"taxId": "98-7654321", "email": "a@example.com", "other_email": "a@example.com"});
    let (e1, r1) = encrypt_fields(&e.service, doc1.clone(), &sel, &p, &o)
        .await
        .unwrap();
    let (e2, _) = encrypt_fields(&e.service, doc2, &sel, &p, &o)
        .await
        .unwrap();
    assert_eq!(
        e1["taxId"], e2["taxId"],
        "deterministic: equal values, equal ciphertexts"
    );
    assert_ne!(
        e1["email"], e2["email"],
        "the value itself stays randomized"
    );
    assert_eq!(e1["email_bidx"], e2["email_bidx"], "the index is equal");
    assert_eq!(
        e1["email_bidx"].as_str().unwrap().len(),
        4,
        "16 bits = 4 hex digits"
    );
    assert_eq!(r1.blind_indexes, ["email_bidx"]);

    // Search: the query's terms include the stored index, before and after a rotation.
    let terms = search_terms(&e.service, &p, "email", &json!("a@example.com"), 16)
        .await
        .unwrap();
    assert_eq!(terms, [e1["email_bidx"].as_str().unwrap()]);
    e.service.keys().rotate(&p).await.unwrap();
    let (e3, _) = encrypt_fields(&e.service, doc1.clone(), &sel, &p, &o)
        .await
        .unwrap();
    let terms = search_terms(&e.service, &p, "email", &json!("a@example.com"), 16)
        .await
        .unwrap();
    assert!(terms.contains(&e1["email_bidx"].as_str().unwrap().to_owned()));
    assert!(terms.contains(&e3["email_bidx"].as_str().unwrap().to_owned()));
    assert_eq!(terms.len(), 2, "one per live version");

    // Decrypting removes the index members again.
    let (back, _) = decrypt_fields(&e.service, e1, None, &o.binding)
        .await
        .unwrap();
    assert_eq!(back, doc1);

    // A blind index needs an object member to sit beside.
    let err = encrypt_fields(
        &e.service,
        json!({"tags": ["a"]}),
        &Selection::parse_list("tags[*]:blind_index").unwrap(),
        &p,
        &o,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FieldsError::BlindIndexPlacement(_)), "{err}");
}

#[tokio::test]
async fn reserved_context_keys_are_refused() {
    let e = env().await;
    let o = EncryptOptions {
        binding: Binding {
            doc_id: None,
            context: Context::from_pairs([("kf.field", "ssn")]).unwrap(),
        },
        ..EncryptOptions::default()
    };
    let err = encrypt_fields(
        &e.service,
        json!({"ssn": "1"}),
        &Selection::parse_list("ssn").unwrap(),
        &purpose("userData"),
        &o,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FieldsError::InvalidOption(_)), "{err}");
}

#[tokio::test]
async fn outer_selection_wins_over_inner_and_duplicates_are_encrypted_once() {
    let e = env().await;
    let doc = json!({"profile": {"email": "a@example.com", "address": "x"}});
    let (enc, report) = encrypt_fields(
        &e.service,
        doc.clone(),
        &Selection {
            auto_detect: true,
            ..Selection::parse_list("profile.email,profile,profile").unwrap()
        },
        &purpose("userData"),
        &opts(Some("d")),
    )
    .await
    .unwrap();
    assert_eq!(report.encrypted, ["profile"]);
    assert!(is_ct(&enc["profile"]));
    assert_eq!(
        round_trip(&e.service, doc.clone(), "profile", None).await,
        doc
    );
}

mod round_trip_property {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        "[a-z]{1,6}".prop_filter("sensitive authentication data is stripped", |k| {
            !keyflow_fields::names::is_sensitive_authentication_data(k)
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9 {}\"]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any document: selected values (objects' members and arrays' elements one
        /// level down) encrypt, the document decrypts back to exactly the input, and a
        /// second encryption is a no-op.
        #[test]
        fn any_document_round_trips(
            doc in proptest::collection::btree_map(key(), json_value(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            id in "[a-z0-9-]{1,12}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let e = env().await;
                let sel = Selection::parse_list("*.*,*[*]").unwrap();
                let o = opts(Some(&id));
                let p = purpose("userData");
                let (enc, _) = encrypt_fields(&e.service, doc.clone(), &sel, &p, &o).await.unwrap();
                let (again, r) = encrypt_fields(&e.service, enc.clone(), &sel, &p, &o).await.unwrap();
                assert_eq!(again, enc);
                assert!(r.encrypted.is_empty());
                let (back, _) = decrypt_fields(&e.service, enc, None, &o.binding).await.unwrap();
                assert_eq!(back, doc);
            });
        }
    }
}

/// Elements of one array share a label, so by default two of them can trade places
/// unnoticed (documented); with `bind_array_index` the swap is refused, naming the path.
#[tokio::test]
async fn array_swaps_are_refused_when_indexes_are_bound() {
    use keyflow_fields::{decrypt_fields_with, DecryptOptions};
    let e = env().await;
    let doc = json!({ "cards": [ { "pan": "4111111111111111" }, { "pan": "5500005555555559" } ] });
    let sel = Selection::parse_list("cards[*].pan").unwrap();
    let swap = |v: &Value| {
        let mut s = v.clone();
        s["cards"][0]["pan"] = v["cards"][1]["pan"].clone();
        s["cards"][1]["pan"] = v["cards"][0]["pan"].clone();
        s
    };
    let bound = EncryptOptions {
        bind_array_index: true,
        ..opts(Some("doc-a"))
    };
    let (enc, _) = encrypt_fields(&e.service, doc.clone(), &sel, &purpose("userData"), &bound)
        .await
        .unwrap();
    let on = DecryptOptions {
        bind_array_index: true,
        ..DecryptOptions::default()
    };
    let b = Binding::doc("doc-a");
    let (back, _) = decrypt_fields_with(&e.service, enc.clone(), None, &b, &on)
        .await
        .unwrap();
    assert_eq!(back, doc);
    let err = decrypt_fields_with(&e.service, swap(&enc), None, &b, &on)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FieldsError::Decrypt { path, .. } if path == "cards[0].pan"),
        "{err}"
    );
    // The setting is part of the binding: without it the bound values do not decrypt.
    assert!(decrypt_fields(&e.service, enc, None, &b).await.is_err());

    // Default (indexes dropped): the swap goes through, as documented.
    let (plain_enc, _) = encrypt_fields(
        &e.service,
        doc.clone(),
        &sel,
        &purpose("userData"),
        &opts(Some("doc-a")),
    )
    .await
    .unwrap();
    let (swapped_back, _) = decrypt_fields(&e.service, swap(&plain_enc), None, &b)
        .await
        .unwrap();
    assert_eq!(swapped_back["cards"][0]["pan"], doc["cards"][1]["pan"]);
}

/// ENCRYPTION_STRICT_MODE on read (`require_ciphertext`): plaintext where a ciphertext
/// is required is refused, naming paths only; without it, it passes through.
#[tokio::test]
async fn strict_reads_refuse_plaintext_where_a_ciphertext_is_required() {
    use keyflow_fields::{decrypt_fields_with, plaintext_where_required, DecryptOptions};
    let e = env().await;
    let o = opts(Some("d-1"));
    let (enc, _) = encrypt_fields(
        &e.service,
        json!({ "ssn": "123-45-6789", "profile": { "email": "a@b.c" }, "nick": "ada" }),
        &Selection::auto_detect(),
        &purpose("userData"),
        &o,
    )
    .await
    .unwrap();
    assert!(plaintext_where_required(&enc, None).is_empty());
    let strict = DecryptOptions {
        require_ciphertext: true,
        ..DecryptOptions::default()
    };
    let (back, _) = decrypt_fields_with(&e.service, enc.clone(), None, &o.binding, &strict)
        .await
        .unwrap();
    assert_eq!(back["profile"]["email"], "a@b.c");

    let mut leaked = enc.clone();
    leaked["profile"]["email"] = json!("a@b.c");
    leaked["ssn"] = json!(123456789);
    let err = decrypt_fields_with(&e.service, leaked.clone(), None, &o.binding, &strict)
        .await
        .unwrap_err();
    match &err {
        FieldsError::PlaintextRefused { paths } => {
            assert_eq!(paths, &["profile.email".to_owned(), "ssn".to_owned()])
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("a@b.c"), "{err}");
    // Listed fields decide when given (a non-sensitive name included); null passes.
    let sel = ["nick".parse::<Selector>().unwrap()];
    let paths = plaintext_where_required(&json!({ "nick": "ada", "ssn": "x" }), Some(&sel));
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].to_string(), "nick");
    assert!(plaintext_where_required(&json!({ "nick": null }), Some(&sel)).is_empty());
    // Not strict: passed through as before.
    let (through, _) = decrypt_fields(&e.service, leaked, None, &o.binding)
        .await
        .unwrap();
    assert_eq!(through["profile"]["email"], "a@b.c");
}
