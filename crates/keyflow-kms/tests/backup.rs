//! Backup and restore over real SQLite keystores: restore under another KEK, merge,
//! refusals that write nothing, damaged files and wrong passwords.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::Env;
use keyflow_core::{Context, KeyVersion, Purpose};
use keyflow_kms::backup::format::MIN_ITERATIONS;
use keyflow_kms::backup::{BackupPassword, RestoreAction, RestoreReport};
use keyflow_kms::{
    Decrypted, EncryptionService, KeyStatus, KeyVersionRecord, KmsError, ServiceConfig,
    VersionFilter,
};
use serde_json::json;

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

fn pw() -> BackupPassword {
    BackupPassword::new("a backup password of some length".into()).unwrap()
}

async fn all(s: &EncryptionService) -> Vec<KeyVersionRecord> {
    s.keys().list(&VersionFilter::default()).await.unwrap()
}

/// What survives a restore: everything but the wrap and the KEK id.
fn meta(r: &KeyVersionRecord) -> (String, u32, KeyStatus, i64, i64, u64, Option<String>, bool) {
    (
        r.purpose.to_string(),
        r.version.get(),
        r.status,
        r.created_at,
        r.status_changed_at,
        r.encryptions,
        r.revoked_reason.clone(),
        r.wrapped_key.is_some(),
    )
}

async fn enc(s: &EncryptionService, purpose: &str, value: i64) -> String {
    let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
    s.encrypt_value(&json!(value), &p(purpose), &ctx)
        .await
        .unwrap()
}

async fn dec(s: &EncryptionService, ct: &str) -> Result<i64, KmsError> {
    let ctx = Context::from_pairs([("recordId", "r-1")]).unwrap();
    match s.decrypt(ct, &ctx).await? {
        Decrypted::Json(v) => Ok(v.as_i64().unwrap()),
        Decrypted::Bytes(_) => panic!("bytes"),
    }
}

/// A source keystore with rotated, revoked and destroyed versions, and one ciphertext
/// per decryptable version: `(value, ciphertext)`.
struct Source {
    _env: Env,
    service: EncryptionService,
    cts: Vec<(i64, String)>,
    revoked_ct: String,
}

async fn source() -> Source {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let mut cts = Vec::new();
    // userData v1, v2 rotating, v3 active.
    for i in 0..3 {
        cts.push((i, enc(&s, "userData", i).await));
        if i < 2 {
            s.keys().rotate(&p("userData")).await.unwrap();
        }
    }
    // financialData v1 revoked, v2 active.
    let revoked_ct = enc(&s, "financialData", 100).await;
    s.keys().rotate(&p("financialData")).await.unwrap();
    s.keys()
        .revoke(&p("financialData"), v(1), "suspected leak")
        .await
        .unwrap();
    cts.push((101, enc(&s, "financialData", 101).await));
    // healthData v1 destroyed, v2 active.
    enc(&s, "healthData", 200).await;
    s.keys().rotate(&p("healthData")).await.unwrap();
    s.keys()
        .revoke(&p("healthData"), v(1), "shred")
        .await
        .unwrap();
    s.keys().destroy(&p("healthData"), v(1)).await.unwrap();
    cts.push((201, enc(&s, "healthData", 201).await));
    Source {
        _env: env,
        service: s,
        cts,
        revoked_ct,
    }
}

async fn backup(s: &EncryptionService) -> Vec<u8> {
    s.keys()
        .backup_with_iterations(&pw(), MIN_ITERATIONS)
        .await
        .unwrap()
}

fn actions(r: &RestoreReport, a: RestoreAction) -> Vec<&str> {
    r.versions
        .iter()
        .filter(|i| i.action == a)
        .map(|i| i.key_id.as_str())
        .collect()
}

