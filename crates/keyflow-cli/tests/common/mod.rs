//! The CLI test harness: a sandboxed `keyflow` binary (clean environment, its own data
//! directory), and assertions on exit codes and the one-line error contract.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(dead_code, missing_docs)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Set on every command after the defaults (`with_env`).
    env: Vec<(String, OsString)>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// A sandbox with `keyflow init` already run.
    pub fn initialized() -> Self {
        let s = Self::new();
        s.init();
        s
    }

    /// Every command of this sandbox also gets `key=value` in its environment.
    pub fn with_env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// `name` in the sandbox directory (the commands' working directory).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// A command with a clean environment: only what the test sets.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyflow"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYFLOW_DATA_DIR", self.data())
            .env("KEK_PASSWORD", PASSWORD)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(self.cmd(args), stdin)
    }

    /// Stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        ok(self.cmd(args), stdin)
    }

    /// [`Sandbox::ok`] as trimmed text.
    pub fn ok_str(&self, args: &[&str], stdin: &[u8]) -> String {
        text(self.ok(args, stdin))
    }

    /// [`Sandbox::ok`] parsed as JSON.
    pub fn json(&self, args: &[&str], stdin: &[u8]) -> serde_json::Value {
        serde_json::from_slice(&self.ok(args, stdin)).unwrap()
    }

    pub fn init(&self) {
        self.ok(&["init", "--kdf-iterations", "100000"], b"");
    }

    /// `keyflow audit export`: every audit record, oldest first.
    pub fn audit_export(&self) -> Vec<serde_json::Value> {
        json_lines(&self.ok(&["audit", "export"], b""))
    }

    /// `keyflow audit list --json` with `args`: records, newest first.
    pub fn audit_list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["audit", "list", "--json"];
        all.extend_from_slice(args);
        json_lines(&self.ok(&all, b""))
    }

    /// Names in the sandbox directory, sorted (to prove no temporary file was left).
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub fn run(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from a thread: the command may write stdout while we feed stdin. A command
    // that refuses its arguments exits without reading stdin: the write then fails with
    // a broken pipe, which is the command's business, not the test's.
    let feeder = std::thread::spawn(move || {
        if let Err(e) = input.write_all(&data) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Stdout of a command that must succeed.
pub fn ok(c: Command, stdin: &[u8]) -> Vec<u8> {
    let args: Vec<_> = c.get_args().map(OsStr::to_owned).collect();
    let out = run(c, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts a failure: the exit code, and exactly one line on stderr containing `needle`.
pub fn assert_fails(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.starts_with("keyflow: error: "), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(
        !err.contains(PASSWORD) && !err.contains("panicked"),
        "{err}"
    );
}

/// One JSON value per non-empty line.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_owned()
}
