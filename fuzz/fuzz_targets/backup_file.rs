//! Fuzzes the backup file format (`keyflow_kms::backup::format`): the header read
//! without the password, and the body parser that runs after decryption.
//!
//! The body is reached directly through `decode_body`: `open` would spend ≥ 100,000
//! PBKDF2 iterations per input before the parser sees a byte, and whoever holds the
//! password can seal any body, so the body is untrusted input too.
//!
//! Asserts, besides "never panics":
//! - a header that reads is consistent with the input (its body length is the rest);
//! - a body that parses is canonical: encoding the parsed contents gives back exactly
//!   the input (no byte ignored, nothing parsed into something the writer would not
//!   write), and the parsed versions keep the invariants `open` promises.
#![no_main]

use std::collections::BTreeSet;

use keyflow_kms::backup::format::{decode_body, encode_body, read_header, HEADER_LEN};
use keyflow_kms::model::KeyStatus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = read_header(data) {
        assert_eq!(h.body_len as usize + HEADER_LEN, data.len());
        assert_eq!(h.format_version, 1);
    }
    let Ok(contents) = decode_body(data) else {
        return;
    };
    let mut seen = BTreeSet::new();
    let mut active = BTreeSet::new();
    for v in &contents.versions {
        assert!(v.status_changed_at >= v.created_at);
        assert_eq!(v.status == KeyStatus::Destroyed, v.material.is_none());
        assert!(
            seen.insert((v.purpose.clone(), v.version)),
            "duplicate version"
        );
        if v.status == KeyStatus::Active {
            assert!(active.insert(v.purpose.clone()), "two active versions");
        }
    }
    match encode_body(&contents) {
        Ok(again) => assert_eq!(&again[..], data, "the body parser is not canonical"),
        Err(e) => panic!("a parsed backup body does not encode again: {e}"),
    }
});
