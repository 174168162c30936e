//! Fuzzes the streaming file format's parser of untrusted input: the header (length
//! probe, parse, incremental read), then — for inputs that parse — authentication under
//! a fixed key and the streaming and seekable readers. Nothing may panic; nothing but
//! a file made with the key may decrypt.
#![no_main]

use std::io::{Cursor, Read};

use keyflow_core::{DataKey, KeyVersion, Purpose, SecretKey};
use keyflow_stream::format::{header_len, ParsedHeader};
use keyflow_stream::{read_header, Decryptor, SeekableDecryptor};
use libfuzzer_sys::fuzz_target;

/// The key the header names: the test vectors' DEKs (so the seed corpus reaches the
/// segment readers), any other purpose/version a fixed DEK.
fn key(purpose: &str, version: u32) -> Option<DataKey> {
    let byte = match (purpose, version) {
        ("documents", 1) => 0x11,
        ("documents", 2) => 0x22,
        ("healthData", 1) => 0x33,
        _ => 0x42,
    };
    DataKey::derive(
        Purpose::new(purpose).ok()?,
        KeyVersion::new(version).ok()?,
        &SecretKey::from_slice(&[byte; 32]).ok()?,
    )
    .ok()
}

fuzz_target!(|data: &[u8]| {
    let _ = header_len(data);
    let _ = ParsedHeader::parse(data);
    let mut input = data;
    let Ok(header) = read_header(&mut input) else {
        return;
    };
    // Use a key matching whatever the header names, so the fuzzer reaches `open`.
    let Some(dk) = key(header.purpose().as_str(), header.key_version().get()) else {
        return;
    };
    if let Ok(opener) = header.open(&dk) {
        let mut out = Vec::new();
        let _ = Decryptor::new(input, opener).read_to_end(&mut out);
    }
    if let Ok(opener) = header.open(&dk) {
        if let Ok(mut s) = SeekableDecryptor::new(Cursor::new(data), opener) {
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        }
    }
});
