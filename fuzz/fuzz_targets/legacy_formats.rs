//! Fuzzes the parsers of the legacy Node.js system's formats (all untrusted input to
//! `keyflow legacy` and the transition reads): packages, field documents, key
//! documents (the keyring's source), backup JSON, the password envelope and the KEK
//! file (`master.kek`) built on it, and the typing of a decrypted value. Inputs that
//! parse are opened under a fixed key. Nothing may panic; nothing but data sealed under
//! the key may open.
#![no_main]

use keyflow_core::{KeyVersion, Purpose, SecretKey};
use keyflow_legacy::fields::legacy_fields;
use keyflow_legacy::package::typed_value;
use keyflow_legacy::{backup, envelope, keys, LegacyKek, LegacyKeyring, Package};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ring = LegacyKeyring::new();
    let (Ok(purpose), Ok(dek)) = (Purpose::new("userData"), SecretKey::from_slice(&[0x42; 32]))
    else {
        return;
    };
    let _ = ring.insert("k", purpose, KeyVersion::FIRST, &dek);
    if let Ok(p) = Package::from_json(data) {
        let _ = ring.open_package(&p);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = backup::parse(data);
        assert_eq!(typed_value(data), None, "non-UTF-8 typed as text");
        return;
    };
    if let Ok(p) = Package::parse(text) {
        let _ = ring.open_package(&p);
    }
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) {
        for f in legacy_fields(&doc).unwrap_or_default() {
            let _ = ring.open_field(&f);
        }
    }
    let entries = keys::parse_key_documents(text, "fuzz");
    if let Ok(kek) = LegacyKek::from_bytes(&[0x11; 32]) {
        for k in entries.keys {
            let _ = kek.unwrap_dek(&k.encrypted_key);
        }
    }
    let _ = backup::parse(data);
    // One PBKDF2 iteration: the parser and the GCM open, not the KDF, are under test.
    let _ = envelope::open(text, b"pw", &[1], "backup");
    let _ = LegacyKek::open(text, b"pw", &[1]);
    let _ = typed_value(data);
});
