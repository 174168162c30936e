//! The password-file KEK provider against a real keystore: never regenerate, never
//! overwrite, refuse a mismatched KEK, survive an interrupted init.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Env, FAST_KDF};
use keyflow_core::OsRng;
use keyflow_kms::kek_provider::{self, InitOutcome, KekPassword, META_KEK_ID};
use keyflow_kms::KmsError;

#[tokio::test]
async fn init_creates_a_0600_file_once_and_never_overwrites_it() {
    let env = Env::new();
    let store = env.store().await;
    let (o1, k1) = kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    assert_eq!(o1, InitOutcome::Created);
    let bytes = std::fs::read(&env.kek_path).unwrap();
    let mode = std::fs::metadata(&env.kek_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let file: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(file["kdf"]["algorithm"], "pbkdf2-hmac-sha256");
    assert_eq!(file["kdf"]["iterations"], FAST_KDF.iterations);
    assert_eq!(file["version"], 1);

    let (o2, k2) = kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    assert_eq!(o2, InitOutcome::AlreadyInitialized);
    assert_eq!(k1.id(), k2.id());
    assert_eq!(
        std::fs::read(&env.kek_path).unwrap(),
        bytes,
        "re-init leaves the file untouched"
    );
    assert_eq!(
        store.get_meta(META_KEK_ID).await.unwrap().as_deref(),
        Some(k1.id())
    );
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_stops_and_changes_nothing() {
    let env = Env::new();
    let store = env.store().await;
    kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    let before = std::fs::read(&env.kek_path).unwrap();
    let wrong = KekPassword::new("not the password".into(), false).unwrap();

    let e = kek_provider::init(&env.kek_path, &wrong, FAST_KDF, &*store, &OsRng)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekUnlockFailed(_)), "{e:?}");
    assert!(!e.to_string().contains("not the password"));
    let e = kek_provider::unlock(&env.kek_path, &wrong, &*store)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekUnlockFailed(_)), "{e:?}");
    assert_eq!(
        std::fs::read(&env.kek_path).unwrap(),
        before,
        "KEK file byte-for-byte unchanged"
    );
}

#[tokio::test]
async fn a_damaged_kek_file_is_refused_not_replaced() {
    let env = Env::new();
    let store = env.store().await;
    kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    std::fs::write(&env.kek_path, b"{\"format\":\"something else\"}").unwrap();
    let e = kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekFileInvalid { .. }), "{e:?}");
    assert_eq!(
        std::fs::read(&env.kek_path).unwrap(),
        b"{\"format\":\"something else\"}"
    );
}

#[tokio::test]
async fn a_missing_kek_file_is_never_regenerated_for_a_used_keystore() {
    let env = Env::new();
    let store = env.store().await;
    kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    std::fs::rename(&env.kek_path, env.dir.path().join("moved.json")).unwrap();

    let e = kek_provider::unlock(&env.kek_path, &env.password(), &*store)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekMissing(_)), "{e:?}");
    let e = kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekLost(_)), "{e:?}");
    assert!(!env.kek_path.exists(), "no new KEK was written");
}

#[tokio::test]
async fn another_kek_is_refused_by_the_keystore() {
    let env = Env::new();
    let store = env.store().await;
    kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    // A second KEK file, made for another (empty) keystore.
    let other = Env::new();
    let other_store = other.store().await;
    kek_provider::init(
        &other.kek_path,
        &env.password(),
        FAST_KDF,
        &*other_store,
        &OsRng,
    )
    .await
    .unwrap();
    let e = kek_provider::unlock(&other.kek_path, &env.password(), &*store)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::KekMismatch { .. }), "{e:?}");
}

#[tokio::test]
async fn an_interrupted_init_is_completed_by_the_next_one() {
    let env = Env::new();
    // Crash 1: a temporary file was written but never linked into place.
    std::fs::write(
        env.dir.path().join(".kek.json.tmp-0011223344556677"),
        b"partial",
    )
    .unwrap();
    // Crash 2: the KEK file was linked, but the keystore never recorded the KEK id.
    let scratch = Env::new();
    let scratch_store = scratch.store().await;
    kek_provider::init(
        &scratch.kek_path,
        &env.password(),
        FAST_KDF,
        &*scratch_store,
        &OsRng,
    )
    .await
    .unwrap();
    std::fs::copy(&scratch.kek_path, &env.kek_path).unwrap();

    let store = env.store().await;
    assert_eq!(store.get_meta(META_KEK_ID).await.unwrap(), None);
    let (o, kek) = kek_provider::init(&env.kek_path, &env.password(), FAST_KDF, &*store, &OsRng)
        .await
        .unwrap();
    assert_eq!(o, InitOutcome::AlreadyInitialized);
    assert_eq!(
        store.get_meta(META_KEK_ID).await.unwrap().as_deref(),
        Some(kek.id())
    );
    assert!(
        kek_provider::unlock(&env.kek_path, &env.password(), &*store)
            .await
            .is_ok()
    );
}

#[test]
fn concurrent_inits_create_exactly_one_kek() {
    let env = Env::new();
    // Four "processes" (threads with their own runtime and keystore connection).
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let store = env.store().await;
                        kek_provider::init(
                            &env.kek_path,
                            &env.password(),
                            FAST_KDF,
                            &*store,
                            &OsRng,
                        )
                        .await
                        .map(|(_, k)| k.id().to_owned())
                        .map_err(|e| e.to_string())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (recorded, file_id) = rt.block_on(async {
        let store = env.store().await;
        let kek = kek_provider::unlock(&env.kek_path, &env.password(), &*store)
            .await
            .unwrap();
        (
            store.get_meta(META_KEK_ID).await.unwrap().unwrap(),
            kek.id().to_owned(),
        )
    });
    assert_eq!(recorded, file_id, "the keystore names the one KEK file");
    for r in results {
        match r {
            Ok(id) => assert_eq!(id, file_id),
            // A loser of the race is refused; it never replaces the winner's file.
            Err(e) => assert!(
                e.contains("refusing to overwrite") || e.contains("belongs to KEK"),
                "{e}"
            ),
        }
    }
}
