//! KEK rotation and KEK password change against a real keystore and real files,
//! including a simulated crash before every step of the rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use common::{Env, FAST_KDF};
use keyflow_core::kek::KekFile;
use keyflow_core::{Context, KeyVersion, OsRng, Purpose};
use keyflow_kms::kek_provider::{self, next_path, retired_path, KekPassword, META_KEK_ID};
use keyflow_kms::kek_rotation::{self, RotationHook, RotationStep, KEK_LEASE};
use keyflow_kms::{
    Decrypted, EncryptionService, KeyVersionRecord, Keystore, KmsError, ServiceConfig,
    VersionFilter,
};
use serde_json::json;

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}

fn file_id(path: &std::path::Path) -> String {
    KekFile::parse(&std::fs::read(path).unwrap())
        .unwrap()
        .kek_id()
        .to_owned()
}

/// A keystore with several purposes, a rotated ring and a destroyed version, and one
/// ciphertext per decryptable version.
/// `kek_provider::change_password` from the environment's password to `new`.
async fn change_password(
    env: &Env,
    store: &dyn Keystore,
    new: &KekPassword,
) -> Result<keyflow_core::kek::Kek, KmsError> {
    kek_provider::change_password(&env.kek_path, &env.password(), new, FAST_KDF, store, &OsRng)
        .await
}

async fn populated(env: &Env) -> Vec<(i64, String)> {
    let s = env.service(ServiceConfig::default()).await;
    let mut cts = Vec::new();
    for (i, purpose) in ["userData", "financialData", "documents"]
        .iter()
        .enumerate()
    {
        for round in 0..3 {
            let value = (i * 10 + round) as i64;
            cts.push((
                value,
                s.encrypt_value(&json!(value), &p(purpose), &Context::new())
                    .await
                    .unwrap(),
            ));
            if round < 2 {
                s.keys().rotate(&p(purpose)).await.unwrap();
            }
        }
    }
    // documents v1 destroyed (its ciphertext is dropped from the list).
    cts.retain(|(v, _)| *v != 20);
    s.keys()
        .revoke(&p("documents"), KeyVersion::FIRST, "old")
        .await
        .unwrap();
    s.keys()
        .destroy(&p("documents"), KeyVersion::FIRST)
        .await
        .unwrap();
    cts
}

async fn unlocked_service(env: &Env, password: &KekPassword) -> EncryptionService {
    let store = env.store().await;
    let kek = kek_provider::unlock(&env.kek_path, password, &*store)
        .await
        .unwrap();
    EncryptionService::new(store, kek, ServiceConfig::default())
}

/// A normal unlock works, every DEK version with material unwraps, every ciphertext
/// decrypts, and everything in the keystore is under the KEK the file holds.
async fn assert_consistent(env: &Env, cts: &[(i64, String)]) {
    let s = unlocked_service(env, &env.password()).await;
    let kek_id = file_id(&env.kek_path);
    let store = env.store().await;
    assert_eq!(
        store.get_meta(META_KEK_ID).await.unwrap().as_deref(),
        Some(kek_id.as_str())
    );
    for r in s.keys().list(&VersionFilter::default()).await.unwrap() {
        if r.wrapped_key.is_some() {
            assert_eq!(r.kek_id, kek_id, "{r:?}");
        }
    }
    for (value, ct) in cts {
        match s.decrypt(ct, &Context::new()).await.unwrap() {
            Decrypted::Json(v) => assert_eq!(v, json!(value)),
            Decrypted::Bytes(_) => panic!("bytes"),
        }
    }
    // And the ring still rotates and encrypts.
    let r = s.keys().rotate(&p("userData")).await.unwrap();
    let ct = s
        .encrypt_value(&json!("after"), &p("userData"), &Context::new())
        .await
        .unwrap();
    assert!(ct.starts_with("kf1:"));
    assert!(r.new_version.get() >= 4);
}

