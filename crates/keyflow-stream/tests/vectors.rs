//! The committed file-format test vectors (`tests/vectors/file-v1.json`, specified in
//! `docs/file-format.md`): every valid vector decrypts to its plaintext and metadata
//! and re-encrypts to the identical bytes (from the same salt and nonce prefix); every
//! invalid vector is refused with the expected error.
//!
//! `KEYFLOW_REGENERATE_VECTORS=1 cargo test -p keyflow-stream --test vectors -- --ignored`
//! rewrites the file (only when a vector is added; the format is frozen).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::io::Cursor;

use keyflow_core::{DataKey, KeyVersion, Purpose, SecretKey};
use keyflow_stream::{
    decrypt, decrypt_slice, encrypt, encrypt_slice, read_header, Metadata, Sealer,
    SeekableDecryptor, StreamError,
};
use serde_json::{json, Value};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/file-v1.json");

fn data_key(k: &Value) -> DataKey {
    DataKey::derive(
        Purpose::new(k["purpose"].as_str().unwrap()).unwrap(),
        KeyVersion::new(k["version"].as_u64().unwrap() as u32).unwrap(),
        &SecretKey::from_slice(&hex::decode(k["dek"].as_str().unwrap()).unwrap()).unwrap(),
    )
    .unwrap()
}

fn metadata(v: &Value) -> Metadata {
    Metadata {
        name: v["name"].as_str().map(str::to_owned),
        mime_type: v["mimeType"].as_str().map(str::to_owned),
        size: v["size"].as_u64(),
    }
}

/// Decrypts like the CLI does: read the header, pick the key it names, open, decrypt.
fn open(keys: &[DataKey], file: &[u8]) -> Result<(Metadata, Vec<u8>), StreamError> {
    let mut input = file;
    let h = read_header(&mut input)?;
    let key = keys
        .iter()
        .find(|k| k.purpose() == h.purpose() && k.version() == h.key_version())
        .ok_or(StreamError::DecryptionFailed)?;
    let opener = h.open(key)?;
    let meta = opener.metadata().clone();
    let mut out = Vec::new();
    decrypt(input, &mut out, opener)?;
    Ok((meta, out))
}

/// The same through the seekable reader (which checks the length up front).
fn open_seekable(keys: &[DataKey], file: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut input = file;
    let h = read_header(&mut input)?;
    let key = keys
        .iter()
        .find(|k| k.purpose() == h.purpose() && k.version() == h.key_version())
        .ok_or(StreamError::DecryptionFailed)?;
    let mut s = SeekableDecryptor::new(Cursor::new(file), h.open(key)?)?;
    let size = s.size() as usize;
    s.read_range(0, size)
}

/// The same through the slice entry point (out-of-place opening).
fn open_slice(keys: &[DataKey], file: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut input = file;
    let h = read_header(&mut input)?;
    let key = keys
        .iter()
        .find(|k| k.purpose() == h.purpose() && k.version() == h.key_version())
        .ok_or(StreamError::DecryptionFailed)?;
    let mut out = Vec::new();
    decrypt_slice(input, &mut out, h.open(key)?)?;
    Ok(out)
}

fn code(e: &StreamError) -> &'static str {
    match e {
        StreamError::InvalidHeader => "invalid_header",
        StreamError::DecryptionFailed => "decryption_failed",
        _ => "other",
    }
}

