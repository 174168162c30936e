//! Fuzzes field selectors and documents (`keyflow_fields`): `Selection::parse_list`,
//! selector matching, and `encrypt_fields` / `decrypt_fields` on arbitrary JSON, over
//! one in-memory keystore and service made once per process.
//!
//! Input: `selection list \n flags [document id] \n JSON document`. Flags (one byte,
//! bits): 1 auto-detect, 2 bind array indexes, 4 refuse sensitive authentication data,
//! 8 purpose `financialData` (else `userData`). The seed corpus shows the shape.
//!
//! Asserts, besides "never panics":
//! - every concrete path a selector matches prints as a selector that parses and
//!   matches that path again (reports and errors name paths a caller can reuse);
//! - a document without ciphertexts decrypts to itself, untouched;
//! - encryption round-trips: a document without ciphertexts or `_bidx` members,
//!   encrypted then decrypted (same binding and options), is the document with its
//!   sensitive authentication data stripped; and encrypting it again changes nothing.
#![no_main]

use std::sync::OnceLock;

use keyflow_fields::document::{enforce_sad_policy, BLIND_INDEX_SUFFIX};
use keyflow_fields::{
    decrypt_fields_with, encrypt_fields, Binding, DecryptOptions, EncryptOptions, SadPolicy,
    Selection, Selector,
};
use keyflow_kms::{EncryptionService, Purpose, ServiceConfig};
use keyflow_testkit::Env;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct World {
    rt: tokio::runtime::Runtime,
    service: EncryptionService,
    /// Holds the KEK file's temporary directory for the life of the process.
    _env: Env,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let env = Env::new();
        let service = rt.block_on(async {
            let service = env.service(ServiceConfig::default()).await;
            for p in ["userData", "financialData"] {
                let p = Purpose::new(p).unwrap_or_else(|e| panic!("{e}"));
                service
                    .keys()
                    .generate(&p)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            service
        });
        World {
            rt,
            service,
            _env: env,
        }
    })
}

/// True when some string value (any depth) has the ciphertext prefix, or some member
/// name ends with the blind-index suffix: documents the round trip cannot promise.
fn has_ciphertext_or_index(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("kf1:"),
        Value::Array(items) => items.iter().any(has_ciphertext_or_index),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.ends_with(BLIND_INDEX_SUFFIX) || has_ciphertext_or_index(v)),
        _ => false,
    }
}

fn check_paths(selection: &Selection, doc: &Value) {
    for spec in &selection.fields {
        for path in spec.selector.matches(doc) {
            let shown = path.to_string();
            let again: Selector = shown
                .parse()
                .unwrap_or_else(|e| panic!("path {shown:?} does not parse as a selector: {e}"));
            assert!(
                again.matches(doc).contains(&path),
                "selector {shown:?} does not match its own path"
            );
        }
    }
}

fn run(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(list), Some(flags), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(list) = std::str::from_utf8(list) else {
        return;
    };
    let Ok(selection) = Selection::parse_list(list) else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    check_paths(&selection, &doc);
    let (bits, doc_id) = flags.split_first().unwrap_or((&0, &[]));
    let selection = Selection {
        auto_detect: bits & 1 != 0,
        ..selection
    };
    let bind_array_index = bits & 2 != 0;
    let sad_policy = if bits & 4 != 0 {
        SadPolicy::Reject
    } else {
        SadPolicy::Strip
    };
    let purpose = if bits & 8 != 0 {
        "financialData"
    } else {
        "userData"
    };
    let Ok(purpose) = Purpose::new(purpose) else {
        return;
    };
    let binding = match std::str::from_utf8(doc_id) {
        Ok("") => Binding::default(),
        Ok(id) => Binding::doc(id),
        Err(_) => return,
    };
    let options = EncryptOptions {
        binding: binding.clone(),
        sad_policy,
        bind_array_index,
        ..EncryptOptions::default()
    };
    let dec = DecryptOptions {
        bind_array_index,
        ..DecryptOptions::default()
    };
    // Strict reads (plaintext refused where a ciphertext is required): only "no panic"
    // is asserted for them.
    let strict = DecryptOptions {
        require_ciphertext: true,
        ..dec.clone()
    };
    let w = world();
    let plain_doc = !has_ciphertext_or_index(&doc);
    let selectors = selection.selectors();
    w.rt.block_on(async {
        let _ =
            decrypt_fields_with(&w.service, doc.clone(), Some(&selectors), &binding, &strict).await;
        let decrypted =
            decrypt_fields_with(&w.service, doc.clone(), Some(&selectors), &binding, &dec).await;
        if plain_doc {
            let (same, report) =
                decrypted.unwrap_or_else(|e| panic!("nothing to decrypt, yet: {e}"));
            assert_eq!(
                same, doc,
                "decrypting a document without ciphertexts changed it"
            );
            assert!(report.decrypted.is_empty());
        }
        let Ok((stored, report)) =
            encrypt_fields(&w.service, doc.clone(), &selection, &purpose, &options).await
        else {
            return;
        };
        if !plain_doc {
            return;
        }
        let mut expected = doc.clone();
        let stripped = enforce_sad_policy(&mut expected, sad_policy)
            .unwrap_or_else(|e| panic!("encryption passed the policy, the check did not: {e}"));
        assert_eq!(stripped, report.stripped);
        let (back, dreport) = decrypt_fields_with(&w.service, stored.clone(), None, &binding, &dec)
            .await
            .unwrap_or_else(|e| panic!("an encrypted document does not decrypt: {e}"));
        // Exactly: numbers too come back to the same bit (serde_json's
        // `float_roundtrip`, finding F1).
        assert!(
            back == expected,
            "the round trip changed the document:\n{back}\n{expected}"
        );
        assert_eq!(dreport.decrypted.len(), report.encrypted.len());
        // Blind indexes included: a selection never picks the `_bidx` members a pass
        // wrote (finding F2).
        let (twice, report2) =
            encrypt_fields(&w.service, stored.clone(), &selection, &purpose, &options)
                .await
                .unwrap_or_else(|e| panic!("encrypting an encrypted document failed: {e}"));
        assert_eq!(
            twice, stored,
            "encrypting twice is not a no-op: {report2:?}"
        );
    });
}

fuzz_target!(|data: &[u8]| run(data));
