//! Key lifecycle through the service: revoke, reinstate, destroy, policies, the
//! scheduler pass, rewrap, search across rotation, and cross-process cache
//! revalidation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Env;
use keyflow_kms::clock::{Clock, ManualClock, SystemClock};
use keyflow_kms::model::DAY_MS;
use keyflow_kms::scheduler::{ActionKind, ActionOutcome};
use keyflow_kms::{
    Context, Decrypted, Encrypt, EncryptMode, EncryptionService, Input, KeyStatus, KeyVersion,
    KmsError, Policy, Purpose, ServiceConfig, VersionFilter,
};
use serde_json::json;

fn p(name: &str) -> Purpose {
    Purpose::new(name).unwrap()
}
fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).unwrap()
}

async fn status(s: &EncryptionService, purpose: &str, version: u32) -> KeyStatus {
    s.ring()
        .keystore()
        .get_version(&p(purpose), v(version))
        .await
        .unwrap()
        .unwrap()
        .status
}

async fn decrypts(s: &EncryptionService, ct: &str) -> Result<serde_json::Value, KmsError> {
    match s.decrypt(ct, &Context::new()).await? {
        Decrypted::Json(v) => Ok(v),
        Decrypted::Bytes(_) => panic!("expected JSON"),
    }
}

#[tokio::test]
async fn revoke_reinstate_destroy() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let ct = s
        .encrypt_value(
            &json!("4111 1111 1111 1111"),
            &p("financialData"),
            &Context::new(),
        )
        .await
        .unwrap();
    // The active version cannot be revoked.
    let e = s
        .keys()
        .revoke(&p("financialData"), v(1), "test")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            KmsError::WrongKeyState {
                status: KeyStatus::Active,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("rotate"), "{e}");
    s.keys().rotate(&p("financialData")).await.unwrap();
    // An empty reason is refused; a revoked version no longer decrypts.
    assert!(s
        .keys()
        .revoke(&p("financialData"), v(1), "  ")
        .await
        .is_err());
    let r = s
        .keys()
        .revoke(&p("financialData"), v(1), "suspected compromise")
        .await
        .unwrap();
    assert_eq!(r.status, KeyStatus::Revoked);
    assert_eq!(r.revoked_reason.as_deref(), Some("suspected compromise"));
    let e = decrypts(&s, &ct).await.unwrap_err();
    assert!(
        matches!(
            e,
            KmsError::KeyNotUsable {
                status: KeyStatus::Revoked,
                ..
            }
        ),
        "{e}"
    );
    // Revoked twice: a clear state error.
    assert!(matches!(
        s.keys()
            .revoke(&p("financialData"), v(1), "again")
            .await
            .unwrap_err(),
        KmsError::WrongKeyState { .. }
    ));
    // Reinstated: decrypts again.
    let r = s.keys().reinstate(&p("financialData"), v(1)).await.unwrap();
    assert_eq!(r.status, KeyStatus::Deprecated);
    assert_eq!(
        decrypts(&s, &ct).await.unwrap(),
        json!("4111 1111 1111 1111")
    );
    // Destroy only from revoked.
    assert!(matches!(
        s.keys()
            .destroy(&p("financialData"), v(1))
            .await
            .unwrap_err(),
        KmsError::WrongKeyState { .. }
    ));
    let wrapped = s
        .ring()
        .keystore()
        .get_version(&p("financialData"), v(1))
        .await
        .unwrap()
        .unwrap()
        .wrapped_key
        .unwrap();
    s.keys()
        .revoke(&p("financialData"), v(1), "retire")
        .await
        .unwrap();
    let r = s.keys().destroy(&p("financialData"), v(1)).await.unwrap();
    assert_eq!((r.status, r.wrapped_key), (KeyStatus::Destroyed, None));
    assert!(decrypts(&s, &ct).await.is_err());
    assert!(matches!(
        s.keys()
            .reinstate(&p("financialData"), v(1))
            .await
            .unwrap_err(),
        KmsError::WrongKeyState {
            status: KeyStatus::Destroyed,
            ..
        }
    ));
    // Unknown version.
    assert!(matches!(
        s.keys()
            .revoke(&p("financialData"), v(9), "x")
            .await
            .unwrap_err(),
        KmsError::UnknownVersion { .. }
    ));
    // The material is gone from every file of the keystore (database and WAL).
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(wrapped.len())
                .any(|w| w == wrapped.as_slice()),
            "destroyed material still in {}",
            path.display()
        );
    }
    // The number is never reused.
    assert_eq!(
        s.keys()
            .rotate(&p("financialData"))
            .await
            .unwrap()
            .new_version,
        v(3)
    );
}