#[tokio::test]
async fn rotation_rewraps_every_dek_and_retires_the_old_file() {
    let env = Env::new();
    let cts = populated(&env).await;
    let store = env.store().await;
    let before: Vec<KeyVersionRecord> = store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap();
    let old_id = file_id(&env.kek_path);
    let old_bytes = std::fs::read(&env.kek_path).unwrap();

    let done = kek_rotation::rotate_kek(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    assert_eq!(done.old_kek_id, old_id);
    assert_ne!(done.new_kek_id, old_id);
    assert_eq!(done.rewrapped, 8, "9 versions, one destroyed");
    assert_eq!(done.retired, retired_path(&env.kek_path, &old_id));
    assert_eq!(
        std::fs::read(&done.retired).unwrap(),
        old_bytes,
        "old file kept as is"
    );
    assert!(!next_path(&env.kek_path).exists());
    assert_eq!(file_id(&env.kek_path), done.new_kek_id);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&env.kek_path).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);

    let after = store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (&a.purpose, a.version, a.status),
            (&b.purpose, b.version, b.status)
        );
        if a.wrapped_key.is_some() {
            assert_ne!(a.wrapped_key, b.wrapped_key, "rewrapped");
        } else {
            assert!(b.wrapped_key.is_none(), "destroyed stays destroyed");
        }
    }
    // The retired file still unlocks (old keystore backups need it) but is no longer
    // accepted by the keystore.
    let retired = KekFile::parse(&std::fs::read(&done.retired).unwrap()).unwrap();
    assert!(retired.unlock(b"correct horse battery staple").is_ok());
    assert_consistent(&env, &cts).await;

    // The old KEK is refused by the keystore.
    let e = kek_provider::unlock(&done.retired, &env.password(), &*store)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekMismatch { .. }), "{e}");
}

/// Fails at one step, like a crash there.
struct CrashAt(RotationStep);

