//! Fuzzes the KEK file parser (`keyflow_core::kek::KekFile::parse`, what
//! `keyflow_kms::kek_provider` runs on the file's bytes) and the unwrapping of a DEK
//! version read from a keystore row (`Kek::unwrap_dek`).
//!
//! `unlock` is left out: a file that parses declares ≥ 100,000 PBKDF2 iterations, so
//! every unlock would cost the KDF; its length and base64 checks run before the KDF and
//! are covered by the unit tests.
//!
//! Asserts, besides "never panics":
//! - a file that parses writes back (`to_bytes`) to a file that parses to the same
//!   parameters, and writing is then stable (parse ∘ write is the identity);
//! - a wrapped DEK opens only if it is exactly 60 bytes and was made by `wrap_dek` under
//!   this KEK for this purpose and version — arbitrary bytes never unwrap.
#![no_main]

use keyflow_core::kek::{Kek, KekFile, WRAPPED_DEK_LEN};
use keyflow_core::{KeyVersion, OsRng, Purpose};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// One KEK per process (the OS CSPRNG): only the parser and the AEAD check are under test.
fn kek() -> &'static Kek {
    static KEK: OnceLock<Kek> = OnceLock::new();
    KEK.get_or_init(|| Kek::generate(&OsRng).unwrap_or_else(|e| panic!("KEK: {e}")))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = KekFile::parse(data) {
        let written = file
            .to_bytes()
            .unwrap_or_else(|e| panic!("a parsed KEK file does not write: {e}"));
        let again = KekFile::parse(&written)
            .unwrap_or_else(|e| panic!("a written KEK file does not parse: {e}"));
        assert_eq!(again.kek_id(), file.kek_id());
        assert_eq!(again.iterations(), file.iterations());
        assert_eq!(
            again.to_bytes().ok().as_deref(),
            Some(&written[..]),
            "writing a KEK file is not stable"
        );
    }
    // The first byte picks the version, the rest is the wrapped DEK.
    let Some((&v, wrapped)) = data.split_first() else {
        return;
    };
    let (Ok(purpose), Ok(version)) = (Purpose::new("userData"), KeyVersion::new(u32::from(v) + 1))
    else {
        return;
    };
    let opened = kek().unwrap_dek(&purpose, version, wrapped);
    assert!(
        opened.is_err() || wrapped.len() == WRAPPED_DEK_LEN,
        "a DEK unwrapped from {} bytes",
        wrapped.len()
    );
    // Without this process's KEK (random), nothing the fuzzer writes can authenticate.
    assert!(opened.is_err(), "arbitrary bytes unwrapped as a DEK");
});