#[tokio::test]
async fn scheduler_rotates_by_age_and_budget_and_deprecates_after_grace() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let now = SystemClock.now_millis();
    s.keys().generate(&p("userData")).await.unwrap();
    s.keys().generate(&p("documents")).await.unwrap();
    // Nothing is due today.
    let r = s
        .keys()
        .scheduler_pass(now, false, "a", 60_000)
        .await
        .unwrap();
    assert!(r.ran && r.actions.is_empty(), "{r:?}");
    // Planned at +120 days (dry run): both rotate; nothing is written.
    let at = now + 120 * DAY_MS;
    let r = s
        .keys()
        .scheduler_pass(at, true, "a", 60_000)
        .await
        .unwrap();
    assert_eq!(r.actions.len(), 2);
    assert!(r.actions.iter().all(|a| a.kind == ActionKind::RotateDue));
    assert_eq!(status(&s, "userData", 1).await, KeyStatus::Active);
    // Applied at +120 days.
    let r = s
        .keys()
        .scheduler_pass(at, false, "a", 60_000)
        .await
        .unwrap();
    assert_eq!(
        r.actions
            .iter()
            .filter(|a| a.outcome == ActionOutcome::Applied)
            .count(),
        2
    );
    assert_eq!(status(&s, "userData", 1).await, KeyStatus::Rotating);
    assert_eq!(status(&s, "userData", 2).await, KeyStatus::Active);
    // Idempotent: at the same instant again, the new versions (created now) are not due.
    let r = s
        .keys()
        .scheduler_pass(now, false, "a", 60_000)
        .await
        .unwrap();
    assert!(r.actions.is_empty(), "{r:?}");
    // Grace: 29 days later the rotating versions stay; at 31 they are deprecated.
    let r = s
        .keys()
        .scheduler_pass(now + 29 * DAY_MS, false, "a", 60_000)
        .await
        .unwrap();
    assert!(r.actions.is_empty(), "{r:?}");
    let r = s
        .keys()
        .scheduler_pass(now + 31 * DAY_MS, false, "a", 60_000)
        .await
        .unwrap();
    assert_eq!(r.actions.len(), 2);
    assert!(r.actions.iter().all(|a| a.kind == ActionKind::Deprecate));
    assert_eq!(status(&s, "userData", 1).await, KeyStatus::Deprecated);
    // Usage budget: a policy of 10 encryptions, 10 made → rotated now.
    s.keys()
        .set_policy(
            &p("documents"),
            &Policy {
                max_encryptions: 10,
                ..Policy::default()
            },
        )
        .await
        .unwrap();
    for i in 0..10 {
        s.encrypt_value(&json!(i), &p("documents"), &Context::new())
            .await
            .unwrap();
    }
    let r = s
        .keys()
        .scheduler_pass(now, false, "a", 60_000)
        .await
        .unwrap();
    assert_eq!(r.actions.len(), 1, "{r:?}");
    assert_eq!(r.actions[0].kind, ActionKind::RotateBudget);
    assert_eq!(status(&s, "documents", 3).await, KeyStatus::Active);
    // Invalid policies are refused.
    let bad = Policy {
        warn_days: 90,
        ..Policy::default()
    };
    assert!(s.keys().set_policy(&p("documents"), &bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scheduler_passes_make_one_rotation() {
    let env = Env::new();
    let a = Arc::new(env.service(ServiceConfig::default()).await);
    // A second "process": its own store connection and service, same KEK.
    let store_b = env.store().await;
    let kek_b = keyflow_kms::kek_provider::unlock(&env.kek_path, &env.password(), &*store_b)
        .await
        .unwrap();
    let b = Arc::new(EncryptionService::new(
        store_b,
        kek_b,
        ServiceConfig::default(),
    ));
    a.keys().generate(&p("userData")).await.unwrap();
    let at = SystemClock.now_millis() + 120 * DAY_MS;
    let (ra, rb) = tokio::join!(
        a.keys().scheduler_pass(at, false, "instance-a", 60_000),
        b.keys().scheduler_pass(at, false, "instance-b", 60_000),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.ran != rb.ran,
        "exactly one pass holds the lease: {ra:?} {rb:?}"
    );
    // Even without the lease (its holder crashed mid-pass and another took over), the
    // compare-and-set rotation makes exactly one new version.
    let user = p("userData");
    let (x, y) = tokio::join!(
        a.keys().rotate_if_active(&user, v(2)),
        b.keys().rotate_if_active(&user, v(2)),
    );
    let made = [x.unwrap(), y.unwrap()]
        .into_iter()
        .filter(Option::is_some)
        .count();
    assert_eq!(made, 1);
    let ring = a
        .keys()
        .list(&VersionFilter {
            purpose: Some(p("userData")),
            status: None,
        })
        .await
        .unwrap();
    assert_eq!(ring.len(), 3, "versions 1..=3, no more");
}

#[tokio::test]
async fn rewrap_moves_to_the_active_version_and_is_idempotent() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let ctx = Context::from_pairs([("userId", "42")]).unwrap();
    let rnd = s
        .encrypt_value(&json!({"iban": "DE89"}), &p("financialData"), &ctx)
        .await
        .unwrap();
    let det = s
        .encrypt(
            Encrypt::new(&p("financialData"), &ctx, Input::Json(&json!("a@b.c")))
                .mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    let same = s.rewrap(&rnd, &ctx).await.unwrap();
    assert!(!same.changed && same.ciphertext == rnd);
    s.keys().rotate(&p("financialData")).await.unwrap();
    let r = s.rewrap(&rnd, &ctx).await.unwrap();
    assert!(r.changed);
    assert_eq!((r.from_version, r.to_version), (v(1), v(2)));
    assert_eq!(
        EncryptionService::summary(&r.ciphertext)
            .unwrap()
            .key_version,
        2
    );
    match s.decrypt(&r.ciphertext, &ctx).await.unwrap() {
        Decrypted::Json(v) => assert_eq!(v, json!({"iban": "DE89"})),
        other => panic!("{other:?}"),
    }
    // Deterministic stays deterministic: equal to a fresh deterministic encryption.
    let d = s.rewrap(&det, &ctx).await.unwrap();
    let fresh = s
        .encrypt(
            Encrypt::new(&p("financialData"), &ctx, Input::Json(&json!("a@b.c")))
                .mode(EncryptMode::Deterministic),
        )
        .await
        .unwrap()
        .ciphertext;
    assert_eq!(d.ciphertext, fresh);
    // Twice: no-op. Wrong context or tampering: refused, nothing echoed.
    assert!(!s.rewrap(&r.ciphertext, &ctx).await.unwrap().changed);
    assert!(matches!(
        s.rewrap(&rnd, &Context::new()).await.unwrap_err(),
        KmsError::DecryptionFailed
    ));
    let mut bad = r.ciphertext.clone().into_bytes();
    let last = bad.len() - 3;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    assert!(s
        .rewrap(std::str::from_utf8(&bad).unwrap(), &ctx)
        .await
        .is_err());
}

#[tokio::test]
async fn blind_indexes_span_every_live_version() {
    let env = Env::new();
    let s = env.service(ServiceConfig::default()).await;
    let old = s
        .blind_index(&p("userData"), "email", b"a@b.c", 32)
        .await
        .unwrap();
    s.keys().rotate(&p("userData")).await.unwrap();
    let all = s
        .blind_indexes(&p("userData"), "email", b"a@b.c", 32)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].key_version, v(2), "newest first");
    assert_eq!(
        all[1], old,
        "a row indexed before the rotation still matches"
    );
    s.keys().revoke(&p("userData"), v(1), "gone").await.unwrap();
    let all = s
        .blind_indexes(&p("userData"), "email", b"a@b.c", 32)
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "revoked versions are not searched");
    assert!(matches!(
        s.blind_indexes(&p("nothing"), "email", b"x", 32)
            .await
            .unwrap_err(),
        KmsError::UnknownPurpose(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_revocation_is_seen_after_revalidation() {
    let env = Env::new();
    let long_ttl = ServiceConfig {
        cache_ttl: Duration::from_secs(3600),
        ..ServiceConfig::default()
    };
    let a = env.service(long_ttl.clone()).await;
    let store_b = env.store().await;
    let kek_b = keyflow_kms::kek_provider::unlock(&env.kek_path, &env.password(), &*store_b)
        .await
        .unwrap();
    let b = EncryptionService::new(store_b, kek_b, long_ttl);
    let ct = a
        .encrypt_value(&json!("x"), &p("userData"), &Context::new())
        .await
        .unwrap();
    a.keys().rotate(&p("userData")).await.unwrap();
    b.ring().revalidate().await.unwrap();
    assert_eq!(decrypts(&b, &ct).await.unwrap(), json!("x")); // cached in b
    a.keys()
        .revoke(&p("userData"), v(1), "compromised")
        .await
        .unwrap();
    // b still has v1 cached (one-hour TTL)…
    assert!(decrypts(&b, &ct).await.is_ok());
    // …until it revalidates, which notices the generation change.
    assert!(b.ring().revalidate().await.unwrap());
    assert!(decrypts(&b, &ct).await.is_err());
    assert!(!b.ring().revalidate().await.unwrap(), "no change since");
    // A fresh service's first check counts as a change (it cannot know what it missed).
    let c = env.service(ServiceConfig::default()).await;
    assert!(c.ring().revalidate().await.unwrap());
    assert!(!c.ring().revalidate().await.unwrap());
}

#[tokio::test]
async fn a_cache_past_its_staleness_bound_goes_back_to_the_keystore() {
    let env = Env::new();
    let clock = Arc::new(ManualClock::starting_now());
    let s = env
        .service(ServiceConfig {
            max_staleness: Some(Duration::from_millis(50)),
            ..ServiceConfig::default()
        })
        .await
        .with_clock(clock.clone());
    s.ring().revalidate().await.unwrap();
    s.encrypt_value(&json!(1), &p("userData"), &Context::new())
        .await
        .unwrap();
    let before = s.ring().cache_stats();
    s.encrypt_value(&json!(1), &p("userData"), &Context::new())
        .await
        .unwrap();
    assert_eq!(
        s.ring().cache_stats().hits,
        before.hits + 1,
        "served from cache"
    );
    clock.advance(Duration::from_millis(49));
    let before = s.ring().cache_stats();
    s.encrypt_value(&json!(1), &p("userData"), &Context::new())
        .await
        .unwrap();
    assert_eq!(
        s.ring().cache_stats().hits,
        before.hits + 1,
        "inside the bound"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(s.ring().cache_staleness(), Duration::from_millis(50));
    let before = s.ring().cache_stats();
    s.encrypt_value(&json!(1), &p("userData"), &Context::new())
        .await
        .unwrap();
    assert_eq!(
        s.ring().cache_stats().misses,
        before.misses + 1,
        "unconfirmed: re-read from the keystore"
    );
}