#[tokio::test]
async fn restores_into_an_empty_keystore_under_another_kek() {
    let src = source().await;
    let file = backup(&src.service).await;
    let before = all(&src.service).await;
    assert_eq!(before.len(), 7);

    let env = Env::new();
    let dst = env.service(ServiceConfig::default()).await;
    let src_kek = before[0].kek_id.clone();
    assert!(all(&dst).await.is_empty());

    // Dry run: reports, writes nothing.
    let dry = dst.keys().restore(&file, &pw(), true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(
        (dry.total, dry.inserted, dry.skipped, dry.refused),
        (7, 7, 0, 0)
    );
    assert!(all(&dst).await.is_empty(), "a dry run writes nothing");

    let report = dst.keys().restore(&file, &pw(), false).await.unwrap();
    assert!(!report.dry_run);
    assert_eq!(report.inserted, 7);
    let after = all(&dst).await;
    // States, times and reasons survive; an active version's counter comes back spent
    // (2^32): the backup cannot know what it encrypted after the backup was taken.
    let expected: Vec<_> = before
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.status == KeyStatus::Active {
                r.encryptions = 1 << 32;
            }
            meta(&r)
        })
        .collect();
    assert_eq!(after.iter().map(meta).collect::<Vec<_>>(), expected);
    let dst_kek = after[0].kek_id.clone();
    assert_ne!(dst_kek, src_kek);
    assert!(
        after.iter().all(|r| r.kek_id == dst_kek),
        "rewrapped under the new KEK"
    );

    for (value, ct) in &src.cts {
        assert_eq!(dec(&dst, ct).await.unwrap(), *value, "{ct}");
    }
    // Revoked stays revoked; destroyed stays without material; numbers are not reused.
    assert!(matches!(
        dec(&dst, &src.revoked_ct).await,
        Err(KmsError::KeyNotUsable {
            status: KeyStatus::Revoked,
            ..
        })
    ));
    dst.keys()
        .reinstate(&p("financialData"), v(1))
        .await
        .unwrap();
    assert_eq!(dec(&dst, &src.revoked_ct).await.unwrap(), 100);
    let r = dst.keys().rotate(&p("healthData")).await.unwrap();
    assert_eq!(r.new_version, v(3));
    // And new data under the restored keystore works — under a fresh version: the
    // restored active v3 is never used again, so the restore did not reset its budget.
    let ct = enc(&dst, "userData", 7).await;
    assert_eq!(dec(&dst, &ct).await.unwrap(), 7);
    assert_eq!(
        EncryptionService::summary(&ct).unwrap().key_version,
        4,
        "rotated before use"
    );
}

#[tokio::test]
async fn merge_skips_identical_versions_and_adds_new_ones() {
    let src = source().await;
    let file = backup(&src.service).await;
    // Into itself: everything identical.
    let gen = src.service.ring().keystore().generation().await.unwrap();
    let report = src
        .service
        .keys()
        .restore(&file, &pw(), false)
        .await
        .unwrap();
    assert_eq!((report.inserted, report.skipped, report.refused), (0, 7, 0));
    assert_eq!(
        src.service.ring().keystore().generation().await.unwrap(),
        gen,
        "nothing written"
    );

    // A second environment restored once, then the source rotates: the new version
    // merges in — but only if the target's ring has not moved on by itself.
    let env = Env::new();
    let dst = env.service(ServiceConfig::default()).await;
    dst.keys().restore(&file, &pw(), false).await.unwrap();
    let again = dst.keys().restore(&file, &pw(), false).await.unwrap();
    assert_eq!((again.inserted, again.skipped), (0, 7));
    assert_eq!(
        actions(&again, RestoreAction::Skip).len(),
        7,
        "{:?}",
        again.versions
    );

    src.service.keys().rotate(&p("userData")).await.unwrap();
    let newer = backup(&src.service).await;
    // userData:v4 active in the backup, v3 active in the target: two actives → refused.
    let before = all(&dst).await;
    let e = dst.keys().restore(&newer, &pw(), false).await.unwrap_err();
    assert!(matches!(e, KmsError::RestoreRefused(_)), "{e}");
    assert!(e.to_string().contains("userData:v4"), "{e}");
    assert_eq!(all(&dst).await, before, "nothing written");

    // A third, empty environment takes the newer backup whole.
    let env3 = Env::new();
    let third = env3.service(ServiceConfig::default()).await;
    let r = third.keys().restore(&newer, &pw(), false).await.unwrap();
    assert_eq!(r.inserted, 8);
    // Then the older one merges as all-identical.
    let r = third.keys().restore(&file, &pw(), false).await.unwrap();
    assert_eq!((r.inserted, r.skipped, r.refused), (0, 7, 0));
}

