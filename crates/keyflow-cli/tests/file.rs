//! `keyflow file encrypt | decrypt | inspect` as a user runs them: round trips through
//! files and pipes, refusals with one stderr line and the right exit code, and nothing
//! left at OUT when decryption fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::path::Path;

use common::{assert_fails, Sandbox};
use serde_json::Value;

/// Deterministic, incompressible-looking bytes.
fn data(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

const SEG: usize = 64 * 1024;

#[test]
fn files_round_trip_at_segment_boundaries_with_metadata() {
    let s = Sandbox::initialized();
    for size in [0, 1, SEG - 1, SEG, SEG + 1, 5 * SEG + 1234] {
        let plain = data(size);
        write(&s.path("in.csv"), &plain);
        s.ok(
            &[
                "file",
                "encrypt",
                "in.csv",
                "-o",
                "in.csv.kf",
                "--mime",
                "text/csv",
            ],
            b"",
        );
        let enc = std::fs::read(s.path("in.csv.kf")).unwrap();
        assert_eq!(&enc[..4], b"\x89KFS");
        s.ok(&["file", "decrypt", "in.csv.kf", "-o", "back.csv"], b"");
        assert_eq!(
            std::fs::read(s.path("back.csv")).unwrap(),
            plain,
            "size {size}"
        );
        let meta = s.json(&["file", "inspect", "in.csv.kf"], b"");
        assert_eq!(
            meta,
            serde_json::json!({
                "format": "keyflow-file-v1", "purpose": "documents", "keyVersion": 1,
                "segmentSize": 65536, "name": "in.csv", "mimeType": "text/csv",
                "size": size, "sizeVerified": true,
            })
        );
    }
    assert_eq!(
        s.entries(),
        vec!["back.csv", "data", "in.csv", "in.csv.kf"],
        "no temporary files left"
    );
}

#[test]
fn pipes_work_both_ways_and_size_is_unknown_until_the_end() {
    let s = Sandbox::initialized();
    let plain = data(3 * SEG + 17);
    let enc = s.ok(
        &[
            "file",
            "encrypt",
            "-",
            "-o",
            "-",
            "--purpose",
            "healthData",
            "--name",
            "scan.dcm",
        ],
        &plain,
    );
    assert_eq!(s.ok(&["file", "decrypt", "-", "-o", "-"], &enc), plain);
    let meta = s.json(&["file", "inspect", "-"], &enc);
    assert_eq!(meta["purpose"], "healthData");
    assert_eq!(meta["name"], "scan.dcm");
    assert_eq!(meta["mimeType"], Value::Null);
    assert_eq!(
        meta["size"],
        Value::Null,
        "piped input: size not in the metadata"
    );
    // Saved to a file, the size is derived and authenticated from the final segment.
    write(&s.path("piped.kf"), &enc);
    let meta = s.json(&["file", "inspect", "piped.kf"], b"");
    assert_eq!(meta["size"], plain.len());
    assert_eq!(meta["sizeVerified"], true);
}

#[test]
fn failed_decryption_leaves_nothing_at_out() {
    let s = Sandbox::initialized();
    let plain = data(6 * SEG + 5);
    write(&s.path("in.bin"), &plain);
    s.ok(&["file", "encrypt", "in.bin", "-o", "good.kf"], b"");
    let good = std::fs::read(s.path("good.kf")).unwrap();
    let seg = SEG + 16;
    let header = good.len() - plain.len() - 7 * 16;
    let mut flipped_late = good.clone();
    flipped_late[header + 5 * seg + 100] ^= 1;
    let mut flipped_header = good.clone();
    flipped_header[20] ^= 1;
    let mut swapped = good[..header].to_vec();
    swapped.extend_from_slice(&good[header + seg..header + 2 * seg]);
    swapped.extend_from_slice(&good[header..header + seg]);
    swapped.extend_from_slice(&good[header + 2 * seg..]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bit flipped in segment 6",
            flipped_late,
            "decryption failed",
        ),
        (
            "bit flipped in the header",
            flipped_header,
            "decryption failed",
        ),
        (
            "truncated",
            good[..good.len() - 10].to_vec(),
            "decryption failed",
        ),
        (
            "truncated at a segment boundary",
            good[..header + 3 * seg].to_vec(),
            "decryption failed",
        ),
        ("segments swapped", swapped, "decryption failed"),
        (
            "last segment duplicated",
            [&good[..], &good[header + 6 * seg..]].concat(),
            "decryption failed",
        ),
        (
            "bytes appended",
            [&good[..], b"\n"].concat(),
            "decryption failed",
        ),
        (
            "not a KeyFlow file",
            b"kf1:AQEIdXNlckRhdGE".to_vec(),
            "not a KeyFlow encrypted file",
        ),
        ("empty", vec![], "not a KeyFlow encrypted file"),
    ];
    for (name, bad, needle) in cases {
        write(&s.path("bad.kf"), &bad);
        let out = s.run(&["file", "decrypt", "bad.kf", "-o", "out.bin"], b"");
        assert_fails(&out, 1, needle);
        assert!(
            !s.path("out.bin").exists(),
            "{name}: something was left at OUT"
        );
        assert_eq!(
            s.entries(),
            vec!["bad.kf", "data", "good.kf", "in.bin"],
            "{name}: a temporary file was left behind"
        );
        // Through a pipe, no byte of an unverified segment is released.
        let out = s.run(&["file", "decrypt", "-", "-o", "-"], &bad);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            out.stdout.len().is_multiple_of(SEG),
            "{name}: only whole verified segments"
        );
        assert_eq!(out.stdout, plain[..out.stdout.len()], "{name}");
    }
    // An existing OUT is left as it was.
    write(&s.path("out.bin"), b"previous");
    write(&s.path("bad.kf"), &good[..good.len() - 1]);
    assert_fails(
        &s.run(&["file", "decrypt", "bad.kf", "-o", "out.bin"], b""),
        1,
        "decryption failed",
    );
    assert_eq!(std::fs::read(s.path("out.bin")).unwrap(), b"previous");
}