#[test]
fn committed_vectors() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let keys: Vec<DataKey> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(data_key)
        .collect();
    let valid = doc["valid"].as_array().unwrap();
    let invalid = doc["invalid"].as_array().unwrap();
    assert!(valid.len() >= 6 && invalid.len() >= 15);
    for v in valid {
        let name = v["name"].as_str().unwrap();
        let file = hex::decode(v["file"].as_str().unwrap()).unwrap();
        let plain = hex::decode(v["plaintext"].as_str().unwrap()).unwrap();
        let (meta, out) = open(&keys, &file).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out, plain, "{name}");
        assert_eq!(meta, metadata(&v["metadata"]), "{name}");
        assert_eq!(
            open_seekable(&keys, &file).unwrap(),
            plain,
            "{name} (seekable)"
        );
        // The writer reproduces the exact bytes from the same inputs.
        let key = &keys[v["key"].as_u64().unwrap() as usize];
        let sealer = || {
            Sealer::hazmat_from_parts(
                key,
                &meta,
                v["segmentSize"].as_u64().unwrap() as u32,
                hex::decode(v["salt"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
                hex::decode(v["noncePrefix"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(open_slice(&keys, &file).unwrap(), plain, "{name} (slice)");
        let mut again = Vec::new();
        encrypt(&mut &plain[..], &mut again, sealer()).unwrap();
        assert_eq!(
            hex::encode(&again),
            v["file"].as_str().unwrap(),
            "{name}: writer drifted"
        );
        let mut sliced = Vec::new();
        encrypt_slice(&plain, &mut sliced, sealer()).unwrap();
        assert_eq!(
            hex::encode(&sliced),
            v["file"].as_str().unwrap(),
            "{name}: slice writer drifted"
        );
    }
    for v in invalid {
        let name = v["name"].as_str().unwrap();
        let file = hex::decode(v["file"].as_str().unwrap()).unwrap();
        let want = v["error"].as_str().unwrap();
        match open(&keys, &file) {
            Ok(_) => panic!("invalid vector accepted: {name}"),
            Err(e) => assert_eq!(code(&e), want, "{name}"),
        }
        assert!(open_seekable(&keys, &file).is_err(), "{name} (seekable)");
        assert!(open_slice(&keys, &file).is_err(), "{name} (slice)");
    }
}

// ---- generation -------------------------------------------------------------------

struct Segments {
    header: Vec<u8>,
    segs: Vec<Vec<u8>>,
}

fn split(file: &[u8], segment: usize) -> Segments {
    let h = read_header(&mut &file[..]).unwrap().len();
    Segments {
        header: file[..h].to_vec(),
        segs: file[h..].chunks(segment + 16).map(<[u8]>::to_vec).collect(),
    }
}

fn join(header: &[u8], segs: &[&Vec<u8>]) -> Vec<u8> {
    let mut out = header.to_vec();
    for s in segs {
        out.extend_from_slice(s);
    }
    out
}

#[test]
#[ignore = "rewrites tests/vectors/file-v1.json; run with KEYFLOW_REGENERATE_VECTORS=1"]
fn regenerate() {
    if std::env::var_os("KEYFLOW_REGENERATE_VECTORS").is_none() {
        return;
    }
    let key_docs = vec![
        json!({"purpose": "documents", "version": 1, "dek": hex::encode([0x11u8; 32])}),
        json!({"purpose": "documents", "version": 2, "dek": hex::encode([0x22u8; 32])}),
        json!({"purpose": "healthData", "version": 1, "dek": hex::encode([0x33u8; 32])}),
    ];
    let keys: Vec<DataKey> = key_docs.iter().map(data_key).collect();
    let pattern = |n: usize| (0..n).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>();
    let salt = |b: u8| [b; 32];
    let prefix = |b: u8| [b; 7];
    let cases: Vec<(&str, usize, Metadata, u32, Vec<u8>)> = vec![
        (
            "empty file",
            0,
            Metadata {
                name: Some("empty.txt".into()),
                mime_type: Some("text/plain".into()),
                size: Some(0),
            },
            32,
            vec![],
        ),
        (
            "one byte",
            0,
            Metadata {
                name: Some("a".into()),
                mime_type: None,
                size: Some(1),
            },
            32,
            b"A".to_vec(),
        ),
        (
            "exactly one segment",
            0,
            Metadata {
                name: Some("one.bin".into()),
                mime_type: Some("application/octet-stream".into()),
                size: Some(32),
            },
            32,
            pattern(32),
        ),
        (
            "one segment plus one byte",
            0,
            Metadata {
                name: None,
                mime_type: None,
                size: Some(33),
            },
            32,
            pattern(33),
        ),
        (
            "three and a half segments, size unknown (piped)",
            1,
            Metadata {
                name: Some("rapport été.pdf".into()),
                mime_type: Some("application/pdf".into()),
                size: None,
            },
            32,
            pattern(112),
        ),
        (
            "no metadata at all",
            2,
            Metadata::default(),
            16,
            pattern(50),
        ),
        (
            "default segment size",
            0,
            Metadata {
                name: Some("x.txt".into()),
                mime_type: Some("text/plain; charset=utf-8".into()),
                size: Some(5),
            },
            65536,
            b"hello".to_vec(),
        ),
    ];
    let mut valid = Vec::new();
    let mut files = Vec::new();
    for (i, (name, k, meta, seg, plain)) in cases.iter().enumerate() {
        let (s, p) = (salt(0xA0 + i as u8), prefix(0xB0 + i as u8));
        let sealer = Sealer::hazmat_from_parts(&keys[*k], meta, *seg, s, p).unwrap();
        let mut file = Vec::new();
        encrypt(&mut &plain[..], &mut file, sealer).unwrap();
        valid.push(json!({
            "name": name, "key": k, "segmentSize": seg, "salt": hex::encode(s),
            "noncePrefix": hex::encode(p),
            "metadata": {"name": meta.name, "mimeType": meta.mime_type, "size": meta.size},
            "plaintext": hex::encode(plain), "file": hex::encode(&file),
        }));
        files.push(file);
    }
    // Mutations of "three and a half segments" (4 segments of 32 bytes + 16 tag).
    let base = &files[4];
    let Segments { header, segs } = split(base, 32);
    assert_eq!(segs.len(), 4);
    let h = header.len();
    let flip = |at: usize| {
        let mut t = base.clone();
        t[at] ^= 0x01;
        t
    };
    let plen = "documents".len();
    let mut wrong_version = base.clone();
    wrong_version[10 + plen + 3] = 3; // names version 3, which does not exist
    let mut v2_label = base.clone();
    v2_label[10 + plen + 3] = 1; // names version 1: a real key, but not this file's
    let mut bad_magic = base.clone();
    bad_magic[0] = b'K';
    let mut bad_format = base.clone();
    bad_format[8] = 2;
    let mut seg_too_small = base.clone();
    seg_too_small[10 + plen + 4..10 + plen + 8].copy_from_slice(&15u32.to_be_bytes());
    let mut meta_len_short = base.clone();
    let mlen_at = 10 + plen + 4 + 4 + 32 + 7;
    meta_len_short[mlen_at..mlen_at + 2].copy_from_slice(&4u16.to_be_bytes());
    let other_file = {
        let sealer =
            Sealer::hazmat_from_parts(&keys[1], &cases[4].2, 32, salt(0xCC), prefix(0xDD)).unwrap();
        let mut f = Vec::new();
        encrypt(&mut &cases[4].4[..], &mut f, sealer).unwrap();
        f
    };
    let other = split(&other_file, 32);
    let invalid: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty input", vec![], "invalid_header"),
        ("bad magic", bad_magic, "invalid_header"),
        ("unsupported format version", bad_format, "invalid_header"),
        (
            "segment size below the minimum",
            seg_too_small,
            "invalid_header",
        ),
        (
            "metadata length below the minimum",
            meta_len_short,
            "invalid_header",
        ),
        (
            "truncated inside the header",
            base[..h - 5].to_vec(),
            "invalid_header",
        ),
        (
            "truncated to the header",
            header.clone(),
            "decryption_failed",
        ),
        (
            "truncated inside a segment",
            base[..h + 40].to_vec(),
            "decryption_failed",
        ),
        (
            "truncated at a segment boundary",
            join(&header, &[&segs[0], &segs[1]]),
            "decryption_failed",
        ),
        (
            "truncated inside the last tag",
            base[..base.len() - 1].to_vec(),
            "decryption_failed",
        ),
        (
            "segment dropped",
            join(&header, &[&segs[0], &segs[2], &segs[3]]),
            "decryption_failed",
        ),
        (
            "segments swapped",
            join(&header, &[&segs[1], &segs[0], &segs[2], &segs[3]]),
            "decryption_failed",
        ),
        (
            "segment duplicated",
            join(&header, &[&segs[0], &segs[1], &segs[1], &segs[2], &segs[3]]),
            "decryption_failed",
        ),
        (
            "last segment duplicated",
            join(&header, &[&segs[0], &segs[1], &segs[2], &segs[3], &segs[3]]),
            "decryption_failed",
        ),
        (
            "one byte appended",
            [&base[..], &[0u8]].concat(),
            "decryption_failed",
        ),
        (
            "a segment appended",
            join(&header, &[&segs[0], &segs[1], &segs[2], &segs[3], &segs[1]]),
            "decryption_failed",
        ),
        (
            "header from another file",
            join(&other.header, &segs.iter().collect::<Vec<_>>()),
            "decryption_failed",
        ),
        (
            "segment from another file under the same key",
            join(&header, &[&segs[0], &other.segs[1], &segs[2], &segs[3]]),
            "decryption_failed",
        ),
        ("bit flipped in the purpose", flip(11), "decryption_failed"),
        (
            "key version of no existing key",
            wrong_version,
            "decryption_failed",
        ),
        (
            "key version of another existing key",
            v2_label,
            "decryption_failed",
        ),
        (
            "bit flipped in the segment size",
            flip(10 + plen + 7),
            "decryption_failed",
        ),
        (
            "bit flipped in the salt",
            flip(10 + plen + 8 + 3),
            "decryption_failed",
        ),
        (
            "bit flipped in the nonce prefix",
            flip(10 + plen + 8 + 32 + 1),
            "decryption_failed",
        ),
        (
            "bit flipped in the sealed metadata",
            flip(h - 20),
            "decryption_failed",
        ),
        (
            "bit flipped in the metadata tag",
            flip(h - 1),
            "decryption_failed",
        ),
        (
            "bit flipped in a segment",
            flip(h + 48 + 3),
            "decryption_failed",
        ),
        (
            "bit flipped in a segment tag",
            flip(h + 47),
            "decryption_failed",
        ),
        (
            "bit flipped in the last segment",
            flip(base.len() - 17),
            "decryption_failed",
        ),
    ];
    let invalid: Vec<Value> = invalid
        .into_iter()
        .map(|(name, file, error)| json!({"name": name, "file": hex::encode(file), "error": error}))
        .collect();
    let doc = json!({
        "format": "KeyFlow streaming file format v1 (docs/file-format.md)",
        "keys": key_docs,
        "valid": valid,
        "invalid": invalid,
    });
    std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}