#[tokio::test]
async fn conflicting_material_is_refused_and_nothing_is_written() {
    let src = source().await;
    let file = backup(&src.service).await;
    let env = Env::new();
    let dst = env.service(ServiceConfig::default()).await;
    // Same name, different key.
    dst.keys().generate(&p("userData")).await.unwrap();
    let before = all(&dst).await;
    let gen = dst.ring().keystore().generation().await.unwrap();

    let dry = dst.keys().restore(&file, &pw(), true).await.unwrap();
    assert_eq!(actions(&dry, RestoreAction::Refuse)[0], "userData:v1");
    assert!(dry.refused >= 1 && dry.inserted >= 4, "{dry:?}");
    let e = dst.keys().restore(&file, &pw(), false).await.unwrap_err();
    assert!(matches!(e, KmsError::RestoreRefused(_)), "{e}");
    assert!(e.to_string().contains("different key material"), "{e}");
    assert_eq!(all(&dst).await, before);
    assert_eq!(dst.ring().keystore().generation().await.unwrap(), gen);
    // Nothing from the other purposes slipped in either.
    assert!(dst
        .keys()
        .list(&VersionFilter {
            purpose: Some(p("financialData")),
            status: None
        })
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn material_of_a_version_destroyed_in_the_target_is_never_restored() {
    let src = source().await;
    let file = backup(&src.service).await;
    let env = Env::new();
    let dst = env.service(ServiceConfig::default()).await;
    dst.keys().restore(&file, &pw(), false).await.unwrap();
    // The target shreds financialData v1 (revoked in the backup, with material).
    dst.keys().destroy(&p("financialData"), v(1)).await.unwrap();
    let before = all(&dst).await;
    let dry = dst.keys().restore(&file, &pw(), true).await.unwrap();
    assert_eq!(
        actions(&dry, RestoreAction::Refuse),
        vec!["financialData:v1"]
    );
    let e = dst.keys().restore(&file, &pw(), false).await.unwrap_err();
    assert!(e.to_string().contains("crypto-shredding"), "{e}");
    assert_eq!(all(&dst).await, before);
    assert!(matches!(
        dec(&dst, &src.revoked_ct).await,
        Err(KmsError::KeyNotUsable {
            status: KeyStatus::Destroyed,
            ..
        })
    ));
}

#[tokio::test]
async fn wrong_password_and_damaged_files_change_nothing() {
    let src = source().await;
    let file = backup(&src.service).await;
    let env = Env::new();
    let dst = env.service(ServiceConfig::default()).await;
    dst.keys().generate(&p("other")).await.unwrap();
    let before = all(&dst).await;

    let wrong = BackupPassword::new("not the backup password!".into()).unwrap();
    let e = dst.keys().restore(&file, &wrong, false).await.unwrap_err();
    assert!(matches!(e, KmsError::BackupDecryptionFailed), "{e}");
    assert!(e.to_string().contains("wrong password or a damaged file"));

    let truncated = &file[..file.len() - 10];
    let e = dst
        .keys()
        .restore(truncated, &pw(), false)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::BackupInvalid(_)), "{e}");

    for at in [30, file.len() / 2, file.len() - 1] {
        let mut flipped = file.clone();
        flipped[at] ^= 0x20;
        let e = dst.keys().restore(&flipped, &pw(), true).await.unwrap_err();
        assert!(
            matches!(
                e,
                KmsError::BackupDecryptionFailed | KmsError::BackupInvalid(_)
            ),
            "{e}"
        );
    }
    let e = dst
        .keys()
        .restore(b"hello", &pw(), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a KeyFlow backup"), "{e}");
    assert_eq!(all(&dst).await, before);
}

#[tokio::test]
async fn passwords_shorter_than_16_characters_are_refused() {
    assert!(matches!(
        BackupPassword::new("short password".into()),
        Err(KmsError::BackupPasswordTooShort(16))
    ));
    assert!(BackupPassword::new("exactly 16 chars".into()).is_ok());
}

#[tokio::test]
async fn the_default_backup_uses_600k_iterations_and_shows_no_material() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    s.keys().generate(&p("userData")).await.unwrap();
    let file = s.keys().backup(&pw()).await.unwrap();
    let h = keyflow_kms::backup::format::read_header(&file).unwrap();
    assert_eq!(h.iterations, 600_000);
    let report = s.keys().restore(&file, &pw(), true).await.unwrap();
    let shown = format!("{report:?} {}", serde_json::to_string(&report).unwrap());
    assert!(shown.contains("\"keyId\":\"userData:v1\""), "{shown}");
    assert!(shown.contains("\"action\":\"skip\""), "{shown}");
    assert!(!shown.contains("wrapped"), "{shown}");
}
