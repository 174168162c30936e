//! `keyflow keys backup | restore` and `keyflow kek rotate | change-password` as a user
//! runs them: files, stdout, stderr and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{ok, run, text, Sandbox};
use serde_json::Value;

const BACKUP_PASSWORD: &str = "backup password, long enough";

/// A sandbox whose commands have the backup password.
fn sandbox() -> Sandbox {
    Sandbox::new().with_env("KEYFLOW_BACKUP_PASSWORD", BACKUP_PASSWORD)
}

impl Sandbox {
    fn encrypt(&self, purpose: &str, plain: &str) -> String {
        self.ok_str(&["encrypt", "--purpose", purpose], plain.as_bytes())
    }

    fn decrypt(&self, ct: &str) -> String {
        self.ok_str(&["decrypt"], ct.as_bytes())
    }

    fn list(&self) -> Value {
        self.json(&["keys", "list", "--json"], b"")
    }
}

/// The shared failure contract, and the backup password never shown either.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    common::assert_fails(out, code, needle);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(BACKUP_PASSWORD), "{err}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Metadata that must survive a restore (the KEK id changes with the environment).
fn without_kek(list: &Value) -> Vec<Value> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("kekId");
            v
        })
        .collect()
}

#[test]
fn backup_restores_into_another_environment_and_merges() {
    let a = sandbox();
    a.init();
    let ct1 = a.encrypt("userData", "123-45-6789");
    a.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    let ct2 = a.encrypt("userData", "second");
    let ct3 = a.encrypt("financialData", "DE89370400440532013000");
    a.ok(
        &[
            "keys",
            "revoke",
            "--purpose",
            "userData",
            "--version",
            "1",
            "--reason",
            "test",
        ],
        b"",
    );

    let file = a.path("keys.kfbackup");
    let f = file.to_str().unwrap();
    let out = a.ok_str(
        &["keys", "backup", "-o", f, "--kdf-iterations", "100000"],
        b"",
    );
    assert!(
        out.starts_with("backup written: ") && out.contains("3 key versions"),
        "{out}"
    );
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(&bytes[..8], b"KFBACKUP");
    // Never overwritten without --force.
    assert_fails(
        &a.run(
            &["keys", "backup", "-o", f, "--kdf-iterations", "100000"],
            b"",
        ),
        2,
        "refusing to overwrite",
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    a.ok(
        &[
            "keys",
            "backup",
            "-o",
            f,
            "--force",
            "--kdf-iterations",
            "100000",
        ],
        b"",
    );
    assert_ne!(
        std::fs::read(&file).unwrap(),
        bytes,
        "replaced (fresh salt)"
    );
    assert_eq!(mode(&file), 0o600);
    let names = a.entries();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");

    // Another environment, another KEK.
    let b = sandbox();
    b.init();
    let dry = b.ok_str(&["keys", "restore", f, "--dry-run"], b"");
    assert!(
        dry.contains("would insert") && dry.contains("nothing was written"),
        "{dry}"
    );
    assert_eq!(b.list(), Value::Array(vec![]));
    let done = b.ok_str(&["keys", "restore", f], b"");
    assert!(done.contains("restored: 3 inserted, 0 skipped"), "{done}");
    // Everything but the KEK survives, except that an active version comes back with
    // its GCM budget spent (2^32): the backup cannot know its later use.
    let expected: Vec<Value> = without_kek(&a.list())
        .into_iter()
        .map(|mut v| {
            if v["status"] == "active" {
                v["encryptions"] = serde_json::json!(1u64 << 32);
            }
            v
        })
        .collect();
    assert_eq!(without_kek(&b.list()), expected);
    assert_ne!(b.list()[0]["kekId"], a.list()[0]["kekId"]);
    assert_eq!(b.decrypt(&ct2), "second");
    assert_eq!(b.decrypt(&ct3), "DE89370400440532013000");
    // Revoked stays revoked.
    assert_fails(&b.run(&["decrypt"], ct1.as_bytes()), 1, "revoked");

    // Again: everything identical.
    let json = b.json(&["keys", "restore", f, "--json"], b"");
    assert_eq!(
        (json["inserted"].as_u64(), json["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(json["versions"][0]["reason"], "identical material");
}

#[test]
fn refusals_write_nothing_and_say_why_in_one_line() {
    let a = sandbox();
    a.init();
    a.encrypt("userData", "x");
    let file = a.path("keys.kfbackup");
    let f = file.to_str().unwrap();
    a.ok(
        &["keys", "backup", "-o", f, "--kdf-iterations", "100000"],
        b"",
    );

    let b = sandbox();
    b.init();
    b.encrypt("userData", "different key, same name");
    let before = b.list();
    assert_fails(
        &b.run(&["keys", "restore", f], b""),
        1,
        "different key material",
    );
    assert_eq!(b.list(), before);

    let mut wrong = b.cmd(&["keys", "restore", f]);
    wrong.env("KEYFLOW_BACKUP_PASSWORD", "some other password entirely");
    assert_fails(&run(wrong, b""), 1, "wrong password or a damaged file");

    let mut short = a.cmd(&["keys", "backup", "-o", "short.kfb"]);
    short.env("KEYFLOW_BACKUP_PASSWORD", "too short");
    assert_fails(&run(short, b""), 2, "at least 16 characters");
    assert!(!a.path("short.kfb").exists());

    let bytes = std::fs::read(&file).unwrap();
    let cut = b.path("cut.kfb");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    assert_fails(
        &b.run(&["keys", "restore", cut.to_str().unwrap()], b""),
        1,
        "truncated",
    );
    let flipped = b.path("flipped.kfb");
    let mut f2 = bytes.clone();
    let at = f2.len() - 20;
    f2[at] ^= 4;
    std::fs::write(&flipped, &f2).unwrap();
    assert_fails(
        &b.run(
            &["keys", "restore", flipped.to_str().unwrap(), "--dry-run"],
            b"",
        ),
        1,
        "damaged",
    );
    assert_eq!(b.list(), before);
}

#[test]
fn kek_rotate_and_change_password() {
    let s = sandbox();
    s.init();
    let ct1 = s.encrypt("userData", "one");
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    let ct2 = s.encrypt("userData", "two");
    let old_id = s.list()[0]["kekId"].as_str().unwrap().to_owned();

    let out = s.ok_str(&["kek", "rotate", "--kdf-iterations", "100000"], b"");
    assert!(
        out.starts_with(&format!("KEK rotated: {old_id} -> ")),
        "{out}"
    );
    assert!(out.contains("2 data key versions rewrapped"), "{out}");
    let retired = s.path(&format!("data/kek.json.retired-{old_id}"));
    assert!(retired.exists(), "{out}");
    assert!(!s.path("data/kek.json.next").exists());
    assert_eq!(mode(&s.path("data/kek.json")), 0o600);
    let list = s.list();
    let new_id = list[0]["kekId"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["kekId"] == new_id.as_str()));
    assert_eq!(s.decrypt(&ct1), "one");
    assert_eq!(s.decrypt(&ct2), "two");
    // The retired KEK is refused by the keystore.
    let mut old = s.cmd(&["decrypt"]);
    old.env("KEK_PATH", &retired);
    assert_fails(&run(old, ct1.as_bytes()), 1, "belongs to KEK");

    const NEW: &str = "a brand new KEK password for the test";
    let mut change = s.cmd(&["kek", "change-password", "--kdf-iterations", "100000"]);
    change.env("KEYFLOW_NEW_KEK_PASSWORD", NEW);
    let out = text(ok(change, b""));
    assert!(
        out.starts_with(&format!("KEK password changed for KEK {new_id}")),
        "{out}"
    );
    assert_fails(
        &s.run(&["decrypt"], ct1.as_bytes()),
        1,
        "could not be unlocked",
    );
    let mut with_new = s.cmd(&["decrypt"]);
    with_new.env("KEK_PASSWORD", NEW);
    assert_eq!(text(ok(with_new, ct2.as_bytes())), "two");

    // Production rules apply to the new password.
    let mut weak = s.cmd(&["kek", "change-password"]);
    weak.env("KEK_PASSWORD", NEW)
        .env("KEYFLOW_ENV", "production")
        .env("KEYFLOW_NEW_KEK_PASSWORD", "short");
    assert_fails(&run(weak, b""), 2, "at least 32 characters");
}
