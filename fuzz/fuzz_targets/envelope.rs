//! Fuzzes the envelope parsers (`keyflow_core::envelope::read`): the binary form and
//! the `kf1:` text form, then decryption under a fixed key of whatever parses.
//!
//! Asserts, besides "never panics":
//! - a binary envelope that parses is exactly its parts: the header re-encodes to the
//!   bytes it was read from, and header ‖ ciphertext is the whole input;
//! - the text form is canonical: a text that decodes is the encoding of what it
//!   decodes to, and `from_text_into` agrees with `from_text`; any bytes round-trip;
//! - nothing opens unless it is exactly what the writer makes: an envelope that
//!   decrypts re-encrypts (same algorithm, nonce, kind, plaintext) to the same bytes;
//! - what the writer seals parses, opens to the plaintext, and stops opening once a
//!   bit is flipped (inputs starting with 0xFE; see [`SEAL`]).
#![no_main]

use keyflow_core::envelope::read::{from_text, from_text_into, parse};
use keyflow_core::envelope::write::{encode_header, to_text};
use keyflow_core::{Context, DataKey, KeyVersion, OsRng, PayloadKind, SecretKey};
use libfuzzer_sys::fuzz_target;

fn check_binary(bytes: &[u8]) {
    let Ok(env) = parse(bytes) else {
        return;
    };
    let mut header = Vec::new();
    encode_header(&env.header, &mut header);
    assert_eq!(header, env.header_bytes, "header does not re-encode");
    assert_eq!(env.header.encoded_len(), header.len());
    assert_eq!(
        header.len() + env.ciphertext_and_tag.len(),
        bytes.len(),
        "parse dropped or invented bytes"
    );
    // A fixed DEK under whatever purpose and version the header names: the seed
    // corpus holds envelopes made with it, so the fuzzer reaches the AEAD and past it.
    let Ok(secret) = SecretKey::from_slice(&[0x42; 32]) else {
        return;
    };
    let Ok(key) = DataKey::derive(env.header.purpose.clone(), env.header.key_version, &secret)
    else {
        return;
    };
    let context = Context::new();
    if let Ok(plain) = key.decrypt(&env, &context) {
        let again = key
            .hazmat_encrypt_with_nonce(
                env.header.algorithm,
                env.header.nonce,
                plain.kind(),
                plain.as_bytes(),
                &context,
            )
            .unwrap_or_default();
        assert_eq!(
            again, bytes,
            "an envelope opened that the writer does not make"
        );
    }
}

/// Inputs starting with [`SEAL`] are a plaintext to seal, not an envelope: `SEAL`,
/// flags (bit 0 deterministic, bits 1-2 payload kind), a byte to flip (its index
/// modulo the envelope length, 0 = none), the purpose's length and the purpose, then
/// the plaintext. The envelope must parse, open to the plaintext, and stop opening
/// once any bit is flipped — the fuzzer reaches the success paths without a
/// corpus of real envelopes.
const SEAL: u8 = 0xFE;

fn seal_and_open(input: &[u8]) {
    let [flags, flip, plen, rest @ ..] = input else {
        return;
    };
    let Some((purpose, plaintext)) = rest.split_at_checked(usize::from(*plen)) else {
        return;
    };
    let Some(purpose) = std::str::from_utf8(purpose)
        .ok()
        .and_then(|p| keyflow_core::Purpose::new(p).ok())
    else {
        return;
    };
    let kind = match (flags >> 1) & 3 {
        0 => PayloadKind::Bytes,
        1 => PayloadKind::Text,
        _ => PayloadKind::Json,
    };
    let (Ok(secret), Ok(version)) = (SecretKey::from_slice(&[0x42; 32]), KeyVersion::new(7)) else {
        return;
    };
    let Ok(key) = DataKey::derive(purpose, version, &secret) else {
        return;
    };
    let context = Context::new();
    let sealed = if flags & 1 == 1 {
        key.encrypt_deterministic(kind, plaintext, &context)
    } else {
        key.encrypt(kind, plaintext, &context, &OsRng)
    };
    let Ok(mut bytes) = sealed else {
        return;
    };
    check_binary(&bytes);
    let env = parse(&bytes).unwrap_or_else(|e| panic!("a sealed envelope does not parse: {e}"));
    let plain = key
        .decrypt(&env, &context)
        .unwrap_or_else(|e| panic!("a sealed envelope does not open: {e}"));
    assert_eq!(plain.as_bytes(), plaintext);
    assert_eq!(plain.kind(), kind);
    if *flip != 0 {
        let at = usize::from(*flip) % bytes.len();
        bytes[at] ^= 1 << (flip % 8);
        if let Ok(env) = parse(&bytes) {
            assert!(
                key.decrypt(&env, &context).is_err(),
                "opened after a flip at {at}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((&SEAL, rest)) = data.split_first() {
        seal_and_open(rest);
    }
    check_binary(data);
    // Any bytes survive the text form.
    let text = to_text(data);
    assert_eq!(from_text(&text).ok().as_deref(), Some(data));
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = from_text(s);
    let mut into = vec![0xAA; 3];
    let decoded_into = from_text_into(s, &mut into);
    assert_eq!(decoded.is_ok(), decoded_into.is_ok());
    if let Ok(bin) = decoded {
        assert_eq!(bin, into, "from_text_into disagrees with from_text");
        assert_eq!(to_text(&bin), s, "two texts for one envelope");
        check_binary(&bin);
    }
});