#[async_trait]
impl RotationHook for CrashAt {
    async fn before(&self, step: RotationStep, _: usize) -> keyflow_kms::Result<()> {
        if step == self.0 {
            Err(KmsError::Invalid("simulated crash"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_crash_before_any_step_leaves_one_working_kek_and_a_rerun_completes() {
    for step in RotationStep::ALL {
        let env = Env::new();
        let cts = populated(&env).await;
        let store = env.store().await;
        let old_id = file_id(&env.kek_path);
        let e = kek_rotation::rotate_kek_with_hook(
            &env.kek_path,
            &env.password(),
            FAST_KDF,
            &*store,
            &OsRng,
            &CrashAt(step),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{step:?}: {e}");
        let recorded = store.get_meta(META_KEK_ID).await.unwrap().unwrap();
        if step == RotationStep::Promote {
            assert_ne!(recorded, old_id, "committed before {step:?}");
            assert!(next_path(&env.kek_path).exists());
        } else {
            assert_eq!(recorded, old_id, "not committed before {step:?}");
        }
        // A normal unlock works (finishing the promotion if it had committed).
        assert_consistent(&env, &cts).await;
        assert_eq!(file_id(&env.kek_path), recorded);
        if step == RotationStep::Promote {
            assert!(!next_path(&env.kek_path).exists(), "promoted by unlock");
        }

        // A rerun completes, moving an uncommitted `.next` aside (never deleting it).
        let store = env.store().await;
        let done =
            kek_rotation::rotate_kek(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
                .await
                .unwrap_or_else(|e| panic!("rerun after a crash before {step:?}: {e}"));
        let orphaned = matches!(step, RotationStep::RetireOld | RotationStep::Commit);
        assert_eq!(done.orphan_moved.is_some(), orphaned, "{step:?}");
        if let Some(o) = &done.orphan_moved {
            assert!(o.exists());
        }
        assert!(!next_path(&env.kek_path).exists());
        assert_consistent(&env, &cts).await;
        // Every KEK file ever written is still on disk under some name.
        let names: Vec<String> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n == &format!("kek.json.retired-{old_id}")),
            "{step:?}: {names:?}"
        );
    }
}

/// Creates a new purpose through a service that still holds the old KEK, once, just
/// before the first commit attempt.
struct ConcurrentCreate {
    service: EncryptionService,
    done: AtomicBool,
}

#[async_trait]
impl RotationHook for ConcurrentCreate {
    async fn before(&self, step: RotationStep, attempt: usize) -> keyflow_kms::Result<()> {
        if step == RotationStep::Commit && attempt == 0 && !self.done.swap(true, Ordering::SeqCst) {
            self.service.keys().generate(&p("lateComer")).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_dek_created_during_the_rotation_is_not_left_under_the_old_kek() {
    let env = Env::new();
    let cts = populated(&env).await;
    let other = unlocked_service(&env, &env.password()).await;
    let late = other
        .encrypt_value(&json!(77), &p("lateComer2"), &Context::new())
        .await
        .unwrap();
    let hook = ConcurrentCreate {
        service: other,
        done: AtomicBool::new(false),
    };
    let store = env.store().await;
    let done = kek_rotation::rotate_kek_with_hook(
        &env.kek_path,
        &env.password(),
        FAST_KDF,
        &*store,
        &OsRng,
        &hook,
    )
    .await
    .unwrap();
    assert!(hook.done.load(Ordering::SeqCst));
    assert_eq!(
        done.rewrapped, 10,
        "8 + lateComer2 + lateComer (after one conflict)"
    );
    let mut cts = cts;
    cts.push((77, late));
    assert_consistent(&env, &cts).await;
}

#[tokio::test]
async fn a_held_lease_refuses_a_second_kek_operation() {
    let env = Env::new();
    populated(&env).await;
    let store: Arc<dyn Keystore> = env.store().await;
    let now = keyflow_kms::clock::Clock::now_millis(&keyflow_kms::clock::SystemClock);
    assert!(store
        .try_lease(KEK_LEASE, "someone-else", now, 60_000)
        .await
        .unwrap());
    let before = std::fs::read(&env.kek_path).unwrap();
    let e = kek_rotation::rotate_kek(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekBusy(_)), "{e}");
    let new = KekPassword::new("an entirely different password".into(), false).unwrap();
    let e = change_password(&env, &*store, &new).await.unwrap_err();
    assert!(matches!(e, KmsError::KekBusy(_)), "{e}");
    assert_eq!(std::fs::read(&env.kek_path).unwrap(), before);
    assert!(!next_path(&env.kek_path).exists());
}

#[tokio::test]
async fn change_password_rewraps_only_the_kek_file() {
    let env = Env::new();
    let cts = populated(&env).await;
    let store = env.store().await;
    let before = store
        .list_versions(&VersionFilter::default())
        .await
        .unwrap();
    let old_id = file_id(&env.kek_path);
    let new = KekPassword::new("an entirely different password".into(), false).unwrap();

    let kek = change_password(&env, &*store, &new).await.unwrap();
    assert_eq!(kek.id(), old_id);
    assert_eq!(file_id(&env.kek_path), old_id, "same KEK");
    assert_eq!(
        store
            .list_versions(&VersionFilter::default())
            .await
            .unwrap(),
        before,
        "DEKs untouched"
    );
    let e = kek_provider::unlock(&env.kek_path, &env.password(), &*store)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekUnlockFailed(_)), "{e}");
    let s = unlocked_service(&env, &new).await;
    for (value, ct) in &cts {
        match s.decrypt(ct, &Context::new()).await.unwrap() {
            Decrypted::Json(v) => assert_eq!(v, json!(value)),
            Decrypted::Bytes(_) => panic!("bytes"),
        }
    }
    // No copy sealed with the old password was left next to it.
    let names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("kek.json.") && !n.contains(".tmp-")),
        "{names:?}"
    );
    // A wrong old password changes nothing.
    let bytes = std::fs::read(&env.kek_path).unwrap();
    let e = change_password(&env, &*store, &new).await.unwrap_err();
    assert!(matches!(e, KmsError::KekUnlockFailed(_)), "{e}");
    assert_eq!(std::fs::read(&env.kek_path).unwrap(), bytes);
}