#[test]
fn foreign_revoked_and_unusable_keys_are_refused() {
    let a = Sandbox::initialized();
    let b = Sandbox::initialized();
    write(&a.path("in.txt"), b"quarterly numbers");
    a.ok(
        &[
            "file",
            "encrypt",
            "in.txt",
            "-o",
            "in.kf",
            "--purpose",
            "financialData",
        ],
        b"",
    );
    b.ok(&["keys", "generate", "--purpose", "financialData"], b"");
    std::fs::copy(a.path("in.kf"), b.path("in.kf")).unwrap();
    // Another installation's key of the same purpose and version.
    assert_fails(
        &b.run(&["file", "decrypt", "in.kf", "-o", "out.txt"], b""),
        1,
        "decryption failed",
    );
    assert_fails(
        &b.run(&["file", "inspect", "in.kf"], b""),
        1,
        "decryption failed",
    );
    assert!(!b.path("out.txt").exists());
    // Rotation: the old version still decrypts; revoked, it does not.
    a.ok(&["keys", "rotate", "--purpose", "financialData"], b"");
    a.ok(&["file", "decrypt", "in.kf", "-o", "out.txt"], b"");
    assert_eq!(
        std::fs::read(a.path("out.txt")).unwrap(),
        b"quarterly numbers"
    );
    std::fs::remove_file(a.path("out.txt")).unwrap();
    a.ok(
        &[
            "keys",
            "revoke",
            "--purpose",
            "financialData",
            "--version",
            "1",
            "--reason",
            "test",
        ],
        b"",
    );
    assert_fails(
        &a.run(&["file", "decrypt", "in.kf", "-o", "out.txt"], b""),
        1,
        "revoked",
    );
    assert!(!a.path("out.txt").exists());
    // New files use the active version 2.
    a.ok(
        &[
            "file",
            "encrypt",
            "in.txt",
            "-o",
            "v2.kf",
            "--purpose",
            "financialData",
        ],
        b"",
    );
    let meta = a.json(&["file", "inspect", "v2.kf"], b"");
    assert_eq!(meta["keyVersion"], 2);
}

#[test]
fn usage_errors_exit_2() {
    let s = Sandbox::initialized();
    write(&s.path("in.txt"), b"x");
    let out = s.run(&["file", "encrypt", "in.txt"], b"");
    assert_eq!(out.status.code(), Some(2), "missing -o");
    assert_fails(
        &s.run(
            &[
                "file",
                "encrypt",
                "in.txt",
                "-o",
                "o.kf",
                "--mime",
                "text/plain\u{7f}",
            ],
            b"",
        ),
        2,
        "MIME type",
    );
    assert_fails(
        &s.run(
            &[
                "file",
                "encrypt",
                "in.txt",
                "-o",
                "o.kf",
                "--purpose",
                "9lives",
            ],
            b"",
        ),
        2,
        "--purpose",
    );
    assert_fails(
        &s.run(&["file", "encrypt", "missing.txt", "-o", "o.kf"], b""),
        2,
        "cannot open",
    );
    assert!(!s.path("o.kf").exists());
}
