//! `keyflow keys backup | restore` and `keyflow kek rotate | change-password` as a user
//! runs them: files, stdout, stderr and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";
const BACKUP_PASSWORD: &str = "backup password, long enough";

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command with a clean environment: only what the test sets.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyflow"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYFLOW_DATA_DIR", self.path("data"))
            .env("KEK_PASSWORD", PASSWORD)
            .env("KEYFLOW_BACKUP_PASSWORD", BACKUP_PASSWORD);
        c
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(self.cmd(args), stdin)
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        ok(self.cmd(args), stdin)
    }

    fn init(&self) {
        self.ok(&["init", "--kdf-iterations", "100000"], b"");
    }

    fn encrypt(&self, purpose: &str, plain: &str) -> String {
        self.ok(&["encrypt", "--purpose", purpose], plain.as_bytes())
    }

    fn decrypt(&self, ct: &str) -> String {
        self.ok(&["decrypt"], ct.as_bytes())
    }

    fn list(&self) -> Value {
        serde_json::from_str(&self.ok(&["keys", "list", "--json"], b"")).unwrap()
    }
}

fn run(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading stdin.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn ok(c: Command, stdin: &[u8]) -> String {
    let out = run(c, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Asserts a failure: the exit code, and exactly one line on stderr containing `needle`.
fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.starts_with("keyflow: error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(
        !err.contains(PASSWORD) && !err.contains(BACKUP_PASSWORD) && !err.contains("panicked"),
        "{err}"
    );
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
    let a = Sandbox::new();
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
    let out = a.ok(
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
    let names: Vec<_> = std::fs::read_dir(a.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");

    // Another environment, another KEK.
    let b = Sandbox::new();
    b.init();
    let dry = b.ok(&["keys", "restore", f, "--dry-run"], b"");
    assert!(
        dry.contains("would insert") && dry.contains("nothing was written"),
        "{dry}"
    );
    assert_eq!(b.list(), Value::Array(vec![]));
    let done = b.ok(&["keys", "restore", f], b"");
    assert!(done.contains("restored: 3 inserted, 0 skipped"), "{done}");
    assert_eq!(without_kek(&b.list()), without_kek(&a.list()));
    assert_ne!(b.list()[0]["kekId"], a.list()[0]["kekId"]);
    assert_eq!(b.decrypt(&ct2), "second");
    assert_eq!(b.decrypt(&ct3), "DE89370400440532013000");
    // Revoked stays revoked.
    assert_fails(&b.run(&["decrypt"], ct1.as_bytes()), 1, "revoked");

    // Again: everything identical.
    let json: Value = serde_json::from_str(&b.ok(&["keys", "restore", f, "--json"], b"")).unwrap();
    assert_eq!(
        (json["inserted"].as_u64(), json["skipped"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(json["versions"][0]["reason"], "identical material");
}

#[test]
fn refusals_write_nothing_and_say_why_in_one_line() {
    let a = Sandbox::new();
    a.init();
    a.encrypt("userData", "x");
    let file = a.path("keys.kfbackup");
    let f = file.to_str().unwrap();
    a.ok(
        &["keys", "backup", "-o", f, "--kdf-iterations", "100000"],
        b"",
    );

    let b = Sandbox::new();
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
    let s = Sandbox::new();
    s.init();
    let ct1 = s.encrypt("userData", "one");
    s.ok(&["keys", "rotate", "--purpose", "userData"], b"");
    let ct2 = s.encrypt("userData", "two");
    let old_id = s.list()[0]["kekId"].as_str().unwrap().to_owned();

    let out = s.ok(&["kek", "rotate", "--kdf-iterations", "100000"], b"");
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
    let out = ok(change, b"");
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
    assert_eq!(ok(with_new, ct2.as_bytes()), "two");

    // Production rules apply to the new password.
    let mut weak = s.cmd(&["kek", "change-password"]);
    weak.env("KEK_PASSWORD", NEW)
        .env("KEYFLOW_ENV", "production")
        .env("KEYFLOW_NEW_KEK_PASSWORD", "short");
    assert_fails(&run(weak, b""), 2, "at least 32 characters");
}
