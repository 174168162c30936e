//! The generated vectors of both builds in the field (`tests/vectors/`, copied from
//! `../shared/legacy/`): KEK files at 100,000 and 210,000 iterations, key documents,
//! backups 1.0 and 2.0, packages and field documents, each with its expected plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use std::path::PathBuf;

use keyflow_fields::{decrypt_fields, Binding};
use keyflow_kms::{Context, Decrypted, EncryptionService, KeyStatus, ServiceConfig, VersionFilter};
use keyflow_legacy::import::{import, Outcome};
use keyflow_legacy::{backup, convert, envelope, keys, LegacyKek, LegacyKeyring};
use keyflow_testkit::Env;
use serde_json::Value;

struct Set {
    dir: PathBuf,
    kek_password: String,
    backup_password: String,
    iterations: u32,
}

fn set(name: &str) -> Set {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let readme = std::fs::read_to_string(dir.join("README.txt")).unwrap();
    let after = |label: &str| {
        let start = readme.find(label).unwrap() + label.len();
        readme[start..]
            .split(|c: char| c.is_whitespace() || c == ')')
            .find(|s| !s.is_empty())
            .unwrap()
            .to_owned()
    };
    Set {
        kek_password: after("KEK password:"),
        backup_password: after("backup password:"),
        iterations: after("iterations:").parse().unwrap(),
        dir,
    }
}

impl Set {
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }
    fn kek(&self) -> LegacyKek {
        let (kek, n) = LegacyKek::open(
            &self.read("master.kek"),
            self.kek_password.as_bytes(),
            &envelope::counts(None),
        )
        .unwrap();
        assert_eq!(n, self.iterations, "the count that opened the KEK file");
        kek
    }
}

async fn service(env: &Env) -> EncryptionService {
    env.service(ServiceConfig::default()).await
}

async fn imports_and_converts(name: &str, env: Env) {
    let s = set(name);
    let svc = service(&env).await;
    let kek = s.kek();

    let docs = keys::parse_key_documents(&s.read("encryptionkeys.jsonl"), "keys");
    assert!(docs.rejected.is_empty(), "{:?}", docs.rejected);
    let census = import(&svc, &kek, vec![docs.clone()], false).await.unwrap();
    assert_eq!(
        (census.found, census.imported, census.unreadable),
        (6, 6, 0),
        "{census:?}"
    );
    assert_eq!(census.new_active.len(), 3);
    assert!(census.new_active.iter().all(|a| a.version == 3));

    // Legacy versions keep their numbers and never encrypt; version 3 is new and active.
    let versions = svc.keys().list(&VersionFilter::default()).await.unwrap();
    assert_eq!(versions.len(), 9);
    for v in &versions {
        let expected = if v.version.get() == 3 {
            KeyStatus::Active
        } else {
            KeyStatus::Rotating
        };
        assert_eq!(v.status, expected, "{v:?}");
    }

    // Idempotent: a second run, and the backups (same keys), import nothing.
    let again = import(&svc, &kek, vec![docs], false).await.unwrap();
    assert_eq!((again.imported, again.already_present), (0, 6));
    let pw = s.backup_password.as_bytes();
    let v1 = backup::open(
        &s.read("backup-v1.txt"),
        pw,
        &envelope::counts_after(None, s.iterations),
    )
    .unwrap();
    assert_eq!(v1.format, backup::BackupFormat::V1);
    let v2 = backup::open(&s.read("backup-v2.txt"), pw, &envelope::counts(None)).unwrap();
    assert_eq!(
        (v2.format, v2.iterations),
        (backup::BackupFormat::V2, s.iterations)
    );
    let from_backups = import(&svc, &kek, vec![v1.entries, v2.entries], false)
        .await
        .unwrap();
    assert_eq!(from_backups.imported, 0, "{from_backups:?}");
    assert_eq!(from_backups.already_present, 6);
    assert!(from_backups
        .keys
        .iter()
        .all(|k| k.outcome == Outcome::AlreadyPresent));
    assert_eq!(
        svc.keys()
            .list(&VersionFilter::default())
            .await
            .unwrap()
            .len(),
        9
    );

    // Every package converts to a KeyFlow ciphertext of the expected value.
    let ring = LegacyKeyring::load(&svc).await.unwrap();
    let packages: Vec<Value> = serde_json::from_str(&s.read("packages.json")).unwrap();
    assert!(!packages.is_empty());
    for p in &packages {
        let ct = convert::convert_package(
            &svc,
            &ring,
            p["encryptedData"].as_str().unwrap(),
            &Context::new(),
        )
        .await
        .unwrap();
        let summary = EncryptionService::summary(&ct).unwrap();
        assert_eq!(summary.purpose, p["purpose"].as_str().unwrap());
        assert_eq!(summary.key_version, 3, "converted under the active version");
        let expected = p["expectedPlaintext"].as_str().unwrap();
        let expected = keyflow_legacy::package::typed_value(expected.as_bytes()).unwrap();
        match svc.decrypt(&ct, &Context::new()).await.unwrap() {
            Decrypted::Json(v) => assert_eq!(v, expected),
            Decrypted::Bytes(_) => panic!("text came back as bytes"),
        }
    }

    // Field documents convert into documents that KeyFlow's field layer decrypts.
    let docs: Vec<Value> = serde_json::from_str(&s.read("field-documents.json")).unwrap();
    for d in docs {
        let binding = Binding::doc(d["document"]["_id"].as_str().unwrap());
        let (converted, report) =
            convert::convert_document(&svc, &ring, d["document"].clone(), &binding)
                .await
                .unwrap();
        assert_eq!(
            report.converted.len(),
            d["expected"].as_object().unwrap().len()
        );
        assert!(
            converted.get("_encrypted").is_none() && converted.get("_encryptionVersion").is_none()
        );
        let (plain, _) = decrypt_fields(&svc, converted, None, &binding)
            .await
            .unwrap();
        for (field, want) in d["expected"].as_object().unwrap() {
            assert_eq!(&plain[field], want, "{field}");
        }
        // Fields that were never encrypted are untouched.
        for (k, v) in d["document"].as_object().unwrap() {
            if !k.starts_with('_') && d["expected"].get(k).is_none() {
                assert_eq!(&plain[k], v);
            }
        }
    }
}

#[tokio::test]
async fn vectors_100k() {
    imports_and_converts("vectors-100k", Env::new()).await;
}

#[tokio::test]
async fn vectors_100k_on_sqlite() {
    imports_and_converts("vectors-100k", Env::sqlite()).await;
}

#[tokio::test]
async fn vectors_210k() {
    imports_and_converts("vectors-210k", Env::new()).await;
}

#[test]
fn the_other_builds_kek_file_does_not_open_at_the_wrong_count() {
    let s = set("vectors-210k");
    let e =
        LegacyKek::open(&s.read("master.kek"), s.kek_password.as_bytes(), &[100_000]).unwrap_err();
    assert!(e.to_string().contains("at 100000 PBKDF2 iterations"), "{e}");
    assert!(!e.to_string().contains(&s.kek_password));
}

#[test]
fn a_kek_file_of_one_set_does_not_unwrap_the_other_sets_keys() {
    let a = set("vectors-100k");
    let b = set("vectors-210k");
    let kek = a.kek();
    let docs = keys::parse_key_documents(&b.read("encryptionkeys.jsonl"), "keys");
    for k in docs.keys {
        assert!(kek.unwrap_dek(&k.encrypted_key).is_err());
    }
}
